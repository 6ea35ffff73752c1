"""What the pages show, as plain functions over the engine's table (no streamlit; unit-tested).

Everything here is cheap enough to run on every slider move on 60k rows: the subset itself comes from the
engine (`selector.selection`); its comparison with a random subset is in `selector.ui.subsets`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from selector.errors import InputError
from selector.linalg import sample_rows
from selector.selection import relabelled


# ----------------------------------------------------------------------------------------- decisions
def decisions_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per decided sample of an applied table (`selector.apply`): id, path, label, suggested_label,
    decision, corrected_label."""
    decided = table["decision"] != ""
    return table.loc[decided, ["id", "path", "label", "suggested_label", "decision", "corrected_label"]].reset_index(
        drop=True)


def describe_event(event) -> str:
    """One decision-log event in words: 'bad by ann, 2026-12-01 12:03 UTC (undo)'."""
    what = event.decision or "cleared"
    how = {"undo": " (undo)", "migrated": " (imported)"}.get(event.kind, "")
    return f"{what} by {event.who}, {event.at[:10]} {event.at[11:16]} UTC{how}"


SORT_SCORES = {"noise_score": "noise score", "alignment": "alignment (SAS)", "diversity": "diversity (SDS)",
               "given_prob": "probability of the given label", "suggested_prob": "probability of the suggestion",
               "knn_agreement": "neighbours agreeing with the label", "ood_score": "out-of-distribution score"}


def tie_break(ids) -> np.ndarray:
    """(n,) uint64: a fixed hash of each sample id. Ties in a score are ordered by it, which mixes the classes
    (row order groups them) and is the same on every run and machine."""
    return pd.util.hash_pandas_object(pd.Series(np.asarray(ids, dtype=object)).astype(str), index=False).to_numpy()


SORT_DECIMALS = 3       # the scores' precision on the pages: what reads the same sorts as a tie


def flagged_order(table: pd.DataFrame, *, decisions: dict | None = None, show: str = "all",
                  label: str | None = None, suggested: str | None = None, score: str = "noise_score",
                  score_range: tuple | None = None, descending: bool = True) -> np.ndarray:
    """Row indices of flagged samples sorted by `score` (a SORT_SCORES column; highest first unless descending is
    False) as the pages show it, to SORT_DECIMALS places: scores that read the same (thousands of "1.000" at
    the top, where the easiest class to audit would otherwise fill the first pages) are ties, in tie_break
    order, which mixes classes. The default is most suspicious (highest noise_score) first.

    show: "all" flagged, "undecided" (no decision yet) or "decided"; label / suggested: only this given /
    suggested label; score_range: only rows with low <= score <= high.
    """
    if score not in SORT_SCORES:
        raise InputError(f"unknown score {score!r}; choose one of: {', '.join(SORT_SCORES)}.")
    keep = table["flagged"].to_numpy(dtype=bool).copy()
    if label:
        keep &= (table["label"] == label).to_numpy()
    if suggested:
        keep &= (table["suggested_label"] == suggested).to_numpy()
    values = table[score].to_numpy(dtype=np.float64)
    if score_range is not None:
        keep &= (values >= score_range[0]) & (values <= score_range[1])
    if show != "all":
        decided = table["id"].astype(str).isin((decisions or {}).keys()).to_numpy()
        keep &= ~decided if show == "undecided" else decided
    rows = np.flatnonzero(keep)
    key = np.round(values[rows], SORT_DECIMALS)
    order = np.lexsort((tie_break(table["id"].to_numpy()[rows]), -key if descending else key))
    return rows[order]


def bulk_changes(table: pd.DataFrame, rows: np.ndarray, decision: str, decisions: dict | None) -> tuple[dict, dict]:
    """What deciding `decision` on every one of `rows` would do: ({sample id: decision} for the rows it changes,
    counts: shown, change, replace (changed rows that hold another decision now), same (already hold it) and
    no_suggestion ("accepted" leaves out rows whose suggestion is their given label))."""
    held = decisions or {}
    ids = table["id"].to_numpy()[rows].astype(str)
    useful = np.ones(len(rows), dtype=bool)
    if decision == "accepted":
        useful = table["suggested_label"].to_numpy()[rows] != table["label"].to_numpy()[rows]
    changes = {i: decision for i, ok in zip(ids, useful) if ok and held.get(i) != decision}
    counts = {"shown": len(rows), "change": len(changes), "replace": sum(i in held for i in changes),
              "same": sum(held.get(i) == decision for i in ids), "no_suggestion": int((~useful).sum())}
    return changes, counts


def describe_bulk(counts: dict, label: str) -> str:
    """The preview of a bulk decision (bulk_changes' counts) in words."""
    parts = [f"'{label}' would be recorded for {counts['change']:,} of the {counts['shown']:,} samples in this view"]
    if counts["replace"]:
        parts.append(f"{counts['replace']:,} of them hold another decision now, which it replaces")
    if counts["same"]:
        parts.append(f"{counts['same']:,} already have it")
    if counts["no_suggestion"]:
        parts.append(f"{counts['no_suggestion']:,} are left out: their suggestion is their given label")
    return "; ".join(parts) + ". It is one step: 'Undo my last step' reverts it."


def similarity_percentile(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(len(values),) int in 0..100: the share (in %) of the sorted `reference` similarities below each value.
    Against every sample's nearest-neighbour similarity it says how close a pair is for this dataset, where the
    raw cosines of a tight encoder all read 0.96-1.00."""
    reference = np.asarray(reference, dtype=np.float64)
    if not len(reference):
        return np.zeros(len(values), dtype=np.int64)
    below = np.searchsorted(reference, np.asarray(values, dtype=np.float64), side="left")
    return np.floor(100.0 * below / len(reference)).astype(np.int64)


def page_rows(rows: np.ndarray, page: int, per_page: int) -> np.ndarray:
    """The rows shown on 1-based `page` of a gallery (clamped to the last page)."""
    n_pages = max(1, -(-len(rows) // per_page))
    page = min(max(int(page), 1), n_pages)
    return rows[(page - 1) * per_page: page * per_page]


def n_pages(n: int, per_page: int) -> int:
    return max(1, -(-n // per_page))


EXPERT_NAMES = {"zero_shot": "zero-shot class prompts", "cross_fit": "a cross-fitted classifier",
                "knn": "neighbour votes"}


def also_found(counts: dict) -> str:
    """One sentence on the label-independent issues of a run's manifest counts (OOD, missing-class groups,
    near-duplicates, leaks across splits)."""
    ood, missing = counts.get("ood", 0), counts.get("missing_class", 0)
    parts = [f"{ood - missing:,} images that match no class well and sit far from their neighbours"]
    if missing:
        parts.append(f"{missing:,} images in groups that match no class and carry scattered labels (a class "
                     "missing from the label set? not counted as label errors)")
    parts.append(f"{counts.get('near_duplicates', 0):,} near-duplicates")
    if "leaked_across_splits" in counts:
        parts.append(f"{counts['leaked_across_splits']:,} images leaked across splits (a near-duplicate in "
                     "another split)")
    return "Also found: " + ", ".join(parts) + " (Duplicates & outliers page)."


def audit_description(manifest: dict) -> str:
    """One sentence: which experts the label audit pooled, with their weights ("" for a run that predates it)."""
    audit = manifest.get("audit") or {}
    weights = audit.get("pool_weights") or {}
    if not weights:
        return ""
    names = [EXPERT_NAMES.get(m, m) for m in weights]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    text = f"Label audit by {listed} (pool weights {' / '.join(f'{w:.2f}' for w in weights.values())})."
    if "hesitant_share" in audit:
        text += (f" Noise model: {audit['hesitant_share']:.0%} of the label errors are modelled as hesitant (the "
                 "given label is a class the image resembles), the rest as class-to-class swaps.")
        if audit.get("hesitation_power"):
            text += " Hesitant errors are modelled as likelier where the image is ambiguous."
    if "zero_shot" not in weights:
        text += (" These embeddings have no text tower, so no zero-shot expert ran; alignment and 'matches no "
                 "class' use each class's mean image embedding instead of a class prompt.")
    return text


# ------------------------------------------------------------------------------------ class breakdown
def class_codes(labels, class_names) -> np.ndarray:
    """(n,) int64 index into class_names of each label name (-1 for a name not in class_names); a categorical
    Series is looked up one category at a time, not one row at a time."""
    index = pd.Index([str(c) for c in class_names])
    if isinstance(getattr(labels, "dtype", None), pd.CategoricalDtype):
        codes = labels.cat.codes.to_numpy()
        of_category = index.get_indexer(labels.cat.categories.astype(str))
        return np.where(codes >= 0, of_category[codes], -1).astype(np.int64)
    return index.get_indexer(pd.Index(np.asarray(labels, dtype=object).astype(str))).astype(np.int64)


def corrected_codes(codes: np.ndarray, table: pd.DataFrame, selection, class_names, *,
                    suggested: np.ndarray | None = None) -> np.ndarray:
    """Label codes after the selection's decisions and corrections: the suggested class where a row carries
    its suggestion (accepted, or corrected by correct_flagged); `codes` itself when no row does. suggested:
    every row's suggested-class code when already known (the app computes it once per run)."""
    moved = np.flatnonzero(relabelled(table, selection))
    if not len(moved):
        return codes
    out = codes.copy()
    out[moved] = (suggested[moved] if suggested is not None
                  else class_codes(table["suggested_label"].to_numpy()[moved], class_names))
    return out


def class_breakdown(codes_before: np.ndarray, mask: np.ndarray, class_names, codes_after=None) -> pd.DataFrame:
    """Per class: samples in the full set, kept in the subset, dropped, and the class's share before/after.

    codes_before: (n,) int class index of each row (e.g. Dataset.labels); codes_after: the same after the
    user's decisions (default: codes_before). Integer codes keep this at well under a millisecond on 60k rows.
    """
    mask = np.asarray(mask, dtype=bool)
    codes_before = np.asarray(codes_before, dtype=np.int64)
    codes_after = codes_before if codes_after is None else np.asarray(codes_after, dtype=np.int64)
    names = list(class_names)
    C = len(names)
    before = np.bincount(codes_before[codes_before >= 0], minlength=C)[:C]
    after = codes_after[mask]
    kept = np.bincount(after[after >= 0], minlength=C)[:C]
    n, k = max(int(before.sum()), 1), max(int(mask.sum()), 1)
    out = pd.DataFrame({"class": names, "before": before, "kept": kept})
    out["dropped"] = np.maximum(out["before"] - out["kept"], 0)
    out["kept_pct"] = np.round(100.0 * out["kept"] / out["before"].clip(lower=1), 1)
    out["share_before_pct"] = np.round(100.0 * out["before"] / n, 1)
    out["share_after_pct"] = np.round(100.0 * out["kept"] / k, 1)
    return out


BAR_CLASSES = 40
"""Up to this many classes the Selection page draws one bar per class; past it (ImageNet's 1,000 bars are
unreadable and slow to draw) a histogram of the share each class keeps (`kept_share_histogram`)."""


def kept_share_histogram(breakdown: pd.DataFrame, bins: int = 20) -> pd.DataFrame:
    """How many classes keep what share of their samples: one row per equal-width bin of kept_pct (0-100 %),
    index the bin's label ("45-50%"), column "classes"; empty classes (before == 0) are left out."""
    pct = breakdown.loc[breakdown["before"] > 0, "kept_pct"].to_numpy(dtype=np.float64)
    edges = np.linspace(0.0, 100.0, bins + 1)
    counts = np.bincount(np.clip(np.searchsorted(edges, pct, side="right") - 1, 0, bins - 1), minlength=bins)
    labels = [f"{lo:g}-{hi:g}%" for lo, hi in zip(edges[:-1], edges[1:])]
    return pd.DataFrame({"classes": counts}, index=pd.Index(labels, name="kept"))


# --------------------------------------------------------------------------------------- audit check
def audit_quality(table: pd.DataFrame, mask: np.ndarray | None = None) -> dict | None:
    """Flags vs injected truth (precision, recall, F1, AUROC, ...) and flips left in the subset; None if no
    noise was injected."""
    if "noise_injected" not in table:
        return None
    from selector.noise import audit_metrics

    truth = table["noise_injected"].to_numpy(dtype=bool)
    out = audit_metrics(table["noise_score"].to_numpy(), table["flagged"].to_numpy(dtype=bool), truth)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        out["injected_in_subset"] = int((truth & mask).sum())
        out["subset_size"] = int(mask.sum())
    return out


# ---------------------------------------------------------------------------------------- histograms
@dataclass(frozen=True)
class Histogram:
    """Bin edges and counts of one score, split into selected / not selected rows."""
    edges: np.ndarray
    selected: np.ndarray
    dropped: np.ndarray
    centers: np.ndarray = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "centers", (self.edges[:-1] + self.edges[1:]) / 2)


def histogram(values: np.ndarray, mask: np.ndarray, *, bins: int = 50) -> Histogram:
    """Counts per bin for selected and dropped rows over a common range (NaN/inf ignored)."""
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    finite = np.isfinite(values)
    lo, hi = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    sel, _ = np.histogram(values[finite & mask], bins=edges)
    drop, _ = np.histogram(values[finite & ~mask], bins=edges)
    return Histogram(edges=edges, selected=sel, dropped=drop)


def selection_cut(score: np.ndarray, mask: np.ndarray) -> float | None:
    """The lowest objective value that made it into the subset (the top-k cut); None for an empty subset."""
    mask = np.asarray(mask, dtype=bool)
    return float(np.min(np.asarray(score)[mask])) if mask.any() else None


def class_cuts(score: np.ndarray, mask: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes,) float64: the lowest score kept in each class (NaN where the class keeps nothing): the
    selection cut of each class when quotas are per class."""
    score, mask, codes = np.asarray(score, np.float64), np.asarray(mask, bool), np.asarray(codes, np.int64)
    out = np.full(n_classes, np.inf)
    keep = mask & (codes >= 0)
    np.minimum.at(out, codes[keep], score[keep])
    out[~np.isfinite(out)] = np.nan
    return out


def rows_in_bins(values: np.ndarray, mask: np.ndarray, h: Histogram, picks) -> np.ndarray:
    """Rows of the histogram bars picked in a plotly selection (points of trace 0 = selected, 1 = dropped,
    as `charts.histogram_figure` draws them), given as (trace, bin) pairs."""
    values, mask = np.asarray(values, np.float64), np.asarray(mask, bool)
    index = np.clip(np.searchsorted(h.edges, values, side="right") - 1, 0, len(h.edges) - 2)
    chosen = np.zeros(len(values), bool)
    for trace, b in picks:
        chosen |= (index == b) & (mask if trace == 0 else ~mask) & np.isfinite(values)
    return np.flatnonzero(chosen)


def bars_from_selection(selection) -> list[tuple[int, int]]:
    """(trace, bin) pairs of the bars picked in a plotly selection event on a histogram_figure."""
    out = []
    for point in (selection or {}).get("points", []) or []:
        trace = point.get("curve_number")
        b = point.get("point_index", point.get("point_number"))
        if isinstance(trace, int) and isinstance(b, int):
            out.append((trace, b))
    return sorted(set(out))


# ----------------------------------------------------------------------------- duplicates, outliers
def duplicate_groups(table: pd.DataFrame) -> list[np.ndarray]:
    """Near-duplicate groups as row arrays, the kept row (the group's root: its lowest row) first, then the
    copies; largest groups first, ties by root. `duplicate_of` already points every copy at its root."""
    dup = table["duplicate_of"].to_numpy()
    copies = np.flatnonzero(dup >= 0)
    if not len(copies):
        return []
    roots = dup[copies]
    order = np.lexsort((copies, roots))
    copies, roots = copies[order], roots[order]
    starts = np.flatnonzero(np.r_[True, roots[1:] != roots[:-1]])
    groups = [np.r_[roots[s], copies[s:e]] for s, e in zip(starts, np.r_[starts[1:], len(copies)])]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def leaked_groups(table: pd.DataFrame) -> list[np.ndarray]:
    """The near-duplicate groups (`duplicate_groups`) that hold rows of more than one split: the leaks. Empty
    without a split column."""
    if "leak_of" not in table:
        return []
    leak = table["leak_of"].to_numpy()
    return [g for g in duplicate_groups(table) if (leak[g] >= 0).any()]


def missing_class_groups(table: pd.DataFrame) -> list[np.ndarray]:
    """Rows of each group of a class missing from the label set (`missing_class`), in group order."""
    if "missing_class" not in table:
        return []
    group = table["missing_class"].to_numpy()
    return [np.flatnonzero(group == g) for g in np.unique(group[group >= 0])]


def keep_one_per_group(table: pd.DataFrame, groups, decisions: dict) -> dict[str, str]:
    """{sample id: "bad"} for every copy (not the kept root) of these groups that is not marked bad yet."""
    ids = table["id"].astype(str).to_numpy()
    return {ids[r]: "bad" for g in groups for r in g[1:] if decisions.get(ids[r]) != "bad"}


# --------------------------------------------------------------------------------------------- map
def map_rows(n: int, *, limit: int, seed: int = 0) -> np.ndarray:
    """Rows the map sends as markers (hover and click): all when n <= limit, else a sorted seeded sample."""
    return sample_rows(n, limit, seed)


def rows_from_selection(selection) -> list[int]:
    """Table rows picked in a plotly selection event (each point carries its row as customdata[0])."""
    if not selection:
        return []
    rows = []
    for point in selection.get("points", []) or []:
        data = point.get("customdata")
        if isinstance(data, dict):             # typed-array customdata comes back as {"0": row, "1": ...}
            data = data.get("0", data.get(0))
        elif isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is None:
            continue
        try:
            rows.append(int(data))
        except (TypeError, ValueError):
            continue
    return list(dict.fromkeys(rows))
