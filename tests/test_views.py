"""The pages' logic as plain functions over the engine's table: per-class counts, the random-subset
comparison, histograms, the map's helpers and the figures. Seeded data, known answers."""
import numpy as np
import pytest

from selector.errors import InputError
from selector.ui import charts
from selector.ui.views import (audit_quality, class_breakdown, class_codes, compare_with_random, corrected_codes,
                               coverage_distance, coverage_space, flagged_order, histogram, map_rows, n_pages,
                               page_rows, random_mask, rows_from_selection, subset_stats)
from tests.synthetic import CLASSES, make_table


@pytest.fixture
def table():
    return make_table()


# ---------------------------------------------------------------------------------- class breakdown
def test_class_breakdown_counts(table):
    mask = (table["label"] == "cat").to_numpy() & (np.arange(len(table)) < 30)
    codes = class_codes(table["label"], CLASSES)
    assert codes[:4].tolist() == [0, 1, 2, 0]
    out = class_breakdown(codes, mask, CLASSES)
    assert out["class"].tolist() == list(CLASSES)
    assert out["before"].tolist() == [100, 100, 100]
    assert out["kept"].tolist() == [10, 0, 0] and out["dropped"].tolist() == [90, 100, 100]
    assert out["share_after_pct"].tolist() == [100.0, 0.0, 0.0]
    moved = class_breakdown(codes, mask, CLASSES, codes_after=np.ones(len(table), np.int64))
    assert moved["kept"].tolist() == [0, 10, 0]
    # accepting a suggestion moves that sample to the suggested class
    row = int(np.flatnonzero(table["flagged"])[0])
    after = corrected_codes(codes, table, {table["id"][row]: "accepted", "s0": "kept"}, CLASSES)
    assert after[row] == CLASSES.index(table["suggested_label"][row]) and after[0] == codes[0]
    assert (np.delete(after, row) == np.delete(codes, row)).all()
    assert corrected_codes(codes, table, {}, CLASSES) is codes


# ------------------------------------------------------------------------------ random comparison
def test_random_mask_exact_and_seeded():
    m = random_mask(100, 37, seed=3)
    assert m.sum() == 37 and np.array_equal(m, random_mask(100, 37, seed=3))
    with pytest.raises(InputError):
        random_mask(10, 11)


def test_coverage_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(500, 16)).astype(np.float32)
    space = coverage_space(F, dims=8, n_probe=100, seed=1)
    mask = rng.random(500) < 0.3
    Q, S = space.Z[space.probe], space.Z[mask]
    brute = np.sqrt(((Q[:, None, :] - S[None, :, :]) ** 2).sum(-1)).min(1).mean()
    assert coverage_distance(space, mask, chunk=17) == pytest.approx(brute, rel=1e-4)
    assert coverage_distance(space, np.ones(500, bool)) == pytest.approx(0.0, abs=1e-3)
    assert np.isnan(coverage_distance(space, np.zeros(500, bool)))


def test_subset_stats_and_comparison():
    labels = np.repeat([0, 1, 2], 10)
    mask = np.zeros(30, bool)
    mask[:5] = True                                        # class 0 only
    flagged = np.zeros(30, bool)
    flagged[[0, 20]] = True
    stats = subset_stats(labels, 3, mask, flagged=flagged, truth=flagged)
    assert stats["classes_covered"] == 1 and stats["classes_total"] == 3
    assert stats["smallest_class_share_vs_full"] == 0.0
    assert stats["class_distribution_gap"] == pytest.approx(2 / 3)
    assert stats["flagged_in_subset"] == 1 and stats["injected_in_subset"] == 1
    rng = np.random.default_rng(0)
    space = coverage_space(rng.normal(size=(30, 4)), dims=4, n_probe=30)
    cmp = compare_with_random(labels, 3, mask, flagged=flagged, space=space)
    assert cmp.columns.tolist() == ["metric", "subset", "random subset"]
    assert cmp.loc[cmp["metric"] == "samples", "random subset"].item() == 5
    assert cmp["metric"].str.contains("distance").any()


def test_audit_quality_against_injected_truth(table):
    q = audit_quality(table, mask=np.ones(len(table), bool))
    truth, flagged = table["noise_injected"].to_numpy(), table["flagged"].to_numpy()
    assert q["precision"] == pytest.approx((truth & flagged).sum() / flagged.sum())
    assert q["recall"] == pytest.approx((truth & flagged).sum() / truth.sum())
    assert q["auroc"] == pytest.approx(1.0)       # noise_score > 0.8 is exactly the truth here
    assert q["injected_in_subset"] == truth.sum()
    assert audit_quality(table.drop(columns=["noise_injected"])) is None


# ------------------------------------------------------------------------------- galleries, hist
def test_flagged_order_and_paging(table):
    rows = flagged_order(table)
    assert set(rows) == set(np.flatnonzero(table["flagged"]))
    assert (np.diff(table["noise_score"].to_numpy()[rows]) <= 0).all()
    first = table["id"][rows[0]]
    assert first not in table["id"][flagged_order(table, decisions={first: "kept"}, show="undecided")].tolist()
    assert table["id"][flagged_order(table, decisions={first: "kept"}, show="decided")].tolist() == [first]
    assert (table["label"][flagged_order(table, label="dog")] == "dog").all()
    assert n_pages(0, 10) == 1 and n_pages(21, 10) == 3
    assert page_rows(np.arange(21), 3, 10).tolist() == [20]
    assert page_rows(np.arange(21), 99, 10).tolist() == [20]


def test_histogram_splits_selected_and_dropped():
    values = np.array([0.0, 0.1, 0.5, 0.9, 1.0, np.nan])
    mask = np.array([True, False, True, False, True, True])
    h = histogram(values, mask, bins=4)
    assert h.selected.sum() == 3 and h.dropped.sum() == 2     # NaN ignored
    assert len(h.centers) == 4 and h.edges[0] == 0.0 and h.edges[-1] == 1.0
    flat = histogram(np.ones(5), np.ones(5, bool), bins=3)
    assert flat.selected.sum() == 5


# ------------------------------------------------------------------------------------------ the map
def test_map_rows_keeps_every_always_row():
    always = np.zeros(1000, bool)
    always[::50] = True
    rows = map_rows(1000, limit=100, always=always, seed=0)
    assert len(rows) == 100 and len(set(rows)) == 100 and set(np.flatnonzero(always)) <= set(rows)
    assert map_rows(50, limit=100).tolist() == list(range(50))


def test_rows_from_selection_reads_customdata():
    event = {"points": [{"customdata": [7, 0.1]}, {"customdata": [3.0]}, {"customdata": 7}, {"x": 1},
                        {"customdata": {"0": 9, "1": 0.5}}, {"customdata": []}],
             "point_indices": [0, 1, 2, 3]}
    assert rows_from_selection(event) == [7, 3, 9]
    assert rows_from_selection(None) == [] and rows_from_selection({"points": []}) == []


@pytest.mark.parametrize("colour", ["label", "flagged", "selected", "noise_injected", "noise_score"])
def test_map_figure_carries_rows(table, colour):
    mask = np.zeros(len(table), bool)
    mask[::2] = True
    rows = np.arange(0, len(table), 3)
    fig = charts.map_figure(table, mask, colour, rows)
    drawn = np.concatenate([np.asarray(t.customdata)[:, 0] for t in fig.data]).astype(int)
    assert sorted(drawn.tolist()) == rows.tolist()
    assert all(t.type == "scattergl" for t in fig.data)
    assert colour in charts.colour_options(table)


def test_histogram_and_box_figures(table):
    h = histogram(table["noise_score"].to_numpy(), table["flagged"].to_numpy(), bins=10)
    fig = charts.histogram_figure(h, title="noise", lines=[(0.85, "flag threshold", "red")])
    assert [t.name for t in fig.data] == ["selected", "dropped"]
    assert fig.layout.shapes[0].x0 == 0.85
    box = charts.class_box_figure(table, "alignment", max_points_per_class=20)
    assert len(box.data) == 3 and all(len(t.y) == 20 for t in box.data)


def test_random_baseline_is_independent_of_the_injected_noise():
    from selector.noise import inject_noise

    labels = np.repeat(np.arange(10), 2000)   # sizes where numpy's draws from one seed share their first rows
    _, flipped = inject_noise(labels, rate=0.2, mode="uniform", n_classes=10, seed=0)
    share = flipped[random_mask(len(labels), 10000, seed=0)].mean()
    assert abs(share - 0.2) < 0.02   # a random subset holds about the injected rate, not every flip


def test_linear_probe_scores_subsets_on_the_same_held_out_rows():
    from selector.ui.views import probe_accuracy, probe_space
    from tests.synthetic import clusters
    X, _, y = clusters(n=3000, seed=3)
    space = probe_space(X, dims=16, seed=0)
    assert len(space.held_out) == 300 and not space.trainable[space.held_out].any()
    assert space.Z.shape == (3000, 17)
    everything = np.ones(len(y), bool)
    clean = probe_accuracy(space, everything, y, y, 6)
    shuffled = probe_accuracy(space, everything, np.random.default_rng(0).permutation(y), y, 6)
    assert clean > 0.8 and shuffled < 0.4                    # it learns the labels it is given, and only those
    first_pair = np.isin(y, [0, 1])                          # a subset without four of the classes scores low
    assert probe_accuracy(space, first_pair, y, y, 6) < 0.45
    assert np.isnan(probe_accuracy(space, ~space.trainable, y, y, 6))    # held-out rows never train
    assert probe_accuracy(space, everything, np.where(y == 5, -1, y), y, 6) < clean   # unknown labels skipped
