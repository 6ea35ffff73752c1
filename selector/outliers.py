"""Rows that are unusual whatever their label: out-of-distribution images and near-duplicates.

Both read the cosine similarity of each row to its k global neighbours (`neighbor_similarities`) on the
frozen embeddings. Cut-offs are robust z-scores (median / MAD, the Iglewicz-Hoaglin "outlier" level 3.5),
so they adapt to each encoder instead of assuming a fixed cosine scale.
"""
from __future__ import annotations

import numpy as np

from selector.errors import InputError
from selector.linalg import l2_normalize
from selector.validate import check_matrix, check_neighbor_ids, check_number, check_vector

OOD_CUT = 3.5          # robust z (median/MAD, Iglewicz-Hoaglin "outlier" level)
_BLOCK = 8192


def robust_z(v: np.ndarray) -> np.ndarray:
    """(v - median) / (1.4826 MAD), a robust z-score (0 where MAD is 0)."""
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    return ((v - med) / mad).astype(np.float32) if mad > 0 else np.zeros_like(v, np.float32)


def neighbor_similarities(X, I) -> np.ndarray:
    """(n, k) float32 cosine similarity of each row of X (n, d) to its neighbours I (n, k), NaN where I = -1.
    Computed in row blocks, so no (n, k, d) array is held."""
    X = check_matrix(X, "X (image embeddings)")
    I = check_neighbor_ids(I, X.shape[0])
    Xn = l2_normalize(X)
    out = np.empty(I.shape, np.float32)
    for s in range(0, len(I), _BLOCK):
        Ib = I[s:s + _BLOCK]
        out[s:s + _BLOCK] = np.einsum("ijk,ik->ij", Xn[np.maximum(Ib, 0)], Xn[s:s + _BLOCK])
    out[I < 0] = np.nan
    return out


def find_ood(best_class_sim, neighbor_sims, *, cut: float = OOD_CUT) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-distribution rows: match no class prompt well AND sit far from their neighbours.

    best_class_sim (n,): each row's cosine to its best-matching class prompt; neighbor_sims (n, k) from
    `neighbor_similarities`. ood_score = min of the robust z of log(1 - best_class_sim) and of log(mean
    distance to the neighbours) (cosine distances are right-skewed, their logs near symmetric); higher =
    more unusual. Returns (ood_score (n,) float32, ood (n,) bool = ood_score > cut)."""
    best = check_vector(best_class_sim, "best_class_sim")
    sims = np.asarray(neighbor_sims, dtype=np.float32)
    if sims.ndim != 2 or sims.shape[0] != best.shape[0]:
        raise InputError(f"neighbor_sims must be ({best.shape[0]}, k); got {sims.shape}.")
    cut = check_number(cut, "cut", above=0)
    valid = ~np.isnan(sims)
    far = 1.0 - np.nanmean(np.where(valid.any(1, keepdims=True), sims, 0.0), axis=1)   # no neighbour: far = 1
    score = np.minimum(robust_z(np.log(np.maximum(1.0 - best, 1e-6))),
                       robust_z(np.log(np.maximum(far, 1e-6)))).astype(np.float32)
    return score, score > cut


def find_near_duplicates(neighbor_sims, I, *, threshold: float = 0.98, cut: float = OOD_CUT) -> np.ndarray:
    """duplicate_of (n,) int64: the lowest row each row nearly duplicates, -1 for none.

    A neighbour with a lower row id is a near-duplicate when its cosine is >= threshold AND it is far closer
    than a typical nearest neighbour (robust z of the log cosine distance against the 1-NN distances below
    -cut), so an encoder whose embeddings are all near-parallel (demo CNN: median 1-NN cosine 0.994) does not
    make every row a duplicate; exact copies (distance <= 1e-6) always count. Chains resolve to their root."""
    sims = np.asarray(neighbor_sims, dtype=np.float32)
    n = sims.shape[0]
    I = check_neighbor_ids(I, n)
    if sims.shape != I.shape:
        raise InputError(f"neighbor_sims {sims.shape} and I {I.shape} must have the same shape.")
    check_number(threshold, "duplicate_threshold", above=0, maximum=1)
    valid = I >= 0
    close = np.nan_to_num(sims, nan=-2.0)
    log_d = np.log(np.maximum(1.0 - close, 1e-6))
    nn1 = log_d[:, 0][valid[:, 0]]
    med = np.median(nn1) if len(nn1) else 0.0
    mad = 1.4826 * np.median(np.abs(nn1 - med)) if len(nn1) else 0.0
    unusual = (log_d - med < -cut * mad) if mad > 0 else np.ones_like(valid)
    dup = valid & (close >= threshold - 1e-6) & (unusual | (1.0 - close <= 1e-6)) & (I < np.arange(n)[:, None])
    duplicate_of = np.where(dup.any(1), np.where(dup, I, n).min(1), -1).astype(np.int64)
    has = np.flatnonzero(duplicate_of >= 0)
    for _ in range(32):                                   # a -> b -> c becomes a -> c
        nxt = duplicate_of[duplicate_of[has]]
        move = nxt >= 0
        if not move.any():
            break
        duplicate_of[has[move]] = nxt[move]
    return duplicate_of
