"""Reading a reviewer's decisions file: the app's decisions database, a JSON {id: decision} file, or a CSV with
`id` and `decision` columns (e.g. the app's "Label decisions" export). This is how the CLI applies a review made
in the app. The app itself keeps its decisions in `selector.decision_store`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd

from selector.decision_store import DB_SUFFIXES, DecisionStore, is_database
from selector.errors import InputError, describe_rows
from selector.selection import DECISIONS


def read_decisions(path, *, dataset: Optional[str] = None) -> dict[str, str]:
    """Decisions a user hands in -> {sample id: decision}: the app's decisions database (.db; the decisions of
    `dataset`, a dataset fingerprint, which it needs), a .json file ({id: decision}, or the `decisions` mapping of
    an earlier app version's file), or a .csv with columns id and decision (rows with an empty decision are
    skipped). InputError naming the file and the bad rows otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"decisions file {path} does not exist.")
    if is_database(path):
        if dataset is None:
            raise InputError(f"{path.name} is a decisions database: reading it needs the dataset's fingerprint.")
        return DecisionStore(path, create=False).current(dataset)
    if path.suffix.lower() == ".json":
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read decisions file {path.name}: {exc}. It must be a JSON {{id: decision}} "
                             "file or a CSV with columns id,decision.") from exc
        raw = blob.get("decisions", blob) if isinstance(blob, dict) else None
        if not isinstance(raw, dict):
            raise InputError(f"{path.name} holds no {{id: decision}} mapping; give the app's decisions database, "
                             "a JSON {id: decision} file or a CSV with columns id,decision.")
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
        raise InputError(f"decisions file {path.name} must be the app's decisions database "
                         f"({', '.join(DB_SUFFIXES)}), a .json or a .csv.")
    bad = [f"{i}={d!r}" for i, d in items if d not in DECISIONS]
    if bad:
        raise InputError(f"{path.name}: decisions must be one of {', '.join(DECISIONS.names())}; got "
                         f"{describe_rows(bad)}.")
    return dict(items)

