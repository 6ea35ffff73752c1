"""The paper's own selection (PAPER.md, Module 3): its score and its straight-through-estimator loop.

`select(paper_score(A, D), ratio)` in `selector.optimize` is the loop's exact fast path; `select_ste` is kept
to show that, and to report the loop's failure mode (samples with s_i > penalty can never be dropped).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from selector.errors import InputError
from selector.optimize import subset_size
from selector.runtime import torch_threads
from selector.validate import check_int, check_number, check_vector

log = logging.getLogger(__name__)


def paper_score(A, D, *, beta: float = 0.1) -> np.ndarray:
    """s_i = A_i / mean(A) + beta * D_i / mean(D) (float64): the order the paper's STE loop ends in.

    A, D: (n,) normalised alignment and diversity scores in [0, 1] (higher = keep)."""
    A = check_vector(A, "A (alignment)")
    D = check_vector(D, "D (diversity)", A.shape[0])
    mA, mD = float(A.astype(np.float64).mean()), float(D.astype(np.float64).mean())
    if mA <= 0 or mD <= 0:
        raise InputError(f"A and D must have a positive mean (min-max normalised scores in [0, 1]); got "
                         f"mean(A)={mA:.3g}, mean(D)={mD:.3g}. Check that the score columns are not all 0.")
    return A.astype(np.float64) / mA + beta * D.astype(np.float64) / mD


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

    A = check_vector(A, "A (alignment)")
    D = check_vector(D, "D (diversity)", A.shape[0])
    s = paper_score(A, D, beta=beta)
    n = A.shape[0]
    k = subset_size(n, ratio)
    for name, value in (("lr", lr), ("penalty", penalty), ("tol", tol)):
        check_number(value, name, above=0)
    check_int(max_iter, "max_iter", minimum=0)

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
    threads = 1 if device == "cpu" and n <= 2_000_000 else torch.get_num_threads()
    with torch_threads(threads):
        mask, it, loss_value, converged = _ste_loop(torch, A, D, k, n, beta=beta, penalty=penalty, lr=lr,
                                                    max_iter=max_iter, tol=tol, seed=seed, device=device)
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
