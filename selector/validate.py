"""Shared input validation: every public function of the engine checks its arrays and numbers here.

Each check returns the value in the form the caller computes with (float32 matrix, int64 labels, bool mask)
and raises InputError saying what was expected, what was given and how to fix it.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from selector.errors import InputError, describe_rows


def finite_rows(A: np.ndarray) -> np.ndarray:
    """(n,) bool: which rows of the 2-D A hold only finite values, a block of rows at a time (a whole (n, d)
    mask is 655 MB at 1.28M x 512)."""
    out = np.empty(A.shape[0], bool)
    for s in range(0, A.shape[0], 65_536):
        out[s:s + 65_536] = np.isfinite(A[s:s + 65_536]).all(axis=1)
    return out


def check_matrix(X, name: str, *, dim: Optional[int] = None, rows: Optional[int] = None,
                 min_rows: int = 0) -> np.ndarray:
    """A finite 2-D real array as float32 (copied only when needed)."""
    try:
        A = np.asarray(X)
    except Exception as exc:  # ragged lists etc.
        raise InputError(f"{name} must be a 2-D numeric array; could not convert it ({exc}).") from exc
    if A.ndim != 2:
        raise InputError(f"{name} must be a non-empty 2-D numeric array (rows, dims); got shape {A.shape}. "
                         "Pass one embedding per row.")
    if A.dtype == object or not np.issubdtype(A.dtype, np.number) or np.issubdtype(A.dtype, np.complexfloating):
        raise InputError(f"{name} must be a real numeric array; got dtype {A.dtype}.")
    if A.shape[0] < min_rows or (min_rows and A.shape[1] < 1):
        raise InputError(f"{name} must be a non-empty 2-D numeric array with at least {min_rows} row(s); got "
                         f"shape {A.shape}.")
    if rows is not None and A.shape[0] != rows:
        raise InputError(f"{name} has {A.shape[0]} rows but {rows} were expected (one per sample/class).")
    if dim is not None and A.shape[1] != dim:
        raise InputError(f"{name} has {A.shape[1]} columns (dimensions) but {dim} were expected: embeddings "
                         "that are compared must come from the same encoder/adapter.")
    A = A.astype(np.float32, copy=False)
    bad = ~finite_rows(A)
    if bad.any():
        rows_bad = np.flatnonzero(bad)
        raise InputError(f"{name} has NaN/inf in rows {describe_rows(rows_bad)} ({len(rows_bad)} in all). "
                         "Drop or recompute those rows (e.g. undecodable images) first.")
    return A


def check_vector(x, name: str, n: Optional[int] = None) -> np.ndarray:
    """A finite 1-D array as float32, with n entries when n is given."""
    try:
        v = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a 1-D numeric array; got {type(x).__name__}.") from exc
    if v.ndim != 1:
        raise InputError(f"{name} must be 1-D (one value per sample); got shape {v.shape}.")
    if n is not None and v.shape[0] != n:
        raise InputError(f"{name} has {v.shape[0]} values but the other inputs have {n}; pass one per sample.")
    bad = ~np.isfinite(v)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(f"{name} has {len(rows)} non-finite values (NaN/inf): rows {describe_rows(rows)}. "
                         "Fix or drop those samples first.")
    return v


def check_labels(labels, n: int, n_classes: Optional[int], name: str = "labels") -> np.ndarray:
    """(n,) int64 class indices in [0, n_classes)."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"{name} must be 1-D with {n} entries (one per row); got shape {y.shape}.")
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise InputError(f"{name} must be integer class indices; got dtype {y.dtype}. "
                         "Map class names to indices first.")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise InputError(f"{name} must be whole numbers; rows {describe_rows(np.flatnonzero(bad))} are not.")
    y = y.astype(np.int64)
    hi = n_classes if n_classes is not None else np.iinfo(np.int64).max
    bad = (y < 0) | (y >= hi)
    if bad.any():
        rows_bad = np.flatnonzero(bad)
        raise InputError(f"{name} must lie in [0, {n_classes}) (one per class); rows "
                         f"{describe_rows(rows_bad)} hold {describe_rows(y[rows_bad])}.")
    return y


def group_codes(groups, n: int, name: str = "labels") -> np.ndarray:
    """(n,) int64 codes 0..G-1 for any per-row group values: non-negative ints are kept (compacted when
    sparse and huge), whole floats become ints, anything else (strings) is coded in sorted order."""
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise InputError(f"{name} must be 1-D with one value per row ({n}); got shape {g.shape}.")
    if g.dtype.kind == "f":
        if not np.isfinite(g).all():
            rows = np.flatnonzero(~np.isfinite(g))
            raise InputError(f"{name} has {len(rows)} non-finite values: rows {describe_rows(rows)}.")
        if (g == np.round(g)).all():
            g = g.astype(np.int64)
    if g.dtype.kind in "iub":
        g = g.astype(np.int64, copy=False)
        if g.size and g.min() < 0:
            rows = np.flatnonzero(g < 0)
            raise InputError(f"{name} must be >= 0; {len(rows)} negative: rows {describe_rows(rows)}.")
        if not g.size or g.max() < 4 * n + 1024:
            return g
    try:
        _, codes = np.unique(g, return_inverse=True)
    except TypeError as exc:
        raise InputError(f"{name} must be class ids or names; got dtype {g.dtype}.") from exc
    return codes.reshape(-1).astype(np.int64)


def check_rows(rows, n: int, name: str) -> Optional[np.ndarray]:
    """A (n,) bool mask from None, a bool mask or integer row ids; None when no row is named."""
    if rows is None:
        return None
    r = np.asarray(rows)
    if r.dtype == bool:
        if r.shape != (n,):
            raise InputError(f"{name} as a mask must have shape ({n},); got {r.shape}.")
        return r if r.any() else None
    if r.size == 0:
        return None
    if r.dtype.kind not in "iu":
        raise InputError(f"{name} must be a bool mask or integer row ids; got dtype {r.dtype}.")
    r = r.reshape(-1).astype(np.int64)
    bad = (r < 0) | (r >= n)
    if bad.any():
        raise InputError(f"{name} names rows outside [0, {n}): {describe_rows(r[bad])}.")
    mask = np.zeros(n, bool)
    mask[r] = True
    return mask


def check_indices(rows, n: int) -> np.ndarray:
    """int64 row indices (order kept; negative ones count from the end) from indices or a (n,) bool mask."""
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise InputError(f"a boolean row mask must have shape ({n},), got {rows.shape}.")
        return np.flatnonzero(rows)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise InputError(f"rows must be 1-D integer indices or a ({n},) bool mask, got {rows.shape} {rows.dtype}.")
    bad = rows[(rows < -n) | (rows >= n)]
    if bad.size:
        raise InputError(f"row indices out of range for {n} samples: {describe_rows(bad)}.")
    return rows.astype(np.int64)


def check_int(value, name: str, *, minimum: Optional[int] = None) -> int:
    """An integer (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
            (minimum is not None and value < minimum):
        need = f" >= {minimum}" if minimum is not None else ""
        raise InputError(f"{name} must be an integer{need}; got {value!r}.")
    return int(value)


def check_number(value, name: str, *, minimum: Optional[float] = None, maximum: Optional[float] = None,
                 above: Optional[float] = None) -> float:
    """A finite real number with minimum <= value <= maximum and value > above (bounds optional)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    ok = ok and math.isfinite(v) and (minimum is None or v >= minimum) and (maximum is None or v <= maximum) \
        and (above is None or v > above)
    if not ok:
        bounds = [f">= {minimum}" if minimum is not None else "", f"> {above}" if above is not None else "",
                  f"<= {maximum}" if maximum is not None else ""]
        need = " and ".join(b for b in bounds if b)
        raise InputError(f"{name} must be a finite number{' ' + need if need else ''}; got {value!r}.")
    return v


def check_neighbor_ids(I, n: int, name: str = "neighbors I") -> np.ndarray:
    """(n, k >= 1) int64 neighbour row ids in [0, n), -1 for padding."""
    I = np.asarray(I)
    if I.ndim != 2 or I.shape[0] != n or I.shape[1] < 1 or (I.size and I.dtype.kind not in "iu"):
        raise InputError(f"{name} must be an integer (n, k) = ({n}, k>=1) array of row ids; got shape {I.shape} "
                         f"dtype {I.dtype}.")
    if ((I < -1) | (I >= n)).any():
        raise InputError(f"{name} holds row ids outside [-1, {n}); recompute the kNN on the same rows.")
    return I.astype(np.int64, copy=False)


def neighbor_pair_ids(neighbors, n: int, expected: str) -> np.ndarray:
    """The checked ids I of a (D, I) kNN pair; `expected` says where such a pair comes from."""
    try:
        _, I = neighbors
    except (TypeError, ValueError) as exc:
        raise InputError(f"neighbors must be {expected}; got {type(neighbors).__name__}.") from exc
    return check_neighbor_ids(I, n)
