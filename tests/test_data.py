"""selector.data: loaders, validation messages, Fashion-MNIST search order, atomic and safe writes."""
import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from selector import sources, writer
from selector.files import atomic_save_npy, atomic_write_bytes
from selector.dataset import Dataset
from selector.errors import InputError, OfflineError
from selector.sources import torchvision_sets as tvs


def write_image(path: Path, color=(255, 0, 0), size=(8, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_idx(path: Path, arr: np.ndarray, gz=True):
    """idx format: 0,0, dtype code (0x08 = uint8), ndim, then big-endian uint32 dims, then the data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, ">u4").tobytes() + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)


def write_fake_fmnist(folder: Path, n=20, prefix="train", gz=True, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", pixels, gz)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return pixels, labels


@pytest.fixture
def no_fmnist(tmp_path, monkeypatch):
    """Point the Debian dir and the download cache at empty folders."""
    monkeypatch.setattr(tvs, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian"))
    monkeypatch.setattr(tvs, "DATA_CACHE", str(tmp_path / "no-cache"))
    return tmp_path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    for k in range(3):
        write_image(root / "cat" / f"c{k}.png", (200, 10 * k, 0))
        write_image(root / "dog" / f"d{k}.jpg", (0, 10 * k, 200))
    write_image(root / "dog" / "nested" / "d9.png")
    write_image(root / "dog" / ".hidden.png")
    write_image(root / ".trash" / "x.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "readme.md").write_text("top-level file, not a class")
    return root


# ------------------------------------------------------------------ image folder

def test_image_folder(folder):
    ds = sources.load_image_folder(folder)
    assert ds.class_names == ("cat", "dog") and len(ds) == 7
    assert list(ds.table.columns) == ["id", "path", "label"]
    assert ds.table["id"].tolist()[:3] == ["cat/c0.png", "cat/c1.png", "cat/c2.png"]
    assert "dog/nested/d9.png" in set(ds.table["id"])
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 1] and ds.labels.dtype == np.int64
    assert (ds.table["label"] == np.array(ds.class_names)[ds.labels]).all()
    im = ds.image(0)
    assert im.mode == "RGB" and im.size == (8, 6) and im.getpixel((0, 0)) == (200, 0, 0)
    assert any("non-image" in p and "notes.txt" in p for p in ds.problems)


@pytest.mark.parametrize("make", ["missing", "empty", "files-only", "empty-classes"])
def test_image_folder_bad_layout(tmp_path, make):
    root = tmp_path / "r"
    if make != "missing":
        root.mkdir()
    if make == "files-only":
        write_image(root / "a.png")
    if make == "empty-classes":
        (root / "cat").mkdir()
        (root / "cat" / "x.txt").write_text("x")
    with pytest.raises(InputError, match="Expected layout: root/<class name>/<image file>"):
        sources.load_image_folder(root)


def test_single_sample_class_noted_and_undecodable_image(tmp_path):
    root = tmp_path / "r"
    write_image(root / "a" / "1.png"); write_image(root / "a" / "2.png")
    (root / "b").mkdir(); (root / "b" / "broken.png").write_bytes(b"not a png at all")
    ds = sources.load_image_folder(root)
    assert any("single sample" in p and "b" in p and "at least 2 per class for diversity" in p for p in ds.problems)
    with pytest.raises(InputError, match=r"Cannot decode image .*broken\.png \(row 2\)"):
        ds.image(2)


# ------------------------------------------------------------------ manifests

def make_manifest(tmp_path, rows, name="m.csv"):
    df = pd.DataFrame(rows)
    path = tmp_path / name
    df.to_csv(path, index=False) if name.endswith(".csv") else df.to_parquet(path, index=False)
    return path


@pytest.fixture
def files(tmp_path):
    return [write_image(tmp_path / "img" / f"{k}.png", (k * 40, 0, 0)).name for k in range(4)]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_manifest_good(tmp_path, files, suffix):
    rows = {"path": [f"img/{f}" for f in files], "label": ["b", "a", "b", "a"],
            "id": ["w", "x", "y", "z"], "caption": ["", "c1", "c2", "c3"], "split": ["train"] * 4}
    ds = sources.load_manifest(make_manifest(tmp_path, rows, f"m.{suffix}"))
    assert ds.class_names == ("a", "b") and ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.table["id"].tolist() == ["w", "x", "y", "z"]
    assert list(ds.table.columns) == ["id", "path", "label", "caption", "split"]
    assert Path(ds.table["path"][1]).is_absolute() and ds.image(1).getpixel((0, 0)) == (40, 0, 0)
    assert ds.problems == []


def test_manifest_root_and_numeric_class_order(tmp_path, files):
    sub = tmp_path / "elsewhere"; sub.mkdir()
    path = make_manifest(sub, {"path": files, "label": ["10", "2", "2", "10"]})
    ds = sources.load_manifest(path, root=tmp_path / "img")
    assert ds.class_names == ("2", "10") and ds.table["id"].tolist() == files


def test_manifest_encodings(tmp_path, files):
    (tmp_path / "bom.csv").write_bytes("\ufeffpath,label\nimg/0.png,a\n".encode("utf-8"))
    assert sources.load_manifest(tmp_path / "bom.csv").class_names == ("a",)
    (tmp_path / "latin.csv").write_bytes("path,label\nimg/0.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="Cannot read manifest .*UTF-8"):
        sources.load_manifest(tmp_path / "latin.csv")


def test_manifest_missing_files_skipped(tmp_path, files):
    path = make_manifest(tmp_path, {"path": ["img/0.png", "img/gone.png", "img/2.png"], "label": ["a", "b", "a"]})
    ds = sources.load_manifest(path)
    assert len(ds) == 2 and ds.table["id"].tolist() == ["img/0.png", "img/2.png"]
    assert ds.class_names == ("a",)
    assert any("1 row(s)" in p and "2:img/gone.png" in p for p in ds.problems)


@pytest.mark.parametrize("rows, name, pattern", [
    ({"file": ["img/0.png"], "label": ["a"]}, "m.csv", r"lacks column\(s\) \['path'\].*found \['file', 'label'\]"),
    ({"path": ["img/0.png", "img/1.png", "img/2.png"], "label": ["a", "", "  "]}, "m.csv",
     r"empty `label` in rows 2, 3 \(row 1 = first data row\)"),
    ({"path": ["img/0.png", "img/1.png", "img/2.png"], "label": ["a", None, "b"]}, "m.parquet", r"empty `label` in rows 2 "),
    ({"path": ["img/0.png", "img/1.png", "img/2.png"], "label": ["a", "b", "a"], "id": ["x", "y", "x"]}, "m.csv",
     r"duplicate ids: 'x' \(rows 1 and 3\).*unique id"),
    ({"path": ["img/0.png", "img/0.png"], "label": ["a", "b"]}, "m.csv", r"duplicate paths \(used as ids\)"),
    ({"path": ["nope/1.png", "nope/2.png"], "label": ["a", "b"]}, "m.csv", r"None of the 2 image files.*root="),
    ({"path": ["img/0.png"], "label": ["a"]}, "m.json", r"must be a \.csv or \.parquet"),
    ({"path": [], "label": []}, "m.csv", r"has no rows"),
])
def test_manifest_bad(tmp_path, files, rows, name, pattern):
    if name.endswith(".json"):
        (tmp_path / name).write_text("{}")
        path = tmp_path / name
    else:
        path = make_manifest(tmp_path, rows, name)
    with pytest.raises(InputError, match=pattern):
        sources.load_manifest(path)


# ------------------------------------------------------------------ Fashion-MNIST / torchvision

@pytest.mark.fashion_mnist
@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_debian(split, n):
    ds = tvs.load_fashion_mnist(split=split, download=False)
    assert ds.pixels.shape == (n, 28, 28) and ds.pixels.dtype == np.uint8
    assert np.bincount(ds.labels, minlength=10).tolist() == [n // 10] * 10
    assert ds.class_names == tvs.FASHION_MNIST_CLASSES and ds.name == f"fashion-mnist/{split}"
    assert ds.table["id"][0] == f"fashion-mnist/{split}/00000" and ds.table["path"][0] == ""
    im = ds.image(0)
    assert im.mode == "RGB" and im.size == (28, 28)


@pytest.mark.fashion_mnist
def test_root_wins_over_debian(tmp_path):
    pixels, labels = write_fake_fmnist(tmp_path / "mine", gz=False)
    ds = tvs.load_fashion_mnist(split="train", root=tmp_path / "mine", download=False)
    assert len(ds) == 20 and np.array_equal(ds.pixels, pixels) and np.array_equal(ds.labels, labels)
    # each in-memory sample names the file and record its pixels came from; that record holds them
    file, record = ds.locations()[13].split("#")
    assert Path(file) == tmp_path / "mine" / "train-images-idx3-ubyte" and record == "13"
    assert np.array_equal(tvs._read_idx(Path(file))[int(record)], ds.pixels[13])
    assert ds.table["path"][13] == ""                       # not an image file: nothing opens it as one


def test_search_order_without_debian(no_fmnist):
    tmp = no_fmnist
    write_fake_fmnist(Path(tvs.DATA_CACHE) / "FashionMNIST" / "raw", n=30, prefix="t10k")
    assert len(tvs.load_fashion_mnist(split="test", download=False)) == 30  # torchvision cache layout
    write_fake_fmnist(Path(tvs.DEBIAN_FASHION_MNIST), n=40, prefix="t10k")
    assert len(tvs.load_fashion_mnist(split="test", download=False)) == 40  # Debian before cache
    write_fake_fmnist(tmp / "root" / "FashionMNIST" / "raw", n=50, prefix="t10k")
    ds = tvs.load_torchvision("fashion-mnist", split="test", root=tmp / "root", download=False)
    assert len(ds) == 50 and ds.labels.tolist()[:11] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_empty_root_offline_fails_fast(no_fmnist, monkeypatch):
    empty = no_fmnist / "empty"; empty.mkdir()
    with pytest.raises(OfflineError) as e:
        tvs.load_fashion_mnist(root=empty, download=False)
    msg = str(e.value)
    assert str(empty) in msg and tvs.DEBIAN_FASHION_MNIST in msg and "FashionMNIST/raw" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "download disabled" in msg
    monkeypatch.setattr(tvs, "_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(OfflineError, match="unreachable"):
        tvs.load_fashion_mnist(root=empty, download=True)


def test_reachable_is_bounded_when_the_lookup_hangs(monkeypatch):
    """A DNS lookup that never returns (offline resolvers can take minutes) must not hold the caller."""
    import socket
    import threading
    from selector import network
    never = threading.Event()

    def hang(*args, **kwargs):
        never.wait()
        raise OSError("lookup gave up")
    monkeypatch.setattr(socket, "create_connection", hang)
    answers = []
    probe = threading.Thread(target=lambda: answers.append(network.url_reachable("http://example.invalid/", 0.2)))
    probe.start()
    probe.join(60)                      # a liveness bound, far above the 0.2 s timeout: not a speed check
    never.set()
    assert answers == [False]


def test_corrupt_idx(no_fmnist):
    root = no_fmnist / "bad"
    write_fake_fmnist(root)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x03" + b"\0" * 12 + b"xx"))
    with pytest.raises(InputError, match="Cannot read idx file .*truncated"):
        tvs.load_fashion_mnist(root=root, download=False)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_pixels_are_inflated_on_first_use_from_the_bytes_opened(no_fmnist, gz):
    root = no_fmnist / "fm"
    pixels, _ = write_fake_fmnist(root, gz=gz)
    ds = tvs.load_fashion_mnist(root=root, download=False)
    key = ds.fingerprint
    assert not ds.pixels.loaded and ds.pixels.shape == (20, 28, 28)      # the key needs no pixel
    np.testing.assert_array_equal(np.asarray(ds.image(3).convert("L")), pixels[3])
    assert ds.pixels.loaded and tvs.load_fashion_mnist(root=root, download=False).fingerprint == key
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ds)).pixels, pixels)     # e.g. to Ray workers
    reopened = tvs.load_fashion_mnist(root=root, download=False)
    write_fake_fmnist(root, n=20, gz=gz, seed=1)                           # the file is replaced meanwhile
    assert tvs.load_fashion_mnist(root=root, download=False).fingerprint != key
    with pytest.raises(InputError, match="changed after it was opened"):
        reopened.image(0)


def test_torchvision_names(no_fmnist):
    with pytest.raises(InputError, match=r"choose one of: fashion-mnist, cifar10, cifar100"):
        tvs.load_torchvision("imagenet")
    with pytest.raises(OfflineError, match="cifar10 not found .*download disabled"):
        tvs.load_torchvision("cifar10", root=no_fmnist / "empty", download=False)
    assert sources.list_sources() == ["demo", "image-folder", "manifest", "torchvision", "embeddings"]


# ------------------------------------------------------------------ precomputed embeddings

def good_npz(**over):
    rng = np.random.default_rng(0)
    arrs = dict(image_embeddings=rng.normal(size=(6, 4)).astype(np.float32),
                labels=np.array([0, 1, 2, 0, 1, 2]), class_names=np.array(["ant", "bee", "cat"]),
                text_embeddings=rng.normal(size=(3, 4)), paths=np.array([f"p{k}.png" for k in range(6)]))
    arrs.update(over)
    return {k: v for k, v in arrs.items() if v is not None}


def test_embeddings_good(tmp_path):
    np.savez(tmp_path / "e.npz", **good_npz())
    ds = sources.load_embeddings(tmp_path / "e.npz")
    assert ds.embeddings.shape == (6, 4) and ds.embeddings.dtype == np.float32
    assert ds.text_embeddings.shape == (3, 4) and ds.text_embeddings.dtype == np.float32
    assert ds.class_names == ("ant", "bee", "cat") and ds.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.table["path"][0] == str(tmp_path / "p0.png") and ds.table["id"][0] == "e/00000"
    np.savez(tmp_path / "s.npz", **good_npz(labels=np.array(["cat", "ant", "bee", "cat", "ant", "bee"]),
                                            text_embeddings=None, paths=None))
    ds = sources.load_embeddings(tmp_path / "s.npz")
    assert ds.labels.tolist() == [2, 0, 1, 2, 0, 1] and ds.text_embeddings is None and ds.table["path"][0] == ""
    with pytest.raises(InputError, match="embeddings-only dataset"):
        ds.image(0)
    sub = ds.subset(np.array([True, False, True, False, False, False]))
    assert sub.embeddings.shape == (2, 4) and sub.labels.tolist() == [2, 1]


@pytest.mark.parametrize("over, pattern", [
    (dict(class_names=None), r"lacks \['class_names'\]"),
    (dict(image_embeddings=np.zeros(6)), r"`image_embeddings` must be a non-empty 2-D"),
    (dict(image_embeddings=np.where(np.arange(24).reshape(6, 4) % 9 == 5, np.nan, 1.0)),
     r"NaN/inf in rows 1, 3, 5"),
    (dict(image_embeddings=np.full((6, 4), np.inf)), r"rows 0, 1, 2, 3, 4 and 1 more \(6 in all\)"),
    (dict(labels=np.array([0, 1, 2])), r"`labels` must have shape \(6,\)"),
    (dict(labels=np.array([0, 1, 3, 0, -1, 2])), r"out of range \[0, 3\) at rows 2, 4"),
    (dict(labels=np.array(["ant", "bee", "cow", "ant", "yak", "bee"])), r"not in class_names: 'cow', 'yak'"),
    (dict(labels=np.array([0.5] * 6)), r"must be integers or class-name strings"),
    (dict(class_names=np.array(["ant", "bee", "ant"])), r"unique and non-empty.*ant"),
    (dict(class_names=np.array([1, 2, 3])), r"`class_names` must be a 1-D array of strings"),
    (dict(text_embeddings=np.zeros((3, 5))), r"\(C, d\) = \(3, 4\), got \(3, 5\)"),
    (dict(paths=np.array(["a", "b"])), r"`paths` must be \(6,\) strings"),
    (dict(paths=np.array(["a", 1, None, "b", "c", "d"], dtype=object)), r"not object arrays"),
])
def test_embeddings_bad(tmp_path, over, pattern):
    np.savez(tmp_path / "e.npz", **good_npz(**over))
    with pytest.raises(InputError, match=pattern):     # at open, or for NaN rows when the embeddings are first read
        np.asarray(sources.load_embeddings(tmp_path / "e.npz").embeddings)


def test_embeddings_are_read_on_first_use_and_must_still_be_the_bytes_opened(tmp_path):
    np.savez(tmp_path / "e.npz", **good_npz())
    ds = sources.load_embeddings(tmp_path / "e.npz")
    assert ds.fingerprint and ds.embeddings.shape == (6, 4) and not ds.embeddings.loaded   # the key needs no read
    sub = ds.subset(np.array([4, 1]))
    np.testing.assert_array_equal(np.asarray(sub.embeddings), good_npz()["image_embeddings"][[4, 1]])
    assert ds.embeddings.loaded                                   # read once, for the subset too
    np.savez(tmp_path / "f.npz", **good_npz())
    opened = sources.load_embeddings(tmp_path / "f.npz")
    np.savez(tmp_path / "f.npz", **good_npz(image_embeddings=good_npz()["image_embeddings"] + 1))
    with pytest.raises(InputError, match=r"f.npz changed after it was opened .*open it again"):
        np.asarray(opened.embeddings)


def test_embeddings_not_npz(tmp_path):
    (tmp_path / "e.npz").write_bytes(b"garbage")
    with pytest.raises(InputError, match="np.savez"):
        sources.load_embeddings(tmp_path / "e.npz")
    with pytest.raises(InputError, match="does not exist"):
        sources.load_embeddings(tmp_path / "none.npz")


# ------------------------------------------------------------------ writing

DANGER = ["=SUM(A1:A9)", "+1", "-2+3", "@cmd", "\tx", "\ry", "ok", "a=b", "'already"]


def test_csv_injection_round_trip(tmp_path, files):
    table = pd.DataFrame({"id": DANGER, "path": [f"img/{files[k % 4]}" for k in range(9)],
                          "label": ["=bad"] * 5 + ["good"] * 4, "score": np.linspace(-1, 1, 9), "=col": 1})
    safe = writer.csv_safe(table)
    assert safe["id"].tolist()[:6] == ["'" + v for v in DANGER[:6]] and safe["id"].tolist()[6:] == DANGER[6:]
    assert safe["score"].tolist() == table["score"].tolist() and "'=col" in safe.columns
    assert table["id"].tolist() == DANGER  # input untouched
    path = writer.write_table(table, tmp_path / "out.csv")
    back = pd.read_csv(path, keep_default_na=False)
    assert back["id"].tolist()[:4] == ["'=SUM(A1:A9)", "'+1", "'-2+3", "'@cmd"]
    assert np.allclose(back["score"], table["score"])
    ds = sources.load_manifest(path)  # an exported table loads back with the original text
    assert ds.table["id"].tolist() == DANGER and ds.class_names == ("=bad", "good")


def test_parquet_round_trip_unescaped(tmp_path):
    table = pd.DataFrame({"id": DANGER, "v": np.arange(9)})
    back = pd.read_parquet(writer.write_table(table, tmp_path / "t.parquet"))
    assert back["id"].tolist() == DANGER and back["v"].tolist() == list(range(9))
    with pytest.raises(InputError, match=r"\.csv or \.parquet"):
        writer.write_table(table, tmp_path / "t.xlsx")


def test_atomic_writes_leave_no_tmp(tmp_path):
    out = tmp_path / "deep" / "dir"
    atomic_write_bytes(out / "b.bin", b"one")
    atomic_write_bytes(out / "b.bin", b"two")
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic_save_npy(out / "chunk_000000", arr)
    writer.write_table(pd.DataFrame({"a": [1]}), out / "t.csv")
    writer.write_manifest({"n": np.int64(3)}, out / "m.json")
    with pytest.raises(InputError, match="dtype object"):
        atomic_save_npy(out / "o.npy", np.array([{}], dtype=object))

    with pytest.raises(TypeError):                       # the write fails half way: nothing replaced, no tmp
        atomic_write_bytes(out / "b.bin", object())
    assert sorted(p.name for p in out.iterdir()) == ["b.bin", "chunk_000000", "m.json", "t.csv"]
    assert (out / "b.bin").read_bytes() == b"two"
    assert np.array_equal(np.load(out / "chunk_000000"), arr)


def test_write_manifest_types(tmp_path):
    m = {"n": np.int64(5), "f": np.float32(0.5), "b": np.bool_(True), "nan": float("nan"),
         "arr": np.arange(3), "path": tmp_path, "nested": {"t": (1, np.float64(np.inf))}, 7: "int key"}
    got = json.loads(writer.write_manifest(m, tmp_path / "m.json").read_text())
    assert got == {"n": 5, "f": 0.5, "b": True, "nan": None, "arr": [0, 1, 2], "path": str(tmp_path),
                   "nested": {"t": [1, None]}, "7": "int key"}


# ------------------------------------------------------------------ Dataset behaviour

def test_fingerprint_files(folder):
    ds = sources.load_image_folder(folder)
    fp = ds.fingerprint
    assert fp == ds.fingerprint == sources.load_image_folder(folder).fingerprint and len(fp) == 40
    relabel = ds.with_labels(1 - ds.labels)
    content = ds.content_fingerprint
    assert relabel.fingerprint != fp and relabel.content_fingerprint == content
    assert relabel.table["label"].tolist() == ["dog"] * 3 + ["cat"] * 4 and ds.labels[0] == 0
    target = Path(ds.table["path"][0])
    st = target.stat()
    write_image(target, (1, 2, 3), size=(9, 6))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    # a loaded Dataset hashes once; loading the folder again sees the edited file
    assert ds.fingerprint == fp
    reloaded = sources.load_image_folder(folder)
    assert reloaded.fingerprint != fp and reloaded.content_fingerprint != content


def test_fingerprint_arrays_stable_across_processes():
    pixels = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    table = pd.DataFrame({"id": ["a", "b"], "path": ["", ""], "label": ["x", "y"]})
    ds = Dataset("t", table, ("x", "y"), np.array([0, 1]), pixels=pixels)
    code = ("import numpy as np, pandas as pd; from selector.dataset import Dataset;"
            "p = np.arange(32, dtype=np.uint8).reshape(2, 4, 4);"
            "t = pd.DataFrame({'id': ['a', 'b'], 'path': ['', ''], 'label': ['x', 'y']});"
            "print(Dataset('t', t, ('x', 'y'), np.array([0, 1]), pixels=p).fingerprint)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == ds.fingerprint
    changed = pixels.copy(); changed[1, 0, 0] += 1
    assert Dataset("t", table, ("x", "y"), np.array([0, 1]), pixels=changed).fingerprint != ds.fingerprint


def test_subset_and_with_labels_validate(folder):
    ds = sources.load_image_folder(folder)
    sub = ds.subset(np.array([6, 0]))
    assert sub.table["id"].tolist() == [ds.table["id"][6], "cat/c0.png"] and sub.labels.tolist() == [1, 0]
    assert sub.class_names == ds.class_names and list(sub.table.index) == [0, 1]
    with pytest.raises(InputError, match="out of range for 7 samples: 7"):
        ds.subset(np.array([0, 7]))
    with pytest.raises(InputError, match=r"shape \(7,\)"):
        ds.subset(np.ones(3, dtype=bool))
    with pytest.raises(InputError, match=r"out of range \[0, 2\) at rows 1"):
        ds.with_labels(np.array([0, 2, 0, 0, 0, 0, 0]))
    with pytest.raises(InputError, match="labels must be"):
        ds.with_labels(np.zeros(7, dtype=float))
    with pytest.raises(InputError, match="table has 2 rows but labels has 3"):
        Dataset("x", ds.table.iloc[:2], ds.class_names, np.zeros(3, dtype=int))
