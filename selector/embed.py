"""Encoders behind one small protocol, and the on-disk embedding cache.

Encoders: ``open_clip`` (a model name + pretrained tag, or a local checkpoint file), ``demo`` (the offline
demo encoder of ``selector.demo``) and ``precomputed`` (embeddings shipped with the dataset).

``embed_dataset`` caches image embeddings in chunks under ``cache_dir/embeddings/<key>/``: every chunk is
written atomically with its sha256 in the file name, so a killed run resumes from the chunks already on
disk and a corrupted chunk is detected, logged and recomputed - never used.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import re
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from selector.data import atomic_write_bytes, host_reachable
from selector.errors import InputError, OfflineError, describe_rows
from selector.progress import Progress, ensure

log = logging.getLogger(__name__)

PROMPT_TEMPLATE = "A photo of a {}."
CACHE_VERSION = 1
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@runtime_checkable
class Encoder(Protocol):
    """Two towers: images of a Dataset -> (n,d) float32, prompts -> (C,d) float32."""
    name: str        # shown in the UI
    cache_key: str   # changes whenever weights or preprocessing change

    def encode_images(self, dataset, rows: np.ndarray, *, batch_size: int) -> np.ndarray: ...

    def encode_texts(self, prompts: list[str]) -> np.ndarray: ...


def class_prompts(class_names, template: str = PROMPT_TEMPLATE) -> list[str]:
    """One prompt per class: "T-shirt/top" -> "A photo of a T-shirt or top.", "ankle_boot" -> "... ankle boot."."""
    if isinstance(class_names, str) or not hasattr(class_names, "__iter__"):
        raise InputError(f"class_names must be a list of class names, got {type(class_names).__name__}.")
    if "{}" not in template:
        raise InputError(f"template must contain '{{}}' where the class name goes, got {template!r}.")
    prompts, empty = [], []
    for k, c in enumerate(class_names):
        clean = re.sub(r"\s*/\s*", " or ", str(c).replace("_", " "))
        clean = re.sub(r"\s+", " ", clean).strip()
        if not clean:
            empty.append(k)
        prompts.append(template.format(clean))
    if empty:
        raise InputError(f"class names at positions {describe_rows(empty)} are empty; give every class a name.")
    return prompts


# ------------------------------------------------------------------------------------ image batches
class _ImageRows:
    """Map-style dataset for torch's DataLoader: item k -> (tensor, ok, message) for dataset row rows[k].
    An undecodable image gives a zero tensor, ok=False and the error text (never an exception)."""

    def __init__(self, dataset, rows: np.ndarray, transform):
        self.dataset, self.rows, self.transform = dataset, np.asarray(rows, dtype=np.int64), transform
        self._blank = None

    def __len__(self) -> int:
        return len(self.rows)

    def _placeholder(self):
        if self._blank is None:
            from PIL import Image
            self._blank = self.transform(Image.new("RGB", (32, 32))) * 0
        return self._blank

    def __getitem__(self, k: int):
        i = int(self.rows[k])
        try:
            return self.transform(self.dataset.image(i)), True, ""
        except Exception as e:  # noqa: BLE001 - any decode failure becomes a NaN row, reported by the caller
            return self._placeholder(), False, f"row {i}: {e}"


def _worker_init(_):
    import torch
    torch.set_num_threads(1)  # decoding workers must not fight the model for cores


def encode_image_rows(dataset, rows, transform, forward, *, batch_size: int, num_workers: int = 0,
                      pin_memory: bool = False, progress: Progress | None = None,
                      stage: str = "embedding images") -> np.ndarray:
    """Decode dataset rows with `transform` (PIL -> tensor) in a DataLoader and run `forward` (tensor batch
    -> (b,d) array) on them. Returns (len(rows), d) float32; undecodable images give NaN rows (logged)."""
    import torch
    progress = ensure(progress)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        raise InputError("rows is empty; pass at least one row to embed.")
    workers = num_workers if len(rows) > batch_size else 0  # worker start-up costs more than a small job
    loader = torch.utils.data.DataLoader(
        _ImageRows(dataset, rows, transform), batch_size=batch_size, shuffle=False, num_workers=workers,
        pin_memory=pin_memory, worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None)
    out, bad, done = None, [], 0
    for x, ok, msg in loader:
        emb = np.asarray(forward(x), dtype=np.float32)
        if out is None:
            out = np.empty((len(rows), emb.shape[1]), dtype=np.float32)
        ok = ok.numpy().astype(bool)
        emb[~ok] = np.nan
        bad += [m for m, good in zip(msg, ok) if not good]
        out[done:done + len(emb)] = emb
        done += len(emb)
        progress(stage, done, len(rows))
    if bad:
        log.warning("%d image(s) could not be decoded and get NaN embeddings: %s", len(bad), describe_rows(bad, 3))
    return out


# ---------------------------------------------------------------------------------------- open_clip
@contextmanager
def _hf_offline(offline: bool):
    """Force the Hugging Face hub into offline mode (env + already-imported constants) for a block."""
    if not offline:
        yield
        return
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        import huggingface_hub.constants as hc
        saved_const = hc.HF_HUB_OFFLINE
        hc.HF_HUB_OFFLINE = True
    except ImportError:
        hc = None
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if hc is not None:
            hc.HF_HUB_OFFLINE = saved_const


def _file_tag(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def _cached_weights(cfg: dict, cache_dir) -> str | None:
    """Path of the weights for an open_clip pretrained config when they are already on disk, else None."""
    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return cfg["file"]
    if cfg.get("hf_hub"):
        try:
            from huggingface_hub import try_to_load_from_cache
            from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
        except ImportError:
            return None
        repo, filename = os.path.split(cfg["hf_hub"])  # 'org/repo/' (default file) or 'org/repo/file.bin'
        filename = filename or HF_WEIGHTS_NAME
        names = [filename]
        if filename == HF_WEIGHTS_NAME:
            names.insert(0, HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            try:
                hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            except Exception:  # noqa: BLE001 - a malformed cache is just "not cached"
                hit = None
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    if cfg.get("url"):
        path = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(cfg["url"])
        if path.is_file():
            return str(path)
    return None


def _weights_host(cfg: dict) -> tuple[str, int]:
    if cfg.get("hf_hub"):
        url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    else:
        url = cfg.get("url", "https://huggingface.co")
    u = urllib.parse.urlsplit(url)
    return u.hostname or "huggingface.co", u.port or (80 if u.scheme == "http" else 443)


def clip_available(model: str = "ViT-B-32", pretrained: str = "laion2b_s34b_b79k", *, cache_dir=None) -> bool:
    """True when open_clip weights for (model, pretrained) are on disk or their host answers within seconds."""
    import open_clip
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        return False
    if _cached_weights(cfg, cache_dir):
        return True
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    return host_reachable(*_weights_host(cfg))


class OpenCLIPEncoder:
    """A frozen open_clip model. Weights: `pretrained` tag (from the local cache, else downloaded), a local
    `checkpoint` file, or `pretrained=None` for random init (tests). Raw (unnormalised) tower outputs."""

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = "laion2b_s34b_b79k", *,
                 checkpoint=None, device: str = "auto", precision: str = "auto", num_workers: int = 2,
                 cache_dir=None):
        import open_clip
        import torch
        model = str(model)
        if model not in open_clip.list_models() and not model.startswith(("local-dir:", "hf-hub:")):
            raise InputError(f"Unknown open_clip model {model!r}. Valid names: {', '.join(open_clip.list_models())}.")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise InputError(f"num_workers must be an integer >= 0, got {num_workers!r}.")
        self.device = self._device(device)
        self.precision = self._precision(precision, self.device)
        self.num_workers = num_workers
        self.model_name = model
        self.cacheable = True
        kwargs, offline, weights = {"cache_dir": cache_dir}, False, None
        if pretrained and checkpoint is None and os.path.isfile(os.path.expanduser(str(pretrained))):
            checkpoint, pretrained = pretrained, None  # open_clip also accepts a weights file as `pretrained`
        schema = model.split(":", 1)[0] if model.startswith(("local-dir:", "hf-hub:")) else None
        pretrained = None if schema else pretrained  # open_clip ignores `pretrained` for these schemas
        pretrained_cfg = open_clip.get_pretrained_cfg(model, pretrained) if pretrained else {}
        if schema == "local-dir":
            folder = Path(model.split(":", 1)[1]).expanduser()
            if not (folder / "open_clip_config.json").is_file():
                raise InputError(f"{folder} has no open_clip_config.json; 'local-dir:' needs a folder holding "
                                 "open_clip_config.json and the weights file.")
            files = sorted(p for p in folder.iterdir() if p.is_file())
            weights, label, offline = "local-dir " + ";".join(_file_tag(p) for p in files), model, True
        elif schema == "hf-hub":
            host, port = _weights_host({"hf_hub": model})
            offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or not host_reachable(host, port)
            weights, label = model, model  # offline: only the local Hugging Face cache is tried
        elif checkpoint is not None:
            path = Path(checkpoint).expanduser()
            if not path.is_file():
                raise InputError(f"Checkpoint file {path} does not exist; pass the path of a local "
                                 f"{'/'.join(CHECKPOINT_SUFFIXES)} file holding weights for {model}.")
            if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
                raise InputError(f"Checkpoint {path.name} should be one of {', '.join(CHECKPOINT_SUFFIXES)}.")
            kwargs["pretrained"], weights, offline = str(path), f"checkpoint {_file_tag(path)}", True
            label = f"checkpoint {path.name}"
        elif pretrained:
            if not pretrained_cfg:
                tags = open_clip.list_pretrained_tags_by_model(model)
                raise InputError(f"Unknown pretrained tag {pretrained!r} for open_clip model {model!r}. Valid tags: "
                                 f"{', '.join(tags) or '(none: this model has no released weights)'}; or pass "
                                 "checkpoint=<local weights file>, or pretrained=None for random weights.")
            local = _cached_weights(pretrained_cfg, cache_dir)
            if local:
                kwargs["pretrained"], offline = local, True  # load the cached file directly: no network at all
            else:
                host, port = _weights_host(pretrained_cfg)
                if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or not host_reachable(host, port):
                    raise OfflineError(self._offline_message(model, pretrained, pretrained_cfg, host, cache_dir))
                kwargs["pretrained"] = pretrained
            weights, label = f"tag {pretrained}", pretrained
        else:
            weights, label, offline = "random-init-seed0", "random init, no pretrained weights", True
        if pretrained_cfg:  # the tag's own preprocessing (mean/std/...), also when loading its file directly
            kwargs["force_preprocess_cfg"] = {k: pretrained_cfg[k] for k in
                                              ("mean", "std", "interpolation", "resize_mode") if k in pretrained_cfg}
        try:
            with _hf_offline(offline), torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # random-init models are reproducible, so their cache key stays valid
                net, _, preprocess = open_clip.create_model_and_transforms(model, device=self.device, **kwargs)
                self.tokenizer = open_clip.get_tokenizer(model)
        except (InputError, OfflineError):
            raise
        except Exception as e:  # noqa: BLE001 - translate open_clip's many failure types into actionable ones
            if checkpoint is not None:
                raise InputError(f"Checkpoint {checkpoint} could not be loaded into open_clip model {model!r}: {e}. "
                                 "Pass the model name the checkpoint was trained with.") from e
            raise OfflineError(f"Could not load open_clip {model} ({label}): {e}. "
                               + self._fixes(model, pretrained, pretrained_cfg)) from e
        self.model = net.eval()
        self.preprocess = preprocess
        self.name = f"open_clip {model} ({label})"
        pcfg = getattr(net.visual, "preprocess_cfg", None) or {}
        prep = hashlib.sha1((json.dumps(pcfg, sort_keys=True, default=str) + repr(preprocess)).encode())
        self.cache_key = "|".join(["open_clip", model, weights, f"preprocess {prep.hexdigest()[:12]}",
                                   self.device.type, self.precision, f"v{CACHE_VERSION}"])

    @staticmethod
    def _device(device):
        import torch
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise InputError(f"device must be 'auto', 'cpu' or 'cuda[:k]', got {device!r}.") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device='cuda' was asked for but no CUDA GPU is available; use device='auto' or 'cpu'.")
        return dev

    @staticmethod
    def _precision(precision, device) -> str:
        import torch
        if precision not in ("auto", "fp32", "fp16", "bf16"):
            raise InputError(f"precision must be one of auto, fp32, fp16, bf16; got {precision!r}.")
        if device.type != "cuda":
            if precision in ("fp16", "bf16"):
                log.warning("precision %s needs a GPU; using fp32 on %s", precision, device)
            return "fp32"
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return precision

    @staticmethod
    def _fixes(model, tag, cfg) -> str:
        where = ""
        if cfg.get("hf_hub"):
            where = f" (e.g. the open_clip weights file from https://huggingface.co/{cfg['hf_hub'].rstrip('/')})"
        elif cfg.get("url"):
            where = f" (e.g. {cfg['url']})"
        return ("To provide weights: (1) pass checkpoint=<path to a local .pt/.bin/.safetensors file>" + where
                + f"; (2) or pre-populate the Hugging Face cache on a machine with network (run "
                f"`python -c \"import open_clip; open_clip.create_model('{model}', pretrained='{tag}')\"` and copy "
                "~/.cache/huggingface, or point HF_HOME at a copy); (3) or use the offline demo encoder "
                "(encoder 'demo'), which needs no download.")

    def _offline_message(self, model, tag, cfg, host, cache_dir) -> str:
        return (f"open_clip weights for {model} ({tag}) are not in the local cache "
                f"({cache_dir or 'default Hugging Face cache'}) and {host} cannot be reached (offline?). "
                + self._fixes(model, tag, cfg))

    def _autocast(self):
        import torch
        if self.device.type == "cuda" and self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            return torch.autocast(device_type="cuda", dtype=dtype)
        return torch.autocast(device_type="cpu", enabled=False)

    def encode_images(self, dataset, rows, *, batch_size: int = 256, progress: Progress | None = None) -> np.ndarray:
        """(len(rows), d) float32 raw image embeddings; NaN rows for undecodable images."""
        import torch

        def forward(x):
            with torch.inference_mode(), self._autocast():
                return self.model.encode_image(x.to(self.device, non_blocking=True)).float().cpu().numpy()
        return encode_image_rows(dataset, rows, self.preprocess, forward, batch_size=_check_batch(batch_size),
                                 num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                                 progress=progress)

    def encode_texts(self, prompts: list[str]) -> np.ndarray:
        """(len(prompts), d) float32 raw text embeddings."""
        import torch
        prompts = _check_prompts(prompts)
        out = []
        with torch.inference_mode(), self._autocast():
            for s in range(0, len(prompts), 256):
                tokens = self.tokenizer(prompts[s:s + 256]).to(self.device)
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def _check_batch(batch_size) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str) or not prompts:
        raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}.")
    return [str(p) for p in prompts]


# -------------------------------------------------------------------------------------- precomputed
class PrecomputedEncoder:
    """Returns the embeddings that came with the dataset (``load_embeddings``); nothing is computed or cached."""
    name = "precomputed embeddings (from the dataset file)"
    cache_key = "precomputed"
    cacheable = False

    def __init__(self, dataset=None):
        self.dataset = dataset

    def encode_images(self, dataset, rows, *, batch_size: int = 256) -> np.ndarray:
        if dataset.embeddings is None:
            raise InputError(f"Dataset {dataset.name!r} has no precomputed image embeddings; load an .npz with "
                             "image_embeddings (N,d), or choose the open_clip or demo encoder.")
        return np.asarray(dataset.embeddings[np.asarray(rows, dtype=np.int64)], dtype=np.float32)

    def text_embeddings_for(self, dataset) -> np.ndarray:
        T = dataset.text_embeddings
        if T is None:
            raise InputError(
                f"Dataset {dataset.name!r} has image embeddings but no text_embeddings (one class-prompt embedding "
                f"per class, ({len(dataset.class_names)}, d)). Add a text_embeddings array to the .npz, made by the "
                "same model from class_prompts(class_names), or embed the images with the open_clip/demo encoder.")
        T = np.asarray(T, dtype=np.float32)
        if T.shape[0] != len(dataset.class_names):
            raise InputError(f"text_embeddings has {T.shape[0]} rows but the dataset has "
                             f"{len(dataset.class_names)} classes; give one row per class, in class_names order.")
        return T

    def encode_texts(self, prompts: list[str]) -> np.ndarray:
        if self.dataset is None:
            raise InputError("PrecomputedEncoder.encode_texts needs the dataset: build it as "
                             "PrecomputedEncoder(dataset) or use embed_dataset(dataset, encoder, ...).")
        T = self.text_embeddings_for(self.dataset)
        if len(_check_prompts(prompts)) != len(T):
            raise InputError(f"got {len(prompts)} prompts for {len(T)} precomputed class embeddings.")
        return T


# ----------------------------------------------------------------------------------------- registry
def _make_demo(**kw):
    from selector.demo import train_demo_encoder
    return train_demo_encoder(**kw)


_ENCODERS = {"open_clip": OpenCLIPEncoder, "demo": _make_demo, "precomputed": PrecomputedEncoder}


def list_encoders() -> list[str]:
    return list(_ENCODERS)


def make_encoder(kind: str, **kw) -> Encoder:
    """An encoder by registry name; `demo` needs cache_dir=... (trains once, then loads)."""
    if kind not in _ENCODERS:
        raise InputError(f"Unknown encoder {kind!r}; choose one of {', '.join(_ENCODERS)}.")
    return _ENCODERS[kind](**kw)


def __getattr__(name):  # DemoEncoder lives in selector.demo; imported lazily to keep `import selector.embed` light
    if name == "DemoEncoder":
        from selector.demo import DemoEncoder
        return DemoEncoder
    raise AttributeError(name)


# ------------------------------------------------------------------------------------------ caching
_CHUNK_RE = re.compile(r"^chunk_(\d{6})_([0-9a-f]{16})\.npy$")
_TEXT_RE = re.compile(r"^text_([0-9a-f]{16})_([0-9a-f]{16})\.npy$")


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _save_checked(folder: Path, stem: str, arr: np.ndarray) -> Path:
    """Write arr as folder/<stem>_<sha256[:16]>.npy atomically; drop older versions of the same stem."""
    data = _npy_bytes(np.ascontiguousarray(arr, dtype=np.float32))
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


def _takes_progress(encoder) -> bool:
    try:
        params = inspect.signature(encoder.encode_images).parameters
    except (TypeError, ValueError):
        return False
    return "progress" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def embed_dataset(dataset, encoder, *, cache_dir, batch_size: int = 256, chunk_size: int = 4096,
                  progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and class-prompt embeddings, cached on disk.

    Returns X (n,d) float32, T (C,d) float32 (class_prompts(dataset.class_names)) and ok (n,) bool
    (False = image could not be decoded; its row of X is NaN). The cache lives in
    cache_dir/embeddings/<sha1(dataset content, encoder.cache_key)>/ - labels are not part of the key, so
    relabelling a dataset reuses its embeddings. Killed runs resume; corrupted chunks are recomputed.
    """
    progress = ensure(progress)
    n = len(dataset)
    if n == 0:
        raise InputError(f"Dataset {getattr(dataset, 'name', '')!r} is empty; nothing to embed.")
    batch_size = _check_batch(batch_size)
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    if isinstance(encoder, PrecomputedEncoder) or not getattr(encoder, "cacheable", True):
        X = encoder.encode_images(dataset, np.arange(n), batch_size=batch_size)
        T = encoder.text_embeddings_for(dataset) if isinstance(encoder, PrecomputedEncoder) else \
            encoder.encode_texts(class_prompts(dataset.class_names))
        return _finish(dataset, X, T)

    content = getattr(dataset, "content_fingerprint", None) or dataset.fingerprint
    key = hashlib.sha1(f"{content}\0{encoder.cache_key}".encode()).hexdigest()
    folder = Path(cache_dir).expanduser() / "embeddings" / key
    folder.mkdir(parents=True, exist_ok=True)
    for tmp in folder.glob(".*.tmp"):  # left by a run killed mid-write; a live writer's files are younger
        try:
            if time.time() - tmp.stat().st_mtime > 600:
                tmp.unlink()
        except OSError:
            pass
    meta_path = folder / "meta.json"
    meta = _read_meta(meta_path) or {}
    if meta.get("n") == n and isinstance(meta.get("chunk_size"), int) and meta["chunk_size"] > 0:
        chunk_size = meta["chunk_size"]  # resume with the layout already on disk
    meta.update(version=CACHE_VERSION, n=n, chunk_size=int(chunk_size), encoder=encoder.name,
                cache_key=encoder.cache_key, dataset=getattr(dataset, "name", ""), content_fingerprint=content)
    atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    d = meta.get("d")

    # text embeddings: tiny, cached so a fully cached dataset never needs the text tower
    prompts = class_prompts(dataset.class_names)
    phash = hashlib.sha1("\x1f".join(prompts).encode()).hexdigest()[:16]
    T = None
    for p in folder.glob(f"text_{phash}_*.npy"):
        T = _load_checked(p, (len(prompts), d))
    if T is None:
        progress("embedding class prompts", 0, 1)
        T = np.asarray(encoder.encode_texts(prompts), dtype=np.float32)
        _save_checked(folder, f"text_{phash}", T)
        progress("embedding class prompts", 1, 1)
    if d is None:
        d = int(T.shape[1])

    n_chunks = math.ceil(n / chunk_size)
    bounds = [(c * chunk_size, min(n, (c + 1) * chunk_size)) for c in range(n_chunks)]
    found = {}
    for p in folder.glob("chunk_*.npy"):
        m = _CHUNK_RE.match(p.name)
        if m and int(m.group(1)) < n_chunks:
            found.setdefault(int(m.group(1)), []).append(p)
    X = np.empty((n, d), dtype=np.float32)
    missing = []
    for c, (a, b) in enumerate(bounds):
        arr = None
        for p in found.get(c, []):
            arr = arr if arr is not None else _load_checked(p, (b - a, d))
        if arr is None:
            missing.append(c)
        else:
            X[a:b] = arr
    done = n - sum(b - a for c, (a, b) in enumerate(bounds) if c in missing)
    if missing:
        log.info("Embedding %d of %d images with %s (%d chunks cached)", n - done, n, encoder.name,
                 n_chunks - len(missing))
    progress("embedding images", done, n)
    with_progress = _takes_progress(encoder)
    for c in missing:
        a, b = bounds[c]
        rows = np.arange(a, b)
        if with_progress:
            base = done
            arr = encoder.encode_images(dataset, rows, batch_size=batch_size,
                                        progress=lambda _s, k, _t: progress("embedding images", base + k, n))
        else:
            parts = []
            for s in range(0, len(rows), batch_size):
                parts.append(np.asarray(encoder.encode_images(dataset, rows[s:s + batch_size], batch_size=batch_size),
                                        dtype=np.float32))
                progress("embedding images", done + s + len(parts[-1]), n)
            arr = np.concatenate(parts)
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape != (b - a, d):
            raise InputError(f"Encoder {encoder.name!r} returned {arr.shape} for {b - a} images, expected "
                             f"({b - a}, {d}) to match its text embeddings.")
        _save_checked(folder, f"chunk_{c:06d}", arr)
        X[a:b] = arr
        done += b - a
        progress("embedding images", done, n)
    if meta.get("d") != d:
        meta["d"] = d
        atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    return _finish(dataset, X, T)


def _finish(dataset, X, T):
    X = np.asarray(X, dtype=np.float32)
    T = np.asarray(T, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != len(dataset) or T.ndim != 2 or T.shape[1] != X.shape[1]:
        raise InputError(f"image embeddings {X.shape} and text embeddings {T.shape} do not fit "
                         f"{len(dataset)} samples with a common dimension d.")
    ok = np.isfinite(X).all(axis=1)
    if not ok.all():
        log.warning("%s: %d image(s) have no embedding (undecodable): rows %s", getattr(dataset, "name", ""),
                    int((~ok).sum()), describe_rows(np.flatnonzero(~ok)))
    return X, T, ok
