"""Home page (AppTest): defaults, a real run with live progress and the dataset summary, the audit check
against injected noise, bad input shown inline (never a traceback), and the cache on a re-run."""
import pandas as pd
import pytest

from tests.test_app_support import cache_env, frame, goto, make_embeddings, new_app, run_embeddings


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("home")
    with cache_env(tmp / "cache"):
        yield {"tmp": tmp, "npz": make_embeddings(tmp / "emb.npz", seed=11)}


def test_first_screen_defaults_to_the_demo_with_noise_on(env):
    at = new_app()
    assert not at.exception
    assert at.selectbox(key="source").value == "demo"
    assert at.selectbox(key="encoder_demo").value == "demo"
    assert at.selectbox(key="noise_mode").value == "uniform" and at.slider(key="noise_rate").value == 0.2
    assert at.button(key="run").label == "Run"
    assert any("press Run" in i.value for i in at.info)


def test_run_shows_summary_encoder_and_audit_check(env):
    at = run_embeddings(new_app(), env["npz"])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Samples"] == "240" and metrics["Classes"] == "4"
    assert int(metrics["Flagged"]) > 0
    for name in ("Precision", "Recall", "F1", "AUROC"):
        assert 0.0 <= float(metrics[name]) <= 1.0
    assert float(metrics["AUROC"]) > 0.9                     # the planted flips are found
    assert "Injected flips in subset" in metrics
    (f1,) = [m for m in at.metric if m.label == "F1"]          # the help says what a perfect flag count reaches
    best, count = f1.help.split("would reach F1 ")[1].split()[:3:2]
    assert 0.5 < float(best) <= 1.0 and 0 < int(count.replace(",", "")) <= 240
    assert any("Scores produced by" in i.value and "precomputed" in i.value.lower() for i in at.info)
    (said,) = [c.value for c in at.caption if c.value.startswith("Label audit by")]
    assert said.startswith("Label audit by zero-shot class prompts, a cross-fitted classifier and neighbour votes")
    assert "Noise model: " in said and "% of the label errors are modelled as hesitant" in said
    summary = frame(at, "estimated_noise_rate")
    assert isinstance(summary, pd.DataFrame) and summary["n"].sum() == 240 and len(summary) == 4
    assert at.session_state["run_key"]
    # real progress: a status box with a bar, one line per finished engine stage, ending complete
    status = at.get("status")[0]
    assert status.label.startswith("Done: 240 samples") and status.state == "complete"
    stages = " ".join(str(c.value) for c in status if type(c).__name__ == "Markdown")
    for stage in ("embedding", "adapting", "neighbours", "scoring"):
        assert stage in stages
    # a second session asking for the same inputs shares the finished run: no engine stage runs again
    again = run_embeddings(new_app(), env["npz"])
    assert again.session_state["run_key"] == at.session_state["run_key"]
    from selector.ui import backend
    assert backend.find_run(again.session_state["run_key"]) is backend.find_run(at.session_state["run_key"])
    status = again.get("status")[0]
    assert status.state == "complete" and not [c for c in status if type(c).__name__ == "Markdown"]


@pytest.mark.parametrize("source,field,value,expect", [
    ("embeddings", "path", "/no/such/file.npz", "does not exist"),
    ("embeddings", "path", "", "needs a path"),
    ("image-folder", "path", "EMPTY_DIR", "Expected layout"),
    ("manifest", "path", "BAD_CSV", "lacks column"),
])
def test_bad_input_gives_an_inline_error_not_a_traceback(env, source, field, value, expect):
    tmp = env["tmp"]
    if value == "EMPTY_DIR":
        (tmp / "empty").mkdir(exist_ok=True)
        value = str(tmp / "empty")
    elif value == "BAD_CSV":
        (tmp / "bad.csv").write_text("filename,klass\na.png,cat\n")
        value = str(tmp / "bad.csv")
    at = new_app()
    at.selectbox(key="source").set_value(source).run()
    at.text_input(key=field).input(value)
    if source != "embeddings":
        at.text_input(key="clip_checkpoint").input("")
    at.button(key="run").click().run(timeout=60)
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and expect in at.error[0].value
    assert at.error[0].value.startswith("The run failed: ")
    assert "Traceback" not in at.error[0].value
    assert "run_key" not in at.session_state


def test_a_failed_run_clears_the_summary_of_the_previous_one(env):
    at = run_embeddings(new_app(), env["npz"])
    assert any(h.value == "Dataset summary" for h in at.header)
    at.text_input(key="path").input(str(env["tmp"] / "missing.npz"))
    at.button(key="run").click().run(timeout=60)
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("The run failed: ") and "does not exist" in error.value
    assert not any(h.value == "Dataset summary" for h in at.header) and not at.metric
    assert "run_key" not in at.session_state and "run" not in at.query_params
    at = goto(at, "pages/4_Selection.py")                 # no stale run on the other pages either
    assert any(i.value == "Run the pipeline on the Home page first." for i in at.info)


def test_noise_off_hides_the_audit_check(env):
    at = run_embeddings(new_app(), env["npz"], noise="none")
    labels = [m.label for m in at.metric]
    assert "Samples" in labels and "Precision" not in labels


def test_a_missing_encoder_checkpoint_is_an_inline_error(env):
    from PIL import Image
    root = env["tmp"] / "pets"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (40 * i, 100, 50)).save(root / c / f"{i}.png")
    at = new_app()
    at.selectbox(key="source").set_value("image-folder").run()
    assert at.selectbox(key="encoder_image-folder").value == "open_clip"
    at.text_input(key="path").input(str(root))
    at.text_input(key="clip_checkpoint").input(str(env["tmp"] / "missing.pt"))
    at.button(key="run").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "missing.pt" in at.error[0].value and "does not exist" in at.error[0].value


def test_image_only_embeddings_run_and_say_which_experts_ran(env):
    npz = make_embeddings(env["tmp"] / "image_only.npz", seed=13, text=False)
    at = run_embeddings(new_app(), npz)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Samples"] == "240" and float(metrics["AUROC"]) > 0.9
    (said,) = [c.value for c in at.caption if c.value.startswith("Label audit by")]
    assert said.startswith("Label audit by a cross-fitted classifier and neighbour votes") and "no text tower" in said
    for page in ("pages/1_Map.py", "pages/2_Scores.py", "pages/3_Label_issues.py", "pages/4_Selection.py",
                 "pages/5_Export.py"):
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, [e.value for e in at.error])


def test_an_uploaded_embeddings_file_runs(env):
    npz = make_embeddings(env["tmp"] / "upload.npz", seed=12, n_per_class=30, images=False)
    at = new_app()
    at.selectbox(key="source").set_value("embeddings").run()
    at.file_uploader(key="upload_npz").upload("mine.npz", npz.read_bytes()).run()
    at.selectbox(key="map").set_value("pca")
    at.button(key="run").click().run(timeout=120)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert {m.label: m.value for m in at.metric}["Samples"] == "120"
    assert list((env["tmp"] / "cache" / "uploads").glob("*.npz"))


def test_a_link_with_the_run_key_opens_the_run_on_any_page(env):
    """Reload, bookmark or a colleague's link: ?run=<key> re-opens the cached run on any page, even after the
    server restarted (the in-memory registry is empty, the run is read from the disk cache)."""
    from pathlib import Path
    from streamlit.testing.v1 import AppTest
    from selector.ui import backend
    ROOT = Path(__file__).resolve().parents[1]
    first = run_embeddings(new_app(), env["npz"])
    key = first.session_state["run_key"]
    assert first.query_params.get("run") in (key, [key])
    for restarted in (False, True):
        if restarted:
            backend.registry.clear()
        at = AppTest.from_file(str(ROOT / "pages" / "4_Selection.py"), default_timeout=60)
        at.query_params["run"] = key
        at.run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert not [i.value for i in at.info if "Run the pipeline" in i.value]
        assert {m.label for m in at.metric} >= {"Selected"}
        assert at.session_state["run_key"] == key
    stranger = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    stranger.query_params["run"] = "0123456789abcdef0123"
    stranger.run()
    stranger = goto(stranger, "pages/2_Scores.py")
    assert any("no record of" in w.value for w in stranger.warning)
    assert any("Run the pipeline on the Home page first." == i.value for i in stranger.info)


def test_encoder_names_are_checked_before_the_data_is_read(env):
    """The folder is empty (reading it would fail): the unknown model is what the page reports."""
    (env["tmp"] / "empty_too").mkdir(exist_ok=True)
    at = new_app()
    at.selectbox(key="source").set_value("image-folder").run()
    at.text_input(key="path").input(str(env["tmp"] / "empty_too"))
    at.text_input(key="clip_model").input("ViT-Nope")
    at.button(key="run").click().run(timeout=60)
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "Unknown open_clip model 'ViT-Nope'" in at.error[0].value


def test_a_session_waiting_for_anothers_run_sees_its_progress(env):
    """Two sessions ask for the same new run: one computes it, the other waits and is shown the same
    progress (not a blank box), then both get the one shared run."""
    import threading
    import time
    from selector.pipeline import Config
    from selector.ui import backend
    npz = make_embeddings(env["tmp"] / "shared_wait.npz", seed=14)
    spec = backend.RunSpec(source="embeddings", path=str(npz), encoder="precomputed", config=Config(map="pca"))
    seen_a, seen_b, runs = [], [], {}

    def slow(stage, done, total):               # the computing session's callback, slowed so B must wait
        seen_a.append((stage, done, total))
        time.sleep(0.3)

    a = threading.Thread(target=lambda: runs.setdefault("a", backend.run_pipeline(spec, progress=slow)))
    a.start()
    deadline = time.time() + 30
    while not seen_a and time.time() < deadline:
        time.sleep(0.05)
    runs["b"] = backend.run_pipeline(spec, progress=lambda *p: seen_b.append(p))
    a.join(timeout=60)
    assert runs["a"] is runs["b"]
    assert seen_b and set(seen_b) <= set(seen_a)          # B was shown A's own progress while it waited
    assert not backend.registry().progress                # nothing left behind once the run is done


def test_an_image_folder_runs_offline_with_the_encoder_learned_from_its_images(env):
    from tests.test_offline import CLASSES, _image
    import numpy as np
    root = env["tmp"] / "patterns"
    rng = np.random.default_rng(3)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(15):
            _image(kind, rng).save(root / kind / f"{i}.png")
    at = new_app()
    at.selectbox(key="source").set_value("image-folder").run()
    from selector.encoders import ENCODERS
    assert ENCODERS.label("offline") in at.selectbox(key="encoder_image-folder").options
    at.selectbox(key="encoder_image-folder").set_value("offline").run()
    assert any("without their labels" in c.value for c in at.caption)       # the choice says what it is
    at.text_input(key="path").input(str(root))
    at.selectbox(key="noise_mode").set_value("none")
    at.selectbox(key="map").set_value("pca")
    at.button(key="run").click().run(timeout=180)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Scores produced by" in i.value and "offline encoder" in i.value and "no labels" in i.value
               for i in at.info)
    (said,) = [c.value for c in at.caption if c.value.startswith("Label audit by")]
    assert "no text tower" in said
