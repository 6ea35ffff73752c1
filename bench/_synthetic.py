"""Synthetic embeddings shaped like adapted CLIP features, for the scale benchmarks (no images needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def embeddings(n: int, d: int = 512, n_classes: int = 1000, seed: int = 0, separation: float = 0.6):
    """(X (n, d) unit-norm float32, T (C, d) class-prompt stand-ins, y (n,) int64).

    Each row is its class centre plus variation shared by all classes in a 64-d subspace with a decaying
    spectrum (intrinsic dimension well below d, as in real image embeddings) plus a little isotropic noise;
    T is each centre seen through noise, as a text tower's prompt embedding would be. `separation` is the
    norm of the class centres against a shared variation of norm ~2.2: 0.6 gives classes that every expert
    separates; ~0.3 gives overlapping classes, where an audit makes mistakes to measure."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d)).astype(np.float32)
    centres *= separation / np.linalg.norm(centres, axis=1, keepdims=True)
    basis = np.linalg.qr(rng.normal(size=(d, 64)))[0].astype(np.float32)          # (d, 64) orthonormal
    scale = (1.0 / np.sqrt(np.arange(1, 65))).astype(np.float32)
    y = rng.integers(0, n_classes, n)
    X = centres[y]
    for s in range(0, n, 65_536):
        z = rng.normal(size=(min(n, s + 65_536) - s, 64)).astype(np.float32) * scale
        X[s:s + 65_536] += z @ basis.T + (0.05 / np.sqrt(d)) * rng.normal(size=(len(z), d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    T = centres + (0.3 / np.sqrt(d)) * rng.normal(size=centres.shape).astype(np.float32)
    return X, T.astype(np.float32), y.astype(np.int64)


def write_npz(path: Path, n: int, d: int = 512, n_classes: int = 1000, seed: int = 0, separation: float = 0.6) -> Path:
    """The embeddings as a load_embeddings .npz (written once; reused when it exists)."""
    path = Path(path)
    if not path.exists():
        X, T, y = embeddings(n, d, n_classes, seed, separation)
        np.savez(path, image_embeddings=X, labels=y, text_embeddings=T,
                 class_names=np.array([f"class_{c:04d}" for c in range(n_classes)]))
    return path


def hierarchical(n: int, d: int = 512, n_classes: int = 1000, seed: int = 0, noise: float = 4.5, fine: float = 0.6):
    """(X, T, y) like `embeddings`, but with classes an audit can confuse: n_classes / 10 superclass
    directions, ten fine classes around each (offsets of norm ~`fine`), and isotropic noise of norm ~`noise`
    in all d dimensions. T is each class centre seen through noise. At the defaults zero-shot (argmax X T^T)
    is about 0.71 accurate, as CLIP is on data it was not trained for."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(n_classes // 10, d))
    coarse /= np.linalg.norm(coarse, axis=1, keepdims=True)
    centres = coarse[np.arange(n_classes) // 10 % len(coarse)] + fine * rng.normal(size=(n_classes, d)) / np.sqrt(d)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, n_classes, n)
    X = np.empty((n, d), np.float32)
    for s in range(0, n, 65_536):
        e = min(n, s + 65_536)
        X[s:e] = centres[y[s:e]] + noise * rng.normal(size=(e - s, d)) / np.sqrt(d)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    T = centres + 0.5 * fine * rng.normal(size=centres.shape) / np.sqrt(d)
    return X, T.astype(np.float32), y.astype(np.int64)
