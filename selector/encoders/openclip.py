"""open_clip models: a model name + pretrained tag (cached, else downloaded), a local checkpoint file, a
'local-dir:' or 'hf-hub:' model, or random weights (pretrained=None, for tests). Offline, missing weights
fail within seconds with the ways to provide them."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from selector.encoders.base import PromptTower, check_batch, check_prompts, encode_image_rows
from selector.errors import InputError, OfflineError
from selector.network import downloads_off, host_reachable
from selector.progress import Progress
from selector.runtime import loader_workers

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
CACHE_VERSION = 1
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")

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


def clip_available(model: str = DEFAULT_MODEL, pretrained: str = DEFAULT_PRETRAINED, *, cache_dir=None) -> bool:
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


def check_weights_choice(model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, checkpoint=None):
    """InputError for an unknown model, a 'local-dir:' folder without its config, a missing or mistyped
    checkpoint file or a pretrained tag the model does not have: every check that needs no weights, so a
    client can make them before loading any data."""
    import open_clip
    model = str(model)
    schema = model.split(":", 1)[0] if model.startswith(("local-dir:", "hf-hub:")) else None
    if model not in open_clip.list_models() and not schema:
        raise InputError(f"Unknown open_clip model {model!r}. Valid names: {', '.join(open_clip.list_models())}.")
    if schema == "local-dir":
        folder = Path(model.split(":", 1)[1]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise InputError(f"{folder} has no open_clip_config.json; 'local-dir:' needs a folder holding "
                             "open_clip_config.json and the weights file.")
    if schema:
        return
    if pretrained and checkpoint is None and os.path.isfile(os.path.expanduser(str(pretrained))):
        checkpoint, pretrained = pretrained, None  # open_clip also accepts a weights file as `pretrained`
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise InputError(f"Checkpoint file {path} does not exist; pass the path of a local "
                             f"{'/'.join(CHECKPOINT_SUFFIXES)} file holding weights for {model}.")
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise InputError(f"Checkpoint {path.name} should be one of {', '.join(CHECKPOINT_SUFFIXES)}.")
    elif pretrained and not open_clip.get_pretrained_cfg(model, pretrained):
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise InputError(f"Unknown pretrained tag {pretrained!r} for open_clip model {model!r}. Valid tags: "
                         f"{', '.join(tags) or '(none: this model has no released weights)'}; or pass "
                         "checkpoint=<local weights file>, or pretrained=None for random weights.")


class OpenCLIPEncoder(PromptTower):
    """A frozen open_clip model. Weights: `pretrained` tag (from the local cache, else downloaded), a local
    `checkpoint` file, or `pretrained=None` for random init (tests). Raw (unnormalised) tower outputs."""

    def __init__(self, model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, *,
                 checkpoint=None, device: str = "auto", precision: str = "auto", num_workers: int | None = None,
                 cache_dir=None):
        import open_clip
        import torch
        model = str(model)
        check_weights_choice(model, pretrained, checkpoint)
        num_workers = loader_workers() if num_workers is None else num_workers
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
            files = sorted(p for p in folder.iterdir() if p.is_file())
            weights, label, offline = "local-dir " + ";".join(_file_tag(p) for p in files), model, True
        elif schema == "hf-hub":
            host, port = _weights_host({"hf_hub": model})
            offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or not host_reachable(host, port)
            weights, label = model, model  # offline: only the local Hugging Face cache is tried
        elif checkpoint is not None:
            path = Path(checkpoint).expanduser()
            kwargs["pretrained"], weights, offline = str(path), f"checkpoint {_file_tag(path)}", True
            label = f"checkpoint {path.name}"
        elif pretrained:
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
                "~/.cache/huggingface, or point HF_HOME at a copy).")

    def _offline_message(self, model, tag, cfg, host, cache_dir) -> str:
        return (f"open_clip weights for {model} ({tag}) are not in the local cache "
                f"({cache_dir or 'default Hugging Face cache'}) and "
                + ("downloads are turned off on this server (SELECTOR_OFFLINE). " if downloads_off() else
                   f"{host} cannot be reached (offline?). ")
                + self._fixes(model, tag, cfg))

    def _autocast(self):
        import torch
        if self.device.type == "cuda" and self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            return torch.autocast(device_type="cuda", dtype=dtype)
        return torch.autocast(device_type="cpu", enabled=False)

    def embed_batch(self, x) -> np.ndarray:
        """(b, d) float32 raw image embeddings of a preprocessed (b, 3, H, W) tensor batch."""
        import torch
        with torch.inference_mode(), self._autocast():
            return self.model.encode_image(x.to(self.device, non_blocking=True)).float().cpu().numpy()

    def encode_images(self, dataset, rows, *, batch_size: int = 256, progress: Progress | None = None) -> np.ndarray:
        """(len(rows), d) float32 raw image embeddings; NaN rows for undecodable images."""
        return encode_image_rows(dataset, rows, self.preprocess, self.embed_batch, batch_size=check_batch(batch_size),
                                 num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                                 progress=progress)

    def encode_texts(self, prompts: list[str]) -> np.ndarray:
        """(len(prompts), d) float32 raw text embeddings."""
        import torch
        prompts = check_prompts(prompts)
        out = []
        with torch.inference_mode(), self._autocast():
            for s in range(0, len(prompts), 256):
                tokens = self.tokenizer(prompts[s:s + 256]).to(self.device)
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)
