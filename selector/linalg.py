"""Small numeric building blocks the stages share: row normalisation, softmax, principal axes."""
from __future__ import annotations

from typing import Optional

import numpy as np

_BLOCK = 65_536


def row_norms(X) -> np.ndarray:
    """(n,) float64 Euclidean norm of each row of the 2-D X, a block of rows at a time; a block whose float32
    norms leave [1e-15, 1e15] (rows scaled by 1e30 or 1e-20, or all-zero rows) is redone in float64, so no
    norm overflows or vanishes."""
    out = np.empty(len(X), np.float64)
    for s in range(0, len(X), _BLOCK):
        block = X[s:s + _BLOCK]
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float32))
        if len(norms) and not (np.isfinite(norms).all() and 1e-15 < norms.min() and norms.max() < 1e15):
            block = block.astype(np.float64)          # float32 squares would overflow or vanish: 7x slower
            norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        out[s:s + _BLOCK] = norms
    return out


def l2_normalize(X) -> np.ndarray:
    """Row-wise unit norm, float32 (C-contiguous); all-zero rows stay zero. A float32 C-contiguous X whose
    rows are already unit norm (within 1e-5) is returned itself, not copied (at 1.28M x 512 a copy is
    2.6 GB): callers only read the result."""
    X = np.asarray(X, dtype=np.float32)
    norm = row_norms(X)[:, None]
    if X.flags.c_contiguous and X.ndim == 2 and len(X) and np.abs(norm - 1.0).max() <= 1e-5:
        return X
    inv = np.where(norm > 0, 1.0 / np.maximum(norm, 1e-300), 0.0)
    out = np.empty(X.shape, np.float32)
    for s in range(0, len(X), _BLOCK):
        scale = inv[s:s + _BLOCK]
        if scale.max() < 3e38:     # representable in float32: multiply there (7x faster than in float64)
            np.multiply(X[s:s + _BLOCK], scale.astype(np.float32), out=out[s:s + _BLOCK])
        else:                      # subnormal rows
            out[s:s + _BLOCK] = X[s:s + _BLOCK].astype(np.float64) * scale
    return out


def softmax(Z: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax along `axis` (numerically stable; works in place on a copy of Z)."""
    Z = Z - Z.max(axis=axis, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=axis, keepdims=True)
    return Z


def sample_rows(n: int, k: int, seed: int = 0) -> np.ndarray:
    """(min(n, k),) int64 sorted row indices: every row when n <= k, else a seeded sample of k of them."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def principal_axes(X: np.ndarray, n_axes: int, *, sample: Optional[int] = None, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,) float32, axes (d, min(n_axes, d)) float32): the top principal axes of X's rows, from the
    covariance of a seeded sample of at most `sample` rows (all rows when None or fewer). Signs are fixed so
    each axis' largest loading is positive, so the axes are stable across runs."""
    n, d = X.shape
    rows = X
    if sample is not None and n > sample:
        rows = X[sample_rows(n, sample, seed)]
    mean = rows.mean(axis=0, dtype=np.float64)
    centred = rows.astype(np.float64) - mean
    cov = centred.T @ centred / max(len(rows) - 1, 1)
    _, vecs = np.linalg.eigh(cov)                        # ascending eigenvalues: take the last columns
    axes = vecs[:, ::-1][:, : min(n_axes, d)]
    axes = axes * np.where(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])] < 0, -1.0, 1.0)
    return mean.astype(np.float32), axes.astype(np.float32)


def class_prototypes(X: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, d) float32: the unit-norm mean of each class's unit rows of X (zeros for a class without rows).
    What stands in for class prompts when an encoder has no text tower. Summed in row blocks through a sparse
    one-hot, so no copy of X is made."""
    from scipy import sparse
    y = np.asarray(labels, dtype=np.int64)
    sums = np.zeros((n_classes, X.shape[1]), np.float64)
    for s in range(0, len(X), _BLOCK):
        block = l2_normalize(X[s:s + _BLOCK])
        onehot = sparse.csr_matrix((np.ones(len(block)), (y[s:s + _BLOCK], np.arange(len(block)))),
                                   shape=(n_classes, len(block)))
        sums += onehot @ block
    return l2_normalize(sums)
