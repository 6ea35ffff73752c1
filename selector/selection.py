"""The selection contract: what a user chooses (`Selection`) and what they get (`apply`).

`Selection` is frozen, hashable and validates itself, and its field defaults are THE defaults: the CLI's
flags, the app's sliders and bench all start from `Selection()`. They are the setting that trained best in
bench/selection_quality.py (BENCHMARKS.md): drop suspected errors and near-duplicates, balance classes,
spread the budget over each class's score range, weigh cleanliness with alignment.

`apply(result, selection)` is the per-sample table with `selected`, `decision` and `corrected_label`: the
product, and exactly what `selector.writer` writes. `selection_mask` is its millisecond core, run on every
slider move; `selection_warnings` says in words when the subset holds suspected errors.

Never worse than random on noise: suspects (flagged or OOD rows nobody reviewed or corrected) are excluded,
or, with exclude_flagged off, only the least noisy share of them that a random subset of the same size
would hold stays a candidate (the noisiest are dropped first), so the subset never holds a larger share of
suspects than the eligible rows do. At small ratios the stratified strategy also drops the noisiest
candidates before it spreads the budget (`hard_cut`: the hard cut of coverage-centric coreset selection,
CCS), as far as the budget allows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from selector.errors import InputError, describe_rows
from selector.optimize import (OBJECTIVES, STRATEGIES, _topk_mask, check_weights, select, selection_score,
                               subset_size)
from selector.registry import Choice, Registry
from selector.table import SELECTION_COLUMNS
from selector.validate import check_number

DECISIONS = Registry(
    "decision",
    Choice("accepted", "Accept suggestion",
           help="The suggested label is right: the sample carries it from now on and counts as clean."),
    Choice("kept", "Keep label", help="The given label is right: the sample counts as clean."),
    Choice("bad", "Mark bad", help="Drop the sample: it is never selected."),
)
"""A reviewer's verdict on one sample, keyed by sample id."""

CONFIDENT = 0.95
"""correct_flagged relabels a flagged, non-OOD row only when the audit is this sure both that its given label
is wrong (noise_score) and of its suggestion (suggested_prob). On Fashion-MNIST train with 20% uniform / 30%
confusable planted flips (demo encoder, seed 0), 96.5% / 98.3% of the suggestions that pass it are the true
label."""
HARD_CUT = (0.1, 0.1, 0.3)
"""(share, below, above): the stratified strategy drops the noisiest `share` of the candidates (by noise_score)
at ratios up to `below`, none from `above` on, linearly in between. As in CCS the cut grows as the ratio falls:
a small subset trains best on typical samples, a large one needs the hard ones (chosen on seed 0 of
bench/selection_quality.py: a 10% cut gained 0.2-2.0 points at ratio 0.1 and lost 0.2-0.9 at 0.3-0.5)."""

def _pairs(value, what: str) -> tuple:
    """A mapping or (name, value) pairs as a sorted tuple of pairs (hashable, order-free)."""
    items = value.items() if isinstance(value, Mapping) else value
    try:
        return tuple(sorted((str(k), v) for k, v in items))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a dict or (name, value) pairs; got {value!r:.80}.") from exc


def _ids(value, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise InputError(f"{what} must be a list of sample ids, not one string ({value!r:.40}).")
    return tuple(dict.fromkeys(str(v) for v in (() if value is None else value)))


@dataclass(frozen=True)
class Selection:
    """One choice of subset. Give weights and decisions as dicts; they are stored as sorted pairs.

    ratio: share of samples to keep, (0, 1]; the subset has exactly round(ratio * n) rows.
    weights: {objective: weight >= 0} over OBJECTIVES (missing ones weigh 0); only the ratios matter.
    strategy: a STRATEGIES name. exclude_flagged: drop suspected label errors and OOD images first;
    exclude_duplicates: drop the later copy of each near-duplicate; class_balance: equal quotas per class.
    keep / never: sample ids always / never selected. decisions: {sample id: DECISIONS name}.
    correct_flagged: keep confidently mislabelled rows (`confidently_mislabelled`) with their suggested label
    instead of treating them as suspects, like an accepted suggestion.
    """
    ratio: float = 0.5
    weights: tuple = (("alignment", 1.0), ("cleanliness", 1.0), ("diversity", 0.1))
    strategy: str = "stratified"
    exclude_flagged: bool = True
    exclude_duplicates: bool = True
    class_balance: bool = True
    keep: tuple = ()
    never: tuple = ()
    decisions: tuple = ()
    correct_flagged: bool = False

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        set_("weights", tuple(sorted(check_weights(dict(_pairs(self.weights, "weights"))).items())))
        set_("decisions", _pairs(self.decisions, "decisions"))
        set_("keep", _ids(self.keep, "keep"))
        set_("never", _ids(self.never, "never"))
        self.validate()

    def validate(self) -> "Selection":
        """self, or InputError saying which setting is wrong and what it may be."""
        check_number(self.ratio, "ratio (the share of samples to keep, e.g. 0.3)", above=0, maximum=1)
        STRATEGIES.check(self.strategy)
        check_weights(self.weights_dict)
        for name in ("exclude_flagged", "exclude_duplicates", "class_balance", "correct_flagged"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputError(f"{name} must be True or False; got {getattr(self, name)!r}.")
        bad = [f"{i}={d!r}" for i, d in self.decisions if d not in DECISIONS]
        if bad:
            raise InputError(f"decisions must be one of {', '.join(DECISIONS.names())}; got {describe_rows(bad)}.")
        both = sorted(set(self.keep) & set(self.never))
        if both:
            raise InputError(f"{len(both)} ids are in both keep and never: {describe_rows(both)}. "
                             "Remove them from one of the lists.")
        return self

    @property
    def weights_dict(self) -> dict[str, float]:
        return dict(self.weights)

    @property
    def decisions_dict(self) -> dict[str, str]:
        return dict(self.decisions)

    def replace(self, **changes) -> "Selection":
        """A copy with some settings changed (validated)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """The settings as written into a run manifest (decisions as counts: the table holds each one)."""
        counts = {name: 0 for name in DECISIONS.names()}
        for _, d in self.decisions:
            counts[d] += 1
        return {"ratio": self.ratio, "weights": self.weights_dict, "strategy": self.strategy,
                "exclude_flagged": self.exclude_flagged, "exclude_duplicates": self.exclude_duplicates,
                "class_balance": self.class_balance, "correct_flagged": self.correct_flagged,
                "keep": list(self.keep), "never": list(self.never), "decisions": counts}


def _table(result_or_table) -> pd.DataFrame:
    table = getattr(result_or_table, "table", result_or_table)
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"expected a pipeline Result or its per-sample table; got {type(result_or_table).__name__}.")
    return table


def _decided(table: pd.DataFrame, selection: Selection) -> pd.Series:
    """(n,) object: each row's decision, "" where there is none (decisions on unknown ids are ignored:
    e.g. rows that were skipped at load)."""
    if not selection.decisions:
        return pd.Series("", index=table.index, dtype=object)
    return table["id"].astype(str).map(selection.decisions_dict).astype(object).fillna("")


def _rows_of(table: pd.DataFrame, ids, what: str):
    if not ids:
        return None
    pos = pd.Index(table["id"].astype(str)).get_indexer(list(ids))
    if (pos < 0).any():
        unknown = [ids[j] for j in np.flatnonzero(pos < 0)]
        raise InputError(f"{what} list names ids that are not in the dataset: {describe_rows(unknown)}. "
                         "Use ids from the table's id column.")
    return pos


def objective(table, weights) -> np.ndarray:
    """(n,) float32 in [0, 1]: the weighted objective of each row (higher = chosen first)."""
    table = _table(table)
    weights = dict(weights)
    return selection_score({name: table[OBJECTIVES.get(name).value].to_numpy() for name in weights
                            if weights[name]}, weights)


def confidently_mislabelled(table) -> np.ndarray:
    """(n,) bool: flagged, not OOD, noise_score >= CONFIDENT and suggested_prob >= CONFIDENT."""
    table = _table(table)
    return (table["flagged"].to_numpy() & ~table["ood"].to_numpy()
            & (table["noise_score"].to_numpy() >= CONFIDENT) & (table["suggested_prob"].to_numpy() >= CONFIDENT))


@dataclass(frozen=True)
class _Labels:
    """Each row's label after decisions and corrections, and which rows still count as suspects."""
    codes: np.ndarray | None  # (n,) int64 class code of the label each row now carries (for class balance);
                              # None unless asked for (coding 1M label strings takes ~50 ms)
    relabel: np.ndarray       # (n,) bool: carries its suggested label (accepted or corrected) instead of the given one
    corrected: np.ndarray     # (n,) bool: relabelled by correct_flagged (no reviewer decision)
    suspect: np.ndarray       # (n,) bool: flagged or OOD, not reviewed, not corrected


def _labels(table: pd.DataFrame, selection: Selection, *, codes: bool = False) -> _Labels:
    n = len(table)
    if selection.decisions:
        decided = _decided(table, selection).to_numpy()
        undecided, accepted = decided == "", decided == "accepted"
    else:                       # no string comparisons on the common path
        undecided, accepted = np.ones(n, bool), np.zeros(n, bool)
    corrected = (confidently_mislabelled(table) & undecided if selection.correct_flagged else np.zeros(n, bool))
    relabel = accepted | corrected
    rows = np.flatnonzero(relabel)
    suggested = None
    if len(rows):               # only the relabelled rows' labels are compared (strings are slow)
        suggested = pd.Index(table["suggested_label"].iloc[rows])
        changed = table["label"].iloc[rows].to_numpy() != suggested.to_numpy()
        relabel[rows] = changed
        rows, suggested = rows[changed], suggested[changed]
    label_codes = None
    if codes:
        label_codes, names = pd.factorize(table["label"])
        if len(rows):
            new = names.get_indexer(suggested)
            if (new < 0).any():     # a suggested class that no row carries as its given label
                names = names.append(pd.Index(suggested[new < 0].unique()))
                new = names.get_indexer(suggested)
            label_codes[rows] = new
        label_codes = label_codes.astype(np.int64, copy=False)
    suspect = (table["flagged"].to_numpy() | table["ood"].to_numpy()) & undecided & ~corrected
    return _Labels(label_codes, relabel, corrected & relabel, suspect)


def corrected_labels(result_or_table, selection: Selection) -> pd.Series:
    """Each row's label after decisions and corrections: the corrected_label column of `apply`."""
    table = _table(result_or_table)
    return table["label"].where(~_labels(table, selection).relabel, table["suggested_label"])


def relabelled(result_or_table, selection: Selection) -> np.ndarray:
    """(n,) bool: the rows whose corrected_label is their suggested label (accepted or corrected), without
    building the labels themselves (a string per row is slow at 1M rows)."""
    return _labels(_table(result_or_table), selection).relabel


def _noisiest(noise: np.ndarray, ood: np.ndarray, among: np.ndarray, count: int) -> np.ndarray:
    """(n,) bool: the `count` noisiest rows of `among` (OOD first, then by noise; ties: earlier row first)."""
    if count <= 0 or not among.any():
        return np.zeros(len(noise), bool)
    return _topk_mask(noise.astype(np.float64) + ood, among, count)


def _scores_after(table: pd.DataFrame, rows: _Labels, weights: dict) -> tuple[np.ndarray, np.ndarray]:
    """(objective, noise) of every row for the label it now carries. The table scores a relabelled row
    (accepted or corrected) for its given label; for its new one, its cleanliness is suggested_prob, its
    noise 1 - suggested_prob, and its alignment and diversity the means of the new class's other rows."""
    relabel = rows.relabel
    cols = {name: table[OBJECTIVES.get(name).value].to_numpy() for name in weights if weights[name]}
    noise = table["noise_score"].to_numpy()
    if not relabel.any():
        return selection_score(cols, weights), noise
    sure = table["suggested_prob"].to_numpy()[relabel]
    others = rows.codes[~relabel]
    n_codes = int(rows.codes.max()) + 1
    count = np.bincount(others, minlength=n_codes)
    for name, col in cols.items():
        col = col.astype(np.float32, copy=True)
        if name == "cleanliness":
            col[relabel] = sure
        elif len(others):
            total = np.bincount(others, weights=col[~relabel], minlength=n_codes)
            mean = np.where(count > 0, total / np.maximum(count, 1), col[~relabel].mean())
            col[relabel] = mean[rows.codes[relabel]]
        cols[name] = col
    noise = noise.astype(np.float32, copy=True)
    noise[relabel] = 1.0 - sure
    return selection_score(cols, weights), noise


def hard_cut(ratio: float) -> float:
    """The share of candidates the stratified strategy drops at this ratio (HARD_CUT)."""
    share, below, above = HARD_CUT
    return share * min(1.0, max(0.0, (above - float(ratio)) / (above - below)))


def selection_mask(result_or_table, selection: Selection = Selection()) -> np.ndarray:
    """(n,) bool: the subset for `selection`, exactly round(ratio * n) rows; InputError when it cannot be met.

    Decisions apply first: an accepted sample takes its suggested label (class balance counts it there) and,
    like a kept one, is no longer a suspect; a bad one is never selected. With correct_flagged, confidently
    mislabelled rows take their suggested label the same way, and every relabelled row is scored for its new
    label (`_scores_after`). Suspects are then excluded (exclude_flagged), or capped at the share a random
    subset of the same size would hold, the noisiest dropped first."""
    table = _table(result_or_table)
    n = len(table)
    k = subset_size(n, selection.ratio)
    rows = _labels(table, selection, codes=True)
    score, noise = _scores_after(table, rows, selection.weights_dict)
    ood = table["ood"].to_numpy()
    exclude = np.zeros(n, dtype=bool)
    if selection.exclude_duplicates:
        exclude |= table["duplicate_of"].to_numpy() >= 0
    never = (_decided(table, selection).to_numpy() == "bad") if selection.decisions else np.zeros(n, bool)
    never_ids = _rows_of(table, selection.never, "never")
    if never_ids is not None:
        never[never_ids] = True
    keep = np.zeros(n, bool)
    keep_ids = _rows_of(table, selection.keep, "keep")
    if keep_ids is not None:
        keep[keep_ids] = True
    eligible = keep | ~(exclude | never)
    if selection.exclude_flagged:
        exclude |= rows.suspect
    else:   # at most the suspects' share of the eligible rows; the kept ones count first
        allowed = (k * int((rows.suspect & eligible).sum())) // max(int(eligible.sum()), 1)
        open_ = rows.suspect & eligible & ~keep
        room = max(0, allowed - int((rows.suspect & keep).sum()))
        exclude |= _noisiest(noise, ood, open_, int(open_.sum()) - room)
    if selection.strategy == "stratified":
        cand = ~(exclude | never | keep)
        spare = int(cand.sum()) - (k - int(keep.sum()))
        exclude |= _noisiest(noise, ood, cand, min(int(hard_cut(selection.ratio) * cand.sum()), spare))
    return select(score, selection.ratio, labels=rows.codes,
                  class_balance=selection.class_balance, strategy=selection.strategy, exclude=exclude,
                  keep=keep_ids, never=never if never.any() else None)


def selection_warnings(result_or_table, selection: Selection, mask) -> list[str]:
    """What a user should know about this subset, in words: suspects it holds with their given labels, and
    the rows that correct_flagged relabelled. Empty when there is nothing to say."""
    table = _table(result_or_table)
    mask = np.asarray(mask, dtype=bool)
    rows = _labels(table, selection)
    out = []
    held = int((rows.suspect & mask).sum())
    if held:
        share = held / max(int(mask.sum()), 1)
        out.append(f"The subset holds {held:,} flagged or out-of-distribution samples ({share:.1%} of it) with "
                   "their given labels: turn on 'exclude flagged' to drop them, turn on 'correct flagged' to "
                   "relabel the confident ones, or review them on the Label issues page.")
    fixed = int((rows.corrected & mask).sum())
    if fixed:
        out.append(f"{fixed:,} samples in the subset carry the audit's suggested label instead of the given one "
                   f"(correct flagged: both scores >= {CONFIDENT:g}); the export has them in corrected_label.")
    return out


def apply(result_or_table, selection: Selection = Selection()) -> pd.DataFrame:
    """The per-sample table with `selected`, `decision` ("" when none) and `corrected_label` (the suggested
    label where it was accepted or, with correct_flagged, confidently wrong; else the given one): the
    product, as every export writes it."""
    table = _table(result_or_table)
    return annotate(table, selection, selection_mask(table, selection))


def annotate(table: pd.DataFrame, selection: Selection, mask) -> pd.DataFrame:
    """`apply` with the mask already computed (e.g. memoised by the app): a copy of table + SELECTION_COLUMNS."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (len(table),):
        raise InputError(f"selection mask must have one entry per row ({len(table)}), got {mask.shape}.")
    decided = _decided(table, selection)
    out = table.copy()
    selected, decision, corrected = SELECTION_COLUMNS
    out[selected] = mask
    out[decision] = decided.astype(str)
    out[corrected] = corrected_labels(table, selection)
    return out


__all__ = ["Selection", "DECISIONS", "CONFIDENT", "SELECTION_COLUMNS", "apply", "annotate", "selection_mask",
           "selection_warnings", "confidently_mislabelled", "corrected_labels", "relabelled", "objective"]
