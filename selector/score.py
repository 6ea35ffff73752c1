"""Per-sample scores on (adapted) embeddings. Every score is (n,) float32; each docstring says which
direction is better.

alignment  SAS_i = cos(f_i, g_{y_i})                         higher = the image matches its given label
diversity  SDS_i = mean L2 distance to the K-1 nearest samples with the same given label (K counts the
           sample itself)                                    higher = sits in a sparser part of its class
"""
from __future__ import annotations

import logging

import numpy as np

from selector.errors import InputError, describe_rows
from selector.linalg import l2_normalize, softmax
from selector.validate import check_labels, check_matrix, neighbor_pair_ids

log = logging.getLogger(__name__)

_CHUNK = 65_536  # rows per block: keeps temporaries small for 1M-row inputs


# --------------------------------------------------------------------------------------------- scores
def alignment(F, G, labels) -> np.ndarray:
    """SAS_i = cos(f_i, g_{y_i}) in [-1, 1], (n,) float32. Higher = the image matches its given label.

    F (n,d) image embeddings, G (C,d) class-prompt embeddings, labels (n,) int in [0, C)."""
    F = check_matrix(F, "F (image embeddings)")
    G = check_matrix(G, "G (class-prompt embeddings)", dim=F.shape[1])
    y = check_labels(labels, F.shape[0], G.shape[0])
    Gn = l2_normalize(G)
    out = np.empty(F.shape[0], dtype=np.float32)
    for s in range(0, F.shape[0], _CHUNK):
        Fn = l2_normalize(F[s:s + _CHUNK])
        out[s:s + _CHUNK] = np.einsum("ij,ij->i", Fn, Gn[y[s:s + _CHUNK]])
    return out


def default_k(class_sizes) -> int:
    """K for SDS (K counts the sample itself): 10% of the median class size, clamped to [2, 100].

    class_sizes: sizes of the classes (or a bincount). One K for all classes, as in the paper
    (K=100 for 5,000 per class, 50 for 500 per class); classes smaller than K use all their members."""
    sizes = np.asarray(class_sizes, dtype=np.int64).ravel()
    sizes = sizes[sizes > 0]
    if sizes.size == 0:
        raise InputError("default_k needs at least one non-empty class; got no class sizes > 0.")
    return int(np.clip(round(0.1 * float(np.median(sizes))), 2, 100))


def diversity(F, labels, *, k: int | None = None, neighbors=None) -> np.ndarray:
    """SDS_i = mean Euclidean distance from f_i to its K-1 nearest samples with the same given label.

    (n,) float32, >= 0. Higher = the sample lies in a sparser part of its class (more diverse); 0 for a
    class with a single member. K counts the sample itself (K=1 would mean no neighbour); default
    `default_k(class sizes)`; a class with fewer than K members uses all its other members.
    neighbors: optional precomputed (D, I) from `knn_within_groups(F, labels, K-1)` (I global row ids,
    -1 padded, self excluded); distances are recomputed exactly from I, so D may be squared or not."""
    F = check_matrix(F, "F (image embeddings)")
    y = check_labels(labels, F.shape[0], None)
    n = F.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if k is None:
        k = default_k(np.bincount(y))
    if int(k) != k or k < 2:
        raise InputError(f"k must be an integer >= 2 (it counts the sample itself); got {k!r}.")
    k = int(k)
    if neighbors is None:
        # one exact L2 search per class (true Euclidean distances), averaged at once: no (n, K) array is held
        from selector.neighbors import Neighbors
        out = np.zeros(n, dtype=np.float32)
        order = np.argsort(y, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(y))])
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b - a > 1:
                rows = order[a:b]
                D, I = Neighbors(F[rows], metric="l2").search(F[rows], k - 1, exclude_self=True)
                valid = I >= 0
                total = np.where(valid, D, 0.0).sum(axis=1, dtype=np.float64)
                out[rows] = total / np.maximum(valid.sum(axis=1), 1)
        return out
    I = neighbor_pair_ids(neighbors, n, "a (D, I) pair from knn_within_groups(F, labels, K-1)")[:, : k - 1]
    # Recompute distances exactly from I, in row blocks of at most ~64 MB of gathered vectors.
    step = max(1, (16 << 20) // max(1, I.shape[1] * F.shape[1]))
    out = np.zeros(n, dtype=np.float32)
    for s in range(0, n, step):
        Ib = I[s:s + step]
        valid = Ib >= 0
        d = np.linalg.norm(F[np.where(valid, Ib, 0)] - F[s:s + step, None, :], axis=2)
        cnt = valid.sum(axis=1)
        out[s:s + step] = np.where(cnt > 0, (d * valid).sum(axis=1) / np.maximum(cnt, 1), 0.0)
    return out


def minmax(x) -> np.ndarray:
    """Min-max normalise to [0, 1] as float32. A constant (or single-value) input gives zeros; NaN
    entries stay NaN and are ignored for min/max; an empty input gives an empty array."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise InputError(f"minmax expects a 1-D score array; got shape {a.shape}.")
    if np.isinf(a).any():
        raise InputError(f"minmax got +/-inf at rows {describe_rows(np.flatnonzero(np.isinf(a)))}; "
                         "scores must be finite (NaN is allowed and kept).")
    ok = ~np.isnan(a)
    if a.size == 0 or not ok.any():
        return a.astype(np.float32)
    lo, hi = a[ok].min(), a[ok].max()
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.where(ok, 0.0, np.nan).astype(np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def zero_shot_logits(X, T) -> np.ndarray:
    """cos(x_i, t_c), (n,C) float32 (no validation; private helper for score/noise)."""
    Tn = l2_normalize(T)
    out = np.empty((X.shape[0], Tn.shape[0]), dtype=np.float32)
    for s in range(0, X.shape[0], _CHUNK):
        out[s:s + _CHUNK] = l2_normalize(X[s:s + _CHUNK]) @ Tn.T
    return out


def zero_shot_best(X, T) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best-matching class prompt and its cosine: ((n,) int64, (n,) float32), in row blocks, so
    no (n, C) array is held (no validation; private helper for the audit and noise injection)."""
    n, C = X.shape[0], T.shape[0]
    best = np.empty(n, np.int64)
    sim = np.empty(n, np.float32)
    step = max(1024, min(_CHUNK, (1 << 24) // max(C, 1)))
    for s in range(0, n, step):
        S = zero_shot_logits(X[s:s + step], T)
        best[s:s + step] = S.argmax(1)
        sim[s:s + step] = S[np.arange(len(S)), best[s:s + step]]
    return best, sim


def zero_shot_probs(X, T, *, temperature: float = 0.01) -> np.ndarray:
    """CLIP zero-shot class probabilities: softmax_c(cos(x_i, t_c) / temperature), (n,C) float32.

    Independent of the given labels. temperature 0.01 is CLIP's learned logit scale (100)."""
    X = check_matrix(X, "X (image embeddings)")
    T = check_matrix(T, "T (class-prompt embeddings)", dim=X.shape[1])
    if not (np.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature must be a positive number; got {temperature!r}.")
    if T.shape[0] == 0:
        raise InputError("T must hold at least one class-prompt embedding; got 0 rows.")
    return softmax(zero_shot_logits(X, T) / np.float32(temperature))
