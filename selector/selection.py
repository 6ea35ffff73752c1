"""The selection contract: what a user chooses (`Selection`) and what they get (`apply`).

`Selection` is frozen, hashable and validates itself, and its field defaults are THE defaults: the CLI's
flags, the app's sliders and bench all start from `Selection()`. They are the setting that trained best in
bench/selection_quality.py (BENCHMARKS.md): drop suspected errors and near-duplicates, balance classes,
spread the budget over each class's score range, weigh cleanliness with alignment.

`apply(result, selection)` is the per-sample table with `selected`, `decision` and `corrected_label`: the
product, and exactly what `selector.writer` writes. `selection_mask` is its millisecond core, run on every
slider move.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from selector.errors import InputError, describe_rows
from selector.optimize import OBJECTIVES, STRATEGIES, check_weights, select, selection_score
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
        for name in ("exclude_flagged", "exclude_duplicates", "class_balance"):
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
                "class_balance": self.class_balance, "keep": list(self.keep), "never": list(self.never),
                "decisions": counts}


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


def selection_mask(result_or_table, selection: Selection = Selection()) -> np.ndarray:
    """(n,) bool: the subset for `selection`, exactly round(ratio * n) rows; InputError when it cannot be met.

    Decisions apply first: an accepted sample takes its suggested label (class balance counts it there) and,
    like a kept one, is no longer excluded as flagged or OOD; a bad one is never selected."""
    table = _table(result_or_table)
    decided = _decided(table, selection).to_numpy()
    reviewed = (decided == "accepted") | (decided == "kept")
    labels = table["label"].where(decided != "accepted", table["suggested_label"])
    exclude = np.zeros(len(table), dtype=bool)
    if selection.exclude_flagged:
        exclude |= (table["flagged"].to_numpy() | table["ood"].to_numpy()) & ~reviewed
    if selection.exclude_duplicates:
        exclude |= table["duplicate_of"].to_numpy() >= 0
    never = decided == "bad"
    never_ids = _rows_of(table, selection.never, "never")
    if never_ids is not None:
        never[never_ids] = True
    keep = _rows_of(table, selection.keep, "keep")
    return select(objective(table, selection.weights), selection.ratio, labels=pd.factorize(labels)[0],
                  class_balance=selection.class_balance, strategy=selection.strategy, exclude=exclude,
                  keep=keep, never=never if never.any() else None)


def apply(result_or_table, selection: Selection = Selection()) -> pd.DataFrame:
    """The per-sample table with `selected`, `decision` ("" when none) and `corrected_label` (the suggested
    label where it was accepted, else the given one): the product, as every export writes it."""
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
    out[corrected] = table["label"].where(decided != "accepted", table["suggested_label"])
    return out


__all__ = ["Selection", "DECISIONS", "SELECTION_COLUMNS", "apply", "annotate", "selection_mask", "objective"]
