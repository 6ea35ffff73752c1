"""Standard labelled sets: Fashion-MNIST (Debian's package, a local copy, or a download) and the torchvision
CIFAR sets. Offline, a missing set fails within seconds with the ways to provide it."""
from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import zlib
from pathlib import Path

import numpy as np

from selector.dataset import ORIGIN, Dataset, build_dataset
from selector.errors import InputError, OfflineError
from selector.lazy import LazyArray
from selector.network import url_reachable
from selector.registry import Choice, Registry

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
DATA_CACHE = os.environ.get("SELECTOR_DATA_DIR", str(Path.home() / ".cache" / "selector" / "data"))
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
SPLITS = ("train", "test")

TORCHVISION_SETS = Registry(
    "torchvision dataset",
    Choice("fashion-mnist", "Fashion-MNIST (70,000 28x28 greyscale images, 10 classes)"),
    Choice("cifar10", "CIFAR-10 (60,000 32x32 colour images, 10 classes)", value="cifar-10-batches-py"),
    Choice("cifar100", "CIFAR-100 (60,000 32x32 colour images, 100 classes)", value="cifar-100-python"),
)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    return url_reachable(url, timeout=timeout)


def _check_split(split) -> str:
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
    return split


_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _idx_header(data: bytes) -> tuple[str, tuple]:
    """(stored dtype, shape) from the first bytes of an inflated idx file; ValueError if they are not one."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES or len(data) < 4 + 4 * data[3]:
        raise ValueError("not an idx file (bad magic number)")
    return _IDX_TYPES[data[2]], tuple(int(x) for x in np.frombuffer(data, ">u4", data[3], 4))


def _lazy_idx(path: Path) -> tuple[LazyArray, str]:
    """(the idx file's array as a LazyArray, a digest of the file's bytes): the header is read now, the values
    (a 47 MB inflate for Fashion-MNIST train, about 0.4 s) on first use, and only if the file still has those
    bytes. The digest stands in for the values in the dataset's fingerprint, so a re-open inflates nothing."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        gz = raw[:2] == b"\x1f\x8b"
        dtype, shape = _idx_header(zlib.decompressobj(31).decompress(raw, 4 + 4 * 255) if gz else raw[:4 + 4 * 255])
        size = int.from_bytes(raw[-4:], "little") if gz else len(raw)   # gzip's trailer: the inflated size mod 2^32
        want = 4 + 4 * len(shape) + math.prod(shape) * np.dtype(dtype).itemsize
        if size != want % (2 ** 32 if gz else 2 ** 64):
            raise ValueError(f"header says {shape} but the file holds {size - 4 - 4 * len(shape)} bytes of values "
                             "(truncated?)")
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise InputError(f"Cannot read idx file {path}: {e}. Replace it with an intact copy.") from e
    sha1 = hashlib.sha1(raw).hexdigest()

    def read():
        with open(path, "rb") as f:
            now = f.read()
        if hashlib.sha1(now).hexdigest() != sha1:
            raise InputError(f"{path} changed after it was opened; open the dataset again.")
        return _read_idx(path, now)

    return LazyArray(shape, np.dtype(dtype).newbyteorder("="), read), f"idx sha1 {sha1}"


def _read_idx(path: Path, raw: bytes | None = None) -> np.ndarray:
    """Read an idx file (raw or .gz; its bytes `raw` if already read) into a numpy array of its stored dtype
    and shape."""
    try:
        if raw is None:
            with open(path, "rb") as f:
                raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        dtype, shape = _idx_header(raw)
        arr = np.frombuffer(raw, dtype, offset=4 + 4 * len(shape))
        if arr.size != math.prod(shape):
            raise ValueError(f"header says {shape} but holds {arr.size} values (truncated?)")
    except (OSError, EOFError, ValueError) as e:
        raise InputError(f"Cannot read idx file {path}: {e}. Replace it with an intact copy.") from e
    return arr.reshape(shape).astype(arr.dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for p in (folder / stem, folder / (stem + ".gz")):
        if p.is_file():
            return p
    return None


def load_fashion_mnist(*, split="train", root=None, download=True) -> Dataset:
    """Fashion-MNIST split ("train" 60000 / "test" 10000); pixels (n,28,28) uint8. Looks in root,
    the Debian dir, DATA_CACHE/FashionMNIST/raw, then downloads there (OfflineError fast when offline)."""
    _check_split(split)
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    cache = Path(DATA_CACHE).expanduser()
    dirs = ([Path(root).expanduser(), Path(root).expanduser() / "FashionMNIST" / "raw"] if root else [])
    dirs += [Path(DEBIAN_FASHION_MNIST), cache / "FashionMNIST" / "raw"]
    found = None
    for d in dirs:
        files = [_find_idx(d, s) for s in stems]
        if all(files):
            found = files
            break
    if found is None:
        target = Path(root).expanduser() if root else cache
        how = ("download disabled" if not download else
               f"download failed: {FASHION_MNIST_URL} unreachable (offline, or downloads turned off by SELECTOR_OFFLINE?)")
        fix = (f"Fashion-MNIST {split} files ({stems[0]}[.gz], {stems[1]}[.gz]) not found in: "
               f"{', '.join(map(str, dirs))}; {how}. Fix: `apt-get install dataset-fashion-mnist` (puts them "
               f"in {DEBIAN_FASHION_MNIST}), or pass root= a folder holding the 4 idx files, or retry with network.")
        if not download or not _reachable(FASHION_MNIST_URL):
            raise OfflineError(fix)
        try:
            from torchvision.datasets import FashionMNIST
            FashionMNIST(str(target), train=split == "train", download=True)
        except Exception as e:  # noqa: BLE001 - network/disk failures all mean "get the files another way"
            raise OfflineError(f"{fix} ({type(e).__name__}: {e})") from e
        found = [_find_idx(target / "FashionMNIST" / "raw", s) for s in stems]
    (pixels, digest), labels = _lazy_idx(found[0]), _read_idx(found[1]).astype(np.int64)
    if pixels.ndim != 3 or pixels.dtype != np.uint8 or labels.shape != (len(pixels),) or \
            labels.min(initial=0) < 0 or labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise InputError(f"{found[0]} / {found[1]} are not a Fashion-MNIST pair: images {pixels.shape} "
                         f"{pixels.dtype}, labels {labels.shape} in [{labels.min()}, {labels.max()}].")
    log.info("Fashion-MNIST %s: %d images from %s", split, len(labels), found[0].parent)
    return _array_dataset("fashion-mnist", split, pixels, labels, FASHION_MNIST_CLASSES,
                          origin=record_locators([found[0]], len(labels)), pixels_digest=digest)


def record_locators(files, n: int) -> list[str]:
    """Where each of n in-memory samples was read from: `<file>#<record>`, the records split evenly over
    `files` in order (CIFAR-10's five training batches hold 10,000 each)."""
    per = -(-n // max(len(files), 1))
    return [f"{files[k // per]}#{k % per}" for k in range(n)]


def _array_dataset(name, split, pixels, labels, class_names, *, origin, pixels_digest=None) -> Dataset:
    n = len(labels)
    ids = [f"{name}/{split}/{k:05d}" for k in range(n)]
    names = np.asarray(class_names, dtype=object)[labels]
    return build_dataset(f"{name}/{split}", ids, [""] * n, list(names), class_names=class_names,
                         extra={"split": [split] * n, ORIGIN: origin}, pixels=pixels, pixels_digest=pixels_digest)


def load_torchvision(name: str = "fashion-mnist", *, split="train", root=None, download=True) -> Dataset:
    """A set from TORCHVISION_SETS by name; pixels (n,H,W[,3]) uint8 in memory. Files live in root (default
    DATA_CACHE); download only when asked, OfflineError fast when offline."""
    key = str(name).lower().replace("_", "-")
    key = "fashion-mnist" if key == "fashionmnist" else key
    folder_name = TORCHVISION_SETS.get(key).value
    if key == "fashion-mnist":
        return load_fashion_mnist(split=split, root=root, download=download)
    _check_split(split)
    folder = Path(root or DATA_CACHE).expanduser()
    fix = (f"{key} not found in {folder}; " + ("download disabled" if not download else
           f"{CIFAR_URL} unreachable (offline, or downloads turned off by SELECTOR_OFFLINE?)") + f". Fix: put the extracted "
           f"{folder_name}/ folder (from {CIFAR_URL}) in {folder}, or retry with network.")
    if not (folder / folder_name).is_dir() and (not download or not _reachable(CIFAR_URL)):
        raise OfflineError(fix)  # checked before importing torchvision: fails in milliseconds
    try:
        from torchvision import datasets
    except ImportError as e:
        raise InputError("torchvision is not installed: `pip install torchvision`.") from e
    cls = datasets.CIFAR10 if key == "cifar10" else datasets.CIFAR100
    try:
        ds = cls(str(folder), train=split == "train", download=download)
    except Exception as e:  # noqa: BLE001 - corrupt files or a failed download: say how to provide them
        raise OfflineError(f"{key} in {folder} is unreadable or its download failed ({type(e).__name__}: {e}). "
                           f"Fix: put the extracted {folder_name}/ folder there, or retry with network.") from e
    files = [str(Path(ds.root) / ds.base_folder / f) for f, _ in (ds.train_list if split == "train" else ds.test_list)]
    return _array_dataset(key, split, np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64),
                          tuple(ds.classes), origin=record_locators(files, len(ds.targets)))
