"""Label decisions in the SQLite store: the audit trail, one-step undo, the one-time import of the JSON files
of earlier versions, reading a reviewer's file (CLI), and faults: two OS processes writing at once, kill -9
while writing, a damaged database and a read-only one."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from selector.decision_store import DB_NAME, MIGRATED_SUFFIX, DecisionStore
from selector.decisions import read_decisions
from selector.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def store_in(folder) -> DecisionStore:
    return DecisionStore.for_cache(folder)


def chain_is_intact(events) -> bool:
    """Each event's `previous` is the decision of the event before it on the same sample: no write was made
    from a stale copy, none was lost."""
    last = {}
    for e in events:
        if e.sample and e.previous != last.get((e.dataset, e.sample)):
            return False
        if e.sample:
            last[(e.dataset, e.sample)] = e.decision
    return True


# ------------------------------------------------------------------------------------------------ the log
def test_every_change_is_logged_with_who_when_and_what_it_replaced(tmp_path):
    db = store_in(tmp_path)
    first = db.record("fp", {"a": "bad", "b": "kept"}, who="ann")
    assert first.size == 2 and db.current("fp") == {"a": "bad", "b": "kept"} and db.current("other") == {}
    assert db.record("fp", {"a": "bad"}, who="bob").size == 0          # already so: nothing written
    second = db.record("fp", {"a": "accepted", "b": None}, who="bob")
    assert db.current("fp") == {"a": "accepted"}
    events = db.events("fp")
    assert [(e.sample, e.decision, e.previous, e.who, e.kind) for e in events] == [
        ("a", "bad", None, "ann", "decided"), ("b", "kept", None, "ann", "decided"),
        ("a", "accepted", "bad", "bob", "decided"), ("b", None, "kept", "bob", "decided")]
    assert {e.batch for e in events[:2]} == {first.id} and {e.batch for e in events[2:]} == {second.id}
    at = datetime.fromisoformat(events[0].at)
    assert at.utcoffset().total_seconds() == 0 and abs((datetime.now(timezone.utc) - at).total_seconds()) < 60
    assert db.version("fp") == events[-1].seq and db.version("other") == 0
    history = db.history("fp", ["a", "b", "zz"], limit=1)
    assert set(history) == {"a", "b"} and history["a"][0].decision == "accepted"
    assert [e.decision for e in db.history("fp", ["a"])["a"]] == ["accepted", "bad"]          # newest first
    with pytest.raises(InputError, match="choose one of: accepted, kept, bad"):
        db.record("fp", {"a": "maybe"}, who="ann")
    with pytest.raises(InputError, match="needs a reviewer"):
        db.record("fp", {"a": "bad"}, who=" ")
    con = sqlite3.connect(tmp_path / "decisions" / DB_NAME)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE events SET decision = 'bad'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM events")
    con.close()
    assert chain_is_intact(db.events())


def test_undo_reverts_the_callers_last_batch_and_is_logged(tmp_path):
    db = store_in(tmp_path)
    db.record("fp", {"a": "bad"}, who="ann")
    db.record("fp", {"b": "kept"}, who="bob")
    bulk = db.record("fp", {"a": "kept", "c": "bad", "d": "accepted"}, who="ann")
    assert db.last_batch("fp", "ann") == bulk
    undone = db.undo("fp", who="ann")
    assert (undone.batch.id, undone.restored, undone.skipped) == (bulk.id, 3, 0)
    assert db.current("fp") == {"a": "bad", "b": "kept"}                     # ann's first decision is back
    undo_events = [e for e in db.events("fp") if e.kind == "undo"]
    assert len(undo_events) == 3 and {e.undoes for e in undo_events} == {bulk.id} and {e.who for e in undo_events} == {"ann"}
    db.undo("fp", who="ann")                                                 # one more step back
    assert db.current("fp") == {"b": "kept"}
    assert db.undo("fp", who="ann") is None and db.last_batch("fp", "ann") is None
    # a sample someone else changed after the batch keeps the newer decision
    mine = db.record("fp", {"x": "bad", "y": "bad"}, who="ann")
    db.record("fp", {"y": "kept"}, who="bob")
    undone = db.undo("fp", who="ann")
    assert (undone.batch.id, undone.restored, undone.skipped) == (mine.id, 1, 1)
    assert db.current("fp") == {"b": "kept", "y": "kept"}
    assert db.last_batch("fp", "bob").size == 1 and chain_is_intact(db.events())


def test_a_write_from_a_stale_view_leaves_newer_decisions_alone(tmp_path):
    db = store_in(tmp_path)
    db.record("fp", {"a": "bad"}, who="ann")
    seen = db.current("fp")                                                  # bob's page: a is bad, b undecided
    db.record("fp", {"a": "kept", "b": "kept"}, who="ann")                   # ann changes both meanwhile
    batch = db.record("fp", {"a": "accepted", "b": "bad", "c": "bad"}, who="bob",
                      expect={s: seen.get(s) for s in ("a", "b", "c")})
    assert (batch.size, batch.conflicts) == (1, 2)
    assert db.current("fp") == {"a": "kept", "b": "kept", "c": "bad"}
    assert db.record("fp", {"a": "bad"}, who="bob", expect={"a": "kept"}).size == 1   # with a fresh view it goes


def test_old_json_files_are_imported_once_and_renamed(tmp_path, caplog):
    folder = tmp_path / "decisions"
    folder.mkdir()
    (folder / "fp1.json").write_text(json.dumps({"version": 1, "fingerprint": "fp1",
                                                 "decisions": {"a": "bad", "b": "accepted"}}))
    (folder / "fp2.json").write_text(json.dumps({"version": 1, "fingerprint": "fp2", "decisions": {"c": "kept"}}))
    (folder / "junk.json").write_text("{not json")
    db = store_in(tmp_path)
    assert db.current("fp1") == {"a": "bad", "b": "accepted"} and db.current("fp2") == {"c": "kept"}
    assert {e.kind for e in db.events()} == {"migrated"} and {e.who for e in db.events()} == {"migration"}
    assert len({e.batch for e in db.events()}) == 2                          # one batch per file
    assert sorted(p.name for p in folder.iterdir() if "json" in p.name) == [
        "fp1.json" + MIGRATED_SUFFIX, "fp2.json" + MIGRATED_SUFFIX, "junk.json"]   # kept, renamed
    assert "not importing the decisions file" in caplog.text
    # a copy of an imported file put back is not imported again, and the renamed ones are never read
    (folder / "fp1.json").write_text(json.dumps({"decisions": {"a": "kept"}}))
    db.record("fp1", {"a": "kept"}, who="ann")
    db.record("fp1", {"a": "accepted"}, who="ann")
    reopened = DecisionStore(folder / DB_NAME)
    from selector import decision_store
    decision_store._READY.clear()                                             # as in a new process
    assert reopened.current("fp1") == {"a": "accepted", "b": "accepted"} and len(reopened.events("fp1")) == 4


# ------------------------------------------------------------------------------------ a reviewer's file
def test_read_decisions_takes_the_database_a_json_and_a_csv(tmp_path):
    db = store_in(tmp_path)
    db.record("fp", {"a": "kept", "=b": "bad"}, who="ann")
    path = tmp_path / "decisions" / DB_NAME
    assert read_decisions(path, dataset="fp") == {"a": "kept", "=b": "bad"} and read_decisions(path, dataset="x") == {}
    with pytest.raises(InputError, match="needs the dataset's fingerprint"):
        read_decisions(path)
    (tmp_path / "old.json").write_text(json.dumps({"decisions": {"a": "kept"}}))
    (tmp_path / "plain.json").write_text(json.dumps({"a": "bad"}))
    assert read_decisions(tmp_path / "old.json") == {"a": "kept"} and read_decisions(tmp_path / "plain.json") == {"a": "bad"}
    pd.DataFrame({"id": ["a", "'=b", "c"], "decision": ["accepted", "bad", ""]}).to_csv(tmp_path / "d.csv",
                                                                                          index=False)
    assert read_decisions(tmp_path / "d.csv") == {"a": "accepted", "=b": "bad"}   # the export's guard undone
    (tmp_path / "bad.csv").write_text("id,decision\na,perhaps\n")
    with pytest.raises(InputError, match="perhaps"):
        read_decisions(tmp_path / "bad.csv")
    with pytest.raises(InputError, match="does not exist"):
        read_decisions(tmp_path / "none.json")
    (tmp_path / "cols.csv").write_text("sample,verdict\na,bad\n")
    with pytest.raises(InputError, match="needs columns id and decision"):
        read_decisions(tmp_path / "cols.csv")
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.close()
    with pytest.raises(InputError, match="not a decisions database"):
        read_decisions(tmp_path / "other.db", dataset="fp")
    assert sqlite3.connect(tmp_path / "other.db").execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]


def test_the_cli_applies_the_apps_database(tmp_path):
    from selector.__main__ import main
    from tests.synthetic import make_embeddings
    npz = make_embeddings(tmp_path / "emb.npz", n_per_class=30)
    cache = tmp_path / "cache"
    args = ["--source", "embeddings", "--path", str(npz), "--map", "none", "--cache-dir", str(cache)]
    assert main([*args, "--out", str(tmp_path / "plain.csv")]) == 0
    fingerprint = json.loads((tmp_path / "plain.manifest.json").read_text())["inputs"]["fingerprint"]
    plain = pd.read_csv(tmp_path / "plain.csv", keep_default_na=False)
    chosen = plain.loc[plain["selected"], "id"].tolist()
    store_in(cache).record(fingerprint, {chosen[0]: "bad", chosen[1]: "kept"}, who="ann")
    store_in(cache).record("another-dataset", {chosen[2]: "bad"}, who="ann")
    db = cache / "decisions" / DB_NAME
    assert main([*args, "--decisions", str(db), "--out", str(tmp_path / "reviewed.csv")]) == 0
    reviewed = pd.read_csv(tmp_path / "reviewed.csv", keep_default_na=False).set_index("id")
    assert reviewed.loc[chosen[0], "decision"] == "bad" and not reviewed.loc[chosen[0], "selected"]
    assert reviewed.loc[chosen[1], "decision"] == "kept" and reviewed.loc[chosen[2], "decision"] == ""
    assert main([*args, "--decisions", str(tmp_path / "none.db"), "--out", str(tmp_path / "x.csv")]) == 2


# -------------------------------------------------------------------------------------------------- faults
WRITER = """
import sqlite3, sys, time
from pathlib import Path
from selector.decision_store import DecisionStore
db, who, n, go = DecisionStore(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
other = sys.argv[5]
peek = sqlite3.connect(sys.argv[1], timeout=30)
def done_by_other():
    return peek.execute("SELECT COUNT(*) FROM events WHERE who = ? AND sample LIKE ?", (other, other + "-%")).fetchone()[0]
(go.parent / f"ready-{who}").touch()
while not go.exists():
    time.sleep(0.005)
for i in range(n):
    db.record("fp", {f"{who}-{i}": "bad"}, who=who)                                  # rows of its own
    db.record("fp", {f"shared-{i % 7}": ("kept", "bad", "accepted")[i % 3]}, who=who)  # rows both write
    if i % 10 == 0:
        db.record("fp", {f"bulk-{j}": ("kept", "bad")[(i // 10) % 2] for j in range(40)}, who=who)
    deadline = time.time() + 60     # stay within 3 steps of the other writer, so that the two really overlap
    while other and done_by_other() < min(i - 3, n - 1) and time.time() < deadline:
        time.sleep(0.001)
"""


def writer(db_path, who, n, go, other="") -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db_path), who, str(n), str(go), other], env=env,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.faults
def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    db = store_in(tmp_path)
    db.record("fp", {"seed": "bad"}, who="setup")
    n = 50
    procs = [writer(db.path, who, n, tmp_path / "go", other) for who, other in (("ann", "bob"), ("bob", "ann"))]
    deadline = time.time() + 60
    while not all((tmp_path / f"ready-{who}").exists() for who in ("ann", "bob")) and time.time() < deadline:
        time.sleep(0.01)                                # both have imported the engine and wait
    (tmp_path / "go").touch()
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()[-2000:]
    events = db.events("fp")
    current = db.current("fp")
    for who in ("ann", "bob"):
        assert all(current[f"{who}-{i}"] == "bad" for i in range(n))          # every own decision is there
        assert sum(e.who == who and e.sample.startswith(f"{who}-") for e in events) == n
    # the two wrote at the same time: their writes interleave
    order = [e.who for e in events if e.sample.startswith(("ann-", "bob-"))]
    assert sum(a != b for a, b in zip(order, order[1:])) >= 10
    assert chain_is_intact(events)                      # no write worked from a stale previous value
    for batch in {e.batch for e in events if e.sample.startswith("bulk-")}:
        assert sum(e.batch == batch for e in events) in (0, 40)
    latest = {}
    for e in events:
        latest[e.sample] = e.decision
    assert current == {s: d for s, d in latest.items() if d}              # current == the latest event


@pytest.mark.faults
def test_threads_of_one_server_writing_at_once_lose_nothing(tmp_path):
    """Streamlit runs each browser session in a thread of one process."""
    from concurrent.futures import ThreadPoolExecutor
    db = store_in(tmp_path)

    def reviewer(who):
        for i in range(40):
            store_in(tmp_path).record("fp", {f"{who}-{i}": "kept", f"shared-{i % 5}": ("bad", "kept")[i % 2]}, who=who)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(reviewer, ["t0", "t1", "t2", "t3"]))
    current = db.current("fp")
    assert all(current[f"t{k}-{i}"] == "kept" for k in range(4) for i in range(40))
    assert chain_is_intact(db.events("fp"))


@pytest.mark.faults
def test_kill_9_while_writing_leaves_every_batch_whole(tmp_path):
    db = store_in(tmp_path)
    db.record("fp", {"seed": "bad"}, who="setup")
    (tmp_path / "go").touch()
    for attempt in range(2):
        before = db.version("fp")
        proc = writer(db.path, f"w{attempt}", 10_000, tmp_path / "go")
        deadline = time.time() + 60
        while db.version("fp") < before + 150 + 50 * attempt and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    con = sqlite3.connect(db.path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    events = db.events("fp")
    sizes = {}
    for e in events:
        sizes[e.batch] = sizes.get(e.batch, 0) + 1
    bulk = {e.batch for e in events if e.sample.startswith("bulk-")}
    assert bulk and all(sizes[b] == 40 for b in bulk)              # no half-written bulk batch
    assert chain_is_intact(events)
    db.record("fp", {"after": "kept"}, who="ann")                  # and the database is still writable
    assert db.current("fp")["after"] == "kept"


@pytest.mark.faults
@pytest.mark.parametrize("damage", ["junk", "truncated", "zeroed-header"])
def test_a_damaged_database_is_reported_and_left_as_it_is(tmp_path, damage):
    db = store_in(tmp_path)
    db.record("fp", {f"s{i}": "bad" for i in range(2000)}, who="ann")
    data = db.path.read_bytes()
    if damage == "junk":
        db.path.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        db.path.write_bytes(data[: len(data) // 2])
    else:
        db.path.write_bytes(b"\0" * 100 + data[100:])
    damaged = db.path.read_bytes()
    from selector import decision_store
    decision_store._READY.clear()                                   # as in a process opening it now
    for action in (lambda: db.current("fp"), lambda: db.record("fp", {"x": "bad"}, who="ann")):
        with pytest.raises(InputError) as info:
            action()
        message = str(info.value)
        assert str(db.path) in message and "damaged" in message and "Move it aside" in message
    assert db.path.read_bytes() == damaged                          # nothing changed, nothing deleted


@contextmanager
def read_only_folder(folder):
    """(make_read_only, make_writable) for an empty folder that really becomes read-only: chmod for a normal user;
    a tmpfs mounted on it and remounted read-only for root (whom permissions do not stop). Skips where neither
    works."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        def lock():
            for p in [*folder.rglob("*"), folder]:
                p.chmod(0o555 if p.is_dir() else 0o444)

        def unlock():
            for p in [folder, *folder.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
        try:
            yield lock, unlock
        finally:
            unlock()
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root and cannot mount a tmpfs here, so no folder can be made read-only")

    def remount(mode):
        subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)
    try:
        yield (lambda: remount("ro")), (lambda: remount("rw"))
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.faults
def test_a_read_only_database_is_still_read_and_refuses_writes_clearly(tmp_path):
    folder = tmp_path / "cache"
    with read_only_folder(folder / "decisions") as (lock, unlock):
        store_in(folder).record("fp", {"a": "bad", "b": "kept"}, who="ann")
        lock()
        reader = store_in(folder)
        assert reader.current("fp") == {"a": "bad", "b": "kept"}
        assert "cannot write the decisions database" in reader.problem
        with pytest.raises(InputError) as info:
            reader.record("fp", {"c": "bad"}, who="ann")
        assert "cannot write the decisions database" in str(info.value) and "writable" in str(info.value)
        unlock()
        assert store_in(folder).current("fp") == {"a": "bad", "b": "kept"}
