"""Export page (AppTest): the table shown is the one downloaded (subset, full table, decisions), with the
decision and corrected-label columns, formula-safe CSV and a run manifest with the selection settings."""
import io
import json

import numpy as np
import pandas as pd
import pytest

from selector.optimize import subset_size
from selector.selection import Selection, apply
from selector.ui import backend
from selector.writer import manifest_bytes, manifest_for, table_bytes
from tests.test_app_support import cache_env, goto, make_embeddings, new_app, started

PAGE = "pages/5_Export.py"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    with cache_env(tmp / "cache"):
        yield {"npz": make_embeddings(tmp / "emb.npz", seed=55)}


def test_without_a_run_the_page_points_home(env):
    at = goto(new_app(), PAGE)
    assert [i.value for i in at.info] == ["Run the pipeline on the Home page first."]


def test_views_and_download_buttons(env):
    at = goto(started(env["npz"]), PAGE)
    labels = [b.label for b in at.download_button]
    assert labels == ["Download CSV", "Download Parquet", "Download run manifest (JSON)"]
    subset = at.dataframe[0].value
    assert len(subset) == subset_size(240, 0.5) and subset["selected"].all()
    assert {"decision", "corrected_label", "noise_score", "alignment", "diversity"} <= set(subset.columns)
    at.radio(key="export_view").set_value("full").run()
    full = at.dataframe[0].value
    assert len(full) == 240 and full["selected"].sum() == len(subset)
    at.radio(key="export_view").set_value("decisions").run()
    assert len(at.dataframe[0].value) == 0


def test_decisions_reach_the_export(env):
    at = goto(started(env["npz"]), "pages/3_Label_issues.py")
    next(b for b in at.button if b.label == "Accept suggestion" and not b.disabled).click().run()
    assert not at.exception
    goto(at, PAGE)
    at.radio(key="export_view").set_value("decisions").run()
    decisions = at.dataframe[0].value
    assert len(decisions) == 1 and decisions["decision"].item() == "accepted"
    assert decisions["corrected_label"].item() == decisions["suggested_label"].item()
    at.radio(key="export_view").set_value("full").run()
    full = at.dataframe[0].value
    row = full[full["id"] == decisions["id"].item()].iloc[0]
    assert row["decision"] == "accepted" and row["corrected_label"] == row["suggested_label"]


def test_download_bytes_are_the_writers():
    """The page hands the browser table_bytes of the table shown: quoted, formula-guarded CSV; exact Parquet."""
    table = pd.DataFrame({"id": ["a", "b"], "label": ["=cmd()", "dog\rcat"], "score": np.array([0.5, 1.0], np.float32),
                          "selected": [True, False]})
    back = pd.read_csv(io.BytesIO(table_bytes(table, "csv")))
    assert back["label"].tolist() == ["'=cmd()", "dog\rcat"] and back["selected"].tolist() == [True, False]
    pq = pd.read_parquet(io.BytesIO(table_bytes(table, "parquet")))
    pd.testing.assert_frame_equal(pq, table)


def test_manifest_has_selection_and_counts(env):
    at = started(env["npz"])
    run = backend.find_run(at.session_state["run_key"])
    table = apply(run.result, Selection(ratio=0.5, decisions={run.table["id"][0]: "bad", run.table["id"][1]: "kept"}))
    blob = json.loads(manifest_bytes(manifest_for(run.result, Selection(ratio=0.5), table)))
    assert blob["selection"]["ratio"] == 0.5 and blob["counts"]["selected"] == 120
    assert blob["counts"]["decisions"] == 2 and blob["encoder"]["name"] == run.result.encoder_name
