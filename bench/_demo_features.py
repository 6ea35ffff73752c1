"""Fashion-MNIST train features from the offline demo encoder, through the project's own caches.

The first call trains the demo encoder and embeds 60k images (minutes); later calls read the caches.
"""
from __future__ import annotations

import numpy as np


def demo_features(cache_dir=None):
    """-> (X (60000, d) float32, T (C, d) float32, clean labels (60000,) int64, class names, encoder name)."""
    import selector
    from selector.embed import embed_dataset
    from selector.files import default_cache_dir

    cache_dir = cache_dir or default_cache_dir()
    encoder = selector.open_encoder("demo", cache_dir=cache_dir)
    pool = selector.open_source("demo")
    X, T, ok = embed_dataset(pool, encoder, cache_dir=cache_dir)
    if not ok.all():
        raise RuntimeError(f"{int((~ok).sum())} Fashion-MNIST images failed to embed")
    return X.astype(np.float32), T.astype(np.float32), pool.labels.astype(np.int64), list(pool.class_names), encoder.name
