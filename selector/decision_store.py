"""Label decisions in SQLite: an append-only log of every decision, with who made it, when, and what it replaced.

One database per cache folder, cache_dir/decisions/decisions.db, in WAL mode with a 30 s busy timeout, so any
number of browser sessions and processes read and write it at once. Every write is one transaction that reads
the values it replaces inside the transaction (BEGIN IMMEDIATE): a writer never works from a stale copy and
never touches a sample it was not asked to change. A caller can also say what it saw (`record(expect=...)`): a
sample someone else decided since is then left alone. `undo` reverts a reviewer's last batch, one step at a
time, as a new batch of kind "undo" (an undo that finds every sample changed since logs one event with an empty
sample id, so that the batch still counts as undone).

Tables:
- events: one row per change, never updated or deleted: dataset (fingerprint), sample (id), decision (NULL:
  cleared), previous (NULL: none), who (a reviewer's name, else the browser session's id), at (UTC, ISO 8601),
  batch (one id per user action: a bulk action on many rows is one batch), kind (decided, undo, migrated) and,
  for an undo, the batch it reverts (undoes).
- current: the latest event of each (dataset, sample) that holds a decision, kept by a trigger in the event's
  own transaction, so reading a dataset's decisions is one indexed range scan.
- migrations: the JSON decision files already imported.

Decision files of earlier versions (cache_dir/decisions/<fingerprint>.json) are imported when the database is
opened: one batch per file, kind "migrated", who "migration". The file is then renamed to
<fingerprint>.json.migrated and kept, never read again; one that cannot be renamed is still imported only once
(its name is in `migrations`).

A damaged or unwritable database is never changed or removed. Every failure is an InputError that names the
file, says what went wrong and how to fix it; a database this process cannot write is still read (SQLite's
immutable mode) and `problem` says why nothing new can be saved.
"""
from __future__ import annotations

import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional
from urllib.parse import quote

from selector.decision_schema import (DB_NAME, DB_SUFFIXES, INSERT, MIGRATED_SUFFIX, check_file, create, held_decisions,
                                      is_database, now_utc, rename_migrated)
from selector.errors import InputError
from selector.selection import DECISIONS

__all__ = ["DecisionStore", "Event", "Batch", "Undone", "DB_NAME", "DB_SUFFIXES", "MIGRATED_SUFFIX", "is_database"]
BUSY_TIMEOUT_S = 30.0
_COLUMNS = "seq, dataset, sample, decision, previous, who, at, batch, kind, undoes"
_READY: set = set()              # (path, device, inode) of databases whose schema this process has checked
_READY_LOCK = threading.Lock()


@dataclass(frozen=True)
class Event:
    """One row of the log. decision / previous: a DECISIONS name, or None (cleared / none before)."""
    seq: int
    dataset: str
    sample: str
    decision: Optional[str]
    previous: Optional[str]
    who: str
    at: str
    batch: str
    kind: str
    undoes: Optional[str] = None


@dataclass(frozen=True)
class Batch:
    """One user action: `size` samples changed at `at` (UTC) by `who`; `conflicts` samples were left alone because
    their decision was no longer the one the caller expected (someone changed it meanwhile)."""
    id: str
    kind: str
    who: str
    at: str
    size: int
    conflicts: int = 0


@dataclass(frozen=True)
class Undone:
    """What an undo did: `restored` samples got their previous value back; `skipped` had been changed by
    someone else since, so they keep that newer decision."""
    batch: Batch
    restored: int
    skipped: int


class DecisionStore:
    """The decisions database at `path`. create=False opens an existing one only (e.g. a file named on the command
    line) and leaves it as it is; the app's store (`for_cache`) is created on first use."""

    def __init__(self, path, *, create: bool = True):
        self.path = Path(path).expanduser()
        self.create = create
        self.problem = ""        # set when the database could only be read: why nothing new can be saved

    @classmethod
    def for_cache(cls, cache_dir) -> "DecisionStore":
        return cls(Path(cache_dir) / "decisions" / DB_NAME)

    # ------------------------------------------------------------------------------------------- reading
    def check(self) -> None:
        """InputError unless the database can be opened and read (e.g. a file named on the command line)."""
        with self._reading():
            pass

    def current(self, dataset: str) -> dict[str, str]:
        """{sample id: decision} for the dataset: the latest event of each sample that holds one."""
        with self._reading() as con:
            return dict(con.execute("SELECT sample, decision FROM current WHERE dataset = ?", (dataset,)))

    def version(self, dataset: str) -> int:
        """A number that changes whenever any decision on the dataset is written (the last event's seq; 0 if none)."""
        with self._reading() as con:
            return con.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE dataset = ?", (dataset,)).fetchone()[0]

    def history(self, dataset: str, samples, limit: int = 3) -> dict[str, list[Event]]:
        """The last `limit` events of each of these samples, newest first (samples without events are left out)."""
        samples = [str(s) for s in samples]
        if not samples:
            return {}
        marks = ",".join("?" * len(samples))
        sql = (f"SELECT {_COLUMNS} FROM (SELECT {_COLUMNS}, ROW_NUMBER() OVER (PARTITION BY sample ORDER BY seq DESC)"
               f" AS r FROM events WHERE dataset = ? AND sample IN ({marks})) WHERE r <= ? ORDER BY seq DESC")
        out: dict[str, list[Event]] = {}
        with self._reading() as con:
            for row in con.execute(sql, (dataset, *samples, int(limit))):
                out.setdefault(row[2], []).append(Event(*row))
        return out

    def events(self, dataset: Optional[str] = None) -> list[Event]:
        """The whole log (of one dataset), oldest first: the audit trail."""
        where, args = ("WHERE dataset = ?", (dataset,)) if dataset is not None else ("", ())
        with self._reading() as con:
            return [Event(*row) for row in con.execute(f"SELECT {_COLUMNS} FROM events {where} ORDER BY seq", args)]

    def last_batch(self, dataset: str, who: str) -> Optional[Batch]:
        """`who`'s latest decision batch on the dataset that has not been undone: what `undo` would revert."""
        with self._reading() as con:
            return _last_batch(con, dataset, who)

    # ------------------------------------------------------------------------------------------- writing
    def record(self, dataset: str, changes: Mapping[str, Optional[str]], *, who: str,
               expect: Optional[Mapping[str, Optional[str]]] = None) -> Batch:
        """Write {sample id: decision or None (clear)} as one batch by `who`; a sample that already holds that
        decision is left out (size 0: nothing written). expect: {sample id: the decision (or None) the caller saw};
        a sample whose stored decision differs from it was changed by someone since and is left alone (counted in
        `conflicts`), so a stale page never overwrites a newer decision."""
        who = _check_who(who)
        changes = {str(s): (DECISIONS.check(d) if d else None) for s, d in changes.items()}
        expect = {str(s): (d or None) for s, d in (expect or {}).items()}
        batch, at = uuid.uuid4().hex, now_utc()
        with self._writing() as con:
            held = held_decisions(con, dataset, changes)
            stale = {s for s in changes if s in expect and held.get(s) != expect[s]}
            rows = [(dataset, s, d, held.get(s), who, at, batch, "decided", None)
                    for s, d in changes.items() if held.get(s) != d and s not in stale]
            con.executemany(INSERT, rows)
        return Batch(batch, "decided", who, at, len(rows), conflicts=len(stale))

    def undo(self, dataset: str, *, who: str) -> Optional[Undone]:
        """Revert `who`'s last batch on the dataset (see last_batch): each sample gets its previous value back,
        logged as one batch of kind "undo". A sample whose decision is no longer the one the batch wrote (someone
        changed it since) keeps that newer decision. None when `who` has nothing left to undo."""
        who = _check_who(who)
        batch, at = uuid.uuid4().hex, now_utc()
        with self._writing() as con:
            target = _last_batch(con, dataset, who)
            if target is None:
                return None
            rows = con.execute("SELECT sample, decision, previous FROM events WHERE batch = ? ORDER BY seq",
                               (target.id,)).fetchall()
            held = held_decisions(con, dataset, [r[0] for r in rows])
            undo = [(dataset, s, prev, d, who, at, batch, "undo", target.id) for s, d, prev in rows if held.get(s) == d]
            con.executemany(INSERT, undo)
            if not undo:       # every sample was changed since: still mark the batch as handled
                con.execute(INSERT, (dataset, "", None, None, who, at, batch, "undo", target.id))
        return Undone(target, restored=len(undo), skipped=len(rows) - len(undo))

    # ----------------------------------------------------------------------------------------- internals
    def _connect(self, *, immutable: bool = False) -> sqlite3.Connection:
        if immutable:
            con = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?immutable=1", uri=True,
                                  timeout=BUSY_TIMEOUT_S, isolation_level=None)
        else:
            target = self.path if self.create else f"file:{quote(str(self.path.resolve()))}?mode=rw"
            con = sqlite3.connect(target, uri=not self.create, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        return con

    def _ensure(self) -> None:
        """Once per process and database file: check it, create the schema and import old JSON files."""
        if not self.create and not self.path.is_file():
            raise InputError(f"decisions database {self.path} does not exist.")
        try:
            st = self.path.stat()
            key = (str(self.path.resolve()), st.st_dev, st.st_ino)
        except OSError:
            key = None
        if key in _READY:
            return
        with _READY_LOCK:
            if key not in _READY:
                if self.create:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                con = self._connect()
                try:
                    check_file(con, self.path, new_ok=self.create)
                    renames = create(con, self.path.parent) if self.create else []
                finally:
                    con.close()
                rename_migrated(renames)
                st = self.path.stat()
                _READY.add((str(self.path.resolve()), st.st_dev, st.st_ino))

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            con = None
            try:
                self._ensure()
                con = self._connect()
                con.execute("SELECT 1 FROM events LIMIT 1").fetchall()
            except (sqlite3.OperationalError, OSError) as exc:
                if con is not None:
                    con.close()
                con = self._read_only(exc)
            try:
                yield con
            finally:
                con.close()
        except (sqlite3.Error, OSError) as exc:
            raise self._explain(exc, "read") from exc

    def _read_only(self, exc) -> sqlite3.Connection:
        """A connection to a database this process cannot write (read-only file or folder), or raise `exc`."""
        if not _error_name(exc).startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "OSError")) \
                or not self.path.is_file():
            raise exc
        con = self._connect(immutable=True)
        try:
            check_file(con, self.path, new_ok=False)
        except BaseException:
            con.close()
            raise
        self.problem = str(self._explain(exc, "write"))
        return con

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        try:
            self._ensure()
            con = self._connect()
            try:
                con.execute("PRAGMA synchronous = FULL")
                con.execute("BEGIN IMMEDIATE")
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            finally:
                con.close()
        except (sqlite3.Error, OSError) as exc:
            raise self._explain(exc, "write") from exc

    def _explain(self, exc, action: str) -> InputError:
        if isinstance(exc, InputError):
            return exc
        name, text, path = _error_name(exc), str(exc), self.path
        if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in text or "not a database" in text:
            return InputError(
                f"the decisions database {path} is damaged ({text}); nothing was changed in it. Move it aside (rename "
                f"{path.name} and its -wal file, e.g. to {path.name}.damaged) and reload to start an empty one; "
                f"`sqlite3 {path.name}.damaged .recover | sqlite3 {path.name}` rescues what it still holds.")
        if name in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            return InputError(f"the decisions database {path} stayed locked by another process for "
                              f"{BUSY_TIMEOUT_S:.0f} s ({text}); nothing was saved. Try again; if it persists, stop "
                              "the process that holds it.")
        if name == "SQLITE_FULL":
            return InputError(f"the disk holding the decisions database {path} is full ({text}); nothing was saved. "
                              "Free some space and try again.")
        return InputError(f"cannot {action} the decisions database {path} ({text}): decisions made now are not "
                          f"saved. Make {path.parent} and its files writable by this user, or set "
                          "SELECTOR_CACHE_DIR to a writable folder.")


def _error_name(exc) -> str:
    """SQLite's name for the error (Python 3.11+), else one read from the message."""
    if isinstance(exc, OSError):
        return "OSError"
    name = getattr(exc, "sqlite_errorname", "")
    if name:
        return name
    text = str(exc)
    for part, guess in (("locked", "SQLITE_BUSY"), ("readonly", "SQLITE_READONLY"), ("unable to open", "SQLITE_CANTOPEN"),
                        ("full", "SQLITE_FULL")):
        if part in text:
            return guess
    return ""


def _check_who(who) -> str:
    who = str(who or "").strip()
    if not who:
        raise InputError("a decision needs a reviewer: give a name (or the session id).")
    return who[:100]


def _last_batch(con: sqlite3.Connection, dataset: str, who: str) -> Optional[Batch]:
    row = con.execute(
        "SELECT batch, at FROM events e WHERE dataset = ? AND who = ? AND kind = 'decided' AND NOT EXISTS "
        "(SELECT 1 FROM events u WHERE u.undoes = e.batch) ORDER BY seq DESC LIMIT 1", (dataset, who)).fetchone()
    if row is None:
        return None
    size = con.execute("SELECT COUNT(*) FROM events WHERE batch = ?", (row[0],)).fetchone()[0]
    return Batch(row[0], "decided", who, row[1], size)


