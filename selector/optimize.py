"""Subset selection on arrays: the weighted objective and the fast exact selector.

`select` is the millisecond path behind every slider move: no Python loop over samples, one partition
(topk) or one pair of stable sorts (per-class work), integer apportionment of the budget. The paper's own
straight-through loop, of which `select(paper_score(A, D), ratio)` is the exact fast path, is in
`selector.paper`.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from selector.errors import InputError, describe_rows
from selector.registry import Choice, Registry
from selector.validate import check_rows, check_vector, group_codes

DEFAULT_STRATA = 50   # CCS (Zheng et al., ICLR 2023) splits the score range into 50 strata

OBJECTIVES = Registry(
    "objective",
    Choice("alignment", "Alignment", value="alignment_norm",
           help="How well the image matches its label's text (the paper's SAS)."),
    Choice("diversity", "Diversity", value="diversity_norm",
           help="How sparse the sample's neighbourhood in its class is (the paper's SDS)."),
    Choice("cleanliness", "Cleanliness", value="cleanliness",
           help="1 - noise score: how sure the audit is that the label is right."),
)
"""What the selection can weigh: objective name -> the [0, 1] column of the per-sample table (higher = better)."""
WEIGHT_NAMES = tuple(OBJECTIVES.names())

STRATEGIES = Registry(
    "strategy",
    Choice("topk", "top-k (the paper's optimum)",
           help="The highest objective values: what the paper's optimiser converges to."),
    Choice("stratified", "stratified (spread over each class)",
           help="Spreads the budget over the objective's range within each class (coverage-centric, as CCS)."),
)


# ------------------------------------------------------------------------------------------ scores
def check_weights(weights) -> dict[str, float]:
    """{objective: weight} with names from OBJECTIVES, each a finite number >= 0, at least one > 0."""
    if not isinstance(weights, dict) or not weights:
        raise InputError(f"weights must be a non-empty dict {{name: weight}} with names from "
                         f"{', '.join(WEIGHT_NAMES)}; got {weights!r}.")
    unknown = [name for name in weights if name not in OBJECTIVES]
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
    if sum(w.values()) <= 0:
        raise InputError(f"all weights are 0 ({w}); set at least one of {', '.join(WEIGHT_NAMES)} above 0.")
    return w


def selection_score(scores: dict, weights: dict) -> np.ndarray:
    """Weighted sum of min-max normalised score columns -> (n,) float32 in [0, 1]; higher = keep first.

    scores: {name: (n,) array} with names from OBJECTIVES (each column: higher = better sample).
    weights: {name: weight >= 0}, at least one > 0 (`check_weights`); the sum is divided by the total
    weight, so only the ratios between weights matter. A constant column normalises to 0. Columns with
    weight 0 may be absent.
    """
    w = check_weights(weights)
    total = sum(w.values())
    if not isinstance(scores, dict):
        raise InputError(f"scores must be a dict {{name: (n,) array}}; got {type(scores).__name__}.")
    out, n = None, None
    for name, value in w.items():
        if value == 0:
            continue
        if name not in scores:
            raise InputError(f"weight {name!r} is {value} but scores has no {name!r} column (it has "
                             f"{', '.join(map(repr, scores)) or 'none'}); pass it or set its weight to 0.")
        col = check_vector(scores[name], f"scores[{name!r}]", n)
        n = col.shape[0]
        lo, hi = float(col.min()) if n else 0.0, float(col.max()) if n else 0.0
        norm = (col - lo) / (hi - lo) if hi > lo else np.zeros_like(col)
        out = norm * (value / total) if out is None else out + norm * (value / total)
    return out.astype(np.float32, copy=False)


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
      than its share gives the rest to the others), and draw each stratum's share at random, in a fixed
      order (the same inputs give the same subset). Class
      budgets are the balanced quotas with class_balance, else proportional to the candidates.
    Ties in top-k are broken by row index (lower first). InputError when k cannot be met.
    """
    score = check_vector(score, "score")
    n = score.shape[0]
    if n == 0:
        raise InputError("score is empty; there is nothing to select from.")
    STRATEGIES.check(strategy)
    if isinstance(n_strata, bool) or not isinstance(n_strata, (int, np.integer)) or n_strata < 1:
        raise InputError(f"n_strata must be an integer >= 1; got {n_strata!r}.")
    k = subset_size(n, ratio)
    y = None
    if labels is not None:
        y = group_codes(labels, n)
    elif class_balance:
        raise InputError("class_balance=True needs labels (one class per row); pass labels=... or turn "
                         "class balance off.")
    ex = check_rows(exclude, n, "exclude")
    nv = check_rows(never, n, "never")
    kp = check_rows(keep, n, "keep")
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
    """Within each group take budget[g] candidates. n_strata=1: the group's best scores. Else split the group's
    score range into n_strata equal-width strata, spread the budget evenly over them, and draw each stratum's
    share at random (as CCS does), in a fixed pseudo-random order of the rows (`_draw_order`) so the same
    inputs always give the same subset. Taking each stratum's best instead piles the budget at the top edge of
    every stratum; on the tuning seeds of bench/selection_quality.py (demo encoder, 4 seeds x 2 noise settings)
    the draw trained 0.04-0.31 points better on average at ratios 0.1 and 0.2 (12 of 16 paired runs) and 0.16
    worse at 0.3 (within the seed spread)."""
    n = len(score)
    idx = np.flatnonzero(cand)
    n_groups = len(budget)
    S = int(n_strata)
    if S == 1:
        o = _group_order(score[idx], groups[idx])
        rows, g = idx[o], groups[idx][o]
        count = np.bincount(g, minlength=n_groups)
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        rank = np.arange(len(rows)) - start[g]
        out = np.zeros(n, bool)
        out[rows[rank < budget[g]]] = True
        return out
    g, s = groups[idx], score[idx].astype(np.float64)
    top = np.full(n_groups, -np.inf)
    bottom = np.full(n_groups, np.inf)
    np.maximum.at(top, g, s)
    np.minimum.at(bottom, g, s)
    width = (top - bottom)[g]
    frac = np.divide(top[g] - s, width, out=np.zeros_like(s), where=width > 0)
    stratum = np.minimum((frac * S).astype(np.int64), S - 1)     # 0 = the best scores of the group
    cell = g * S + stratum
    size = np.bincount(cell, minlength=n_groups * S).reshape(n_groups, S)
    alloc = _spread(size, budget)
    # cell by cell, each in the draw order; keys below 0.5 never round up into the next cell
    o = np.argsort(cell + 0.5 * _draw_order(n)[idx])
    rows, cell = idx[o], cell[o]
    cell_start = np.concatenate([[0], np.cumsum(size.ravel())[:-1]])
    rank = np.arange(len(rows)) - cell_start[cell]
    out = np.zeros(n, bool)
    out[rows[rank < alloc.ravel()[cell]]] = True
    return out


@functools.lru_cache(maxsize=2)
def _draw_order(n: int) -> np.ndarray:
    """(n,) float64 in [0, 1), read-only: a fixed pseudo-random key per row position, the order in which the
    stratified strategy draws inside a stratum."""
    key = np.random.default_rng(20230501).random(n)
    key.flags.writeable = False
    return key


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
