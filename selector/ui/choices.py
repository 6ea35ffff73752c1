"""The Home page's choices as data (no streamlit): source and encoder names, labels, which go together."""
from __future__ import annotations

SOURCES = {
    "demo": "Built-in demo (Fashion-MNIST)",
    "image-folder": "Image folder",
    "manifest": "CSV / Parquet manifest",
    "torchvision": "torchvision dataset",
    "embeddings": "Precomputed embeddings (.npz)",
}
ENCODERS = {
    "demo": "Offline demo encoder (small CNN, not CLIP)",
    "open_clip": "open_clip (CLIP model + pretrained tag or local checkpoint)",
    "precomputed": "Precomputed embeddings from the file",
}
NOISE_MODES = {"none": "off", "uniform": "uniform flips", "confusable": "flips between confusable classes"}
MAPS = {"umap": "UMAP", "pca": "PCA (fast preview)", "none": "no map"}
HOME_DEFAULTS = {"clip_model": "ViT-B-32", "clip_pretrained": "laion2b_s34b_b79k", "seed": 0, "k": 0}


def encoders_for(source: str, dataset_name: str = "") -> list[str]:
    """Encoders that can embed this source, the default first.

    The demo encoder knows only Fashion-MNIST's classes; precomputed embeddings need no encoder.
    """
    from selector.sources import default_encoder
    if source == "embeddings":
        return ["precomputed"]
    if source == "demo" or (source == "torchvision" and dataset_name == "fashion-mnist"):
        first = default_encoder(source, dataset_name)
        return [first] + [e for e in ("demo", "open_clip") if e != first]
    return ["open_clip"]


def default_noise(source: str) -> dict:
    """The demo plants noise by default so the first screen shows the audit finding it; others start clean."""
    from selector.sources import DEMO_NOISE
    return dict(DEMO_NOISE) if source == "demo" else {"noise_mode": "none", "noise_rate": 0.2, "noise_seed": 0}
