"""Scores page (AppTest): a histogram of every score split into selected/dropped, the flag threshold and
the selection cut drawn on, overall and for one class, plus a per-class view."""
import json

import pytest

from tests.test_app_support import cache_env, goto, make_embeddings, new_app, started

PAGE = "pages/2_Scores.py"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scores")
    with cache_env(tmp / "cache"):
        yield {"npz": make_embeddings(tmp / "emb.npz", seed=33)}


def figures(at):
    return {c.key: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def annotations(fig):
    return [a.get("text") for a in fig["layout"].get("annotations", [])]


def test_without_a_run_the_page_points_home(env):
    at = goto(new_app(), PAGE)
    assert [i.value for i in at.info] == ["Run the pipeline on the Home page first."]


def test_every_score_has_a_histogram_with_cut_and_threshold(env):
    at = goto(started(env["npz"]), "pages/4_Selection.py")
    assert not annotations(figures(goto(at, PAGE))["scores_hist_selection objective"])  # stratified: no single cut
    at = goto(at, "pages/4_Selection.py")
    at.radio(key="sel_strategy").set_value("topk").run()
    at = goto(at, PAGE)
    figs = figures(at)
    for column in ("noise_score", "alignment", "diversity", "cleanliness", "knn_agreement"):
        assert f"scores_hist_{column}" in figs
    assert "flag threshold" in annotations(figs["scores_hist_noise_score"])
    assert "selection cut" in annotations(figs["scores_hist_selection objective"])
    focus = figs["scores_focus"]
    assert [t["name"] for t in focus["data"]] == ["selected", "dropped"]
    assert len(figs["scores_per_class"]["data"]) == 4


def test_one_class_and_another_focus_score(env):
    at = goto(started(env["npz"]), PAGE)
    at.selectbox(key="scores_class").set_value("class_2")
    at.selectbox(key="scores_column").set_value("noise_score").run()
    assert not at.exception
    figs = figures(at)
    assert "class_2" in figs["scores_focus"]["layout"]["title"]["text"]
    assert "flag threshold" in annotations(figs["scores_focus"])
