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


def test_every_sample_is_in_the_image_and_under_the_hover_trace(env):
    at = goto(started(env["npz"]), PAGE)
    fig = figure(at)
    assert {t["type"] for t in fig["data"]} == {"scattergl"}
    (samples,) = [t for t in fig["data"] if t.get("customdata") is not None]
    assert samples["customdata"]["shape"] == "240, 4"           # every row (240 < MAX_MAP_POINTS), 4 fields
    legend = [t["name"] for t in fig["data"] if t.get("customdata") is None]
    assert len(legend) == 4                                       # one legend entry per class, coloured by label
    (image,) = fig["layout"]["images"]
    assert image["source"].startswith("data:image/png;base64,")
    options = at.selectbox(key="map_colour").options
    assert {"label", "flagged", "selected", "noise_injected", "noise_score", "alignment"} <= set(options)
    sources = {image["source"]}
    for colour in ("flagged", "selected", "noise_score"):
        at.selectbox(key="map_colour").set_value(colour).run()
        assert not at.exception
        fig = figure(at)
        keys = [t for t in fig["data"] if t.get("customdata") is None]
        assert len(keys) == (1 if colour == "noise_score" else 2)    # a colour bar, or two legend entries
        sources.add(fig["layout"]["images"][0]["source"])
    assert len(sources) == 4                                      # each colouring draws its own image


def test_picked_points_open_in_the_detail_panel_and_gallery(env):
    at = goto(started(env["npz"]), PAGE)
    assert not any(s.value.startswith("Picked on the map") for s in at.subheader)
    at.session_state["map_rows"] = [5, 17, 42]
    at.run()
    assert not at.exception
    assert any(s.value == "Picked on the map: 3 samples" for s in at.subheader)
    gallery = [img for img in at.image if len(img.captions) == 3]
    assert gallery and gallery[0].captions[0].startswith("#5 ")
    top = int(gallery[0].captions[0].split()[0][1:])                  # the gallery is most suspicious first
    assert any(m.value.startswith(f"**Most suspicious picked sample** (row {top})") for m in at.markdown)
    at.button(key="map_clear").click().run()
    assert not any(s.value.startswith("Picked on the map") for s in at.subheader)


def test_picked_samples_can_be_decided_listed_and_exported(env):
    at = goto(started(env["npz"]), PAGE)
    at.session_state["map_rows"] = [5, 17, 42]
    at.run()
    (download,) = [d for d in at.get("download_button") if "Export these 3" in d.proto.label]
    at.radio(key="map_bulk_decision").set_value("bad").run()
    assert at.button(key="map_bulk_apply").label == "Apply 'Mark bad' to 3 samples"
    at.button(key="map_bulk_apply").click().run()
    assert not at.exception
    assert at.button(key="map_bulk_apply").disabled                       # all three are bad now
    at.button(key="map_keep").click().run()
    assert any("keeps 3 and never selects 0" in c.value for c in at.caption)
    at.button(key="map_never").click().run()
    assert any("keeps 0 and never selects 3" in c.value for c in at.caption)


def test_a_clicked_point_opens_in_a_card_beside_the_map_and_is_decided_there(env):
    at = goto(started(env["npz"]), PAGE)
    at.session_state["map_rows"] = [100]                # what a click on one point leaves
    at.run()
    assert any(m.value.startswith("**Clicked sample** (row 100)") for m in at.markdown)
    (card,) = [m.value for m in at.markdown if m.value.startswith("**given**")]
    assert "**suggested**" in card and "**noise score**" in card and "**decision** none" in card
    sample_id = next(img.captions[0] for img in at.image if len(img.captions) == 1)
    at.button(key="map_card_bad").click().run()
    assert not at.exception
    assert any("**decision** bad" in m.value for m in at.markdown)
    assert at.button(key="map_card_bad").disabled
    from selector.decision_store import DecisionStore
    from selector.ui.backend import cache_dir
    store = DecisionStore.for_cache(cache_dir())
    assert store.events()[-1].sample == sample_id and store.events()[-1].decision == "bad"
    at.button(key="map_card_clear").click().run()
    assert any("**decision** none" in m.value for m in at.markdown)
