"""score.py against brute-force numpy references, edge cases and input validation."""
import numpy as np
import pytest

from selector.errors import InputError
from selector.score import alignment, default_k, diversity, minmax, zero_shot_probs


def _data(n=300, d=8, C=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    F = (rng.normal(size=(C, d))[y] + rng.normal(scale=0.7, size=(n, d))).astype(np.float32)
    G = rng.normal(size=(C, d)).astype(np.float32)
    return F, G, y


def _sds_brute(F, y, k):
    out = np.zeros(len(y))
    for i in range(len(y)):
        same = np.flatnonzero((y == y[i]) & (np.arange(len(y)) != i))
        if len(same) == 0:
            continue
        d = np.sort(np.linalg.norm(F[same] - F[i], axis=1))[: k - 1]
        out[i] = d.mean()
    return out


def test_alignment_matches_brute_force():
    F, G, y = _data()
    sas = alignment(F, G, y)
    ref = [F[i] @ G[y[i]] / np.linalg.norm(F[i]) / np.linalg.norm(G[y[i]]) for i in range(len(y))]
    assert sas.dtype == np.float32 and sas.shape == (len(y),)
    np.testing.assert_allclose(sas, ref, atol=1e-5)


@pytest.mark.parametrize("k", [2, 5, 30])
def test_diversity_matches_brute_force(k):
    F, _, y = _data()
    np.testing.assert_allclose(diversity(F, y, k=k), _sds_brute(F, y, k), rtol=1e-4, atol=1e-5)


def test_diversity_default_k_small_classes_and_singletons():
    F, _, y = _data(n=120, C=3)
    y = y.copy()
    y[0] = 3            # a singleton class: no neighbour -> 0
    y[1:4] = 4          # a 3-member class smaller than K: uses its 2 other members
    k = default_k(np.bincount(y))
    sds = diversity(F, y)
    np.testing.assert_allclose(sds, _sds_brute(F, y, k), rtol=1e-4, atol=1e-5)
    assert sds[0] == 0


def test_diversity_with_precomputed_neighbors():
    from selector.neighbors import knn_within_groups
    F, _, y = _data()
    D, I = knn_within_groups(F, y, 4, metric="l2", exclude_self=True)
    np.testing.assert_allclose(diversity(F, y, k=5, neighbors=(D, I)), diversity(F, y, k=5), rtol=1e-5)
    with pytest.raises(InputError, match="neighbors I"):
        diversity(F, y, k=5, neighbors=(D, I[:10]))


def test_default_k():
    assert default_k([5000] * 10) == 100          # clamped at 100 (paper: CIFAR-10)
    assert default_k([500] * 100) == 50           # paper: CIFAR-100
    assert default_k([6000] * 10) == 100
    assert default_k([10, 12]) == 2               # clamped at 2
    assert default_k(np.array([0, 200, 300, 400])) == 30   # empty classes ignored
    with pytest.raises(InputError):
        default_k([0, 0])


def test_minmax_edge_cases():
    np.testing.assert_allclose(minmax([1.0, 3.0, 2.0]), [0, 1, 0.5])
    assert minmax(np.array([3, 1, 2], dtype=np.int64)).dtype == np.float32
    np.testing.assert_array_equal(minmax([7.0, 7.0, 7.0]), [0, 0, 0])     # constant -> zeros
    np.testing.assert_array_equal(minmax([5.0]), [0])
    assert minmax(np.array([])).shape == (0,)
    out = minmax([np.nan, 1.0, 3.0])
    assert np.isnan(out[0]) and out[1] == 0 and out[2] == 1
    assert np.isnan(minmax([np.nan, np.nan])).all()
    with pytest.raises(InputError, match="inf"):
        minmax([1.0, np.inf])
    with pytest.raises(InputError, match="1-D"):
        minmax(np.zeros((2, 2)))


def test_zero_shot_probs():
    X, T, _ = _data()
    P = zero_shot_probs(X, T, temperature=0.1)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Tn = T / np.linalg.norm(T, axis=1, keepdims=True)
    Z = Xn @ Tn.T / 0.1
    ref = np.exp(Z - Z.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    assert P.dtype == np.float32 and P.shape == (len(X), len(T))
    np.testing.assert_allclose(P, ref, atol=1e-5)
    np.testing.assert_allclose(P.sum(1), 1, atol=1e-5)
    for bad in (0, -1, np.nan):
        with pytest.raises(InputError, match="temperature"):
            zero_shot_probs(X, T, temperature=bad)


def test_bad_inputs_raise_clear_errors():
    F, G, y = _data()
    with pytest.raises(InputError, match="2-D"):
        alignment(F[0], G, y)
    with pytest.raises(InputError, match="columns"):
        alignment(F, G[:, :3], y)
    Fn = F.copy()
    Fn[[3, 7]] = np.nan
    with pytest.raises(InputError, match="rows 3, 7"):
        alignment(Fn, G, y)
    yb = y.copy()
    yb[5] = 9
    with pytest.raises(InputError, match=r"\[0, 4\).*rows 5"):
        alignment(F, G, yb)
    with pytest.raises(InputError, match="entries"):
        alignment(F, G, y[:-1])
    with pytest.raises(InputError, match="integer class indices"):
        alignment(F, G, y.astype(str))
    with pytest.raises(InputError, match="whole numbers"):
        diversity(F, y + 0.5)
    with pytest.raises(InputError, match="k must be"):
        diversity(F, y, k=1)
    with pytest.raises(InputError, match="columns"):
        zero_shot_probs(F, G[:, :2])
