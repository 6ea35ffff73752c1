"""Map page (AppTest): a WebGL scatter of every sample carrying its row, colour choices, and the samples
picked on the map opening in a detail panel and a paged gallery."""
import json

import pytest

from tests.test_app_support import cache_env, goto, make_embeddings, new_app, started

PAGE = "pages/1_Map.py"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("map")
    with cache_env(tmp / "cache"):
        yield {"npz": make_embeddings(tmp / "emb.npz", seed=22)}


def figure(at):
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def test_without_a_run_the_page_points_home(env):
    at = goto(new_app(), PAGE)
    assert [i.value for i in at.info] == ["Run the pipeline on the Home page first."]


def test_scatter_draws_every_sample_and_recolours(env):
    at = goto(started(env["npz"]), PAGE)
    fig = figure(at)
    assert {t["type"] for t in fig["data"]} == {"scattergl"}
    assert len(fig["data"]) == 4                                  # one trace per class when coloured by label
    options = at.selectbox(key="map_colour").options
    assert {"label", "flagged", "selected", "noise_injected", "noise_score", "alignment"} <= set(options)
    for colour in ("flagged", "selected", "noise_score"):
        at.selectbox(key="map_colour").set_value(colour).run()
        assert not at.exception
        traces = figure(at)["data"]
        assert len(traces) == (1 if colour == "noise_score" else 2)


def test_picked_points_open_in_the_detail_panel_and_gallery(env):
    at = goto(started(env["npz"]), PAGE)
    assert not any(s.value.startswith("Picked on the map") for s in at.subheader)
    at.session_state["map_rows"] = [5, 17, 42]
    at.run()
    assert not at.exception
    assert any(s.value == "Picked on the map: 3 samples" for s in at.subheader)
    assert any("row 5" in c for img in at.image for c in img.captions)
    gallery = [img for img in at.image if len(img.captions) == 3]
    assert gallery and gallery[0].captions[0].startswith("#5 ")
    at.button(key="map_clear").click().run()
    assert not any(s.value.startswith("Picked on the map") for s in at.subheader)
