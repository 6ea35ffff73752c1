"""The decisions database file (see decision_store): its tables, the checks made when it is opened, and the
one-time import of the JSON decision files of earlier versions."""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from datetime import datetime, timezone
from pathlib import Path

from selector.errors import InputError
from selector.selection import DECISIONS

log = logging.getLogger(__name__)
DB_NAME = "decisions.db"
DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SCHEMA_VERSION = 1
MIGRATED_SUFFIX = ".migrated"
MIGRATION = "migration"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, dataset TEXT NOT NULL, sample TEXT NOT NULL, decision TEXT,
        previous TEXT, who TEXT NOT NULL, at TEXT NOT NULL, batch TEXT NOT NULL, kind TEXT NOT NULL, undoes TEXT)""",
    "CREATE INDEX IF NOT EXISTS events_by_sample ON events (dataset, sample, seq)",
    "CREATE INDEX IF NOT EXISTS events_by_dataset ON events (dataset, seq)",
    "CREATE INDEX IF NOT EXISTS events_by_who ON events (dataset, who, seq)",
    "CREATE INDEX IF NOT EXISTS events_by_batch ON events (batch)",
    "CREATE INDEX IF NOT EXISTS events_by_undone ON events (undoes) WHERE undoes IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS current (dataset TEXT NOT NULL, sample TEXT NOT NULL, decision TEXT NOT NULL,
        seq INTEGER NOT NULL, PRIMARY KEY (dataset, sample)) WITHOUT ROWID""",
    """CREATE TRIGGER IF NOT EXISTS events_to_current AFTER INSERT ON events BEGIN
        DELETE FROM current WHERE dataset = NEW.dataset AND sample = NEW.sample AND NEW.decision IS NULL;
        INSERT OR REPLACE INTO current SELECT NEW.dataset, NEW.sample, NEW.decision, NEW.seq
            WHERE NEW.decision IS NOT NULL;
    END""",
    """CREATE TRIGGER IF NOT EXISTS events_are_not_updated BEFORE UPDATE ON events BEGIN
        SELECT RAISE(ABORT, 'the decision log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS events_are_not_deleted BEFORE DELETE ON events BEGIN
        SELECT RAISE(ABORT, 'the decision log is append-only'); END""",
    "CREATE TABLE IF NOT EXISTS migrations (file TEXT PRIMARY KEY, batch TEXT NOT NULL, at TEXT NOT NULL)",
)
INSERT = ("INSERT INTO events (dataset, sample, decision, previous, who, at, batch, kind, undoes) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def is_database(path) -> bool:
    return Path(path).suffix.lower() in DB_SUFFIXES


def create(con: sqlite3.Connection, folder: Path) -> list[Path]:
    """Make `con`'s database a decisions database (WAL mode, the tables, the schema version) and import the old
    JSON files of `folder`, in one transaction; returns the files to rename once it is committed."""
    if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        con.execute("PRAGMA journal_mode = WAL")
    con.execute("BEGIN IMMEDIATE")
    for statement in SCHEMA:
        con.execute(statement)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    renames = migrate_json(con, folder)
    con.execute("COMMIT")
    return renames


def check_file(con: sqlite3.Connection, path: Path, *, new_ok: bool = True) -> None:
    """InputError unless the file is a decisions database this version can use (or, new_ok, an empty one to make
    into one) and SQLite finds it intact."""
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise InputError(f"the decisions database {path} was written by a newer version of selector (schema "
                         f"{version}, this one reads {SCHEMA_VERSION}); upgrade selector to use it.")
    verdict = con.execute("PRAGMA quick_check").fetchone()[0]
    if verdict != "ok":
        raise sqlite3.DatabaseError(f"database disk image is malformed: {verdict}")
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version == SCHEMA_VERSION and not {"events", "current"} <= tables:
        raise InputError(f"{path} is not a decisions database (it has no events table); give the app's "
                         f"{DB_NAME}, a .json or a .csv with columns id,decision.")
    if version == 0 and (tables or not new_ok) and "events" not in tables:
        raise InputError(f"{path} is an SQLite file but not a decisions database (tables: "
                         f"{', '.join(sorted(tables))}); give the app's {DB_NAME}.")


def held_decisions(con: sqlite3.Connection, dataset: str, samples) -> dict[str, str]:
    """The current decisions of these samples (those that hold one), read in chunks of indexed lookups."""
    samples, out = list(samples), {}
    for start in range(0, len(samples), 500):
        chunk = samples[start:start + 500]
        out.update(con.execute(f"SELECT sample, decision FROM current WHERE dataset = ? AND sample IN "
                               f"({','.join('?' * len(chunk))})", (dataset, *chunk)))
    return out


def migrate_json(con: sqlite3.Connection, folder: Path) -> list[Path]:
    """Import the JSON decision files of earlier versions in `folder` (inside the caller's transaction); returns
    the files to rename once it is committed."""
    done = {r[0] for r in con.execute("SELECT file FROM migrations")}
    renames = []
    for path in sorted(folder.glob("*.json")):
        renames.append(path)
        if path.name in done:
            continue
        try:
            items = old_file(path)
        except (OSError, ValueError) as exc:
            log.warning("not importing the decisions file %s: %s", path, exc)
            renames.pop()
            continue
        dataset, batch, at = path.stem, uuid.uuid4().hex, now_utc()
        held = held_decisions(con, dataset, items)
        con.executemany(INSERT, [(dataset, s, d, held.get(s), MIGRATION, at, batch, "migrated", None)
                                  for s, d in sorted(items.items()) if held.get(s) != d])
        con.execute("INSERT INTO migrations (file, batch, at) VALUES (?, ?, ?)", (path.name, batch, at))
        log.info("imported %d decisions from %s", len(items), path)
    return renames


def old_file(path: Path) -> dict[str, str]:
    """{sample id: decision} of an earlier version's decisions file ({"decisions": {...}}); ValueError if it is not
    one."""
    blob = json.loads(path.read_text(encoding="utf-8"))
    raw = blob.get("decisions") if isinstance(blob, dict) else None
    if not isinstance(raw, dict):
        raise ValueError("no 'decisions' mapping in it")
    bad = [f"{k}={v!r}" for k, v in raw.items() if v not in DECISIONS]
    if bad:
        raise ValueError(f"unknown decisions {', '.join(bad[:5])}")
    return {str(k): str(v) for k, v in raw.items()}


def rename_migrated(paths) -> None:
    for path in paths:
        target = path.with_name(path.name + MIGRATED_SUFFIX)
        try:
            if not target.exists():
                os.replace(path, target)
        except OSError as exc:
            log.warning("imported %s but could not rename it (%s); it is not imported again", path, exc)
