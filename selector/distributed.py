"""Embedding on a Ray cluster: `embed_on_ray(dataset, encoder_name, encoder_options, cache_dir=...)`; and
`search_on_ray(index, queries, k)`, a kNN query set searched by Ray tasks against one shared faiss index.

The dataset's rows become a Ray Dataset. Ray tasks decode and preprocess the images; `map_batches` feeds
the batches to a pool of actors that each hold one model (one per GPU, or one per CPU worker); this process
writes the embeddings into the same `EmbeddingCache` that `selector.embed.embed_dataset` reads, each chunk
as soon as all its rows are in. Only the chunks missing from the cache are submitted, so a stopped job
resumes chunk by chunk; within a job Ray restarts killed actors and retries killed tasks. Ray is an optional
extra, imported only when a function here runs.

What travels: the Dataset is put in Ray's object store once and every decoding task reads its own rows from
it. The model never travels: every actor builds the encoder from its registry name and options
(`open_encoder`) on its own device. A probe task does the same first and reports the encoder's name, its
cache key (which depends on the device, so only a worker can tell it), its preprocessing and the
class-prompt embeddings.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

from selector.embed import EmbeddingCache, check_embed_request
from selector.encoders import encoder_options as resolve_options
from selector.errors import InputError, OfflineError, describe_rows
from selector.files import default_cache_dir
from selector.progress import Progress, ensure
from selector.runtime import import_faiss
from selector.validate import check_int

log = logging.getLogger(__name__)

INSTALL = "pip install 'selector[ray]' (or: pip install 'ray[data]>=2.9')"


def import_ray():
    """The ray module with Ray Data; InputError saying how to install it when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise InputError(f"Embedding on Ray needs Ray Data, which is not installed ({e}). Install it with: "
                         f"{INSTALL}.") from e
    return ray


class CachedEncoder:
    """The encoder that embedded a dataset on Ray, as this process sees it: its name and cache key, with every
    embedding already in the cache. Give it to `run` / `load_or_run` / `embed_dataset`, which then read the
    cache; asked to compute anything, it says what is missing and how to fill it."""
    cacheable = True

    def __init__(self, name: str, cache_key: str, folder):
        self.name, self.cache_key, self.folder = name, cache_key, folder

    def _missing(self, what: str):
        return InputError(f"{what} are not in the embedding cache the Ray job wrote ({self.folder}); run the Ray "
                          "embedding again (CLI: --ray) to fill it: only what is missing is computed.")

    def encode_images(self, dataset, rows, *, batch_size: int = 256, progress: Progress | None = None):
        raise self._missing(f"Image embeddings of rows {describe_rows(list(rows))} of {dataset.name!r}")

    def encode_classes(self, dataset):
        raise self._missing(f"The class-prompt embeddings of {dataset.name!r}")


def _probe(dataset, encoder_name: str, options: dict, cache_dir) -> dict:
    """Ray task: build the encoder as the model actors will and describe it."""
    from selector.encoders import ImageTower, open_encoder
    encoder = open_encoder(encoder_name, cache_dir=cache_dir, **options)
    info = {"name": encoder.name, "cache_key": encoder.cache_key, "cacheable": getattr(encoder, "cacheable", True),
            "splits": isinstance(encoder, ImageTower)}
    if info["cacheable"] and info["splits"]:
        info.update(preprocess=encoder.preprocess, text=np.asarray(encoder.encode_classes(dataset), np.float32))
    return info


def _decode(batch: dict, *, dataset, preprocess) -> dict:
    """Ray task: dataset rows -> their images, decoded and preprocessed as the encoder does it."""
    import ray
    from selector.encoders.base import transform_rows
    rows = np.asarray(batch["row"], dtype=np.int64)
    pixels, ok, errors = transform_rows(ray.get(dataset), rows, preprocess)
    return {"row": rows, "pixels": pixels, "ok": ok, "error": np.asarray(errors, dtype=str)}


class _ModelActor:
    """Ray actor: one model on this worker's device; preprocessed batches -> embeddings (NaN if undecodable)."""

    def __init__(self, encoder_name: str, options: dict, cache_dir, cache_key: str):
        import socket
        from selector.encoders import open_encoder
        self.encoder = open_encoder(encoder_name, cache_dir=cache_dir, **options)
        if self.encoder.cache_key != cache_key:
            raise InputError(f"The encoder on worker {socket.gethostname()} has cache key {self.encoder.cache_key!r}"
                             f", the first worker's was {cache_key!r}: the workers differ (GPU type or software "
                             "versions). Run on workers of one kind, e.g. through gpus_per_worker or a node label.")

    def __call__(self, batch: dict) -> dict:
        import torch
        pixels = np.ascontiguousarray(batch["pixels"], dtype=np.float32)
        with warnings.catch_warnings():   # a read-only view of the object store: the model only reads it
            warnings.simplefilter("ignore", UserWarning)
            x = torch.from_numpy(pixels)
        emb = np.array(self.encoder.embed_batch(x), dtype=np.float32)
        emb[~np.asarray(batch["ok"], dtype=bool)] = np.nan
        return {"row": batch["row"], "embedding": emb, "error": batch["error"]}


class _ChunkWriter:
    """Collects embedded rows as they arrive, in any order and possibly twice (retried tasks), and caches each
    chunk once all its rows are in."""

    def __init__(self, cache: EmbeddingCache, d: int, chunks: list[int]):
        self.cache, self.d = cache, d
        self.pending = {c: None for c in chunks}   # chunk -> (embeddings, filled mask), made on its first row

    def add(self, rows: np.ndarray, emb: np.ndarray) -> int:
        """Take embedded rows; returns how many were new."""
        new = 0
        for c in np.unique(rows // self.cache.chunk_size).tolist():
            if c not in self.pending:
                continue   # already written (a retried task sent it again)
            a, b = self.cache.bounds[c]
            if self.pending[c] is None:
                self.pending[c] = (np.full((b - a, self.d), np.nan, np.float32), np.zeros(b - a, bool))
            part, filled = self.pending[c]
            take = (rows >= a) & (rows < b)
            new += int((~filled[rows[take] - a]).sum())
            part[rows[take] - a], filled[rows[take] - a] = emb[take], True
            if filled.all():
                self.cache.save_chunk(c, part, self.d)
                del self.pending[c]
        return new


def _raise_user_error(ray, exc: BaseException) -> None:
    """Raise the InputError / OfflineError that a Ray task or actor raised, when it is in exc's chain, as itself
    (its message, without Ray's wrapping); else return."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (InputError, OfflineError)) and not isinstance(exc, ray.exceptions.RayError):
            raise exc from None
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__


def _connect(ray, address):
    """Connect to (or start) Ray unless this process already is; True when this call connected."""
    if ray.is_initialized():
        return False
    try:
        if address in (None, "local"):
            ray.init(address=address, include_dashboard=False)
        else:
            ray.init(address=address)
    except ImportError as e:   # a ray:// address needs Ray Client
        raise InputError(f"Connecting to {address} needs Ray Client ({e}): pip install 'ray[client]', or run "
                         "the command on the cluster's head node with --ray auto.") from e
    except ConnectionError as e:
        raise InputError(f"Could not connect to a Ray cluster at {address!r}: {e}. Start one with `ray start "
                         "--head` (then use 'auto'), give its address, or use 'local' for a Ray on this "
                         "machine only.") from e
    return True


def _workers(ray, num_workers, gpus_per_worker) -> tuple[int, float]:
    """(model actors, GPUs per actor), the defaults read from the cluster's resources."""
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus else 0.0
    if isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float)) or gpus_per_worker < 0:
        raise InputError(f"gpus_per_worker must be a number >= 0 (0 = models on CPUs), got {gpus_per_worker!r}.")
    if gpus_per_worker > gpus:
        raise InputError(f"Each model worker asks for {gpus_per_worker:g} GPU(s) but the Ray cluster has "
                         f"{gpus:g}; add GPU nodes, or use gpus_per_worker=0 to run the models on CPUs.")
    if num_workers is None and gpus_per_worker:
        num_workers = max(1, int(gpus // gpus_per_worker))
    elif num_workers is None:   # a model's forward on a CPU costs far more than decoding its image
        cpus = int(resources.get("CPU", 2))
        num_workers = max(1, cpus - max(1, cpus // 8))
    return check_int(num_workers, "num_workers", minimum=1), float(gpus_per_worker)


def _device_env(gpus_per_worker: float) -> dict | None:
    """The runtime_env of probe and model actors: without GPUs asked for, none visible (Ray leaves a worker
    that asked for none every GPU of its node), so that models on CPUs are on CPUs."""
    return None if gpus_per_worker else {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}


def embed_on_ray(dataset, encoder_name: str, encoder_options: dict | None = None, *, cache_dir=None,
                 address: str | None = None, num_workers: int | None = None, gpus_per_worker: float | None = None,
                 batch_size: int = 256, chunk_size: int = 4096, progress: Progress | None = None) -> CachedEncoder:
    """Embed dataset's images on Ray into the embedding cache under cache_dir (default `default_cache_dir()`),
    the same chunks `embed_dataset` would write; the chunks already cached are not submitted.

    address: None = the Ray this process is connected to, else $RAY_ADDRESS, else a Ray started here for the
    call; "auto" = the cluster this machine belongs to; "ray://host:10001" = a remote cluster (Ray Client);
    "local" = a new Ray on this machine. The images must be at the same paths on every worker.
    gpus_per_worker: GPUs per model (None: 1 when the cluster has GPUs, else 0: models on CPUs).
    num_workers: models (None: the cluster's GPUs / gpus_per_worker; without GPUs 7 of every 8 CPUs, and at
    least one CPU is left to decoding).
    Returns the CachedEncoder to pass to `run` / `load_or_run`, which then compute no embedding.
    """
    progress = ensure(progress)
    n, batch_size, chunk_size = check_embed_request(dataset, batch_size, chunk_size)
    options = resolve_options(encoder_name, **(encoder_options or {}))
    cache_dir = str(default_cache_dir() if cache_dir is None else cache_dir)
    ray = import_ray()
    connected = _connect(ray, address)
    try:
        num_workers, gpus_per_worker = _workers(ray, num_workers, gpus_per_worker)
        ref = ray.put(dataset)
        progress("loading the encoder on Ray", 0, 1)
        probe = ray.remote(num_gpus=gpus_per_worker, runtime_env=_device_env(gpus_per_worker))(_probe)
        info = _get(ray, probe.remote(ref, encoder_name, options, cache_dir))
        progress("loading the encoder on Ray", 1, 1)
        if not info["cacheable"] or not info["splits"]:
            why = ("computes nothing (its embeddings come with the dataset)" if not info["cacheable"] else
                   "does not split decoding (preprocess) from its model (embed_batch)")
            raise InputError(f"Encoder {info['name']!r} {why}; embed without Ray.")
        cache = EmbeddingCache(cache_dir, dataset, encoder_name=info["name"], cache_key=info["cache_key"],
                               chunk_size=chunk_size)
        if not cache.writable:
            raise InputError(f"The embedding cache {cache.folder} cannot be written, and embedding on Ray hands its "
                             "results over through it. Choose a writable cache folder (--cache-dir) with free space.")
        if cache.load_text() is None:
            progress("embedding class prompts", 0, 1)
            cache.save_text(info["text"])
            progress("embedding class prompts", 1, 1)
        d = cache.d or int(info["text"].shape[1])
        missing = cache.load_chunks(d)
        done = n - cache.rows_in(missing)
        progress("embedding images", done, n)
        if missing:
            log.info("Embedding %d of %d images on Ray with %d model worker(s) (%d chunks cached)", n - done, n,
                     num_workers, len(cache.bounds) - len(missing))
            _run_job(ray, ref, info, cache, d, missing, progress, done,
                     actor_args=(encoder_name, options, cache_dir, info["cache_key"]),
                     num_workers=num_workers, gpus_per_worker=gpus_per_worker, batch_size=batch_size)
        cache.set_d(d)
        return CachedEncoder(info["name"], info["cache_key"], cache.folder)
    finally:
        if connected:
            ray.shutdown()


def _get(ray, ref):
    """ray.get, with a worker's InputError / OfflineError raised as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        _raise_user_error(ray, e)
        raise


def _run_job(ray, ref, info, cache, d, missing, progress, done, *, actor_args, num_workers, gpus_per_worker,
             batch_size):
    """The Ray Data job over the rows of the missing chunks; each chunk is cached as soon as it is complete."""
    import pandas as pd
    blocks = [pd.DataFrame({"row": np.arange(s, min(s + batch_size, b), dtype=np.int64)})
              for a, b in (cache.bounds[c] for c in missing) for s in range(a, b, batch_size)]
    context = ray.data.DataContext.get_current()
    bars, context.enable_progress_bars = context.enable_progress_bars, False   # progress() reports instead
    ds = (ray.data.from_pandas(blocks)
          .map_batches(_decode, fn_kwargs={"dataset": ref, "preprocess": info["preprocess"]},
                       batch_size=batch_size, batch_format="numpy")
          .map_batches(_ModelActor, fn_constructor_args=actor_args, batch_size=batch_size, batch_format="numpy",
                       compute=ray.data.ActorPoolStrategy(size=num_workers), num_gpus=gpus_per_worker or None,
                       runtime_env=_device_env(gpus_per_worker)))
    writer, bad = _ChunkWriter(cache, d, missing), []
    batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
    try:
        for batch in batches:
            rows = np.asarray(batch["row"], dtype=np.int64)
            done += writer.add(rows, np.asarray(batch["embedding"], dtype=np.float32))
            bad += [str(e) for e in batch["error"] if e]
            progress("embedding images", done, cache.n)
    except ray.exceptions.RayError as e:
        _raise_user_error(ray, e)
        raise
    finally:
        getattr(batches, "close", lambda: None)()   # stops the job when this loop is left early
        context.enable_progress_bars = bars
    if bad:
        log.warning("%d image(s) could not be decoded and get NaN embeddings: %s", len(bad), describe_rows(bad, 3))
    if writer.pending:
        raise RuntimeError(f"The Ray job ended with chunks {describe_rows(sorted(writer.pending))} incomplete; run "
                           "it again: only the missing chunks are submitted.")


def _search_block(index_bytes: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ray task: one block of queries against the index shared through the object store."""
    faiss = import_faiss()
    return faiss.deserialize_index(index_bytes).search(np.ascontiguousarray(queries, dtype=np.float32), k)


def search_on_ray(index, queries, k: int, *, tasks: int | None = None, address: str | None = None):
    """(D, I) = index.search(queries, k), the queries split into `tasks` blocks (default: one per CPU of the
    cluster) that Ray tasks search against one copy of the index, serialized once into the object store (each
    task deserializes it: a CPU index, small enough to hold once per CPU). address: as for embed_on_ray."""
    faiss = import_faiss()
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != index.d:
        raise InputError(f"queries must be (m, {index.d}) to search this index, got {queries.shape}.")
    k = check_int(k, "k", minimum=1)
    ray = import_ray()
    connected = _connect(ray, address)
    try:
        tasks = check_int(tasks or int(ray.cluster_resources().get("CPU", 1)), "tasks", minimum=1)
        shared = ray.put(faiss.serialize_index(index))
        search = ray.remote(_search_block)
        parts = _get(ray, [search.remote(shared, block, k) for block in np.array_split(queries, tasks) if len(block)])
    finally:
        if connected:
            ray.shutdown()
    if not parts:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    return np.concatenate([D for D, _ in parts]), np.concatenate([I for _, I in parts])
