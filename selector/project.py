"""2-D maps of the embeddings: UMAP on our own kNN graph (no second neighbour search), PCA for previews."""
from __future__ import annotations

import logging
import warnings
from typing import Optional

import numpy as np

from selector.errors import InputError, describe_rows
from selector.progress import Progress, ensure

log = logging.getLogger(__name__)

PCA_SAMPLE = 50_000   # rows used to fit the PCA axes (all rows are projected)


def umap_from_knn(I, D, *, n_components: int = 2, seed: int = 0, X=None, metric: str = "euclidean",
                  min_dist: float = 0.1, n_epochs: Optional[int] = None,
                  progress: Optional[Progress] = None) -> np.ndarray:
    """UMAP layout from a precomputed kNN graph -> (n, n_components) float32.

    I (n, k) int neighbour ids and D (n, k) DISTANCES (smaller = closer; for cosine kNN pass
    1 - similarity), as from `selector.neighbors` with or without exclude_self. UMAP expects each row's
    own id first at distance 0, so it is prepended when missing; -1 padding becomes a zero-weight
    self edge. umap-learn gets the graph through `precomputed_knn` and runs no neighbour search.
    X (optional, (n, d)): only used to place disconnected components of the graph relative to each
    other (metric names its distance); without it they are placed by a seeded random guess.
    Seeded: the same inputs and seed give the same layout (umap then runs single-threaded).
    """
    progress = ensure(progress)
    progress("umap", 0, 1)
    reducer = _fit_umap(I, D, n_components=n_components, seed=seed, X=X, metric=metric, min_dist=min_dist,
                        n_epochs=n_epochs)
    out = np.asarray(reducer.embedding_, dtype=np.float32)
    progress("umap", 1, 1)
    return out


def _knn_graph(I, D) -> tuple[np.ndarray, np.ndarray]:
    """Validated (I, D) with self first at distance 0 and -1 padding turned into self edges."""
    try:
        I = np.asarray(I)
        D = np.asarray(D, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError("I and D must be numeric (n, k) arrays from a kNN search.") from exc
    if I.ndim != 2 or D.shape != I.shape or I.shape[0] < 1 or I.shape[1] < 1:
        raise InputError(f"I and D must have the same shape (n, k) with n, k >= 1; got I {I.shape}, D {D.shape}.")
    if I.dtype.kind not in "iu":
        raise InputError(f"I must hold integer row ids; got dtype {I.dtype}.")
    n = I.shape[0]
    I = I.astype(np.int64)
    if ((I < -1) | (I >= n)).any():
        rows = np.flatnonzero(((I < -1) | (I >= n)).any(axis=1))
        raise InputError(f"I has ids outside [0, {n}) (-1 = padding) in rows {describe_rows(rows)}.")
    pad = I < 0
    bad = ~pad & ~(np.isfinite(D) & (D >= 0))
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise InputError(f"D must hold finite distances >= 0 (cosine kNN: pass 1 - similarity); rows "
                         f"{describe_rows(rows)} do not.")
    rowid = np.arange(n, dtype=np.int64)
    D = np.where(pad, 0.0, D).astype(np.float32)
    if not (I[:, 0] == rowid).all():
        # prepend self; drop any other occurrence of self (it would duplicate the edge)
        I = np.concatenate([rowid[:, None], I], axis=1)
        D = np.concatenate([np.zeros((n, 1), np.float32), D], axis=1)
        pad = np.concatenate([np.zeros((n, 1), bool), pad], axis=1)
        dup = I[:, 1:] == rowid[:, None]
        pad[:, 1:] |= dup
    # padding -> a self edge (UMAP gives self edges zero weight) at the row's largest real distance,
    # so every row stays sorted and no inf enters UMAP's bandwidth search
    Dreal = np.where(pad, -np.inf, D)
    row_max = np.maximum(Dreal.max(axis=1), 0.0)
    I = np.where(pad, rowid[:, None], I)
    D = np.where(pad, row_max[:, None], D).astype(np.float32)
    # UMAP assumes each row is sorted by distance
    order = np.argsort(D[:, 1:], axis=1, kind="stable") + 1
    I[:, 1:] = np.take_along_axis(I, order, 1)
    D[:, 1:] = np.take_along_axis(D, order, 1)
    return np.ascontiguousarray(I), np.ascontiguousarray(D)


def _fit_umap(I, D, *, n_components=2, seed=0, X=None, metric="euclidean", min_dist=0.1, n_epochs=None):
    """The fitted umap.UMAP (tests read its `_knn_indices` to check our graph was used)."""
    import umap

    I, D = _knn_graph(I, D)
    n, k = I.shape
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise InputError(f"n_components must be an integer >= 1; got {n_components!r}.")
    if k < 2:
        raise InputError("the kNN graph needs at least 1 neighbour per row besides the row itself.")
    if n <= k:
        raise InputError(f"UMAP needs more samples ({n}) than neighbours per row incl. self ({k}); "
                         "use fewer neighbours or PCA for such a small set.")
    if X is None:
        # only read for the relative placement of disconnected components: a seeded random guess
        X = np.random.default_rng(seed).standard_normal((n, 2)).astype(np.float32)
        metric = "euclidean"
    else:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] != n:
            raise InputError(f"X must be (n, d) with n = {n} rows like I; got shape {X.shape}.")
    reducer = umap.UMAP(n_neighbors=k, n_components=int(n_components), metric=metric, min_dist=min_dist,
                        n_epochs=n_epochs, random_state=seed, n_jobs=1, precomputed_knn=(I, D),
                        transform_mode="embedding")
    with warnings.catch_warnings():
        # we knowingly pass no NNDescent search index (no transform of new points needed)
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        reducer.fit(X)
    return reducer


def pca_2d(X, *, seed: int = 0) -> np.ndarray:
    """First two principal components of X (n, d) -> (n, 2) float32.

    Axes from the covariance of a seeded sample of at most 50,000 rows (exact below that); every row
    is projected. Signs fixed so each axis' largest loading is positive (stable across runs). d = 1
    or n = 1 -> the missing component is 0."""
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"X must be a numeric (n, d) array; got {type(X).__name__}.") from exc
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise InputError(f"X must be a 2-D (n, d) array with n, d >= 1; got shape {X.shape}.")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(f"X has non-finite values in {len(rows)} rows: rows {describe_rows(rows)}.")
    n, d = X.shape
    sample = X
    if n > PCA_SAMPLE:
        sample = X[np.sort(np.random.default_rng(seed).choice(n, PCA_SAMPLE, replace=False))]
    mean = sample.mean(axis=0, dtype=np.float64)
    centered = sample.astype(np.float64) - mean
    cov = centered.T @ centered / max(len(sample) - 1, 1)
    vals, vecs = np.linalg.eigh(cov)                    # ascending
    axes = vecs[:, ::-1][:, :2]
    axes = axes * np.where(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])] < 0, -1.0, 1.0)
    out = np.zeros((n, 2), np.float32)
    out[:, : axes.shape[1]] = ((X - mean.astype(np.float32)) @ axes.astype(np.float32))
    return out
