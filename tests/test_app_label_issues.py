"""Label issues page (AppTest): flagged samples most suspicious first with neighbours, and the accept /
keep / mark-bad decisions that persist across pages and reloads (the cache folder's decisions database)."""
import pytest

from selector.decision_store import DecisionStore

from tests.test_app_support import cache_env, goto, make_embeddings, new_app, started

PAGE = "pages/3_Label_issues.py"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("issues")
    with cache_env(tmp / "cache") as cache:
        yield {"npz": make_embeddings(tmp / "emb.npz", seed=66), "cache": cache}


def buttons(at, label):
    return [b for b in at.button if b.label == label]


def test_without_a_run_the_page_points_home(env):
    at = goto(new_app(), PAGE)
    assert [i.value for i in at.info] == ["Run the pipeline on the Home page first."]


def test_gallery_lists_flagged_samples_with_neighbours(env):
    at = goto(started(env["npz"]), PAGE)
    assert buttons(at, "Accept suggestion") and buttons(at, "Keep label") and buttons(at, "Mark bad")
    shown = [m.value for m in at.markdown if m.value.startswith("**given:**")]
    assert 0 < len(shown) <= 10
    scores = [float(s.split("**noise score:** ")[1]) for s in shown]
    assert scores == sorted(scores, reverse=True)                      # most suspicious first
    neighbour_grids = [img for img in at.image if len(img.captions) == 6]
    assert len(neighbour_grids) == len(shown)                          # 6 neighbours per sample
    assert all("(" in c for c in neighbour_grids[0].captions)          # label (similarity)


def test_decisions_persist_across_pages_and_reloads(env):
    at = goto(started(env["npz"]), PAGE)
    first = buttons(at, "Accept suggestion")[0]
    sample_id = first.key.removeprefix("accepted_")
    first.click().run()
    buttons(at, "Mark bad")[1].click().run()
    assert not at.exception
    assert any(m.value == "**decision:** accepted" for m in at.markdown)
    store = DecisionStore.for_cache(env["cache"])
    (dataset,) = {e.dataset for e in store.events()}
    saved = store.current(dataset)
    assert saved[sample_id] == "accepted" and sorted(saved.values()) == ["accepted", "bad"]
    # another page and back
    goto(at, "pages/4_Selection.py")
    assert int(next(m.value for m in at.metric if m.label == "Decisions applied")) == 2
    goto(at, PAGE)
    at.radio(key="issues_show").set_value("decided").run()
    assert len([m for m in at.markdown if m.value.startswith("**decision:**")]) == 2
    # a reload is a new session: the decisions come back from disk
    again = goto(started(env["npz"]), PAGE)
    again.radio(key="issues_show").set_value("decided").run()
    assert len([m for m in again.markdown if m.value.startswith("**decision:**")]) == 2
    buttons(again, "Clear")[0].click().run()
    assert len(store.current(dataset)) == 1


def test_filter_by_class(env):
    at = goto(started(env["npz"]), PAGE)
    at.selectbox(key="issues_class").set_value("class_1").run()
    assert not at.exception
    givens = [m.value.split("**given:** ")[1].split(" (")[0] for m in at.markdown
              if m.value.startswith("**given:**")]
    assert all(g == "class_1" for g in givens)


def test_the_gallery_is_paged(env):
    at = goto(started(env["npz"]), PAGE)
    first = [b.key for b in buttons(at, "Keep label")]
    pager = at.number_input(key="issues_page")
    assert pager.label == "Page" and pager.value == 1 and pager.max >= 2
    pager.set_value(2).run()
    second = [b.key for b in buttons(at, "Keep label")]
    assert second and not set(first) & set(second)
    goto(at, "pages/2_Scores.py")
    goto(at, PAGE)                                  # filters and page survive a trip to another page
    assert at.number_input(key="issues_page").value == 2
    assert [b.key for b in buttons(at, "Keep label")] == second


def test_the_grid_decides_the_sample_in_focus_and_moves_on(env, tmp_path):
    """The grid's decision buttons (keys A/K/B in a browser) decide the sample in focus, one step each, and put
    the next one in focus; undo (U) reverts the step and brings its sample back; N turns the page."""
    with cache_env(tmp_path / "cache") as cache:         # no decisions yet
        _grid_walk(env["npz"], DecisionStore.for_cache(cache))


def _grid_walk(npz, store):
    at = goto(started(npz), PAGE)
    at.radio(key="issues_view").set_value("grid").run()
    assert not at.exception

    def cells():
        return [b for b in at.button if b.key.startswith("focus_")]

    def in_focus():
        return next(m.value for m in at.markdown if m.value.startswith("**In focus:"))

    first_page = [b.key for b in cells()]
    assert 1 < len(first_page) <= 40 and len(first_page) == len(set(first_page))
    assert in_focus().startswith("**In focus: 1 of ")
    at.button(key="grid_bad").click().run()
    assert not at.exception
    assert in_focus().startswith("**In focus: 2 of ")
    (dataset,) = {e.dataset for e in store.events()}
    first_id = store.events()[-1].sample
    assert store.current(dataset)[first_id] == "bad"
    assert store.last_batch(dataset, store.events()[-1].who).size == 1   # one step per key
    at.button(key="grid_kept").click().run()
    assert in_focus().startswith("**In focus: 3 of ")
    at.button(key="undo_last_step").click().run()       # the 'kept' step: its sample comes back into focus
    assert in_focus().startswith("**In focus: 2 of ")
    assert store.current(dataset).get(first_id) == "bad" and len(store.current(dataset)) == 1
    at.button(key="grid_prev").click().run()
    assert in_focus().startswith("**In focus: 1 of ")
    at.button(key="undo_last_step").click().run()
    assert first_id not in store.current(dataset)
    assert len(first_page) == 40 and at.number_input(key="issues_page").max >= 2
    at.button(key="grid_next_page").click().run()
    assert at.number_input(key="issues_page").value == 2
    assert in_focus().startswith("**In focus: 41 of ")
    assert not set(b.key for b in cells()) & set(first_page)
