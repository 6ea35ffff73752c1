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
