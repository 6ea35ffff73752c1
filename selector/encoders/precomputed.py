"""Embeddings that came with the dataset (`load_embeddings`): nothing is computed, nothing cached again."""
from __future__ import annotations

import numpy as np

from selector.errors import InputError


class PrecomputedEncoder:
    """Returns the dataset's own image_embeddings and text_embeddings (None when the file has none)."""
    name = "precomputed embeddings (from the dataset file)"
    cache_key = "precomputed"
    cacheable = False

    def encode_images(self, dataset, rows, *, batch_size: int = 256, progress=None) -> np.ndarray:
        if dataset.embeddings is None:
            raise InputError(f"Dataset {dataset.name!r} has no precomputed image embeddings; load an .npz with "
                             "image_embeddings (N,d), or choose an encoder that embeds images (open_clip, or "
                             "offline with no download).")
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == len(dataset.embeddings) and (rows == np.arange(len(rows))).all():
            return np.asarray(dataset.embeddings, dtype=np.float32)      # every row in order: no copy
        return np.asarray(dataset.embeddings[rows], dtype=np.float32)

    def encode_classes(self, dataset) -> np.ndarray | None:
        """The file's text_embeddings, or None for image-only embeddings (an encoder without a text tower,
        e.g. DINOv2 or a ResNet): the pipeline then audits with its label-based experts alone."""
        T = dataset.text_embeddings
        if T is None:
            return None
        T = np.asarray(T, dtype=np.float32)
        if T.shape[0] != len(dataset.class_names):
            raise InputError(f"text_embeddings has {T.shape[0]} rows but the dataset has "
                             f"{len(dataset.class_names)} classes; give one row per class, in class_names order.")
        return T
