"""The on-disk embedding cache: `embed_dataset(dataset, encoder, cache_dir=...)` -> (X, T, ok).

Image embeddings are cached in chunks under ``cache_dir/embeddings/<key>/``: every chunk is written
atomically with its sha256 in the file name, so a killed run resumes from the chunks already on disk and a
corrupted chunk is detected, logged and recomputed - never used. The folder's meta.json is sealed with a
checksum and rebuilt (with a warning) when it fails its checks; a cache folder that cannot be written leaves
the run uncached, with a warning, never failed. `EmbeddingCache` is the one definition of
that layout; `embed_dataset` fills it on this machine and `selector.distributed.embed_on_ray` on a Ray
cluster. The encoders themselves live in ``selector.encoders``; this module only calls their protocol.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time
from pathlib import Path

import numpy as np

from selector.encoders.base import check_batch, class_prompts
from selector.errors import InputError, describe_rows
from selector.files import (CacheCorrupt, atomic_write_bytes, cache_problem, clear_way, entry_folder, file_digests,
                            npy_bytes, read_sealed_json, remove_entry, sealed_json, unwritable)
from selector.progress import Progress, ensure
from selector.validate import check_int, finite_rows

log = logging.getLogger(__name__)

CACHE_VERSION = 1

# ------------------------------------------------------------------------------------------ caching
# chunk_<c>_<sha256 of the file's bytes>[_<digest of the chunk's image file contents>].npy
_CHUNK_RE = re.compile(r"^chunk_(\d{6})_([0-9a-f]{16})(?:_([0-9a-f]{16}))?\.npy$")
_TEXT_RE = re.compile(r"^text_[0-9a-f]{16}_([0-9a-f]{16})\.npy$")


def _save_checked(folder: Path, stem: str, arr: np.ndarray, tag: str | None = None) -> Path:
    """Write arr as folder/<stem>_<sha256[:16]>[_<tag>].npy atomically; drop older versions of the same stem."""
    data = npy_bytes(np.ascontiguousarray(arr, dtype=np.float32))
    name = f"{stem}_{hashlib.sha256(data).hexdigest()[:16]}" + (f"_{tag}" if tag else "")
    path = clear_way(folder / f"{name}.npy")
    atomic_write_bytes(path, data)
    for old in folder.glob(f"{stem}_*.npy"):
        if old != path:
            remove_entry(old)
    return path


def _load_checked(path: Path, checksum: str, shape: tuple) -> np.ndarray | None:
    """The array in path when its checksum and shape (None = any) match; else None (logged; a file that is
    damaged or of another layout is removed, one that cannot be read is left alone)."""
    import io
    if not path.is_file():          # a folder, a symlink loop or a pipe in the way: replaced when written
        log.warning("Embedding cache entry %s is not a file; recomputing it.", path)
        remove_entry(path)
        return None
    try:
        data = path.read_bytes()
    except OSError as e:            # e.g. no read permission: left alone, recomputed
        log.warning("Embedding cache file %s cannot be read (%s); recomputing it.", path, e.strerror or e)
        return None
    try:
        if hashlib.sha256(data).hexdigest()[:16] != checksum:
            raise ValueError("checksum mismatch")
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.dtype != np.float32 or arr.ndim != 2 or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            raise ValueError(f"shape/dtype {arr.shape} {arr.dtype}, expected {shape} float32")
        return arr
    except (ValueError, EOFError) as e:
        log.warning("Embedding cache file %s is corrupt (%s); recomputing it.", path, e)
        remove_entry(path)
        return None


_META_TYPES = {"version": int, "n": int, "chunk_size": int, "encoder": str, "cache_key": str, "dataset": str,
               "content_fingerprint": str}


def _meta_problem(meta: dict, n: int, cache_key: str, content: str) -> str | None:
    """Why a meta.json read back cannot be trusted, or None."""
    for key, kind in _META_TYPES.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            return f"its {key!r} is {meta.get(key)!r}"
    if meta["version"] != CACHE_VERSION or meta["cache_key"] != cache_key or meta["content_fingerprint"] != content:
        return "it describes another version, encoder or dataset"
    if meta["chunk_size"] < 1 or ("d" in meta and not (isinstance(meta["d"], int) and meta["d"] > 0)):
        return f"its chunk_size {meta['chunk_size']!r} or d {meta.get('d')!r} is not a positive integer"
    return None


class EmbeddingCache:
    """The cached embeddings of one dataset's images under one encoder: the folder
    cache_dir/embeddings/<sha1(dataset content, cache_key)>/ with meta.json, text_<prompts sha1>_<sha>.npy (the
    class-prompt embeddings) and chunk_<c:06d>_<sha>[_<files>].npy (rows bounds[c] of the image embeddings;
    <files> digests the contents of the chunk's image files when they were embedded).

    Opening it creates the folder, removes temporary files left by killed writers and records the layout in
    meta.json (sealed with a checksum); a layout already on disk for the same number of rows keeps its chunk
    size, so a resumed run writes the chunks the killed one would have written. A meta.json that fails its
    checks is rebuilt with a warning (every chunk carries its own checksum). A folder that cannot be written
    (read-only, full) is read where it can be and not written: the run goes on, warned once. Labels are not
    part of the key.
    """

    def __init__(self, cache_dir, dataset, *, encoder_name: str, cache_key: str, chunk_size: int = 4096):
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
        self.encoder_name, self.dataset, self.writable = encoder_name, dataset, True
        self.n = n = len(dataset)
        self.prompts = class_prompts(dataset.class_names)
        content = getattr(dataset, "content_fingerprint", None) or dataset.fingerprint
        key = hashlib.sha1(f"{content}\0{cache_key}".encode()).hexdigest()
        self.folder = Path(cache_dir).expanduser() / "embeddings" / key
        self.meta_path = self.folder / "meta.json"
        try:
            entry_folder(self.folder)
        except OSError as exc:
            self._cannot_write(exc)
        for tmp in self.folder.glob(".*.tmp"):  # left by a run killed mid-write; a live writer's are younger
            try:
                if time.time() - tmp.stat().st_mtime > 600:
                    tmp.unlink()
            except OSError:
                pass
        meta = self._read_meta(n, cache_key, content)
        if meta.get("n") == n:
            chunk_size = meta["chunk_size"]  # resume with the layout already on disk
        self.meta = dict(meta, version=CACHE_VERSION, n=n, chunk_size=int(chunk_size), encoder=encoder_name,
                         cache_key=cache_key, dataset=getattr(dataset, "name", ""), content_fingerprint=content)
        if self.meta != meta:
            self._write_meta()
        self.chunk_size = int(chunk_size)
        self.bounds = [(c * self.chunk_size, min(n, (c + 1) * self.chunk_size))
                       for c in range(math.ceil(n / self.chunk_size))]

    def _read_meta(self, n, cache_key, content) -> dict:
        if not os.path.lexists(self.meta_path):
            return {}
        try:
            meta = read_sealed_json(self.meta_path)
            problem = _meta_problem(meta, n, cache_key, content)
        except CacheCorrupt as exc:
            problem = str(exc)
        if problem:
            log.warning("Embedding cache %s: meta.json cannot be trusted (%s); rebuilding it (the chunks that "
                        "pass their checksums are kept).", self.folder, problem)
            return {}
        return meta

    def _write_meta(self) -> None:
        if self.writable:
            try:
                atomic_write_bytes(clear_way(self.meta_path), sealed_json(self.meta))
            except OSError as exc:
                self._cannot_write(exc)

    def _cannot_write(self, exc: OSError) -> None:
        if self.writable:
            self.writable = False
            cache_problem(unwritable("embedding cache", self.folder, exc))

    def _save(self, stem: str, arr, tag: str | None = None) -> None:
        if self.writable:
            try:
                _save_checked(self.folder, stem, arr, tag)
            except OSError as exc:
                self._cannot_write(exc)

    @property
    def d(self) -> int | None:
        """The embedding width recorded in meta.json (None until the first complete run)."""
        return self.meta.get("d")

    def set_d(self, d: int) -> None:
        """Record the embedding width in meta.json."""
        if self.meta.get("d") != d:
            self.meta["d"] = int(d)
            self._write_meta()

    def _text_stem(self) -> str:
        return f"text_{hashlib.sha1(chr(0x1f).join(self.prompts).encode()).hexdigest()[:16]}"

    def load_text(self) -> np.ndarray | None:
        """The cached (C, d) class-prompt embeddings, or None."""
        T = None
        for p in self.folder.glob(f"{self._text_stem()}_*.npy"):
            m = _TEXT_RE.match(p.name)
            if m and T is None:
                T = _load_checked(p, m.group(1), (len(self.prompts), None))
        return T

    def save_text(self, T) -> np.ndarray:
        """Cache the (C, d) class-prompt embeddings; returns them as float32."""
        T = np.asarray(T, dtype=np.float32)
        if T.ndim != 2 or T.shape[0] != len(self.prompts):
            raise InputError(f"{self.encoder_name} returned text embeddings of shape {T.shape} for "
                             f"{len(self.prompts)} class prompts, expected ({len(self.prompts)}, d).")
        self._save(self._text_stem(), T)
        return T

    def files_digest(self, c: int) -> str | None:
        """A digest of the contents of chunk c's image files (None when the dataset has no files)."""
        a, b = self.bounds[c]
        paths = self.dataset.table["path"].iloc[a:b].astype(str).tolist()
        if not any(paths):
            return None
        known = self.dataset.__dict__.get("file_digests")     # computed already for a verifying run key
        digests = known[a:b] if known is not None else file_digests(paths)
        return hashlib.sha1(digests.tobytes()).hexdigest()[:16]

    def load_chunks(self, d: int, into: np.ndarray | None = None, *, verify_content: bool = False) -> list[int]:
        """Which chunks are not on disk in width d (a corrupt one is logged and removed): their indices, in
        order. The chunks found are copied into `into` ((n, d)) when it is given. verify_content: a chunk whose
        image files' contents changed since it was embedded (or that did not record them) counts as missing."""
        found = {}
        for p in self.folder.glob("chunk_*.npy"):
            m = _CHUNK_RE.match(p.name)
            if m and int(m.group(1)) < len(self.bounds):
                found.setdefault(int(m.group(1)), []).append((p, m.group(2), m.group(3)))
        missing = []
        for c, (a, b) in enumerate(self.bounds):
            arr, want = None, self.files_digest(c) if verify_content and c in found else None
            for p, checksum, files in found.get(c, []):
                if arr is None and want is not None and files != want:
                    log.info("Embedding cache chunk %d: its image files changed since it was embedded; "
                             "embedding it again.", c)
                elif arr is None:
                    arr = _load_checked(p, checksum, (b - a, d))
            if arr is None:
                missing.append(c)
            elif into is not None:
                into[a:b] = arr
        return missing

    def rows_in(self, chunks) -> int:
        """How many rows the given chunks hold."""
        return sum(self.bounds[c][1] - self.bounds[c][0] for c in chunks)

    def save_chunk(self, c: int, arr, d: int) -> np.ndarray:
        """Cache chunk c ((rows in it, d) float32, checked) with the digest of its image files; returns it as
        float32."""
        a, b = self.bounds[c]
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape != (b - a, d):
            raise InputError(f"Encoder {self.encoder_name!r} returned {arr.shape} for {b - a} images, expected "
                             f"({b - a}, {d}) to match its text embeddings.")
        if self.writable:
            self._save(f"chunk_{c:06d}", arr, self.files_digest(c))
        return arr


def check_embed_request(dataset, batch_size, chunk_size) -> tuple[int, int, int]:
    """(rows, batch_size, chunk_size) of a request to embed dataset; InputError for an empty dataset or a bad size."""
    n = len(dataset)
    if n == 0:
        raise InputError(f"Dataset {getattr(dataset, 'name', '')!r} is empty; nothing to embed.")
    return n, check_batch(batch_size), check_int(chunk_size, "chunk_size", minimum=1)


def embed_dataset(dataset, encoder, *, cache_dir, batch_size: int = 256, chunk_size: int = 4096,
                  progress: Progress | None = None, verify_content: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and class-prompt embeddings, cached on disk.

    Returns X (n,d) float32, T (C,d) float32 (class_prompts(dataset.class_names); None for an image-only
    encoder: precomputed embeddings without text embeddings, the offline encoder) and ok (n,) bool
    (False = image could not be decoded; its row of X is NaN). The cache lives in
    cache_dir/embeddings/<sha1(dataset content, encoder.cache_key)>/ - labels are not part of the key, so
    relabelling a dataset reuses its embeddings. Killed runs resume; corrupted chunks are recomputed.
    The key sees each image file's size and modification time; verify_content also re-reads every file and
    embeds again the chunks whose contents changed (a same-size file swapped in with its mtime restored).
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
        text_tower = getattr(encoder, "text_tower", True)
        if text_tower:
            progress("embedding class prompts", 0, 1)
        T = encoder.encode_classes(dataset)     # None: an image-only encoder (no text tower)
        T = None if T is None else cache.save_text(T)
        if text_tower:
            progress("embedding class prompts", 1, 1)
    # every chunk must have the prompts' width; an image-only encoder's width is recorded by its first chunk
    d = int(T.shape[1]) if T is not None else cache.d
    X = None if d is None else np.empty((n, d), dtype=np.float32)
    missing = list(range(len(cache.bounds))) if d is None else cache.load_chunks(d, into=X,
                                                                                 verify_content=verify_content)
    done = n - cache.rows_in(missing)
    if missing:
        log.info("Embedding %d of %d images with %s (%d chunks cached)", n - done, n, encoder.name,
                 len(cache.bounds) - len(missing))
    progress("embedding images", done, n)
    for c in missing:
        a, b = cache.bounds[c]
        base = done
        arr = encoder.encode_images(dataset, np.arange(a, b), batch_size=batch_size,
                                    progress=lambda s, k, t: progress("embedding images", base + k, n)
                                    if s == "embedding images" else progress(s, k, t))   # e.g. learning
        if X is None:
            d = int(np.shape(arr)[1]) if np.ndim(arr) == 2 else 0
            if d < 1:
                raise InputError(f"Encoder {encoder.name!r} returned {np.shape(arr)} for {b - a} images, "
                                 f"expected ({b - a}, d).")
            X = np.empty((n, d), dtype=np.float32)
            cache.set_d(d)                   # so that a killed run resumes from the chunks written
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
