"""k-nearest neighbours with FAISS: global and within groups (e.g. within each given class).

Conventions (shared by every function here):
- metric="cosine": inner product on L2-normalised copies of the vectors. D is the cosine SIMILARITY,
  sorted descending (higher = closer); missing neighbours are padded with I=-1, D=-inf.
  An all-zero vector stays zero after normalisation (similarity 0 to everything).
- metric="l2": D is the Euclidean DISTANCE (not squared), sorted ascending (lower = closer); missing
  neighbours are padded with I=-1, D=+inf.
- I are int64 row ids into the indexed X (global row ids for `knn_within_groups`); D is float32.
- exclude_self drops the query's own row by id (not "the first hit"), so exact duplicates are handled.

Backend: a FAISS GPU index when faiss has GPU support (`faiss.StandardGpuResources`) and
`faiss.get_num_gpus() > 0`, else CPU; `Neighbors.backend` says which ("faiss-gpu" | "faiss-cpu").
Exact flat search up to `exact_limit` vectors, an inverted file beyond: nlist ~ 4*sqrt(n) lists trained on
a seeded sample of 64 points per list; on CPU the vectors are stored as 8-bit codes (IVF-SQ8: a quarter of
the memory and 2.3x the scan speed of IVF-Flat at equal recall, bench/knn_scale.py) and the candidates they
find are re-ranked with exact scores, so D is exact for every neighbour returned; on GPU, IVF-Flat. nprobe
is tuned per index: the smallest of 8, 16, 32, ... whose recall@10 against exact search on a seeded sample
of 1,000 rows reaches `target_recall` (0.95); `Neighbors.recall` is that estimate.
The default `exact_limit` is 2,000,000 on a GPU and 100,000 on CPU (exact 250k x 250k x 512 took 192 s on
2 cores, bench/knn_scale.py; it grows as n^2).

faiss is imported through `runtime.import_faiss`, which has its bundled OpenBLAS (0.3.15) run the kernels
this CPU's flags allow, not the generic pre-AVX2 ones it falls back to on CPUs it does not recognise. Exact
search on CPU runs in faiss's flat index, unless faiss's BLAS still runs generic kernels on a CPU that has
AVX2 (`runtime.faiss_blas`: faiss imported by other code first, or OPENBLAS_CORETYPE set so): then it runs
as torch matmul blocks (`selector.exact.TorchFlat`, MKL), 2.7-3.1x faster there (bench/exact_search.py).
`Neighbors.backend` then reads "torch-cpu".

Thread safety: `Neighbors.search` holds a per-index lock around the FAISS call. FAISS GPU indexes are
not reentrant, and a CPU search already uses all cores through OpenMP, so serialising costs nothing
and makes concurrent Streamlit sessions safe.
"""
from __future__ import annotations

import logging
import math
import threading
from typing import Optional

import numpy as np

from selector.errors import InputError, describe_rows
from selector.exact import TorchFlat, inverse_norms
from selector.linalg import l2_normalize
from selector.progress import Progress, ensure
from selector.runtime import import_faiss
from selector.validate import check_int, check_matrix, check_number

log = logging.getLogger(__name__)

METRICS = ("cosine", "l2")
DEVICES = ("auto", "cpu", "gpu")
GPU_EXACT_LIMIT = 2_000_000
CPU_EXACT_LIMIT = 100_000
GPU_MAX_K = 2048            # FAISS GPU k-selection limit (k and nprobe)
_QUERY_CHUNK = 16_384       # queries per FAISS call: bounds result memory and paces progress reports
RECALL_QUERIES = 1_000      # queries an IVF index's recall@10 is measured on (against exact search)

_gpu_lock = threading.Lock()
_gpu_res = None
EXACT_BACKENDS = ("auto", "faiss", "torch")


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    try:
        faiss = import_faiss()
    except ImportError:  # pragma: no cover - faiss is a hard dependency
        return False
    if not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - broken driver
        return False


def _gpu_resources():
    """One StandardGpuResources for the process (each one reserves GPU scratch memory)."""
    global _gpu_res
    with _gpu_lock:
        if _gpu_res is None:
            faiss = import_faiss()
            _gpu_res = faiss.StandardGpuResources()
        return _gpu_res


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InputError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}.")
    return metric


def _check_k(k) -> int:
    return check_int(k, "k (number of neighbours)", minimum=1)


def _vectors(X, what: str, dim: Optional[int] = None) -> np.ndarray:
    return np.ascontiguousarray(check_matrix(X, what, dim=dim, min_rows=1))


# ------------------------------------------------------------------------------------------ the index
class Neighbors:
    """A searchable FAISS index over X (n, d).

    metric: "cosine" (D = cosine similarity, descending) or "l2" (D = Euclidean distance, ascending).
    device: "auto" (GPU when available), "cpu" or "gpu" (InputError when no GPU is usable).
    exact_limit: flat (exact) index up to this many vectors, an inverted file above; None = 2,000,000 on GPU,
    100,000 on CPU. nlist / nprobe override the IVF defaults (ignored for the flat index); without nprobe
    it is tuned until recall@10 on a query sample reaches target_recall.
    exact_backend (CPU flat index): "auto" (faiss, or torch blocks where faiss's BLAS is generic), "faiss", "torch".
    progress: called while an IVF index is built ("building the neighbour index": training, each block added,
    tuning nprobe), which takes minutes at 1M rows.
    Attributes: backend ("faiss-gpu" | "faiss-cpu" | "torch-cpu"), kind ("flat" | "ivf"), n, dim, metric,
    nlist, nprobe, recall (1.0 for flat; for IVF the recall@10 measured on recall_queries sample rows).
    """

    def __init__(self, X, *, metric: str = "cosine", device: str = "auto", exact_limit: Optional[int] = None,
                 nlist: Optional[int] = None, nprobe: Optional[int] = None, seed: int = 0,
                 exact_backend: str = "auto", target_recall: float = 0.95,
                 progress: Optional[Progress] = None):
        faiss = import_faiss()

        self.metric = _check_metric(metric)
        if device not in DEVICES:
            raise InputError(f"device must be one of {', '.join(DEVICES)}; got {device!r}.")
        X = _vectors(X, "X (vectors to index)")
        self.n, self.dim = X.shape
        use_gpu = device == "gpu" or (device == "auto" and gpu_available())
        if use_gpu and not gpu_available():
            raise InputError("device='gpu' but this faiss build has no GPU support or no GPU is visible "
                             "(install faiss-gpu on a CUDA machine), or use device='auto' / 'cpu'.")
        self.backend = "faiss-gpu" if use_gpu else "faiss-cpu"
        if exact_limit is None:
            exact_limit = GPU_EXACT_LIMIT if use_gpu else CPU_EXACT_LIMIT
        faiss_metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2

        self._lock = threading.Lock()
        self._cpu_fallback = None
        self._X = None
        self.recall, self.recall_queries = 1.0, 0     # exact unless IVF (then estimated on a query sample)
        self._scale = None                           # IVF, cosine: 1 / |x_i|, so X itself is never copied
        if self.metric == "cosine" and self.n <= exact_limit:
            X = l2_normalize(X)
        elif self.metric == "cosine":
            self._scale = inverse_norms(X)
        target_recall = check_number(target_recall, "target_recall", above=0, maximum=1)
        if exact_backend not in EXACT_BACKENDS:
            raise InputError(f"exact_backend must be one of {', '.join(EXACT_BACKENDS)}; got {exact_backend!r}.")
        if self.n <= exact_limit and not use_gpu and _use_torch(exact_backend):
            self.kind, self.nlist, self.nprobe, self.backend = "flat", None, None, "torch-cpu"
            self._index = TorchFlat(X, self.metric)
            log.debug("Neighbors: torch-cpu flat index, n=%d d=%d metric=%s", self.n, self.dim, self.metric)
            return
        if self.n <= exact_limit:
            self.kind, self.nlist, self.nprobe = "flat", None, None
            self._quantizer = None
            index = faiss.IndexFlatIP(self.dim) if self.metric == "cosine" else faiss.IndexFlatL2(self.dim)
        else:
            self.kind = "ivf"
            # ~4 sqrt(n) lists, with >= 39 training points per centroid (FAISS' own minimum)
            self.nlist = int(nlist or max(1, min(int(4 * math.sqrt(self.n)), self.n // 39, 65_536)))
            self._quantizer = faiss.IndexFlatIP(self.dim) if self.metric == "cosine" else faiss.IndexFlatL2(self.dim)
            if use_gpu:
                index = faiss.IndexIVFFlat(self._quantizer, self.dim, self.nlist, faiss_metric)
            else:   # 8-bit codes: a quarter of the memory and 2.3x the scan speed of IVF-Flat at equal recall
                index = faiss.IndexIVFScalarQuantizer(self._quantizer, self.dim, self.nlist,
                                                      faiss.ScalarQuantizer.QT_8bit, faiss_metric)
                self._X = X        # exact vectors for re-ranking the candidates the codes find
        if use_gpu:
            index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
        if self.kind == "ivf":
            step = _QUERY_CHUNK * 4
            steps = 2 + -(-self.n // step)                  # train, each block added, tune
            progress = ensure(progress)
            report = lambda done: progress("building the neighbour index", done, steps)  # noqa: E731
            report(0)
            rng = np.random.default_rng(seed)
            n_train = min(self.n, self.nlist * 64)          # 64 points per centroid: enough, and CPU-cheap
            train = np.sort(rng.choice(self.n, n_train, replace=False)) if n_train < self.n else np.arange(self.n)
            index.train(self._unit(X, train))
            report(1)
            for b, s in enumerate(range(0, self.n, step)):             # unit rows a block at a time: no copy of X
                index.add(self._unit(X, np.arange(s, min(self.n, s + step))))
                report(2 + b)
        else:
            index.add(X)
        self._index = index
        if self.kind == "ivf":
            self._tune(X, nprobe, target_recall, seed, gpu=use_gpu)
            report(steps)
        log.debug("Neighbors: %s %s index, n=%d d=%d metric=%s%s", self.backend, self.kind, self.n, self.dim,
                  self.metric, f" nlist={self.nlist} nprobe={self.nprobe} recall@10 ~{self.recall:.3f}"
                  if self.kind == "ivf" else "")

    def _tune(self, X, nprobe, target_recall, seed, *, gpu: bool) -> None:
        """Set nprobe: the given one, else the smallest of 8, 16, 32, ... whose recall@10 against exact search on
        a seeded sample of RECALL_QUERIES rows reaches target_recall. `recall` is that estimate either way."""
        faiss = import_faiss()
        rng = np.random.default_rng([seed, 7])
        rows = np.sort(rng.choice(self.n, min(self.n, RECALL_QUERIES), replace=False))
        _, truth = TorchFlat(X, self.metric, scale=self._scale).search(self._unit(X, rows), min(11, self.n))
        truth = self._finish(np.zeros(truth.shape, np.float32), truth, 10, rows)[1]
        top = min(self.nlist, GPU_MAX_K) if gpu else self.nlist
        tries = [int(nprobe)] if nprobe else sorted({min(top, 8 << j) for j in range(16) if (8 << j) // 2 < top}) or [top]
        for p in tries:
            faiss.ParameterSpace().set_index_parameter(self._index, "nprobe", p)
            self.nprobe = p
            found = self._finish(*self._raw_search(self._unit(X, rows), min(11, self.n)), 10, rows)[1]
            hit = (found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
            self.recall = float(hit.any(-1).sum() / max((truth >= 0).sum(), 1))
            if self.recall >= target_recall:
                break
        self.recall_queries = len(rows)

    def __repr__(self) -> str:
        return f"Neighbors(n={self.n}, dim={self.dim}, metric={self.metric!r}, backend={self.backend!r}, kind={self.kind!r})"

    # -------------------------------------------------------------------------------------- search
    def search(self, Q, k: int, *, exclude_self: bool = False, rows=None,
               progress: Optional[Progress] = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest indexed rows for each row of Q (m, d) -> (D (m, k) float32, I (m, k) int64).

        exclude_self: Q's rows ARE indexed rows and each one's own row is dropped from its result.
        Which rows: `rows` (m,) ids into X, or by default Q is X itself in order (m must equal n).
        Fewer than k neighbours available -> I=-1 and D=-inf (cosine) / +inf (l2) padding. Thread-safe.
        """
        k = _check_k(k)
        Q = _vectors(Q, "Q (query vectors)", dim=self.dim)
        m = Q.shape[0]
        self_ids = None
        if exclude_self:
            if rows is None:
                if m != self.n:
                    raise InputError(f"exclude_self=True needs to know which indexed row each query is: Q has {m} "
                                     f"rows but the index holds {self.n}. Pass rows=<ids of Q's rows> or query "
                                     "with the indexed X itself.")
                self_ids = np.arange(m, dtype=np.int64)
            else:
                self_ids = np.asarray(rows).astype(np.int64, copy=False).reshape(-1)
                if self_ids.shape[0] != m or (self_ids.size and (self_ids.min() < 0 or self_ids.max() >= self.n)):
                    raise InputError(f"rows must hold {m} ids in [0, {self.n}); got {self_ids.shape[0]} ids "
                                     f"in [{self_ids.min() if self_ids.size else '-'}, "
                                     f"{self_ids.max() if self_ids.size else '-'}].")
        elif rows is not None:
            raise InputError("rows is only used with exclude_self=True; drop it or set exclude_self=True.")
        k_search = min(k + int(exclude_self), self.n)
        progress = ensure(progress)
        D = np.empty((m, k), np.float32)
        I = np.empty((m, k), np.int64)
        for s in range(0, m, _QUERY_CHUNK):
            e = min(m, s + _QUERY_CHUNK)
            q = l2_normalize(Q[s:e]) if self.metric == "cosine" else Q[s:e]   # per chunk: no full copy
            d, i = self._raw_search(q, k_search)
            D[s:e], I[s:e] = self._finish(d, i, k, None if self_ids is None else self_ids[s:e])
            progress("searching neighbours", e, m)
        return D, I

    def _raw_search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._index
        if self.backend == "faiss-gpu" and k > GPU_MAX_K:
            index = self._cpu_index()
        with self._lock:
            D, I = index.search(Q, k)
        if self._X is not None:   # 8-bit codes found the candidates: exact scores, best first
            D, I = self._rerank(Q, I)
        return D, I

    def _unit(self, X, rows) -> np.ndarray:
        """X's rows `rows` as the index holds them: unit norm for cosine."""
        return X[rows] if self._scale is None else X[rows] * self._scale[rows, None]

    def _rerank(self, Q, I):
        """Exact inner products (cosine) or squared L2 of each query to its candidates I, sorted best first."""
        D = np.empty(I.shape, np.float32)
        for s in range(0, len(I), 4096):                                   # (4096, k, d) gathered at a time
            ids = np.maximum(I[s:s + 4096], 0)
            cand, q = self._X[ids], Q[s:s + 4096]
            if self.metric == "l2":
                D[s:s + 4096] = ((cand - q[:, None, :]) ** 2).sum(-1)
            else:
                D[s:s + 4096] = np.einsum("mkd,md->mk", cand, q) * (1.0 if self._scale is None else self._scale[ids])
        best_first = -D if self.metric == "cosine" else D
        order = np.argsort(np.where(I >= 0, best_first, np.inf), axis=1, kind="stable")
        D = np.where(I >= 0, D, -np.inf if self.metric == "cosine" else np.inf)
        return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)

    def _cpu_index(self):
        # FAISS GPU k-selection stops at 2048; rare huge-k queries go to a CPU copy
        if self._cpu_fallback is None:
            faiss = import_faiss()
            log.info("k > %d: searching a CPU copy of the GPU index", GPU_MAX_K)
            with self._lock:
                self._cpu_fallback = faiss.index_gpu_to_cpu(self._index)
        return self._cpu_fallback

    def _finish(self, D, I, k, self_ids):
        """Drop self, convert squared L2 to L2, pad to k columns with (-1, worst)."""
        I = I.astype(np.int64, copy=False)
        D = D.astype(np.float32, copy=False)
        worst = -np.inf if self.metric == "cosine" else np.inf
        if self_ids is not None:
            drop = I == self_ids[:, None]
            # self missing (duplicate ties pushed it out of the top k+1): drop the last column instead
            drop[~drop.any(axis=1), -1] = True
            # stable: moves the one dropped entry to the end, order of the others unchanged
            order = np.argsort(drop, axis=1, kind="stable")[:, : I.shape[1] - 1]
            I = np.take_along_axis(I, order, 1)
            D = np.take_along_axis(D, order, 1)
        if self.metric == "l2":
            D = np.sqrt(np.maximum(D, 0.0))
        missing = I < 0
        if missing.any():
            D = np.where(missing, worst, D)
            I = np.where(missing, -1, I)
        if I.shape[1] < k:
            pad = k - I.shape[1]
            I = np.concatenate([I, np.full((I.shape[0], pad), -1, np.int64)], axis=1)
            D = np.concatenate([D, np.full((D.shape[0], pad), worst, np.float32)], axis=1)
        return D.astype(np.float32, copy=False), I


def _use_torch(exact_backend: str) -> bool:
    if exact_backend == "auto":
        from selector.runtime import faiss_blas
        return faiss_blas()["generic"]
    return exact_backend == "torch"


# ------------------------------------------------------------------------------------------ functions
def knn(X, k: int, *, metric: str = "cosine", exclude_self: bool = True, device: str = "auto",
        exact_limit: Optional[int] = None, progress: Optional[Progress] = None) -> tuple[np.ndarray, np.ndarray]:
    """Global kNN of every row of X (n, d) among all rows -> (D (n, k) float32, I (n, k) int64).

    See the module docstring for D's meaning per metric and the -1 padding (k > n - 1)."""
    k = _check_k(k)
    index = Neighbors(X, metric=metric, device=device, exact_limit=exact_limit)
    X = _vectors(X, "X (vectors to index)")
    return index.search(X, k, exclude_self=exclude_self, progress=progress)


def knn_within_groups(X, groups, k: int, *, metric: str = "l2", exclude_self: bool = True, device: str = "auto",
                      exact_limit: Optional[int] = None,
                      progress: Optional[Progress] = None) -> tuple[np.ndarray, np.ndarray]:
    """kNN of every row of X (n, d) among the rows with the same group label -> (D (n, k), I (n, k)).

    groups: (n,) labels (any sortable values, e.g. given class ids). I are GLOBAL row ids into X.
    A group smaller than k+1 (k when exclude_self=False) is padded with I=-1 and D=+inf (l2) /
    -inf (cosine); a size-1 group with exclude_self has only padding. One index per group."""
    k = _check_k(k)
    _check_metric(metric)
    X = _vectors(X, "X (vectors to index)")
    n = X.shape[0]
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise InputError(f"groups must be a 1-D array with one label per row of X ({n}); got shape {g.shape}.")
    if g.dtype.kind == "f" and not np.isfinite(g).all():
        rows = np.flatnonzero(~np.isfinite(g))
        raise InputError(f"groups has {len(rows)} non-finite labels: rows {describe_rows(rows)}.")
    try:
        _, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
    except TypeError as exc:
        raise InputError(f"groups must hold comparable labels (ints or strings); got {g.dtype}.") from exc
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    worst = -np.inf if metric == "cosine" else np.inf
    D = np.full((n, k), worst, np.float32)
    I = np.full((n, k), -1, np.int64)
    progress = ensure(progress)
    for gi in range(len(counts)):
        rows = order[starts[gi]:starts[gi + 1]]
        if len(rows) > int(exclude_self):
            index = Neighbors(X[rows], metric=metric, device=device, exact_limit=exact_limit)
            d, i = index.search(X[rows], k, exclude_self=exclude_self)
            I[rows] = np.where(i >= 0, rows[np.maximum(i, 0)], -1)
            D[rows] = d
        progress("searching neighbours within groups", int(starts[gi + 1]), n)
    return D, I
