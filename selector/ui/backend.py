"""The cached backend every browser session shares (read-only): encoders, pipeline results, thumbnails.

One process-wide registry (`st.cache_resource`) holds the heavy objects: loaded encoders, and finished runs
keyed by (dataset fingerprint, encoder cache key, config key). Runs are computed outside any streamlit cache
function so the engine's progress callback can draw on the page; a per-key lock makes a second session asking
for the same run wait for the first instead of computing it twice. Results also live on disk
(`pipeline.load_or_run`), so a server restart re-opens them in seconds. Nothing here is per user: sliders
and the current selection live in st.session_state (see state.py); label decisions in the cache folder's
decisions database (selector.decision_store).
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import streamlit as st

from selector import pipeline, results
from selector.encoders import ENCODERS, check_encoder, open_encoder, options_of
from selector.errors import InputError
from selector.files import atomic_write_bytes, cache_problems, default_cache_dir
from selector.lazy import materialize
from selector.progress import Progress
from selector.sources import check_source, open_source
from selector.ui.uploads import UPLOAD_DIR, UPLOAD_MAX_AGE_S, UPLOAD_SUFFIXES, expire_uploads, save_upload  # noqa: F401

log = logging.getLogger(__name__)
MAX_RESULTS = 3          # finished runs kept in memory (a 60k x 512 run is a few hundred MB)
THUMB_PX = 64
WATCH_INTERVAL_S = 0.5   # how often a session waiting for another's run redraws that run's progress
RUNS_DIR = "runs"        # cache_dir/runs/<run key>.json: the RunSpec of every finished run (deep links)


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

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        """The spec `to_json` wrote; ValueError/TypeError/InputError when the text is not one."""
        blob = json.loads(text)
        config = pipeline.Config(**blob.pop("config"))
        return cls(config=config, **blob)


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _computing: dict = field(default_factory=dict, repr=False)     # name -> the lock of its one computation

    @property
    def table(self):
        return self.result.table

    @property
    def fingerprint(self) -> str:
        """The audited dataset's fingerprint (hashing 60k images takes ~0.3 s, so it is computed once)."""
        return self.derived("fingerprint", lambda: self.result.dataset.fingerprint)

    def derived(self, name: str, compute: Callable[[], object]):
        """A value computed once per run on first use (e.g. the coverage space), then shared. Each name is
        computed under its own lock: a session waits only for the value it asks for."""
        with self._lock:
            if name in self._derived:
                return self._derived[name]
            lock = self._computing.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                if name in self._derived:
                    return self._derived[name]
            value = compute()
            with self._lock:
                self._derived[name] = value
            return value


class _Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.runs: "OrderedDict[str, Run]" = OrderedDict()
        self.encoders: dict = {}
        self.datasets: dict = {}
        self.key_locks: dict[str, threading.Lock] = {}
        self.progress: dict[str, tuple] = {}      # run key -> the (stage, done, total) its computing session last saw

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
    """The one registry of this server process (made when the server starts serving: old uploads expire then)."""
    expire_uploads()
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
        encoder = open_encoder(spec.encoder, cache_dir=cache_dir(), progress=progress, source=spec.source,
                               dataset_name=spec.name, **spec.encoder_options())
        with reg.lock:
            reg.encoders[ekey] = encoder
        return encoder


def run_pipeline(spec: RunSpec, progress: Optional[Progress] = None) -> Run:
    """Open the source and encoder and run (or re-open) the pipeline; raises InputError/OfflineError. Every
    setting, path and encoder name is checked before any data is read."""
    spec.config.validate()
    check_source(spec.source, path=spec.path, root=spec.root)
    check_encoder(spec.encoder, spec.source, spec.name, **spec.encoder_options())
    t0 = time.perf_counter()
    with cache_problems() as problems:
        dataset = _open_dataset(spec)
        encoder = _open_encoder(spec, progress)
        key = pipeline.run_key(dataset, encoder, spec.config)
        reg = registry()
        lock = reg.lock_for(key)
        while not lock.acquire(timeout=WATCH_INTERVAL_S):    # another session is computing this run: show its progress
            if progress is not None and key in reg.progress:
                progress(*reg.progress[key])
        try:
            run = reg.get_run(key)
            if run is None:
                def shared(stage, done, total):           # what the sessions waiting for this run see
                    reg.progress[key] = (stage, done, total)
                    if progress is not None:
                        progress(stage, done, total)
                try:
                    result = pipeline.load_or_run(dataset, encoder, spec.config, cache_dir=cache_dir(), progress=shared)
                finally:
                    reg.progress.pop(key, None)
                run = Run(key=key, spec=spec, result=result, cache_dir=cache_dir(), seconds=time.perf_counter() - t0,
                          cache_warnings=tuple(problems))
                reg.put_run(run)
                _remember_spec(key, spec)
                threading.Thread(target=_prefetch, args=(run,), name=f"prefetch-{key[:8]}", daemon=True).start()
        finally:
            lock.release()
    return run


def _prefetch(run: Run) -> None:
    """Compute in the background what the Selection page needs first (the coverage and probe spaces and the
    label codes, about a second at 60k; and altair, which its bar chart imports), then the in-memory images
    the galleries show, while Home shows the run: the pages then wait only for what is left. The two spaces
    are kept beside the run's result, so after the first server this only reads them back."""
    from selector.selection import Selection
    try:
        coverage_space(run)
        probe_space(run)
        label_codes(run, Selection())
        import altair  # noqa: F401 - st.bar_chart's library: 0.4 s to import on the page's first draw
        materialize(run.result.dataset.pixels)       # in-memory images are read on first use: the thumbnails'
    except Exception:  # noqa: BLE001 - the page computes it again and shows any error itself
        log.warning("precomputing what the Selection page and the galleries need failed", exc_info=True)


def _remember_spec(key: str, spec: RunSpec) -> None:
    try:
        atomic_write_bytes(cache_dir() / RUNS_DIR / f"{key}.json", spec.to_json().encode("utf-8"))
    except OSError as exc:          # a read-only cache only costs the deep link
        log.warning("could not record run %s for deep links: %s", key, exc)


def saved_spec(key: str) -> Optional[RunSpec]:
    """The spec of a run this cache has finished before (what a link or a reload names), else None."""
    if not key or not all(c in "0123456789abcdef" for c in key):
        return None
    path = cache_dir() / RUNS_DIR / f"{key}.json"
    try:
        return RunSpec.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, InputError) as exc:
        if path.exists():
            log.warning("ignoring unreadable run record %s: %s", path, exc)
        return None


def find_run(key: str) -> Optional[Run]:
    return registry().get_run(key) if key else None


# ------------------------------------------------------------------------------------------ derived
def _kept(run: Run, name: str, kind, compute: Callable, params: dict):
    """run.derived(name) of compute(F, **params), also kept beside the run's cached result (a dataclass of
    arrays: results.save_view), so that the next server reads it back in milliseconds instead of computing it
    again while the first page draws (1.8-3 s at 60k rows on two busy cores)."""
    def load_or_compute():
        folder = results.folder(run.cache_dir, run.key)
        view = results.load_view(folder, name, kind, params)
        if view is None:
            view = compute(run.result.F, **params)
            results.save_view(folder, name, view, params)
        return view
    return run.derived(name, load_or_compute)


def coverage_space(run: Run):
    """The low-dimensional embedding copy + probe used to compare subsets (computed once per run, and kept)."""
    from selector.ui import subsets as sv
    params = dict(dims=32, n_probe=500, seed=run.result.config.seed, pool=sv.COVERAGE_POOL, nearest=sv.NEAREST_KEPT)
    return _kept(run, "coverage_space", sv.CoverageSpace, sv.coverage_space, params)


def probe_space(run: Run):
    """The linear probe's features and held-out rows (computed once per run, and kept)."""
    from selector.ui import subsets as sv
    return _kept(run, "probe_space", sv.ProbeSpace, sv.probe_space,
                 dict(dims=64, n_held_out=5000, seed=run.result.config.seed))


def compare_with_random(run: Run, mask: np.ndarray):
    """The Selection page's subset-vs-random table; the random side is computed once per subset size."""
    from selector.ui import subsets as sv
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


def label_codes(run: Run, selection) -> np.ndarray:
    """(n,) int64 class index (class_names order) of each row's label after the selection's decisions and
    corrections (views.corrected_codes); the given and suggested codes are computed once per run, so a slider
    move does no string work."""
    from selector.ui.views import class_codes, corrected_codes
    names = run.result.class_names
    given = run.derived("given_codes", lambda: class_codes(run.table["label"], names))
    suggested = run.derived("suggested_codes", lambda: class_codes(run.table["suggested_label"], names))
    return corrected_codes(given, run.table, selection, names, suggested=suggested)


def probe_comparison(run: Run, selection, mask: np.ndarray) -> tuple[list, float]:
    """([(metric, subset, random subset)], seconds): linear-probe accuracy of the subset and of the same-size
    random subset, both scored on the same held-out rows; cached per selection (the random side per size and
    decisions), so the seconds are those of the first computation."""
    from selector.ui import subsets as sv
    from selector.ui.views import class_codes
    table, names, seed = run.table, run.result.class_names, run.result.config.seed
    k = int(np.count_nonzero(mask))

    def compute():
        t0 = time.perf_counter()
        space = probe_space(run)
        reviewed = label_codes(run, selection.replace(correct_flagged=False))
        targets = [("given labels, corrected where a suggestion was accepted", reviewed)]
        if "original_label" in table:
            truth = run.derived("true_codes", lambda: class_codes(table["original_label"], names))
            targets.append(("true labels (known: the noise was injected)", truth))
        train = label_codes(run, selection) if selection.correct_flagged else reviewed
        tests = [test for _, test in targets]
        ours = sv.probe_accuracy(space, mask, train, tests, len(names))      # one probe, scored per target
        theirs = run.derived(("probe_random", k, selection.decisions, len(tests)), lambda: sv.probe_accuracy(
            space, sv.random_mask(len(table), k, seed), reviewed, tests, len(names)))
        rows = [(f"linear-probe accuracy on {len(space.held_out):,} held-out rows vs {what}", a, b)
                for (what, _), a, b in zip(targets, ours, theirs)]
        return rows, time.perf_counter() - t0
    return run.derived(("probe", selection), compute)


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
