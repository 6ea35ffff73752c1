"""The whole pipeline: dataset -> embeddings -> adapters -> scores + issues -> one per-sample table.

`run` does the heavy work once per (dataset, encoder, config) and returns a `Result`; `load_or_run` caches
it on disk (`selector.results`). What a user then chooses is a `selector.Selection`, applied in milliseconds.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from selector import results
from selector.checkpoints import Checkpoints
from selector.dataset import Dataset
from selector.errors import InputError, describe_rows
from selector.files import cache_problems, default_cache_dir
from selector.linalg import class_prototypes, l2_normalize
from selector.noise import NOISE_MODES
from selector.progress import Progress, ensure
from selector.project import MAPS
from selector.results import Result
from selector.roots import check_cache_dir
from selector.runtime import peak_rss_gb
from selector.validate import check_int, check_number
from selector.version import __version__

log = logging.getLogger(__name__)

GLOBAL_K = 10  # neighbours kept per sample for the audit, the galleries and the map
RECALL_REPORT_QUERIES = 10_000  # rows an approximate kNN graph is checked on against exact search (manifest)


@dataclass(frozen=True)
class Config:
    """Settings of one run, validated when made; `key()` makes it part of the cache key.

    k: neighbours for the diversity score (None: about 10% of the class size, clamped to [2, 100]).
    map: a MAPS name. noise_mode (a NOISE_MODES name) / noise_rate / noise_seed: synthetic label noise
    injected into a copy of the labels before the audit, so the audit can be checked against a known truth.
    verify_content: re-read every image file's contents (not only its size and modification time) so that a
    changed file is embedded again and a cached result made from the old one is not used.
    """
    k: Optional[int] = None
    seed: int = 0
    duplicate_threshold: float = 0.98
    map: str = "umap"
    batch_size: int = 256
    noise_mode: str = "none"
    noise_rate: float = 0.0
    noise_seed: int = 0
    verify_content: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> "Config":
        MAPS.check(self.map)
        NOISE_MODES.check(self.noise_mode)
        check_number(self.noise_rate, "noise_rate", minimum=0, maximum=1)
        if self.noise_mode != "none" and not 0.0 < self.noise_rate < 1.0:
            raise InputError(f"noise_rate must be in (0, 1) when injecting noise, got {self.noise_rate}")
        check_number(self.duplicate_threshold, "duplicate_threshold", above=0, maximum=1)
        if self.k is not None:
            check_int(self.k, "k (it counts the sample itself)", minimum=2)
        check_int(self.seed, "seed", minimum=0)
        check_int(self.noise_seed, "noise_seed", minimum=0)
        check_int(self.batch_size, "batch_size", minimum=1)
        if not isinstance(self.verify_content, bool):
            raise InputError(f"verify_content must be True or False, got {self.verify_content!r}")
        return self

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


def run_key(dataset: Dataset, encoder, config: Config) -> str:
    """The cache key of a run: what the data is (labels included), which encoder, which settings, which code.
    With config.verify_content the image files' contents are part of it (every file is read)."""
    content = dataset.fingerprint
    if config.verify_content:
        content += "|" + hashlib.sha1(dataset.file_digests.tobytes()).hexdigest()
    blob = f"{content}|{encoder.cache_key}|{config.key()}|{__version__}"
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def run(dataset: Dataset, encoder, config: Config = Config(), *, cache_dir=None,
        progress: Optional[Progress] = None, checkpoints=None) -> Result:
    """Embed (cached under cache_dir, default `default_cache_dir()`), adapt, score and audit `dataset`; return
    the Result with its per-sample table. Rows whose image could not be decoded or whose embedding is all
    zeros are skipped (listed in the manifest); embeddings that are all the same direction are refused.
    Rows are scaled to unit norm first, so any scale (1e-20 or 1e30) gives the same scores.
    checkpoints: a `selector.checkpoints.Checkpoints` that keeps the adapted embeddings and the kNN once
    computed and hands them back to a rerun (load_or_run passes one). A cache that cannot be written is
    skipped with a warning (listed in the Result's cache_warnings)."""
    config.validate()
    with cache_problems() as problems:
        result = _run(dataset, encoder, config, cache_dir, ensure(progress), checkpoints)
    result.cache_warnings = list(problems)
    return result


def _run(dataset, encoder, config, cache_dir, progress, checkpoints) -> Result:
    from selector.adapt import Adapters
    from selector.embed import embed_dataset
    from selector.issues import find_issues
    from selector.exact import graph_recall, inverse_norms
    from selector.neighbors import Neighbors
    from selector.project import draw_map
    from selector.score import alignment, default_k, diversity
    from selector.table import build_table, class_summary

    cache_dir = default_cache_dir() if cache_dir is None else check_cache_dir(cache_dir)
    _check_dataset(dataset)
    timings, memory = {}, {}   # seconds, and the process's peak RSS (GB) at the end of each stage

    t0 = time.perf_counter()
    X, T, ok = embed_dataset(dataset, encoder, cache_dir=cache_dir, batch_size=config.batch_size, progress=progress,
                             verify_content=config.verify_content)
    timings["embed_s"] = time.perf_counter() - t0
    memory["embed"] = peak_rss_gb()
    skipped = []
    zero = ok & ~_nonzero_rows(X)           # an all-zero embedding says nothing about its image: no embedding
    usable = ok & ~zero
    if not usable.any():
        raise InputError(f"none of the {len(X)} images has a usable embedding ({int((~ok).sum())} unreadable, "
                         f"{int(zero.sum())} all zeros). Check the images, the embeddings file or the encoder.")
    if zero.any():
        log.warning("skipping %d images whose embedding is all zeros (rows %s)", int(zero.sum()),
                    describe_rows(np.flatnonzero(zero)))
    if not ok.all():
        log.warning("skipping %d unreadable images", int((~ok).sum()))
    if not usable.all():
        skipped = dataset.table["id"].iloc[np.flatnonzero(~usable)].astype(str).tolist()
        dataset = dataset.subset(np.flatnonzero(usable))
        X = X[usable]
        _check_dataset(dataset)
    X = l2_normalize(X)   # once: every stage uses unit rows (no copy when they already are)
    _check_distinct(X)

    C = len(dataset.class_names)
    text_tower = T is not None     # image-only embeddings: class prototypes stand in for the class prompts
    _check_memory(X, C, config)
    original_labels = dataset.labels
    if not text_tower:
        T = class_prototypes(X, original_labels, C)
    noise_truth = None
    if config.noise_mode != "none":
        dataset, noise_truth = _inject(dataset, X, T, config)
        if not text_tower:         # from the labels the audit sees
            T = class_prototypes(X, dataset.labels, C)
    labels = dataset.labels

    resumed = []
    t0 = time.perf_counter()
    progress("adapting embeddings", 0, 1)
    saved = checkpoints.load("adapt") if checkpoints else None
    if saved and saved[0]["F"].shape == X.shape:
        F, G = saved[0]["F"], saved[0]["G"]
        resumed.append("adapt")
    else:
        adapters = Adapters(seed=config.seed).fit(X, T, labels)
        F, G = adapters.transform_images(X), adapters.transform_texts(T)
        if checkpoints:
            checkpoints.save("adapt", F=F, G=G)
    progress("adapting embeddings", 1, 1)
    timings["adapt_s"] = time.perf_counter() - t0
    memory["adapt"] = peak_rss_gb()

    t0 = time.perf_counter()
    saved = checkpoints.load("neighbors") if checkpoints else None
    if saved and saved[0]["I"].shape == (len(F), GLOBAL_K):
        (D, I), knn_info = (saved[0]["D"], saved[0]["I"]), saved[1]
        resumed.append("neighbors")
    else:
        index = Neighbors(F, progress=progress)
        D, I = index.search(F, GLOBAL_K, exclude_self=True,
                            progress=lambda _s, done, total: progress("finding neighbours", done, total))
        knn_info = {"index": f"{index.backend} {index.kind}", "k": GLOBAL_K, "nlist": index.nlist, "nprobe":
                    index.nprobe, "recall_at_10": round(index.recall, 4), "recall_queries": index.recall_queries}
        approximate = index.kind != "flat"
        del index                   # its copy of the vectors is not needed past this point
        if approximate:             # the graph itself against exact search: what the audit and the map read
            progress("checking the neighbours against exact search", 0, 1)
            recall, queries = graph_recall(F, I, scale=inverse_norms(F), queries=RECALL_REPORT_QUERIES,
                                           seed=config.seed)
            knn_info.update(tuning_recall_at_10=knn_info["recall_at_10"], tuning_queries=knn_info["recall_queries"],
                            recall_at_10=round(recall, 4), recall_queries=queries)
            progress("checking the neighbours against exact search", 1, 1)
        if checkpoints:
            checkpoints.save("neighbors", knn_info, D=D, I=I)
    timings["neighbors_s"] = time.perf_counter() - t0
    memory["neighbors"] = peak_rss_gb()

    t0 = time.perf_counter()
    progress("scoring", 0, 2)
    k = config.k or default_k(np.bincount(labels, minlength=len(dataset.class_names)))
    sas = alignment(F, G, labels)
    sds = diversity(F, labels, k=k)
    progress("scoring", 1, 2)
    issues = find_issues(X, T, labels, dataset.class_names, neighbors=(D, I), seed=config.seed,
                         duplicate_threshold=config.duplicate_threshold, zero_shot=text_tower, split=dataset.splits)
    progress("scoring", 2, 2)
    timings["score_audit_s"] = time.perf_counter() - t0
    memory["score_audit"] = peak_rss_gb()

    t0 = time.perf_counter()
    xy = draw_map(config.map, F, D, I, seed=config.seed, progress=progress)
    timings["map_s"] = time.perf_counter() - t0
    memory["map"] = peak_rss_gb()

    table = build_table(dataset, sas, sds, issues, xy, original_labels=original_labels, noise_truth=noise_truth)
    manifest = _manifest(dataset, encoder, config, k, table, skipped, timings, knn_info, memory)
    manifest["audit"] = {"experts": list(issues.labels.experts),
                         "pool_weights": {m: round(w, 4) for m, w in issues.labels.pool_weights.items()},
                         "hesitant_share": round(issues.labels.hesitant_share, 4),
                         "hesitation_power": issues.labels.hesitation_power,
                         "class_embeddings": "text prompts" if text_tower else
                         "image prototypes (no text tower: the mean embedding of each given class)"}
    manifest["resumed_stages"] = resumed     # stages a killed earlier run had finished (read, not recomputed)
    return Result(dataset=dataset, encoder_name=encoder.name, config=config, X=X, T=T, F=F, G=G,
                  table=table, neighbors=(D, I), class_summary=class_summary(dataset, issues), manifest=manifest,
                  flag_threshold=float(issues.labels.threshold), noise_truth=noise_truth, timings=timings)


def load_or_run(dataset: Dataset, encoder, config: Config = Config(), *, cache_dir=None,
                progress: Optional[Progress] = None) -> Result:
    """`run`, cached on disk under cache_dir/results/: a second call with the same inputs takes seconds.

    The cache folder is written whole beside the old one and swapped into place, so a killed run never leaves
    half a result and a failed write (a full disk) leaves the old one as it was; a damaged one is rebuilt,
    never used; a cache folder that cannot be written means the run goes on uncached, with a warning in the
    log and in the Result's cache_warnings. A killed run resumes after its last finished stage (the adapted
    embeddings and the kNN are checkpointed beside the cache folder until the result is written)."""
    cache_dir = default_cache_dir() if cache_dir is None else check_cache_dir(cache_dir)
    with cache_problems() as problems:
        folder = results.folder(cache_dir, run_key(dataset, encoder, config))
        result = results.load(folder, dataset, encoder, config, cache_dir=cache_dir, progress=progress)
        if result is None:
            stages = Checkpoints(folder.with_name(folder.name + ".stages"))   # a killed run resumes after its last stage
            result = run(dataset, encoder, config, cache_dir=cache_dir, progress=progress, checkpoints=stages)
            if results.save(result, folder, dataset):
                stages.clear()
    result.cache_warnings = list(problems)
    return result


# --- private helpers -------------------------------------------------------------------------------------------

def _nonzero_rows(X) -> np.ndarray:
    out = np.empty(len(X), bool)
    for s in range(0, len(X), 65_536):
        out[s:s + 65_536] = (X[s:s + 65_536] != 0).any(axis=1)
    return out


def _check_distinct(X) -> None:
    """InputError when every (unit) row is the same vector: such embeddings tell no image from another."""
    for s in range(0, len(X), 65_536):
        if (np.abs(X[s:s + 65_536] - X[0]) > 1e-6).any():
            return
    raise InputError(f"all {len(X)} image embeddings point the same way (every row is a multiple of row 0), so "
                     "they tell no image from another and nothing can be audited. Check the embeddings file or "
                     "the encoder (a broken checkpoint or constant images give this).")


def _check_dataset(dataset: Dataset) -> None:
    n = len(dataset)
    if n < 2:
        raise InputError(f"the dataset has {n} usable samples; at least 2 are needed. Check the source path.")
    present = np.unique(dataset.labels)
    if len(present) < 2:
        raise InputError(f"the dataset has a single class ({dataset.class_names[present[0]]!r}); label audit and "
                         "selection need at least 2 classes.")


def memory_needed_gb(n: int, d: int, n_classes: int, map_kind: str) -> dict:
    """Estimated memory (GB) the stages after embedding add to the embeddings themselves, by what holds it:
    the adapted embeddings (4 n d bytes), the kNN index and results (past CPU_EXACT_LIMIT rows, 8-bit codes
    n d and a training sample; 12 bytes per neighbour), the audit's candidate classes (16 bytes each, at most
    27 a row), the per-sample table (~0.6 KB a row), the map's graph and layout (UMAP: ~1 KB a row, on at most
    2 x LANDMARKS rows, then 0.3 KB a placed row), and ~1 GB of working blocks and libraries."""
    from selector.neighbors import CPU_EXACT_LIMIT
    from selector.project import LANDMARKS
    nlist = int(4 * n ** 0.5)
    parts = {"adapted embeddings": 4 * n * d,
             "kNN": 12 * n * (GLOBAL_K + 1) + (n * d + 4 * min(n, 64 * nlist) * d if n > CPU_EXACT_LIMIT else 0),
             "label audit": 16 * n * min(n_classes, 27),
             "table": 600 * n,
             "map": (1000 * n if n <= 2 * LANDMARKS else 1000 * LANDMARKS + 300 * n) if map_kind == "umap" else 0,
             "working blocks": 2 ** 30}
    return {k: v / 2 ** 30 for k, v in parts.items()}


def _check_memory(X, n_classes: int, config: Config) -> None:
    """InputError, before any expensive stage, when the estimated memory of the run exceeds what is available."""
    from selector.runtime import available_memory_gb
    available = available_memory_gb()
    parts = memory_needed_gb(X.shape[0], X.shape[1], n_classes, config.map)
    need = sum(parts.values())
    if available is None or need <= available:
        return
    biggest = ", ".join(f"{k} {v:.1f} GB" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:3])
    raise InputError(
        f"This run needs about {need:.1f} GB of memory on top of the {X.nbytes / 2 ** 30:.1f} GB of embeddings "
        f"({X.shape[0]:,} rows x {X.shape[1]}; most of it: {biggest}), and {available:.1f} GB are available. "
        "Close other programs, choose the map 'none' (CLI: --map none), embed a subset first, or run on a "
        "machine with more memory.")


def _inject(dataset: Dataset, X, T, config: Config):
    """The dataset with config's synthetic noise in its labels, and the (n,) mask of flipped rows."""
    from selector.noise import hesitation, inject_noise
    from selector.score import zero_shot_best
    C = len(dataset.class_names)
    confusion = hesitant = None
    if config.noise_mode == "confusable":   # pair classes by the frozen encoder's zero-shot confusion
        pred, _ = zero_shot_best(X, T)
        confusion = np.bincount(dataset.labels * C + pred, minlength=C * C).reshape(C, C)
    elif config.noise_mode == "instance":   # flip where the frozen encoder hesitates between two classes
        hesitant = hesitation(X, T, dataset.labels)
    noisy, truth = inject_noise(dataset.labels, rate=config.noise_rate, mode=config.noise_mode, n_classes=C,
                                confusion=confusion, hesitation=hesitant, seed=config.noise_seed)
    return dataset.with_labels(noisy), truth


def _manifest(dataset, encoder, config, k, table, skipped, timings, knn_info, memory) -> dict:
    from selector.runtime import faiss_blas, n_threads
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": {"dataset": dataset.name, "fingerprint": dataset.fingerprint, "n": len(dataset),
                   "classes": list(dataset.class_names), "skipped_unreadable": skipped,
                   "load_problems": list(dataset.problems)},
        "encoder": {"name": encoder.name, "cache_key": encoder.cache_key},
        "config": dataclasses.asdict(config),
        "diversity_k": int(k),
        "seed": config.seed,
        "counts": _counts(table, skipped),
        "timings_s": {key: round(v, 3) for key, v in timings.items()},
        "peak_rss_gb": {key: round(v, 2) for key, v in memory.items()},
        "neighbors": knn_info,
        "machine": {"threads": n_threads(), "faiss_blas_core": faiss_blas()["core"]},
        "versions": _versions(),
    }


def _counts(table, skipped) -> dict:
    counts = {"n": int(len(table)), "flagged": int(table["flagged"].sum()), "ood": int(table["ood"].sum()),
              "missing_class": int((table["missing_class"] >= 0).sum()),
              "near_duplicates": int((table["duplicate_of"] >= 0).sum()), "skipped": len(skipped)}
    if "leak_of" in table:
        counts["leaked_across_splits"] = int((table["leak_of"] >= 0).sum())
    return counts


def _versions() -> dict:
    import importlib.metadata as md
    out = {"selector": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "pandas", "torch", "open_clip_torch", "faiss-cpu", "faiss-gpu-cu12", "umap-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
