"""The headless CLI: a real run on an embeddings file, a reviewer's decisions applied, the console command,
and one-line errors on bad input, raised before any work is done."""
import json
import subprocess
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
    assert "60 selected" in capsys.readouterr().out


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
