"""Seeded synthetic data with known answers, shared by the tests (plain functions; fixtures are in conftest)."""
from pathlib import Path

import numpy as np
import pandas as pd


def make_embeddings(path, *, n_per_class=120, n_classes=4, d=32, seed=0, spread=0.6, images=False, text=True):
    """Gaussian class clusters around class text vectors, written as a load_embeddings .npz: a dataset whose
    clean labels are known. images=True also writes a tiny PNG per sample (a flat colour per class) beside the
    file and stores its path, so galleries show thumbnails. text=False leaves out text_embeddings (image-only
    embeddings, as from an encoder without a text tower)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d)).astype(np.float32)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    vectors = centres[labels] + spread * rng.normal(size=(len(labels), d)).astype(np.float32)
    extra = {}
    if images:
        folder = Path(path).with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, c in enumerate(labels):
            file = folder / f"{i:04d}.png"
            Image.new("RGB", (12, 12), (60 * c % 256, 90, 200 - 40 * c)).save(file)
            paths.append(str(file))
        extra["paths"] = np.asarray(paths)
    if text:
        extra["text_embeddings"] = centres
    np.savez(path, image_embeddings=vectors, labels=labels, class_names=np.array([f"class_{c}" for c in range(n_classes)]),
             **extra)
    return Path(path)


def clusters(n=3000, d=24, seed=0, n_classes=6):
    """(X, T, y): Gaussian class clusters where classes (0,1), (2,3), (4,5) are close pairs; T = noisy class
    means, standing in for class-prompt embeddings."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_classes // 2, d))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    mu = []
    for b in base:
        off = rng.normal(size=d)
        off /= np.linalg.norm(off)
        mu += [4 * b + 0.9 * off, 4 * b - 0.9 * off]
    mu = np.array(mu)
    y = rng.integers(0, n_classes, n)
    X = (mu[y] + rng.normal(scale=0.6, size=(n, d))).astype(np.float32)
    T = (mu + rng.normal(scale=0.3, size=mu.shape)).astype(np.float32)
    return X, T, y


CLASSES = ("cat", "dog", "fox")


def make_table(n=300, seed=0):
    """A per-sample table shaped like a run's (selector.table.TABLE_COLUMNS + the truth columns), with planted
    flags and injected noise: noise_score > 0.85 is flagged, > 0.8 was injected."""
    rng = np.random.default_rng(seed)
    labels = np.array(CLASSES)[np.arange(n) % 3]
    noise = rng.random(n).astype(np.float32)
    flagged = noise > 0.85
    suggested = np.where(flagged, np.array(CLASSES)[(np.arange(n) + 1) % 3], labels)
    a, d = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)
    return pd.DataFrame({
        "id": [f"s{i}" for i in range(n)], "path": [f"/img/{i}.png" for i in range(n)], "label": labels,
        "noise_score": noise, "flagged": flagged, "suggested_label": suggested, "reason": "",
        "alignment": a, "diversity": d, "alignment_norm": a, "diversity_norm": d, "cleanliness": 1 - noise,
        "given_prob": 1 - noise, "suggested_prob": noise, "knn_agreement": 1 - noise, "ood_score": rng.random(n),
        "ood": np.zeros(n, bool), "duplicate_of": -np.ones(n, np.int64),
        "map_x": rng.normal(size=n).astype(np.float32), "map_y": rng.normal(size=n).astype(np.float32),
        "original_label": labels, "noise_injected": noise > 0.8,
    })


def plant_missing_class(X, y, n_classes, *, n=150, seed=0):
    """(X, y, planted mask) with n rows of a class missing from the label set appended: a Gaussian cluster as
    tight as a known class, around a new centre as far out as the class means, each row given a random label of
    the known classes."""
    rng = np.random.default_rng(seed)
    X = np.asarray(X, np.float32)
    means = np.stack([X[y == c].mean(0) for c in range(n_classes)])
    spread = np.sqrt(((X - means[y]) ** 2).mean())
    centre = rng.normal(size=X.shape[1])
    centre *= np.median(np.linalg.norm(means, axis=1)) / np.linalg.norm(centre)
    new = (centre + spread * rng.normal(size=(n, X.shape[1]))).astype(np.float32)
    planted = np.r_[np.zeros(len(X), bool), np.ones(n, bool)]
    return np.concatenate([X, new]), np.r_[y, rng.integers(0, n_classes, n)], planted
