"""A run's `Result`, and the result cache: one folder per run key under cache_dir/results/, written whole and
renamed into place.

A folder holds arrays.npz (row map, labels, G, noise truth), F.npy, D.npy and I.npy (the adapted embeddings
and the kNN, memory-mapped when re-opened: a 1.28M-row re-open reads only what is used), table.parquet and
meta.json. The frozen embeddings are not copied: they are re-read from the embedding cache. A folder that
cannot be read back is removed with a warning and the run is recomputed.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from selector.dataset import Dataset
from selector.linalg import l2_normalize
from selector.writer import jsonable

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Result:
    """Everything computed once per (dataset, encoder, config). Row i is sample i everywhere."""
    dataset: Dataset
    encoder_name: str
    config: object           # the pipeline.Config of the run
    X: np.ndarray            # (n, d) float32 frozen image embeddings, unit rows (every stage uses them so)
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

    @property
    def class_names(self) -> tuple:
        return self.dataset.class_names


def folder(cache_dir, key: str) -> Path:
    return Path(cache_dir) / "results" / key


def save(result, path: Path, source) -> None:
    """Write `result` (of a run on `source`, before unreadable rows were dropped) into `path`."""
    rows = pd.Index(source.table["id"].astype(str)).get_indexer(result.table["id"])
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    D, I = result.neighbors
    arrays = {"rows": rows, "labels": result.dataset.labels, "G": result.G}
    if result.noise_truth is not None:
        arrays["noise_truth"] = result.noise_truth
    np.savez(tmp / "arrays.npz", **arrays)
    for name, big in (("F", result.F), ("D", D), ("I", I)):     # own files: memory-mapped when re-opened
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(big))
    result.table.to_parquet(tmp / "table.parquet", index=False)
    meta = {"manifest": result.manifest, "class_summary": result.class_summary.to_dict(orient="list"),
            "flag_threshold": result.flag_threshold, "timings": result.timings}
    (tmp / "meta.json").write_text(json.dumps(jsonable(meta)))
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished the same result first
        shutil.rmtree(tmp, ignore_errors=True)


def load(path: Path, source, encoder, config, *, cache_dir, progress=None) -> Optional[Result]:
    """The cached Result in `path`, or None when there is none or it cannot be read (then it is removed)."""
    if not (path / "meta.json").exists():
        return None
    try:
        return _load(path, source, encoder, config, cache_dir, progress)
    except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, never used
        log.warning("result cache %s unreadable (%s); recomputing", path, exc)
        shutil.rmtree(path, ignore_errors=True)
        return None


def _load(path: Path, source, encoder, config, cache_dir, progress):
    from selector.embed import embed_dataset
    meta = json.loads((path / "meta.json").read_text())
    with np.load(path / "arrays.npz") as z:
        arrays = {key: z[key] for key in z.files}
    for name in ("F", "D", "I"):   # copy-on-write maps: pages are read when used, the files never change
        arrays[name] = np.load(path / f"{name}.npy", mmap_mode="c", allow_pickle=False)
    table = pd.read_parquet(path / "table.parquet")
    X, T, _ = embed_dataset(source, encoder, cache_dir=cache_dir, batch_size=config.batch_size, progress=progress)
    rows = arrays["rows"]
    dataset = source.subset(rows).with_labels(arrays["labels"])
    if len(table) != len(dataset):
        raise ValueError("cached table does not match the dataset")
    if not (len(rows) == len(X) and np.array_equal(rows, np.arange(len(X)))):   # all rows: no copy (2.6 GB at 1.28M)
        X = X[rows]
    X = l2_normalize(X)
    return Result(dataset=dataset, encoder_name=encoder.name, config=config, X=X, T=T, F=arrays["F"],
                  G=arrays["G"], table=table, neighbors=(arrays["D"], arrays["I"]),
                  class_summary=pd.DataFrame(meta["class_summary"]), manifest=meta["manifest"],
                  flag_threshold=meta["flag_threshold"], noise_truth=arrays.get("noise_truth"),
                  timings=meta["timings"])
