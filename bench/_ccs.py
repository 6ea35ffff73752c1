"""Coverage-centric coreset selection (CCS; Zheng et al., "Coverage-centric Coreset Selection for High Pruning
Rates", ICLR 2023), as a baseline for bench/selection_quality.py.

Algorithm 1 of the paper: prune the hardest `beta` share of the rows by a difficulty score, split the rest of
the score's range into equal-width strata, then repeatedly take the stratum with the fewest rows, draw
min(its size, remaining budget / strata left) rows from it uniformly at random, until the budget is spent.
Class-agnostic, as in the paper.
"""
from __future__ import annotations

import numpy as np


def ccs_mask(difficulty: np.ndarray, k: int, beta: float, rng, *, n_strata: int = 50) -> np.ndarray:
    """(n,) bool with exactly k rows; higher difficulty = harder. beta is lowered to leave k rows if needed."""
    difficulty = np.asarray(difficulty, dtype=np.float64)
    n = len(difficulty)
    n_prune = min(int(beta * n), n - k)
    order = np.argsort(-difficulty, kind="stable")
    pool = order[n_prune:]
    s = difficulty[pool]
    lo, hi = float(s.min()), float(s.max())
    width = (hi - lo) / n_strata if hi > lo else 1.0
    stratum = np.minimum(((s - lo) / width).astype(np.int64), n_strata - 1)
    members = [pool[stratum == j] for j in range(n_strata)]
    members = [m for m in members if len(m)]
    mask = np.zeros(n, bool)
    budget = k
    while budget > 0 and members:
        j = min(range(len(members)), key=lambda i: len(members[i]))
        take = min(len(members[j]), budget // len(members))
        if take == 0:                    # fewer budget rows than strata left: one each from the smallest
            take = 1
        mask[rng.choice(members[j], size=take, replace=False)] = True
        budget -= take
        members.pop(j)
    return mask


def el2n(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """EL2N difficulty (Paul et al. 2021): || p(x) - onehot(given label) ||_2 of out-of-fold probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    err = probs.copy()
    err[np.arange(len(labels)), labels] -= 1.0
    return np.sqrt((err * err).sum(1))
