"""The per-sample table: its columns, what each means, and how a run assembles it. Row i is sample i.

`COLUMNS` is the one description of every column (the README's table is checked against it by a test);
`build_table` makes the run's table, and `selection.apply` adds the selection columns.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from selector.score import minmax

COLUMNS = {
    "id": "the sample's unique id",
    "path": "its image file; for in-memory pixels the file and record they were read from (`<file>#<record>`); "
            "empty for embeddings-only data",
    "label": "its given label",
    "noise_score": "0..1, higher = more likely mislabelled",
    "flagged": "the audit calls the label wrong",
    "suggested_label": "the label the audit suggests",
    "reason": "why the row is flagged, OOD or a near-duplicate, in words",
    "alignment": "SAS: cosine between the adapted image and its label's prompt (higher = matches its label)",
    "diversity": "SDS: mean distance to its K-1 nearest same-label neighbours (higher = covers a sparser region)",
    "alignment_norm": "alignment min-max scaled to [0, 1] (an objective the selection can weigh)",
    "diversity_norm": "diversity min-max scaled to [0, 1] (an objective the selection can weigh)",
    "cleanliness": "1 - noise_score (an objective the selection can weigh)",
    "given_prob": "the audit's probability of the given label",
    "suggested_prob": "the audit's probability of the suggested label",
    "knn_agreement": "share of the 10 nearest neighbours whose label equals the given label",
    "ood_score": "robust z-score: higher = matches no class well and sits far from its neighbours",
    "ood": "out of distribution (corrupted image, or a class missing from the label set)",
    "missing_class": "group of similar images that match no class and carry scattered labels (a class missing "
                     "from the label set?), -1 if none; such rows are not flagged as mislabelled",
    "duplicate_of": "row this sample nearly duplicates, -1 if none",
    "map_x": "2-D map coordinate",
    "map_y": "2-D map coordinate",
    "split": "only when the dataset's split column names two splits or more: the sample's split (train, test, ...)",
    "leak_of": "only with a split column: a near-duplicate of this sample in another split (leaked across "
               "splits), -1 if none",
    "original_label": "only when synthetic noise was injected: the label before the flip",
    "noise_injected": "only when synthetic noise was injected: this label was flipped on purpose",
    "selected": "in the chosen subset",
    "decision": "a reviewer's decision: accepted, kept, bad, or empty",
    "corrected_label": "the label after decisions and corrections (the suggested one where it was accepted, or, "
                       "with correct_flagged, where the audit is confident the given one is wrong)",
}
SPLIT_COLUMNS = ("split", "leak_of")
"""Only when the dataset has two splits or more (`Dataset.splits`): they follow the run's columns."""
TRUTH_COLUMNS = ("original_label", "noise_injected")
"""Only when synthetic noise was injected: they follow the run's columns."""
SELECTION_COLUMNS = ("selected", "decision", "corrected_label")
"""What `selection.apply` adds to a run's table."""
TABLE_COLUMNS = tuple(c for c in COLUMNS if c not in SPLIT_COLUMNS + TRUTH_COLUMNS + SELECTION_COLUMNS)
"""The columns of a run's table, in order."""
SCORE_COLUMNS = ("noise_score", "alignment", "diversity", "alignment_norm", "diversity_norm", "cleanliness",
                 "given_prob", "suggested_prob", "knn_agreement", "ood_score")
"""The numeric per-sample scores (one float per row)."""


def build_table(dataset, sas, sds, issues, xy, *, original_labels=None, noise_truth=None) -> pd.DataFrame:
    """The run's per-sample table from the dataset (with its given labels), the scores, the issues and the map."""
    names = np.asarray(dataset.class_names, dtype=object)
    audit = issues.labels
    table = pd.DataFrame({
        "id": dataset.table["id"].astype(str).to_numpy(),
        "path": dataset.locations(),
        "label": names[dataset.labels],
        "noise_score": audit.noise_score.astype(np.float32),
        "flagged": audit.flagged.astype(bool),
        "suggested_label": names[audit.suggested_label],
        "reason": np.asarray(issues.reason, dtype=object),
        "alignment": sas.astype(np.float32),
        "diversity": sds.astype(np.float32),
        "alignment_norm": minmax(sas),
        "diversity_norm": minmax(sds),
        "cleanliness": (1.0 - audit.noise_score).astype(np.float32),
        "given_prob": audit.given_prob.astype(np.float32),
        "suggested_prob": audit.suggested_prob.astype(np.float32),
        "knn_agreement": audit.knn_agreement.astype(np.float32),
        "ood_score": issues.ood_score.astype(np.float32),
        "ood": issues.ood.astype(bool),
        "missing_class": issues.missing_class.astype(np.int64),
        "duplicate_of": issues.duplicate_of.astype(np.int64),
        "map_x": xy[:, 0].astype(np.float32),
        "map_y": xy[:, 1].astype(np.float32),
    })
    if issues.leak_of is not None:
        table["split"] = dataset.splits
        table["leak_of"] = issues.leak_of.astype(np.int64)
    if noise_truth is not None:
        table["original_label"] = names[original_labels]
        table["noise_injected"] = np.asarray(noise_truth, dtype=bool)
    return table


def class_summary(dataset, issues) -> pd.DataFrame:
    """Per class: samples, flagged, estimated noise rate (mean noise score of the class's given labels)."""
    names = list(dataset.class_names)
    labels = dataset.labels
    return pd.DataFrame({
        "class": names,
        "n": np.bincount(labels, minlength=len(names)),
        "flagged": np.bincount(labels[issues.labels.flagged], minlength=len(names)),
        "estimated_noise_rate": np.asarray(issues.labels.class_noise_rate, dtype=np.float32),
    })
