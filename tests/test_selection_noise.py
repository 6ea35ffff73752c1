"""Never worse than random on noise: over many random settings the subset holds no larger share of suspects
(flagged or OOD rows nobody reviewed or corrected) than the eligible rows do; corrections relabel exactly the
confident rows; the warnings say when suspects are in the subset."""
import numpy as np
import pandas as pd
import pytest

from selector.errors import InputError
from selector.optimize import select, subset_size
from selector.selection import CONFIDENT, Selection, apply, selection_mask, selection_warnings
from tests.synthetic import make_table


def adversarial_table(seed: int, n: int) -> pd.DataFrame:
    """make_table with OOD rows, near-duplicates, confident and unsure flags, unequal classes, and
    objectives that favour the noisy rows (diversity rises with the noise score, as a mislabelled row's
    distance to its given class does), so that a selection blind to the flags would keep them first."""
    rng = np.random.default_rng(seed)
    t = make_table(n=n, seed=seed)
    noise = t["noise_score"].to_numpy()
    t["diversity_norm"] = np.clip(noise + 0.05 * rng.normal(size=n), 0, 1).astype(np.float32)
    t["alignment_norm"] = rng.random(n).astype(np.float32)
    t["suggested_prob"] = np.where(rng.random(n) < 0.5, 0.99, 0.6).astype(np.float32)
    t["ood"] = rng.random(n) < rng.choice([0.0, 0.03])
    t.loc[rng.random(n) < rng.choice([0.0, 0.1]), "duplicate_of"] = 0
    drop = rng.random(n) < rng.choice([0.0, 0.4]) * (t["label"] == "fox").to_numpy()   # unequal classes
    return t[~drop].reset_index(drop=True)


def expected_suspects(t: pd.DataFrame, s: Selection) -> np.ndarray:
    decided = t["id"].map(lambda i: s.decisions_dict.get(i, "")).to_numpy()
    confident = (t["flagged"] & ~t["ood"] & (t["noise_score"] >= CONFIDENT)
                 & (t["suggested_prob"] >= CONFIDENT)).to_numpy()
    corrected = confident & (decided == "") & s.correct_flagged
    return (t["flagged"] | t["ood"]).to_numpy() & (decided == "") & ~corrected


def random_selection(rng, t: pd.DataFrame) -> Selection:
    names = ["alignment", "diversity", "cleanliness"]
    weights = {m: float(rng.choice([0.0, 0.1, 1.0, 2.0])) for m in names}
    if not any(weights.values()):
        weights[str(rng.choice(names))] = 1.0
    ids = t["id"].to_numpy()
    decisions = {str(i): str(rng.choice(["accepted", "kept", "bad"]))
                 for i in rng.choice(ids, size=int(rng.integers(0, 6)), replace=False)}
    return Selection(ratio=float(rng.choice([rng.uniform(0.02, 1.0), 0.1, 0.2, 0.5])), weights=weights,
                     strategy=str(rng.choice(["topk", "stratified"])), exclude_flagged=bool(rng.random() < 0.5),
                     exclude_duplicates=bool(rng.random() < 0.5), class_balance=bool(rng.random() < 0.5),
                     correct_flagged=bool(rng.random() < 0.5), decisions=decisions)


def test_never_more_suspects_than_a_random_subset_over_random_settings():
    rng = np.random.default_rng(2024)
    checked = blind_worse = 0
    for trial in range(400):
        t = adversarial_table(trial, int(rng.integers(60, 400)))
        s = random_selection(rng, t)
        try:
            mask = selection_mask(t, s)
        except InputError:              # e.g. more rows asked than candidates left with exclusions on
            continue
        k = subset_size(len(t), s.ratio)
        assert mask.sum() == k, s
        suspect = expected_suspects(t, s)
        decided = t["id"].map(lambda i: s.decisions_dict.get(i, "")).to_numpy()
        eligible = decided != "bad"
        if s.exclude_duplicates:
            eligible &= t["duplicate_of"].to_numpy() < 0
        assert not (mask & ~eligible).any(), s
        held, base = int((mask & suspect).sum()), int((suspect & eligible).sum()) / int(eligible.sum())
        assert held <= base * k + 1e-9, (trial, s, held, base * k)     # no more than a random subset's share
        if s.exclude_flagged:
            assert held == 0, s
        checked += 1
        # the same objective and strategy blind to the flags (the bare selector) would often keep more
        blind = select(t["diversity_norm"].to_numpy(), s.ratio, strategy="topk", exclude=~eligible)
        blind_worse += int((blind & suspect).sum()) > base * k
    assert checked >= 250 and blind_worse >= 50, (checked, blind_worse)


def test_exclusion_off_drops_the_noisiest_suspects_first_and_warns():
    t = adversarial_table(7, 300).assign(ood=False, duplicate_of=-1)
    s = Selection(ratio=0.5, weights={"diversity": 1.0}, exclude_flagged=False, strategy="topk", class_balance=False)
    mask = selection_mask(t, s)
    flagged = t["flagged"].to_numpy()
    held = mask & flagged
    assert held.sum() == (subset_size(len(t), 0.5) * flagged.sum()) // len(t)
    noise = t["noise_score"].to_numpy()
    assert noise[held].max() <= noise[flagged & ~mask].min()        # the kept suspects are the least noisy ones
    (warning,) = selection_warnings(t, s, mask)
    assert f"holds {int(held.sum()):,} flagged" in warning and "exclude flagged" in warning
    closed = s.replace(exclude_flagged=True)
    assert selection_warnings(t, closed, selection_mask(t, closed)) == []


def test_correct_flagged_relabels_the_confident_rows_only():
    t = adversarial_table(3, 300).assign(ood=False, duplicate_of=-1)
    confident = (t["flagged"] & (t["noise_score"] >= CONFIDENT) & (t["suggested_prob"] >= CONFIDENT)).to_numpy()
    assert 0 < confident.sum() < t["flagged"].sum()
    first = t["id"][np.flatnonzero(confident)[0]]
    s = Selection(ratio=0.5, correct_flagged=True, decisions={first: "kept"})
    out = apply(t, s)
    relabelled = (out["corrected_label"] != out["label"]).to_numpy()
    expect = confident & (t["id"] != first).to_numpy()
    assert np.array_equal(relabelled, expect)                       # a reviewer's "kept" wins over the audit
    assert (out["corrected_label"][expect] == t["suggested_label"][expect]).all()
    assert not (out["selected"].to_numpy() & t["flagged"].to_numpy() & ~confident).any()
    assert (out["selected"].to_numpy() & expect).any()              # corrected rows are candidates again
    assert any("suggested label" in w for w in selection_warnings(out, s, out["selected"].to_numpy()))
    plain = apply(t, s.replace(correct_flagged=False))
    assert not (plain["selected"].to_numpy() & expect).any()
    assert Selection().correct_flagged is False and s.as_dict()["correct_flagged"] is True
    with pytest.raises(InputError, match="correct_flagged must be True or False"):
        Selection(correct_flagged="yes")


def test_stratified_drops_the_noisiest_candidates_only_at_small_ratios():
    from selector.selection import hard_cut
    assert hard_cut(0.05) == hard_cut(0.1) == pytest.approx(0.1) and hard_cut(0.2) == pytest.approx(0.05)
    assert hard_cut(0.3) == hard_cut(0.7) == 0.0
    t = make_table(n=600, seed=5).assign(flagged=False)
    noise = t["noise_score"].to_numpy()
    small = selection_mask(t, Selection(ratio=0.1, strategy="stratified"))
    assert noise[small].max() < np.quantile(noise, 0.9) + 1e-6      # the noisiest tenth is never chosen
    large = selection_mask(t, Selection(ratio=0.95, strategy="stratified", class_balance=False))
    assert large.sum() == subset_size(600, 0.95)                    # the cut never makes a ratio infeasible
