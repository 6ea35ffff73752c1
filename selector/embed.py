"""The on-disk embedding cache: `embed_dataset(dataset, encoder, cache_dir=...)` -> (X, T, ok).

Image embeddings are cached in chunks under ``cache_dir/embeddings/<key>/``: every chunk is written
atomically with its sha256 in the file name, so a killed run resumes from the chunks already on disk and a
corrupted chunk is detected, logged and recomputed - never used. The encoders themselves live in
``selector.encoders``; this module only calls their protocol.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from pathlib import Path

import numpy as np

from selector.encoders.base import check_batch, class_prompts
from selector.errors import InputError, describe_rows
from selector.files import atomic_write_bytes, npy_bytes
from selector.progress import Progress, ensure
from selector.validate import check_int

log = logging.getLogger(__name__)

CACHE_VERSION = 1

# ------------------------------------------------------------------------------------------ caching
_CHUNK_RE = re.compile(r"^chunk_(\d{6})_([0-9a-f]{16})\.npy$")
_TEXT_RE = re.compile(r"^text_([0-9a-f]{16})_([0-9a-f]{16})\.npy$")


def _save_checked(folder: Path, stem: str, arr: np.ndarray) -> Path:
    """Write arr as folder/<stem>_<sha256[:16]>.npy atomically; drop older versions of the same stem."""
    data = npy_bytes(np.ascontiguousarray(arr, dtype=np.float32))
    path = folder / f"{stem}_{hashlib.sha256(data).hexdigest()[:16]}.npy"
    atomic_write_bytes(path, data)
    for old in folder.glob(f"{stem}_*.npy"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def _load_checked(path: Path, shape: tuple) -> np.ndarray | None:
    """The array in path when its checksum and shape (None = any) match; else None (logged, file removed)."""
    import io
    try:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest()[:16] != path.stem.rsplit("_", 1)[1]:
            raise ValueError("checksum mismatch")
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.dtype != np.float32 or arr.ndim != 2 or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            raise ValueError(f"shape/dtype {arr.shape} {arr.dtype}, expected {shape} float32")
        return arr
    except (OSError, ValueError, EOFError) as e:
        log.warning("Embedding cache file %s is corrupt (%s); recomputing it.", path, e)
        path.unlink(missing_ok=True)
        return None


def _read_meta(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def embed_dataset(dataset, encoder, *, cache_dir, batch_size: int = 256, chunk_size: int = 4096,
                  progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and class-prompt embeddings, cached on disk.

    Returns X (n,d) float32, T (C,d) float32 (class_prompts(dataset.class_names)) and ok (n,) bool
    (False = image could not be decoded; its row of X is NaN). The cache lives in
    cache_dir/embeddings/<sha1(dataset content, encoder.cache_key)>/ - labels are not part of the key, so
    relabelling a dataset reuses its embeddings. Killed runs resume; corrupted chunks are recomputed.
    """
    progress = ensure(progress)
    n = len(dataset)
    if n == 0:
        raise InputError(f"Dataset {getattr(dataset, 'name', '')!r} is empty; nothing to embed.")
    batch_size = check_batch(batch_size)
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    if not getattr(encoder, "cacheable", True):   # the embeddings came with the dataset: nothing to cache
        X = encoder.encode_images(dataset, np.arange(n), batch_size=batch_size, progress=progress)
        return _finish(dataset, X, encoder.encode_classes(dataset))

    content = getattr(dataset, "content_fingerprint", None) or dataset.fingerprint
    key = hashlib.sha1(f"{content}\0{encoder.cache_key}".encode()).hexdigest()
    folder = Path(cache_dir).expanduser() / "embeddings" / key
    folder.mkdir(parents=True, exist_ok=True)
    for tmp in folder.glob(".*.tmp"):  # left by a run killed mid-write; a live writer's files are younger
        try:
            if time.time() - tmp.stat().st_mtime > 600:
                tmp.unlink()
        except OSError:
            pass
    meta_path = folder / "meta.json"
    meta = _read_meta(meta_path) or {}
    if meta.get("n") == n and isinstance(meta.get("chunk_size"), int) and meta["chunk_size"] > 0:
        chunk_size = meta["chunk_size"]  # resume with the layout already on disk
    meta.update(version=CACHE_VERSION, n=n, chunk_size=int(chunk_size), encoder=encoder.name,
                cache_key=encoder.cache_key, dataset=getattr(dataset, "name", ""), content_fingerprint=content)
    atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    d = meta.get("d")

    # text embeddings: tiny, cached so a fully cached dataset never needs the text tower
    prompts = class_prompts(dataset.class_names)
    phash = hashlib.sha1("\x1f".join(prompts).encode()).hexdigest()[:16]
    T = None
    for p in folder.glob(f"text_{phash}_*.npy"):
        T = _load_checked(p, (len(prompts), d))
    if T is None:
        progress("embedding class prompts", 0, 1)
        T = np.asarray(encoder.encode_classes(dataset), dtype=np.float32)
        _save_checked(folder, f"text_{phash}", T)
        progress("embedding class prompts", 1, 1)
    if d is None:
        d = int(T.shape[1])

    n_chunks = math.ceil(n / chunk_size)
    bounds = [(c * chunk_size, min(n, (c + 1) * chunk_size)) for c in range(n_chunks)]
    found = {}
    for p in folder.glob("chunk_*.npy"):
        m = _CHUNK_RE.match(p.name)
        if m and int(m.group(1)) < n_chunks:
            found.setdefault(int(m.group(1)), []).append(p)
    X = np.empty((n, d), dtype=np.float32)
    missing = []
    for c, (a, b) in enumerate(bounds):
        arr = None
        for p in found.get(c, []):
            arr = arr if arr is not None else _load_checked(p, (b - a, d))
        if arr is None:
            missing.append(c)
        else:
            X[a:b] = arr
    done = n - sum(b - a for c, (a, b) in enumerate(bounds) if c in missing)
    if missing:
        log.info("Embedding %d of %d images with %s (%d chunks cached)", n - done, n, encoder.name,
                 n_chunks - len(missing))
    progress("embedding images", done, n)
    for c in missing:
        a, b = bounds[c]
        base = done
        arr = encoder.encode_images(dataset, np.arange(a, b), batch_size=batch_size,
                                    progress=lambda _s, k, _t: progress("embedding images", base + k, n))
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape != (b - a, d):
            raise InputError(f"Encoder {encoder.name!r} returned {arr.shape} for {b - a} images, expected "
                             f"({b - a}, {d}) to match its text embeddings.")
        _save_checked(folder, f"chunk_{c:06d}", arr)
        X[a:b] = arr
        done += b - a
        progress("embedding images", done, n)
    if meta.get("d") != d:
        meta["d"] = d
        atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    return _finish(dataset, X, T)


def _finish(dataset, X, T):
    X = np.asarray(X, dtype=np.float32)
    T = np.asarray(T, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != len(dataset) or T.ndim != 2 or T.shape[1] != X.shape[1]:
        raise InputError(f"image embeddings {X.shape} and text embeddings {T.shape} do not fit "
                         f"{len(dataset)} samples with a common dimension d.")
    ok = np.isfinite(X).all(axis=1)
    if not ok.all():
        log.warning("%s: %d image(s) have no embedding (undecodable): rows %s", getattr(dataset, "name", ""),
                    int((~ok).sum()), describe_rows(np.flatnonzero(~ok)))
    return X, T, ok
