"""Encoders behind one registry: `open_encoder(name, **options)` -> Encoder.

Each encoder is one file (openclip.py, demo.py, offline.py, precomputed.py) and one `ENCODERS` entry: its
label and help, the options it takes with their defaults (the CLI's flags and the app's inputs read them),
and which sources it can embed. Adding an encoder means one file and one entry here.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

from selector.encoders.base import (PROMPT_TEMPLATE, Encoder, ImageTower, PromptTower, class_prompts,
                                   encode_image_rows)
from selector.encoders.openclip import DEFAULT_MODEL, DEFAULT_PRETRAINED
from selector.errors import InputError, OfflineError
from selector.files import default_cache_dir
from selector.progress import Progress
from selector.registry import Choice, Registry
from selector.roots import check_cache_dir, check_path


@dataclass(frozen=True)
class EncoderChoice(Choice):
    """An encoder. value: factory(cache_dir=, progress=, **options) -> Encoder; options: its keyword options
    and their defaults; embeds(source, dataset_name): whether it can embed that data source; check(**options):
    InputError for options that cannot work, found without loading weights or data; no_download: it needs no
    weights from the network (what an OfflineError suggests instead)."""
    options: dict = field(default_factory=dict)
    embeds: Callable[[str, str], bool] = lambda source, dataset_name: True
    check: Callable[..., None] = lambda **options: None
    no_download: bool = False


def _open_clip(*, cache_dir=None, progress=None, model, pretrained, checkpoint):
    from selector.encoders.openclip import OpenCLIPEncoder
    return OpenCLIPEncoder(model, pretrained=None if checkpoint else (pretrained or None), checkpoint=checkpoint or None)


def _check_open_clip(*, model, pretrained, checkpoint):
    from selector.encoders.openclip import check_weights_choice
    check_weights_choice(model, pretrained=None if checkpoint else (pretrained or None), checkpoint=checkpoint or None)


def _demo(*, cache_dir, progress=None, **recipe):
    from selector.encoders.demo import train_demo_encoder
    return train_demo_encoder(cache_dir=cache_dir, progress=progress, **recipe)


def _offline(*, cache_dir, progress=None, seed):
    from selector.encoders.offline import OfflineEncoder
    return OfflineEncoder(cache_dir=cache_dir, seed=seed, progress=progress)


def _precomputed(*, cache_dir=None, progress=None):
    from selector.encoders.precomputed import PrecomputedEncoder
    return PrecomputedEncoder()


def _is_fashion_mnist(source: str, dataset_name: str) -> bool:
    return source == "demo" or (source == "torchvision" and dataset_name == "fashion-mnist")


ENCODERS = Registry(
    "encoder",
    EncoderChoice("open_clip", "open_clip (CLIP model + pretrained tag or local checkpoint)", value=_open_clip,
                  help="A frozen CLIP model from open_clip. Weights are downloaded once when online and cached; "
                       "a local checkpoint file replaces the tag.",
                  options={"model": DEFAULT_MODEL, "pretrained": DEFAULT_PRETRAINED, "checkpoint": ""},
                  embeds=lambda source, dataset_name: source != "embeddings", check=_check_open_clip),
    EncoderChoice("demo", "Offline demo encoder (small CNN, not CLIP)", value=_demo,
                  help="Offline stand-in for CLIP on Fashion-MNIST: a small CNN plus learned class embeddings, "
                       "trained once (a few minutes on 2 CPU cores) on half of Fashion-MNIST's test split, never "
                       "on the images it audits, and cached.",
                  options={"seed": 0, "epochs": None, "n_train": None, "n_eval": None},   # None: the full recipe
                  embeds=_is_fashion_mnist, no_download=True),
    EncoderChoice("offline", "Offline encoder learned from your images (no labels, not CLIP)", value=_offline,
                  help="For any images, with no download: features learned from the dataset's own images without "
                       "their labels (k-means of image patches; a few minutes on 2 CPU cores for 60,000 small "
                       "images), so no label is scored by a model that saw it; cached. It has no text tower: the "
                       "audit uses its classifier and neighbour votes, and class means stand in for prompts.",
                  options={"seed": 0}, embeds=lambda source, dataset_name: source != "embeddings", no_download=True),
    EncoderChoice("precomputed", "Precomputed embeddings from the file", value=_precomputed,
                  help="The image (and class-prompt) embeddings stored in the .npz; nothing is computed.",
                  embeds=lambda source, dataset_name: source == "embeddings"),
)


def list_encoders() -> list[str]:
    return ENCODERS.names()


def open_encoder(kind: str, *, cache_dir=None, progress: Optional[Progress] = None, source: str | None = None,
                 dataset_name: str = "fashion-mnist", **options) -> Encoder:
    """The encoder called `kind` (see ENCODERS) with its options (defaults from the registry entry); the demo
    encoder trains once into cache_dir (default `default_cache_dir()`), then loads from it. source /
    dataset_name: the data it is for, so that an OfflineError names only the encoders that source offers."""
    kwargs = encoder_options(kind, **options)
    cache_dir = default_cache_dir() if cache_dir is None else check_cache_dir(cache_dir)
    _check_model_paths(kwargs)
    try:
        return ENCODERS.get(kind).value(cache_dir=cache_dir, progress=progress, **kwargs)
    except OfflineError as exc:
        raise OfflineError(f"{exc} {no_download_advice(source, dataset_name)}") from exc


def no_download_advice(source: str | None, dataset_name: str = "fashion-mnist") -> str:
    """The sentence that names the encoders needing no download which this source offers (any image source's
    when source is None)."""
    names = [c for c in ENCODERS if c.no_download and c.embeds(source or "image-folder", dataset_name)]
    if not names:
        return ""
    return "Or choose an encoder that needs no download: " + "; ".join(
        f"'{c.name}' ({c.label})" for c in names) + "."


def _check_model_paths(kwargs: dict) -> None:
    """The weights files and folders among an encoder's options must lie inside the allowed roots (roots.py)."""
    if kwargs.get("checkpoint"):
        check_path(kwargs["checkpoint"], "checkpoint file")
    pretrained = str(kwargs.get("pretrained") or "")
    if os.sep in pretrained or os.path.isfile(os.path.expanduser(pretrained)):   # a weights file given as the tag
        check_path(pretrained, "weights file")
    model = str(kwargs.get("model") or "")
    if model.startswith("local-dir:"):
        check_path(model.split(":", 1)[1], "model folder")


def encoder_options(kind: str, **options) -> dict:
    """The options the encoder called `kind` is built with: its registry defaults, updated with the given ones
    (None = the default). InputError for an unknown encoder or an option it does not take."""
    choice: EncoderChoice = ENCODERS.get(kind)
    unknown = sorted(set(options) - set(choice.options))
    if unknown:
        raise InputError(f"encoder {kind!r} takes no option {', '.join(unknown)}; its options are: "
                         f"{', '.join(choice.options) or 'none'}.")
    return {**choice.options, **{k: v for k, v in options.items() if v is not None}}


def check_encoder(kind: str, source: str, dataset_name: str = "fashion-mnist", **options) -> None:
    """InputError, before any data is loaded, when the encoder called `kind` cannot embed this source or its
    options cannot work (an unknown model or tag, a missing checkpoint file, or one outside the allowed roots)."""
    choice: EncoderChoice = ENCODERS.get(kind)
    if not choice.embeds(source, dataset_name):
        what = f"{source} ({dataset_name})" if source == "torchvision" else source
        able = [c.name for c in ENCODERS if c.embeds(source, dataset_name)]   # (the default may import torch)
        raise InputError(f"the {kind} encoder cannot embed the {what} source; choose one of {', '.join(able)}.")
    kwargs = encoder_options(kind, **options)
    _check_model_paths(kwargs)
    choice.check(**kwargs)


def options_of(kind: str, **given) -> dict:
    """Of the options a client collects for every encoder (the CLI's flags, the Home page's inputs), the
    ones the encoder called `kind` takes."""
    return {k: v for k, v in given.items() if k in ENCODERS.get(kind).options}


def encoders_for(source: str, dataset_name: str = "fashion-mnist") -> list[str]:
    """The encoders that can embed this source, the default first."""
    names = [c.name for c in ENCODERS if c.embeds(source, dataset_name)]
    first = default_encoder(source, dataset_name)
    return [first] + [name for name in names if name != first]


@functools.lru_cache(maxsize=None)
def default_encoder(source: str, dataset_name: str = "fashion-mnist") -> str:
    """The encoder a source starts with: the precomputed embeddings for an embeddings file; for Fashion-MNIST,
    CLIP when a CUDA GPU is present and its weights are on disk or downloadable, else the offline demo encoder
    (60k ViT-B-32 embeddings on a CPU take the better part of an hour); open_clip otherwise. Decided once per
    process: the network probe takes up to a few seconds."""
    if source == "embeddings":
        return "precomputed"
    if _is_fashion_mnist(source, dataset_name):
        from selector.encoders.openclip import clip_available
        from selector.runtime import cuda_available
        return "open_clip" if cuda_available() and clip_available() else "demo"
    return "open_clip"


__all__ = ["ENCODERS", "EncoderChoice", "Encoder", "ImageTower", "PromptTower", "PROMPT_TEMPLATE",
           "class_prompts", "encode_image_rows", "open_encoder", "encoder_options", "options_of", "list_encoders",
           "encoders_for", "default_encoder", "check_encoder", "no_download_advice"]
