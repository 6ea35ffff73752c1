"""Fashion-MNIST TRAIN features from the bench's encoders, each built independently of the others.

  demo     the shipped offline demo encoder: a CNN image tower + a learned class-embedding table, trained
           CLIP-style on Fashion-MNIST TEST half A (rows with index % 2 == 0); zero-shot accuracy ~0.88.
  offline  the shipped offline encoder for any images (`selector/encoders/offline.py`): k-means patch
           features learned from the 60,000 TRAIN images themselves, without their labels; image-only.
  weak     bench only: a one-hidden-layer MLP over 14x14 downsampled pixels + a class-embedding table,
           trained CLIP-style on the first WEAK_IMAGES images of TEST half B (index % 2 == 1, which the demo
           encoder never saw), few epochs: deliberately weak, zero-shot accuracy ~0.7 on the train split
           (CLIP's on out-of-domain data).

`features(name)` -> (X (60000, d) float32, T (C, d) float32 or None for image-only, clean labels, class names,
description). Everything is seeded and cached under the bench cache dir (SELECTOR_BENCH_CACHE, default the
project's default cache dir): the demo and offline encoders through the project's own caches, the weak one as
one .npz written atomically with its sha1 in a json beside it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np

ENCODERS = ("demo", "offline", "weak")
WEAK = {"version": 1, "images": 300, "epochs": 4, "hidden": 64, "dim": 32, "side": 14, "lr": 3e-3, "seed": 0}


def cache_dir() -> Path:
    from selector.files import default_cache_dir
    return Path(os.environ.get("SELECTOR_BENCH_CACHE") or default_cache_dir())


def features(name: str):
    if name not in ENCODERS:
        raise SystemExit(f"unknown bench encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    import selector
    from selector.embed import embed_dataset
    pool = selector.open_source("demo")
    y, names = pool.labels.astype(np.int64), list(pool.class_names)
    if name == "weak":
        X, T, desc = _weak_features(pool.pixels)
        return X, T, y, names, desc
    encoder = selector.open_encoder(name, cache_dir=cache_dir())
    X, T, ok = embed_dataset(pool, encoder, cache_dir=cache_dir())
    if not ok.all():
        raise RuntimeError(f"{int((~ok).sum())} Fashion-MNIST images failed to embed")
    return X.astype(np.float32), None if T is None else T.astype(np.float32), y, names, encoder.name


def embed_pixels(name: str, pixels: np.ndarray) -> np.ndarray:
    """(m, d) float32: more Fashion-MNIST-sized pixels (m, 28, 28) uint8 embedded by bench encoder `name` exactly
    as its train features were (e.g. re-encoded near-copies of train images): the demo encoder's network, the
    offline encoder as fitted on the 60,000 train images (from its cache), the weak encoder's seeded network."""
    import selector
    if name == "demo":
        from selector.encoders.demo import train_demo_encoder
        return train_demo_encoder(cache_dir=cache_dir())._embed_pixels(pixels, 256).astype(np.float32)
    if name == "offline":
        from selector.encoders.offline import _embed, _pixels_to_input     # the fitted features, on new pixels
        params = selector.open_encoder("offline", cache_dir=cache_dir()).fit(selector.open_source("demo"))
        return _embed(params, _pixels_to_input(pixels, params))
    if name == "weak":
        return _weak_embed(_weak_model(), pixels)
    raise SystemExit(f"unknown bench encoder {name!r}; choose one of {', '.join(ENCODERS)}")


# ------------------------------------------------------------------------------------------- weak encoder
def _weak_net(n_classes: int):
    import torch
    from torch import nn

    class WeakNet(nn.Module):
        def __init__(self):
            super().__init__()
            side = WEAK["side"]
            self.image = nn.Sequential(nn.Flatten(), nn.Linear(side * side, WEAK["hidden"]), nn.ReLU(),
                                       nn.Linear(WEAK["hidden"], WEAK["dim"]))
            self.classes = nn.Parameter(torch.randn(n_classes, WEAK["dim"]) * 0.1)

        def embed(self, x):
            return nn.functional.normalize(self.image(x), dim=-1)

        def forward(self, x):
            return 10.0 * self.embed(x) @ nn.functional.normalize(self.classes, dim=-1).T

    return WeakNet()


def _weak_input(pixels):
    import torch
    x = torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255.0).unsqueeze(1)
    return torch.nn.functional.avg_pool2d(x, 28 // WEAK["side"]) - 0.286


def _weak_train():
    """Train the weak encoder on TEST half B's first WEAK images -> (net, info)."""
    import torch
    from selector.encoders.demo import evaluation_rows, load_fashion_mnist_arrays
    pix, lab = load_fashion_mnist_arrays("test")
    rows = evaluation_rows(len(lab))[:WEAK["images"]]
    torch.manual_seed(WEAK["seed"])
    gen = torch.Generator().manual_seed(WEAK["seed"])
    net = _weak_net(int(lab.max()) + 1)
    x, y = _weak_input(pix[rows]), torch.from_numpy(lab[rows])
    opt = torch.optim.Adam(net.parameters(), lr=WEAK["lr"])
    for _ in range(WEAK["epochs"]):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), 32):
            idx = perm[s:s + 32]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    info = {"recipe": WEAK, "train_split": "test", "train_rows": f"index % 2 == 1, first {len(rows)}",
            "torch": torch.__version__}
    return net.eval(), info


def _weak_model():
    """(net, info): the weak encoder, trained now (seconds; seeded, one thread, so the same net every time)."""
    import torch
    with torch.random.fork_rng(devices=[]):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _weak_train()
        finally:
            torch.set_num_threads(threads)


def _weak_embed(model, pixels) -> np.ndarray:
    import torch
    net = model[0]
    with torch.inference_mode():
        return np.concatenate([net.embed(_weak_input(pixels[s:s + 4096])).numpy()
                               for s in range(0, len(pixels), 4096)]).astype(np.float32)


def _weak_features(train_pixels):
    """(X, T, description) of the weak encoder on the train pixels, from the cache or computed now."""
    import torch
    key = hashlib.sha1(json.dumps(WEAK, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_dir() / "bench_encoders"
    data_path, meta_path = folder / f"weak_{key}.npz", folder / f"weak_{key}.json"
    if data_path.is_file() and meta_path.is_file():
        data = data_path.read_bytes()
        meta = json.loads(meta_path.read_text())
        if meta.get("sha1") == hashlib.sha1(data).hexdigest():
            with np.load(io.BytesIO(data)) as z:
                return z["X"], z["T"], meta["description"]
    t0 = time.perf_counter()
    net, info = _weak_model()
    X = _weak_embed((net, info), train_pixels)
    with torch.inference_mode():
        T = torch.nn.functional.normalize(net.classes, dim=-1).numpy().astype(np.float32)
    desc = (f"weak bench encoder (MLP over {WEAK['side']}x{WEAK['side']} pixels, trained CLIP-style on "
            f"{WEAK['images']} Fashion-MNIST test images of half B)")
    buf = io.BytesIO()
    np.savez(buf, X=X, T=T)
    from selector.files import atomic_write_bytes
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(data_path, buf.getvalue())
    atomic_write_bytes(meta_path, json.dumps(dict(info, description=desc, sha1=hashlib.sha1(buf.getvalue())
                                                  .hexdigest(), seconds=round(time.perf_counter() - t0, 1)),
                                             indent=1).encode())
    return X, T, desc
