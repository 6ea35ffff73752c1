"""The pages' logic as plain functions over the engine's table: per-class counts, the random-subset
comparison, histograms, the map's helpers and the figures. Seeded data, known answers."""
import numpy as np
import pandas as pd
import pytest

from selector.errors import InputError
from selector.selection import Selection
from selector.ui import charts
from selector.ui.subsets import compare_with_random, coverage_distance, coverage_space, random_mask, subset_stats
from selector.ui.views import (audit_quality, bulk_changes, class_breakdown, class_codes, corrected_codes,
                               describe_bulk, flagged_order, histogram, map_rows, n_pages, page_rows,
                               rows_from_selection, tie_break)
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
    accept = Selection(decisions={table["id"][row]: "accepted", "s0": "kept"})
    after = corrected_codes(codes, table, accept, CLASSES)
    assert after[row] == CLASSES.index(table["suggested_label"][row]) and after[0] == codes[0]
    assert (np.delete(after, row) == np.delete(codes, row)).all()
    assert corrected_codes(codes, table, Selection(), CLASSES) is codes


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
    # past `pool` rows only a fixed sample of them takes part, probe and subset alike
    pooled = coverage_space(F, dims=8, n_probe=50, seed=1, pool=200)
    assert pooled.Z.shape == (200, 8) and len(pooled.pool) == 200 and pooled.probe.max() < 200
    Q, S = pooled.Z[pooled.probe], pooled.Z[mask[pooled.pool]]
    brute = np.sqrt(((Q[:, None, :] - S[None, :, :]) ** 2).sum(-1)).min(1).mean()
    assert coverage_distance(pooled, mask) == pytest.approx(brute, rel=1e-4)
    # each probe point keeps its 20 nearest rows: a dense subset holds one of them for every probe point, a
    # sparse or a lopsided one leaves some probe points to be measured against the whole subset
    few = coverage_space(F, dims=8, n_probe=100, seed=1, nearest=20)
    assert few.near.shape == (100, 20) and (np.diff(few.near_d, axis=1) >= 0).all()
    lopsided = space.Z[:, 0] > 0.5
    for m in (rng.random(500) < 0.6, rng.random(500) < 0.02, lopsided, mask):
        Q, S = few.Z[few.probe], few.Z[m]
        brute = np.sqrt(((Q[:, None, :] - S[None, :, :]) ** 2).sum(-1)).min(1).mean()
        assert coverage_distance(few, m) == pytest.approx(brute, rel=1e-4)
        assert coverage_distance(few, m) == pytest.approx(coverage_distance(space, m), rel=1e-4)


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
    assert (np.diff(table["noise_score"].to_numpy(dtype=float)[rows].round(3)) <= 0).all()      # as the pages show it
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
def test_map_rows_sends_a_seeded_sample_past_the_limit():
    rows = map_rows(1000, limit=100, seed=0)
    assert len(rows) == 100 and len(set(rows)) == 100 and (np.diff(rows) > 0).all()
    assert rows.tolist() == map_rows(1000, limit=100, seed=0).tolist()
    assert map_rows(50, limit=100).tolist() == list(range(50))


def test_rows_from_selection_reads_customdata():
    event = {"points": [{"customdata": [7, 0.1]}, {"customdata": [3.0]}, {"customdata": 7}, {"x": 1},
                        {"customdata": {"0": 9, "1": 0.5}}, {"customdata": []}],
             "point_indices": [0, 1, 2, 3]}
    assert rows_from_selection(event) == [7, 3, 9]
    assert rows_from_selection(None) == [] and rows_from_selection({"points": []}) == []


@pytest.mark.parametrize("colour", ["label", "flagged", "selected", "noise_injected", "noise_score", "duplicate"])
def test_map_figure_draws_every_row_and_carries_the_hover_rows(table, colour):
    mask = np.zeros(len(table), bool)
    mask[::2] = True
    rows = np.arange(0, len(table), 3)
    image = charts.map_image(table, mask, colour)
    fig = charts.map_figure(table, image, rows)
    (samples,) = [t for t in fig.data if t.customdata is not None]
    assert np.asarray(samples.customdata)[:, 0].astype(int).tolist() == rows.tolist()
    assert all(t.type == "scattergl" for t in fig.data)
    (layer,) = fig.layout.images
    assert layer.source.startswith("data:image/png;base64,") and layer.layer == "below"
    assert (layer.x, layer.y) == (image.extent.x0, image.extent.y1)
    xy = table[["map_x", "map_y"]].to_numpy()
    assert image.extent.x0 < xy[:, 0].min() and xy[:, 0].max() < image.extent.x1
    legend = [t.name for t in fig.data if t.showlegend is not False and t.customdata is None]
    assert (len(legend) == 2) if colour in ("flagged", "selected", "noise_injected", "duplicate") else True
    assert colour in charts.colour_options(table)


def test_histogram_and_box_figures(table):
    h = histogram(table["noise_score"].to_numpy(), table["flagged"].to_numpy(), bins=10)
    fig = charts.histogram_figure(h, title="noise", lines=[(0.85, "flag threshold", "red")])
    assert [t.name for t in fig.data] == ["selected", "dropped"]
    assert fig.layout.shapes[0].x0 == 0.85
    box = charts.class_box_figure(table, "alignment")
    (trace,) = box.data
    names = sorted(table["label"].astype(str).unique())
    assert sorted(trace.x) == names and trace.y is None                  # five numbers a class, no raw points
    for name, q1, med, q3, lo, hi in zip(trace.x, trace.q1, trace.median, trace.q3, trace.lowerfence,
                                         trace.upperfence):
        v = np.sort(table.loc[table["label"] == name, "alignment"].to_numpy(np.float64))
        assert (q1, med, q3) == pytest.approx(tuple(np.quantile(v, [0.25, 0.5, 0.75])))
        iqr = q3 - q1
        assert lo == v[v >= q1 - 1.5 * iqr].min() and hi == v[v <= q3 + 1.5 * iqr].max()


def test_random_baseline_is_independent_of_the_injected_noise():
    from selector.noise import inject_noise

    labels = np.repeat(np.arange(10), 2000)   # sizes where numpy's draws from one seed share their first rows
    _, flipped = inject_noise(labels, rate=0.2, mode="uniform", n_classes=10, seed=0)
    share = flipped[random_mask(len(labels), 10000, seed=0)].mean()
    assert abs(share - 0.2) < 0.02   # a random subset holds about the injected rate, not every flip


def test_class_cuts_are_the_lowest_kept_score_of_each_class():
    from selector.ui.views import class_cuts
    score = np.array([0.9, 0.2, 0.5, 0.7, 0.1, 0.3])
    mask = np.array([True, False, True, True, False, False])
    codes = np.array([0, 0, 0, 1, 1, 2])
    cuts = class_cuts(score, mask, codes, 3)
    assert cuts[:2].tolist() == [0.5, 0.7] and np.isnan(cuts[2])


def test_a_picked_bar_gives_exactly_its_rows():
    from selector.ui.views import bars_from_selection, rows_in_bins
    rng = np.random.default_rng(0)
    values, mask = rng.random(500), rng.random(500) < 0.4
    h = histogram(values, mask, bins=10)
    event = {"points": [{"curve_number": 0, "point_index": 3}, {"curve_number": 1, "point_number": 9},
                        {"curve_number": 0, "point_index": 3}, {"x": 0.5}]}
    picks = bars_from_selection(event)
    assert picks == [(0, 3), (1, 9)] and bars_from_selection(None) == []
    rows = rows_in_bins(values, mask, h, picks)
    lo3, hi3, lo9 = h.edges[3], h.edges[4], h.edges[9]
    want = ((values >= lo3) & (values < hi3) & mask) | ((values >= lo9) & ~mask)
    assert rows.tolist() == np.flatnonzero(want).tolist()
    assert len(rows) == h.selected[3] + h.dropped[9]


def test_flagged_order_filters_sorts_by_any_score_and_breaks_ties_by_id_hash(table):
    flagged = table["flagged"].to_numpy()
    by_alignment = flagged_order(table, score="alignment", descending=False)
    assert set(by_alignment) == set(np.flatnonzero(flagged))
    assert (np.diff(table["alignment"].to_numpy(dtype=float)[by_alignment].round(3)) >= 0).all()   # as the pages show it
    suggested = flagged_order(table, suggested="dog", label="cat")
    assert len(suggested) and (table["suggested_label"][suggested] == "dog").all()
    assert (table["label"][suggested] == "cat").all()
    ranged = flagged_order(table, score="ood_score", score_range=(0.2, 0.6))
    assert ranged.size and ((table["ood_score"][ranged] >= 0.2) & (table["ood_score"][ranged] <= 0.6)).all()
    assert set(ranged) == set(np.flatnonzero(flagged & (table["ood_score"] >= 0.2).to_numpy()
                                             & (table["ood_score"] <= 0.6).to_numpy()))
    tied = table.sort_values("label", kind="stable").reset_index(drop=True).assign(noise_score=np.float32(0.9),
                                                                                   flagged=True)
    assert len(set(tied["label"][:30])) == 1                              # rows grouped by class, scores all equal
    order = flagged_order(tied)
    assert order.tolist() == flagged_order(tied.copy()).tolist()           # deterministic
    assert order.tolist() == np.argsort(tie_break(tied["id"]), kind="stable").tolist()
    first_30 = tied["label"].to_numpy()[order[:30]]
    assert len(set(first_30)) == 3 and (first_30[1:] != first_30[:-1]).sum() > 10      # classes mixed
    assert tie_break(["s1", "s2"]).tolist() == tie_break(np.array(["s1", "s2"])).tolist()
    # scores that all read 1.000 are ties too, even when one class sits a hair higher than the others
    near = tied.assign(noise_score=np.where(tied["label"] == tied["label"][0], 0.99990, 0.99960).astype(np.float32))
    first_30 = near["label"].to_numpy()[flagged_order(near)[:30]]
    assert len(set(first_30)) == 3 and (first_30[1:] != first_30[:-1]).sum() > 10
    below = near.assign(noise_score=np.where(near.index < 5, 0.9, 0.99960).astype(np.float32))
    assert set(flagged_order(below)[-5:]) == set(range(5))              # a real difference still sorts
    with pytest.raises(InputError, match="unknown score"):
        flagged_order(table, score="nonsense")


def test_bulk_changes_preview_what_a_bulk_decision_would_do(table):
    rows = flagged_order(table)
    ids = table["id"].to_numpy()[rows]
    changes, counts = bulk_changes(table, rows, "bad", {ids[0]: "bad", ids[1]: "kept"})
    assert set(changes) == set(ids[1:]) and set(changes.values()) == {"bad"}
    assert counts == {"shown": len(rows), "change": len(rows) - 1, "replace": 1, "same": 1, "no_suggestion": 0}
    assert describe_bulk(counts, "Mark bad").startswith(f"'Mark bad' would be recorded for {len(rows) - 1:,} of the "
                                                        f"{len(rows):,} samples in this view; 1 of them hold")
    same = table.assign(suggested_label=table["label"])                   # no other suggestion anywhere
    changes, counts = bulk_changes(same, rows, "accepted", {})
    assert changes == {} and counts["no_suggestion"] == len(rows)
    assert "are left out: their suggestion is their given label" in describe_bulk(counts, "Accept suggestion")


def test_duplicate_groups_keep_the_root_first_and_largest_groups_lead():
    from selector.ui.views import duplicate_groups, keep_one_per_group
    dup = np.array([-1, 0, -1, 2, 0, -1, 2, 0, 5])
    table = pd.DataFrame({"id": [f"s{i}" for i in range(9)], "duplicate_of": dup})
    groups = duplicate_groups(table)
    assert [g.tolist() for g in groups] == [[0, 1, 4, 7], [2, 3, 6], [5, 8]]
    assert duplicate_groups(table.assign(duplicate_of=-1)) == []
    assert keep_one_per_group(table, groups[:2], {"s3": "bad", "s1": "kept"}) == {"s1": "bad", "s4": "bad", "s7": "bad",
                                                                                "s6": "bad"}


def test_linear_probe_scores_subsets_on_the_same_held_out_rows():
    from selector.ui.subsets import probe_accuracy, probe_space
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
    wrong = np.where(y == 0, 1, y)                           # one probe, scored against several label sets
    half_unknown = np.where(y >= 3, -1, y)
    assert probe_accuracy(space, everything, y, [y, wrong, half_unknown], 6) == [
        probe_accuracy(space, everything, y, t, 6) for t in (y, wrong, half_unknown)]


def test_the_probe_space_normalises_a_large_memory_mapped_F_block_by_block(tmp_path):
    import tracemalloc

    from selector.linalg import l2_normalize, principal_axes
    from selector.ui.subsets import probe_space
    F = np.random.default_rng(6).normal(size=(60_000, 512)).astype(np.float32) * 3     # rows not unit length
    np.save(tmp_path / "F.npy", F)
    mapped = np.load(tmp_path / "F.npy", mmap_mode="r")
    tracemalloc.start()
    try:
        space = probe_space(mapped, dims=8, seed=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.75 * F.nbytes, peak                      # no (n, d) copy of F (123 MB here)
    Fn = l2_normalize(F)                                     # the same features as from a whole normalised copy
    rows = np.sort(np.random.default_rng(1).choice(len(F), 5000, replace=False))
    mean, axes = principal_axes(Fn[rows], 8)
    np.testing.assert_allclose(space.Z[:, :-1], (Fn - mean) @ axes, atol=1e-5)
    assert (space.Z[:, -1] == 1).all()


def test_a_large_subset_trains_the_probe_on_a_seeded_sample():
    from selector.ui.subsets import probe_accuracy, probe_space
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4), 300)
    X = (np.eye(4, 12)[y] * 3 + rng.normal(size=(1200, 12))).astype(np.float32)
    space = probe_space(X, dims=8, seed=0)
    mask = np.ones(1200, bool)
    capped = probe_accuracy(space, mask, y, y, 4, max_train=200)
    assert capped == probe_accuracy(space, mask, y, y, 4, max_train=200)            # seeded: the same sample
    assert capped > 0.8 and abs(capped - probe_accuracy(space, mask, y, y, 4)) < 0.1


def test_similarity_percentile_places_a_pair_among_the_nearest_pairs():
    from selector.ui.views import similarity_percentile
    ref = np.sort(np.linspace(0.96, 1.0, 101))                 # a tight encoder: every cosine reads 0.96-1.00
    assert similarity_percentile(ref, np.array([0.96, 0.98, 0.9999, 1.5])).tolist() == [0, 49, 99, 100]
    assert similarity_percentile(ref, np.array([0.5])).tolist() == [0]
    assert similarity_percentile(np.array([]), np.array([0.9, 0.1])).tolist() == [0, 0]


def test_kept_share_histogram_counts_classes_by_the_share_they_keep():
    from selector.ui.views import kept_share_histogram
    breakdown = pd.DataFrame({"class": ["a", "b", "c", "d", "e"], "before": [10, 10, 10, 4, 0],
                              "kept": [0, 5, 10, 1, 0]})
    breakdown["kept_pct"] = 100.0 * breakdown["kept"] / breakdown["before"].clip(lower=1)
    hist = kept_share_histogram(breakdown, bins=4)
    assert hist.index.tolist() == ["0-25%", "25-50%", "50-75%", "75-100%"]
    # a bin holds its lower edge (25% -> "25-50%"), the last one 100%; the empty class is left out
    assert hist["classes"].tolist() == [1, 1, 1, 1]
    breakdown.loc[3, "kept"], breakdown.loc[3, "kept_pct"] = 0, 0.0
    assert kept_share_histogram(breakdown, bins=4)["classes"].tolist() == [2, 0, 1, 1]
