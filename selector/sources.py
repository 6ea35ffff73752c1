"""Open a data source or an encoder by name: the one place the CLI and the app turn choices into objects."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional

from selector.errors import InputError
from selector.progress import Progress

DEMO_NOISE = {"noise_mode": "uniform", "noise_rate": 0.2, "noise_seed": 0}
"""The built-in demo plants 20% uniform label flips so the first screen shows the audit finding them."""


def default_cache_dir() -> Path:
    """SELECTOR_CACHE_DIR, else ~/.cache/selector."""
    return Path(os.environ.get("SELECTOR_CACHE_DIR") or Path.home() / ".cache" / "selector")


@functools.lru_cache(maxsize=None)
def default_encoder(source: str, dataset_name: str = "fashion-mnist") -> str:
    """The encoder a source starts with: "precomputed" for embeddings files; for Fashion-MNIST (the demo),
    CLIP when its weights are on disk or downloadable and a CUDA GPU is present, else the offline demo encoder
    (embedding 60k images with ViT-B-32 on a CPU takes the better part of an hour); "open_clip" otherwise.
    Decided once per process: the network probe takes up to a few seconds."""
    if source == "embeddings":
        return "precomputed"
    if source == "demo" or (source == "torchvision" and dataset_name == "fashion-mnist"):
        import torch
        from selector.embed import clip_available
        return "open_clip" if torch.cuda.is_available() and clip_available() else "demo"
    return "open_clip"


def open_source(kind: str, *, path: Optional[str] = None, name: str = "fashion-mnist", split: str = "train",
                root: Optional[str] = None, download: bool = True):
    """A Dataset from one of data.list_sources(): demo, image-folder, manifest, torchvision, embeddings."""
    from selector import data
    if kind == "demo":
        return data.load_fashion_mnist(split="train", root=root, download=download)
    if kind == "torchvision":
        return data.load_torchvision(name, split=split, root=root, download=download)
    if kind in ("image-folder", "manifest", "embeddings"):
        if not path:
            raise InputError(f"the {kind} source needs a path; none was given.")
        if not Path(path).exists():
            raise InputError(f"{path!r} does not exist. Give the full path to an existing "
                             f"{'folder' if kind == 'image-folder' else 'file'}.")
        loader = {"image-folder": data.load_image_folder, "manifest": data.load_manifest,
                  "embeddings": data.load_embeddings}[kind]
        return loader(path) if kind != "manifest" else loader(path, root=root)
    raise InputError(f"unknown source {kind!r}; choose one of {data.list_sources()}")


def open_encoder(kind: str, *, cache_dir, model: str = "ViT-B-32", pretrained: Optional[str] = "laion2b_s34b_b79k",
                 checkpoint: Optional[str] = None, progress: Optional[Progress] = None):
    """An Encoder from embed.list_encoders(); "demo" trains (once, then cached) the offline demo encoder."""
    from selector import embed
    if kind == "demo":
        from selector.demo import train_demo_encoder
        return train_demo_encoder(cache_dir=cache_dir, progress=progress)
    if kind == "open_clip":
        return embed.OpenCLIPEncoder(model=model, pretrained=None if checkpoint else pretrained, checkpoint=checkpoint)
    if kind == "precomputed":
        return embed.PrecomputedEncoder()
    raise InputError(f"unknown encoder {kind!r}; choose one of {embed.list_encoders()}")
