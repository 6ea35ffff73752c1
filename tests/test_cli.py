"""The headless CLI: a real run on an embeddings file, a reviewer's decisions applied, the console command,
and one-line errors on bad input, raised before any work is done."""
import json
import subprocess
import time
import sys
from pathlib import Path

import pandas as pd

from selector.__main__ import main
from tests.synthetic import make_embeddings


def test_cli_writes_table_and_manifest(tmp_path, capsys):
    npz = make_embeddings(tmp_path / "emb.npz", n_per_class=50)
    out = tmp_path / "sel.csv"
    code = main(["--source", "embeddings", "--path", str(npz), "--ratio", "0.3", "--map", "pca",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])  # class balance is the default
    assert code == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert table["selected"].sum() == 60
    assert table.groupby("label")["selected"].sum().tolist() == [15, 15, 15, 15]
    assert table.columns[-3:].tolist() == ["selected", "decision", "corrected_label"]
    manifest = json.loads((tmp_path / "sel.manifest.json").read_text())
    assert manifest["selection"]["strategy"] == "stratified" and manifest["counts"]["selected"] == 60
    assert manifest["audit"]["experts"] == ["zero_shot", "cross_fit", "knn"]
    assert manifest["audit"]["class_embeddings"] == "text prompts"
    assert "60 selected" in capsys.readouterr().out


def _noisy_run(tmp_path, mode: str, *, text: bool = True) -> tuple[pd.DataFrame, dict]:
    """The CLI on 320 synthetic rows with 20% planted flips of `mode`: (the written table, its manifest)."""
    npz = make_embeddings(tmp_path / "emb.npz", n_per_class=80, text=text)
    out = tmp_path / "sel.csv"
    code = main(["--source", "embeddings", "--path", str(npz), "--map", "pca", "--noise-mode", mode,
                 "--noise-rate", "0.2", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0
    return pd.read_csv(out, keep_default_na=False), json.loads((tmp_path / "sel.manifest.json").read_text())


def test_cli_audits_image_only_embeddings(tmp_path):
    """An .npz without text_embeddings (an encoder with no text tower): the audit runs on its label-based
    experts, class prototypes stand in for the prompts, and the manifest says so."""
    table, manifest = _noisy_run(tmp_path, "uniform", text=False)
    planted, flagged = table["noise_injected"].astype(bool), table["flagged"].astype(bool)
    assert planted.sum() == 64 and (flagged & planted).sum() >= 0.8 * planted.sum()
    assert (flagged & ~planted).sum() <= 0.2 * planted.sum()
    audit = manifest["audit"]
    assert audit["experts"] == ["cross_fit", "knn"] and set(audit["pool_weights"]) == {"cross_fit", "knn"}
    assert audit["class_embeddings"].startswith("image prototypes")


def test_cli_plants_instance_dependent_noise(tmp_path):
    """--noise-mode instance: the flips land where the encoder hesitates, and the audit still finds them."""
    table, manifest = _noisy_run(tmp_path, "instance")
    planted, flagged = table["noise_injected"].astype(bool), table["flagged"].astype(bool)
    assert planted.sum() == 64 and (table.loc[planted, "label"] != table.loc[planted, "original_label"]).all()
    assert (flagged & planted).sum() >= 0.5 * planted.sum()
    assert manifest["config"]["noise_mode"] == "instance"


def test_cli_applies_a_decisions_file_and_id_lists(tmp_path):
    npz = make_embeddings(tmp_path / "emb.npz", n_per_class=30)
    args = ["--source", "embeddings", "--path", str(npz), "--map", "none", "--cache-dir", str(tmp_path / "c")]
    assert main([*args, "--out", str(tmp_path / "plain.csv")]) == 0
    plain = pd.read_csv(tmp_path / "plain.csv", keep_default_na=False)
    chosen = plain.loc[plain["selected"], "id"].tolist()
    pd.DataFrame({"id": chosen[:2], "decision": ["bad", "kept"]}).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "never.txt").write_text(chosen[2] + "\n")
    assert main([*args, "--decisions", str(tmp_path / "d.csv"), "--never", str(tmp_path / "never.txt"),
                 "--out", str(tmp_path / "reviewed.csv")]) == 0
    reviewed = pd.read_csv(tmp_path / "reviewed.csv", keep_default_na=False).set_index("id")
    assert reviewed.loc[chosen[0], "decision"] == "bad" and not reviewed.loc[chosen[0], "selected"]
    assert reviewed.loc[chosen[1], "decision"] == "kept" and not reviewed.loc[chosen[2], "selected"]
    assert reviewed["selected"].sum() == plain["selected"].sum()


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    code = main(["--source", "embeddings", "--path", str(tmp_path / "missing.npz"), "--cache-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "does not exist" in err and "\n" not in err
    npz = make_embeddings(tmp_path / "emb.npz", n_per_class=10)
    base = ["--source", "embeddings", "--path", str(npz), "--map", "none", "--cache-dir", str(tmp_path / "c")]
    for bad, expect in ((["--ratio", "1.5"], "ratio"), (["--weights", "alignment"], "name=number"),
                        (["--seed", "-1"], "seed"), (["--noise-rate", "0.2"], "needs a noise mode"),
                        (["--out", str(tmp_path / "x.xlsx")], ".csv or .parquet"),
                        (["--decisions", str(tmp_path / "none.json")], "does not exist"),
                        (["--ray-workers", "2"], "need --ray")):
        assert main([*base, *bad]) == 2, bad
        assert expect in capsys.readouterr().err
    assert not (tmp_path / "c").exists()          # every one of them was refused before any work was done


def test_console_command_is_installed():
    exe = Path(sys.executable).with_name("selector")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "--source" in out.stdout and "--decisions" in out.stdout


def _refused(argv, capsys) -> tuple[str, float]:
    """The one-line error and the seconds main(argv) took to exit 2 (argparse errors included)."""
    t0 = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as exc:            # argparse: a wrong type or choice
        code = exc.code
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert err.startswith("error:") and "\n" not in err, err
    return err, seconds


def test_every_setting_is_checked_before_the_demo_would_load(tmp_path, capsys):
    """The demo would load 60,000 images and train its encoder for minutes: each bad setting exits 2 at once."""
    (tmp_path / "ids.txt").write_text("a\n")
    base = ["--source", "demo", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o.csv")]
    cases = [
        (["--ratio", "0"], "ratio"), (["--ratio", "nan"], "ratio"), (["--ratio", "x"], "invalid float value"),
        (["--weights", "alignment"], "name=number"), (["--weights", "alignment=x"], "name=number"),
        (["--weights", "beauty=1"], "beauty"), (["--weights", "alignment=-1"], "alignment"),
        (["--weights", "alignment=0,diversity=0,cleanliness=0"], "weight"),
        (["--seed", "-1"], "seed"), (["--seed", "1.5"], "invalid int value"), (["--k", "1"], "k "),
        (["--batch-size", "0"], "batch_size"), (["--noise-seed", "-2"], "noise_seed"),
        (["--noise-mode", "none", "--noise-rate", "0.2"], "--noise-rate needs a noise mode"),
        (["--noise-mode", "none", "--noise-seed", "3"], "--noise-seed needs a noise mode"),
        (["--noise-rate", "1.5"], "noise_rate"), (["--noise-mode", "loud"], "invalid choice"),
        (["--strategy", "best"], "invalid choice"), (["--map", "tsne"], "invalid choice"),
        (["--split", "val"], "invalid choice"), (["--source", "web"], "invalid choice"),
        (["--ray-workers", "2"], "need --ray"), (["--ray", "--ray-workers", "0"], "--ray-workers"),
        (["--ray", "--ray-gpus-per-worker", "-1"], "--ray-gpus-per-worker"),
        (["--keep", str(tmp_path / "none.txt")], "cannot read the id list"),
        (["--decisions", str(tmp_path / "none.json")], "does not exist"),
        (["--out", str(tmp_path / "o.xlsx")], ".csv or .parquet"),
        (["--out", str(tmp_path)], "is a folder"), (["--out", str(tmp_path / "dir.csv")], "is a folder"),
        (["--out", str(tmp_path / "missing" / "o.csv")], "does not exist"),
        (["--out", str(tmp_path / "ids.csv"), "--never", str(tmp_path / "ids.csv")], "is the input file"),
        (["--encoder", "precomputed"], "cannot embed the demo source"),
        (["--bogus"], "unrecognized arguments"),
    ]
    (tmp_path / "ids.csv").write_text("a\n")
    (tmp_path / "dir.csv").mkdir()
    slowest = 0.0
    for bad, expect in cases:
        err, seconds = _refused([*base, *bad], capsys)
        assert expect in err, (bad, err)
        slowest = max(slowest, seconds)
    assert slowest < 1.0, slowest
    assert not (tmp_path / "c").exists() and (tmp_path / "ids.csv").read_text() == "a\n"


def test_sources_and_encoders_are_checked_before_any_data_is_read(tmp_path, capsys):
    """An empty image folder would be refused when read: these errors come first, so nothing was read."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "m.csv").write_text("path,label\na.png,cat\n")
    base = ["--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o.csv")]
    folder = ["--source", "image-folder", "--path", str(tmp_path / "imgs"), *base]
    for bad, expect in (
            (["--source", "image-folder", *base], "needs a path"),
            (["--source", "image-folder", "--path", str(tmp_path / "nope"), *base], "does not exist"),
            (["--source", "manifest", "--path", str(tmp_path / "m.csv"), "--root", str(tmp_path / "nope"), *base],
             "image root"),
            (["--source", "manifest", "--path", str(tmp_path / "m.csv"), *base[:2], "--out", str(tmp_path / "m.csv")],
             "is the input file"),
            ([*folder, "--encoder", "demo"], "the demo encoder cannot embed the image-folder source"),
            ([*folder, "--model", "ViT-Nope"], "Unknown open_clip model 'ViT-Nope'"),
            ([*folder, "--pretrained", "nope"], "Unknown pretrained tag 'nope'"),
            ([*folder, "--checkpoint", str(tmp_path / "w.pt")], "w.pt does not exist")):
        err, _ = _refused(bad, capsys)
        assert expect in err, (bad, err)
    assert (tmp_path / "m.csv").read_text() == "path,label\na.png,cat\n" and not (tmp_path / "c").exists()


_REFUSE_ALL = """
import contextlib, io, sys, time
from selector.__main__ import main
slowest = 0.0
for bad in (["--ratio", "0"], ["--weights", "beauty=1"], ["--seed", "-1"], ["--noise-seed", "3", "--noise-mode", "none"],
            ["--out", sys.argv[1]], ["--encoder", "precomputed"], ["--ray", "--ray-workers", "0"]):
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["--source", "demo", "--cache-dir", sys.argv[1] + "/c", *bad]) == 2, bad
    slowest = max(slowest, time.perf_counter() - t0)
print(slowest, "torch" in sys.modules, "open_clip" in sys.modules)
"""


def test_refusals_in_a_fresh_process_load_no_model_library(tmp_path):
    """In a process of its own (no earlier test imported anything): each refusal takes milliseconds and not even
    torch or open_clip was imported."""
    out = subprocess.run([sys.executable, "-c", _REFUSE_ALL, str(tmp_path)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[1]).stdout.split()
    assert float(out[0]) < 0.5 and out[1:] == ["False", "False"], out
    assert not (tmp_path / "c").exists()


def test_cli_warns_about_suspects_and_corrects_confident_flags(tmp_path, capsys):
    npz = make_embeddings(tmp_path / "emb.npz", n_per_class=50)
    args = ["--source", "embeddings", "--path", str(npz), "--map", "none", "--cache-dir", str(tmp_path / "c"),
            "--noise-mode", "uniform", "--noise-rate", "0.2", "--ratio", "0.5"]
    assert main([*args, "--no-exclude-flagged", "--out", str(tmp_path / "open.csv")]) == 0
    err = capsys.readouterr().err
    manifest = json.loads((tmp_path / "open.manifest.json").read_text())
    table = pd.read_csv(tmp_path / "open.csv", keep_default_na=False)
    held = int((table["selected"] & table["flagged"]).sum())
    assert 0 < held <= table["selected"].sum() * table["flagged"].mean()
    assert f"warning: The subset holds {held} flagged" in err and manifest["warnings"][0] in err
    assert main([*args, "--correct-flagged", "--out", str(tmp_path / "fixed.csv")]) == 0
    fixed = pd.read_csv(tmp_path / "fixed.csv", keep_default_na=False)
    relabelled = fixed["corrected_label"] != fixed["label"]
    manifest = json.loads((tmp_path / "fixed.manifest.json").read_text())
    assert manifest["selection"]["correct_flagged"] is True
    assert 0 < relabelled.sum() == manifest["counts"]["relabelled"] and relabelled[fixed["selected"]].any()
    assert (fixed.loc[relabelled, "corrected_label"] == fixed.loc[relabelled, "suggested_label"]).all()
    assert (fixed.loc[relabelled, "corrected_label"] == fixed.loc[relabelled, "original_label"]).mean() >= 0.9
    assert "suggested label" in capsys.readouterr().err
