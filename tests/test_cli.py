"""The headless CLI: a real run on an embeddings file, and one-line errors on bad input."""
import pandas as pd

from selector.__main__ import main
from tests.test_pipeline import make_embeddings


def test_cli_writes_table_and_manifest(tmp_path, capsys):
    npz = make_embeddings(tmp_path / "emb.npz", n_per_class=50)
    out = tmp_path / "sel.csv"
    code = main(["--source", "embeddings", "--path", str(npz), "--ratio", "0.3", "--map", "pca",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])  # class balance is the default
    assert code == 0
    table = pd.read_csv(out)
    assert table["selected"].sum() == 60
    assert table.groupby("label")["selected"].sum().tolist() == [15, 15, 15, 15]
    assert (tmp_path / "sel.manifest.json").exists()
    assert "60 selected" in capsys.readouterr().out


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    code = main(["--source", "embeddings", "--path", str(tmp_path / "missing.npz"), "--cache-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "does not exist" in err and "\n" not in err
    npz = make_embeddings(tmp_path / "emb.npz", n_per_class=10)
    assert main(["--source", "embeddings", "--path", str(npz), "--ratio", "1.5", "--map", "none",
                 "--cache-dir", str(tmp_path / "c")]) == 2
    assert "ratio" in capsys.readouterr().err
    assert main(["--source", "embeddings", "--path", str(npz), "--weights", "alignment", "--map", "none",
                 "--cache-dir", str(tmp_path / "c")]) == 2
