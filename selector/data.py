"""Every file read and write: image folders, CSV/Parquet manifests, torchvision sets, precomputed
embeddings, image decoding, and atomic, formula-injection-safe exports.

Loaders return a `Dataset`; row i is the same sample in `table`, `labels`, `pixels` and `embeddings`.
Unreadable inputs are reported (InputError, or a note in `Dataset.problems` for skipped rows), never a crash.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import math
import os
from functools import cached_property
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from selector.errors import InputError, OfflineError, describe_rows

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
DATA_CACHE = os.environ.get("SELECTOR_DATA_DIR", str(Path.home() / ".cache" / "selector" / "data"))
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
NET_TIMEOUT_S = 3.0
_CSV_DANGER = ("=", "+", "-", "@", "\t", "\r")
_LAYOUT = "root/<class name>/<image file>, e.g. root/cat/001.jpg and root/dog/002.png"


@dataclass(eq=False)
class Dataset:
    """A labelled image set. table: id (unique str), path (str, "" in-memory), label (class name)
    [+ caption, split]; labels (n,) int64 into class_names; pixels (n,H,W[,3]) uint8 or None;
    embeddings (n,d) / text_embeddings (C,d) float32 or None; problems: notes on rows skipped at load."""
    name: str
    table: pd.DataFrame
    class_names: tuple[str, ...]
    labels: np.ndarray
    pixels: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    text_embeddings: np.ndarray | None = None
    problems: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.class_names = tuple(str(c) for c in self.class_names)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.labels)
        for what, arr in (("table", self.table), ("pixels", self.pixels), ("embeddings", self.embeddings)):
            if arr is not None and len(arr) != n:
                raise InputError(f"Dataset {self.name!r}: {what} has {len(arr)} rows but labels has {n}; "
                                 "every per-sample array must have one row per sample.")

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        """Sample i as an RGB PIL image; InputError naming the file if it cannot be decoded."""
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} samples")
        if self.pixels is not None:
            return Image.fromarray(np.ascontiguousarray(self.pixels[i])).convert("RGB")
        path = self.table["path"].iloc[i]
        if not path:
            raise InputError(f"Row {i} (id {self.table['id'].iloc[i]!r}) has no image file or pixels "
                             "(embeddings-only dataset); give a `paths` array to see images.")
        try:
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise InputError(f"Cannot decode image {path} (row {i}): {e}. Replace the file with a valid "
                             "image or remove it from the dataset.") from e

    def subset(self, rows: np.ndarray) -> "Dataset":
        """Rows (int indices or (n,) bool mask) as a new Dataset; class_names unchanged."""
        rows = _as_rows(rows, len(self))
        take = lambda a: None if a is None else a[rows]  # noqa: E731
        return replace(self, table=self.table.iloc[rows].reset_index(drop=True), labels=self.labels[rows],
                       pixels=take(self.pixels), embeddings=take(self.embeddings), problems=list(self.problems))

    def with_labels(self, labels: np.ndarray) -> "Dataset":
        """Copy with other given labels ((n,) ints in [0, C)), e.g. after noise injection."""
        labels = np.asarray(labels)
        if labels.shape != (len(self),) or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"labels must be ({len(self)},) integers, got {labels.shape} {labels.dtype}.")
        bad = np.flatnonzero((labels < 0) | (labels >= len(self.class_names)))
        if bad.size:
            raise InputError(f"labels out of range [0, {len(self.class_names)}) at rows {describe_rows(bad)}.")
        table = self.table.copy()
        table["label"] = np.asarray(self.class_names, dtype=object)[labels]
        return replace(self, table=table, labels=labels.astype(np.int64), problems=list(self.problems))

    @cached_property
    def content_fingerprint(self) -> str:
        """sha1 of what the images are (ids, paths, file size+mtime, pixels, embeddings), labels excluded:
        a key for embedding caches that stays valid when only labels change."""
        h = hashlib.sha1(b"selector-content-v1")
        for col in ("id", "path"):
            h.update("\x1f".join(map(str, self.table[col])).encode() + b"\x1e")
        paths = [p for p in self.table["path"] if p]
        if paths:
            h.update(np.array([_stat(p) for p in paths], dtype="<i8").tobytes())
        for arr in (self.pixels, self.embeddings, self.text_embeddings):
            if arr is not None:
                h.update(f"{arr.shape}{arr.dtype.str}".encode())
                h.update(np.ascontiguousarray(arr).data)
        return h.hexdigest()

    @cached_property
    def fingerprint(self) -> str:
        """sha1 over content_fingerprint, labels and class_names; stable across processes. Computed once per
        Dataset (hashing 60k images takes a noticeable fraction of a second); Datasets are not mutated in place."""
        h = hashlib.sha1(self.content_fingerprint.encode())
        h.update("\x1f".join(self.class_names).encode() + b"\x1e")
        h.update(self.labels.astype("<i8").tobytes())
        return h.hexdigest()


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


def _as_rows(rows, n: int) -> np.ndarray:
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


def _class_order(names) -> tuple[str, ...]:
    """Sorted class names; numerically when every name is an integer ("2" before "10")."""
    names = set(names)
    if all(s.isdigit() for s in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


def _build(name, ids, paths, label_names, class_names=None, extra=None, problems=None, **arrays) -> Dataset:
    """Assemble a Dataset from per-row lists; notes classes with fewer than 2 samples."""
    class_names = _class_order(label_names) if class_names is None else tuple(class_names)
    index = {c: k for k, c in enumerate(class_names)}
    labels = np.fromiter((index[c] for c in label_names), dtype=np.int64, count=len(label_names))
    table = pd.DataFrame({"id": ids, "path": paths, "label": label_names, **(extra or {})})
    problems = list(problems or [])
    counts = np.bincount(labels, minlength=len(class_names))
    single = [c for c, k in zip(class_names, counts) if k == 1]
    if single:
        problems.append(f"{len(single)} class(es) have a single sample ({describe_rows(single)}): scoring "
                        "needs at least 2 per class for diversity (a lone sample has no same-class neighbour).")
    for p in problems:
        log.warning("%s: %s", name, p)
    return Dataset(name, table, class_names, labels, problems=problems, **arrays)


# ----------------------------------------------------------------------------- files on disk

def load_image_folder(root, *, extensions=IMAGE_EXTENSIONS) -> Dataset:
    """root/<class>/<image> (sub-folders allowed); classes sorted; hidden and non-image files skipped."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"Image folder {root} does not exist or is not a folder. Expected layout: {_LAYOUT}.")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"{root} has no class sub-folders. Expected layout: {_LAYOUT}.")
    ids, paths, labels, skipped, empty = [], [], [], [], []
    for cdir in classes:
        n0 = len(ids)
        for p in sorted(cdir.rglob("*")):
            rel = p.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or not p.is_file():
                continue
            if p.suffix.lower() not in exts:
                skipped.append(rel.as_posix())
                continue
            ids.append(rel.as_posix()); paths.append(str(p.resolve())); labels.append(cdir.name)
        if len(ids) == n0:
            empty.append(cdir.name)
    if not ids:
        raise InputError(f"No images ({', '.join(sorted(exts))}) found under {root}. Expected layout: {_LAYOUT}.")
    problems = []
    if skipped:
        problems.append(f"Skipped {len(skipped)} non-image file(s): {describe_rows(skipped, 3)}.")
    if empty:
        problems.append(f"Ignored {len(empty)} class folder(s) with no images: {describe_rows(empty)}.")
    return _build(f"folder/{root.name}", ids, paths, labels, problems=problems)


def _cell_str(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v).strip()


def load_manifest(path, *, root=None) -> Dataset:
    """.csv or .parquet with columns path, label [, id, caption, split]; relative paths are resolved
    against `root` or the manifest's folder. Rows whose file is missing are skipped (noted in problems)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"Manifest {path} does not exist.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise InputError(f"Manifest {path.name} must be a .csv or .parquet file, got {suffix or 'no suffix'!r}.")
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any parser failure is a bad input file
        raise InputError(f"Cannot read manifest {path}: {e}. Save it as UTF-8 CSV or Parquet.") from e
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise InputError(f"Manifest {path.name} lacks column(s) {missing}; found {list(df.columns)}. It needs "
                         "columns `path` (image file) and `label` (class name), optionally id, caption, split.")
    if df.empty:
        raise InputError(f"Manifest {path.name} has no rows.")
    cols = {c: [_cell_str(v) for v in df[c]] for c in ("id", "path", "label", "caption", "split") if c in df}
    if suffix == ".csv":  # undo write_table's formula escaping so an exported table loads back unchanged
        cols = {c: [_csv_unescape(v) for v in vals] for c, vals in cols.items()}
    where = "(row 1 = first data row)"
    for c in ("path", "label") + (("id",) if "id" in cols else ()):
        empty = [k + 1 for k, v in enumerate(cols[c]) if not v]
        if empty:
            raise InputError(f"Manifest {path.name}: empty `{c}` in rows {describe_rows(empty)} {where} "
                             f"({len(empty)} in all). Fill them in or delete those rows.")
    ids = cols.get("id", cols["path"])
    seen, dup = {}, []
    for k, v in enumerate(ids):
        if v in seen:
            dup.append(f"{v!r} (rows {seen[v] + 1} and {k + 1})")
        seen.setdefault(v, k)
    if dup:
        what = "ids" if "id" in cols else "paths (used as ids)"
        raise InputError(f"Manifest {path.name}: duplicate {what}: {describe_rows(dup, 3)}. Each row needs a "
                         "unique id: remove the repeated rows or add/fix an `id` column.")
    base = Path(root).expanduser() if root is not None else path.parent
    full = [str(p if p.is_absolute() else (base / p).resolve()) for p in map(Path, cols["path"])]
    ok = np.array([os.path.isfile(p) for p in full], dtype=bool)
    if not ok.any():
        raise InputError(f"None of the {len(full)} image files in {path.name} exist (e.g. {full[0]}); relative "
                         f"paths are resolved against {base}. Pass root= the folder the paths are relative to.")
    problems = []
    if not ok.all():
        gone = [f"{k + 1}:{cols['path'][k]}" for k in np.flatnonzero(~ok)]
        problems.append(f"Skipped {len(gone)} row(s) whose image file does not exist (row:path {where}): "
                        f"{describe_rows(gone, 3)}. Relative paths are resolved against {base}.")
    keep = np.flatnonzero(ok)
    pick = lambda vals: [vals[k] for k in keep]  # noqa: E731
    extra = {c: pick(cols[c]) for c in ("caption", "split") if c in cols}
    return _build(f"manifest/{path.stem}", pick(ids), pick(full), pick(cols["label"]), extra=extra,
                  problems=problems)


# ----------------------------------------------------------------------------- torchvision sets

def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (raw or .gz) into a numpy array of its stored dtype and shape."""
    types = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in types:
            raise ValueError("not an idx file (bad magic number)")
        ndim = raw[3]
        shape = tuple(int(x) for x in np.frombuffer(raw, ">u4", ndim, 4))
        arr = np.frombuffer(raw, types[raw[2]], offset=4 + 4 * ndim)
        if arr.size != math.prod(shape):
            raise ValueError(f"header says {shape} but holds {arr.size} values (truncated?)")
    except (OSError, EOFError, ValueError) as e:
        raise InputError(f"Cannot read idx file {path}: {e}. Replace it with an intact copy.") from e
    return arr.reshape(shape).astype(arr.dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for p in (folder / stem, folder / (stem + ".gz")):
        if p.is_file():
            return p
    return None


def _reachable(url: str, timeout: float = NET_TIMEOUT_S) -> bool:
    """True when a TCP connection to url's host (or its proxy) opens within `timeout` seconds."""
    proxy = urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme)
    u = urllib.parse.urlsplit(proxy or url)
    return host_reachable(u.hostname, u.port or (443 if u.scheme == "https" else 80), timeout=timeout)


def host_reachable(host: str, port: int = 443, *, timeout: float = NET_TIMEOUT_S) -> bool:
    """True when a TCP connection to host:port opens within `timeout` seconds. Runs in a thread because DNS
    lookups ignore socket timeouts: offline, every caller fails fast instead of after minutes of retries."""
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            pass
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result)


def load_fashion_mnist(*, split="train", root=None, download=True) -> Dataset:
    """Fashion-MNIST split ("train" 60000 / "test" 10000); pixels (n,28,28) uint8. Looks in root,
    the Debian dir, DATA_CACHE/FashionMNIST/raw, then downloads there (OfflineError fast when offline)."""
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}.")
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    cache = Path(DATA_CACHE).expanduser()
    dirs = ([Path(root).expanduser(), Path(root).expanduser() / "FashionMNIST" / "raw"] if root else [])
    dirs += [Path(DEBIAN_FASHION_MNIST), cache / "FashionMNIST" / "raw"]
    found = None
    for d in dirs:
        files = [_find_idx(d, s) for s in stems]
        if all(files):
            found = files
            break
    if found is None:
        target = Path(root).expanduser() if root else cache
        how = ("download disabled" if not download else
               f"download failed: {FASHION_MNIST_URL} unreachable (offline?)")
        fix = (f"Fashion-MNIST {split} files ({stems[0]}[.gz], {stems[1]}[.gz]) not found in: "
               f"{', '.join(map(str, dirs))}; {how}. Fix: `apt-get install dataset-fashion-mnist` (puts them "
               f"in {DEBIAN_FASHION_MNIST}), or pass root= a folder holding the 4 idx files, or retry with network.")
        if not download or not _reachable(FASHION_MNIST_URL):
            raise OfflineError(fix)
        try:
            from torchvision.datasets import FashionMNIST
            FashionMNIST(str(target), train=split == "train", download=True)
        except Exception as e:  # noqa: BLE001 - network/disk failures all mean "get the files another way"
            raise OfflineError(f"{fix} ({type(e).__name__}: {e})") from e
        found = [_find_idx(target / "FashionMNIST" / "raw", s) for s in stems]
    pixels, labels = _read_idx(found[0]), _read_idx(found[1]).astype(np.int64)
    if pixels.ndim != 3 or pixels.dtype != np.uint8 or labels.shape != (len(pixels),) or \
            labels.min(initial=0) < 0 or labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise InputError(f"{found[0]} / {found[1]} are not a Fashion-MNIST pair: images {pixels.shape} "
                         f"{pixels.dtype}, labels {labels.shape} in [{labels.min()}, {labels.max()}].")
    log.info("Fashion-MNIST %s: %d images from %s", split, len(labels), found[0].parent)
    return _array_dataset("fashion-mnist", split, pixels, labels, FASHION_MNIST_CLASSES)


def _array_dataset(name, split, pixels, labels, class_names) -> Dataset:
    n = len(labels)
    ids = [f"{name}/{split}/{k:05d}" for k in range(n)]
    names = np.asarray(class_names, dtype=object)[labels]
    return _build(f"{name}/{split}", ids, [""] * n, list(names), class_names=class_names,
                  extra={"split": [split] * n}, pixels=pixels)


def list_torchvision() -> list[str]:
    return ["cifar10", "cifar100", "fashion-mnist"]


def load_torchvision(name: str, *, split="train", root=None, download=True) -> Dataset:
    """A torchvision set by name (see list_torchvision()); pixels (n,H,W[,3]) uint8 in memory.
    Files live in root (default DATA_CACHE); download only when asked, OfflineError fast when offline."""
    key = str(name).lower().replace("_", "-")
    if key in ("fashionmnist", "fashion-mnist"):
        return load_fashion_mnist(split=split, root=root, download=download)
    if key not in ("cifar10", "cifar100"):
        raise InputError(f"Unknown torchvision dataset {name!r}; choose one of {list_torchvision()}.")
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}.")
    folder = Path(root or DATA_CACHE).expanduser()
    sub = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[key]
    fix = (f"{key} not found in {folder}; " + ("download disabled" if not download else
           f"{CIFAR_URL} unreachable (offline?)") + f". Fix: put the extracted "
           f"{sub}/ folder (from {CIFAR_URL}) in {folder}, or retry with network.")
    if not (folder / sub).is_dir() and (not download or not _reachable(CIFAR_URL)):
        raise OfflineError(fix)  # checked before importing torchvision: fails in milliseconds
    try:
        from torchvision import datasets
    except ImportError as e:
        raise InputError("torchvision is not installed: `pip install torchvision`.") from e
    cls = datasets.CIFAR10 if key == "cifar10" else datasets.CIFAR100
    try:
        ds = cls(str(folder), train=split == "train", download=download)
    except Exception as e:  # noqa: BLE001 - corrupt files or a failed download: say how to provide them
        raise OfflineError(f"{key} in {folder} is unreadable or its download failed ({type(e).__name__}: {e}). "
                           f"Fix: put the extracted {sub}/ folder there, or retry with network.") from e
    return _array_dataset(key, split, np.asarray(ds.data, dtype=np.uint8),
                          np.asarray(ds.targets, dtype=np.int64), tuple(ds.classes))


# ----------------------------------------------------------------------------- precomputed embeddings

def _finite_2d(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or 0 in a.shape or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"`{what}` must be a non-empty 2-D float array, got shape {a.shape} dtype {a.dtype}.")
    a = a.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
    if bad.size:
        raise InputError(f"`{what}` has NaN/inf in rows {describe_rows(bad)} ({bad.size} in all); "
                         "recompute or drop those rows.")
    return a


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
    X = _finite_2d(arrs["image_embeddings"], "image_embeddings")
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
        T = _finite_2d(arrs["text_embeddings"], "text_embeddings")
        if T.shape != (len(class_names), d):
            raise InputError(f"`text_embeddings` must be (C, d) = ({len(class_names)}, {d}), got {T.shape}.")
    paths = [""] * n
    if "paths" in arrs:
        p = np.asarray(arrs["paths"])
        if p.shape != (n,) or p.dtype.kind not in "US":
            raise InputError(f"`paths` must be ({n},) strings, got {p.shape} {p.dtype}.")
        paths = [str(s if not s or Path(s).is_absolute() else path.parent / s) for s in map(str, p)]
    width = max(5, len(str(n - 1)))
    ids = [f"{path.stem}/{k:0{width}d}" for k in range(n)]
    return _build(f"embeddings/{path.stem}", ids, paths, [class_names[k] for k in y], class_names=class_names,
                  embeddings=X, text_embeddings=T)


def list_sources() -> list[str]:
    return ["demo", "image-folder", "manifest", "torchvision", "embeddings"]


# ----------------------------------------------------------------------------- writing

def _atomic(path, write) -> Path:
    """Call write(fileobj) on a tmp file next to path, fsync, then os.replace; no tmp left on failure."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_save_npy(path, array) -> None:
    """np.save to exactly `path` (no suffix added), atomically; object arrays are refused."""
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise InputError(f"atomic_save_npy stores plain numeric/string arrays only, got dtype {array.dtype}.")
    _atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def _csv_escape(v):
    return "'" + v if isinstance(v, str) and v.startswith(_CSV_DANGER) else v


def _csv_unescape(v: str) -> str:
    return v[1:] if v.startswith("'") and v[1:].startswith(_CSV_DANGER) else v


def csv_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Copy where text cells (and headers) starting with = + - @ tab or CR get a leading ' so spreadsheets
    show them as text instead of running them as formulas. Numeric columns are untouched."""
    out = table.copy()
    for c in out.columns:
        s = out[c]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
                or pd.api.types.is_datetime64_any_dtype(s)):
            out[c] = s.astype(object).map(_csv_escape)
    out.columns = [_csv_escape(str(c)) for c in out.columns]
    return out


def write_table(table: pd.DataFrame, path) -> Path:
    """Write .csv (formula-injection safe) or .parquet by suffix, atomically. Returns the path."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        # text always quoted: a bare CR inside a cell would otherwise split the row for readers
        data = csv_safe(table).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode("utf-8")
    elif suffix in (".parquet", ".pq"):
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        data = buf.getvalue()
    else:
        raise InputError(f"Table export path must end in .csv or .parquet, got {Path(path).name!r}.")
    return _atomic(path, lambda f: f.write(data))


def _jsonable(x):
    """numpy scalars/arrays, paths, tuples/sets -> plain JSON types; NaN/inf -> None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, np.ndarray)):
        return [_jsonable(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)  # Path, datetime, anything else: its text form


def write_manifest(manifest: dict, path) -> Path:
    """Write a run manifest as indented JSON, atomically. Returns the path."""
    if not isinstance(manifest, dict):
        raise InputError(f"manifest must be a dict, got {type(manifest).__name__}.")
    text = json.dumps(_jsonable(manifest), indent=2, allow_nan=False) + "\n"
    return _atomic(path, lambda f: f.write(text.encode("utf-8")))
