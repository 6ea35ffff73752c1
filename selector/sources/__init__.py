"""Data sources behind one registry: `open_source(name, **options)` -> Dataset.

Each source is one loader and one `SOURCES` entry that says which options it takes (the CLI's flags and
the app's inputs are drawn from them). Adding a source means one loader and one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from selector.dataset import Dataset
from selector.errors import InputError
from selector.registry import Choice, Registry
from selector.roots import check_files, check_path
from selector.sources.embeddings import load_embeddings
from selector.sources.folders import IMAGE_EXTENSIONS, load_image_folder, load_manifest
from selector.sources.torchvision_sets import (FASHION_MNIST_CLASSES, TORCHVISION_SETS, load_fashion_mnist,
                                               load_torchvision)


@dataclass(frozen=True)
class SourceChoice(Choice):
    """A data source. options: the keyword options its loader takes ("path" is required when listed);
    noise: the synthetic label noise a run on it plants by default (the demo shows the audit at work)."""
    options: tuple[str, ...] = ()
    noise: dict = field(default_factory=dict)


def _demo(*, root=None, download=True) -> Dataset:
    return load_fashion_mnist(split="train", root=root, download=download)


SOURCES = Registry(
    "data source",
    SourceChoice("demo", "Built-in demo (Fashion-MNIST)", value=_demo, options=("root", "download"),
                 help="Fashion-MNIST's training set (60,000 images, 10 classes) with 20% of its labels flipped on "
                      "purpose, so the audit can be checked against a known truth.",
                 noise={"noise_mode": "uniform", "noise_rate": 0.2, "noise_seed": 0}),
    SourceChoice("image-folder", "Image folder", value=load_image_folder, options=("path",),
                 help="root/<class name>/<image file>, e.g. root/cat/001.jpg"),
    SourceChoice("manifest", "CSV / Parquet manifest", value=load_manifest, options=("path", "root"),
                 help="Columns path,label [,id,caption,split]; relative paths are resolved against the image "
                      "root or the manifest's folder."),
    SourceChoice("torchvision", "torchvision dataset", value=load_torchvision,
                 options=("name", "split", "root", "download"),
                 help=f"One of {', '.join(TORCHVISION_SETS.names())}, from a local folder or downloaded."),
    SourceChoice("embeddings", "Precomputed embeddings (.npz)", value=load_embeddings, options=("path",),
                 help="image_embeddings (N,d), labels (N), class_names (C) [, text_embeddings (C,d), paths (N)]"),
)


def list_sources() -> list[str]:
    return SOURCES.names()


def open_source(kind: str, **options) -> Dataset:
    """A Dataset from the source called `kind` (see SOURCES). Options it does not take are ignored
    (path, root, name, split, download); a source that takes a path needs an existing one. With
    SELECTOR_ALLOWED_ROOTS set, the path, the root and every image file must lie inside those folders."""
    choice: SourceChoice = SOURCES.get(kind)
    kwargs = {k: v for k, v in options.items() if k in choice.options and v not in (None, "")}
    check_source(kind, path=kwargs.get("path"), root=kwargs.get("root"))
    if "path" in choice.options:
        dataset = choice.value(kwargs.pop("path"), **kwargs)
    else:
        dataset = choice.value(**kwargs)
    check_files(dataset.table["path"].astype(str).tolist(), dataset.name)
    return dataset


def check_source(kind: str, *, path=None, root=None) -> None:
    """InputError, before anything is read, when the source called `kind` lacks its path, or its path (or a
    manifest's image root) does not exist, or (SELECTOR_ALLOWED_ROOTS) either lies outside the allowed folders.
    A torchvision root may be missing: the files are downloaded there."""
    choice: SourceChoice = SOURCES.get(kind)
    if root and "root" in choice.options:
        check_path(root, "data folder")
    if "path" in choice.options:
        if not path:
            raise InputError(f"the {kind} source needs a path; none was given.")
        check_path(path, "the data path")
        if not Path(path).expanduser().exists():
            raise InputError(f"{path!r} does not exist. Give the full path to an existing "
                             f"{'folder' if kind == 'image-folder' else 'file'}.")
    if root and kind == "manifest" and not Path(root).expanduser().is_dir():
        raise InputError(f"the image root {root!r} does not exist or is not a folder; give the folder the "
                         "manifest's image paths are relative to.")


def source_noise(kind: str) -> dict:
    """The noise a run on this source plants by default ({} = none)."""
    return dict(SOURCES.get(kind).noise)


__all__ = ["SOURCES", "SourceChoice", "TORCHVISION_SETS", "FASHION_MNIST_CLASSES", "IMAGE_EXTENSIONS",
           "open_source", "check_source", "list_sources", "source_noise", "load_image_folder", "load_manifest",
           "load_fashion_mnist", "load_torchvision", "load_embeddings"]
