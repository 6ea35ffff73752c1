"""OOD images and near-duplicates (planted, known answers), and `find_issues`, which runs every detector
once and explains each affected row in words."""
import numpy as np
import pytest

from selector.errors import InputError
from selector.issues import find_issues
from selector.neighbors import knn
from selector.noise import inject_noise
from selector.outliers import find_near_duplicates, find_ood, neighbor_similarities, robust_z
from selector.score import zero_shot_logits
from tests.synthetic import clusters

C = 6
NAMES = [f"class{c}" for c in range(C)]


def _planted(n=2000, seed=3):
    """Clusters with 10 corrupted rows at the end and a chain of near-copies of row 20."""
    X, T, y = clusters(n=n, seed=seed)
    rng = np.random.default_rng(0)
    ood_rows = np.arange(n - 10, n)
    X[ood_rows] = rng.normal(scale=4.0, size=(10, X.shape[1])) - 4 * X.mean(0)   # far from every class
    X[1500] = X[20] * 1.0001           # near-duplicates: the lower row id is the one kept
    X[1700] = X[20]
    X[1800] = X[1500]
    return X, T, y, ood_rows


def test_neighbor_similarities_match_brute_force():
    X, _, _ = clusters(n=300)
    _, I = knn(X, 5)
    I[3, -1] = -1                                     # a missing neighbour stays NaN
    sims = neighbor_similarities(X, I)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    brute = np.einsum("ijk,ik->ij", Xn[np.maximum(I, 0)], Xn)
    np.testing.assert_allclose(np.where(I >= 0, sims, 0), np.where(I >= 0, brute, 0), atol=1e-5)
    assert np.isnan(sims[3, -1]) and np.isfinite(np.delete(sims.ravel(), 3 * 5 + 4)).all()


def test_ood_finds_corrupted_rows():
    X, T, _, ood_rows = _planted()
    _, I = knn(X, 10)
    score, ood = find_ood(zero_shot_logits(X, T).max(1), neighbor_similarities(X, I))
    assert score.shape == (len(X),) and score.dtype == np.float32
    assert ood[ood_rows].mean() >= 0.8 and ood.sum() <= 15, np.flatnonzero(ood)
    assert score[ood_rows].min() > np.median(score)


def test_near_duplicates_resolve_to_the_lowest_row():
    X, _, _, _ = _planted()
    _, I = knn(X, 10)
    dup = find_near_duplicates(neighbor_similarities(X, I), I, threshold=0.999)
    assert dup[20] == -1 and dup[1500] == 20 and dup[1700] == 20 and dup[1800] == 20
    assert (dup >= 0).sum() == 3


def test_duplicates_data_driven_for_collapsed_embeddings():
    """Every row within cosine 0.98 of its neighbours (a collapsed encoder): only real copies count."""
    X, _, _ = clusters(n=1500, seed=5)
    X = X * 0.02 + 5.0                       # all rows nearly parallel: cosine > 0.999
    X[900] = X[10]
    _, I = knn(X, 10)
    dup = find_near_duplicates(neighbor_similarities(X, I), I)
    assert dup[900] == 10 and (dup >= 0).sum() <= 5


def test_robust_z_and_bad_input():
    v = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    z = robust_z(v)
    assert z[2] == 0 and z[-1] > 3.5 and (robust_z(np.ones(4)) == 0).all()
    X, _, _ = clusters(n=100)
    _, I = knn(X, 5)
    with pytest.raises(InputError, match="duplicate_threshold"):
        find_near_duplicates(neighbor_similarities(X, I), I, threshold=0)
    with pytest.raises(InputError, match="outside"):
        neighbor_similarities(X, I + 200)
    with pytest.raises(InputError, match="neighbor_sims"):
        find_ood(np.zeros(100), np.zeros((99, 5)))


def test_find_issues_explains_every_affected_row():
    X, T, y, ood_rows = _planted()
    noisy, truth = inject_noise(y, rate=0.2, mode="uniform", n_classes=C, seed=0)
    issues = find_issues(X, T, noisy, NAMES, seed=0, duplicate_threshold=0.999)
    a = issues.labels
    assert len(issues.reason) == len(X) and issues.duplicate_of[1700] == 20
    i = np.flatnonzero(a.flagged & truth)[0]
    assert f"label '{NAMES[noisy[i]]}'" in issues.reason[i] and "neighbours say" in issues.reason[i]
    assert "near-duplicate of row 20" in issues.reason[1700]
    assert "matches no class" in issues.reason[ood_rows[issues.ood[ood_rows]][0]]
    quiet = ~a.flagged & ~issues.ood & (issues.duplicate_of < 0)
    assert all(r == "" for r in issues.reason[quiet])
    with pytest.raises(InputError, match="class_names"):
        find_issues(X, T, noisy, NAMES[:-1])
    with pytest.raises(InputError, match="duplicate_threshold"):
        find_issues(X, T, noisy, NAMES, duplicate_threshold=0)
