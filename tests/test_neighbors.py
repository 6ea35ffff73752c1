"""selector.neighbors against numpy brute force: global, within groups, IVF recall, threads, validation."""
import threading

import numpy as np
import pytest

from selector.errors import InputError
from selector.neighbors import Neighbors, gpu_available, knn, knn_within_groups


def clustered(n=1200, d=24, c=6, seed=0, spread=0.8):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((c, d)) * 2.0
    y = rng.integers(0, c, n)
    X = centers[y] + spread * rng.standard_normal((n, d))
    return X.astype(np.float32), y


def brute(B, Q, k, metric, self_ids=None):
    """Reference: full matrix + stable argsort (float64). cosine -> similarity desc, l2 -> distance asc."""
    B = B.astype(np.float64)
    Q = Q.astype(np.float64)
    if metric == "cosine":
        B = B / np.linalg.norm(B, axis=1, keepdims=True)
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        cost = -(Q @ B.T)
    else:
        cost = ((Q[:, None, :] - B[None, :, :]) ** 2).sum(-1)
    if self_ids is not None:
        cost[np.arange(len(Q)), self_ids] = np.inf
    k_eff = min(k, B.shape[0] - (self_ids is not None))
    I = np.argsort(cost, axis=1, kind="stable")[:, :k_eff]
    c = np.take_along_axis(cost, I, 1)
    D = -c if metric == "cosine" else np.sqrt(c)
    worst = -np.inf if metric == "cosine" else np.inf
    Dp = np.full((len(Q), k), worst)
    Ip = np.full((len(Q), k), -1)
    Dp[:, :k_eff], Ip[:, :k_eff] = D, I
    return Dp, Ip


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_global_matches_brute_force(metric, exclude_self):
    X, _ = clustered()
    D, I = knn(X, 7, metric=metric, exclude_self=exclude_self)
    Db, Ib = brute(X, X, 7, metric, np.arange(len(X)) if exclude_self else None)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (len(X), 7)
    assert (I == Ib).mean() > 0.999          # float32 vs float64 may swap a near-tie
    np.testing.assert_allclose(D, Db, atol=1e-4)
    if exclude_self:
        assert not (I == np.arange(len(X))[:, None]).any()
    else:
        assert (I[:, 0] == np.arange(len(X))).all()
    order = np.diff(D, axis=1)
    assert (order <= 1e-6).all() if metric == "cosine" else (order >= -1e-6).all()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_within_groups_matches_brute_force_with_small_groups(metric):
    X, y = clustered(n=900)
    groups = y.copy()
    groups[5] = 100            # a size-1 group
    groups[[7, 8]] = 200       # a size-2 group (< k + 1)
    groups[[9, 10, 11]] = 300  # size 3
    k = 4
    D, I = knn_within_groups(X, groups, k, metric=metric, exclude_self=True)
    worst = -np.inf if metric == "cosine" else np.inf
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        Db, Ib = brute(X[rows], X[rows], k, metric, np.arange(len(rows)))
        Ib = np.where(Ib >= 0, rows[np.maximum(Ib, 0)], -1)
        assert (I[rows] == Ib).mean() > 0.999
        np.testing.assert_allclose(D[rows], Db, atol=1e-4)
    # same group, never self; padding where the group is too small
    valid = I >= 0
    assert (groups[np.where(valid, I, 0)][valid] == np.repeat(groups, k).reshape(-1, k)[valid]).all()
    assert not (I == np.arange(len(X))[:, None]).any()
    assert (I[5] == -1).all() and (D[5] == worst).all()
    assert (I[7, 1:] == -1).all() and I[7, 0] == 8 and (D[7, 1:] == worst).all()
    assert (I[9, 2:] == -1).all() and set(I[9, :2]) == {10, 11}


def test_within_groups_without_exclude_self_and_string_labels():
    X, y = clustered(n=300)
    names = np.array(["cat", "dog", "eel", "fox", "gnu", "hen"])[y]
    D, I = knn_within_groups(X, names, 3, metric="l2", exclude_self=False)
    assert (I[:, 0] == np.arange(len(X))).all() and np.allclose(D[:, 0], 0, atol=1e-3)
    assert (names[I] == names[:, None]).all()


def test_exclude_self_with_exact_duplicates():
    X, _ = clustered(n=200)
    X[1] = X[0]
    X[2] = X[0]
    for metric in ("cosine", "l2"):
        D, I = knn(X, 3, metric=metric, exclude_self=True)
        assert 0 not in I[0] and set(I[0, :2]) == {1, 2}
        assert 1 not in I[1] and set(I[1, :2]) == {0, 2}
        assert not (I == np.arange(len(X))[:, None]).any()


def test_k_larger_than_dataset_is_padded():
    X, _ = clustered(n=5)
    D, I = knn(X, 8, metric="l2", exclude_self=True)
    assert D.shape == (5, 8)
    assert (I[:, :4] >= 0).all() and (I[:, 4:] == -1).all() and np.isinf(D[:, 4:]).all()
    D, I = knn(X, 8, metric="cosine", exclude_self=False)
    assert (I[:, 5:] == -1).all() and (D[:, 5:] == -np.inf).all()


def test_ivf_path_has_high_recall():
    X, _ = clustered(n=6000, d=32, c=12, seed=1)
    index = Neighbors(X, metric="cosine", exact_limit=1000)
    assert index.kind == "ivf" and index.nlist > 1 and 1 <= index.nprobe <= index.nlist
    assert np.shares_memory(index._X, X)       # rows of any norm: re-ranked from X itself, never a unit-norm copy
    D, I = index.search(X, 10, exclude_self=True)
    _, Ib = knn(X, 10, metric="cosine", exclude_self=True)
    recall = (I[:, :, None] == Ib[:, None, :]).any(-1).mean()
    assert recall > 0.95, recall
    assert index.recall >= 0.95 and index.recall_queries == 1000       # the tuned estimate, on 1,000 rows
    assert abs(index.recall - recall) < 0.03                            # ... tracks the recall of every row
    assert not (I == np.arange(len(X))[:, None]).any()
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)                  # codes find, exact scores rank
    np.testing.assert_allclose(D, np.einsum("ikd,id->ik", Xn[I], Xn), atol=1e-5)
    assert (np.diff(D, axis=1) <= 1e-7).all()
    fixed = Neighbors(X, metric="cosine", exact_limit=1000, nprobe=1)
    assert fixed.nprobe == 1 and fixed.recall < index.recall
    l2 = Neighbors(X, metric="l2", exact_limit=1000)
    D2, I2 = l2.search(X[:500], 5)
    _, Ib2 = knn(X, 5, metric="l2", exclude_self=False)
    assert (I2[:, :, None] == Ib2[:500, None, :]).any(-1).mean() > 0.95


def test_an_inverted_file_with_very_few_lists_still_tunes_nprobe():
    X, _ = clustered(n=120, d=8, c=3, seed=3)
    index = Neighbors(X, metric="cosine", exact_limit=50)           # 120 rows: 3 lists, fewer than any nprobe tried
    assert index.kind == "ivf" and index.nlist == 3 and index.nprobe == 3 and index.recall > 0.9


def test_graph_recall_counts_the_true_neighbours_a_graph_holds():
    from selector.exact import graph_recall, inverse_norms
    X, _ = clustered(n=3000, d=16, c=6, seed=2)
    X = X * np.random.default_rng(0).uniform(0.5, 3.0, (len(X), 1)).astype(np.float32)   # any norm: scaled rows
    _, I = knn(X, 10, metric="cosine", exclude_self=True)
    assert graph_recall(X, I, scale=inverse_norms(X), queries=500) == (1.0, 500)
    broken = I.copy()
    broken[:, 5:] = -1                                        # half of every row's neighbours lost
    recall, used = graph_recall(X, broken, scale=inverse_norms(X), queries=10_000)
    assert used == len(X) and recall == pytest.approx(0.5, abs=0.01)
    shuffled = I[np.random.default_rng(1).permutation(len(X))]   # someone else's neighbours
    assert graph_recall(X, shuffled, scale=inverse_norms(X), queries=500)[0] < 0.1


def test_search_with_rows_and_backend():
    X, _ = clustered(n=400)
    index = Neighbors(X, metric="l2")
    from selector.runtime import faiss_blas                 # torch blocks where faiss's BLAS is generic
    assert index.backend == ("faiss-gpu" if gpu_available() else "torch-cpu" if faiss_blas()["generic"] else "faiss-cpu")
    assert index.kind == "flat"
    rows = np.array([10, 20, 30])
    D, I = index.search(X[rows], 4, exclude_self=True, rows=rows)
    Db, Ib = brute(X, X[rows], 4, "l2", rows)
    assert (I == Ib).all()
    np.testing.assert_allclose(D, Db, atol=1e-4)
    with pytest.raises(InputError, match="rows"):
        index.search(X[rows], 4, exclude_self=True)     # which rows are they?


def test_concurrent_searches_are_identical():
    X, _ = clustered(n=3000, d=32)
    index = Neighbors(X, metric="cosine")
    ref = index.search(X, 8, exclude_self=True)
    results, errors = [None] * 6, []

    def work(t):
        try:
            for _ in range(3):
                results[t] = index.search(X, 8, exclude_self=True)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for D, I in results:
        assert np.array_equal(I, ref[1]) and np.array_equal(D, ref[0])


def test_input_validation():
    X, y = clustered(n=50)
    bad = X.copy()
    bad[[3, 7]] = np.nan
    with pytest.raises(InputError, match="3, 7"):
        knn(bad, 3)
    with pytest.raises(InputError, match="k"):
        knn(X, 0)
    with pytest.raises(InputError, match="k"):
        knn(X, 2.5)
    with pytest.raises(InputError, match="metric"):
        knn(X, 3, metric="manhattan")
    with pytest.raises(InputError, match="2-D"):
        knn(X[0], 3)
    with pytest.raises(InputError, match="dimensions"):
        Neighbors(X).search(X[:, :10], 3)
    with pytest.raises(InputError, match="groups"):
        knn_within_groups(X, y[:10], 3)
    with pytest.raises(InputError, match="device"):
        Neighbors(X, device="tpu")
    if not gpu_available():
        with pytest.raises(InputError, match="GPU"):
            Neighbors(X, device="gpu")


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_torch_exact_search_matches_brute_force(metric):
    """The exact path used where faiss's bundled BLAS runs generic kernels: same contract as faiss's flat index."""
    from selector.exact import TorchFlat
    rng = np.random.default_rng(3)
    X = rng.normal(size=(700, 12)).astype(np.float32)
    TorchFlat.Q_BLOCK, TorchFlat.X_BLOCK = 64, 100          # many blocks: the running top-k merge is exercised
    try:
        index = Neighbors(X, metric=metric, exact_backend="torch")
        assert index.backend == "torch-cpu" and index.kind == "flat"
        D, I = index.search(X, 5, exclude_self=True)
    finally:
        TorchFlat.Q_BLOCK, TorchFlat.X_BLOCK = 2048, 16384
    Dr, Ir = Neighbors(X, metric=metric, exact_backend="faiss").search(X, 5, exclude_self=True)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=1e-4)
    if metric == "l2":          # a row is its own neighbour at distance 0, whatever its norm (no cancellation)
        D0, I0 = Neighbors(30 * X, metric=metric, exact_backend="torch").search(30 * X, 3)
        assert (I0[:, 0] == np.arange(len(X))).all() and np.abs(D0[:, 0]).max() < 1e-6
    small = Neighbors(X[:3], metric=metric, exact_backend="torch").search(X[:3], 4)   # k > n: -1 padding
    assert (small[1][:, 3] == -1).all() and np.isinf(small[0][:, 3]).all()
    with pytest.raises(InputError, match="exact_backend"):
        Neighbors(X, exact_backend="numpy")


def test_building_an_ivf_index_reports_progress():
    from selector.neighbors import Neighbors
    X = np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)
    seen = []
    Neighbors(X, exact_limit=1000, progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert {s for s, _, _ in seen} == {"building the neighbour index"}
    done = [d for _, d, _ in seen]
    assert done == sorted(done) and done[0] == 0 and done[-1] == seen[-1][2] and len(seen) >= 4


def _blas_in_fresh_process(env_core=None) -> dict:
    """faiss_blas() as a fresh process that imports faiss through the engine reports it."""
    import json
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if env_core:
        env["OPENBLAS_CORETYPE"] = env_core
    code = ("import json, os; from selector.runtime import faiss_blas; "
            "print(json.dumps(dict(faiss_blas(), env=os.environ.get('OPENBLAS_CORETYPE'))))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_faiss_runs_a_checked_core_type_and_a_users_choice_stands():
    from selector.runtime import checked_core_type
    core = checked_core_type()
    if core is None:
        pytest.skip("this CPU reports no AVX2: no checked OpenBLAS core type to run")
    picked = _blas_in_fresh_process()
    if picked["core"] is None:
        pytest.skip("threadpoolctl cannot see faiss's bundled OpenBLAS here")
    assert picked["core"].lower() == core.lower() and not picked["generic"] and picked["env"] is None
    forced = _blas_in_fresh_process("Prescott")        # the user's setting is kept: generic, and said so
    assert forced["core"] == "Prescott" and forced["generic"] and forced["env"] == "Prescott"
