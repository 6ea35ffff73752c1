"""What the pages show, as plain functions over the engine's table (no streamlit; unit-tested).

Everything here is cheap enough to run on every slider move on 60k rows: the subset itself comes from the
engine (`selector.selection`); the comparison with a random subset uses a fixed probe sample and a
low-dimensional copy of the embeddings computed once per run (`coverage_space`), and a linear probe scored
on held-out rows (`probe_space`, `probe_accuracy`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from selector.errors import InputError
from selector.linalg import l2_normalize, principal_axes
from selector.runtime import blas_threads


# ----------------------------------------------------------------------------------------- decisions
def decisions_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per decided sample of an applied table (`selector.apply`): id, path, label, suggested_label,
    decision, corrected_label."""
    decided = table["decision"] != ""
    return table.loc[decided, ["id", "path", "label", "suggested_label", "decision", "corrected_label"]].reset_index(
        drop=True)


def flagged_order(table: pd.DataFrame, *, decisions: dict | None = None, show: str = "all",
                  label: str | None = None) -> np.ndarray:
    """Row indices of flagged samples, most suspicious (highest noise_score) first.

    show: "all" flagged, "undecided" (no decision yet) or "decided"; label: only this given label.
    """
    keep = table["flagged"].to_numpy(dtype=bool).copy()
    if label:
        keep &= (table["label"] == label).to_numpy()
    if show != "all":
        decided = table["id"].astype(str).isin((decisions or {}).keys()).to_numpy()
        keep &= ~decided if show == "undecided" else decided
    rows = np.flatnonzero(keep)
    order = np.argsort(-table["noise_score"].to_numpy()[rows], kind="stable")
    return rows[order]


def page_rows(rows: np.ndarray, page: int, per_page: int) -> np.ndarray:
    """The rows shown on 1-based `page` of a gallery (clamped to the last page)."""
    n_pages = max(1, -(-len(rows) // per_page))
    page = min(max(int(page), 1), n_pages)
    return rows[(page - 1) * per_page: page * per_page]


def n_pages(n: int, per_page: int) -> int:
    return max(1, -(-n // per_page))


# ------------------------------------------------------------------------------------ class breakdown
def class_codes(labels, class_names) -> np.ndarray:
    """(n,) int64 index into class_names of each label name (-1 for a name not in class_names)."""
    return pd.Index(list(class_names)).get_indexer(pd.Index(np.asarray(labels, dtype=object))).astype(np.int64)


def corrected_codes(codes: np.ndarray, table: pd.DataFrame, decisions: dict | None, class_names) -> np.ndarray:
    """Label codes after the user's decisions: the suggested class where a suggestion was accepted."""
    accepted = [i for i, d in (decisions or {}).items() if d == "accepted"]
    if not accepted:
        return codes
    rows = np.flatnonzero(table["id"].astype(str).isin(accepted).to_numpy())
    out = codes.copy()
    out[rows] = class_codes(table["suggested_label"].to_numpy()[rows], class_names)
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


# -------------------------------------------------------------------------- comparison with random
def random_mask(n: int, k: int, seed: int = 0) -> np.ndarray:
    """(n,) bool with exactly k True at seeded random rows: the baseline subset of the same size."""
    if not 0 <= k <= n:
        raise InputError(f"random subset size must be in [0, {n}], got {k}.")
    mask = np.zeros(n, dtype=bool)
    # A stream of its own: a plain default_rng(seed) would start with the same rows as the noise injection's
    # draw at the same seed, and the "random" subset would then hold every injected flip.
    mask[np.random.default_rng([seed, _RANDOM_BASELINE_STREAM]).choice(n, size=k, replace=False)] = True
    return mask


_RANDOM_BASELINE_STREAM = 0x5E1EC7


@dataclass(frozen=True)
class CoverageSpace:
    """A low-dimensional copy of the embeddings and a fixed probe sample, computed once per run."""
    Z: np.ndarray           # (n, dims) float32: unit-normalised embeddings projected on their top PCA axes
    probe: np.ndarray       # (m,) int64 rows whose distance to the subset is measured


def coverage_space(F: np.ndarray, *, dims: int = 32, n_probe: int = 500, seed: int = 0) -> CoverageSpace:
    """Project unit-normalised F on its top `dims` principal axes (fit on <= 5,000 rows) and pick the probe."""
    Fn = l2_normalize(F)
    mean, axes = principal_axes(Fn, dims, sample=5000, seed=seed)
    Z = ((Fn - mean) @ axes).astype(np.float32)
    probe = np.sort(np.random.default_rng([seed, 1]).choice(len(F), size=min(len(F), n_probe), replace=False))
    return CoverageSpace(Z=Z, probe=probe.astype(np.int64))


def coverage_distance(space: CoverageSpace, mask: np.ndarray, *, chunk: int = 4096) -> float:
    """Mean Euclidean distance from each probe point to its nearest selected point (lower = better coverage)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return float("nan")
    Q = space.Z[space.probe]
    S = space.Z[mask]
    half = 0.5 * (S * S).sum(1)
    best = np.full(len(Q), -np.inf, dtype=np.float32)
    # ||q - s||^2 = ||q||^2 - 2 (q.s - ||s||^2 / 2): one matmul per chunk, then a running max.
    # One BLAS thread: these small products only lose time to threading when sessions share the CPU.
    with blas_threads(1):
        for start in range(0, len(S), chunk):
            G = Q @ S[start:start + chunk].T
            G -= half[None, start:start + chunk]
            np.maximum(best, G.max(1), out=best)
    d2 = (Q * Q).sum(1) - 2.0 * best
    return float(np.sqrt(np.maximum(d2, 0.0)).mean())


def subset_stats(labels: np.ndarray, n_classes: int, mask: np.ndarray, *, flagged=None, truth=None,
                 space: CoverageSpace | None = None) -> dict:
    """How one subset looks: size, classes covered, balance, coverage distance, flagged / injected inside."""
    mask = np.asarray(mask, dtype=bool)
    labels = np.asarray(labels)
    full = np.bincount(labels, minlength=n_classes).astype(float)
    sub = np.bincount(labels[mask], minlength=n_classes).astype(float)
    present = full > 0
    share_full = full / max(full.sum(), 1)
    share_sub = sub / max(sub.sum(), 1)
    ratio = np.where(present, share_sub / np.where(present, share_full, 1), np.nan)
    out = {
        "size": int(mask.sum()),
        "classes_covered": int(((sub > 0) & present).sum()),
        "classes_total": int(present.sum()),
        "smallest_class_share_vs_full": float(np.nanmin(ratio)) if present.any() else float("nan"),
        "class_distribution_gap": float(0.5 * np.abs(share_sub - share_full).sum()),
    }
    if space is not None:
        out["coverage_distance"] = coverage_distance(space, mask)
    if flagged is not None:
        out["flagged_in_subset"] = int((np.asarray(flagged, dtype=bool) & mask).sum())
    if truth is not None:
        out["injected_in_subset"] = int((np.asarray(truth, dtype=bool) & mask).sum())
    return out


COMPARISON_ROWS = {
    "size": "samples",
    "classes_covered": "classes covered",
    "smallest_class_share_vs_full": "smallest class share vs full set (1 = as in full set)",
    "class_distribution_gap": "class distribution gap vs full set (0 = same mix)",
    "coverage_distance": "mean distance to nearest selected sample (lower = better embedding coverage)",
    "flagged_in_subset": "flagged samples in subset",
    "injected_in_subset": "injected label flips in subset",
}


def compare_with_random(labels, n_classes: int, mask, *, flagged=None, truth=None,
                        space: CoverageSpace | None = None, seed: int = 0, random_stats: dict | None = None
                        ) -> pd.DataFrame:
    """Table metric | subset | random subset of the same size (seeded).

    random_stats: subset_stats of random_mask(n, mask.sum(), seed) when the caller has them cached (they
    depend only on the subset size).
    """
    mask = np.asarray(mask, dtype=bool)
    a = subset_stats(labels, n_classes, mask, flagged=flagged, truth=truth, space=space)
    b = random_stats
    if b is None:
        rand = random_mask(len(mask), int(mask.sum()), seed)
        b = subset_stats(labels, n_classes, rand, flagged=flagged, truth=truth, space=space)
    rows = [(COMPARISON_ROWS[k], a[k], b[k]) for k in a if k in COMPARISON_ROWS]
    out = pd.DataFrame(rows, columns=["metric", "subset", "random subset"])
    out["subset"] = out["subset"].astype(float).round(4)
    out["random subset"] = out["random subset"].astype(float).round(4)
    return out


# ----------------------------------------------------------------------------------- linear probe
@dataclass(frozen=True)
class ProbeSpace:
    """Features for a quick linear probe and the held-out rows it is scored on, computed once per run."""
    Z: np.ndarray           # (n, dims + 1) float32: unit embeddings on their top PCA axes, and a bias column
    held_out: np.ndarray    # (m,) int64: seeded rows no probe trains on
    trainable: np.ndarray   # (n,) bool: not held out


def probe_space(F: np.ndarray, *, dims: int = 64, n_held_out: int = 5000, seed: int = 0) -> ProbeSpace:
    """Project unit-normalised F on its top `dims` principal axes and hold out min(n_held_out, n // 10) rows."""
    Fn = l2_normalize(F)
    mean, axes = principal_axes(Fn, dims, sample=5000, seed=seed)
    Z = np.hstack([(Fn - mean) @ axes, np.ones((len(F), 1), np.float32)]).astype(np.float32)
    held = np.sort(np.random.default_rng([seed, 2]).choice(len(F), size=max(1, min(n_held_out, len(F) // 10)),
                                                            replace=False)).astype(np.int64)
    trainable = np.ones(len(F), dtype=bool)
    trainable[held] = False
    return ProbeSpace(Z=Z, held_out=held, trainable=trainable)


def probe_accuracy(space: ProbeSpace, mask: np.ndarray, train_codes: np.ndarray, test_codes: np.ndarray,
                   n_classes: int, *, ridge: float = 1e-3) -> float:
    """Accuracy on the held-out rows (against test_codes) of a ridge least-squares linear classifier trained
    on the subset's rows that are not held out (with train_codes); NaN when it has no such row. Codes < 0
    (labels outside the class list) are left out of training and scoring."""
    train_codes, test_codes = np.asarray(train_codes, np.int64), np.asarray(test_codes, np.int64)
    rows = np.flatnonzero(np.asarray(mask, dtype=bool) & space.trainable & (train_codes >= 0))
    scored = space.held_out[test_codes[space.held_out] >= 0]
    if not len(rows) or not len(scored):
        return float("nan")
    with blas_threads(1):
        Z = space.Z[rows]
        onehot = np.zeros((len(rows), n_classes), np.float32)
        onehot[np.arange(len(rows)), train_codes[rows]] = 1.0
        gram = (Z.T @ Z).astype(np.float64)
        gram[np.diag_indices_from(gram)] += ridge * len(rows)
        W = np.linalg.solve(gram, (Z.T @ onehot).astype(np.float64)).astype(np.float32)
        pred = (space.Z[scored] @ W).argmax(1)
    return float((pred == test_codes[scored]).mean())


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


# --------------------------------------------------------------------------------------------- map
def map_rows(n: int, *, limit: int, always=None, seed: int = 0) -> np.ndarray:
    """Rows to draw on the map: all when n <= limit, else a seeded sample that keeps every `always` row."""
    if n <= limit:
        return np.arange(n)
    always = np.zeros(n, dtype=bool) if always is None else np.asarray(always, dtype=bool)
    must = np.flatnonzero(always)[:limit]
    rest = np.flatnonzero(~always)
    extra = np.random.default_rng(seed).choice(rest, size=max(0, min(len(rest), limit - len(must))), replace=False)
    return np.sort(np.concatenate([must, extra]))


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
