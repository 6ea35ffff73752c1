"""Label decisions on disk: one small JSON file per audited dataset, keyed by sample id.

Files live under cache_dir/decisions/<dataset fingerprint>.json and are written atomically, so decisions
survive page switches, reloads and restarts. `read_decisions` also takes a CSV with `id` and `decision`
columns (e.g. the app's "Label decisions" export), which is how the CLI applies a review made in the app.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from selector.errors import InputError, describe_rows
from selector.files import atomic_write_bytes
from selector.selection import DECISIONS

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def decisions_path(cache_dir, fingerprint: str) -> Path:
    return Path(cache_dir) / "decisions" / f"{fingerprint}.json"


def load_decisions(path) -> dict[str, str]:
    """The app's own decisions file -> {sample id: decision}; {} when missing or unreadable (logged)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        blob = json.loads(path.read_text())
        raw = blob.get("decisions", {}) if isinstance(blob, dict) else {}
        return {str(k): str(v) for k, v in raw.items() if v in DECISIONS}
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("ignoring unreadable decisions file %s (%s)", path, exc)
        return {}


def save_decisions(path, decisions: dict[str, str], *, fingerprint: str = "") -> None:
    """Write the decisions atomically (tmp file + os.replace)."""
    blob = {"version": FORMAT_VERSION, "fingerprint": fingerprint,
            "decisions": {str(k): v for k, v in sorted(decisions.items()) if v in DECISIONS}}
    atomic_write_bytes(path, json.dumps(blob, indent=1).encode("utf-8"))


def decide(decisions: dict[str, str], sample_id: str, decision: str | None) -> dict[str, str]:
    """A new dict with `decision` recorded for `sample_id` (None or "" clears it)."""
    out = dict(decisions)
    if decision:
        out[str(sample_id)] = DECISIONS.check(decision)
    else:
        out.pop(str(sample_id), None)
    return out


def read_decisions(path) -> dict[str, str]:
    """Decisions a user hands in: the app's .json file, or a .csv with columns id and decision (rows with an
    empty decision are skipped). InputError naming the file and the bad rows otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"decisions file {path} does not exist.")
    if path.suffix.lower() == ".json":
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read decisions file {path.name}: {exc}. It must be the app's JSON file "
                             "or a CSV with columns id,decision.") from exc
        raw = blob.get("decisions", blob) if isinstance(blob, dict) else None
        if not isinstance(raw, dict):
            raise InputError(f"{path.name} holds no {{id: decision}} mapping; give the app's decisions file "
                             "or a CSV with columns id,decision.")
        items = [(str(k), str(v)) for k, v in raw.items()]
    elif path.suffix.lower() == ".csv":
        from selector.writer import csv_unescape
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        except Exception as exc:  # noqa: BLE001 - any parser failure is a bad input file
            raise InputError(f"cannot read decisions file {path.name}: {exc}.") from exc
        if not {"id", "decision"} <= set(df.columns):
            raise InputError(f"{path.name} needs columns id and decision; found {list(df.columns)}.")
        items = [(csv_unescape(i), d) for i, d in zip(df["id"], df["decision"]) if d]
    else:
        raise InputError(f"decisions file {path.name} must be .json or .csv.")
    bad = [f"{i}={d!r}" for i, d in items if d not in DECISIONS]
    if bad:
        raise InputError(f"{path.name}: decisions must be one of {', '.join(DECISIONS.names())}; got "
                         f"{describe_rows(bad)}.")
    return dict(items)
