"""The on-disk embedding cache: `embed_dataset(dataset, encoder, cache_dir=...)` -> (X, T, ok).

Image embeddings are cached in chunks under ``cache_dir/embeddings/<key>/``: every chunk is written
atomically with its sha256 in the file name, so a killed run resumes from the chunks already on disk and a
corrupted chunk is detected, logged and recomputed - never used. `EmbeddingCache` is the one definition of
that layout; `embed_dataset` fills it on this machine and `selector.distributed.embed_on_ray` on a Ray
cluster. The encoders themselves live in ``selector.encoders``; this module only calls their protocol.
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
from selector.validate import check_int, finite_rows

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


class EmbeddingCache:
    """The cached embeddings of one dataset's images under one encoder: the folder
    cache_dir/embeddings/<sha1(dataset content, cache_key)>/ with meta.json, text_<prompts sha1>_<sha>.npy (the
    class-prompt embeddings) and chunk_<c:06d>_<sha>.npy (rows bounds[c] of the image embeddings).

    Opening it creates the folder, removes temporary files left by killed writers and records the layout in
    meta.json; a layout already on disk for the same number of rows keeps its chunk size, so a resumed run
    writes the chunks the killed one would have written. Labels are not part of the key.
    """

    def __init__(self, cache_dir, dataset, *, encoder_name: str, cache_key: str, chunk_size: int = 4096):
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
        self.encoder_name = encoder_name
        self.n = n = len(dataset)
        self.prompts = class_prompts(dataset.class_names)
        content = getattr(dataset, "content_fingerprint", None) or dataset.fingerprint
        key = hashlib.sha1(f"{content}\0{cache_key}".encode()).hexdigest()
        self.folder = Path(cache_dir).expanduser() / "embeddings" / key
        self.folder.mkdir(parents=True, exist_ok=True)
        for tmp in self.folder.glob(".*.tmp"):  # left by a run killed mid-write; a live writer's are younger
            try:
                if time.time() - tmp.stat().st_mtime > 600:
                    tmp.unlink()
            except OSError:
                pass
        self.meta_path = self.folder / "meta.json"
        meta = _read_meta(self.meta_path) or {}
        if meta.get("n") == n and isinstance(meta.get("chunk_size"), int) and meta["chunk_size"] > 0:
            chunk_size = meta["chunk_size"]  # resume with the layout already on disk
        meta.update(version=CACHE_VERSION, n=n, chunk_size=int(chunk_size), encoder=encoder_name,
                    cache_key=cache_key, dataset=getattr(dataset, "name", ""), content_fingerprint=content)
        atomic_write_bytes(self.meta_path, json.dumps(meta, indent=1).encode())
        self.meta, self.chunk_size = meta, int(chunk_size)
        self.bounds = [(c * self.chunk_size, min(n, (c + 1) * self.chunk_size))
                       for c in range(math.ceil(n / self.chunk_size))]

    @property
    def d(self) -> int | None:
        """The embedding width recorded in meta.json (None until the first complete run)."""
        return self.meta.get("d")

    def set_d(self, d: int) -> None:
        """Record the embedding width in meta.json."""
        if self.meta.get("d") != d:
            self.meta["d"] = int(d)
            atomic_write_bytes(self.meta_path, json.dumps(self.meta, indent=1).encode())

    def _text_stem(self) -> str:
        return f"text_{hashlib.sha1(chr(0x1f).join(self.prompts).encode()).hexdigest()[:16]}"

    def load_text(self) -> np.ndarray | None:
        """The cached (C, d) class-prompt embeddings, or None."""
        T = None
        for p in self.folder.glob(f"{self._text_stem()}_*.npy"):
            T = _load_checked(p, (len(self.prompts), self.d))
        return T

    def save_text(self, T) -> np.ndarray:
        """Cache the (C, d) class-prompt embeddings; returns them as float32."""
        T = np.asarray(T, dtype=np.float32)
        if T.ndim != 2 or T.shape[0] != len(self.prompts):
            raise InputError(f"{self.encoder_name} returned text embeddings of shape {T.shape} for "
                             f"{len(self.prompts)} class prompts, expected ({len(self.prompts)}, d).")
        _save_checked(self.folder, self._text_stem(), T)
        return T

    def load_chunks(self, d: int, into: np.ndarray | None = None) -> list[int]:
        """Which chunks are not on disk in width d (a corrupt one is logged and removed): their indices, in
        order. The chunks found are copied into `into` ((n, d)) when it is given."""
        found = {}
        for p in self.folder.glob("chunk_*.npy"):
            m = _CHUNK_RE.match(p.name)
            if m and int(m.group(1)) < len(self.bounds):
                found.setdefault(int(m.group(1)), []).append(p)
        missing = []
        for c, (a, b) in enumerate(self.bounds):
            arr = None
            for p in found.get(c, []):
                arr = arr if arr is not None else _load_checked(p, (b - a, d))
            if arr is None:
                missing.append(c)
            elif into is not None:
                into[a:b] = arr
        return missing

    def rows_in(self, chunks) -> int:
        """How many rows the given chunks hold."""
        return sum(self.bounds[c][1] - self.bounds[c][0] for c in chunks)

    def save_chunk(self, c: int, arr, d: int) -> np.ndarray:
        """Cache chunk c ((rows in it, d) float32, checked); returns it as float32."""
        a, b = self.bounds[c]
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape != (b - a, d):
            raise InputError(f"Encoder {self.encoder_name!r} returned {arr.shape} for {b - a} images, expected "
                             f"({b - a}, {d}) to match its text embeddings.")
        _save_checked(self.folder, f"chunk_{c:06d}", arr)
        return arr


def check_embed_request(dataset, batch_size, chunk_size) -> tuple[int, int, int]:
    """(rows, batch_size, chunk_size) of a request to embed dataset; InputError for an empty dataset or a bad size."""
    n = len(dataset)
    if n == 0:
        raise InputError(f"Dataset {getattr(dataset, 'name', '')!r} is empty; nothing to embed.")
    return n, check_batch(batch_size), check_int(chunk_size, "chunk_size", minimum=1)


def embed_dataset(dataset, encoder, *, cache_dir, batch_size: int = 256, chunk_size: int = 4096,
                  progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and class-prompt embeddings, cached on disk.

    Returns X (n,d) float32, T (C,d) float32 (class_prompts(dataset.class_names); None for precomputed
    image-only embeddings) and ok (n,) bool
    (False = image could not be decoded; its row of X is NaN). The cache lives in
    cache_dir/embeddings/<sha1(dataset content, encoder.cache_key)>/ - labels are not part of the key, so
    relabelling a dataset reuses its embeddings. Killed runs resume; corrupted chunks are recomputed.
    """
    progress = ensure(progress)
    n, batch_size, chunk_size = check_embed_request(dataset, batch_size, chunk_size)
    if not getattr(encoder, "cacheable", True):   # the embeddings came with the dataset: nothing to cache
        X = encoder.encode_images(dataset, np.arange(n), batch_size=batch_size, progress=progress)
        return _finish(dataset, X, encoder.encode_classes(dataset))

    cache = EmbeddingCache(cache_dir, dataset, encoder_name=encoder.name, cache_key=encoder.cache_key,
                           chunk_size=chunk_size)
    T = cache.load_text()  # tiny, cached so a fully cached dataset never needs the text tower
    if T is None:
        progress("embedding class prompts", 0, 1)
        T = cache.save_text(encoder.encode_classes(dataset))
        progress("embedding class prompts", 1, 1)
    d = cache.d or int(T.shape[1])

    X = np.empty((n, d), dtype=np.float32)
    missing = cache.load_chunks(d, into=X)
    done = n - cache.rows_in(missing)
    if missing:
        log.info("Embedding %d of %d images with %s (%d chunks cached)", n - done, n, encoder.name,
                 len(cache.bounds) - len(missing))
    progress("embedding images", done, n)
    for c in missing:
        a, b = cache.bounds[c]
        base = done
        arr = encoder.encode_images(dataset, np.arange(a, b), batch_size=batch_size,
                                    progress=lambda _s, k, _t: progress("embedding images", base + k, n))
        X[a:b] = cache.save_chunk(c, arr, d)
        done += b - a
        progress("embedding images", done, n)
    cache.set_d(d)
    return _finish(dataset, X, T)


def _finish(dataset, X, T):
    X = np.asarray(X, dtype=np.float32)
    T = None if T is None else np.asarray(T, dtype=np.float32)      # None: the encoder has no text tower
    if X.ndim != 2 or X.shape[0] != len(dataset) or (T is not None and (T.ndim != 2 or T.shape[1] != X.shape[1])):
        raise InputError(f"image embeddings {X.shape} and text embeddings {None if T is None else T.shape} do not fit "
                         f"{len(dataset)} samples with a common dimension d.")
    ok = finite_rows(X)
    if not ok.all():
        log.warning("%s: %d image(s) have no embedding (undecodable): rows %s", getattr(dataset, "name", ""),
                    int((~ok).sum()), describe_rows(np.flatnonzero(~ok)))
    return X, T, ok
