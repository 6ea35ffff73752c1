"""The whole pipeline: dataset -> embeddings -> adapters -> scores + audit -> one per-sample table.

`run` does the heavy work once per (dataset, encoder, config) and caches it on disk; `with_selection`
is the millisecond step that runs on every slider move.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from selector import __version__
from selector.data import Dataset, write_manifest, write_table
from selector.errors import InputError
from selector.progress import Progress, ensure

log = logging.getLogger(__name__)

MAPS = ("umap", "pca", "none")
NOISE_MODES = ("none", "uniform", "confusable")
GLOBAL_K = 10  # neighbours kept per sample for the audit, the galleries and the map
# Objective weight name -> the [0, 1] table column it weighs (higher is better in each).
WEIGHT_COLUMNS = {"alignment": "alignment_norm", "diversity": "diversity_norm", "cleanliness": "cleanliness"}
# Default selection: the setting that trained best in bench/selection_quality.py (BENCHMARKS.md): drop suspected
# errors, balance classes, spread the budget over each class's score range, weigh cleanliness with alignment.
DEFAULT_WEIGHTS = {"alignment": 1.0, "diversity": 0.1, "cleanliness": 1.0}
DEFAULT_SELECTION = {"ratio": 0.5, "weights": DEFAULT_WEIGHTS, "exclude_flagged": True, "class_balance": True,
                     "strategy": "stratified"}

# Column order of the per-sample table; `selected` is added by with_selection.
TABLE_COLUMNS = (
    "id", "path", "label", "noise_score", "flagged", "suggested_label", "reason",
    "alignment", "diversity", "alignment_norm", "diversity_norm", "cleanliness",
    "given_prob", "suggested_prob", "knn_agreement", "ood_score", "ood", "duplicate_of",
    "map_x", "map_y",
)


@dataclass(frozen=True)
class Config:
    """Settings of one run; `key()` makes it part of the cache key.

    k: neighbours for the diversity score (None: about 10% of the class size, clamped to [2, 100]).
    noise_mode/noise_rate/noise_seed: synthetic label noise injected into a copy of the labels before the
    audit, so the audit can be checked against a known truth ("none" leaves the labels alone).
    """
    k: Optional[int] = None
    seed: int = 0
    duplicate_threshold: float = 0.98
    map: str = "umap"
    batch_size: int = 256
    noise_mode: str = "none"
    noise_rate: float = 0.0
    noise_seed: int = 0

    def validate(self) -> "Config":
        if self.map not in MAPS:
            raise InputError(f"map must be one of {MAPS}, got {self.map!r}")
        if self.noise_mode not in NOISE_MODES:
            raise InputError(f"noise_mode must be one of {NOISE_MODES}, got {self.noise_mode!r}")
        if self.noise_mode != "none" and not 0.0 < self.noise_rate < 1.0:
            raise InputError(f"noise_rate must be in (0, 1) when injecting noise, got {self.noise_rate}")
        if not 0.0 < self.duplicate_threshold <= 1.0:
            raise InputError(f"duplicate_threshold must be in (0, 1], got {self.duplicate_threshold}")
        if self.k is not None and self.k < 2:
            raise InputError(f"k counts the sample itself and must be >= 2, got {self.k}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        return self

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


@dataclass(eq=False)
class Result:
    """Everything computed once per (dataset, encoder, config). Row i is sample i everywhere."""
    dataset: Dataset
    encoder_name: str
    config: Config
    X: np.ndarray            # (n, d) float32 frozen image embeddings
    T: np.ndarray            # (C, d) float32 frozen class-prompt embeddings
    F: np.ndarray            # (n, d) float32 adapted image embeddings
    G: np.ndarray            # (C, d) float32 adapted prompt embeddings
    table: pd.DataFrame      # the per-sample table (TABLE_COLUMNS [+ original_label, noise_injected])
    neighbors: tuple         # (D (n, GLOBAL_K) float32 cosine similarity, I (n, GLOBAL_K) int64) on F, self excluded
    class_summary: pd.DataFrame  # class, n, flagged, estimated_noise_rate
    manifest: dict
    flag_threshold: float = 0.0
    noise_truth: Optional[np.ndarray] = None   # (n,) bool, True where noise was injected
    timings: dict = field(default_factory=dict)

    @property
    def class_names(self) -> tuple:
        return self.dataset.class_names


def run(dataset: Dataset, encoder, config: Config = Config(), *, cache_dir, progress: Optional[Progress] = None) -> Result:
    """Embed (cached), adapt, score and audit `dataset`; return the Result with its per-sample table."""
    from selector.adapt import Adapters
    from selector.embed import embed_dataset
    from selector.neighbors import Neighbors
    from selector.noise import audit_labels, inject_noise
    from selector.score import alignment, default_k, diversity, minmax, zero_shot_probs

    config.validate()
    progress = ensure(progress)
    _check_dataset(dataset)
    timings = {}

    t0 = time.perf_counter()
    X, T, ok = embed_dataset(dataset, encoder, cache_dir=cache_dir, batch_size=config.batch_size, progress=progress)
    timings["embed_s"] = time.perf_counter() - t0
    skipped = []
    if not ok.all():
        bad = np.flatnonzero(~ok)
        skipped = dataset.table["id"].iloc[bad].astype(str).tolist()
        log.warning("skipping %d unreadable images", len(bad))
        dataset = dataset.subset(np.flatnonzero(ok))
        X = X[ok]
        _check_dataset(dataset)

    noise_truth = None
    original_labels = dataset.labels
    if config.noise_mode != "none":
        confusion = None
        if config.noise_mode == "confusable":
            confusion = _zero_shot_confusion(zero_shot_probs(X, T), dataset.labels, len(dataset.class_names))
        noisy, noise_truth = inject_noise(
            dataset.labels, rate=config.noise_rate, mode=config.noise_mode,
            n_classes=len(dataset.class_names), confusion=confusion, seed=config.noise_seed)
        dataset = dataset.with_labels(noisy)
    labels = dataset.labels

    t0 = time.perf_counter()
    progress("adapting embeddings", 0, 1)
    adapters = Adapters(seed=config.seed).fit(X, T, labels)
    F, G = adapters.transform_images(X), adapters.transform_texts(T)
    progress("adapting embeddings", 1, 1)
    timings["adapt_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress("finding neighbours", 0, 1)
    D, I = Neighbors(F).search(F, GLOBAL_K, exclude_self=True)
    progress("finding neighbours", 1, 1)
    timings["neighbors_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress("scoring", 0, 2)
    k = config.k or default_k(np.bincount(labels, minlength=len(dataset.class_names)))
    sas = alignment(F, G, labels)
    sds = diversity(F, labels, k=k)
    progress("scoring", 1, 2)
    audit = audit_labels(X, T, labels, dataset.class_names, neighbors=(D, I), seed=config.seed,
                         duplicate_threshold=config.duplicate_threshold)
    progress("scoring", 2, 2)
    timings["score_audit_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    xy = _project(F, D, I, config, progress)
    timings["map_s"] = time.perf_counter() - t0

    names = np.asarray(dataset.class_names, dtype=object)
    table = pd.DataFrame({
        "id": dataset.table["id"].astype(str).to_numpy(),
        "path": dataset.table["path"].astype(str).to_numpy(),
        "label": names[labels],
        "noise_score": audit.noise_score.astype(np.float32),
        "flagged": audit.flagged.astype(bool),
        "suggested_label": names[audit.suggested_label],
        "reason": np.asarray(audit.reason, dtype=object),
        "alignment": sas.astype(np.float32),
        "diversity": sds.astype(np.float32),
        "alignment_norm": minmax(sas),
        "diversity_norm": minmax(sds),
        "cleanliness": (1.0 - audit.noise_score).astype(np.float32),
        "given_prob": audit.given_prob.astype(np.float32),
        "suggested_prob": audit.suggested_prob.astype(np.float32),
        "knn_agreement": audit.knn_agreement.astype(np.float32),
        "ood_score": audit.ood_score.astype(np.float32),
        "ood": audit.ood.astype(bool),
        "duplicate_of": audit.duplicate_of.astype(np.int64),
        "map_x": xy[:, 0],
        "map_y": xy[:, 1],
    })
    if noise_truth is not None:
        table["original_label"] = names[original_labels]
        table["noise_injected"] = noise_truth

    counts = np.bincount(labels, minlength=len(names))
    flagged_per_class = np.bincount(labels[audit.flagged], minlength=len(names))
    class_summary = pd.DataFrame({
        "class": list(names), "n": counts, "flagged": flagged_per_class,
        "estimated_noise_rate": np.asarray(audit.class_noise_rate, dtype=np.float32),
    })
    manifest = _manifest(dataset, encoder, config, k, table, skipped, timings)
    return Result(dataset=dataset, encoder_name=encoder.name, config=config, X=X, T=T, F=F, G=G,
                  table=table, neighbors=(D, I), class_summary=class_summary, manifest=manifest,
                  flag_threshold=float(audit.threshold), noise_truth=noise_truth, timings=timings)


def load_or_run(dataset: Dataset, encoder, config: Config = Config(), *, cache_dir,
                progress: Optional[Progress] = None) -> Result:
    """`run`, cached on disk under cache_dir/results/: a second call with the same inputs takes seconds.

    The cache folder is written whole and renamed into place, so a killed run never leaves half a result.
    """
    folder = Path(cache_dir) / "results" / _result_key(dataset, encoder, config)
    if (folder / "meta.json").exists():
        try:
            return _load_result(folder, dataset, encoder, config, cache_dir, progress)
        except Exception as exc:  # a damaged cache is rebuilt, never used
            log.warning("result cache %s unreadable (%s); recomputing", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    result = run(dataset, encoder, config, cache_dir=cache_dir, progress=progress)
    _save_result(result, folder, dataset)
    return result


def selection_mask(table: pd.DataFrame, *, ratio: float, weights: dict, exclude_flagged: bool = True,
                   exclude_duplicates: Optional[bool] = None, class_balance: bool = False, strategy: str = "topk",
                   keep=(), never=()) -> np.ndarray:
    """(n,) bool mask of exactly round(ratio * n) samples; the millisecond path behind every slider.

    weights: {"alignment": a, "diversity": d, "cleanliness": c} (see WEIGHT_COLUMNS). strategy: "topk" (the
    paper's optimum, exact) or "stratified" (spreads the budget over the score range of each class).
    exclude_flagged drops suspected label errors and out-of-distribution images before choosing;
    exclude_duplicates (default: as exclude_flagged) drops the later copy of each near-duplicate.
    keep / never: row ids that must / must not be chosen.
    """
    from selector.optimize import select, selection_score

    score = selection_score({name: table[column].to_numpy() for name, column in WEIGHT_COLUMNS.items()}, weights)
    if exclude_duplicates is None:
        exclude_duplicates = exclude_flagged
    exclude = np.zeros(len(table), dtype=bool)
    if exclude_flagged:
        exclude |= table["flagged"].to_numpy() | table["ood"].to_numpy()
    if exclude_duplicates:
        exclude |= table["duplicate_of"].to_numpy() >= 0
    labels = pd.factorize(table["label"])[0]
    return select(score, ratio, labels=labels, class_balance=class_balance, strategy=strategy, exclude=exclude,
                  keep=_rows_of(table, keep, "keep"), never=_rows_of(table, never, "never"))


def with_selection(result_or_table, **selection) -> pd.DataFrame:
    """A copy of the per-sample table with a `selected` column (see selection_mask for the options)."""
    table = result_or_table.table if isinstance(result_or_table, Result) else result_or_table
    out = table.copy()
    out["selected"] = selection_mask(table, **selection)
    return out


def export(table: pd.DataFrame, path, manifest: dict, *, selection: Optional[dict] = None) -> tuple[Path, Path]:
    """Write the table (.csv, formula-safe, or .parquet) and a JSON run manifest beside it."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"export path must end in .csv or .parquet, got {path.name!r}")
    manifest = dict(manifest)
    if selection is not None:
        manifest["selection"] = selection
    if "selected" in table:
        manifest.setdefault("counts", {})["selected"] = int(table["selected"].sum())
    table_path = write_table(table, path)
    manifest_path = write_manifest(manifest, path.with_suffix(".manifest.json"))
    return table_path, manifest_path


# --- private helpers -------------------------------------------------------------------------------------------

def _rows_of(table: pd.DataFrame, ids, what: str) -> Optional[np.ndarray]:
    ids = [] if ids is None else list(ids)
    if not ids:
        return None
    index = pd.Index(table["id"].astype(str))
    pos = index.get_indexer([str(i) for i in ids])
    if (pos < 0).any():
        from selector.errors import describe_rows
        unknown = [ids[j] for j in np.flatnonzero(pos < 0)]
        raise InputError(f"{what} list names ids that are not in the dataset: {describe_rows(unknown)}. "
                         "Use ids from the table's id column.")
    mask = np.zeros(len(table), dtype=bool)
    mask[pos] = True
    return mask


def _check_dataset(dataset: Dataset) -> None:
    n = len(dataset)
    if n < 2:
        raise InputError(f"the dataset has {n} usable samples; at least 2 are needed. Check the source path.")
    present = np.unique(dataset.labels)
    if len(present) < 2:
        raise InputError(f"the dataset has a single class ({dataset.class_names[present[0]]!r}); label audit and "
                         "selection need at least 2 classes.")


def _zero_shot_confusion(P: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts: row = given label, column = zero-shot prediction."""
    pred = P.argmax(1)
    return np.bincount(labels * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _project(F, D, I, config: Config, progress) -> np.ndarray:
    from selector.project import pca_2d, umap_from_knn
    n = len(F)
    if config.map == "none":
        return np.zeros((n, 2), dtype=np.float32)
    progress("drawing the map", 0, 1)
    if config.map == "umap" and n >= 16:
        # UMAP wants distances; our kNN stores cosine similarity.
        xy = umap_from_knn(I, np.maximum(1.0 - D, 0.0).astype(np.float32), seed=config.seed)
    else:
        xy = pca_2d(F)
    progress("drawing the map", 1, 1)
    return np.asarray(xy, dtype=np.float32)


def _manifest(dataset, encoder, config, k, table, skipped, timings) -> dict:
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": {"dataset": dataset.name, "fingerprint": dataset.fingerprint, "n": len(dataset),
                   "classes": list(dataset.class_names), "skipped_unreadable": skipped,
                   "load_problems": list(dataset.problems)},
        "encoder": {"name": encoder.name, "cache_key": encoder.cache_key},
        "config": dataclasses.asdict(config),
        "diversity_k": int(k),
        "seed": config.seed,
        "counts": {"n": int(len(table)), "flagged": int(table["flagged"].sum()), "ood": int(table["ood"].sum()),
                   "near_duplicates": int((table["duplicate_of"] >= 0).sum()), "skipped": len(skipped)},
        "timings_s": {key: round(v, 3) for key, v in timings.items()},
        "versions": _versions(),
    }


def _versions() -> dict:
    import importlib.metadata as md
    out = {"selector": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "pandas", "torch", "open_clip_torch", "faiss-cpu", "faiss-gpu-cu12", "umap-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _result_key(dataset, encoder, config) -> str:
    blob = f"{dataset.fingerprint}|{encoder.cache_key}|{config.key()}|{__version__}"
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def _save_result(result: Result, folder: Path, source: Dataset) -> None:
    rows = pd.Index(source.table["id"].astype(str)).get_indexer(result.table["id"])
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    D, I = result.neighbors
    arrays = {"rows": rows, "labels": result.dataset.labels, "F": result.F, "G": result.G, "D": D, "I": I}
    if result.noise_truth is not None:
        arrays["noise_truth"] = result.noise_truth
    np.savez(tmp / "arrays.npz", **arrays)
    result.table.to_parquet(tmp / "table.parquet", index=False)
    meta = {"manifest": result.manifest, "class_summary": result.class_summary.to_dict(orient="list"),
            "flag_threshold": result.flag_threshold, "timings": result.timings}
    (tmp / "meta.json").write_text(json.dumps(meta, default=_json_default))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished the same result first
        shutil.rmtree(tmp, ignore_errors=True)


def _load_result(folder: Path, source: Dataset, encoder, config, cache_dir, progress) -> Result:
    from selector.embed import embed_dataset
    meta = json.loads((folder / "meta.json").read_text())
    with np.load(folder / "arrays.npz") as z:
        arrays = {key: z[key] for key in z.files}
    table = pd.read_parquet(folder / "table.parquet")
    X, T, _ = embed_dataset(source, encoder, cache_dir=cache_dir, batch_size=config.batch_size, progress=progress)
    rows = arrays["rows"]
    dataset = source.subset(rows).with_labels(arrays["labels"])
    if len(table) != len(dataset):
        raise ValueError("cached table does not match the dataset")
    return Result(dataset=dataset, encoder_name=encoder.name, config=config, X=X[rows], T=T, F=arrays["F"],
                  G=arrays["G"], table=table, neighbors=(arrays["D"], arrays["I"]),
                  class_summary=pd.DataFrame(meta["class_summary"]), manifest=meta["manifest"],
                  flag_threshold=meta["flag_threshold"], noise_truth=arrays.get("noise_truth"),
                  timings=meta["timings"])


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
