"""Shared helpers for the AppTest files (no tests here): a synthetic precomputed-embeddings dataset and an
app session that has run the REAL pipeline on it from the Home page."""
import os
from contextlib import contextmanager
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests import synthetic

APP = str(Path(__file__).resolve().parents[1] / "app.py")
RUN_TIMEOUT = 90


def make_embeddings(path, *, n_per_class=60, n_classes=4, d=16, seed=0, images=True, text=True):
    """The synthetic .npz the app tests run on: 240 samples with a tiny PNG each, so galleries show thumbnails."""
    return synthetic.make_embeddings(path, n_per_class=n_per_class, n_classes=n_classes, d=d, seed=seed,
                                     images=images, text=text)


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
