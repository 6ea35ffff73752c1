"""Selection page (AppTest): every slider move re-selects at once, counts per class and the random-subset
comparison follow, impossible settings give an inline error, settings survive page switches, and two
sessions never share sliders."""
import numpy as np
import pytest

from selector.optimize import subset_size
from tests.test_app_support import cache_env, frame, goto, make_embeddings, new_app, started

PAGE = "pages/4_Selection.py"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("selection")
    with cache_env(tmp / "cache"):
        yield {"npz": make_embeddings(tmp / "emb.npz", seed=44)}


def selected(at):
    return int(next(m.value for m in at.metric if m.label == "Selected").replace(",", ""))


def test_without_a_run_the_page_points_home(env):
    at = goto(new_app(), PAGE)
    assert [i.value for i in at.info] == ["Run the pipeline on the Home page first."]


def test_ratio_slider_changes_the_subset_and_its_tables(env):
    at = goto(started(env["npz"]), PAGE)
    assert at.slider(key="sel_ratio").label == "Selection ratio"
    assert selected(at) == subset_size(240, 0.5)
    at.slider(key="sel_ratio").set_value(0.25).run()
    assert not at.exception and selected(at) == subset_size(240, 0.25)
    breakdown = frame(at, "kept")
    assert breakdown["kept"].sum() == subset_size(240, 0.25) and breakdown["before"].sum() == 240
    assert (breakdown["kept"] + breakdown["dropped"] == breakdown["before"]).all()
    flagged_in = int(next(m.value for m in at.metric if m.label == "Flagged in subset"))
    assert flagged_in == 0                                   # exclude flagged is on by default
    comparison = frame(at, "random subset")
    assert comparison.columns.tolist() == ["metric", "subset", "random subset"]
    sizes = comparison.loc[comparison["metric"] == "samples"]
    assert sizes["subset"].item() == sizes["random subset"].item() == subset_size(240, 0.25)
    assert np.isfinite(comparison.loc[comparison["metric"].str.contains("distance"), "subset"]).all()


def test_toggles_weights_and_strategy(env):
    at = goto(started(env["npz"]), PAGE)
    at.toggle(key="sel_class_balance").set_value(True)
    at.radio(key="sel_strategy").set_value("stratified").run()
    breakdown = frame(at, "kept")
    assert breakdown["kept"].max() - breakdown["kept"].min() <= 1
    at.toggle(key="sel_exclude_flagged").set_value(False)
    at.slider(key="sel_ratio").set_value(1.0).run()
    assert selected(at) == 240
    for key in ("sel_alignment", "sel_diversity", "sel_cleanliness"):
        at.slider(key=key).set_value(0.0)
    at.run()
    assert not at.exception and len(at.error) == 1 and "weights" in at.error[0].value


def test_impossible_ratio_is_an_inline_error(env):
    at = goto(started(env["npz"]), PAGE)
    at.slider(key="sel_ratio").set_value(1.0).run()     # flagged samples are excluded: 100% cannot be met
    assert not at.exception and len(at.error) == 1


def test_settings_survive_page_switches(env):
    at = goto(started(env["npz"]), PAGE)
    at.slider(key="sel_ratio").set_value(0.3).run()
    goto(at, "pages/5_Export.py")
    goto(at, PAGE)
    assert at.slider(key="sel_ratio").value == 0.3 and selected(at) == subset_size(240, 0.3)


def test_sessions_are_independent(env):
    a = goto(started(env["npz"]), PAGE)
    b = goto(started(env["npz"]), PAGE)
    a.slider(key="sel_ratio").set_value(0.1).run()
    b.run()
    assert b.slider(key="sel_ratio").value == 0.5 and selected(b) == subset_size(240, 0.5)
    assert selected(a) == subset_size(240, 0.1)


def test_correction_toggle_warning_and_probe_accuracy(env):
    at = goto(started(env["npz"]), PAGE)
    comparison = frame(at, "random subset")
    probe = comparison[comparison["metric"].str.startswith("linear-probe accuracy")]
    assert len(probe) == 2 and "true labels" in probe["metric"].iloc[1]     # the demo noise was injected
    assert ((probe[["subset", "random subset"]] > 0) & (probe[["subset", "random subset"]] <= 1)).all().all()
    assert any("linear probe" in c.value and " ms" in c.value for c in at.caption)
    corrected = lambda: int(next(m.value for m in at.metric if m.label == "Corrected in subset"))  # noqa: E731
    assert corrected() == 0 and not at.warning
    at.toggle(key="sel_correct_flagged").set_value(True).run()
    assert not at.exception and corrected() > 0
    assert any("suggested label" in w.value for w in at.warning)
    at.toggle(key="sel_correct_flagged").set_value(False)
    at.toggle(key="sel_exclude_flagged").set_value(False).run()
    flagged_in = int(next(m.value for m in at.metric if m.label == "Flagged in subset"))
    assert flagged_in > 0 and any(f"holds {flagged_in:,} flagged" in w.value for w in at.warning)


def test_a_run_prefetches_the_comparison_spaces_and_each_derived_value_is_computed_once(env):
    import threading
    import time

    from selector.ui import backend
    started(env["npz"])
    run = next(iter(backend.registry().runs.values()))
    deadline = time.monotonic() + 30
    while not {"coverage_space", "probe_space"} <= set(run._derived) and time.monotonic() < deadline:
        time.sleep(0.05)                                   # computed in the background while Home shows the run
    assert {"coverage_space", "probe_space"} <= set(run._derived)

    calls, release = [], threading.Event()

    def slow():
        calls.append(1)
        release.wait(10)
        return "slow"

    waiters = [threading.Thread(target=run.derived, args=("slow", slow)) for _ in range(3)]
    for t in waiters:
        t.start()
    assert run.derived("other", lambda: 42) == 42          # not held up by another value's computation
    release.set()
    for t in waiters:
        t.join(10)
    assert calls == [1] and run.derived("slow", slow) == "slow"


def test_the_next_server_reads_the_comparison_spaces_back_instead_of_computing_them(tmp_path, monkeypatch):
    import time

    from selector import results
    from selector.ui import backend, subsets

    def prefetched():
        run = next(iter(backend.registry().runs.values()))
        deadline = time.monotonic() + 30
        while not {"coverage_space", "probe_space"} <= set(run._derived) and time.monotonic() < deadline:
            time.sleep(0.05)
        return run

    npz = make_embeddings(tmp_path / "emb.npz", seed=46)
    with cache_env(tmp_path / "cache"):
        started(npz)
        first = prefetched()
        views = results.folder(first.cache_dir, first.key) / results.VIEWS
        assert {p.name for p in views.iterdir()} >= {"coverage_space.npz", "coverage_space.json",
                                                      "probe_space.npz", "probe_space.json"}
        backend.registry.clear()                                   # a new server process: nothing in memory

        def never(*args, **kwargs):
            raise AssertionError("computed again")
        monkeypatch.setattr(subsets, "coverage_space", never)
        monkeypatch.setattr(subsets, "probe_space", never)
        at = goto(started(npz), PAGE)
        second = prefetched()
        assert second is not first
        np.testing.assert_array_equal(backend.coverage_space(second).Z, backend.coverage_space(first).Z)
        np.testing.assert_array_equal(backend.probe_space(second).Z, backend.probe_space(first).Z)
        assert frame(at, "random subset") is not None and not at.exception


def test_with_many_classes_the_chart_counts_classes_by_the_share_they_keep(env, tmp_path):
    from selector.ui.views import BAR_CLASSES
    npz = make_embeddings(tmp_path / "many.npz", n_per_class=6, n_classes=BAR_CLASSES + 5, seed=45)
    at = goto(started(npz), PAGE)
    at.slider(key="sel_ratio").set_value(0.5).run()
    assert not at.exception
    assert len(frame(at, "kept")) == BAR_CLASSES + 5                  # the table still lists every class
    assert any("classes: each bar counts the classes" in c.value for c in at.caption)
