"""A run's `Result`, and the result cache: one folder per run key under cache_dir/results/, written whole
beside it and swapped into place only when complete.

A folder holds arrays.npz (row map, labels, class embeddings T, G, noise truth), F.npy, D.npy and I.npy (the
adapted embeddings and the kNN, memory-mapped when re-opened), table.parquet and meta.json, which records every
other file's size and CRC-32 and is sealed with its own checksum. Every file is checked when the folder is
re-opened; a folder that fails a check is computed again, with a warning, and replaced once the new one is
written. Runs of the same inputs may share the cache at once: a folder another process swaps in while this one
reads it is read again, not called damaged. The frozen embeddings are not copied: they are re-read from the
embedding cache (or the dataset's own file) when first used.

A folder's views/ holds what a client derives from the run and wants back on the next re-open (the app's subset
comparison spaces: `save_view`, `load_view`), each a .npz with its own sealed .json of parameters and checksum.
Views go with their folder: a run computed again starts without them.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from selector.dataset import Dataset
from selector.files import (CacheCorrupt, atomic_write, atomic_write_bytes, cache_problem, check_file, entry_folder,
                            file_record, read_sealed_json, remove_entry, sealed_json, swap_in, unwritable)
from selector.lazy import LazyArray
from selector.linalg import l2_normalize
from selector.writer import jsonable

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Result:
    """Everything computed once per (dataset, encoder, config). Row i is sample i everywhere."""
    dataset: Dataset
    encoder_name: str
    config: object           # the pipeline.Config of the run
    X: np.ndarray            # (n, d) float32 frozen image embeddings, unit rows (every stage uses them so); a
                             # re-opened run's is a LazyArray, read on first use (selector.lazy)
    T: np.ndarray            # (C, d) float32 frozen class-prompt embeddings
    F: np.ndarray            # (n, d) float32 adapted image embeddings
    G: np.ndarray            # (C, d) float32 adapted prompt embeddings
    table: pd.DataFrame      # the per-sample table (table.TABLE_COLUMNS [+ TRUTH_COLUMNS])
    neighbors: tuple         # (D (n, GLOBAL_K) float32 cosine similarity, I (n, GLOBAL_K) int64) on F, self excluded
    class_summary: pd.DataFrame  # class, n, flagged, estimated_noise_rate
    manifest: dict
    flag_threshold: float = 0.0
    noise_truth: Optional[np.ndarray] = None   # (n,) bool, True where noise was injected
    timings: dict = field(default_factory=dict)
    cache_warnings: list = field(default_factory=list)   # caches this run could not write or read (see files.py)

    @property
    def class_names(self) -> tuple:
        return self.dataset.class_names


def folder(cache_dir, key: str) -> Path:
    return Path(cache_dir) / "results" / key


FORMAT = 3          # 3: the table has missing_class (and split, leak_of with a split column)
_FILES = ("arrays.npz", "F.npy", "D.npy", "I.npy", "table.parquet")


def save(result, path: Path, source) -> bool:
    """Write `result` (of a run on `source`, before unreadable rows were dropped) into `path`: into a folder
    beside it first, which replaces `path` only once complete. False (with a warning) when the cache folder
    cannot be written: the result is then simply not cached, and what was at `path` is left as it was."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        remove_entry(tmp)
        entry_folder(tmp)
        rows = pd.Index(source.table["id"].astype(str)).get_indexer(result.table["id"])
        D, I = result.neighbors
        arrays = {"rows": rows, "labels": result.dataset.labels, "T": result.T, "G": result.G}
        if result.noise_truth is not None:
            arrays["noise_truth"] = result.noise_truth
        atomic_write(tmp / "arrays.npz", lambda f: np.savez(f, **arrays))
        for name, big in (("F", result.F), ("D", D), ("I", I)):     # own files: memory-mapped when re-opened
            atomic_write(tmp / f"{name}.npy", lambda f, a=big: np.save(f, np.ascontiguousarray(a), allow_pickle=False))
        atomic_write(tmp / "table.parquet", lambda f: result.table.to_parquet(f, index=False))
        meta = {"format": FORMAT, "has_T": True, "files": {name: file_record(tmp / name) for name in _FILES},
                "manifest": result.manifest, "class_summary": result.class_summary.to_dict(orient="list"),
                "flag_threshold": result.flag_threshold, "timings": result.timings}
        atomic_write_bytes(tmp / "meta.json", sealed_json(jsonable(meta)))
        swap_in(tmp, path)
        return True
    except OSError as exc:
        remove_entry(tmp)
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and (path / "meta.json").is_file():
            log.info("result cache %s was written by another process first", path)
            return True
        cache_problem(unwritable("result cache", path.parent, exc))
        return False


def load(path: Path, source, encoder, config, *, cache_dir, progress=None) -> Optional[Result]:
    """The cached Result in `path`, or None when there is none or it fails its checks (logged: it is then
    recomputed, and replaced once the new one is written). The frozen embeddings are not read now: the
    Result's X is a LazyArray read from the embedding cache (or the dataset's own file) on first use, which
    only the Duplicates page asks for (selector.lazy). A folder written before the class embeddings T were
    kept in it reads them, and X, from the embedding cache now, in a thread beside the checks."""
    from selector.embed import embed_dataset

    def frozen(progress=None):
        return embed_dataset(source, encoder, cache_dir=cache_dir, batch_size=config.batch_size, progress=progress,
                             verify_content=config.verify_content)

    for attempt in range(2):
        if not os.path.lexists(path):
            return None
        seal = _seal(path)
        try:
            meta = _read_meta(path)
            with ThreadPoolExecutor(max_workers=1) as pool:
                checked = pool.submit(_read, path, meta)
                X, T, _ = (None, None, None) if meta.get("has_T") else frozen(progress)
                arrays, table = checked.result()
            break
        except CacheCorrupt as exc:
            if attempt == 0 and _seal(path) != seal:   # another process swapped in its copy while this one read
                log.info("result cache %s was replaced while it was read; reading it again", path)
                continue
            log.warning("result cache %s is damaged (%s); computing the run again", path, exc)
            return None
    if X is None:
        T = arrays.pop("T")
        rows = arrays["rows"]
        X = LazyArray((len(rows), T.shape[1]), np.float32, lambda: _unit_rows(frozen()[0], rows))
    return _assemble(meta, arrays, table, X, T, source, encoder, config, path)


def _seal(path: Path):
    """Which meta.json the folder at path holds now (its inode and modification time), None when there is none:
    a folder swapped in by another process has another."""
    try:
        st = os.stat(path / "meta.json")
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _unit_rows(X, rows) -> np.ndarray:
    """The result's rows of the dataset's frozen embeddings X, unit length (as every stage used them)."""
    if not (len(rows) == len(X) and np.array_equal(rows, np.arange(len(X)))):   # all rows: no copy (2.6 GB at 1.28M)
        X = X[rows]
    return l2_normalize(X)


def _read_meta(path: Path) -> dict:
    meta = read_sealed_json(path / "meta.json")
    if meta.get("format") != FORMAT or not isinstance(meta.get("files"), dict):
        raise CacheCorrupt(f"meta.json is format {meta.get('format')!r}, expected {FORMAT}")
    for key in ("manifest", "class_summary", "flag_threshold", "timings"):
        if key not in meta:
            raise CacheCorrupt(f"meta.json has no {key!r}")
    return meta


def _read(path: Path, meta: dict):
    """arrays and table of a result folder, every file checked against the checksums in its meta.json."""
    for name in _FILES:
        check_file(path / name, meta["files"].get(name))
    try:
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        for name in ("F", "D", "I"):   # copy-on-write maps: pages are read when used, the files never change
            arrays[name] = np.load(path / f"{name}.npy", mmap_mode="c", allow_pickle=False)
        table = pd.read_parquet(path / "table.parquet")
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise CacheCorrupt(f"{type(exc).__name__}: {exc}") from exc
    return arrays, table


def _assemble(meta, arrays, table, X, T, source, encoder, config, path):
    rows = arrays["rows"]
    if rows.ndim != 1 or len(table) != len(rows) or (len(rows) and not 0 <= rows.min() <= rows.max() < len(source)):
        log.warning("result cache %s does not fit the dataset; computing the run again", path)
        return None
    dataset = source.subset(rows).with_labels(arrays["labels"])
    table["path"] = dataset.locations()          # where each sample is: the same for every run of this dataset
    if not isinstance(X, LazyArray):
        X = _unit_rows(X, rows)
    return Result(dataset=dataset, encoder_name=encoder.name, config=config, X=X, T=T, F=arrays["F"],
                  G=arrays["G"], table=table, neighbors=(arrays["D"], arrays["I"]),
                  class_summary=pd.DataFrame(meta["class_summary"]), manifest=meta["manifest"],
                  flag_threshold=meta["flag_threshold"], noise_truth=arrays.get("noise_truth"),
                  timings=meta["timings"])


# -------------------------------------------------------------------------------------------- views
VIEWS = "views"
_VIEW_FORMAT = 1


def save_view(path: Path, name: str, view, params: dict) -> bool:
    """Keep `view` (a dataclass whose fields are arrays or None), computed with `params`, in the result folder
    `path` as views/<name>.npz. False when the folder holds no finished result or cannot be written (logged):
    the caller simply computes it again next time."""
    if not (path / "meta.json").is_file():
        return False
    arrays = {f.name: getattr(view, f.name) for f in dataclasses.fields(view) if getattr(view, f.name) is not None}
    target = path / VIEWS / f"{name}.npz"
    try:
        atomic_write(target, lambda f: np.savez(f, **arrays))
        record = {"format": _VIEW_FORMAT, "params": jsonable(params), "file": file_record(target)}
        atomic_write_bytes(target.with_suffix(".json"), sealed_json(record))
        return True
    except OSError as exc:
        log.warning("could not keep %s beside the run in %s: %s", name, path, exc)
        return False


def load_view(path: Path, name: str, kind, params: dict):
    """The `kind` dataclass save_view kept as views/<name>.npz with the same `params`, else None: none kept,
    other parameters, or a file that fails its checks (logged, and computed again by the caller)."""
    target = path / VIEWS / f"{name}.npz"
    if not target.with_suffix(".json").exists():
        return None
    try:
        record = read_sealed_json(target.with_suffix(".json"))
        if record.get("format") != _VIEW_FORMAT or record.get("params") != jsonable(params):
            return None
        check_file(target, record.get("file"))
        with np.load(target, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        return kind(**{f.name: arrays.get(f.name) for f in dataclasses.fields(kind)})
    except (CacheCorrupt, OSError, ValueError, TypeError) as exc:
        if not target.with_suffix(".json").exists():   # its run was computed again and swapped in meanwhile
            log.info("the kept %s of %s was removed while it was read", name, path)
            return None
        log.warning("the kept %s of %s is damaged (%s); computing it again", name, path, exc)
        return None
