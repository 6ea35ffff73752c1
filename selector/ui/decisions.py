"""The user's label decisions on disk: one small JSON file per audited dataset (no streamlit; unit-tested).

Decisions are keyed by sample id and stored under cache_dir/decisions/<dataset fingerprint>.json, written
atomically, so they survive page switches, browser reloads and server restarts.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from selector.data import atomic_write_bytes
from selector.ui.selection_view import DECISIONS

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def decisions_path(cache_dir, fingerprint: str) -> Path:
    return Path(cache_dir) / "decisions" / f"{fingerprint}.json"


def load_decisions(path) -> dict[str, str]:
    """{sample id: "accepted" | "kept" | "bad"}; {} when the file is missing or unreadable (logged)."""
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
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        out[str(sample_id)] = decision
    else:
        out.pop(str(sample_id), None)
    return out
