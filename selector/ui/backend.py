"""The cached backend every browser session shares (read-only): encoders, pipeline results, thumbnails.

One process-wide registry (`st.cache_resource`) holds the heavy objects: loaded encoders, and finished runs
keyed by (dataset fingerprint, encoder cache key, config key). Runs are computed outside any streamlit cache
function so the engine's progress callback can draw on the page; a per-key lock makes a second session asking
for the same run wait for the first instead of computing it twice. Results also live on disk
(`pipeline.load_or_run`), so a server restart re-opens them in seconds. Nothing here is per user: sliders,
decisions and the current selection live in st.session_state (see state.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import streamlit as st

from selector import pipeline
from selector.encoders import ENCODERS, open_encoder, options_of
from selector.errors import InputError
from selector.files import atomic_write_bytes, cache_problems, default_cache_dir
from selector.progress import Progress
from selector.sources import open_source

MAX_RESULTS = 3          # finished runs kept in memory (a 60k x 512 run is a few hundred MB)
THUMB_PX = 64
UPLOAD_DIR = "uploads"


_CLIP = ENCODERS.get("open_clip").options


@dataclass(frozen=True)
class RunSpec:
    """What the Home page asks for: a data source and its options, an encoder and its options, the settings."""
    source: str = "demo"                   # a selector.sources.SOURCES name
    path: str = ""                         # image folder / manifest / .npz for the file sources
    name: str = "fashion-mnist"            # torchvision dataset name
    split: str = "train"
    root: str = ""                         # local data folder (demo/torchvision) or image root (manifest)
    encoder: str = "demo"                  # a selector.encoders.ENCODERS name
    model: str = _CLIP["model"]
    pretrained: str = _CLIP["pretrained"]
    checkpoint: str = ""
    config: pipeline.Config = pipeline.Config()

    def describe(self) -> str:
        where = {"demo": "built-in demo (Fashion-MNIST train)", "torchvision": f"torchvision {self.name}/{self.split}"}
        return where.get(self.source, f"{self.source}: {self.path}")

    def encoder_options(self) -> dict:
        return options_of(self.encoder, model=self.model, pretrained=self.pretrained, checkpoint=self.checkpoint)


@dataclass(eq=False)
class Run:
    """A finished pipeline run, shared read-only by every session that asks for the same inputs."""
    key: str
    spec: RunSpec
    result: pipeline.Result
    cache_dir: Path
    seconds: float
    cache_warnings: tuple = ()       # caches the run could not write or read: it went on without them
    _derived: dict = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def table(self):
        return self.result.table

    @property
    def fingerprint(self) -> str:
        """The audited dataset's fingerprint (hashing 60k images takes ~0.3 s, so it is computed once)."""
        return self.derived("fingerprint", lambda: self.result.dataset.fingerprint)

    def derived(self, name: str, compute: Callable[[], object]):
        """A value computed once per run on first use (e.g. the coverage space), then shared."""
        with self._lock:
            if name not in self._derived:
                self._derived[name] = compute()
            return self._derived[name]


class _Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.runs: "OrderedDict[str, Run]" = OrderedDict()
        self.encoders: dict = {}
        self.datasets: dict = {}
        self.key_locks: dict[str, threading.Lock] = {}

    def lock_for(self, key: str) -> threading.Lock:
        with self.lock:
            return self.key_locks.setdefault(key, threading.Lock())

    def get_run(self, key: str) -> Optional[Run]:
        with self.lock:
            run = self.runs.get(key)
            if run is not None:
                self.runs.move_to_end(key)
            return run

    def put_run(self, run: Run) -> None:
        with self.lock:
            self.runs[run.key] = run
            self.runs.move_to_end(run.key)
            while len(self.runs) > MAX_RESULTS:
                self.runs.popitem(last=False)


@st.cache_resource(show_spinner=False)
def registry() -> _Registry:
    """The one registry of this server process."""
    return _Registry()


def cache_dir() -> Path:
    """$SELECTOR_CACHE_DIR, else ~/.cache/selector (read on every call so tests can point it elsewhere)."""
    return default_cache_dir()


# ------------------------------------------------------------------------------------------- running
def _open_dataset(spec: RunSpec):
    reg = registry()
    static = spec.source in ("demo", "torchvision")      # files that never change: keep the loaded Dataset
    dkey = json.dumps([spec.source, spec.name, spec.split, spec.root])
    if static:
        with reg.lock:
            hit = reg.datasets.get(dkey)
        if hit is not None:
            return hit
    dataset = open_source(spec.source, path=spec.path or None, name=spec.name, split=spec.split,
                          root=spec.root or None)
    if static:
        with reg.lock:
            reg.datasets[dkey] = dataset
    return dataset


def _open_encoder(spec: RunSpec, progress: Optional[Progress]):
    reg = registry()
    ekey = json.dumps([spec.encoder, spec.model, spec.pretrained, spec.checkpoint, str(cache_dir())])
    with reg.lock_for("encoder:" + ekey):
        with reg.lock:
            hit = reg.encoders.get(ekey)
        if hit is not None:
            return hit
        encoder = open_encoder(spec.encoder, cache_dir=cache_dir(), progress=progress, **spec.encoder_options())
        with reg.lock:
            reg.encoders[ekey] = encoder
        return encoder


def run_pipeline(spec: RunSpec, progress: Optional[Progress] = None) -> Run:
    """Open the source and encoder and run (or re-open) the pipeline; raises InputError/OfflineError."""
    spec.config.validate()
    t0 = time.perf_counter()
    with cache_problems() as problems:
        dataset = _open_dataset(spec)
        encoder = _open_encoder(spec, progress)
        key = pipeline.run_key(dataset, encoder, spec.config)
        reg = registry()
        with reg.lock_for(key):
            run = reg.get_run(key)
            if run is None:
                result = pipeline.load_or_run(dataset, encoder, spec.config, cache_dir=cache_dir(), progress=progress)
                run = Run(key=key, spec=spec, result=result, cache_dir=cache_dir(), seconds=time.perf_counter() - t0,
                          cache_warnings=tuple(problems))
                reg.put_run(run)
    return run


def find_run(key: str) -> Optional[Run]:
    return registry().get_run(key) if key else None


def save_upload(name: str, data: bytes) -> str:
    """Store an uploaded file under the cache dir (content-addressed) and return its path."""
    suffix = Path(name).suffix.lower()
    if suffix not in (".csv", ".parquet", ".npz"):
        raise InputError(f"uploaded file {name!r} must be .csv, .parquet or .npz, got {suffix or 'no suffix'}.")
    path = cache_dir() / UPLOAD_DIR / f"{hashlib.sha1(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        try:
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise InputError(f"the uploaded file cannot be stored in {path.parent} ({exc.strerror or exc}): "
                             "uploads need a writable cache folder with free space. Type the file's path "
                             "instead.") from exc
    return str(path)


# ------------------------------------------------------------------------------------------ derived
def coverage_space(run: Run):
    """The low-dimensional embedding copy + probe used to compare subsets (computed once per run)."""
    from selector.ui.views import coverage_space as compute
    return run.derived("coverage_space", lambda: compute(run.result.F, seed=run.result.config.seed))


def compare_with_random(run: Run, mask: np.ndarray):
    """The Selection page's subset-vs-random table; the random side is computed once per subset size."""
    from selector.ui import views as sv
    labels, table = run.result.dataset.labels, run.table
    n_classes, seed = len(run.result.class_names), run.result.config.seed
    flagged = table["flagged"].to_numpy()
    truth = table["noise_injected"].to_numpy() if "noise_injected" in table else None
    space = coverage_space(run)
    k = int(np.count_nonzero(mask))
    rand = run.derived(("random_stats", k), lambda: sv.subset_stats(
        labels, n_classes, sv.random_mask(len(table), k, seed), flagged=flagged, truth=truth, space=space))
    return sv.compare_with_random(labels, n_classes, mask, flagged=flagged, truth=truth, space=space, seed=seed,
                                  random_stats=rand)


def has_images(run: Run) -> bool:
    return run.derived("has_images", lambda: run.result.dataset.has_images)


def _thumb_png(image, size: int) -> bytes:
    from PIL import Image
    w, h = image.size
    scale = size / max(w, h)
    resample = Image.NEAREST if scale > 1 else Image.BILINEAR
    image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@st.cache_data(max_entries=50_000, show_spinner=False)
def _thumbnail(_dataset, dataset_key: str, row: int, size: int) -> Optional[bytes]:
    try:
        return _thumb_png(_dataset.image(row), size)
    except (InputError, OSError, ValueError):
        return None


def thumbnail(run: Run, row: int, size: int = THUMB_PX) -> Optional[bytes]:
    """PNG bytes of row's image at `size` px on its long side, made once per (dataset, row) and cached;
    None when the dataset has no images or this one cannot be decoded."""
    if not has_images(run):
        return None
    return _thumbnail(run.result.dataset, run.fingerprint, int(row), int(size))


def placeholder_png(size: int = THUMB_PX) -> bytes:
    """A plain grey square for samples without an image (embeddings-only datasets, undecodable files)."""
    return _placeholder(size)


@st.cache_data(show_spinner=False)
def _placeholder(size: int) -> bytes:
    from PIL import Image
    return _thumb_png(Image.new("RGB", (size, size), (200, 200, 200)), size)
