"""Subset selection: the scalarised score, the fast exact selector and the paper's STE loop.

`select` is the millisecond path behind every slider move: no Python loop over samples, one partition
(topk) or one pair of stable sorts (per-class work), integer apportionment of the budget.
`select_ste` is the paper's straight-through-estimator loop (PAPER.md, Module 3), kept to show that
`select(paper_score(A, D), ratio)` is its exact fast path, and to report the loop's failure mode.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Optional

import numpy as np

from selector.errors import InputError, describe_rows

log = logging.getLogger(__name__)

WEIGHT_NAMES = ("alignment", "diversity", "cleanliness")
STRATEGIES = ("topk", "stratified")
DEFAULT_STRATA = 50   # CCS (Zheng et al., ICLR 2023) splits the score range into 50 strata


# ------------------------------------------------------------------------------------------ scores
def selection_score(scores: dict, weights: dict) -> np.ndarray:
    """Weighted sum of min-max normalised score columns -> (n,) float32 in [0, 1]; higher = keep first.

    scores: {name: (n,) array} with names from WEIGHT_NAMES (each column: higher = better sample).
    weights: {name: weight >= 0}, at least one > 0; the sum is divided by the total weight, so only the
    ratios between weights matter. A constant column normalises to 0. Columns with weight 0 may be absent.
    """
    if not isinstance(weights, dict) or not weights:
        raise InputError(f"weights must be a non-empty dict {{name: weight}} with names from "
                         f"{', '.join(WEIGHT_NAMES)}; got {weights!r}.")
    unknown = [name for name in weights if name not in WEIGHT_NAMES]
    if unknown:
        raise InputError(f"unknown weight name(s) {', '.join(map(repr, unknown))}; valid names are "
                         f"{', '.join(WEIGHT_NAMES)}.")
    w = {}
    for name, value in weights.items():
        try:
            value = float(value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"weight {name!r} must be a number; got {value!r}.") from exc
        if not math.isfinite(value) or value < 0:
            raise InputError(f"weight {name!r} must be a finite number >= 0; got {value!r}.")
        w[name] = value
    total = sum(w.values())
    if total <= 0:
        raise InputError(f"all weights are 0 ({w}); set at least one of {', '.join(WEIGHT_NAMES)} above 0.")
    if not isinstance(scores, dict):
        raise InputError(f"scores must be a dict {{name: (n,) array}}; got {type(scores).__name__}.")
    out, n = None, None
    for name, value in w.items():
        if value == 0:
            continue
        if name not in scores:
            raise InputError(f"weight {name!r} is {value} but scores has no {name!r} column (it has "
                             f"{', '.join(map(repr, scores)) or 'none'}); pass it or set its weight to 0.")
        col = _vector(scores[name], f"scores[{name!r}]", n)
        n = col.shape[0]
        lo, hi = float(col.min()) if n else 0.0, float(col.max()) if n else 0.0
        norm = (col - lo) / (hi - lo) if hi > lo else np.zeros_like(col)
        out = norm * (value / total) if out is None else out + norm * (value / total)
    return out.astype(np.float32, copy=False)


def paper_score(A, D, *, beta: float = 0.1) -> np.ndarray:
    """s_i = A_i / mean(A) + beta * D_i / mean(D) (float64): the order the paper's STE loop ends in.

    A, D: (n,) normalised alignment and diversity scores in [0, 1] (higher = keep)."""
    A = _vector(A, "A (alignment)")
    D = _vector(D, "D (diversity)", A.shape[0])
    mA, mD = float(A.astype(np.float64).mean()), float(D.astype(np.float64).mean())
    if mA <= 0 or mD <= 0:
        raise InputError(f"A and D must have a positive mean (min-max normalised scores in [0, 1]); got "
                         f"mean(A)={mA:.3g}, mean(D)={mD:.3g}. Check that the score columns are not all 0.")
    return A.astype(np.float64) / mA + beta * D.astype(np.float64) / mD


def subset_size(n: int, ratio: float) -> int:
    """k = round(ratio * n), halves rounded up, at least 1 (ratio in (0, 1])."""
    try:
        r = float(ratio)
    except (TypeError, ValueError) as exc:
        raise InputError(f"ratio must be a number in (0, 1]; got {ratio!r}.") from exc
    if not (0.0 < r <= 1.0):
        raise InputError(f"ratio must be in (0, 1] (share of samples to keep, e.g. 0.3); got {ratio!r}.")
    return max(1, min(n, int(math.floor(r * n + 0.5))))


# ------------------------------------------------------------------------------------------ select
def select(score, ratio: float, *, labels=None, class_balance: bool = False, exclude=None, keep=None,
           never=None, strategy: str = "topk", n_strata: int = DEFAULT_STRATA) -> np.ndarray:
    """(n,) bool mask with exactly k = subset_size(n, ratio) True; higher score = chosen first.

    exclude / never: rows (bool mask or int ids) that are never chosen (exclude = automatic filters
      such as suspected label errors; never = the user's list). keep: rows always chosen; keep wins
      over exclude, keep and never may not overlap.
    class_balance: per-class quotas as equal as possible (largest-remainder on integers), capped by
      what each class has available, the shortfall redistributed to the other classes. Needs labels.
    strategy: "topk" = the k best scores (the exact fast path of the paper's loop);
      "stratified" = coverage: within each class split the candidates' score range into n_strata
      equal-width strata, spread the class budget evenly over them (a stratum with fewer samples
      than its share gives the rest to the others), and take the best samples of each stratum. Class
      budgets are the balanced quotas with class_balance, else proportional to the candidates.
    Ties are broken by row index (lower first). InputError when k cannot be met.
    """
    score = _vector(score, "score")
    n = score.shape[0]
    if n == 0:
        raise InputError("score is empty; there is nothing to select from.")
    if strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}.")
    if isinstance(n_strata, bool) or not isinstance(n_strata, (int, np.integer)) or n_strata < 1:
        raise InputError(f"n_strata must be an integer >= 1; got {n_strata!r}.")
    k = subset_size(n, ratio)
    y = None
    if labels is not None:
        y = _labels(labels, n)
    elif class_balance:
        raise InputError("class_balance=True needs labels (one class per row); pass labels=... or turn "
                         "class balance off.")
    ex = _rows(exclude, n, "exclude")
    nv = _rows(never, n, "never")
    kp = _rows(keep, n, "keep")
    if kp is not None and nv is not None and (kp & nv).any():
        both = np.flatnonzero(kp & nv)
        raise InputError(f"{len(both)} rows are in both keep and never: rows {describe_rows(both)}. "
                         "Remove them from one of the lists.")
    n_keep = int(kp.sum()) if kp is not None else 0
    if n_keep > k:
        raise InputError(f"keep has {n_keep} rows but ratio {ratio} selects only {k} of {n}; raise the ratio "
                         f"to at least {n_keep / n:.4f} or keep fewer rows.")
    cand = np.ones(n, bool)
    for m in (ex, nv, kp):
        if m is not None:
            cand &= ~m
    need = k - n_keep
    n_cand = int(cand.sum())
    if n_cand < need:
        blocked = []
        if ex is not None:
            n_ex = int((ex & ~kp).sum()) if kp is not None else int(ex.sum())
            blocked.append(f"{n_ex} excluded (e.g. flagged)")
        if nv is not None:
            blocked.append(f"{int(nv.sum())} on the never list")
        raise InputError(f"ratio {ratio} needs {k} of {n} samples but only {n_cand + n_keep} can be chosen "
                         f"({n_keep} kept + {n_cand} candidates; {', '.join(blocked) or 'none blocked'}). "
                         f"Lower the ratio to at most {(n_cand + n_keep) / n:.4f}, or exclude fewer rows "
                         "(e.g. turn off 'exclude flagged') or shorten the never list.")
    mask = kp.copy() if kp is not None else np.zeros(n, bool)
    if need == 0:
        return mask
    if strategy == "topk" and not class_balance:
        mask |= _topk_mask(score, cand, need)
        return mask
    groups = y if y is not None else np.zeros(n, np.int64)
    n_groups = int(groups.max()) + 1
    cand_count = np.bincount(groups[cand], minlength=n_groups)
    if class_balance:
        kept_count = np.bincount(groups[kp], minlength=n_groups) if kp is not None else np.zeros(n_groups, np.int64)
        present = np.bincount(groups, minlength=n_groups) > 0
        quota = _balanced_quota(k, kept_count, kept_count + cand_count, present)
        budget = quota - kept_count
    else:
        budget = _proportional_quota(need, cand_count)
    mask |= _per_group_select(score, cand, groups, budget, n_strata if strategy == "stratified" else 1)
    return mask


def _topk_mask(score, cand, need) -> np.ndarray:
    """The `need` best candidates; ties at the threshold go to the lower row index. O(n)."""
    idx = np.flatnonzero(cand)
    s = score[idx]
    if need >= len(idx):
        out = np.zeros(len(score), bool)
        out[idx] = True
        return out
    thr = np.partition(s, len(s) - need)[len(s) - need]   # the need-th largest value
    above = s > thr
    n_tie = need - int(above.sum())
    tie = np.flatnonzero(s == thr)[:n_tie]                 # flatnonzero is in row order
    out = np.zeros(len(score), bool)
    out[idx[above]] = True
    out[idx[tie]] = True
    return out


def _balanced_quota(k, lower, upper, present) -> np.ndarray:
    """Integer quotas summing to k, lower <= q <= upper, as equal as possible (water-filling).

    q_c = clip(T, lower_c, upper_c) for the largest integer level T with sum <= k; the remaining
    r < #(classes still below their cap at T+1) get one more each, lowest class index first."""
    lower = lower.astype(np.int64)
    upper = np.where(present, upper, lower).astype(np.int64)
    lo, hi = 0, int(upper.max()) if len(upper) else 0
    while lo < hi:                                          # largest T with f(T) <= k
        mid = (lo + hi + 1) // 2
        if np.clip(mid, lower, upper).sum() <= k:
            lo = mid
        else:
            hi = mid - 1
    q = np.clip(lo, lower, upper)
    r = k - int(q.sum())
    if r > 0:
        grow = np.flatnonzero(q < upper)[:r]
        q[grow] += 1
    return q


def _proportional_quota(total, weights) -> np.ndarray:
    """Integer largest-remainder apportionment of `total` proportional to integer `weights`."""
    w = weights.astype(np.int64)
    W = int(w.sum())
    q = (total * w) // W
    rem = (total * w) % W
    r = total - int(q.sum())
    if r > 0:
        order = np.lexsort((np.arange(len(w)), -rem))       # largest remainder, then lower index
        q[order[:r]] += 1
    return q


def _per_group_select(score, cand, groups, budget, n_strata) -> np.ndarray:
    """Within each group take budget[g] candidates: the best of each of n_strata equal-width score
    strata, budget spread evenly over the strata (n_strata=1: plain top-budget per group)."""
    n = len(score)
    idx = np.flatnonzero(cand)
    o = _group_order(score[idx], groups[idx])
    rows, g, s = idx[o], groups[idx][o], score[idx][o].astype(np.float64)
    n_groups = len(budget)
    count = np.bincount(g, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    S = int(n_strata)
    if S == 1:
        rank = np.arange(len(rows)) - start[g]
        out = np.zeros(n, bool)
        out[rows[rank < budget[g]]] = True
        return out
    # stratum of each candidate: 0 = best scores of its group; non-decreasing along the sorted order
    top = np.full(n_groups, np.nan)
    bottom = np.full(n_groups, np.nan)
    has = count > 0
    top[has] = s[start[has]]
    bottom[has] = s[start[has] + count[has] - 1]
    width = (top - bottom)[g]
    frac = np.divide(top[g] - s, width, out=np.zeros_like(s), where=width > 0)
    stratum = np.minimum((frac * S).astype(np.int64), S - 1)
    cell = g * S + stratum
    size = np.bincount(cell, minlength=n_groups * S).reshape(n_groups, S)
    alloc = _spread(size, budget)
    cell_start = np.concatenate([[0], np.cumsum(size.ravel())[:-1]])
    rank = np.arange(len(rows)) - cell_start[cell]
    out = np.zeros(n, bool)
    out[rows[rank < alloc.ravel()[cell]]] = True
    return out


def _group_order(s, g) -> np.ndarray:
    """Permutation sorting by group ascending, score descending, then position (ties).

    One quicksort of a float64 key g*4 + (1 - minmax(s)), which is monotone (non-strictly) in that
    order, so only runs of equal keys can be out of order (real score ties, or float64 collisions of
    near-equal scores); those few positions are re-sorted exactly by (group, -score, position)."""
    s64 = s.astype(np.float64)
    lo, hi = float(s64.min()), float(s64.max())
    sn = (s64 - lo) / (hi - lo) if hi > lo else np.zeros_like(s64)
    key = g.astype(np.float64) * 4.0 + (1.0 - sn)
    o = np.argsort(key)
    ks = key[o]
    if len(ks) > 1:
        eq = ks[1:] == ks[:-1]
        if eq.any():
            tied = np.zeros(len(ks), bool)
            tied[1:] |= eq
            tied[:-1] |= eq
            pos = np.flatnonzero(tied)                       # positions inside runs of equal keys
            sub = o[pos]
            # runs occupy contiguous positions, so sorting the subset by (group, -score, index)
            # and writing it back into the same positions fixes every run at once
            o[pos] = sub[np.lexsort((sub, -s64[sub], g[sub]))]
    return o


def _spread(size, budget) -> np.ndarray:
    """(G, S) integer allocation: row g sums to budget[g], alloc <= size, as even as possible over the
    strata. Level T_g = largest integer with sum(min(size, T)) <= budget; the remaining r cells (among
    those with size > T) are spread evenly over the stratum order (Bresenham), not piled at the top."""
    budget = budget.astype(np.int64)
    lo = np.zeros(len(budget), np.int64)
    hi = size.max(axis=1).astype(np.int64)
    while (lo < hi).any():                                   # vectorised bisection, one level per group
        mid = (lo + hi + 1) // 2
        ok = np.minimum(size, mid[:, None]).sum(axis=1) <= budget
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid - 1)
    alloc = np.minimum(size, lo[:, None])
    r = budget - alloc.sum(axis=1)
    eligible = size > lo[:, None]
    E = eligible.sum(axis=1)
    e = np.cumsum(eligible, axis=1) - 1                      # rank among eligible cells of the row
    Esafe = np.maximum(E, 1)[:, None]
    pick = eligible & (((e + 1) * r[:, None]) // Esafe > (e * r[:, None]) // Esafe)
    return alloc + pick


# ------------------------------------------------------------------------------------------ the paper's loop
def select_ste(A, D, ratio: float, *, beta: float = 0.1, penalty: float = 2.0, lr: float = 1e-3,
               max_iter: int = 100_000, tol: float = 1e-3, seed: int = 0, repair: bool = True,
               device: str = "auto") -> tuple[np.ndarray, dict]:
    """The paper's straight-through selection loop (PAPER.md Module 3) -> (mask (n,) bool, info dict).

    d_i = 0.01 (all selected), p = sigmoid(100 d), m = [p > 0.5] with a straight-through gradient,
    loss = -mean(p A/mean(A)) - beta mean(p D/mean(D)) + penalty |sum(m) - k|/n, SGD(lr, momentum 0.9),
    stop once penalty |sum(m) - k|/n < tol or after max_iter. k = subset_size(n, ratio) (round, as in
    `select`; the paper floors - they differ by at most one sample).

    Failure mode: d_i's gradient is 100 p(1-p) (penalty * sign(sum(m) - k) - s_i)/n with
    s = paper_score(A, D, beta), so a sample with s_i > penalty can never be dropped; with more than k
    of them the ratio is missed. info reports it and, with repair=True, the mask is repaired to
    exactly k by paper_score order (drop the lowest s among the chosen, or add the highest s among the
    rest; ties by row index) - the loop's own end state is a top set of s, so this is the set the loop
    would reach without the failure. A converged loop may also end a few samples off k (within tol);
    repair fixes that too.
    device: "auto" (CUDA when torch sees a GPU, else CPU), "cpu" or "cuda[:i]"; on CPU the loop runs
    on one torch thread (set process-wide for the duration, then restored).
    info: k, n, device, iterations, loss (last), converged (tolerance reached), n_selected_loop, off_by
    (n_selected_loop - k), n_stuck (#s_i > penalty), unreachable (n_stuck > k), missed_ratio (not
    converged), repaired {"added", "removed"}, seconds.
    """
    import torch

    A = _vector(A, "A (alignment)")
    D = _vector(D, "D (diversity)", A.shape[0])
    s = paper_score(A, D, beta=beta)
    n = A.shape[0]
    k = subset_size(n, ratio)
    for name, value in (("lr", lr), ("penalty", penalty), ("tol", tol)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a finite number > 0; got {value!r}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise InputError(f"max_iter must be an integer >= 0; got {max_iter!r}.")

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda[:i]'; got {device!r}.")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device!r} but torch sees no CUDA GPU; use device='auto' or 'cpu'.")

    t0 = time.perf_counter()
    # The loop is thousands of tiny element-wise steps: intra-op threads only add synchronisation
    # (measured 27 ms vs 2 ms per iteration at n=60k on 2 busy cores), so run it on one thread and
    # restore the process-wide setting afterwards.
    threads = torch.get_num_threads()
    if device == "cpu" and n <= 2_000_000:
        torch.set_num_threads(1)
    try:
        mask, it, loss_value, converged = _ste_loop(torch, A, D, k, n, beta=beta, penalty=penalty, lr=lr,
                                                    max_iter=max_iter, tol=tol, seed=seed, device=device)
    finally:
        torch.set_num_threads(threads)
    n_loop = int(mask.sum())
    n_stuck = int((s > penalty).sum())
    info = {"k": k, "n": n, "device": str(device), "iterations": it, "loss": loss_value, "converged": converged,
            "n_selected_loop": n_loop, "off_by": n_loop - k, "n_stuck": n_stuck,
            "unreachable": n_stuck > k, "missed_ratio": not converged,
            "repaired": {"added": 0, "removed": 0}, "seconds": 0.0}
    if n_stuck > k:
        log.warning("STE loop: %d samples have s > penalty=%g and can never be dropped; k=%d is unreachable",
                    n_stuck, penalty, k)
    if repair and n_loop != k:
        order = np.lexsort((np.arange(n), -s))               # best first, ties by row index
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        if n_loop > k:
            chosen = np.flatnonzero(mask)
            drop = chosen[np.argsort(-rank[chosen], kind="stable")[: n_loop - k]]
            mask[drop] = False
            info["repaired"]["removed"] = int(len(drop))
        else:
            rest = np.flatnonzero(~mask)
            add = rest[np.argsort(rank[rest], kind="stable")[: k - n_loop]]
            mask[add] = True
            info["repaired"]["added"] = int(len(add))
    info["seconds"] = time.perf_counter() - t0
    return mask, info


def _ste_loop(torch, A, D, k, n, *, beta, penalty, lr, max_iter, tol, seed, device):
    """The loop itself -> (mask, iterations, last loss, converged)."""
    torch.manual_seed(seed)          # the loop is deterministic; seeded for any future stochastic variant
    dev = torch.device(device)
    At = torch.as_tensor(A, dtype=torch.float32, device=dev)
    Dt = torch.as_tensor(D, dtype=torch.float32, device=dev)
    An, Dn = At / At.mean(), Dt / Dt.mean()
    d = torch.full((n,), 0.01, dtype=torch.float32, device=dev, requires_grad=True)
    opt = torch.optim.SGD([d], lr=lr, momentum=0.9)
    it, loss_value, converged = 0, float("nan"), False
    while True:
        p = torch.sigmoid(100.0 * d)
        hard = (p > 0.5).to(p.dtype)
        m = hard + p - p.detach()                            # straight-through estimator
        size_term = penalty * torch.abs(m.sum() - k) / n
        loss = -(p * An).mean() - beta * (p * Dn).mean() + size_term
        loss_value = float(loss.detach())
        if float(size_term.detach()) < tol:
            converged = True
            break
        if it >= max_iter:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        it += 1
    with torch.no_grad():
        mask = (torch.sigmoid(100.0 * d) > 0.5).cpu().numpy()
    return mask, it, loss_value, converged


# ------------------------------------------------------------------------------------------ validation
def _vector(x, what: str, n: Optional[int] = None) -> np.ndarray:
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a 1-D numeric array; got {type(x).__name__}.") from exc
    if x.ndim != 1:
        raise InputError(f"{what} must be 1-D (one value per sample); got shape {x.shape}.")
    if n is not None and x.shape[0] != n:
        raise InputError(f"{what} has {x.shape[0]} values but the other inputs have {n}; pass one per sample.")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(f"{what} has {len(rows)} non-finite values (NaN/inf): rows {describe_rows(rows)}. "
                         "Fix or drop those samples first.")
    return x


def _labels(labels, n) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"labels must be 1-D with one class per sample ({n}); got shape {y.shape}.")
    if y.dtype.kind not in "iub":
        if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        else:
            # strings or other values: map to 0..C-1 (sorted order)
            try:
                _, y = np.unique(y, return_inverse=True)
            except TypeError as exc:
                raise InputError(f"labels must be class ids or names; got dtype {y.dtype}.") from exc
            return y.reshape(-1).astype(np.int64)
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        rows = np.flatnonzero(y < 0)
        raise InputError(f"labels must be >= 0; {len(rows)} negative: rows {describe_rows(rows)}.")
    if y.size and y.max() >= 4 * n + 1024:
        # sparse huge ids: compact them so per-class arrays stay small
        _, y = np.unique(y, return_inverse=True)
        y = y.reshape(-1).astype(np.int64)
    return y


def _rows(rows, n: int, what: str) -> Optional[np.ndarray]:
    """A bool mask (n,) from None, a bool mask or int row ids."""
    if rows is None:
        return None
    r = np.asarray(rows)
    if r.dtype == bool:
        if r.shape != (n,):
            raise InputError(f"{what} as a mask must have shape ({n},); got {r.shape}.")
        return r if r.any() else None
    if r.size == 0:
        return None
    if r.dtype.kind not in "iu":
        raise InputError(f"{what} must be a bool mask or integer row ids; got dtype {r.dtype}.")
    r = r.reshape(-1).astype(np.int64)
    bad = (r < 0) | (r >= n)
    if bad.any():
        raise InputError(f"{what} names rows outside [0, {n}): {describe_rows(r[bad])}.")
    mask = np.zeros(n, bool)
    mask[r] = True
    return mask
