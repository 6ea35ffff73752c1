"""The offline encoder on a folder of images made here: learned from the images alone, cached and checked,
deterministic, and through the CLI an audit that finds the labels planted wrong."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from selector.__main__ import main
from selector.embed import embed_dataset
from selector.encoders import encoders_for, open_encoder
from selector.sources import load_image_folder

CLASSES = ("stripes", "columns", "checks", "rings")
N_PER_CLASS = 40
WRONG = 8        # images of another class filed under a wrong folder


def _image(kind: str, rng) -> Image.Image:
    """A 24x24 colour image of one kind of pattern, with random phase, scale, colour and noise."""
    yy, xx = np.mgrid[0:24, 0:24].astype(np.float32)
    period, phase = rng.uniform(4, 7), rng.uniform(0, 2 * np.pi)
    wave = {"stripes": np.sin(2 * np.pi * yy / period + phase),
            "columns": np.sin(2 * np.pi * xx / period + phase),
            "checks": np.sin(2 * np.pi * xx / period + phase) * np.sin(2 * np.pi * yy / period + phase),
            "rings": np.sin(2 * np.pi * np.hypot(yy - 12 + rng.uniform(-2, 2), xx - 12) / period + phase)}[kind]
    colour = rng.uniform(0.4, 1.0, size=3)
    img = 127 + 100 * wave[..., None] * colour + rng.normal(0, 12, size=(24, 24, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A labelled image folder (class subfolders) and the names of the files filed under the wrong class."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    wrong = set()
    for c, kind in enumerate(CLASSES):
        (root / kind).mkdir()
    for c, kind in enumerate(CLASSES):
        for i in range(N_PER_CLASS):
            filed = kind
            if i < WRONG // len(CLASSES):                  # two per class go to the next class's folder
                filed = CLASSES[(c + 1) % len(CLASSES)]
                wrong.add(f"{kind}_{i:03d}.png")
            _image(kind, rng).save(root / filed / f"{kind}_{i:03d}.png")
    return root, wrong


def test_offered_for_every_image_source():
    for source in ("image-folder", "manifest", "demo", "torchvision"):
        assert "offline" in encoders_for(source, "cifar10")
    assert "offline" not in encoders_for("embeddings")


def test_learns_once_caches_checked_weights_and_is_deterministic(folder, tmp_path):
    root, _ = folder
    data = load_image_folder(root)
    seen = []
    enc = open_encoder("offline", cache_dir=tmp_path / "a")
    X, T, ok = embed_dataset(data, enc, cache_dir=tmp_path / "a", progress=lambda s, k, t: seen.append(s))
    assert T is None and ok.all() and X.shape[0] == len(data) and np.isfinite(X).all()
    assert "learning the offline encoder" in seen and "embedding images" in seen
    cached = sorted(p.suffix for p in (tmp_path / "a" / "offline_encoder").iterdir())
    assert cached == [".json", ".npz"]
    info = json.loads(next((tmp_path / "a" / "offline_encoder").glob("*.json")).read_text())
    assert info["labels_used"] is False and info["fit_images"] == len(data) and info["channels"] == 3

    # a fresh encoder on another cache learns the same features; one on the first cache reads them back
    again = open_encoder("offline", cache_dir=tmp_path / "b").encode_images(data, np.arange(len(data)))
    np.testing.assert_array_equal(again, X)
    relearned = []
    reread = open_encoder("offline", cache_dir=tmp_path / "a", progress=lambda s, k, t: relearned.append(s))
    np.testing.assert_array_equal(reread.encode_images(data, np.arange(len(data))), X)
    assert "learning the offline encoder" not in relearned

    # damaged weights are never used: learned again, and the same
    weights = next((tmp_path / "a" / "offline_encoder").glob("*.npz"))
    weights.write_bytes(weights.read_bytes()[:-7] + b"damaged")
    fresh = []
    enc = open_encoder("offline", cache_dir=tmp_path / "a", progress=lambda s, k, t: fresh.append(s))
    np.testing.assert_array_equal(enc.encode_images(data, np.arange(len(data))), X)
    assert "learning the offline encoder" in fresh

    # a different seed is a different encoder (another cache key and other features)
    other = open_encoder("offline", cache_dir=tmp_path / "a", seed=1)
    assert other.cache_key != enc.cache_key
    assert not np.array_equal(other.encode_images(data, np.arange(len(data))), X)


def test_greyscale_images_are_read_as_one_channel(tmp_path):
    rng = np.random.default_rng(1)
    for kind in CLASSES[:2]:
        (tmp_path / "g" / kind).mkdir(parents=True)
        for i in range(12):
            _image(kind, rng).convert("L").save(tmp_path / "g" / kind / f"{i}.png")
    enc = open_encoder("offline", cache_dir=tmp_path / "c")
    X = enc.encode_images(load_image_folder(tmp_path / "g"), np.arange(24))
    info = json.loads(next((tmp_path / "c" / "offline_encoder").glob("*.json")).read_text())
    assert info["channels"] == 1 and info["side"] == 28 and X.shape[0] == 24 and np.isfinite(X).all()


def test_cli_audits_a_generated_folder_and_finds_the_planted_errors(folder, tmp_path, capsys):
    root, wrong = folder
    out = tmp_path / "sel.csv"
    code = main(["--source", "image-folder", "--path", str(root), "--encoder", "offline", "--map", "pca",
                 "--ratio", "0.5", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out, keep_default_na=False)
    manifest = json.loads((tmp_path / "sel.manifest.json").read_text())
    assert len(table) == len(CLASSES) * N_PER_CLASS
    assert "offline encoder" in manifest["encoder"]["name"] and "no labels" in manifest["encoder"]["name"]
    assert manifest["audit"]["experts"] == ["cross_fit", "knn"]
    assert manifest["audit"]["class_embeddings"].startswith("image prototypes")
    planted = table["path"].map(lambda p: p.rsplit("/", 1)[-1]).isin(wrong).to_numpy()
    assert planted.sum() == WRONG
    top = np.argsort(-table["noise_score"].to_numpy(), kind="stable")[:WRONG]
    assert planted[top].sum() >= WRONG - 1                       # the planted errors rank first
    assert table.loc[planted, "flagged"].astype(str).isin(["True", "true", "1"]).sum() >= WRONG - 1
    assert not table.loc[planted, "selected"].astype(str).isin(["True", "true", "1"]).any()
    rerun = tmp_path / "again.csv"
    assert main(["--source", "image-folder", "--path", str(root), "--encoder", "offline", "--map", "pca",
                 "--ratio", "0.5", "--cache-dir", str(tmp_path / "cache"), "--out", str(rerun)]) == 0
    assert rerun.read_bytes() == out.read_bytes()
