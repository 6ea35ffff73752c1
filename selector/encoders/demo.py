"""The offline demo encoder: a stand-in for CLIP's two towers when no CLIP weights can be downloaded.

A small CNN (the "image tower") and a learned table of class embeddings (the "text tower") are trained
CLIP-style - cross-entropy over cosine(image embedding, class embedding) / temperature - on the
Fashion-MNIST TEST split, half A only (rows with index % 2 == 0, 5,000 images). Half B (index % 2 == 1)
is never trained on; the accuracy measured there is stored next to the weights. The Fashion-MNIST TRAIN
split (the set the app inspects) is never seen, so its embeddings are honest held-out features.

The default recipe's weights ship with the package (``selector/assets/demo_encoder/``, under 1 MB, with a
json recording the seed, the recipe, the accuracy on half B and the weights' sha1), so the demo starts
without training. ``python -m selector.encoders.demo`` retrains them from scratch with the same recipe
and compares the result with the shipped file. Any other recipe (seed, epochs, n_train) is trained once
(1-3 minutes on 2 CPU cores) and cached under ``cache_dir/demo_encoder/``; later calls load it in well
under a second.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
import time
from pathlib import Path

import numpy as np

from selector.encoders.base import PromptTower, check_batch, check_prompts, class_prompts, encode_image_rows
from selector.errors import InputError, describe_rows
from selector.files import atomic_write_bytes, cache_problem, clear_way, unwritable
from selector.progress import Progress, ensure
from selector.runtime import n_threads, torch_threads
from selector.sources.torchvision_sets import FASHION_MNIST_CLASSES, load_fashion_mnist

log = logging.getLogger(__name__)

ARCH_VERSION = 1          # bump when the network or the training recipe changes (invalidates caches)
EMBED_DIM = 128
DEFAULT_EPOCHS = 12
SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "demo_encoder"   # the default recipe's weights
_MEAN, _STD = 0.2860, 0.3530   # Fashion-MNIST pixel statistics (0..1 scale)


# ----------------------------------------------------------------------------------------------- data
def load_fashion_mnist_arrays(split: str = "test", root=None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST as arrays in file order: images (n,28,28) uint8 and labels (n,) int64 (never downloads)."""
    ds = load_fashion_mnist(split=split, root=root, download=False)
    return np.ascontiguousarray(ds.pixels, dtype=np.uint8), np.asarray(ds.labels, dtype=np.int64)


def training_rows(n_test: int = 10_000) -> np.ndarray:
    """Rows of the Fashion-MNIST TEST split the demo encoder trains on: half A (index % 2 == 0)."""
    return np.arange(0, n_test, 2)


def evaluation_rows(n_test: int = 10_000) -> np.ndarray:
    """Rows of the Fashion-MNIST TEST split kept clean for evaluation: half B (index % 2 == 1)."""
    return np.arange(1, n_test, 2)


# ---------------------------------------------------------------------------------------------- model
def _build_net(embed_dim: int = EMBED_DIM, n_classes: int = len(FASHION_MNIST_CLASSES)):
    import torch
    from torch import nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.MaxPool2d(2)]

    class DemoNet(nn.Module):
        """Image tower: (b,1,28,28) -> (b,d); text tower: a (C,d) table of class embeddings; logits are
        scaled cosines, exactly like CLIP's zero-shot classifier."""

        def __init__(self):
            super().__init__()
            self.image = nn.Sequential(*block(1, 32), *block(32, 64), *block(64, 128),   # 28 -> 14 -> 7 -> 3
                                       nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 9, embed_dim))
            self.classes = nn.Parameter(torch.randn(n_classes, embed_dim) * 0.1)
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

        def embed_images(self, x):
            return nn.functional.normalize(self.image(x), dim=-1)

        def embed_classes(self):
            return nn.functional.normalize(self.classes, dim=-1)

        def forward(self, x):
            scale = self.logit_scale.clamp(max=float(np.log(100.0))).exp()
            return scale * self.embed_images(x) @ self.embed_classes().t()

    return DemoNet()


def _to_input(pixels: np.ndarray):
    """(n,28,28) uint8 -> (n,1,28,28) float tensor, normalised."""
    import torch
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8)).float().div_(255.0)
    return x.sub_(_MEAN).div_(_STD).unsqueeze(1)


def _augment(x, gen, shift: int = 0):
    """Light augmentation on a batch: horizontal flips and (optionally) shifts of up to `shift` px."""
    import torch
    n = x.shape[0]
    if shift:
        xp = torch.nn.functional.pad(x, (shift,) * 4, value=-_MEAN / _STD)
        ar = torch.arange(28)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        rows = (dy[:, None] + ar)[:, None, :, None].expand(n, 1, 28, 28 + 2 * shift)
        x = torch.gather(torch.gather(xp, 2, rows), 3, (dx[:, None] + ar)[:, None, None, :].expand(n, 1, 28, 28))
    flip = torch.rand(n, generator=gen) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    return x


def _accuracy(net, pixels: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
    import torch
    net.eval()
    correct = 0
    with torch.inference_mode():
        for s in range(0, len(pixels), batch):
            correct += int((net(_to_input(pixels[s:s + batch])).argmax(1).numpy() == labels[s:s + batch]).sum())
    return correct / max(len(pixels), 1)


def _train(pixels, labels, *, seed, epochs, progress: Progress, batch_size=128, lr=4e-3, smoothing=0.1, shift=0):
    """CLIP-style training: cross-entropy over scaled cosines between image and class embeddings."""
    import torch
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = _build_net()
    x_all, y_all = _to_input(pixels), torch.from_numpy(np.asarray(labels, dtype=np.int64))
    n = len(x_all)
    steps = max(1, math.ceil(n / batch_size))
    decay = [p for name, p in net.named_parameters() if p.ndim >= 2 and name != "classes"]
    rest = [p for name, p in net.named_parameters() if not (p.ndim >= 2 and name != "classes")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.25)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)
    done = 0
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            loss = loss_fn(net(_augment(x_all[idx], gen, shift)), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            progress("training demo encoder", done, epochs * steps)
    return net.eval()


# -------------------------------------------------------------------------------------------- encoder
class DemoEncoder(PromptTower):
    """The offline demo encoder: Encoder protocol over the trained DemoNet. Image embeddings are unit-norm
    (d=128); encode_texts maps each prompt of class_prompts(FASHION_MNIST_CLASSES) to its class embedding."""

    def __init__(self, net, info: dict, weights_sha1: str, *, num_workers: int = 0):
        """net: the trained DemoNet, or the bytes of its checked state dict (then built on first use: a re-open
        whose embeddings are cached never imports torch)."""
        self._net, self._net_lock = (None, threading.Lock()) if isinstance(net, bytes) else (net.eval(), None)
        self._weights = net if isinstance(net, bytes) else None
        self._tower, self._tower_lock = None, threading.Lock()
        self.info = dict(info)
        self.num_workers = num_workers
        self.cacheable = True
        n_train = info.get("n_train", 5000)
        self.name = (f"offline demo encoder (CNN trained on Fashion-MNIST test half A, {n_train:,} images; "
                     "not CLIP)")
        self.cache_key = f"demo|{weights_sha1}|gray28 mean{_MEAN} std{_STD}|v{ARCH_VERSION}"
        self._prompt_index = {}
        for k, c in enumerate(FASHION_MNIST_CLASSES):
            for p in {class_prompts([c])[0], class_prompts([c], template="{}")[0], c}:
                self._prompt_index[p.strip().lower()] = k

    @property
    def net(self):
        if self._net is None:
            with self._net_lock:
                if self._net is None:
                    self._net, self._weights = _net_from_state(self._weights).eval(), None
        return self._net

    @property
    def image_tower(self):
        """net.embed_images, prepared once for CPU inference (selector.encoders.inference.cpu_tower)."""
        if self._tower is None:
            with self._tower_lock:
                if self._tower is None:
                    from torch.nn.functional import normalize
                    from selector.encoders.inference import cpu_tower
                    convs = cpu_tower(self.net.image, (1, 28, 28))
                    self._tower = lambda x: normalize(convs(x), dim=-1)
        return self._tower

    @property
    def accuracy(self) -> float | None:
        """Zero-shot accuracy on Fashion-MNIST test half B (never trained on)."""
        return self.info.get("accuracy_half_b")

    def _embed_pixels(self, pixels: np.ndarray, batch_size: int) -> np.ndarray:
        import torch
        out = []
        with torch.inference_mode():
            for s in range(0, len(pixels), batch_size):
                out.append(self.image_tower(_to_input(pixels[s:s + batch_size])).numpy())
        return np.concatenate(out).astype(np.float32)

    def encode_images(self, dataset, rows, *, batch_size: int = 256, progress: Progress | None = None) -> np.ndarray:
        """(len(rows), 128) float32 unit-norm embeddings of the images as 28x28 greyscale; NaN if undecodable."""
        batch_size = check_batch(batch_size)
        progress = ensure(progress)
        rows = np.asarray(rows, dtype=np.int64)
        pix = getattr(dataset, "pixels", None)
        if pix is not None and pix.ndim == 3 and pix.shape[1:] == (28, 28) and pix.dtype == np.uint8:
            out = np.empty((len(rows), EMBED_DIM), dtype=np.float32)   # fast path: Fashion-MNIST-like arrays
            for s in range(0, len(rows), batch_size):
                out[s:s + batch_size] = self._embed_pixels(pix[rows[s:s + batch_size]], batch_size)
                progress("embedding images", min(s + batch_size, len(rows)), len(rows))
            return out
        return encode_image_rows(dataset, rows, self.preprocess, self.embed_batch, batch_size=batch_size,
                                 num_workers=self.num_workers, progress=progress)

    @staticmethod
    def preprocess(image):
        """PIL image -> (1,28,28) normalised tensor (greyscale, 28x28)."""
        return _gray28(image)

    def embed_batch(self, x) -> np.ndarray:
        """(b, 128) float32 unit-norm embeddings of a preprocessed (b,1,28,28) tensor batch."""
        import torch
        with torch.inference_mode():
            return self.image_tower(x).numpy()

    def encode_texts(self, prompts: list[str]) -> np.ndarray:
        """(len(prompts), 128) float32: the class embedding of each prompt's class."""
        import torch
        prompts = check_prompts(prompts)
        unknown = [p for p in prompts if p.strip().lower() not in self._prompt_index]
        if unknown:
            raise InputError(
                f"The offline demo encoder knows only the Fashion-MNIST classes; {len(unknown)} prompt(s) are not "
                f"among them: {describe_rows([repr(u) for u in unknown], 3)}. Expected prompts like "
                f"{class_prompts(FASHION_MNIST_CLASSES)[:2]} (class_prompts(FASHION_MNIST_CLASSES)). For other "
                "datasets use the open_clip encoder, or the offline encoder (no download).")
        with torch.inference_mode():
            table = self.net.embed_classes().numpy().astype(np.float32)
        return table[[self._prompt_index[p.strip().lower()] for p in prompts]]


def _gray28(image):
    """PIL image -> (1,28,28) normalised tensor: greyscale, resized to 28x28."""
    import torch
    im = image.convert("L")
    if im.size != (28, 28):
        im = im.resize((28, 28), resample=2)  # bilinear
    x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).float().div_(255.0)
    return x.sub_(_MEAN).div_(_STD).unsqueeze(0)


# ---------------------------------------------------------------------------------------------- cache
def _load_cached(weights: Path, meta: Path) -> DemoEncoder | None:
    """The encoder whose weights and json are at these paths, checked against the sha1 in the json; its network
    is built from them on first use. None (with a warning) when either is missing or damaged."""
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())      # the weights' sha1 in it checks them
        data = weights.read_bytes()
        sha = hashlib.sha1(data).hexdigest()
        if info.get("weights_sha1") != sha:
            raise ValueError("weights checksum does not match the json")
    except Exception as e:  # noqa: BLE001 - any damage means "train again"
        log.warning("Cached demo encoder %s is unusable (%s); training a new one.", weights, e)
        return None
    return DemoEncoder(data, info, sha)


def _net_from_state(data: bytes):
    """The DemoNet of a checked state dict (the bytes torch.save wrote)."""
    import torch
    net = _build_net()
    net.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return net


def training_data(n_train: int | None = None, *, arrays=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels, labels, rows) the demo encoder trains on: Fashion-MNIST TEST rows with index % 2 == 0
    (the first n_train of them when given). arrays: the test split's (pixels, labels) if already loaded."""
    pixels, labels = arrays if arrays is not None else load_fashion_mnist_arrays("test")
    rows = training_rows(len(labels))
    if n_train is not None:
        if not isinstance(n_train, int) or not 10 <= n_train <= len(rows):
            raise InputError(f"n_train must be an integer in [10, {len(rows)}], got {n_train!r}.")
        rows = rows[:n_train]
    return pixels[rows], labels[rows], rows


def train_demo_encoder(*, cache_dir, seed: int = 0, epochs: int | None = None, n_train: int | None = None,
                       n_eval: int | None = None, shipped: bool = True,
                       progress: Progress | None = None) -> DemoEncoder:
    """The offline demo encoder: loaded from cache_dir/demo_encoder/ when trained before (< 1 s), else from
    the package's shipped weights when the recipe is theirs (checksum verified; shipped=False skips them),
    else trained on Fashion-MNIST test half A (1-3 minutes on 2 CPU cores) and cached atomically.

    epochs / n_train (first n of the 5,000 half-A images) / n_eval (first n of the 5,000 half-B images the
    stored accuracy is measured on) default to the full recipe; tests pass small values."""
    progress = ensure(progress)
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    if not isinstance(epochs, int) or epochs < 1:
        raise InputError(f"epochs must be a positive integer, got {epochs!r}.")
    if not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}.")
    folder = Path(cache_dir).expanduser() / "demo_encoder"
    if n_eval is not None and (not isinstance(n_eval, int) or n_eval < 1):
        raise InputError(f"n_eval must be a positive integer (or None for all of half B), got {n_eval!r}.")
    stem = f"demo_v{ARCH_VERSION}_seed{seed}_e{epochs}_n{n_train or 'all'}" + (f"_eval{n_eval}" if n_eval else "")
    weights, meta = folder / f"{stem}.pt", folder / f"{stem}.json"
    enc = _load_cached(weights, meta)
    if enc is None and shipped and (SHIPPED / weights.name).is_file():
        enc = _load_cached(SHIPPED / weights.name, SHIPPED / meta.name)
        if enc is not None:
            log.info("Using the shipped demo encoder weights %s (sha1 %s, accuracy %.3f on test half B)",
                     weights.name, enc.info.get("weights_sha1"), enc.info.get("accuracy_half_b", float("nan")))
    if enc is not None:
        return enc

    import torch
    all_pix, all_lab = load_fashion_mnist_arrays("test")
    pixels, labels, rows = training_data(n_train, arrays=(all_pix, all_lab))
    held = evaluation_rows(len(all_lab))[:n_eval]
    threads = n_threads()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch_threads(threads):
        with torch.random.fork_rng(devices=[]):
            net = _train(pixels, labels, seed=seed, epochs=epochs, progress=progress)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        progress("evaluating demo encoder on test half B", 0, 1)
        acc = _accuracy(net, all_pix[held], all_lab[held])
        progress("evaluating demo encoder on test half B", 1, 1)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    data = buf.getvalue()
    info = {"seed": seed, "epochs": epochs, "n_train": int(len(rows)), "arch_version": ARCH_VERSION,
            "embed_dim": EMBED_DIM, "train_split": "test", "train_rows": "index % 2 == 0 (half A)",
            "train_rows_sha1": hashlib.sha1(rows.astype("<i8").tobytes()).hexdigest(),
            "eval_rows": "index % 2 == 1 (half B)", "n_eval": int(len(held)), "accuracy_half_b": round(acc, 4),
            "training_time_s": round(wall, 1), "training_cpu_s": round(cpu, 1),
            "torch_threads": threads, "torch": torch.__version__,
            "weights_sha1": hashlib.sha1(data).hexdigest(), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        atomic_write_bytes(clear_way(weights), data)
        atomic_write_bytes(clear_way(meta), json.dumps(info, indent=1).encode())
    except OSError as exc:
        cache_problem(unwritable("demo encoder", folder, exc))
    log.info("Trained the offline demo encoder in %.1f s: accuracy %.3f on Fashion-MNIST test half B", wall, acc)
    return DemoEncoder(net, info, info["weights_sha1"])


def main(argv=None) -> int:
    """Retrain the shipped demo encoder from scratch and compare it with the shipped file."""
    import argparse
    import shutil
    import tempfile
    p = argparse.ArgumentParser(prog="python -m selector.encoders.demo", description=main.__doc__)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="folder to write the new .pt and .json into (e.g. "
                                             "selector/assets/demo_encoder to replace the shipped weights)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        enc = train_demo_encoder(cache_dir=tmp, seed=args.seed, shipped=False)
        new = enc.info
        old_meta = SHIPPED / f"demo_v{ARCH_VERSION}_seed{args.seed}_e{DEFAULT_EPOCHS}_nall.json"
        old = json.loads(old_meta.read_text()) if old_meta.is_file() else {}
        print(f"retrained: accuracy {new['accuracy_half_b']:.4f} on test half B, sha1 {new['weights_sha1']}, "
              f"{new['training_time_s']:.0f} s")
        if old:
            same = "identical weights" if old["weights_sha1"] == new["weights_sha1"] else "different weights"
            print(f"shipped:   accuracy {old['accuracy_half_b']:.4f}, sha1 {old['weights_sha1']} ({same}; "
                  "bit-identical training needs the same torch build and CPU)")
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            for f in (Path(tmp) / "demo_encoder").iterdir():
                shutil.copy2(f, out / f.name)
            print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
