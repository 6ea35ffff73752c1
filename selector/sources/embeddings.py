"""Precomputed embeddings: an .npz made elsewhere, for teams that embed their data with their own tools.

Only the arrays the loader uses are read, and each one's size (from the zip directory and its .npy header) is
checked against `max_array_bytes()` before a byte of it is inflated: an .npz is a zip archive, and a small one
can hold a member that inflates to gigabytes."""
from __future__ import annotations

import math
import os
import zipfile
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from selector.dataset import Dataset, build_dataset
from selector.errors import InputError, describe_rows
from selector.lazy import LazyArray
from selector.validate import check_matrix

KEYS = ("image_embeddings", "labels", "class_names", "text_embeddings", "paths", "splits")   # the only arrays read
MAX_ARRAY_ENV = "SELECTOR_MAX_NPZ_ARRAY_GB"
DEFAULT_MAX_ARRAY_GB = 16.0      # 16 GB: 8 million 512-d float32 embeddings


def max_array_bytes() -> int:
    """The largest array read from an .npz: $SELECTOR_MAX_NPZ_ARRAY_GB gigabytes (default 16)."""
    text = os.environ.get(MAX_ARRAY_ENV, "").strip()
    try:
        gb = float(text) if text else DEFAULT_MAX_ARRAY_GB
    except ValueError:
        gb = math.nan
    if not (math.isfinite(gb) and gb > 0):
        raise InputError(f"{MAX_ARRAY_ENV} must be a number of gigabytes > 0 (e.g. 64), got {text!r}.")
    return int(gb * 1e9)


def read_npz(path, keys=KEYS, digests: dict | None = None, lazy=()) -> tuple[dict, list[str]]:
    """({key: array} for the `keys` the .npz at path holds, every member name): nothing else is inflated, and
    a member larger than max_array_bytes(), an object (pickled) array or a member whose .npy header does not
    match its size is refused with InputError before it is read. Every member read is checked against the
    CRC-32 in the zip directory; `digests`, when given, receives that checksum and size per key, an identity of
    the array's bytes that costs nothing more to know. Keys in `lazy` come back as a LazyArray of the header's
    shape and dtype, read (and checked against the same CRC-32: InputError if the file changed) on first use."""
    path = Path(path)
    limit, arrays = max_array_bytes(), {}
    digests = {} if digests is None else digests
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename.removesuffix(".npy"): info for info in zf.infolist()}
            for key in (k for k in keys if k in members):
                info = members[key]
                if info.file_size > limit:
                    raise InputError(f"{path.name}: `{key}` is {info.file_size / 1e9:.2f} GB uncompressed, over the "
                                     f"limit of {limit / 1e9:g} GB per array; set {MAX_ARRAY_ENV} higher (in GB) if "
                                     "it is genuine and the machine has the memory.")
                with zf.open(info) as f:
                    shape, dtype = _check_header(f, info.file_size, f"{path.name}: `{key}`")
                digests[key] = f"crc32 {info.CRC:08x} size {info.file_size}"
                if key in lazy:
                    arrays[key] = LazyArray(shape, dtype, partial(_read_member, path, key, digests[key]))
                    continue
                with zf.open(info) as f:                  # read to its end, so zipfile checks its CRC-32
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
                    if f.read(1):
                        raise InputError(f"{path.name}: `{key}` holds bytes past its array: the file is damaged. "
                                         "Write it again with np.savez.")
    except InputError:
        raise
    except ValueError as e:
        raise InputError(f"Cannot read {path.name}: {e}. Save strings as np.array(list_of_str) (unicode), "
                         "not object arrays.") from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError) as e:   # a damaged archive
        raise InputError(f"Cannot read {path.name} as .npz: {e}. Write it with np.savez.") from e
    return arrays, sorted(members)


def _check_header(f, member_size: int, name: str) -> tuple:
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    if dtype.hasobject:
        raise InputError(f"{name} is an object array (a pickle), which is never loaded. Save strings as "
                         "np.array(list_of_str) (unicode), not object arrays.")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > member_size:
        raise InputError(f"{name} declares shape {shape} {dtype} ({nbytes:,} bytes) but holds {member_size:,}: the "
                         "file is damaged. Write it again with np.savez.")
    return shape, dtype


def _lazy_embeddings(raw: LazyArray) -> LazyArray:
    """The image embeddings as float32, checked now for shape and dtype (from the .npy header) and for NaN/inf
    rows when first read: a re-open whose results are cached never reads them (selector.lazy)."""
    if raw.ndim != 2 or not all(raw.shape):
        raise InputError(f"`image_embeddings` must be a non-empty 2-D numeric array (rows, dims); got shape "
                         f"{raw.shape}. Pass one embedding per row.")
    if not np.issubdtype(raw.dtype, np.number) or np.issubdtype(raw.dtype, np.complexfloating):
        raise InputError(f"`image_embeddings` must be a real numeric array; got dtype {raw.dtype}.")
    return LazyArray(raw.shape, np.float32, lambda: check_matrix(raw.load(), "`image_embeddings`", min_rows=1))


def _read_member(path: Path, key: str, digest: str) -> np.ndarray:
    """The member `key` of the .npz at path, which must still be the bytes `digest` names."""
    now = {}
    try:
        arrays, _ = read_npz(path, (key,), now)
    except InputError as exc:
        raise InputError(f"{exc} (read when first used, after the file was opened)") from exc
    if key not in arrays or now.get(key) != digest:
        raise InputError(f"{path.name} changed after it was opened (`{key}` is not the array it was); open it "
                         "again.")
    return arrays[key]


def load_embeddings(path) -> Dataset:
    """.npz with image_embeddings (N,d), labels (N,) ints in [0,C) or class-name strings, class_names (C,),
    optional text_embeddings (C,d), paths (N,), splits (N,) split names (train/test: near-duplicates across
    splits are reported as leaks). Strings must be numpy unicode arrays (no pickles); other arrays in the file
    are never read."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"Embeddings file {path} does not exist.")
    with open(path, "rb") as f:
        if f.read(2) != b"PK":
            raise InputError(f"{path.name} is not an .npz archive; write it with np.savez(path, **arrays).")
    digests = {}
    arrs, found = read_npz(path, digests=digests, lazy=("image_embeddings",))
    need = [k for k in ("image_embeddings", "labels", "class_names") if k not in arrs]
    if need:
        raise InputError(f"{path.name} lacks {need}; found {found}. Needed: image_embeddings (N,d), "
                         "labels (N,), class_names (C,); optional text_embeddings (C,d), paths (N,).")
    X = _lazy_embeddings(arrs["image_embeddings"])
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
        codes = pd.Index(class_names).get_indexer(y.astype(str))
        unknown = sorted({str(v) for v in y[codes < 0]})
        if unknown:
            raise InputError(f"`labels` has values not in class_names: {describe_rows(map(repr, unknown))}. "
                             "Add them to class_names or fix the labels.")
        y = codes.astype(np.int64)
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
    extra = {}
    if "splits" in arrs:
        sp = np.asarray(arrs["splits"])
        if sp.shape != (n,) or sp.dtype.kind not in "US":
            raise InputError(f"`splits` must be ({n},) strings (a split name per row, e.g. train/test), got "
                             f"{sp.shape} {sp.dtype}.")
        extra["split"] = [str(v).strip() for v in sp]
    width = max(5, len(str(n - 1)))
    stem = path.stem
    ids = [f"{stem}/{k:0{width}d}" for k in range(n)]
    return build_dataset(f"embeddings/{path.stem}", ids, paths, np.asarray(class_names, dtype=object)[y],
                         class_names=class_names, extra=extra, embeddings=X, text_embeddings=T,
                         embeddings_digest=digests.get("image_embeddings"))
