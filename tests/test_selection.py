"""The selection contract: Selection validates itself and holds the one set of defaults; selection_mask /
apply honour exclusions, balance, keep/never lists and decisions."""
import numpy as np
import pandas as pd
import pytest

from selector.errors import InputError
from selector.optimize import subset_size
from selector.selection import SELECTION_COLUMNS, Selection, annotate, apply, objective, selection_mask
from selector.ui.views import decisions_table, selection_cut
from tests.synthetic import make_table


@pytest.fixture
def table():
    return make_table()


@pytest.mark.parametrize("ratio", [0.05, 0.3, 0.5])
@pytest.mark.parametrize("strategy", ["topk", "stratified"])
@pytest.mark.parametrize("balance", [False, True])
def test_selection_has_exact_size_and_no_flagged(table, ratio, strategy, balance):
    mask = selection_mask(table, Selection(ratio=ratio, strategy=strategy, class_balance=balance))
    assert mask.dtype == bool and mask.sum() == subset_size(len(table), ratio)
    assert not (mask & table["flagged"].to_numpy()).any()
    if balance:
        per_class = pd.Series(table["label"][mask]).value_counts()
        assert per_class.max() - per_class.min() <= 1


def test_topk_keeps_the_best_objective_and_matches_the_cut(table):
    table = table.assign(flagged=False)      # no suspects: nothing is capped, top-k is the plain k best
    s = Selection(ratio=0.2, weights={"alignment": 1.0}, exclude_flagged=False, class_balance=False, strategy="topk")
    mask = selection_mask(table, s)
    score = objective(table, s.weights)
    cut = selection_cut(score, mask)
    assert cut == pytest.approx(score[mask].min())
    assert (score[~mask] <= cut + 1e-6).all()
    # with alignment only, the objective orders rows like alignment itself
    assert np.array_equal(np.argsort(-score, kind="stable")[:10], np.argsort(-table["alignment"].to_numpy(),
                                                                              kind="stable")[:10])


def test_decisions_change_the_selection(table):
    flagged_ids = table.loc[table["flagged"], "id"].tolist()
    s = Selection(ratio=0.9, weights={"cleanliness": 1.0}, exclude_flagged=True)
    with pytest.raises(InputError):  # 90% cannot be met while ~15% are excluded
        selection_mask(table, s)
    mask = selection_mask(table, s.replace(decisions={i: "kept" for i in flagged_ids}))  # reviewed: candidates again
    assert mask.sum() == subset_size(len(table), 0.9)
    s2 = Selection(ratio=0.5)
    best = table["id"][selection_mask(table, s2)].tolist()[:3]
    mask = selection_mask(table, s2.replace(decisions={i: "bad" for i in best}))
    assert not table["id"][mask].isin(best).any()        # bad samples are never selected
    assert selection_mask(table, s2.replace(decisions={"unknown-id": "bad"})).sum() == subset_size(len(table), 0.5)


def test_accepted_labels_count_in_their_new_class(table):
    """An accepted suggestion moves the sample to the suggested class for class balance."""
    rows = np.flatnonzero(table["flagged"].to_numpy() & (table["label"] == "cat").to_numpy())
    accepted = {table["id"][r]: "accepted" for r in rows}
    s = Selection(ratio=0.6, weights={"alignment": 1.0}, exclude_flagged=False, strategy="topk", decisions=accepted)
    out = apply(table, s)
    assert out.columns[-3:].tolist() == list(SELECTION_COLUMNS)
    moved = out.iloc[rows]
    assert (moved["corrected_label"] == moved["suggested_label"]).all() and (moved["decision"] == "accepted").all()
    per_class = out.loc[out["selected"], "corrected_label"].value_counts()
    assert per_class.max() - per_class.min() <= 1
    assert (table["flagged"].iloc[rows]).all()           # the input table is untouched


def test_flag_and_duplicate_exclusions_are_separate(table):
    table = table.copy()
    dup = np.zeros(len(table), bool)
    dup[::4] = True
    table.loc[dup, "duplicate_of"] = 0
    flagged = table["flagged"].to_numpy()
    both = selection_mask(table, Selection(ratio=0.3))
    assert not (both & (flagged | dup)).any()
    only_flags = selection_mask(table, Selection(ratio=0.3, exclude_duplicates=False))
    assert not (only_flags & flagged).any() and (only_flags & dup).any()
    only_dups = selection_mask(table, Selection(ratio=0.3, exclude_flagged=False))
    assert not (only_dups & dup).any() and (only_dups & flagged).any()
    neither = selection_mask(table, Selection(ratio=0.3, exclude_flagged=False, exclude_duplicates=False))
    assert (neither & dup).any() and (neither & flagged).any()


def test_keep_and_never_lists(table):
    ids = table["id"].tolist()
    out = apply(table, Selection(ratio=0.2, keep=ids[:3], never=ids[3:6]))
    assert out.loc[:2, "selected"].all() and not out.loc[3:5, "selected"].any()
    with pytest.raises(InputError, match="not in the dataset"):
        apply(table, Selection(ratio=0.2, keep=["no-such-id"]))
    with pytest.raises(InputError, match="both keep and never"):
        Selection(keep=ids[:2], never=ids[1:3])


def test_selection_validates_itself_and_is_hashable():
    with pytest.raises(InputError, match="ratio"):
        Selection(ratio=0)
    with pytest.raises(InputError, match="ratio"):
        Selection(ratio=1.5)
    with pytest.raises(InputError, match="above 0"):
        Selection(weights={"alignment": 0, "diversity": 0})
    with pytest.raises(InputError, match="unknown weight"):
        Selection(weights={"beauty": 1})
    with pytest.raises(InputError, match="choose one of: topk, stratified"):
        Selection(strategy="greedy")
    with pytest.raises(InputError, match="decisions must be one of"):
        Selection(decisions={"s1": "maybe"})
    with pytest.raises(InputError, match="True or False"):
        Selection(class_balance="yes")
    a = Selection(weights={"diversity": 0.1, "alignment": 1, "cleanliness": 1.0}, decisions={"b": "bad", "a": "kept"})
    b = Selection(weights={"alignment": 1.0, "cleanliness": 1, "diversity": 0.1}, decisions={"a": "kept", "b": "bad"})
    assert a == b and hash(a) == hash(b) and a.decisions_dict == {"a": "kept", "b": "bad"}


def test_one_set_of_defaults():
    """The benchmarked default (BENCHMARKS.md): stratified, class-balanced, suspects and copies excluded."""
    d = Selection()
    assert (d.strategy, d.class_balance, d.exclude_flagged, d.exclude_duplicates) == ("stratified", True, True, True)
    assert d.weights_dict == {"alignment": 1.0, "diversity": 0.1, "cleanliness": 1.0}
    from selector.__main__ import parser
    args = parser().parse_args([])
    assert (args.ratio, args.strategy, args.class_balance, args.exclude_flagged, args.exclude_duplicates) == \
        (d.ratio, d.strategy, d.class_balance, d.exclude_flagged, d.exclude_duplicates)
    assert args.weights == "alignment=1,cleanliness=1,diversity=0.1"


def test_annotate_and_the_decisions_view(table):
    mask = np.zeros(len(table), bool)
    mask[:10] = True
    s = Selection(decisions={"s1": "accepted", "s2": "bad", "s3": "kept"})
    out = annotate(table, s, mask)
    assert list(out.columns[: len(table.columns)]) == list(table.columns)
    assert out["selected"].sum() == 10 and out["decision"][1] == "accepted" and out["decision"][0] == ""
    assert out["corrected_label"][1] == table["suggested_label"][1] and out["corrected_label"][3] == table["label"][3]
    d = decisions_table(out)
    assert d["id"].tolist() == ["s1", "s2", "s3"] and d["decision"].tolist() == ["accepted", "bad", "kept"]
    assert decisions_table(annotate(table, Selection(), mask)).empty
    with pytest.raises(InputError):
        annotate(table, s, mask[:5])
