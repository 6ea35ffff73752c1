"""selector.project: UMAP on our kNN graph (no second neighbour search), PCA."""
from pathlib import Path

import numpy as np
import pytest

from selector.errors import InputError
from selector.neighbors import knn
from selector.project import _fit_umap, _knn_graph, pca_2d, umap_from_knn


def blobs(n=600, d=16, c=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((c, d)) * 4
    y = rng.integers(0, c, n)
    return (centers[y] + rng.standard_normal((n, d))).astype(np.float32), y


@pytest.fixture
def no_umap_search(monkeypatch):
    """Make umap-learn's own neighbour search fail loudly if it is ever called."""
    import umap.umap_ as umap_module

    def forbidden(*args, **kwargs):
        raise AssertionError("umap ran its own nearest-neighbour search")

    monkeypatch.setattr(umap_module, "nearest_neighbors", forbidden)


def test_umap_uses_our_graph_and_is_seeded(no_umap_search):
    X, y = blobs()
    S, I = knn(X, 10, metric="cosine", exclude_self=True)
    D = 1.0 - S
    reducer = _fit_umap(I, D, seed=0, n_epochs=100)
    n = len(X)
    assert (reducer._knn_indices[:, 0] == np.arange(n)).all()          # self prepended
    assert np.array_equal(reducer._knn_indices[:, 1:], I)               # then exactly our neighbours
    np.testing.assert_allclose(reducer._knn_dists[:, 1:], D, atol=1e-6)
    emb = umap_from_knn(I, D, seed=0, n_epochs=100)
    assert emb.shape == (n, 2) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert np.array_equal(emb, reducer.embedding_.astype(np.float32))  # same seed, same layout
    # the layout keeps the blobs apart: each point's nearest 2-D neighbour mostly shares its blob
    d2 = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    assert (y[d2.argmin(1)] == y).mean() > 0.9


def test_umap_handles_padding_and_graph_with_self(no_umap_search):
    X, _ = blobs(n=300, seed=1)
    S, I = knn(X, 8, metric="l2", exclude_self=False)                 # self already first
    I = I.copy()
    S = S.copy()
    I[:20, 5:] = -1                                                     # padded rows (small groups)
    S[:20, 5:] = np.inf
    emb = umap_from_knn(I, S, seed=3, n_epochs=50, X=X)
    assert emb.shape == (300, 2) and np.isfinite(emb).all()
    Ig, Dg = _knn_graph(I, S)
    assert Ig.shape == I.shape and (Ig[:, 0] == np.arange(300)).all()
    assert (Ig[:20, 5:] == np.arange(20)[:, None]).all() and np.isfinite(Dg).all()
    assert (np.diff(Dg, axis=1) >= 0).all()


def test_umap_pca_start_is_seeded_keeps_blobs_apart_and_survives_ties(no_umap_search, monkeypatch):
    """init='pca' hands umap-learn the principal components of X as its start (no eigensolve of the graph)."""
    import umap.umap_ as umap_module
    X, y = blobs(n=600, c=4, seed=5)
    X[1] = X[0]                                                         # exact duplicates tie in the start
    S, I = knn(X, 10, metric="cosine", exclude_self=True)
    D = 1.0 - S
    monkeypatch.setattr(umap_module, "spectral_layout", lambda *a, **k: pytest.fail("spectral start computed"))
    emb = umap_from_knn(I, D, seed=0, n_epochs=100, X=X, init="pca")
    assert emb.shape == (600, 2) and np.isfinite(emb).all()
    np.testing.assert_array_equal(emb, umap_from_knn(I, D, seed=0, n_epochs=100, X=X, init="pca"))
    _, nn2d = knn(emb, 1, metric="l2", exclude_self=True)
    assert (y[nn2d[:, 0]] == y).mean() > 0.9
    flat = np.zeros_like(X)                                             # no spread at all: still finite
    assert np.isfinite(umap_from_knn(I, D, seed=0, n_epochs=20, X=flat, init="pca")).all()
    with pytest.raises(InputError, match="pass X"):
        umap_from_knn(I, D, init="pca")
    with pytest.raises(InputError, match="init must be"):
        umap_from_knn(I, D, X=X, init="random")


def test_umap_input_errors():
    X, _ = blobs(n=50)
    S, I = knn(X, 5, metric="l2")
    with pytest.raises(InputError, match="same"):
        umap_from_knn(I, S[:, :3])
    with pytest.raises(InputError, match="distances"):
        umap_from_knn(I, -S)
    bad = I.copy()
    bad[4, 0] = 50
    with pytest.raises(InputError, match="rows 4"):
        umap_from_knn(bad, S)
    S5, I5 = knn(X[:5], 4, metric="l2")                 # 5 samples, 4 neighbours + self
    with pytest.raises(InputError, match="more samples"):
        umap_from_knn(I5, S5)


def test_pca_2d():
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((400, 3)) * [5.0, 2.0, 0.1]
    R, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    X = (np.hstack([Z, rng.standard_normal((400, 5)) * 0.01]) @ R + 3.0).astype(np.float32)
    P = pca_2d(X)
    assert P.shape == (400, 2) and P.dtype == np.float32
    np.testing.assert_allclose(P.mean(0), 0, atol=1e-3)
    U, s, Vt = np.linalg.svd(X - X.mean(0), full_matrices=False)
    ref = (X - X.mean(0)) @ Vt[:2].T
    for j in range(2):                                  # same axes up to sign
        assert abs(np.corrcoef(P[:, j], ref[:, j])[0, 1]) > 0.999
    assert np.array_equal(P, pca_2d(X.copy()))
    assert pca_2d(X[:1]).shape == (1, 2)
    one_d = pca_2d(X[:, :1])
    assert one_d.shape == (400, 2) and (one_d[:, 1] == 0).all()
    with pytest.raises(InputError, match="rows 7"):
        pca_2d(np.where(np.arange(400)[:, None] == 7, np.nan, X))


def test_landmark_map_places_every_row_among_its_neighbours(no_umap_search, monkeypatch):
    """Past 2 x LANDMARKS rows, UMAP lays out the landmarks only and the other rows are placed from the
    global kNN: every row lands, blobs stay apart, and the same seed gives the same map."""
    import selector.project as project
    X, y = blobs(n=3000, c=5, seed=4)
    S, I = knn(X, 10, metric="cosine", exclude_self=True)
    monkeypatch.setattr(project, "LANDMARKS", 400)
    xy = project.draw_map("umap", X, S, I, seed=0)
    assert xy.shape == (3000, 2) and np.isfinite(xy).all()
    np.testing.assert_array_equal(xy, project.draw_map("umap", X, S, I, seed=0))
    _, nn2d = knn(xy, 1, metric="l2", exclude_self=True)
    assert (y[nn2d[:, 0]] == y).mean() > 0.95
    # rows with no path to a landmark through the graph (no neighbours, nobody's neighbour) still land
    I2 = I.copy()
    I2[:10] = -1
    I2[I2 < 10] = -1
    xy2 = project.landmark_umap(X, S, I2, landmarks=400, seed=0)
    assert np.isfinite(xy2).all()


_UMAP_SCRIPT = """
import sys
import numpy as np
from selector.project import umap_from_knn
rng = np.random.default_rng(0)
X = rng.standard_normal((300, 8)).astype(np.float32)
d = ((X[:, None] - X[None]) ** 2).sum(-1)
I = np.argsort(d, axis=1)[:, 1:9].astype(np.int64)
D = np.sqrt(np.take_along_axis(d, I, 1)).astype(np.float32)
np.save(sys.argv[1], umap_from_knn(I, D, seed=0, n_epochs=30, X=X, init="pca"))
"""


@pytest.mark.slow
def test_umap_kernels_are_compiled_once_and_kept_in_the_cache_dir(tmp_path):
    """A new process loads umap-learn's compiled kernels from the cache dir instead of compiling them again,
    and draws the same layout."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["SELECTOR_CACHE_DIR"] = str(tmp_path / "cache")
    layouts = []
    for run in range(2):
        out = tmp_path / f"xy{run}.npy"
        subprocess.run([sys.executable, "-c", _UMAP_SCRIPT, str(out)], env=env, check=True,
                       cwd=Path(__file__).parents[1])
        layouts.append(np.load(out))
        if run == 0:
            kept = sorted((tmp_path / "cache" / "numba").rglob("*.nbi"))
            assert len(kept) >= 3, kept                     # the four kernels' indexes (one per compiled kernel)
            stamps = {p: p.stat().st_mtime_ns for p in kept}
    assert {p: p.stat().st_mtime_ns for p in kept} == stamps   # the second process compiled nothing new
    np.testing.assert_array_equal(layouts[0], layouts[1])
