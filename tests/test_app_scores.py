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


def focus_of(figs):
    (key,) = [k for k in figs if k.startswith("scores_focus")]
    return figs[key]


def test_every_score_has_a_histogram_with_cut_and_threshold(env):
    at = goto(started(env["npz"]), PAGE)
    figs = figures(at)
    # class quotas (the default): no single cut on the all-classes histogram, one per class on the box chart
    assert not annotations(figs["scores_hist_selection objective"])
    (cuts,) = [t for t in figs["scores_per_class"]["data"] if t["type"] == "scatter"]
    assert cuts["name"] == "lowest kept" and len(cuts["y"]) == 4
    for column in ("noise_score", "alignment", "diversity", "cleanliness", "knn_agreement"):
        assert f"scores_hist_{column}" in figs
    assert "flag threshold" in annotations(figs["scores_hist_noise_score"])
    assert [t["name"] for t in focus_of(figs)["data"]] == ["selected", "dropped"]
    (boxes,) = [t for t in figs["scores_per_class"]["data"] if t["type"] == "box"]
    assert len(boxes["x"]) == 4 and len(boxes["median"]) == 4                # one box a class, quartiles only
    at = goto(at, "pages/4_Selection.py")
    at.radio(key="sel_strategy").set_value("topk").run()
    at = goto(at, PAGE)
    (cuts,) = [t for t in figures(at)["scores_per_class"]["data"] if t["type"] == "scatter"]
    assert cuts["name"] == "selection cut"
    at = goto(at, "pages/4_Selection.py")
    at.toggle(key="sel_class_balance").set_value(False).run()
    at = goto(at, PAGE)                                    # one global quota: one global cut
    figs = figures(at)
    assert "selection cut" in annotations(figs["scores_hist_selection objective"])
    assert not [t for t in figs["scores_per_class"]["data"] if t["type"] == "scatter"]


def test_log_counts_and_a_picked_bar_opens_its_samples(env):
    at = goto(started(env["npz"]), PAGE)
    at.selectbox(key="scores_column").set_value("noise_score").run()
    assert focus_of(figures(at))["layout"]["yaxis"]["type"] == "linear"
    at.toggle(key="scores_log").set_value(True).run()
    figs = figures(at)
    assert focus_of(figs)["layout"]["yaxis"]["type"] == "log"
    assert figs["scores_hist_alignment"]["layout"]["yaxis"]["type"] == "log"
    # the last bar of dropped samples (trace 1): the most suspicious ones
    at.session_state["scores_bars"] = {"focus": "noise_score", "class": "All classes", "bars": [(1, 49)]}
    at.run()
    assert not at.exception
    (head,) = [h.value for h in at.subheader if h.value.startswith("Samples in the picked bar")]
    n = int(head.rsplit(" ", 1)[1].replace(",", ""))
    assert n > 0
    gallery = [img for img in at.image if len(img.captions) == min(n, 48)]
    assert gallery and all(float(c.rsplit("(", 1)[1].rstrip(")")) >= 0.9 for c in gallery[0].captions)
    at.button(key="scores_clear").click().run()
    assert not [h for h in at.subheader if h.value.startswith("Samples in the picked bar")]


def test_one_class_and_another_focus_score(env):
    at = goto(started(env["npz"]), PAGE)
    at.selectbox(key="scores_class").set_value("class_2")
    at.selectbox(key="scores_column").set_value("noise_score").run()
    assert not at.exception
    figs = figures(at)
    assert "class_2" in focus_of(figs)["layout"]["title"]["text"]
    assert "flag threshold" in annotations(focus_of(figs))
