"""The labelled image set every stage reads: `Dataset`. Row i is the same sample in `table`, `labels`,
`pixels` and `embeddings`. The loaders in `selector.sources` build one with `build_dataset`."""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd
from PIL import Image

from selector.errors import InputError, describe_rows
from selector.images import DECODER_VERSION, array_rgb, open_rgb
from selector.lazy import LazyArray
from selector.validate import check_indices

log = logging.getLogger(__name__)
ORIGIN = "origin"
"""An optional table column: where an in-memory sample's pixels were read from (`<file>#<record>`)."""


@dataclass(eq=False)
class Dataset:
    """A labelled image set. table: id (unique str), path (str, "" in-memory), label (class name)
    [+ caption, split, origin (ORIGIN)]; labels (n,) int64 into class_names; pixels (n,H,W[,3]) uint8 or None;
    embeddings (n,d) / text_embeddings (C,d) float32 or None; problems: notes on rows skipped at load;
    embeddings_digest / pixels_digest: a checksum of the embeddings' / pixels' bytes (or of the file they are
    read from) that their loader computed (then the fingerprint uses it instead of hashing, or reading, the
    arrays), None to hash them. Either array may be a LazyArray, read on first use (selector.lazy)."""
    name: str
    table: pd.DataFrame
    class_names: tuple[str, ...]
    labels: np.ndarray
    pixels: np.ndarray | LazyArray | None = None
    embeddings: np.ndarray | LazyArray | None = None     # a LazyArray is read on first use (selector.lazy)
    text_embeddings: np.ndarray | None = None
    problems: list[str] = field(default_factory=list)
    embeddings_digest: str | None = None
    pixels_digest: str | None = None

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
        """Sample i as an 8-bit RGB PIL image (`selector.images`: 16-bit and float samples scaled, transparency
        over white, oversized images refused); InputError naming the file and why if it cannot be used."""
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} samples")
        if self.pixels is not None:
            return array_rgb(self.pixels[i], name=f"row {i} of {self.name}")
        path = self.table["path"].iloc[i]
        if not path:
            raise InputError(f"Row {i} (id {self.table['id'].iloc[i]!r}) has no image file or pixels "
                             "(embeddings-only dataset); give a `paths` array to see images.")
        return open_rgb(path, where=f"row {i}")

    def subset(self, rows: np.ndarray) -> "Dataset":
        """Rows (int indices or (n,) bool mask) as a new Dataset; class_names unchanged."""
        rows = check_indices(rows, len(self))
        if len(rows) == len(self) and np.array_equal(rows, np.arange(len(self))):   # every row: share, no copy
            return replace(self, problems=list(self.problems))
        take = lambda a: None if a is None else a.take(rows) if isinstance(a, LazyArray) else a[rows]  # noqa: E731
        return replace(self, table=self.table.iloc[rows].reset_index(drop=True), labels=self.labels[rows],
                       pixels=take(self.pixels), embeddings=take(self.embeddings), problems=list(self.problems),
                       embeddings_digest=None, pixels_digest=None)

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

    @property
    def has_images(self) -> bool:
        """Whether samples can be shown as images (pixels in memory or files on disk)."""
        return self.pixels is not None or bool((self.table["path"].astype(str) != "").any())

    def locations(self) -> np.ndarray:
        """(n,) str: where each sample can be found: its image file, else where its in-memory pixels were read
        from (the ORIGIN column, `<file>#<record>`), else "" (embeddings-only data)."""
        paths = self.table["path"].astype(str).to_numpy()
        if ORIGIN not in self.table:
            return paths
        return np.where(paths != "", paths, self.table[ORIGIN].astype(str).to_numpy())

    @cached_property
    def content_fingerprint(self) -> str:
        """sha1 of what the images are (ids, paths, file size+mtime, pixels, embeddings), labels excluded:
        a key for embedding caches that stays valid when only labels change."""
        h = hashlib.sha1(b"selector-content-v1")
        for col in ("id", "path"):
            h.update("\x1f".join(self.table[col].astype(str).tolist()).encode() + b"\x1e")
        path = self.table["path"]
        if (path != "").any():   # files: what they hold, and how they are decoded into pixels
            h.update(np.array([_stat(p) for p in path if p], dtype="<i8").tobytes())
            h.update(f"decoder-v{DECODER_VERSION}".encode())
        for arr, digest in ((self.pixels, self.pixels_digest), (self.embeddings, self.embeddings_digest),
                            (self.text_embeddings, None)):
            if arr is not None:
                h.update(f"{arr.shape}{arr.dtype.str}".encode())
                h.update(digest.encode() if digest else np.ascontiguousarray(arr).data)
        return h.hexdigest()

    @cached_property
    def file_digests(self) -> np.ndarray:
        """(n, 16) uint8: blake2b of each row's image file contents (zeros where there is no file or it cannot
        be read). Reads every file, so only runs that verify contents (Config.verify_content) ask for it."""
        from selector.files import file_digests
        return file_digests(self.table["path"].astype(str).tolist())

    @cached_property
    def fingerprint(self) -> str:
        """sha1 over content_fingerprint, labels, class_names and the splits if any; stable across
        processes. Computed once per Dataset (hashing 60k images takes a noticeable fraction of a second);
        Datasets are not mutated in place."""
        h = hashlib.sha1(self.content_fingerprint.encode())
        h.update("\x1f".join(self.class_names).encode() + b"\x1e")
        h.update(self.labels.astype("<i8").tobytes())
        if self.splits is not None:   # which rows are train and test decides which duplicates are leaks
            h.update(b"split\x1e" + "\x1f".join(self.splits.tolist()).encode())
        return h.hexdigest()

    @cached_property
    def splits(self) -> np.ndarray | None:
        """(n,) str: each row's split (train, test, ...) when the table's `split` column names at least two;
        None otherwise (no split column, or every row in one split: no leak across splits is possible)."""
        if "split" not in self.table:
            return None
        values = self.table["split"].astype(str).to_numpy()
        return values if len(np.unique(values)) > 1 else None


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


def class_order(names) -> tuple[str, ...]:
    """Sorted class names; numerically when every name is an integer ("2" before "10")."""
    names = set(names)
    if all(s.isdigit() for s in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


def build_dataset(name, ids, paths, label_names, class_names=None, extra=None, problems=None, **arrays) -> Dataset:
    """Assemble a Dataset from per-row lists; notes classes with fewer than 2 samples in `problems`."""
    class_names = class_order(label_names) if class_names is None else tuple(class_names)
    labels = pd.Index(class_names).get_indexer(label_names).astype(np.int64)
    if (labels < 0).any():
        unknown = sorted({str(label_names[i]) for i in np.flatnonzero(labels < 0)})
        raise InputError(f"{name}: labels not among the classes: {describe_rows(unknown)}.")
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
