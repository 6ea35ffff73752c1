"""Precomputed embeddings: an .npz made elsewhere, for teams that embed their data with their own tools."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from selector.dataset import Dataset, build_dataset
from selector.errors import InputError, describe_rows
from selector.validate import check_matrix


def load_embeddings(path) -> Dataset:
    """.npz with image_embeddings (N,d), labels (N,) ints in [0,C) or class-name strings, class_names (C,),
    optional text_embeddings (C,d), paths (N,). Strings must be numpy unicode arrays (no pickles)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"Embeddings file {path} does not exist.")
    with open(path, "rb") as f:
        if f.read(2) != b"PK":
            raise InputError(f"{path.name} is not an .npz archive; write it with np.savez(path, **arrays).")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrs = {k: z[k] for k in z.files}
    except ValueError as e:
        raise InputError(f"Cannot read {path.name}: {e}. Save strings as np.array(list_of_str) (unicode), "
                         "not object arrays.") from e
    except Exception as e:  # noqa: BLE001 - corrupt archive
        raise InputError(f"Cannot read {path.name} as .npz: {e}. Write it with np.savez.") from e
    need = [k for k in ("image_embeddings", "labels", "class_names") if k not in arrs]
    if need:
        raise InputError(f"{path.name} lacks {need}; found {sorted(arrs)}. Needed: image_embeddings (N,d), "
                         "labels (N,), class_names (C,); optional text_embeddings (C,d), paths (N,).")
    X = check_matrix(arrs["image_embeddings"], "`image_embeddings`", min_rows=1)
    n, d = X.shape
    names = np.asarray(arrs["class_names"])
    if names.ndim != 1 or not names.size or names.dtype.kind not in "US":
        raise InputError(f"`class_names` must be a 1-D array of strings, got {names.shape} {names.dtype}.")
    class_names = tuple(str(c) for c in names)
    dup = sorted({c for c in class_names if class_names.count(c) > 1})
    if dup or "" in class_names:
        raise InputError(f"`class_names` must be unique and non-empty; repeated/empty: {describe_rows(dup or [''])}.")
    y = np.asarray(arrs["labels"])
    if y.shape != (n,):
        raise InputError(f"`labels` must have shape ({n},) to match image_embeddings, got {y.shape}.")
    if y.dtype.kind in "US":
        index = {c: k for k, c in enumerate(class_names)}
        unknown = sorted({str(v) for v in y if str(v) not in index})
        if unknown:
            raise InputError(f"`labels` has values not in class_names: {describe_rows(map(repr, unknown))}. "
                             "Add them to class_names or fix the labels.")
        y = np.array([index[str(v)] for v in y], dtype=np.int64)
    elif y.dtype.kind in "iuf" and (y.dtype.kind != "f" or np.all(np.isfinite(y) & (y == np.round(y)))):
        y = y.astype(np.int64)
        bad = np.flatnonzero((y < 0) | (y >= len(class_names)))
        if bad.size:
            raise InputError(f"`labels` out of range [0, {len(class_names)}) at rows {describe_rows(bad)}.")
    else:
        raise InputError(f"`labels` must be integers or class-name strings, got dtype {y.dtype}.")
    T = None
    if "text_embeddings" in arrs:
        T = check_matrix(arrs["text_embeddings"], "`text_embeddings`", min_rows=1)
        if T.shape != (len(class_names), d):
            raise InputError(f"`text_embeddings` must be (C, d) = ({len(class_names)}, {d}), got {T.shape}.")
    paths = [""] * n
    if "paths" in arrs:
        p = np.asarray(arrs["paths"])
        if p.shape != (n,) or p.dtype.kind not in "US":
            raise InputError(f"`paths` must be ({n},) strings, got {p.shape} {p.dtype}.")
        paths = [str(s if not s or Path(s).is_absolute() else path.parent / s) for s in map(str, p)]
    width = max(5, len(str(n - 1)))
    stem = path.stem
    ids = [f"{stem}/{k:0{width}d}" for k in range(n)]
    return build_dataset(f"embeddings/{path.stem}", ids, paths, [class_names[k] for k in y], class_names=class_names,
                         embeddings=X, text_embeddings=T)
