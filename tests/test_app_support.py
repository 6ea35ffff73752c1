"""Shared helpers for the AppTest files (no tests here): a synthetic precomputed-embeddings dataset and an
app session that has run the REAL pipeline on it from the Home page."""
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
RUN_TIMEOUT = 90


def make_embeddings(path, *, n_per_class=60, n_classes=4, d=16, seed=0, images=True):
    """Gaussian clusters around class text vectors (.npz in load_embeddings' format); with images=True each
    sample also gets a tiny PNG (a flat colour per class) beside the file, so galleries show thumbnails."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n_classes, d)).astype(np.float32)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    images_ = text[labels] + 0.6 * rng.normal(size=(len(labels), d)).astype(np.float32)
    names = np.array([f"class_{c}" for c in range(n_classes)])
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
    images = images_
    np.savez(path, image_embeddings=images, labels=labels, class_names=names, text_embeddings=text, **extra)
    return Path(path)


@contextmanager
def cache_env(folder):
    """Point the app's cache (SELECTOR_CACHE_DIR) at a test folder and start with an empty backend."""
    from selector.ui import backend
    old = os.environ.get("SELECTOR_CACHE_DIR")
    os.environ["SELECTOR_CACHE_DIR"] = str(folder)
    backend.registry.clear()
    try:
        yield Path(folder)
    finally:
        backend.registry.clear()
        if old is None:
            os.environ.pop("SELECTOR_CACHE_DIR", None)
        else:
            os.environ["SELECTOR_CACHE_DIR"] = old


def new_app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=30).run()


def run_embeddings(at: AppTest, npz, *, noise="uniform", rate=0.2) -> AppTest:
    """Drive Home: source = precomputed embeddings file, PCA map, optional noise; press Run."""
    at.selectbox(key="source").set_value("embeddings").run()
    at.text_input(key="path").input(str(npz))
    at.selectbox(key="map").set_value("pca")
    at.selectbox(key="noise_mode").set_value(noise).run()
    if noise != "none":
        at.slider(key="noise_rate").set_value(rate)
    at.button(key="run").click().run(timeout=RUN_TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def started(npz) -> AppTest:
    """A fresh session that has run the pipeline on `npz` (20% uniform noise) and stands on Home."""
    return run_embeddings(new_app(), npz)


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame(at: AppTest, column: str):
    """The first st.dataframe on the page that has `column` (dataframes carry no key in AppTest)."""
    for df in at.dataframe:
        value = df.value
        if column in value.columns:
            return value
    raise AssertionError(f"no dataframe with a {column!r} column; have {[list(d.value.columns) for d in at.dataframe]}")
