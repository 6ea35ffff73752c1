"""What every encoder is: the `Encoder` protocol, class prompts, and the image-batch loop encoders share."""
from __future__ import annotations

import logging
import re
from typing import Optional, Protocol, runtime_checkable

import numpy as np

from selector.errors import InputError, describe_rows
from selector.progress import Progress, ensure
from selector.validate import check_int

log = logging.getLogger(__name__)

PROMPT_TEMPLATE = "A photo of a {}."


@runtime_checkable
class Encoder(Protocol):
    """Two towers over a Dataset: its images -> (m, d) float32 and its class names -> (C, d) float32.

    name: shown in the UI and the manifest. cache_key: changes whenever weights or preprocessing change
    (it keys the embedding cache). cacheable: False when the embeddings come with the dataset and caching
    them again would only copy them. An image-only encoder (no text tower) returns None from encode_classes
    and may say so up front with `text_tower = False`.
    """
    name: str
    cache_key: str
    cacheable: bool

    def encode_images(self, dataset, rows: np.ndarray, *, batch_size: int,
                      progress: Optional[Progress] = None) -> np.ndarray:
        """(len(rows), d) float32 embeddings of dataset rows; NaN rows for undecodable images."""

    def encode_classes(self, dataset) -> np.ndarray | None:
        """(C, d) float32: one embedding per class of dataset.class_names, in that order (None: image-only)."""


@runtime_checkable
class ImageTower(Protocol):
    """An Encoder whose image tower is two steps that can run apart: `preprocess` (PIL image -> tensor) and
    `embed_batch` (stacked tensors (b, ...) -> (b, d) float32). `encode_image_rows` runs them in a DataLoader
    here; on a Ray cluster (selector.distributed) decoding tasks run the first and model actors the second."""

    def preprocess(self, image): ...

    def embed_batch(self, x) -> np.ndarray: ...


class PromptTower:
    """For encoders with a text tower: the class embeddings are the embeddings of `class_prompts`."""

    def encode_texts(self, prompts: list[str]) -> np.ndarray:  # pragma: no cover - the protocol
        raise NotImplementedError

    def encode_classes(self, dataset) -> np.ndarray:
        return np.asarray(self.encode_texts(class_prompts(dataset.class_names)), dtype=np.float32)


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


def check_batch(batch_size) -> int:
    return check_int(batch_size, "batch_size", minimum=1)


def check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str) or not prompts:
        raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}.")
    return [str(p) for p in prompts]


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


def transform_rows(dataset, rows, transform) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Dataset rows decoded and transformed one by one, as encode_image_rows's loader does it: the stacked
    (m, ...) float32 array, ok (m,) bool, and per row "" or why its image could not be decoded (its array is
    then zeros)."""
    import torch
    items = _ImageRows(dataset, rows, transform)
    decoded = [items[k] for k in range(len(items))]
    x = torch.stack([t for t, _, _ in decoded]).numpy().astype(np.float32, copy=False)
    return x, np.array([ok for _, ok, _ in decoded], dtype=bool), [msg for _, _, msg in decoded]


def _worker_init(_):
    import torch
    torch.set_num_threads(1)  # each decoding worker is one process on one CPU; the model keeps the rest


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
