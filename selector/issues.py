"""Every kind of issue in one pass: label errors (`audit`), out-of-distribution images, groups of a class
missing from the label set, near-duplicates and near-duplicates leaked across splits (`outliers`), with one
sentence per affected row that says why."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from selector.audit import LabelAudit, audit_labels, neighbor_ids
from selector.errors import InputError
from selector.linalg import class_prototypes, l2_normalize
from selector.outliers import find_leaks, find_missing_class, find_near_duplicates, find_ood, neighbor_similarities
from selector.progress import Progress
from selector.validate import check_matrix, check_number


@dataclass(eq=False)
class Issues:
    """The label audit plus the label-independent flags; every array has one entry per row."""
    labels: LabelAudit         # its `flagged` leaves out the missing-class rows (no suggested label can be right)
    ood_score: np.ndarray      # (n,) float32 robust z, higher = more unusual
    ood: np.ndarray            # (n,) bool: far from every class and every neighbour, or of a missing class
    missing_class: np.ndarray  # (n,) int64, -1 = none, else the group of a class missing from the label set
    duplicate_of: np.ndarray   # (n,) int64, -1 = none, else the lowest row it nearly duplicates
    leak_of: np.ndarray | None  # (n,) int64, -1 = none, else the lowest near-duplicate in another split;
    #                            None when the dataset has no split
    reason: np.ndarray         # (n,) object str, "" when there is nothing to say


def find_issues(X, T, labels, class_names, *, neighbors=None, seed: int = 0, duplicate_threshold: float = 0.98,
                zero_shot: bool = True, split=None, progress: Progress | None = None) -> Issues:
    """Audit labels, find OOD rows, missing-class groups, near-duplicates and (with split) leaks of X (n, d)
    with class prompts T (C, d).

    labels (n,) given labels in [0, C), class_names (C,) their names (for the reasons); neighbors as for
    `audit_labels` (None: exact cosine kNN on X); zero_shot=False when T holds class prototypes instead of
    class prompts (an encoder without a text tower); split: None, or (n,) split names (train/test/...)."""
    names = [str(c) for c in class_names]
    if len(names) != len(T):
        raise InputError(f"class_names has {len(names)} entries but T has {len(T)} rows; give one name per "
                         "class prompt, in the same order.")
    check_number(duplicate_threshold, "duplicate_threshold", above=0, maximum=1)
    X = check_matrix(X, "X (image embeddings)")
    y = np.asarray(labels, np.int64)
    Xn = l2_normalize(X)         # once: every detector works on unit rows (X itself when they already are)
    I = neighbor_ids(neighbors, Xn)   # one kNN search serves every detector
    audit = audit_labels(Xn, T, labels, neighbors=(None, I), seed=seed, zero_shot=zero_shot, progress=progress)
    sims = neighbor_similarities(Xn, I)
    ood_score, far = find_ood(audit.best_class_sim, sims)
    prototypes = class_prototypes(Xn, y, len(names))
    class_embeddings = [l2_normalize(T), prototypes] if zero_shot else [prototypes]
    missing = find_missing_class(Xn, y, class_embeddings, audit, I, seed=seed)
    audit = dataclasses.replace(audit, flagged=audit.flagged & (missing < 0))
    duplicate_of = find_near_duplicates(sims, I, threshold=duplicate_threshold)
    leak_of = None if split is None else find_leaks(duplicate_of, split)
    issues = Issues(labels=audit, ood_score=ood_score, ood=far | (missing >= 0), missing_class=missing,
                    duplicate_of=duplicate_of, leak_of=leak_of, reason=np.empty(0, object))
    issues.reason = reasons(names, y, issues, split)
    return issues


def reasons(names, y, issues: Issues, split=None) -> np.ndarray:
    """(n,) object: one sentence per flagged, OOD, missing-class, duplicated or leaked row, "" elsewhere."""
    audit, missing, dup = issues.labels, issues.missing_class, issues.duplicate_of
    leak = issues.leak_of if issues.leak_of is not None else np.full(len(y), -1)
    far = issues.ood & (missing < 0)
    out = np.full(len(y), "", dtype=object)
    groups = {g: np.bincount(y[missing == g], minlength=len(names)) for g in np.unique(missing[missing >= 0])}
    for i in np.flatnonzero(audit.flagged | issues.ood | (dup >= 0) | (leak >= 0)):
        parts = []
        if audit.flagged[i]:
            s, g = audit.suggested_label[i], y[i]
            parts.append(f"image matches '{names[s]}' ({audit.suggested_prob[i]:.2f}) rather than its label "
                         f"'{names[g]}' ({audit.given_prob[i]:.2f}); {int(audit.knn_support[i])}/"
                         f"{int(audit.n_neighbors[i])} neighbours say {names[s]}")
        if missing[i] >= 0:
            counts = groups[missing[i]]
            parts.append(f"matches no class: a class missing from the label set? One of {int(counts.sum()):,} "
                         f"similar images (group {int(missing[i]) + 1}) whose labels are scattered over "
                         f"{int((counts > 0).sum())} classes")
        if far[i]:
            parts.append(f"matches no class well (best '{names[int(audit.best_class[i])]}', cosine "
                         f"{audit.best_class_sim[i]:.2f}) and is far from its neighbours: corrupted or out of "
                         "distribution?")
        if dup[i] >= 0:
            parts.append(f"near-duplicate of row {int(dup[i])}")
        if leak[i] >= 0:
            parts.append(f"leaked across splits: near-duplicate of row {int(leak[i])} in split "
                         f"'{split[int(leak[i])]}' (this row: '{split[i]}')")
        out[i] = "; ".join(parts)
    return out
