"""A class missing from the label set (a planted cluster with random labels), re-encoded near-copies and
near-duplicates leaked across splits: found, reported as their own issue kinds, end to end through the CLI."""
import json

import numpy as np
import pandas as pd
import pytest

from selector.__main__ import main
from selector.audit import audit_labels
from selector.errors import InputError
from selector.issues import find_issues
from selector.linalg import class_prototypes, l2_normalize
from selector.neighbors import knn
from selector.noise import inject_noise
from selector.outliers import find_leaks, find_missing_class, find_near_duplicates, neighbor_similarities
from selector.table import SELECTION_COLUMNS, TABLE_COLUMNS
from tests.synthetic import clusters, make_embeddings, plant_missing_class

C = 6
NAMES = [f"class{c}" for c in range(C)]


def test_missing_class_cluster_is_its_own_issue_not_label_errors():
    X, T, y = clusters(n=3000, seed=1)
    X, y, planted = plant_missing_class(X, y, C, n=200, seed=2)
    issues = find_issues(X, T, y, NAMES, seed=0)
    found = issues.missing_class >= 0
    assert (found & planted).sum() >= 0.9 * planted.sum() and (found & ~planted).sum() <= 0.1 * found.sum()
    assert not (issues.labels.flagged & found).any()              # no suggested label can be right
    assert issues.ood[found].all()
    row = np.flatnonzero(found)[0]
    assert "a class missing from the label set?" in issues.reason[row]
    assert "rather than its label" not in issues.reason[row]


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4])
def test_no_missing_class_in_clean_or_noisy_labels(rate):
    """Random label flips are scattered over the whole dataset, not a group that matches no class."""
    X, T, y = clusters(n=3000, seed=4)
    labels = inject_noise(y, rate=rate, mode="uniform", n_classes=C, seed=0)[0] if rate else y
    issues = find_issues(X, T, labels, NAMES, seed=0)
    assert (issues.missing_class >= 0).sum() == 0


def test_missing_class_found_under_label_noise():
    """Flipped labels scatter the known classes' labels too; the group is still found, and only it."""
    X, T, y = clusters(n=3000, seed=1)
    X, y, planted = plant_missing_class(X, y, C, n=200, seed=2)
    y[~planted] = inject_noise(y[~planted], rate=0.2, mode="uniform", n_classes=C, seed=0)[0]
    found = find_issues(X, T, y, NAMES, seed=0).missing_class >= 0
    assert (found & planted).sum() >= 0.9 * planted.sum() and (found & ~planted).sum() <= 0.1 * found.sum()


def test_a_loose_region_of_mixed_labels_is_not_a_missing_class():
    """Where the encoder blurs classes together, the labels look scattered too, but the region is far looser
    than a class: it is not reported as a missing class."""
    X, T, y = clusters(n=3000, seed=1)
    Xp, yp, planted = plant_missing_class(X, y, C, n=200, seed=2)
    centre = Xp[planted].mean(0)
    Xp[planted] = centre + 3.0 * (Xp[planted] - centre)          # the same rows, three times as spread out
    assert (find_issues(X, T, y, NAMES, seed=0).missing_class < 0).all()
    assert (find_issues(Xp, T, yp, NAMES, seed=0).missing_class[planted] < 0).all()


def test_missing_class_with_prototypes_only_and_bad_input():
    """Image-only embeddings: class prototypes are the only class embeddings, and the cluster is still found."""
    X, _, y = clusters(n=2000, seed=6)
    X, y, planted = plant_missing_class(X, y, C, n=150, seed=3)
    Xn = l2_normalize(X)
    P = class_prototypes(Xn, y, C)
    _, I = knn(Xn, 10)
    audit = audit_labels(Xn, P, y, neighbors=(None, I), seed=0, zero_shot=False)
    group = find_missing_class(Xn, y, [P], audit, I)
    found = group >= 0
    assert (found & planted).sum() >= 0.9 * planted.sum() and (found & ~planted).sum() <= 0.1 * found.sum()
    assert set(np.unique(group[found])) == set(range(group.max() + 1))     # groups numbered from 0
    assert (find_missing_class(Xn[:30], y[:30], [P], audit, I[:30] % 30) == -1).all()


def test_reencoded_near_copies_and_exact_copies_are_paired():
    X, _, _ = clusters(n=3000, seed=8)
    rng = np.random.default_rng(0)
    src = rng.choice(3000, 80, replace=False)
    near = X[src[:60]] * rng.uniform(0.98, 1.02, (60, 1)) + rng.normal(scale=0.02, size=(60, X.shape[1]))
    Xp = np.concatenate([X, near, X[src[60:]]]).astype(np.float32)
    copy_of = np.r_[np.full(3000, -1), src]
    _, I = knn(Xp, 10)
    dup = find_near_duplicates(neighbor_similarities(Xp, I), I)
    root = np.where(dup >= 0, dup, np.arange(len(dup)))
    pairs = np.flatnonzero(copy_of >= 0)
    assert (root[pairs] == root[copy_of[pairs]]).all()
    grouped = np.bincount(root, minlength=len(dup))[root] > 1
    in_pair = np.zeros(len(dup), bool)
    in_pair[pairs] = in_pair[copy_of[pairs]] = True
    assert (grouped & ~in_pair).sum() <= 5, np.flatnonzero(grouped & ~in_pair)
    assert (dup[copy_of[pairs]] == -1).all() and (dup[pairs] == copy_of[pairs]).all()   # the lower row is kept


def test_leaks_are_duplicates_across_splits():
    dup = np.array([-1, 0, 0, -1, 3, -1, -1, 6])
    split = np.array(["train", "test", "train", "train", "train", "test", "val", "test"])
    leak = find_leaks(dup, split)
    # group {0, 1, 2}: train rows 0 and 2 leak to test row 1, row 1 to train row 0; {3, 4} is within train
    assert leak.tolist() == [1, 0, 1, -1, -1, -1, 7, 6]
    with pytest.raises(InputError, match="split"):
        find_leaks(dup, split[:-1])


def test_issues_without_split_have_no_leaks():
    X, T, y = clusters(n=600, seed=2)
    X[500] = X[10]
    assert find_issues(X, T, y, NAMES).leak_of is None
    issues = find_issues(X, T, y, NAMES, split=np.where(np.arange(600) < 400, "train", "test"))
    assert issues.leak_of[10] == 500 and issues.leak_of[500] == 10 and (issues.leak_of >= 0).sum() == 2
    assert "leaked across splits: near-duplicate of row 10 in split 'train' (this row: 'test')" in issues.reason[500]


def _embeddings_with_plants(tmp_path, *, splits: bool):
    """make_embeddings' 4 classes + 120 rows of a missing class + 3 exact copies of train rows (2 in test)."""
    src = make_embeddings(tmp_path / "src.npz", n_per_class=120, seed=5)
    z = dict(np.load(src))
    X, y, planted = plant_missing_class(z["image_embeddings"], z["labels"], 4, n=120, seed=1)
    copied = np.array([7, 130, 250])
    z["image_embeddings"], z["labels"] = np.concatenate([X, X[copied]]), np.r_[y, y[copied]]
    if splits:
        z["splits"] = np.array(["train"] * len(X) + ["test", "test", "train"])
    np.savez(tmp_path / "planted.npz", **z)
    return tmp_path / "planted.npz", np.r_[planted, np.zeros(3, bool)], copied, len(X)


def test_cli_reports_a_missing_class_and_leaks(tmp_path, capsys):
    npz, planted, copied, n = _embeddings_with_plants(tmp_path, splits=True)
    out = tmp_path / "run.csv"
    assert main(["--source", "embeddings", "--path", str(npz), "--map", "pca", "--ratio", "0.5",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert table.columns.tolist() == [*TABLE_COLUMNS, "split", "leak_of", *SELECTION_COLUMNS]
    found = table["missing_class"].to_numpy() >= 0
    assert (found & planted).sum() >= 0.9 * planted.sum() and (found & ~planted).sum() <= 0.1 * found.sum()
    assert not (table["flagged"].astype(bool) & found).any() and not table.loc[found, "selected"].astype(bool).any()
    assert table.loc[found, "reason"].str.contains("a class missing from the label set").all()
    leak = table["leak_of"].to_numpy()
    assert leak[n] == copied[0] and leak[copied[0]] == n and leak[n + 1] == copied[1] and leak[n + 2] == -1
    assert (leak >= 0).sum() == 4
    assert "leaked across splits" in table["reason"].iloc[n]
    counts = json.loads((tmp_path / "run.manifest.json").read_text())["counts"]
    assert counts["missing_class"] == int(found.sum()) and counts["leaked_across_splits"] == 4


def test_cli_without_split_column_has_no_split_columns(tmp_path):
    npz, _, _, n = _embeddings_with_plants(tmp_path, splits=False)
    out = tmp_path / "run.csv"
    assert main(["--source", "embeddings", "--path", str(npz), "--map", "pca",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert table.columns.tolist() == [*TABLE_COLUMNS, *SELECTION_COLUMNS]
    assert table["duplicate_of"].iloc[n] == 7
    counts = json.loads((tmp_path / "run.manifest.json").read_text())["counts"]
    assert "leaked_across_splits" not in counts


def test_splits_in_an_embeddings_file_are_checked_and_keyed(tmp_path):
    from selector.sources.embeddings import load_embeddings
    z = dict(np.load(make_embeddings(tmp_path / "e.npz", n_per_class=10)))
    plain = load_embeddings(tmp_path / "e.npz")
    assert "split" not in plain.table
    z["splits"] = np.array(["train", "test"] * 20)
    np.savez(tmp_path / "s.npz", **z)
    first = load_embeddings(tmp_path / "s.npz")
    z["splits"] = np.array(["test", "train"] * 20)
    np.savez(tmp_path / "s.npz", **z)
    second = load_embeddings(tmp_path / "s.npz")
    assert first.table["split"].tolist()[:2] == ["train", "test"]
    assert first.fingerprint != second.fingerprint      # which rows are test decides the leaks: a new run
    z["splits"] = np.array(["train"] * 39)
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(InputError, match=r"`splits` must be \(40,\) strings"):
        load_embeddings(tmp_path / "bad.npz")


def test_map_colours_missing_class_and_leaks():
    from selector.ui import charts
    from tests.synthetic import make_table
    table = make_table(n=90)
    assert "missing_class" not in charts.colour_options(table) and "leak" not in charts.colour_options(table)
    table["missing_class"] = np.where(np.arange(90) < 30, 0, -1)
    table["leak_of"] = np.where(np.arange(90) == 40, 41, np.where(np.arange(90) == 41, 40, -1))
    assert {"missing_class", "leak"} <= set(charts.colour_options(table))
    selected = np.zeros(90, bool)
    image = charts.map_image(table, selected, "missing_class")
    assert [name for name, _ in image.legend] == ["in a known class", "a class missing from the label set?"]
    assert charts.map_image(table, selected, "leak").legend[1][0] == "near-duplicate in another split"
    assert image.source != charts.map_image(table, selected, "leak").source


def test_a_single_split_is_no_split():
    """Fashion-MNIST's train split (every row 'train') gets no split columns, and keeps its fingerprint."""
    from dataclasses import replace
    from selector.dataset import build_dataset
    one = build_dataset("d", ["a", "b", "c"], ["", "", ""], ["x", "y", "x"], extra={"split": ["train"] * 3})
    none = build_dataset("d", ["a", "b", "c"], ["", "", ""], ["x", "y", "x"])
    assert one.splits is None and one.fingerprint == none.fingerprint
    two = replace(none, table=none.table.assign(split=["train", "test", "train"]))
    assert two.splits.tolist() == ["train", "test", "train"] and two.fingerprint != none.fingerprint
