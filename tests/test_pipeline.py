"""The pipeline end to end on precomputed embeddings with a known answer (planted label flips)."""
import json

import numpy as np
import pandas as pd
import pytest

from selector import pipeline
from selector.data import load_embeddings
from selector.embed import PrecomputedEncoder
from selector.errors import InputError


def make_embeddings(path, *, n_per_class=120, n_classes=4, d=32, seed=0):
    """Gaussian class clusters around class text vectors: a dataset whose clean labels are known."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n_classes, d)).astype(np.float32)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    images = text[labels] + 0.6 * rng.normal(size=(len(labels), d)).astype(np.float32)
    names = np.array([f"class_{c}" for c in range(n_classes)])
    np.savez(path, image_embeddings=images, labels=labels, class_names=names, text_embeddings=text)
    return path


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    dataset = load_embeddings(make_embeddings(tmp / "emb.npz"))
    config = pipeline.Config(map="pca", noise_mode="uniform", noise_rate=0.2, noise_seed=1)
    return pipeline.run(dataset, PrecomputedEncoder(), config, cache_dir=tmp / "cache")


def test_table_has_every_column_and_one_row_per_sample(result):
    assert list(result.table.columns[: len(pipeline.TABLE_COLUMNS)]) == list(pipeline.TABLE_COLUMNS)
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
    table = pipeline.with_selection(result, ratio=ratio, weights={"alignment": 1, "diversity": 0.1},
                                    exclude_flagged=ratio < 0.7)
    assert table["selected"].sum() == round(ratio * len(table))
    if ratio < 0.7:
        assert not (table["selected"] & table["flagged"]).any()


def test_keep_and_never_lists_are_honoured(result):
    ids = result.table["id"].tolist()
    table = pipeline.with_selection(result, ratio=0.2, weights={"alignment": 1}, keep=ids[:3], never=ids[3:6])
    assert table.loc[:2, "selected"].all() and not table.loc[3:5, "selected"].any()
    as_array = pipeline.with_selection(result, ratio=0.2, weights={"alignment": 1}, keep=np.array(ids[:3]))
    assert as_array.loc[:2, "selected"].all()
    with pytest.raises(InputError, match="not in the dataset"):
        pipeline.with_selection(result, ratio=0.2, weights={"alignment": 1}, keep=["no-such-id"])


def test_export_writes_the_table_and_a_manifest(result, tmp_path):
    table = pipeline.with_selection(result, ratio=0.5, weights={"alignment": 1})
    table_path, manifest_path = pipeline.export(table, tmp_path / "out.csv", result.manifest, selection={"ratio": 0.5})
    back = pd.read_csv(table_path)
    assert len(back) == len(table) and back["selected"].sum() == table["selected"].sum()
    manifest = json.loads(manifest_path.read_text())
    assert manifest["selection"] == {"ratio": 0.5}
    assert manifest["counts"]["selected"] == 240 and manifest["config"]["noise_rate"] == 0.2
    with pytest.raises(InputError, match=".csv or .parquet"):
        pipeline.export(table, tmp_path / "out.xlsx", result.manifest)


def test_load_or_run_reuses_the_cached_result(tmp_path):
    dataset = load_embeddings(make_embeddings(tmp_path / "emb.npz", n_per_class=40))
    config = pipeline.Config(map="pca")
    first = pipeline.load_or_run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "c")
    second = pipeline.load_or_run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "c")
    pd.testing.assert_frame_equal(first.table, second.table)
    np.testing.assert_array_equal(first.neighbors[1], second.neighbors[1])
    assert second.timings == first.timings  # loaded, not recomputed
    # a damaged cache is rebuilt, not used
    folder = next((tmp_path / "c" / "results").iterdir())
    (folder / "arrays.npz").write_bytes(b"garbage")
    third = pipeline.load_or_run(dataset, PrecomputedEncoder(), config, cache_dir=tmp_path / "c")
    pd.testing.assert_frame_equal(first.table, third.table)


def test_config_rejects_bad_settings():
    with pytest.raises(InputError, match="noise_rate"):
        pipeline.Config(noise_mode="uniform", noise_rate=1.5).validate()
    with pytest.raises(InputError, match="map must be one of"):
        pipeline.Config(map="tsne").validate()
