"""Noise injection (exact counts, reproducible, pairs) and the audit metrics against brute force."""
import numpy as np
import pytest

from selector.errors import InputError
from selector.noise import NOISE_MODES, audit_metrics, confusable_pairs, inject_noise

C = 6


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
    thresholds = np.unique(s)                          # every way to flag the top rows, ties kept together
    f1s = [2 * ((s >= u) & t).sum() / ((s >= u).sum() + t.sum()) for u in thresholds]
    best = max(range(len(thresholds)), key=lambda i: (f1s[i], thresholds[i]))   # equal F1: the fewest flags
    assert m["best_f1"] == pytest.approx(max(f1s)) and m["best_f1"] >= m["f1"]
    assert m["best_n_flagged"] == (s >= thresholds[best]).sum()


def test_audit_metrics_edges():
    m = audit_metrics(np.zeros(4), np.zeros(4, bool), np.array([1, 0, 0, 0], bool))
    assert m["precision"] == 0 and m["f1"] == 0 and m["auroc"] == 0.5
    m = audit_metrics(np.zeros(3), np.ones(3, bool), np.zeros(3, bool))
    assert np.isnan(m["auroc"]) and m["recall"] == 0 and (m["best_f1"], m["best_n_flagged"]) == (0, 0)
    with pytest.raises(InputError, match="one length"):
        audit_metrics(np.zeros(3), np.zeros(2, bool), np.zeros(3, bool))
    with pytest.raises(InputError, match="NaN"):
        audit_metrics(np.array([0, np.nan]), np.zeros(2, bool), np.zeros(2, bool))


def test_mode_none_flips_nothing_and_modes_come_from_the_registry():
    y = np.arange(60) % C
    noisy, flipped = inject_noise(y, rate=0.3, mode="none", n_classes=C)
    np.testing.assert_array_equal(noisy, y)
    assert not flipped.any()
    assert NOISE_MODES.names() == ["none", "uniform", "confusable", "instance"]
    with pytest.raises(InputError, match="choose one of: none, uniform, confusable, instance"):
        inject_noise(y, rate=0.3, mode="pairs", n_classes=C)



def test_instance_noise_flips_where_the_encoder_hesitates():
    from selector.noise import hesitation
    from tests.synthetic import clusters
    X, T, y = clusters(n=3000, seed=4)
    rival, gap = hesitation(X, T, y, block=700)                      # several blocks
    S = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ (T / np.linalg.norm(T, axis=1, keepdims=True)).T
    brute = S.copy()
    brute[np.arange(len(y)), y] = -np.inf
    assert (rival == brute.argmax(1)).all() and (rival != y).all()
    np.testing.assert_allclose(gap, S[np.arange(len(y)), y] - brute.max(1), atol=1e-5)
    noisy, flipped = inject_noise(y, rate=0.2, mode="instance", n_classes=6, hesitation=(rival, gap), seed=1)
    assert flipped.sum() == 600 and (noisy[flipped] == rival[flipped]).all() and (noisy[~flipped] == y[~flipped]).all()
    assert np.median(gap[flipped]) < np.median(gap[~flipped])         # ambiguous rows flip more often
    hardest = gap <= np.quantile(gap, 0.2)
    assert flipped[hardest].mean() > 2 * flipped[~hardest].mean()
    again, _ = inject_noise(y, rate=0.2, mode="instance", n_classes=6, hesitation=(rival, gap), seed=1)
    assert (again == noisy).all()
    with pytest.raises(InputError, match="hesitation"):
        inject_noise(y, rate=0.2, mode="instance", n_classes=6)
    with pytest.raises(InputError, match="another class"):
        inject_noise(y, rate=0.2, mode="instance", n_classes=6, hesitation=(y, gap))
