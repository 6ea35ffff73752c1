"""The pipeline end to end on precomputed embeddings with a known answer (planted label flips)."""
import json

import numpy as np
import pandas as pd
import pytest

from selector import Selection, apply, export, pipeline
from selector.encoders.precomputed import PrecomputedEncoder
from selector.errors import InputError
from selector.sources import load_embeddings
from selector.table import TABLE_COLUMNS
from tests.synthetic import make_embeddings


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    dataset = load_embeddings(make_embeddings(tmp / "emb.npz"))
    config = pipeline.Config(map="pca", noise_mode="uniform", noise_rate=0.2, noise_seed=1)
    return pipeline.run(dataset, PrecomputedEncoder(), config, cache_dir=tmp / "cache")


def test_table_has_every_column_and_one_row_per_sample(result):
    assert list(result.table.columns) == [*TABLE_COLUMNS, "original_label", "noise_injected"]
    assert len(result.table) == len(result.dataset) == 480
    assert result.table["id"].is_unique
    numeric = result.table[["noise_score", "alignment", "diversity", "alignment_norm", "diversity_norm", "map_x"]]
    assert np.isfinite(numeric.to_numpy(dtype=float)).all()
    assert result.table["alignment_norm"].between(0, 1).all() and result.table["diversity_norm"].between(0, 1).all()


def test_injected_flips_are_found(result):
    truth = result.table["noise_injected"].to_numpy()
    assert truth.sum() == round(0.2 * 480)
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(truth, result.table["noise_score"]) > 0.95
    flagged = result.table["flagged"].to_numpy()
    precision = (flagged & truth).sum() / max(flagged.sum(), 1)
    recall = (flagged & truth).sum() / truth.sum()
    assert precision > 0.8 and recall > 0.8
    # where a flip was caught, the suggestion names the original class
    caught = flagged & truth
    assert (result.table.loc[caught, "suggested_label"] == result.table.loc[caught, "original_label"]).mean() > 0.9


@pytest.mark.parametrize("ratio", [0.1, 0.37, 0.5, 1.0])
def test_selection_has_exactly_the_requested_size(result, ratio):
    table = apply(result, Selection(ratio=ratio, weights={"alignment": 1, "diversity": 0.1},
                                    exclude_flagged=ratio < 0.7))
    assert table["selected"].sum() == round(ratio * len(table))
    if ratio < 0.7:
        assert not (table["selected"] & table["flagged"]).any()


def test_keep_and_never_lists_are_honoured(result):
    ids = result.table["id"].tolist()
    table = apply(result, Selection(ratio=0.2, weights={"alignment": 1}, keep=ids[:3], never=ids[3:6]))
    assert table.loc[:2, "selected"].all() and not table.loc[3:5, "selected"].any()
    as_array = apply(result, Selection(ratio=0.2, weights={"alignment": 1}, keep=np.array(ids[:3])))
    assert as_array.loc[:2, "selected"].all()
    with pytest.raises(InputError, match="not in the dataset"):
        apply(result, Selection(ratio=0.2, weights={"alignment": 1}, keep=["no-such-id"]))


def test_export_writes_the_table_and_a_manifest(result, tmp_path):
    selection = Selection(ratio=0.5, weights={"alignment": 1})
    written = export(result, selection, tmp_path / "out.csv")
    back = pd.read_csv(written.table_path)
    assert len(back) == len(result.table) and back["selected"].sum() == 240
    manifest = json.loads(written.manifest_path.read_text())
    assert manifest["selection"] == json.loads(json.dumps(selection.as_dict()))
    assert manifest["counts"]["selected"] == 240 and manifest["config"]["noise_rate"] == 0.2
    assert manifest["counts"]["decisions"] == 0 and manifest == json.loads(json.dumps(written.manifest))
    assert manifest["neighbors"]["recall_at_10"] == 1.0 and manifest["neighbors"]["index"].endswith("flat")
    subset = export(result, selection, tmp_path / "subset.parquet", selected_only=True)
    assert len(pd.read_parquet(subset.table_path)) == 240
    with pytest.raises(InputError, match=".csv or .parquet"):
        export(result, selection, tmp_path / "out.xlsx")


def test_load_or_run_reuses_the_cached_result(tmp_path):
    npz = make_embeddings(tmp_path / "emb.npz", n_per_class=40)
    dataset = load_embeddings(npz)
    config = pipeline.Config(map="pca")
    first = pipeline.load_or_run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "c")
    reopened = load_embeddings(npz)                       # as a new process opens it
    second = pipeline.load_or_run(reopened, PrecomputedEncoder(), config, cache_dir=tmp_path / "c")
    pd.testing.assert_frame_equal(first.table, second.table)
    np.testing.assert_array_equal(first.neighbors[1], second.neighbors[1])
    assert second.timings == first.timings  # loaded, not recomputed
    assert not second.X.loaded and not reopened.embeddings.loaded       # the frozen embeddings: read on first use
    np.testing.assert_array_equal(second.T, first.T)
    np.testing.assert_allclose(np.asarray(second.X), first.X, atol=1e-6)
    assert second.X[3] @ second.X[3] == pytest.approx(1.0, abs=1e-5)     # unit rows, as every stage used them
    # a damaged cache is rebuilt, not used
    folder = next((tmp_path / "c" / "results").iterdir())
    (folder / "arrays.npz").write_bytes(b"garbage")
    third = pipeline.load_or_run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "c")
    pd.testing.assert_frame_equal(first.table, third.table)


def test_in_memory_pixels_are_exported_with_where_they_came_from(tmp_path):
    from selector.dataset import ORIGIN, build_dataset
    base = load_embeddings(make_embeddings(tmp_path / "emb.npz", n_per_class=30))
    n = len(base)
    origin = [f"/data/images.idx#{k}" for k in range(n)]
    dataset = build_dataset("pixels", base.table["id"].tolist(), [""] * n, base.table["label"].tolist(),
                            class_names=base.class_names, extra={ORIGIN: origin},
                            pixels=np.zeros((n, 8, 8), np.uint8), embeddings=base.embeddings,
                            text_embeddings=base.text_embeddings)
    config = pipeline.Config(map="pca")
    first = pipeline.load_or_run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "c")
    again = pipeline.load_or_run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "c")   # from the cache
    assert again.timings == first.timings
    assert first.table["path"].tolist() == again.table["path"].tolist() == origin
    out = export(again, Selection(), tmp_path / "out.csv").table_path
    assert pd.read_csv(out, keep_default_na=False)["path"].tolist() == origin


def test_config_rejects_bad_settings():
    with pytest.raises(InputError, match="noise_rate"):
        pipeline.Config(noise_mode="uniform", noise_rate=1.5).validate()
    with pytest.raises(InputError, match="unknown map 'tsne'; choose one of: umap, pca, none"):
        pipeline.Config(map="tsne")
    with pytest.raises(InputError, match="seed"):
        pipeline.Config(seed=-1)


def test_a_run_that_would_not_fit_in_memory_stops_before_adapting(tmp_path, monkeypatch):
    """The memory estimate is checked once the embeddings are in: with less memory available than the stages
    need, the run stops at once with a message that says how much and what to change, and nothing is cached."""
    import selector.runtime as runtime
    dataset = load_embeddings(make_embeddings(tmp_path / "emb.npz"))
    need = sum(pipeline.memory_needed_gb(len(dataset), 32, len(dataset.class_names), "umap").values())
    assert 1.0 < need < 1.1                       # small runs need about the 1 GB of working memory
    monkeypatch.setattr(runtime, "available_memory_gb", lambda: 0.5)
    with pytest.raises(InputError, match=r"needs about 1\.\d GB of memory.*0\.5 GB are available.*--map none"):
        pipeline.load_or_run(dataset, PrecomputedEncoder(), pipeline.Config(map="umap"), cache_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "results").exists() or not any((tmp_path / "c" / "results").iterdir())
    monkeypatch.setattr(runtime, "available_memory_gb", lambda: None)      # unknown: the run goes ahead
    assert len(pipeline.run(dataset, PrecomputedEncoder(), pipeline.Config(map="pca"), cache_dir=tmp_path / "c").table)


def test_a_killed_run_resumes_after_its_last_finished_stage(tmp_path, monkeypatch):
    """A run stopped while scoring keeps its adapted embeddings and kNN on disk; the rerun reads them instead
    of computing them again (adapters and the kNN index refuse to run), gives the same table, says which
    stages it resumed, and removes the checkpoints once the result is cached. A damaged checkpoint is
    recomputed, not used."""
    import selector.adapt as adapt
    import selector.neighbors as neighbors
    dataset = load_embeddings(make_embeddings(tmp_path / "emb.npz"))
    config = pipeline.Config(map="pca", noise_mode="uniform", noise_rate=0.2)
    whole = pipeline.run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "ref")

    class Killed(Exception):
        pass

    def kill_when_scoring(stage, done, total):
        if stage == "scoring":
            raise Killed
    with pytest.raises(Killed):
        pipeline.load_or_run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "c", progress=kill_when_scoring)
    stages = list((tmp_path / "c" / "results").glob("*.stages"))
    assert len(stages) == 1 and (stages[0] / "neighbors.json").exists()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished stage was computed again")

    class NoGlobalKnn(neighbors.Neighbors):          # the within-class L2 searches of the scores still run
        def __init__(self, X, *, metric="cosine", **kwargs):
            if metric == "cosine":
                refuse()
            super().__init__(X, metric=metric, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(adapt.Adapters, "fit", refuse)
        m.setattr(neighbors, "Neighbors", NoGlobalKnn)
        resumed = pipeline.load_or_run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "c")
    assert resumed.manifest["resumed_stages"] == ["adapt", "neighbors"]
    pd.testing.assert_frame_equal(resumed.table, whole.table)
    assert not stages[0].exists()

    with pytest.raises(Killed):                      # a flipped byte in a checkpoint: that stage runs again
        pipeline.load_or_run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "d", progress=kill_when_scoring)
    ckpt = next((tmp_path / "d" / "results").glob("*.stages")) / "neighbors.I.npy"
    raw = bytearray(ckpt.read_bytes())
    raw[-3] ^= 0xFF
    ckpt.write_bytes(bytes(raw))
    again = pipeline.load_or_run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "d")
    assert again.manifest["resumed_stages"] == ["adapt"]
    pd.testing.assert_frame_equal(again.table, whole.table)


def _with_embeddings(tmp_path, name, change):
    z = dict(np.load(make_embeddings(tmp_path / "base.npz")))
    z["image_embeddings"] = change(z["image_embeddings"], z["labels"]).astype(np.float32)
    np.savez(tmp_path / f"{name}.npz", **z)
    return load_embeddings(tmp_path / f"{name}.npz")


def test_degenerate_embeddings_are_scored_or_refused_by_one_rule(tmp_path):
    """Rows are scaled to unit norm first: 1e30 or 1e-20 times the embeddings gives the same scores. An
    all-zero row is no embedding (skipped, like an unreadable image); one repeated image per class still
    runs; embeddings that all point the same way are refused with the reason."""
    config = pipeline.Config(map="pca", noise_mode="uniform", noise_rate=0.2)
    run = lambda data: pipeline.run(data, PrecomputedEncoder(), config, cache_dir=tmp_path / "c")  # noqa: E731
    plain = run(_with_embeddings(tmp_path, "plain", lambda X, y: X))
    for scale in (1e30, 1e-20):
        scaled = run(_with_embeddings(tmp_path, f"x{scale:g}", lambda X, y: X * scale))
        np.testing.assert_allclose(scaled.table["noise_score"], plain.table["noise_score"], atol=1e-4)
        np.testing.assert_allclose(scaled.table["alignment"], plain.table["alignment"], atol=1e-4)
        assert (scaled.table["flagged"] == plain.table["flagged"]).mean() > 0.99

    def zero_rows(X, y):
        X = X.copy()
        X[[3, 50]] = 0
        return X
    some_zero = run(_with_embeddings(tmp_path, "zero_rows", zero_rows))
    assert len(some_zero.table) == len(plain.table) - 2
    assert some_zero.manifest["inputs"]["skipped_unreadable"] == ["zero_rows/00003", "zero_rows/00050"]
    one_each = run(_with_embeddings(tmp_path, "one_each", lambda X, y: X[[np.flatnonzero(y == c)[0] for c in y]]))
    assert np.isfinite(one_each.table[["noise_score", "alignment", "diversity"]].to_numpy(float)).all()
    with pytest.raises(InputError, match="480 all zeros"):
        run(_with_embeddings(tmp_path, "zeros", lambda X, y: np.zeros_like(X)))
    with pytest.raises(InputError, match="point the same way"):
        run(_with_embeddings(tmp_path, "same", lambda X, y: X[:1] * np.arange(1, len(X) + 1)[:, None]))


def test_an_approximate_neighbour_graph_reports_its_recall_against_exact_search(tmp_path, monkeypatch):
    import selector.neighbors
    monkeypatch.setattr(selector.neighbors, "CPU_EXACT_LIMIT", 100)    # 480 rows: an inverted-file index
    dataset = load_embeddings(make_embeddings(tmp_path / "emb.npz"))
    result = pipeline.run(dataset, PrecomputedEncoder(), pipeline.Config(map="pca"), cache_dir=tmp_path / "cache")
    info = result.manifest["neighbors"]
    assert info["index"].endswith("ivf") and info["recall_queries"] == 480 and info["tuning_queries"] == 480
    from selector.exact import graph_recall, inverse_norms
    recall, _ = graph_recall(result.F, result.neighbors[1], scale=inverse_norms(result.F), queries=480)
    assert info["recall_at_10"] == pytest.approx(recall, abs=1e-4) and 0.5 < recall <= 1.0
