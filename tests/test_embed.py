"""Encoders and the on-disk embedding cache, on the real open_clip code with a tiny registered config."""
import json
import socket

import numpy as np
import pytest
from PIL import Image

from selector.embed import embed_dataset
from selector.encoders import Encoder, class_prompts, list_encoders, open_encoder
from selector.encoders.openclip import OpenCLIPEncoder
from selector.encoders.precomputed import PrecomputedEncoder
from selector.errors import InputError, OfflineError
from selector.sources import FASHION_MNIST_CLASSES, load_image_folder

TINY = "selector-tiny-test"
TINY_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random-init (pretrained=None) tiny CLIP registered through open_clip's model-config registry."""
    import open_clip
    folder = tmp_path_factory.mktemp("open_clip_cfg")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder / f"{TINY}.json")
    return OpenCLIPEncoder(TINY, pretrained=None, num_workers=0)


@pytest.fixture(scope="module")
def fmnist(fashion_mnist_test_split):
    return fashion_mnist_test_split.subset(np.arange(96))


class SimulatedKill(Exception):
    pass


class Counting:
    """Wraps a real encoder, batch by batch, and counts what it was asked to encode (the cache under test is
    not touched); with fail_after it dies like a killed process after that many batches."""
    cacheable = True

    def __init__(self, inner, fail_after=None):
        self.inner, self.fail_after = inner, fail_after
        self.name, self.cache_key = inner.name, inner.cache_key
        self.rows, self.image_calls, self.text_calls = 0, 0, 0

    def encode_images(self, dataset, rows, *, batch_size, progress=None):
        out = []
        for s in range(0, len(rows), batch_size):
            if self.fail_after is not None and self.image_calls >= self.fail_after:
                raise SimulatedKill(f"killed after {self.image_calls} batches")
            self.image_calls += 1
            batch = rows[s:s + batch_size]
            self.rows += len(batch)
            out.append(self.inner.encode_images(dataset, batch, batch_size=batch_size))
            if progress is not None:
                progress("embedding images", s + len(batch), len(rows))
        return np.concatenate(out)

    def encode_classes(self, dataset):
        self.text_calls += 1
        return self.inner.encode_classes(dataset)


def test_class_prompts_cleaning():
    assert class_prompts(["T-shirt/top", "ankle_boot", "  Bag  ", "a / b"]) == [
        "A photo of a T-shirt or top.", "A photo of a ankle boot.", "A photo of a Bag.", "A photo of a a or b."]
    assert class_prompts(["x"], template="{}") == ["x"]
    with pytest.raises(InputError, match="empty"):
        class_prompts(["ok", " _ "])
    with pytest.raises(InputError, match="template"):
        class_prompts(["x"], template="no slot")


def test_registry():
    assert list_encoders() == ["open_clip", "demo", "offline", "precomputed"]
    with pytest.raises(InputError, match="open_clip, demo, offline, precomputed"):
        open_encoder("clip-xl")
    with pytest.raises(InputError, match="its options are: model, pretrained, checkpoint"):
        open_encoder("open_clip", temperature=3)
    assert isinstance(open_encoder("precomputed"), PrecomputedEncoder)


def test_tiny_open_clip_images_and_texts(tiny, fmnist):
    assert isinstance(tiny, Encoder)
    assert "random init" in tiny.name and TINY in tiny.cache_key
    X = tiny.encode_images(fmnist, np.arange(40), batch_size=16)
    assert X.shape == (40, 16) and X.dtype == np.float32 and np.isfinite(X).all()
    T = tiny.encode_texts(class_prompts(FASHION_MNIST_CLASSES))
    assert T.shape == (10, 16) and T.dtype == np.float32 and np.isfinite(T).all()
    assert not np.allclose(T[0], T[1])
    # random init is seeded: a second instance gives the same embeddings and the same cache key
    again = OpenCLIPEncoder(TINY, pretrained=None, num_workers=2)
    assert again.cache_key == tiny.cache_key
    np.testing.assert_allclose(again.encode_images(fmnist, np.arange(40), batch_size=8), X, rtol=1e-4, atol=1e-5)


def test_checkpoint_file_round_trip(tiny, fmnist, tmp_path):
    import torch
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), ckpt)
    enc = open_encoder("open_clip", model=TINY, checkpoint=str(ckpt))
    assert "tiny.pt" in enc.name and enc.cache_key != tiny.cache_key
    np.testing.assert_allclose(enc.encode_images(fmnist, np.arange(8), batch_size=8),
                               tiny.encode_images(fmnist, np.arange(8), batch_size=8), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="does not exist"):
        OpenCLIPEncoder(TINY, pretrained=None, checkpoint=tmp_path / "missing.pt")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_pretrained_tag_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{_closed_port()}")  # nothing listens: "offline"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import open_clip

    def download(*args, **kwargs):
        raise AssertionError("a download was attempted: offline, the encoder must fail before trying")
    monkeypatch.setattr(open_clip, "create_model_and_transforms", download)
    with pytest.raises(OfflineError) as err:
        OpenCLIPEncoder("ViT-B-32", "laion2b_s34b_b79k", cache_dir=tmp_path)  # empty cache: no weights here
    msg = str(err.value)
    assert "checkpoint=" in msg and "Hugging Face cache" in msg
    # through the registry the message names the encoders needing no download that the source offers
    from selector.encoders.openclip import _cached_weights
    if _cached_weights(open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k"), None):
        pytest.skip("ViT-B-32 weights are in this machine's Hugging Face cache: open_encoder would load them")
    for source, offered, not_offered in (("image-folder", ["'offline'"], ["'demo'"]),
                                         ("manifest", ["'offline'"], ["'demo'"]),
                                         ("demo", ["'offline'", "'demo'"], [])):
        with pytest.raises(OfflineError) as err:
            open_encoder("open_clip", cache_dir=tmp_path, source=source, pretrained="laion2b_s34b_b79k")
        msg = str(err.value)
        assert all(name in msg for name in offered) and not any(name in msg for name in not_offered), (source, msg)


def test_bad_model_and_tag_list_valid_names():
    with pytest.raises(InputError) as err:
        OpenCLIPEncoder("ViT-Nope-1")
    assert "ViT-B-32" in str(err.value) and "ViT-Nope-1" in str(err.value)
    with pytest.raises(InputError) as err:
        OpenCLIPEncoder("ViT-B-32", "not_a_tag")
    assert "laion2b_s34b_b79k" in str(err.value) and "openai" in str(err.value)


def test_cache_second_call_does_not_recompute(tiny, fmnist, tmp_path):
    calls = []
    first = Counting(tiny)
    X, T, ok = embed_dataset(fmnist, first, cache_dir=tmp_path, batch_size=16, chunk_size=32,
                             progress=lambda *a: calls.append(a))
    assert X.shape == (96, 16) and T.shape == (10, 16) and ok.all()
    assert first.rows == 96 and first.text_calls == 1
    assert calls[-1] == ("embedding images", 96, 96)
    done = [c[1] for c in calls if c[0] == "embedding images"]
    assert done == sorted(done) and len(done) >= 96 // 16  # at least one report per batch
    second = Counting(tiny)
    X2, T2, ok2 = embed_dataset(fmnist, second, cache_dir=tmp_path, batch_size=16, chunk_size=32)
    assert second.rows == 0 and second.text_calls == 0
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(T2, T)
    # new labels, same images: embeddings are reused
    relabelled = fmnist.with_labels(np.roll(fmnist.labels, 1))
    third = Counting(tiny)
    np.testing.assert_array_equal(embed_dataset(relabelled, third, cache_dir=tmp_path, chunk_size=32)[0], X)
    assert third.rows == 0
    meta = json.loads(next((tmp_path / "embeddings").glob("*/meta.json")).read_text())
    assert meta["n"] == 96 and meta["d"] == 16 and meta["chunk_size"] == 32


def test_resume_after_kill(tiny, fmnist, tmp_path):
    dying = Counting(tiny, fail_after=5)  # batches of 16, chunks of 32: 2 chunks complete, the 3rd dies midway
    with pytest.raises(SimulatedKill):
        embed_dataset(fmnist, dying, cache_dir=tmp_path, batch_size=16, chunk_size=32)
    folder = next((tmp_path / "embeddings").iterdir())
    assert len(list(folder.glob("chunk_*.npy"))) == 2
    assert not list(folder.glob(".*tmp"))  # no half-written files left behind
    fresh = Counting(tiny)
    X, _, ok = embed_dataset(fmnist, fresh, cache_dir=tmp_path, batch_size=16, chunk_size=32)
    assert fresh.rows == 96 - 64 and ok.all()
    np.testing.assert_allclose(X, tiny.encode_images(fmnist, np.arange(96), batch_size=32), rtol=1e-4, atol=1e-5)


def test_corrupted_chunks_are_recomputed(tiny, fmnist, tmp_path, caplog):
    X, _, _ = embed_dataset(fmnist, tiny, cache_dir=tmp_path, batch_size=16, chunk_size=32)
    chunks = sorted((next((tmp_path / "embeddings").iterdir())).glob("chunk_*.npy"))
    assert len(chunks) == 3
    flipped = bytearray(chunks[0].read_bytes())
    flipped[-5] ^= 0xFF                                   # a flipped bit in the data: same shape, wrong numbers
    chunks[0].write_bytes(bytes(flipped))
    chunks[2].write_bytes(chunks[2].read_bytes()[:100])   # truncated
    counting = Counting(tiny)
    X2, _, ok = embed_dataset(fmnist, counting, cache_dir=tmp_path, batch_size=16, chunk_size=32)
    assert counting.rows == 32 + 32 and ok.all()
    np.testing.assert_allclose(X2, X, rtol=1e-4, atol=1e-5)
    assert "corrupt" in caplog.text


def test_undecodable_image_gives_nan_row(tiny, tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{k}.png")
    (tmp_path / "imgs" / "dog" / "broken.png").write_bytes(b"not a png at all")
    ds = load_image_folder(tmp_path / "imgs")
    bad = int(np.flatnonzero(ds.table["path"].str.endswith("broken.png"))[0])
    X, T, ok = embed_dataset(ds, tiny, cache_dir=tmp_path / "cache", batch_size=4)
    assert ok.sum() == len(ds) - 1 and not ok[bad]
    assert np.isnan(X[bad]).all() and np.isfinite(X[ok]).all()
    X2, _, ok2 = embed_dataset(ds, tiny, cache_dir=tmp_path / "cache", batch_size=4)  # NaN rows survive the cache
    np.testing.assert_array_equal(ok2, ok)


def test_precomputed_encoder(tmp_path, fmnist):
    ds = fmnist.subset(np.arange(12))
    rng = np.random.default_rng(0)
    ds.embeddings = rng.normal(size=(12, 8)).astype(np.float32)
    X, T, ok = embed_dataset(ds, PrecomputedEncoder(), cache_dir=tmp_path)    # image-only: no class prompts
    assert T is None and ok.all()
    np.testing.assert_array_equal(X, ds.embeddings)
    ds.text_embeddings = rng.normal(size=(3, 8)).astype(np.float32)
    with pytest.raises(InputError, match="text_embeddings has 3 rows but the dataset has 10 classes"):
        embed_dataset(ds, PrecomputedEncoder(), cache_dir=tmp_path)
    ds.text_embeddings = rng.normal(size=(10, 8)).astype(np.float32)
    X, T, ok = embed_dataset(ds, PrecomputedEncoder(), cache_dir=tmp_path)
    np.testing.assert_array_equal(X, ds.embeddings)
    np.testing.assert_array_equal(T, ds.text_embeddings)
    assert ok.all() and not (tmp_path / "embeddings").exists()


def test_embed_dataset_validates(tiny, fmnist, tmp_path):
    with pytest.raises(InputError, match="batch_size"):
        embed_dataset(fmnist, tiny, cache_dir=tmp_path, batch_size=0)
    with pytest.raises(InputError, match="chunk_size"):
        embed_dataset(fmnist, tiny, cache_dir=tmp_path, chunk_size=-1)
