"""The subset against a random subset of the same size (no streamlit; unit-tested): counts, flagged and
injected-noise shares, coverage of the embedding space from a fixed probe sample on a low-dimensional copy
computed once per run (`coverage_space`), and a linear probe scored on held-out rows (`probe_space`,
`probe_accuracy`). Cheap enough for every slider move at 60k rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from selector.errors import InputError
from selector.linalg import l2_normalize, principal_axes, sample_rows
from selector.runtime import blas_threads


# -------------------------------------------------------------------------- comparison with random
def random_mask(n: int, k: int, seed: int = 0) -> np.ndarray:
    """(n,) bool with exactly k True at seeded random rows: the baseline subset of the same size."""
    if not 0 <= k <= n:
        raise InputError(f"random subset size must be in [0, {n}], got {k}.")
    mask = np.zeros(n, dtype=bool)
    # A stream of its own: a plain default_rng(seed) would start with the same rows as the noise injection's
    # draw at the same seed, and the "random" subset would then hold every injected flip.
    mask[np.random.default_rng([seed, _RANDOM_BASELINE_STREAM]).choice(n, size=k, replace=False)] = True
    return mask


_RANDOM_BASELINE_STREAM = 0x5E1EC7


@dataclass(frozen=True)
class CoverageSpace:
    """A low-dimensional copy of the embeddings and a fixed probe sample, computed once per run, with each
    probe point's nearest rows in order: a subset's distance to a probe point is then that of the first of
    them it holds, and only a probe point none of whose nearest rows is selected is measured against the
    whole subset."""
    Z: np.ndarray           # (m, dims) float32: the pool's unit-normalised embeddings on their top PCA axes
    probe: np.ndarray       # (p,) int64 rows of Z whose distance to the subset is measured
    pool: np.ndarray | None = None   # (m,) int64 dataset rows Z holds; None: every row, in order
    near: np.ndarray | None = None   # (p, L) int64 rows of Z nearest each probe point, nearest first
    near_d: np.ndarray | None = None  # (p, L) float32 their distances


COVERAGE_POOL = 100_000     # past this many rows, coverage is measured among a fixed seeded sample of them


def coverage_space(F: np.ndarray, *, dims: int = 32, n_probe: int = 500, seed: int = 0,
                   pool: int = COVERAGE_POOL, nearest: int = None) -> CoverageSpace:
    """Project unit-normalised F on its top `dims` principal axes (fit on <= 5,000 rows) and pick the probe.
    Above `pool` rows only a fixed seeded sample of `pool` rows takes part (probe and subset alike), so a
    slider move costs the same at 1.28M rows as at 100k. nearest: rows kept per probe point (NEAREST_KEPT)."""
    rows = None
    if len(F) > pool:
        rows = np.sort(np.random.default_rng([seed, 3]).choice(len(F), size=pool, replace=False)).astype(np.int64)
    Fn = l2_normalize(F if rows is None else F[rows])
    mean, axes = principal_axes(Fn, dims, sample=5000, seed=seed)
    Z = ((Fn - mean) @ axes).astype(np.float32)
    probe = np.sort(np.random.default_rng([seed, 1]).choice(len(Z), size=min(len(Z), n_probe), replace=False))
    near, near_d = _nearest(Z, Z[probe], min(len(Z), nearest or NEAREST_KEPT))
    return CoverageSpace(Z=Z, probe=probe.astype(np.int64), pool=rows, near=near, near_d=near_d)


NEAREST_KEPT = 1024         # nearest rows kept per probe point (a random 1% subset misses all: odds 0.99^1024, 3e-5)


def _nearest(Z: np.ndarray, Q: np.ndarray, L: int, *, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """((q, L) int64 rows of Z nearest each row of Q, nearest first; (q, L) float32 their distances)."""
    half = 0.5 * (Z * Z).sum(1)
    near = np.empty((len(Q), L), np.int64)
    near_d = np.empty((len(Q), L), np.float32)
    for s in range(0, len(Q), chunk):
        q = Q[s:s + chunk]
        G = half[None, :] - q @ Z.T                      # lower = closer: |z|^2 / 2 - q.z
        top = np.argpartition(G, L - 1, axis=1)[:, :L] if L < len(Z) else np.tile(np.arange(len(Z)), (len(q), 1))
        d = np.linalg.norm(Z[top] - q[:, None, :], axis=2)       # directly: exact near 0 too
        order = np.argsort(d, axis=1, kind="stable")
        near[s:s + chunk] = np.take_along_axis(top, order, 1)
        near_d[s:s + chunk] = np.take_along_axis(d, order, 1)
    return near, near_d


def coverage_distance(space: CoverageSpace, mask: np.ndarray, *, chunk: int = 4096) -> float:
    """Mean Euclidean distance from each probe point to its nearest selected point (lower = better coverage)."""
    mask = np.asarray(mask, dtype=bool)
    if space.pool is not None:
        mask = mask[space.pool]
    if not mask.any():
        return float("nan")
    Q = space.Z[space.probe]
    dist = np.full(len(Q), np.nan, np.float32)
    if space.near is not None:                         # the first of each probe point's nearest rows selected
        hit = mask[space.near]
        found = hit.any(1)
        dist[found] = space.near_d[found, hit[found].argmax(1)]
        if found.all():
            return float(dist.mean())
        Q = Q[~found]
    S = space.Z[mask]
    half = 0.5 * (S * S).sum(1)
    best = np.full(len(Q), -np.inf, dtype=np.float32)
    # ||q - s||^2 = ||q||^2 - 2 (q.s - ||s||^2 / 2): one matmul per chunk, then a running max.
    # One BLAS thread: these small products only lose time to threading when sessions share the CPU.
    with blas_threads(1):
        for start in range(0, len(S), chunk):
            G = Q @ S[start:start + chunk].T
            G -= half[None, start:start + chunk]
            np.maximum(best, G.max(1), out=best)
    d2 = (Q * Q).sum(1) - 2.0 * best
    dist[np.isnan(dist)] = np.sqrt(np.maximum(d2, 0.0))
    return float(dist.mean())


def subset_stats(labels: np.ndarray, n_classes: int, mask: np.ndarray, *, flagged=None, truth=None,
                 space: CoverageSpace | None = None) -> dict:
    """How one subset looks: size, classes covered, balance, coverage distance, flagged / injected inside."""
    mask = np.asarray(mask, dtype=bool)
    labels = np.asarray(labels)
    full = np.bincount(labels, minlength=n_classes).astype(float)
    sub = np.bincount(labels[mask], minlength=n_classes).astype(float)
    present = full > 0
    share_full = full / max(full.sum(), 1)
    share_sub = sub / max(sub.sum(), 1)
    ratio = np.where(present, share_sub / np.where(present, share_full, 1), np.nan)
    out = {
        "size": int(mask.sum()),
        "classes_covered": int(((sub > 0) & present).sum()),
        "classes_total": int(present.sum()),
        "smallest_class_share_vs_full": float(np.nanmin(ratio)) if present.any() else float("nan"),
        "class_distribution_gap": float(0.5 * np.abs(share_sub - share_full).sum()),
    }
    if space is not None:
        out["coverage_distance"] = coverage_distance(space, mask)
    if flagged is not None:
        out["flagged_in_subset"] = int((np.asarray(flagged, dtype=bool) & mask).sum())
    if truth is not None:
        out["injected_in_subset"] = int((np.asarray(truth, dtype=bool) & mask).sum())
    return out


COMPARISON_ROWS = {
    "size": "samples",
    "classes_covered": "classes covered",
    "smallest_class_share_vs_full": "smallest class share vs full set (1 = as in full set)",
    "class_distribution_gap": "class distribution gap vs full set (0 = same mix)",
    "coverage_distance": "mean distance to nearest selected sample (lower = better embedding coverage)",
    "flagged_in_subset": "flagged samples in subset",
    "injected_in_subset": "injected label flips in subset",
}


def compare_with_random(labels, n_classes: int, mask, *, flagged=None, truth=None,
                        space: CoverageSpace | None = None, seed: int = 0, random_stats: dict | None = None
                        ) -> pd.DataFrame:
    """Table metric | subset | random subset of the same size (seeded).

    random_stats: subset_stats of random_mask(n, mask.sum(), seed) when the caller has them cached (they
    depend only on the subset size).
    """
    mask = np.asarray(mask, dtype=bool)
    a = subset_stats(labels, n_classes, mask, flagged=flagged, truth=truth, space=space)
    b = random_stats
    if b is None:
        rand = random_mask(len(mask), int(mask.sum()), seed)
        b = subset_stats(labels, n_classes, rand, flagged=flagged, truth=truth, space=space)
    rows = [(COMPARISON_ROWS[k], a[k], b[k]) for k in a if k in COMPARISON_ROWS]
    out = pd.DataFrame(rows, columns=["metric", "subset", "random subset"])
    out["subset"] = out["subset"].astype(float).round(4)
    out["random subset"] = out["random subset"].astype(float).round(4)
    return out


# ----------------------------------------------------------------------------------- linear probe
@dataclass(frozen=True)
class ProbeSpace:
    """Features for a quick linear probe and the held-out rows it is scored on, computed once per run."""
    Z: np.ndarray           # (n, dims + 1) float32: unit embeddings on their top PCA axes, and a bias column
    held_out: np.ndarray    # (m,) int64: seeded rows no probe trains on
    trainable: np.ndarray   # (n,) bool: not held out


def probe_space(F: np.ndarray, *, dims: int = 64, n_held_out: int = 5000, seed: int = 0) -> ProbeSpace:
    """Project unit-normalised F on its top `dims` principal axes (fit on a seeded sample of 5,000 rows) and
    hold out min(n_held_out, n // 10) rows. F is normalised block by block: no (n, d) copy (2.6 GB at 1.28M x
    512, read from a memory-mapped F)."""
    n = len(F)
    mean, axes = principal_axes(l2_normalize(F[sample_rows(n, 5000, seed)]), dims)
    Z = np.ones((n, axes.shape[1] + 1), np.float32)             # the last column is the bias
    for s in range(0, n, 16_384):
        Z[s:s + 16_384, :-1] = (l2_normalize(F[s:s + 16_384]) - mean) @ axes
    held = np.sort(np.random.default_rng([seed, 2]).choice(len(F), size=max(1, min(n_held_out, len(F) // 10)),
                                                            replace=False)).astype(np.int64)
    trainable = np.ones(len(F), dtype=bool)
    trainable[held] = False
    return ProbeSpace(Z=Z, held_out=held, trainable=trainable)


PROBE_MAX_TRAIN = 100_000    # a larger subset trains the probe on a seeded sample of this many of its rows


def probe_accuracy(space: ProbeSpace, mask: np.ndarray, train_codes: np.ndarray, test_codes, n_classes: int, *,
                   ridge: float = 1e-3, max_train: int = PROBE_MAX_TRAIN):
    """Accuracy on the held-out rows (against test_codes) of a ridge least-squares linear classifier trained
    on the subset's rows that are not held out (with train_codes; a seeded sample of max_train of them when
    there are more); NaN when it has no such row. Codes < 0 (labels outside the class list) are left out of
    training and scoring. test_codes may be a list of code arrays: one probe is trained, and a list of
    accuracies returned, one per array."""
    many = isinstance(test_codes, (list, tuple))
    tests = [np.asarray(t, np.int64) for t in (test_codes if many else [test_codes])]
    train_codes = np.asarray(train_codes, np.int64)
    rows = np.flatnonzero(np.asarray(mask, dtype=bool) & space.trainable & (train_codes >= 0))
    if len(rows) > max_train:    # a 65-parameter-per-class probe is settled long before this many rows
        rows = np.sort(np.random.default_rng(0).choice(rows, size=max_train, replace=False))
    pred = _probe_predictions(space, rows, train_codes, n_classes, ridge) if len(rows) else None
    out = []
    for test in tests:
        scored = test[space.held_out] >= 0
        out.append(float((pred[scored] == test[space.held_out][scored]).mean())
                   if pred is not None and scored.any() else float("nan"))
    return out if many else out[0]


def _probe_predictions(space: ProbeSpace, rows: np.ndarray, train_codes: np.ndarray, n_classes: int,
                       ridge: float) -> np.ndarray:
    """(m,) the classes the probe trained on `rows` predicts for the held-out rows."""
    from scipy import sparse
    with blas_threads(1):
        Z = space.Z[rows]
        # Z^T Y through a sparse one-hot Y: O(rows x dims), and no dense (rows, classes) array (2.6 GB for a
        # 650k-row subset of 1,000 classes)
        onehot = sparse.csr_matrix((np.ones(len(rows), np.float32), (train_codes[rows], np.arange(len(rows)))),
                                   shape=(n_classes, len(rows)))
        gram = (Z.T @ Z).astype(np.float64)
        gram[np.diag_indices_from(gram)] += ridge * len(rows)
        W = np.linalg.solve(gram, np.asarray(onehot @ Z, np.float64).T).astype(np.float32)
        return (space.Z[space.held_out] @ W).argmax(1)
