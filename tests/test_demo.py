"""The offline demo encoder, trained for real on a few hundred Fashion-MNIST test images."""
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from selector.embed import embed_dataset
from selector.encoders import Encoder, class_prompts, demo, open_encoder
from selector.sources import FASHION_MNIST_CLASSES, load_fashion_mnist, load_image_folder
from selector.errors import InputError

pytestmark = pytest.mark.fashion_mnist   # the demo encoder trains on Fashion-MNIST's test split
TINY = dict(seed=0, epochs=1, n_train=300, n_eval=500)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("demo_cache")


@pytest.fixture(scope="module")
def enc(cache):
    return demo.train_demo_encoder(cache_dir=cache, **TINY)


@pytest.fixture(scope="module")
def sample():
    return load_fashion_mnist(split="train").subset(np.arange(64))


def test_tiny_training_gives_a_working_encoder(enc, sample, cache):
    assert isinstance(enc, Encoder)
    assert "offline demo encoder" in enc.name and "Fashion-MNIST test half A" in enc.name
    X = enc.encode_images(sample, np.arange(64), batch_size=20)
    assert X.shape == (64, demo.EMBED_DIM) and X.dtype == np.float32 and np.isfinite(X).all()
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    info = json.loads(next((cache / "demo_encoder").glob("*.json")).read_text())
    assert info["seed"] == 0 and info["n_train"] == 300 and info["n_eval"] == 500
    assert 0 <= info["accuracy_half_b"] <= 1
    assert info["training_time_s"] >= 0 and info["accuracy_half_b"] == enc.accuracy
    assert enc.accuracy > 0.3  # 300 images, one epoch: far above chance (0.1) already


def test_the_default_recipe_starts_from_the_shipped_weights(sample, tmp_path):
    """No training on a fresh machine: the package carries the default recipe's weights, checksum verified."""
    (shipped,) = demo.SHIPPED.glob("*.pt")
    info = json.loads(shipped.with_suffix(".json").read_text())
    assert info["weights_sha1"] == hashlib.sha1(shipped.read_bytes()).hexdigest()
    assert info["seed"] == 0 and info["epochs"] == demo.DEFAULT_EPOCHS and info["n_train"] == 5000
    assert shipped.stat().st_size < 1_500_000
    stages = []
    enc = demo.train_demo_encoder(cache_dir=tmp_path, progress=lambda stage, *_: stages.append(stage))
    assert stages == [] and enc.info == info and enc.accuracy >= 0.85
    X = enc.encode_images(sample, np.arange(16), batch_size=8)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    # the embeddings say what the shipped weights know: most of these train images land on their class
    T = enc.encode_classes(sample)
    assert ((X @ T.T).argmax(1) == sample.labels[:16]).mean() >= 0.6


def test_opening_the_demo_run_needs_no_torch(tmp_path):
    """A warm start: choosing the demo's encoder and opening it import no torch (about 1.5 s) where no NVIDIA
    driver is present; its network is built on first use (a fresh process, so nothing imported it before)."""
    import os
    import subprocess
    import sys

    from selector.runtime import _CUDA_DRIVER_PATHS
    if any(os.path.exists(p) for p in _CUDA_DRIVER_PATHS):
        pytest.skip("an NVIDIA driver is present: choosing the encoder asks torch whether CUDA works")
    code = ("import sys, selector\n"
            "from selector.encoders import default_encoder\n"
            "enc = selector.open_encoder(default_encoder('demo'), cache_dir=sys.argv[1])\n"
            "print(enc.cache_key.startswith('demo|'), 'torch' in sys.modules)\n"
            "enc.encode_texts(['Bag'])\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "True"]


def test_cache_reload_is_identical_and_trains_nothing(enc, sample, cache):
    stages = []
    loaded = demo.train_demo_encoder(cache_dir=cache, progress=lambda stage, *_: stages.append(stage), **TINY)
    assert stages == []                      # loaded from the cache: no training or evaluation step ran
    assert loaded.cache_key == enc.cache_key and loaded.info == enc.info
    np.testing.assert_array_equal(loaded.encode_images(sample, np.arange(8), batch_size=8),
                                  enc.encode_images(sample, np.arange(8), batch_size=8))


def test_damaged_cache_retrains_to_the_same_encoder(enc, sample, cache, tmp_path, caplog):
    """Same seed, same encoder: a damaged weights file is noticed and retraining reproduces the weights."""
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(cache, copy)
    weights = next((copy / "demo_encoder").glob("*.pt"))
    weights.write_bytes(weights.read_bytes()[:1000])
    rebuilt = demo.train_demo_encoder(cache_dir=copy, **TINY)
    assert "unusable" in caplog.text
    np.testing.assert_allclose(rebuilt.encode_images(sample, np.arange(64), batch_size=64),
                               enc.encode_images(sample, np.arange(64), batch_size=64), atol=1e-5)
    np.testing.assert_allclose(rebuilt.encode_texts(class_prompts(FASHION_MNIST_CLASSES)),
                               enc.encode_texts(class_prompts(FASHION_MNIST_CLASSES)), atol=1e-5)


def test_encode_texts_maps_prompts_to_class_embeddings(enc):
    prompts = class_prompts(FASHION_MNIST_CLASSES)
    T = enc.encode_texts(prompts)
    assert T.shape == (10, demo.EMBED_DIM) and T.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(T, axis=1), 1, atol=1e-5)
    assert np.linalg.matrix_rank(T) == 10  # ten distinct class embeddings
    np.testing.assert_array_equal(enc.encode_texts(prompts[::-1]), T[::-1])
    np.testing.assert_array_equal(enc.encode_texts(["A photo of a Ankle boot."]), T[9:])
    with pytest.raises(InputError, match="Fashion-MNIST classes") as err:
        enc.encode_texts([prompts[0], "A photo of a cat."])
    assert "'A photo of a cat.'" in str(err.value)


def test_training_uses_only_even_test_rows(cache):
    pixels, labels, rows = demo.training_data(300)
    assert (rows % 2 == 0).all() and rows.max() < 10_000 and len(rows) == 300
    test = load_fashion_mnist(split="test")
    np.testing.assert_array_equal(pixels, test.pixels[rows])
    np.testing.assert_array_equal(labels, test.labels[rows])
    full = demo.training_rows()
    assert len(full) == 5000 and not set(full) & set(demo.evaluation_rows())
    info = json.loads(next((cache / "demo_encoder").glob("*.json")).read_text())
    assert info["train_split"] == "test"
    assert info["train_rows_sha1"] == hashlib.sha1(rows.astype("<i8").tobytes()).hexdigest()


def test_prepared_cpu_tower_gives_the_eager_networks_embeddings(enc, sample):
    """The image tower runs with batch norms folded and oneDNN convolutions: the same embeddings as the eager
    network, for the in-memory fast path and for preprocessed batches, at any batch size."""
    import torch
    from selector.encoders.inference import cpu_tower
    from selector.encoders.demo import _to_input
    with torch.inference_mode():
        eager = enc.net.embed_images(_to_input(sample.pixels[:64])).numpy()
    np.testing.assert_allclose(enc.encode_images(sample, np.arange(64), batch_size=7), eager, atol=2e-5)
    np.testing.assert_allclose(enc.embed_batch(_to_input(sample.pixels[:5])), eager[:5], atol=2e-5)
    if torch.backends.mkldnn.is_available():
        assert enc.image_tower is enc.image_tower and cpu_tower(enc.net.image, (1, 28, 28)) is not enc.net.image
    no_convs = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    assert cpu_tower(no_convs, (1, 2, 2)) is no_convs                 # nothing to prepare: the module itself


def test_images_from_files_rgb_any_size(enc, tmp_path):
    rng = np.random.default_rng(0)
    for c in ("Bag", "Trouser"):
        (tmp_path / c).mkdir()
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(tmp_path / c / f"{k}.png")
    (tmp_path / "Bag" / "zz.png").write_bytes(b"\x89PNG broken")
    ds = load_image_folder(tmp_path)
    X = enc.encode_images(ds, np.arange(len(ds)), batch_size=4)
    assert X.shape == (7, demo.EMBED_DIM)
    bad = np.flatnonzero(ds.table["path"].str.endswith("zz.png"))
    assert np.isnan(X[bad]).all() and np.isfinite(np.delete(X, bad, axis=0)).all()


def test_through_registry_and_cache(cache, sample, tmp_path):
    enc = open_encoder("demo", cache_dir=cache, **TINY)
    X, T, ok = embed_dataset(sample, enc, cache_dir=tmp_path, batch_size=16, chunk_size=32)
    assert X.shape == (64, demo.EMBED_DIM) and T.shape == (10, demo.EMBED_DIM) and ok.all()
    with pytest.raises(InputError, match="n_train"):
        demo.train_demo_encoder(cache_dir=tmp_path, n_train=3)
    with pytest.raises(InputError, match="epochs"):
        demo.train_demo_encoder(cache_dir=tmp_path, epochs=0)
