"""What the engine writes: CSV that reads back exactly (quoting, a reversible formula guard), output paths that
fail before the run or leave the previous files intact (a full and a read-only tmpfs), permissions from the
umask, and uploads that expire."""
import io
import itertools
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selector.__main__ import main
from selector.files import atomic_save_npy, atomic_write_bytes, current_umask
from selector.writer import csv_escape, csv_unescape, runs_as_formula, table_bytes, write_table
from tests.synthetic import make_embeddings

TRICKY = ["=SUM(A1:A9)", "+1", "-2", "@cmd", "\t=1", "\r=1", "\uff1d1+1", "\uff0bx", "\uff0dx", "\uff20x",
          " =1", "  \uff1dx", "\n@x", "'=x", "''=x", "' =x", "'", "'plain", "=", "a\rb", "two\nlines", "cr\r\nlf",
          '"quoted"', "comma,inside", "", " ", "plain", "\u00fcn\u00efcode", "-", "a=b", "1e5", "007"]


def read_back(data: bytes) -> pd.DataFrame:
    """A CSV export as pandas reads it, with the formula guard undone (what load_manifest does)."""
    df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    df.columns = [csv_unescape(c) for c in df.columns]
    return df.map(csv_unescape)


def test_csv_round_trips_every_tricky_string():
    n = len(TRICKY)
    table = pd.DataFrame({"id": [f"s{k}" for k in range(n)], "path": [f"/img/{t}.png" for t in TRICKY],
                          "label": TRICKY, "=head": TRICKY[::-1], "score": np.linspace(-1, 1, n)})
    data = table_bytes(table, "csv")
    raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    assert len(raw) == n and list(raw.columns) == ["id", "path", "label", "'=head", "score"]  # CR/LF: one field
    for cell in itertools.chain(raw["label"], raw["path"], raw["'=head"]):
        assert not runs_as_formula(cell), repr(cell)       # nothing a spreadsheet would run
    back = read_back(data)
    assert back["label"].tolist() == TRICKY and back["path"].tolist() == table["path"].tolist()
    assert back["=head"].tolist() == TRICKY[::-1] and np.allclose(back["score"].astype(float), table["score"])
    assert raw["label"][TRICKY.index("'=x")] == "''=x" and raw["label"][TRICKY.index("'plain")] == "'plain"


def test_the_guard_is_exactly_reversible():
    alphabet = ["'", "=", " ", "\t", "\uff1d", "a", "-", "\r"]
    for length in range(5):
        for chars in itertools.product(alphabet, repeat=length):
            s = "".join(chars)
            assert csv_unescape(csv_escape(s)) == s and not runs_as_formula(csv_escape(s)), repr(s)


def test_the_apps_download_is_the_clis_file(tmp_path):
    """Both come from table_bytes: the Export page hands the browser table_bytes(shown, fmt)."""
    table = pd.DataFrame({"id": ["a", "b"], "label": ["'=x", "dog\rcat"], "selected": [True, False]})
    assert write_table(table, tmp_path / "t.csv").read_bytes() == table_bytes(table, "csv")
    page = (Path(__file__).parents[1] / "pages" / "5_Export.py").read_text()
    assert "table_bytes(shown, fmt)" in page and "to_csv" not in page


@contextmanager
def tmpfs(folder: Path, size: str = "1m"):
    """A small tmpfs mounted at folder (root with CAP_SYS_ADMIN only; skips with the reason elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); this fault test needs "
                    "root with CAP_SYS_ADMIN")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _run_args(tmp_path) -> list[str]:
    npz = make_embeddings(tmp_path / "emb.npz", n_per_class=60)
    return ["--source", "embeddings", "--path", str(npz), "--map", "none", "--cache-dir", str(tmp_path / "cache")]


@pytest.mark.faults
@pytest.mark.slow
def test_a_full_disk_leaves_the_previous_table_and_manifest(tmp_path, capsys):
    args = _run_args(tmp_path)
    assert main([*args, "--out", str(tmp_path / "first.csv")]) == 0
    need = (tmp_path / "first.csv").stat().st_size
    with tmpfs(tmp_path / "disk") as disk:
        (disk / "sel.csv").write_text("old table\n")
        (disk / "sel.manifest.json").write_text("{}\n")
        page = os.statvfs(disk).f_frsize
        free = os.statvfs(disk).f_bavail * page
        room = -(-need // page) * page          # exactly the table's pages: the manifest beside it cannot fit
        (disk / "filler").write_bytes(b"\0" * (free - room))
        assert os.statvfs(disk).f_bavail * page == room
        capsys.readouterr()
        assert main([*args, "--out", str(disk / "sel.csv")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: could not write") and "No space left on device" in err and "\n" not in err
        assert "unchanged" in err
        assert (disk / "sel.csv").read_text() == "old table\n" and (disk / "sel.manifest.json").read_text() == "{}\n"
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "sel.csv", "sel.manifest.json"]  # no tmp left
        (disk / "filler").unlink()
        assert main([*args, "--out", str(disk / "sel.csv")]) == 0   # space again: the same run writes
        assert (disk / "sel.csv").read_bytes() == (tmp_path / "first.csv").read_bytes()


@pytest.mark.faults
def test_a_read_only_folder_is_refused_before_the_run(tmp_path, capsys):
    args = _run_args(tmp_path)
    with tmpfs(tmp_path / "ro") as ro:
        (ro / "sel.csv").write_text("old\n")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        t0 = time.perf_counter()
        assert main([*args, "--out", str(ro / "sel.csv")]) == 2
        assert time.perf_counter() - t0 < 1.0
        err = capsys.readouterr().err
        assert "cannot write in the output folder" in err and "Read-only file system" in err
        assert (ro / "sel.csv").read_text() == "old\n" and not (tmp_path / "cache").exists()


def test_out_that_is_a_device_is_refused(tmp_path, capsys):
    """/dev/null exists but is no regular file: replacing it would be a disaster; it is refused."""
    args = _run_args(tmp_path)
    (tmp_path / "null.csv").symlink_to("/dev/null")
    assert main([*args, "--out", str(tmp_path / "null.csv")]) == 2
    assert "is not a regular file" in capsys.readouterr().err and Path("/dev/null").is_char_device()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        files = [atomic_write_bytes(tmp_path / "a.bin", b"x"), atomic_save_npy(tmp_path / "c.npy", np.ones(2)),
                 write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")]
    finally:
        os.umask(old)
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, (f.name, oct(f.stat().st_mode))


def test_uploads_older_than_their_age_are_removed(tmp_path, monkeypatch):
    from selector.ui import backend
    monkeypatch.setenv("SELECTOR_CACHE_DIR", str(tmp_path))
    fresh = Path(backend.save_upload("m.csv", b"path,label\n"))
    stale = Path(backend.save_upload("e.npz", b"PK old"))
    week = backend.UPLOAD_MAX_AGE_S
    os.utime(stale, (time.time() - week - 60,) * 2)
    os.utime(fresh, (time.time() - week + 3600,) * 2)
    (fresh.parent / "notes.txt").write_text("not an upload")
    assert backend.expire_uploads() == [stale]
    assert fresh.exists() and not stale.exists() and (fresh.parent / "notes.txt").exists()
    again = Path(backend.save_upload("m.csv", b"path,label\n"))   # uploading it again makes it young again
    assert again == fresh and time.time() - fresh.stat().st_mtime < 60
    os.utime(fresh, (time.time() - week - 60,) * 2)
    backend.save_upload("n.csv", b"other")                       # any upload expires the old ones
    assert not fresh.exists()


@pytest.mark.faults
def test_an_upload_to_a_full_disk_is_a_message(tmp_path, monkeypatch):
    from selector.errors import InputError
    from selector.ui import backend
    with tmpfs(tmp_path / "disk", size="64k") as disk:
        monkeypatch.setenv("SELECTOR_CACHE_DIR", str(disk))
        with pytest.raises(InputError, match=r"could not store the upload 'e.npz'.*No space left on device"):
            backend.save_upload("e.npz", b"PK" + bytes(200_000))
        assert list((disk / backend.UPLOAD_DIR).iterdir()) == []
