"""Label audit on seeded synthetic data with known answers; noise injection; metrics vs brute force."""
import numpy as np
import pytest

from selector.adapt import Adapters
from selector.errors import InputError
from selector.noise import audit_labels, audit_metrics, confusable_pairs, inject_noise
from selector.score import alignment, zero_shot_probs

C = 6
NAMES = [f"class{c}" for c in range(C)]


def _clusters(n=3000, d=24, seed=0):
    """Gaussian class clusters; classes (0,1), (2,3), (4,5) are close pairs; T = noisy class means."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(C // 2, d))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    mu = []
    for b in base:
        off = rng.normal(size=d)
        off /= np.linalg.norm(off)
        mu += [4 * b + 0.9 * off, 4 * b - 0.9 * off]
    mu = np.array(mu)
    y = rng.integers(0, C, n)
    X = (mu[y] + rng.normal(scale=0.6, size=(n, d))).astype(np.float32)
    T = (mu + rng.normal(scale=0.3, size=mu.shape)).astype(np.float32)
    return X, T, y


def _confusion(X, T, y):
    pred = zero_shot_probs(X, T).argmax(1)
    M = np.zeros((C, C))
    np.add.at(M, (y, pred), 1)
    return M


# ------------------------------------------------------------------------------------ inject_noise
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.333, 0.4])
def test_inject_uniform_exact_count_and_reproducible(rate):
    y = np.random.default_rng(1).integers(0, C, 1001)
    noisy, flipped = inject_noise(y, rate=rate, mode="uniform", n_classes=C, seed=3)
    assert flipped.sum() == round(rate * len(y))
    assert (noisy[flipped] != y[flipped]).all() and (noisy[~flipped] == y[~flipped]).all()
    assert noisy.dtype == np.int64 and noisy.min() >= 0 and noisy.max() < C
    again, f2 = inject_noise(y, rate=rate, mode="uniform", n_classes=C, seed=3)
    np.testing.assert_array_equal(noisy, again)
    np.testing.assert_array_equal(flipped, f2)
    if rate:
        other, _ = inject_noise(y, rate=rate, mode="uniform", n_classes=C, seed=4)
        assert (other != noisy).any()


def test_inject_uniform_spreads_over_other_classes():
    y = np.zeros(6000, np.int64)
    noisy, flipped = inject_noise(y, rate=0.5, mode="uniform", n_classes=C, seed=0)
    counts = np.bincount(noisy[flipped], minlength=C)
    assert counts[0] == 0 and counts[1:].min() > 0.8 * counts[1:].mean()


def test_confusable_pairs_and_flips_go_to_partner():
    M = np.array([[90, 8, 1, 1],
                  [6, 90, 3, 1],
                  [1, 2, 90, 7],
                  [0, 1, 9, 90]], float)
    assert sorted(confusable_pairs(M)) == [(0, 1), (2, 3)]
    y = np.random.default_rng(0).integers(0, 4, 2000)
    noisy, flipped = inject_noise(y, rate=0.3, mode="confusable", n_classes=4, confusion=M, seed=0)
    assert flipped.sum() == 600
    partner = np.array([1, 0, 3, 2])
    np.testing.assert_array_equal(noisy[flipped], partner[y[flipped]])
    # odd number of classes: the class left over is never flipped
    M5 = np.pad(M, ((0, 1), (0, 1)))
    y5 = np.r_[y, np.full(200, 4)]
    n5, f5 = inject_noise(y5, rate=0.2, mode="confusable", n_classes=5, confusion=M5, seed=0)
    assert not f5[y5 == 4].any() and f5.sum() == round(0.2 * len(y5))


def test_inject_noise_bad_input():
    y = np.array([0, 1, 2, 1])
    with pytest.raises(InputError, match="mode"):
        inject_noise(y, rate=0.5, mode="pairs", n_classes=3)
    with pytest.raises(InputError, match="confusion"):
        inject_noise(y, rate=0.5, mode="confusable", n_classes=3)
    with pytest.raises(InputError, match="confusion must be"):
        inject_noise(y, rate=0.5, mode="confusable", n_classes=3, confusion=np.eye(2))
    with pytest.raises(InputError, match="lower the rate"):
        inject_noise(np.r_[y, [2] * 10], rate=0.9, mode="confusable", n_classes=3, confusion=np.ones((3, 3)))
    with pytest.raises(InputError, match="rate"):
        inject_noise(y, rate=1.5, n_classes=3)
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        inject_noise(np.array([0, 5]), rate=0.5, n_classes=3)
    with pytest.raises(InputError, match="1-D"):
        inject_noise(np.zeros((2, 2), int), rate=0.5, n_classes=3)


# ------------------------------------------------------------------------------------ audit_metrics
def _brute_auroc(s, t):
    pos, neg = s[t], s[~t]
    return np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])


def _brute_ap(s, t):
    order = np.argsort(-s, kind="stable")
    # average precision over distinct thresholds (ties count together), as sklearn defines it
    ap, prev_recall = 0.0, 0.0
    for thr in np.unique(s)[::-1]:
        sel = s >= thr
        prec = (sel & t).sum() / sel.sum()
        rec = (sel & t).sum() / t.sum()
        ap += (rec - prev_recall) * prec
        prev_recall = rec
    assert len(order) == len(s)
    return ap


def test_audit_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    t = rng.random(300) < 0.3
    s = np.round(rng.random(300) + 0.6 * t, 2)        # rounded: ties exercised
    f = s > 0.8
    m = audit_metrics(s, f, t)
    tp = (f & t).sum()
    assert m["precision"] == pytest.approx(tp / f.sum())
    assert m["recall"] == pytest.approx(tp / t.sum())
    assert m["f1"] == pytest.approx(2 * tp / (f.sum() + t.sum()))
    assert m["auroc"] == pytest.approx(_brute_auroc(s, t))
    assert m["average_precision"] == pytest.approx(_brute_ap(s, t))
    assert (m["n_flagged"], m["n_true"]) == (f.sum(), t.sum())


def test_audit_metrics_edges():
    m = audit_metrics(np.zeros(4), np.zeros(4, bool), np.array([1, 0, 0, 0], bool))
    assert m["precision"] == 0 and m["f1"] == 0 and m["auroc"] == 0.5
    m = audit_metrics(np.zeros(3), np.ones(3, bool), np.zeros(3, bool))
    assert np.isnan(m["auroc"]) and m["recall"] == 0
    with pytest.raises(InputError, match="one length"):
        audit_metrics(np.zeros(3), np.zeros(2, bool), np.zeros(3, bool))
    with pytest.raises(InputError, match="NaN"):
        audit_metrics(np.array([0, np.nan]), np.zeros(2, bool), np.zeros(2, bool))


# ------------------------------------------------------------------------------------ audit_labels
def test_audit_recovers_uniform_flips():
    X, T, y = _clusters()
    noisy, truth = inject_noise(y, rate=0.2, mode="uniform", n_classes=C, seed=0)
    a = audit_labels(X, T, noisy, NAMES, seed=0)
    m = audit_metrics(a.noise_score, a.flagged, truth)
    assert m["auroc"] > 0.98 and m["f1"] > 0.85, m
    n = len(y)
    for arr, dt in ((a.noise_score, np.float32), (a.given_prob, np.float32), (a.suggested_prob, np.float32),
                    (a.knn_agreement, np.float32), (a.ood_score, np.float32), (a.suggested_label, np.int64),
                    (a.duplicate_of, np.int64)):
        assert arr.shape == (n,) and arr.dtype == dt
    assert a.flagged.dtype == bool and len(a.reason) == n and a.class_noise_rate.shape == (C,)
    assert 0 <= a.noise_score.min() and a.noise_score.max() <= 1
    # data-driven threshold: flagged == score above it (and suggestion differs from the label)
    assert (a.noise_score[a.flagged] >= a.threshold).all()
    assert (a.suggested_label[a.flagged] != noisy[a.flagged]).all()
    # the estimated per-class noise rates track the truth; suggestions restore most true labels
    true_rate = np.bincount(noisy, weights=truth, minlength=C) / np.bincount(noisy, minlength=C)
    np.testing.assert_allclose(a.class_noise_rate, true_rate, atol=0.06)
    assert (a.suggested_label[truth] == y[truth]).mean() > 0.85
    # reasons: every flagged row explains itself, unremarkable rows say nothing
    i = np.flatnonzero(a.flagged & truth)[0]
    assert f"label '{NAMES[noisy[i]]}'" in a.reason[i] and "neighbours say" in a.reason[i]
    quiet = ~a.flagged & ~a.ood & (a.duplicate_of < 0)
    assert all(r == "" for r in np.asarray(a.reason)[quiet])


def test_audit_beats_paper_adapters_under_pair_flips():
    """The paper's weakness: adapters fit on noisy labels learn class-dependent flips."""
    X, T, y = _clusters(seed=1)
    noisy, truth = inject_noise(y, rate=0.3, mode="confusable", n_classes=C, confusion=_confusion(X, T, y),
                                seed=1)
    a = audit_labels(X, T, noisy, NAMES, seed=0)
    audit_auc = audit_metrics(a.noise_score, a.flagged, truth)["auroc"]
    ad = Adapters(robust=False, seed=0).fit(X, T, noisy)
    sas = alignment(ad.transform_images(X), ad.transform_texts(T), noisy)
    paper_auc = audit_metrics(-sas, np.zeros(len(y), bool), truth)["auroc"]
    assert audit_auc > 0.97 and audit_auc > paper_auc + 0.05, (audit_auc, paper_auc)


def test_audit_clean_labels_flag_little():
    X, T, y = _clusters(seed=2)
    a = audit_labels(X, T, y, NAMES, seed=0)
    assert a.flagged.mean() < 0.05 and a.class_noise_rate.max() < 0.08


def test_audit_ood_and_duplicates():
    X, T, y = _clusters(n=2000, seed=3)
    rng = np.random.default_rng(0)
    ood_rows = np.arange(1990, 2000)
    # corrupted images: far from every class mean and from each other
    X[ood_rows] = rng.normal(scale=4.0, size=(10, X.shape[1])) - 4 * X.mean(0)
    X[1500] = X[20] * 1.0001           # near-duplicates: lower row id is kept
    X[1700] = X[20]
    X[1800] = X[1500]
    a = audit_labels(X, T, y, NAMES, seed=0, duplicate_threshold=0.999)
    assert a.ood[ood_rows].mean() >= 0.8 and a.ood.sum() <= 15, np.flatnonzero(a.ood)
    assert a.duplicate_of[20] == -1
    assert a.duplicate_of[1500] == 20 and a.duplicate_of[1700] == 20 and a.duplicate_of[1800] == 20
    assert (a.duplicate_of >= 0).sum() == 3
    assert "near-duplicate of row 20" in a.reason[1700]
    assert "matches no class" in a.reason[ood_rows[a.ood[ood_rows]][0]]


def test_duplicates_data_driven_for_collapsed_embeddings():
    """Every row within cosine 0.98 of its neighbours (a collapsed encoder): only real copies count."""
    X, T, y = _clusters(n=1500, seed=5)
    X = X * 0.02 + 5.0                       # all rows nearly parallel: cosine > 0.999
    X[900] = X[10]
    a = audit_labels(X, T, y, NAMES, seed=0)
    assert a.duplicate_of[900] == 10 and (a.duplicate_of >= 0).sum() <= 5


def test_audit_accepts_precomputed_neighbors_and_is_seeded():
    from selector.neighbors import Neighbors, knn
    X, T, y = _clusters(n=1500, seed=4)
    noisy, _ = inject_noise(y, rate=0.2, n_classes=C, seed=0)
    a = audit_labels(X, T, noisy, NAMES, seed=5)
    b = audit_labels(X, T, noisy, NAMES, seed=5, neighbors=knn(X, 10))
    c = audit_labels(X, T, noisy, NAMES, seed=5, neighbors=Neighbors(X))
    np.testing.assert_array_equal(a.flagged, b.flagged)
    np.testing.assert_allclose(a.noise_score, c.noise_score, atol=1e-6)


def test_audit_bad_input():
    X, T, y = _clusters(n=200)
    with pytest.raises(InputError, match="class_names"):
        audit_labels(X, T, y, NAMES[:-1])
    with pytest.raises(InputError, match=r"rows 7"):
        yb = y.copy()
        yb[7] = C
        audit_labels(X, T, yb, NAMES)
    Xb = X.copy()
    Xb[3, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        audit_labels(Xb, T, y, NAMES)
    with pytest.raises(InputError, match="columns"):
        audit_labels(X, T[:, :5], y, NAMES)
    with pytest.raises(InputError, match="neighbors"):
        audit_labels(X, T, y, NAMES, neighbors=(None, np.zeros((5, 3), int)))
    with pytest.raises(InputError, match="at least 2 classes"):
        audit_labels(X, T, np.zeros(len(y), int), NAMES)
    with pytest.raises(InputError, match="duplicate_threshold"):
        audit_labels(X, T, y, NAMES, duplicate_threshold=0)
