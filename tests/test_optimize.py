"""selector.optimize: exact subset size, constraints, class balance, strata, the paper's STE loop."""
import numpy as np
import pytest

from selector.errors import InputError
from selector.paper import paper_score, select_ste
from selector.optimize import (WEIGHT_NAMES, select, selection_score,
                               subset_size)


def brute_topk(score, k, allowed=None):
    idx = np.arange(len(score)) if allowed is None else np.flatnonzero(allowed)
    order = idx[np.lexsort((idx, -score[idx].astype(np.float64)))]
    mask = np.zeros(len(score), bool)
    mask[order[:k]] = True
    return mask


# ------------------------------------------------------------------------------------------ score
def test_selection_score_normalises_and_weights():
    a = np.array([0.0, 5.0, 10.0])
    d = np.array([3.0, 2.0, 1.0])
    s = selection_score({"alignment": a, "diversity": d, "cleanliness": np.ones(3)},
                        {"alignment": 1.0, "diversity": 1.0, "cleanliness": 2.0})
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, [(0 + 1 + 0) / 4, (0.5 + 0.5) / 4, (1 + 0) / 4])  # constant column -> 0
    only_a = selection_score({"alignment": a}, {"alignment": 3.0, "diversity": 0.0})
    np.testing.assert_allclose(only_a, [0, 0.5, 1])


def test_selection_score_errors_name_the_valid_choices():
    a = np.arange(4.0)
    with pytest.raises(InputError) as e:
        selection_score({"alignment": a}, {"alignmnet": 1.0})
    assert all(name in str(e.value) for name in WEIGHT_NAMES)
    with pytest.raises(InputError, match="above 0"):
        selection_score({"alignment": a}, {"alignment": 0.0})
    with pytest.raises(InputError, match=">= 0"):
        selection_score({"alignment": a}, {"alignment": -1.0})
    with pytest.raises(InputError, match="no 'diversity' column"):
        selection_score({"alignment": a}, {"alignment": 1.0, "diversity": 1.0})
    with pytest.raises(InputError, match="rows 2"):
        selection_score({"alignment": np.array([0, 1, np.nan, 3])}, {"alignment": 1.0})
    with pytest.raises(InputError, match="3 values"):
        selection_score({"alignment": a, "diversity": a[:3]}, {"alignment": 1.0, "diversity": 1.0})


# ------------------------------------------------------------------------------------------ select
def test_exact_size_for_many_ratios_and_sizes():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 400))
        ratio = float(rng.uniform(1e-3, 1.0))
        score = rng.random(n).astype(np.float32)
        if trial % 4 == 0:
            score = np.round(score * 3)                          # many ties
        labels = rng.integers(0, int(rng.integers(1, 8)), n)
        strategy = ("topk", "stratified")[trial % 2]
        mask = select(score, ratio, labels=labels, class_balance=bool(trial % 3 == 0), strategy=strategy,
                      n_strata=int(rng.integers(1, 12)))
        k = subset_size(n, ratio)
        assert mask.dtype == bool and mask.shape == (n,) and mask.sum() == k
        assert k == max(1, min(n, int(np.floor(ratio * n + 0.5))))
    assert subset_size(10, 0.25) == 3 and subset_size(10, 1.0) == 10 and subset_size(3, 0.01) == 1


def test_topk_equals_brute_force_sort_with_ties():
    rng = np.random.default_rng(1)
    for trial in range(60):
        n = int(rng.integers(1, 3000))
        score = rng.integers(0, 20, n).astype(np.float32) if trial % 2 else rng.random(n).astype(np.float32)
        ratio = float(rng.uniform(0.01, 1.0))
        exclude = rng.random(n) < 0.2
        k = subset_size(n, ratio)
        if (~exclude).sum() < k:
            exclude[:] = False
        mask = select(score, ratio, exclude=exclude)
        assert np.array_equal(mask, brute_topk(score, k, ~exclude))


def test_class_balanced_topk_equals_brute_force_per_class():
    rng = np.random.default_rng(2)
    score = rng.random(1000).astype(np.float32)
    labels = rng.integers(0, 4, 1000)
    mask = select(score, 0.2, labels=labels, class_balance=True)
    counts = np.bincount(labels[mask], minlength=4)
    assert counts.sum() == 200 and (counts == 50).all()
    for c in range(4):
        assert np.array_equal(mask & (labels == c), brute_topk(score, 50, labels == c))


def test_keep_never_exclude_are_honoured():
    rng = np.random.default_rng(3)
    n = 500
    score = rng.random(n).astype(np.float32)
    keep = np.argsort(score)[:10]                 # the 10 worst: would never be chosen otherwise
    never = np.argsort(-score)[:10]               # the 10 best
    exclude = np.zeros(n, bool)
    exclude[np.argsort(-score)[10:30]] = True
    exclude[keep[:3]] = True                      # keep wins over exclude
    for strategy in ("topk", "stratified"):
        mask = select(score, 0.3, keep=keep, never=never, exclude=exclude, strategy=strategy)
        assert mask.sum() == 150
        assert mask[keep].all() and not mask[never].any() and not (mask & exclude & ~np.isin(np.arange(n), keep)).any()
    mask = select(score, 0.3, keep=keep, never=never, exclude=exclude)
    allowed = ~exclude & ~np.isin(np.arange(n), never) & ~np.isin(np.arange(n), keep)
    assert np.array_equal(mask & allowed, brute_topk(score, 140, allowed))


def test_impossible_requests_say_what_to_change():
    score = np.linspace(0, 1, 100)
    with pytest.raises(InputError, match="keep has 20 rows"):
        select(score, 0.1, keep=np.arange(20))
    with pytest.raises(InputError, match=r"only 60 can be chosen.*Lower the ratio to at most 0\.6"):
        select(score, 0.7, exclude=np.arange(100) < 40)
    with pytest.raises(InputError, match="both keep and never"):
        select(score, 0.5, keep=[1, 2], never=[2, 3])
    with pytest.raises(InputError, match="ratio"):
        select(score, 0.0)
    with pytest.raises(InputError, match="ratio"):
        select(score, 1.5)
    with pytest.raises(InputError, match="labels"):
        select(score, 0.5, class_balance=True)
    with pytest.raises(InputError, match="strategy"):
        select(score, 0.5, strategy="greedy")
    with pytest.raises(InputError, match="outside"):
        select(score, 0.5, never=[100])
    with pytest.raises(InputError, match="rows 5"):
        select(np.where(np.arange(100) == 5, np.nan, score), 0.5)


def test_class_balance_quotas_within_one_and_redistributed():
    rng = np.random.default_rng(4)
    for trial in range(100):
        C = int(rng.integers(2, 9))
        n = int(rng.integers(C * 5, 800))
        labels = rng.integers(0, C, n)
        ratio = float(rng.uniform(0.01, 1.0))
        strategy = ("topk", "stratified")[trial % 2]
        mask = select(rng.random(n), ratio, labels=labels, class_balance=True, strategy=strategy)
        k = subset_size(n, ratio)
        sizes = np.bincount(labels, minlength=C)
        q = np.bincount(labels[mask], minlength=C)
        assert q.sum() == k
        # every class gets min(its size, level) with level T or T+1: as equal as availability allows
        assert (q <= sizes).all()
        assert (q >= np.minimum(sizes, q.max() - 1)).all()
        open_ = q < sizes
        if open_.any():
            assert q[open_].max() - q[open_].min() <= 1
    # a small class is used up and its shortfall goes to the others
    labels = np.repeat([0, 1, 2], [5, 100, 100])
    q = np.bincount(labels[select(np.ones(205), 0.5, labels=labels, class_balance=True)], minlength=3)
    assert q.tolist() == [5, 49, 49]     # k = round(102.5) = 103


def test_stratified_spreads_over_the_score_range():
    rng = np.random.default_rng(5)
    n = 4000
    score = rng.beta(8, 1.5, n).astype(np.float32)            # most samples easy (high score)
    labels = rng.integers(0, 4, n)
    top = select(score, 0.1, labels=labels, strategy="topk")
    strat = select(score, 0.1, labels=labels, strategy="stratified", n_strata=10)
    assert strat.sum() == top.sum() == 400
    assert score[strat].min() < score[top].min()              # reaches into the harder part
    assert np.median(score[strat]) < np.median(score[top])
    # proportional class budgets without class_balance
    np.testing.assert_allclose(np.bincount(labels[strat]), np.bincount(labels) * 0.1, atol=1)
    # inside each (class, stratum) cell the chosen are drawn at random, in the fixed draw order, not the
    # cell's best
    from selector.optimize import _draw_order
    key = _draw_order(n)
    best_of_cell = 0
    for c in range(4):
        rows = np.flatnonzero(labels == c)
        s = score[rows].astype(np.float64)
        frac = (s.max() - s) / (s.max() - s.min())
        cell = np.minimum((frac * 10).astype(int), 9)
        taken = []
        for j in range(10):
            in_cell = cell == j
            chosen = strat[rows][in_cell]
            if chosen.any() and (~chosen).any():
                assert key[rows][in_cell][chosen].max() < key[rows][in_cell][~chosen].min()
                best_of_cell += s[in_cell][chosen].min() >= s[in_cell][~chosen].max()
            taken.append((int(chosen.sum()), int(in_cell.sum())))
        # even spread: a cell below the common level is exhausted
        level = max(t for t, _ in taken)
        assert all(t >= level - 1 or t == size for t, size in taken)
    assert best_of_cell < 5


def test_select_is_deterministic_and_fast_path_is_a_noop_on_ratio_one():
    rng = np.random.default_rng(6)
    score = np.round(rng.random(1000), 1)
    labels = rng.integers(0, 3, 1000)
    a = select(score, 0.37, labels=labels, class_balance=True, strategy="stratified")
    b = select(score.copy(), 0.37, labels=labels.copy(), class_balance=True, strategy="stratified")
    assert np.array_equal(a, b)
    assert select(score, 1.0, strategy="stratified", labels=labels).all()


# ------------------------------------------------------------------------------------------ the paper's loop
def normalised_scores(n, seed):
    rng = np.random.default_rng(seed)
    A = rng.beta(5, 2, n)
    D = rng.beta(2, 5, n)
    return ((A - A.min()) / np.ptp(A)).astype(np.float32), ((D - D.min()) / np.ptp(D)).astype(np.float32)


@pytest.mark.parametrize("ratio", [0.1, 0.5])
def test_ste_loop_matches_the_fast_path(ratio):
    n = 5000
    A, D = normalised_scores(n, seed=7)
    loop, info = select_ste(A, D, ratio, repair=False)
    fast = select(paper_score(A, D), ratio)
    assert info["converged"] and not info["unreachable"] and info["n_stuck"] == 0
    assert 0 < info["iterations"] < 100_000
    # the loop ends at a top set of s, within +-0.05% of n of k
    assert abs(info["off_by"]) <= 0.0005 * n
    assert (loop ^ fast).sum() <= 0.0005 * n + 1
    s = paper_score(A, D)
    assert s[loop].min() >= s[~loop].max()
    repaired, info2 = select_ste(A, D, ratio)
    assert repaired.sum() == info2["k"] == subset_size(n, ratio)
    assert np.array_equal(repaired, fast)


def test_ste_failure_mode_is_reported_and_repaired():
    rng = np.random.default_rng(8)
    n = 5000
    A = (rng.random(n) * 0.05).astype(np.float32)
    A[:1000] = 1.0                      # mean(A) ~ 0.22, so these have s = A/mean(A) > 4 > penalty 2
    A[1000] = 0.0
    D = rng.random(n).astype(np.float32)
    s = paper_score(A, D)
    assert (s > 2.0).sum() == 1000
    mask, info = select_ste(A, D, 0.1, max_iter=1500, repair=False)
    assert not info["converged"] and info["missed_ratio"] and info["unreachable"]
    assert info["n_stuck"] == 1000 and info["n_selected_loop"] >= 1000 and mask.sum() >= 1000
    assert mask[:1000].all()            # the s > penalty samples were never dropped
    fixed, info = select_ste(A, D, 0.1, max_iter=1500)
    assert fixed.sum() == 500 and info["repaired"]["removed"] == info["n_selected_loop"] - 500
    assert np.array_equal(fixed, select(s, 0.1))


def test_ste_validation():
    A, D = normalised_scores(100, seed=9)
    with pytest.raises(InputError, match="positive mean"):
        select_ste(np.zeros(100), D, 0.5)
    with pytest.raises(InputError, match="ratio"):
        select_ste(A, D, 0.0)
    with pytest.raises(InputError, match="lr"):
        select_ste(A, D, 0.5, lr=-1)
    with pytest.raises(InputError, match="99 values"):
        select_ste(A, D[:99], 0.5)
