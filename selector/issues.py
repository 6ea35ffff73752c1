"""Every kind of issue in one pass: label errors (`audit`), out-of-distribution images and near-duplicates
(`outliers`), with one sentence per affected row that says why."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selector.audit import LabelAudit, audit_labels, neighbor_ids
from selector.errors import InputError
from selector.linalg import l2_normalize
from selector.outliers import find_near_duplicates, find_ood, neighbor_similarities
from selector.progress import Progress
from selector.validate import check_matrix, check_number


@dataclass(eq=False)
class Issues:
    """The label audit plus the label-independent flags; every array has one entry per row."""
    labels: LabelAudit
    ood_score: np.ndarray      # (n,) float32 robust z, higher = more unusual
    ood: np.ndarray            # (n,) bool
    duplicate_of: np.ndarray   # (n,) int64, -1 = none, else the lowest row it nearly duplicates
    reason: np.ndarray         # (n,) object str, "" when there is nothing to say


def find_issues(X, T, labels, class_names, *, neighbors=None, seed: int = 0, duplicate_threshold: float = 0.98,
                zero_shot: bool = True, progress: Progress | None = None) -> Issues:
    """Audit labels, find OOD rows and near-duplicates of X (n, d) with class prompts T (C, d).

    labels (n,) given labels in [0, C), class_names (C,) their names (for the reasons); neighbors as for
    `audit_labels` (None: exact cosine kNN on X); zero_shot=False when T holds class prototypes instead of
    class prompts (an encoder without a text tower)."""
    names = [str(c) for c in class_names]
    if len(names) != len(T):
        raise InputError(f"class_names has {len(names)} entries but T has {len(T)} rows; give one name per "
                         "class prompt, in the same order.")
    check_number(duplicate_threshold, "duplicate_threshold", above=0, maximum=1)
    X = check_matrix(X, "X (image embeddings)")
    # one kNN search serves all three detectors (a given (D, I) pair needs no normalised copy of X)
    searching = neighbors is None or hasattr(neighbors, "search")
    I = neighbor_ids(neighbors, l2_normalize(X) if searching else X)
    audit = audit_labels(X, T, labels, neighbors=(None, I), seed=seed, zero_shot=zero_shot, progress=progress)
    sims = neighbor_similarities(X, I)
    ood_score, ood = find_ood(audit.best_class_sim, sims)
    duplicate_of = find_near_duplicates(sims, I, threshold=duplicate_threshold)
    return Issues(labels=audit, ood_score=ood_score, ood=ood, duplicate_of=duplicate_of,
                  reason=reasons(names, np.asarray(labels, np.int64), audit, ood, duplicate_of))


def reasons(names, y, audit: LabelAudit, ood, duplicate_of) -> np.ndarray:
    """(n,) object: one sentence per flagged, OOD or duplicated row, "" elsewhere."""
    out = np.full(len(y), "", dtype=object)
    for i in np.flatnonzero(audit.flagged | ood | (duplicate_of >= 0)):
        parts = []
        if audit.flagged[i]:
            s, g = audit.suggested_label[i], y[i]
            parts.append(f"image matches '{names[s]}' ({audit.suggested_prob[i]:.2f}) rather than its label "
                         f"'{names[g]}' ({audit.given_prob[i]:.2f}); {int(audit.knn_support[i])}/"
                         f"{int(audit.n_neighbors[i])} neighbours say {names[s]}")
        if ood[i]:
            parts.append(f"matches no class well (best '{names[int(audit.best_class[i])]}', cosine "
                         f"{audit.best_class_sim[i]:.2f}) and is far from its neighbours: corrupted or out of "
                         "distribution?")
        if duplicate_of[i] >= 0:
            parts.append(f"near-duplicate of row {int(duplicate_of[i])}")
        out[i] = "; ".join(parts)
    return out
