"""2-D maps of the embeddings: UMAP on our own kNN graph (no second neighbour search), PCA for previews."""
from __future__ import annotations

import functools
import logging
import os
import warnings
from typing import Optional

import numpy as np

from selector.errors import InputError, describe_rows
from selector.linalg import principal_axes
from selector.progress import Progress, ensure
from selector.registry import Choice, Registry
from selector.validate import check_int, check_matrix

log = logging.getLogger(__name__)

PCA_SAMPLE = 50_000   # rows used to fit the PCA axes (all rows are projected)
LANDMARKS = 50_000    # above twice this many rows, UMAP lays out this many landmarks and places the rest
PLACEMENT_SWEEPS = 3  # smoothing sweeps of the placed rows over their neighbours (landmarks stay fixed)

MAPS = Registry(
    "map",
    Choice("umap", "UMAP", help="UMAP on the pipeline's own kNN graph of the adapted embeddings: neighbours "
                                "stay neighbours. Above 100,000 rows UMAP lays out 50,000 landmarks and every other "
                                "row is placed among its neighbours."),
    Choice("pca", "PCA (fast preview)", help="The first two principal components: seconds, but classes overlap."),
    Choice("none", "no map", help="Skip the map (the Map page is then empty)."),
)


def umap_from_knn(I, D, *, n_components: int = 2, seed: int = 0, X=None, metric: str = "euclidean",
                  min_dist: float = 0.1, n_epochs: Optional[int] = None, init: str = "spectral",
                  progress: Optional[Progress] = None) -> np.ndarray:
    """UMAP layout from a precomputed kNN graph -> (n, n_components) float32.

    I (n, k) int neighbour ids and D (n, k) DISTANCES (smaller = closer; for cosine kNN pass
    1 - similarity), as from `selector.neighbors` with or without exclude_self. UMAP expects each row's
    own id first at distance 0, so it is prepended when missing; -1 padding becomes a zero-weight
    self edge. umap-learn gets the graph through `precomputed_knn` and runs no neighbour search.
    X (optional, (n, d)): the points the graph was built on. init "spectral" (UMAP's own start: the graph's
    leading eigenvectors) uses X only to place disconnected components relative to each other (metric names
    its distance; without X they are placed by a seeded random guess). init "pca" (X required) starts from
    X's first principal components instead: at 60,000 rows it skips a 15 s eigensolve, for a kNN
    preservation of 0.152 against 0.156 and the same class agreement (bench/map_quality.py).
    Seeded: the same inputs and seed give the same layout (umap then runs single-threaded).
    """
    progress = ensure(progress)
    progress("umap", 0, 1)
    reducer = _fit_umap(I, D, n_components=n_components, seed=seed, X=X, metric=metric, min_dist=min_dist,
                        n_epochs=n_epochs, init=init)
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


@functools.lru_cache(maxsize=1)
def _cache_umap_kernels() -> None:
    """Keep umap-learn's compiled numba kernels on disk (NUMBA_CACHE_DIR, else the cache dir's numba/): they
    take 7-10 s to compile in every new process and a fraction of a second to load. Must run before the
    first UMAP of the process (it runs once per process); a cache folder that cannot be used only costs the
    compile."""
    import numba
    import umap.layouts as layouts
    import umap.umap_ as umap_

    from selector.files import default_cache_dir
    try:
        if not os.environ.get("NUMBA_CACHE_DIR"):
            folder = default_cache_dir() / "numba"
            folder.mkdir(parents=True, exist_ok=True)
            numba.config.CACHE_DIR = str(folder)
        for kernel in (umap_.smooth_knn_dist, umap_.compute_membership_strengths,
                       layouts._nb_optimize_layout_euclidean_single_epoch,
                       layouts._nb_optimize_layout_euclidean_single_epoch_parallel):
            kernel.enable_caching()
    except (OSError, RuntimeError, AttributeError) as exc:   # unwritable folder, or a umap-learn without them
        log.info("UMAP's compiled kernels are not cached on disk: %s", exc)


def _fit_umap(I, D, *, n_components=2, seed=0, X=None, metric="euclidean", min_dist=0.1, n_epochs=None,
              init="spectral"):
    """The fitted umap.UMAP (tests read its `_knn_indices` to check our graph was used)."""
    import umap

    _cache_umap_kernels()

    I, D = _knn_graph(I, D)
    n, k = I.shape
    n_components = check_int(n_components, "n_components", minimum=1)
    if k < 2:
        raise InputError("the kNN graph needs at least 1 neighbour per row besides the row itself.")
    if n <= k:
        raise InputError(f"UMAP needs more samples ({n}) than neighbours per row incl. self ({k}); "
                         "use fewer neighbours or PCA for such a small set.")
    if init not in ("spectral", "pca"):
        raise InputError(f"init must be 'spectral' or 'pca'; got {init!r}.")
    if init == "pca" and X is None:
        raise InputError("init='pca' starts from the principal components of X: pass X, the (n, d) points.")
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
                        transform_mode="embedding",
                        init=_pca_start(X, n_components, seed) if init == "pca" else "spectral")
    with warnings.catch_warnings():
        # we knowingly pass no NNDescent search index (no transform of new points needed)
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        reducer.fit(X)
    return reducer


def _pca_start(X, n_components: int, seed: int) -> np.ndarray:
    """UMAP's start from the principal components: scaled to |coordinate| <= 10 with seeded noise of 1e-4, as
    umap-learn scales its own starts (so tied rows and a constant axis still have a spread)."""
    start = principal_coords(X, n_components, seed=seed)
    start *= 10.0 / max(float(np.abs(start).max()), 1e-12)
    return start + np.random.default_rng([seed, 5]).normal(scale=1e-4, size=start.shape).astype(np.float32)


def principal_coords(X, k: int, *, seed: int = 0) -> np.ndarray:
    """X (n, d) on its first k principal axes -> (n, k) float32 (zeros past d's rank: see pca_2d)."""
    X = check_matrix(X, "X", min_rows=1)
    mean, axes = principal_axes(X, k, sample=PCA_SAMPLE, seed=seed)
    out = np.zeros((X.shape[0], k), np.float32)
    out[:, : axes.shape[1]] = (X - mean) @ axes
    return out


def pca_2d(X, *, seed: int = 0) -> np.ndarray:
    """First two principal components of X (n, d) -> (n, 2) float32.

    Axes from the covariance of a seeded sample of at most 50,000 rows (exact below that); every row
    is projected. Signs fixed so each axis' largest loading is positive (stable across runs). d = 1
    or n = 1 -> the missing component is 0."""
    return principal_coords(X, 2, seed=seed)


def draw_map(kind: str, F, D, I, *, seed: int = 0, progress: Optional[Progress] = None) -> np.ndarray:
    """(n, 2) float32 map of the adapted embeddings F (n, d) by MAPS name; D, I: the global cosine kNN on F
    (similarities, self excluded), which UMAP reuses as its graph. Fewer than 16 rows get PCA."""
    MAPS.check(kind)
    progress = ensure(progress)
    n = len(F)
    if kind == "none":
        return np.zeros((n, 2), dtype=np.float32)
    progress("drawing the map", 0, 1)
    if kind == "umap" and n > 2 * LANDMARKS:
        xy = landmark_umap(F, D, I, seed=seed)
    elif kind == "umap" and n >= 16:
        # UMAP wants distances; the kNN stores cosine similarity
        xy = umap_from_knn(I, np.maximum(1.0 - D, 0.0).astype(np.float32), seed=seed, X=F, init="pca")
    else:
        xy = pca_2d(F)
    progress("drawing the map", 1, 1)
    return np.asarray(xy, dtype=np.float32)


def landmark_umap(F, D, I, *, landmarks: int = LANDMARKS, seed: int = 0) -> np.ndarray:
    """(n, 2) float32 map of F (n, d) at any n: UMAP on a seeded sample of `landmarks` rows (on their own exact
    cosine kNN graph), then every other row placed from the global kNN (D similarities, I ids, self
    excluded): sweep after sweep outward from the landmarks, a row goes to the similarity-weighted mean of
    its neighbours placed so far; then PLACEMENT_SWEEPS smoothing sweeps over all its neighbours. Rows no
    sweep reaches go to their nearest landmark. Cost: UMAP on `landmarks` rows plus O(n k) per sweep."""
    from selector.neighbors import Neighbors
    n = len(F)
    L = np.sort(np.random.default_rng([seed, 3]).choice(n, size=min(n, landmarks), replace=False))
    FL = F[L]                                  # the landmarks' rows, copied once (F may be memory-mapped)
    index = Neighbors(FL, exact_limit=len(L))
    DL, IL = index.search(FL, min(I.shape[1], len(L) - 1), exclude_self=True)
    pos = np.zeros((n, 2), np.float32)
    pos[L] = umap_from_knn(IL, np.maximum(1.0 - DL, 0.0).astype(np.float32), seed=seed, X=FL, init="pca")
    placed = np.zeros(n, bool)
    placed[L] = True
    W = np.where(I >= 0, np.maximum(D, 0.0) + 1e-6, 0.0).astype(np.float32)
    nb = np.maximum(I, 0)

    def mean_of_neighbours(rows, usable):
        w = W[rows] * usable
        keep = w.sum(1) > 0
        rows, w = rows[keep], w[keep]
        return rows, (w[:, :, None] * pos[nb[rows]]).sum(1) / w.sum(1, keepdims=True)

    while not placed.all():
        todo = np.flatnonzero(~placed)
        rows, xy = mean_of_neighbours(todo, placed[nb[todo]])
        if not len(rows):
            break
        pos[rows], placed[rows] = xy, True
    if not placed.all():   # no path to a landmark through the kNN graph: the nearest landmark's place
        lost = np.flatnonzero(~placed)
        _, near = index.search(F[lost], 1)
        pos[lost], placed[lost] = pos[L[near[:, 0]]], True
    others = np.setdiff1d(np.arange(n), L)
    for _ in range(PLACEMENT_SWEEPS):
        rows, xy = mean_of_neighbours(others, np.ones((len(others), I.shape[1]), np.float32))
        pos[rows] = xy
    return pos
