"""Label decisions in the app (AppTest): two sessions on one dataset see each other's decisions on their next
rerun and never overwrite them; the reviewer's name, a sample's history and "Undo my last step"; a damaged or
read-only decisions database gives an inline error with the cause and the fix, and loses nothing."""
import pytest

from selector.decision_store import DecisionStore
from tests.test_app_support import cache_env, goto, make_embeddings, started
from tests.test_decisions import read_only_folder

PAGE = "pages/3_Label_issues.py"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app_decisions")
    with cache_env(tmp / "cache") as cache:
        yield {"npz": make_embeddings(tmp / "emb.npz", seed=67), "cache": cache}


def reviewer(at):
    return next(t for t in at.text_input if t.label == "Reviewer name")


def buttons(at, label):
    return [b for b in at.button if b.label == label]


def shown_decisions(at) -> dict[str, str]:
    """{sample id: decision} of the samples on the page, read from their containers."""
    out = {}
    for b in at.button:
        if b.key and b.key.startswith("clear_"):
            out[b.key.removeprefix("clear_")] = None
    for sid in list(out):
        out[sid] = next(d for d in ("accepted", "kept", "bad") if at.button(key=f"{d}_{sid}").disabled)
    return out


def the_table_run():
    from selector.ui import backend
    (run,) = backend.registry().runs.values()
    return run


def the_table():
    return the_table_run().table


def stored(cache) -> dict[str, str]:
    store = DecisionStore.for_cache(cache)
    datasets = {e.dataset for e in store.events()}
    assert len(datasets) <= 1
    return store.current(datasets.pop()) if datasets else {}


def test_two_sessions_see_each_others_decisions_and_never_overwrite_them(env):
    a = goto(started(env["npz"]), PAGE)
    b = goto(started(env["npz"]), PAGE)
    reviewer(a).input("ann").run()
    ids = [k.key.removeprefix("bad_") for k in buttons(a, "Mark bad")]
    assert ids == [k.key.removeprefix("bad_") for k in buttons(b, "Mark bad")]          # the same page
    x, y = ids[0], ids[1]
    a.button(key=f"kept_{x}").click().run()             # A decides x
    b.button(key=f"bad_{y}").click().run()              # B, whose page was drawn before that, decides y
    assert not a.exception and not b.exception
    assert shown_decisions(b) == {x: "kept", y: "bad"}  # B sees A's decision on this rerun
    assert stored(env["cache"]) == {x: "kept", y: "bad"}
    a.run()
    assert shown_decisions(a) == {x: "kept", y: "bad"}  # and A sees B's on its next one
    # who made each decision, in the sample's history
    history = {c.value for c in a.caption if c.value.startswith("History: ")}
    assert any(h.startswith("History: kept by ann, ") for h in history)
    assert any(h.startswith("History: bad by session-") for h in history)
    # B changes its mind on x; A's stale page then undoes its own last step: B's newer decision stays
    b.button(key=f"accepted_{x}").click().run()
    reviewer(a).input("ann").run()     # the name is kept for the session
    undo = a.button(key="undo_last_step")
    assert undo.label.startswith("Undo my last step (1 decision(s), ") and not undo.disabled
    undo.click().run()
    assert any("1 changed by someone since" in s.value for s in a.success)
    assert stored(env["cache"]) == {x: "accepted", y: "bad"}
    assert a.button(key="undo_last_step").disabled      # nothing of ann's left to undo
    # B undoes its last step (accepting x): x is back to A's decision
    b.button(key="undo_last_step").click().run()
    assert stored(env["cache"]) == {x: "kept", y: "bad"} and shown_decisions(b) == {x: "kept", y: "bad"}
    b.button(key=f"clear_{x}").click().run()
    b.button(key=f"clear_{y}").click().run()
    assert stored(env["cache"]) == {}
    whos = {e.who for e in DecisionStore.for_cache(env["cache"]).events()}
    assert "ann" in whos and len(whos) == 2                                           # ann and B's session id


def test_the_reviewer_name_survives_a_page_switch(env):
    at = goto(started(env["npz"]), PAGE)
    reviewer(at).input("bea").run()
    goto(at, "pages/4_Selection.py")
    goto(at, PAGE)
    assert reviewer(at).value == "bea"
    sid = buttons(at, "Keep label")[0].key.removeprefix("kept_")
    at.button(key=f"kept_{sid}").click().run()
    assert DecisionStore.for_cache(env["cache"]).events()[-1].who == "bea"
    at.button(key=f"clear_{sid}").click().run()


def test_decisions_of_an_earlier_version_are_imported_when_the_database_is_opened(tmp_path):
    import json
    from selector import decision_store
    npz = make_embeddings(tmp_path / "emb.npz", seed=70)
    with cache_env(tmp_path / "cache") as cache:
        at = goto(started(npz), PAGE)
        first, second = [b.key.removeprefix("bad_") for b in buttons(at, "Mark bad")][:2]
        old = cache / "decisions" / f"{the_table_run().fingerprint}.json"
        old.write_text(json.dumps({"version": 1, "fingerprint": old.stem, "decisions": {first: "bad", second: "kept"}}))
        decision_store._READY.clear()                      # a restarted server opens the database anew
        at.run()
        assert shown_decisions(at) == {first: "bad", second: "kept"}
        assert any(c.value.startswith("History: bad by migration, ") and c.value.endswith("(imported)")
                   for c in at.caption)
        assert not old.exists() and old.with_name(old.name + ".migrated").exists()


@pytest.mark.faults
def test_a_damaged_database_is_an_inline_error_and_is_left_as_it_is(tmp_path):
    npz = make_embeddings(tmp_path / "emb.npz", seed=68)
    with cache_env(tmp_path / "cache") as cache:
        at = goto(started(npz), PAGE)
        sid = buttons(at, "Mark bad")[0].key.removeprefix("bad_")
        at.button(key=f"bad_{sid}").click().run()
        db = cache / "decisions" / "decisions.db"
        db.write_bytes(b"this is not an SQLite file" * 400)
        damaged = db.read_bytes()
        at.run()
        assert not at.exception
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "is damaged" in errors[0] and "Move it aside" in errors[0], errors
        assert shown_decisions(at) == {sid: "bad"}                    # what this session last read
        other = buttons(at, "Keep label")[1].key.removeprefix("kept_")
        at.button(key=f"kept_{other}").click().run()
        assert not at.exception and any(e.value.startswith("Not saved: ") for e in at.error)
        assert db.read_bytes() == damaged                             # nothing written over it, nothing deleted
        goto(at, "pages/5_Export.py")                                 # other pages say it too, and still work
        assert any("is damaged" in e.value for e in at.error)


@pytest.mark.faults
def test_a_read_only_database_still_shows_its_decisions_and_says_why_new_ones_are_not_saved(tmp_path):
    npz = make_embeddings(tmp_path / "emb.npz", seed=69)
    with read_only_folder(tmp_path / "cache" / "decisions") as (lock, unlock), cache_env(tmp_path / "cache") as cache:
        at = goto(started(npz), PAGE)
        sid = buttons(at, "Mark bad")[0].key.removeprefix("bad_")
        at.button(key=f"bad_{sid}").click().run()
        lock()
        at.run()                                                      # its next rerun reads it read-only
        assert not at.exception and shown_decisions(at) == {sid: "bad"}
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and errors[0].startswith("Label decisions cannot be saved: cannot write the "
                                                         "decisions database") and "writable" in errors[0], errors
        other = buttons(at, "Keep label")[1].key.removeprefix("kept_")
        at.button(key=f"kept_{other}").click().run()
        assert not at.exception and any(e.value.startswith("Not saved: ") for e in at.error)
        assert shown_decisions(at) == {sid: "bad"}
        unlock()
        assert stored(cache) == {sid: "bad"}




def view_size(at) -> int:
    (box,) = [e for e in at.expander if e.label.startswith("Decide all ")]
    return int(box.label.split()[2].replace(",", ""))


def test_a_bulk_decision_acts_on_the_filtered_view_in_one_undoable_step(env):
    at = goto(started(env["npz"]), PAGE)
    table = the_table()
    at.selectbox(key="issues_class").set_value("class_1").run()
    n = view_size(at)
    expected = table.loc[table["flagged"] & (table["label"] == "class_1"), "id"].astype(str)
    assert n == len(expected) > 10                                         # more than one page
    at.radio(key="bulk_decision").set_value("bad").run()
    assert any(c.value.startswith(f"'Mark bad' would be recorded for {n:,} of the {n:,} samples in this view")
               for c in at.caption)                                        # the preview, before anything is written
    assert stored(env["cache"]) == {}
    at.button(key="bulk_apply").click().run()
    assert not at.exception and any(s.value.startswith(f"Applied: {n:,} decisions in one step") for s in at.success)
    assert stored(env["cache"]) == {i: "bad" for i in expected}
    assert len({e.batch for e in DecisionStore.for_cache(env["cache"]).events() if e.kind == "decided"}) >= 1
    assert at.button(key="undo_last_step").label.startswith(f"Undo my last step ({n:,} decision(s), ")
    at.button(key="undo_last_step").click().run()
    assert stored(env["cache"]) == {}                                      # one step back undoes all of them
    assert any(s.value.startswith(f"Undone: {n:,} decision(s) restored") for s in at.success)


def test_a_bulk_decision_from_a_stale_view_leaves_newer_decisions_alone(env):
    a = goto(started(env["npz"]), PAGE)
    b = goto(started(env["npz"]), PAGE)
    for at in (a, b):
        at.selectbox(key="issues_class").set_value("class_2").run()
        at.radio(key="bulk_decision").set_value("kept").run()
    first = buttons(a, "Mark bad")[0].key.removeprefix("bad_")
    a.button(key=f"bad_{first}").click().run()                            # A decides one sample of the view
    n = view_size(b)
    b.button(key="bulk_apply").click().run()                              # B's preview predates it
    assert any("1 sample(s) had been decided by someone else meanwhile" in w.value for w in b.warning)
    saved = stored(env["cache"])
    assert saved[first] == "bad" and sum(v == "kept" for v in saved.values()) == n - 1
    b.button(key="undo_last_step").click().run()
    a.button(key=f"clear_{first}").click().run()
    assert stored(env["cache"]) == {}


def test_the_view_sorts_by_any_score_within_a_score_range(env):
    at = goto(started(env["npz"]), PAGE)
    table = the_table()
    at.selectbox(key="issues_score").set_value("alignment").run()
    at.radio(key="issues_order").set_value("low").run()
    values = [float(m.value.split("**alignment (SAS):** ")[1]) for m in at.markdown
              if "**alignment (SAS):** " in m.value]
    assert len(values) == 10 and values == sorted(values)
    flagged = table.loc[table["flagged"], "alignment"]
    assert values[0] == pytest.approx(flagged.min(), abs=1e-4)
    total = view_size(at)
    middle = float(flagged.median())
    at.slider(key="issues_range_alignment").set_value((middle, float(flagged.max()))).run()
    assert not at.exception
    values = [float(m.value.split("**alignment (SAS):** ")[1]) for m in at.markdown
              if "**alignment (SAS):** " in m.value]
    assert values and min(values) >= middle - 1e-4 and view_size(at) < total
    assert view_size(at) == int(((flagged >= middle) & (flagged <= flagged.max())).sum())
    at.selectbox(key="issues_suggested").set_value("class_0").run()
    givens = [m.value for m in at.markdown if m.value.startswith("**given:**")]
    assert all("**suggested:** class_0 " in g for g in givens)
