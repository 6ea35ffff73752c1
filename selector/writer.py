"""The one writer: the per-sample table as CSV or Parquet bytes or files, and the run manifest beside it.

The CLI's files, the app's downloads and bench all come from `table_bytes` and `manifest_for`, so the same
run and selection give the same bytes everywhere. CSV text is always quoted (a carriage return inside a
cell cannot split a row) and formula-guarded (cells starting with = + - @, their full-width forms, tab or CR,
also after spaces, get a leading '; `csv_unescape` removes it exactly when a table is read back).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from selector.errors import InputError
from selector.files import atomic_write_all, atomic_write_bytes
from selector.registry import Choice, Registry

FORMATS = Registry(
    "export format",
    Choice("csv", "CSV", value=".csv", help="Quoted, formula-guarded UTF-8 text; opens in any spreadsheet."),
    Choice("parquet", "Parquet", value=".parquet", help="Typed columns, full precision, small files."),
)
_SUFFIXES = {**{c.value: c.name for c in FORMATS}, ".pq": "parquet"}
_CSV_DANGER = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")   # + full-width = + - @


def runs_as_formula(v: str) -> bool:
    """Whether a spreadsheet may read text v as a formula: it starts with = + - @ (or their full-width forms
    \uff1d \uff0b \uff0d \uff20), a tab or a CR, also after leading whitespace."""
    return v.startswith(_CSV_DANGER) or v.lstrip().startswith(_CSV_DANGER)


def csv_escape(v):
    """Text that may run as a formula gets a leading ': so does text that only looks guarded ("'=x" becomes
    "''=x"), which makes csv_unescape exact for every string."""
    return "'" + v if isinstance(v, str) and runs_as_formula(v.lstrip("'")) else v


def csv_unescape(v):
    """The inverse of csv_escape: csv_unescape(csv_escape(v)) == v for every string v."""
    return v[1:] if isinstance(v, str) and v.startswith("'") and runs_as_formula(v.lstrip("'")) else v


def csv_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Copy where text cells (and headers) that may run as a formula (`runs_as_formula`) get a leading ' so
    spreadsheets show them as text; `csv_unescape` gives back the original. Numeric columns are untouched."""
    out = table.copy()
    for c in out.columns:
        s = out[c]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
                or pd.api.types.is_datetime64_any_dtype(s)):
            out[c] = s.astype(object).map(csv_escape)
    out.columns = [csv_escape(str(c)) for c in out.columns]
    return out


def format_of(path) -> str:
    """The FORMATS name for a file path, by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise InputError(f"export path must end in .csv or .parquet, got {Path(path).name!r}.")
    return _SUFFIXES[suffix]


def table_bytes(table: pd.DataFrame, fmt: str) -> bytes:
    """The bytes of `table` as a FORMATS file: what a download holds and what write_table writes."""
    FORMATS.check(fmt)
    if fmt == "csv":
        return csv_safe(table).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode("utf-8")
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


def jsonable(x):
    """numpy scalars/arrays, paths, tuples/sets -> plain JSON types; NaN/inf -> None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, np.ndarray)):
        return [jsonable(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)  # Path, datetime, anything else: its text form


def manifest_bytes(manifest: dict) -> bytes:
    """A manifest as indented JSON (NaN written as null)."""
    if not isinstance(manifest, dict):
        raise InputError(f"manifest must be a dict, got {type(manifest).__name__}.")
    return (json.dumps(jsonable(manifest), indent=2, allow_nan=False) + "\n").encode("utf-8")


def manifest_for(result_or_manifest, selection=None, table: pd.DataFrame | None = None) -> dict:
    """The run manifest with the selection settings and the exported table's counts added."""
    manifest = dict(getattr(result_or_manifest, "manifest", result_or_manifest))
    if selection is not None:
        manifest["selection"] = selection.as_dict()
    if table is not None:
        counts = dict(manifest.get("counts", {}))
        if "selected" in table:
            counts["selected"] = int(table["selected"].sum())
        if "corrected_label" in table:
            counts["relabelled"] = int((table["corrected_label"] != table["label"]).sum())
        if selection is not None and "selected" in table:
            from selector.selection import selection_warnings
            manifest["warnings"] = selection_warnings(table, selection, table["selected"].to_numpy())
        if "decision" in table:
            counts["decisions"] = int((table["decision"] != "").sum())
        counts["exported_rows"] = int(len(table))
        manifest["counts"] = counts
    return manifest


def write_table(table: pd.DataFrame, path) -> Path:
    """Write .csv or .parquet by suffix, atomically. Returns the path."""
    return atomic_write_bytes(path, table_bytes(table, format_of(path)))


def write_manifest(manifest: dict, path) -> Path:
    """Write a run manifest as indented JSON, atomically. Returns the path."""
    return atomic_write_bytes(path, manifest_bytes(manifest))


def manifest_path(path) -> Path:
    """Where the run manifest of a table file goes: `<name>.manifest.json` beside it."""
    return Path(path).with_suffix(".manifest.json")


def check_output(path, *, inputs=()) -> Path:
    """The table path (and the manifest beside it) checked before any work is done: a .csv/.parquet name,
    not a folder or a device, not one of the run's `inputs` (files it reads), in an existing folder this
    process can write in. InputError saying what to change otherwise. Returns the path."""
    path = Path(path).expanduser()
    for target in (path, manifest_path(path)):
        if target.is_dir():
            raise InputError(f"the output {target} is a folder; give a file name ending in .csv or .parquet, "
                             f"e.g. {target / 'selection.csv'}.")
        if target.exists() and not target.is_file():
            raise InputError(f"the output {target} exists and is not a regular file; choose another output path.")
        for source in filter(None, inputs):
            if _same_file(source, target):
                raise InputError(f"the output {target} is the input file {source}; writing it would overwrite "
                                 "the input. Choose another output path.")
    format_of(path)
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"the output folder {folder} does not exist; create it or choose another output path.")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".selector-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write in the output folder {folder} ({exc.strerror or exc}); choose another "
                         "output path or make the folder writable.") from exc
    return path


def _same_file(a, b) -> bool:
    a, b = Path(a).expanduser(), Path(b).expanduser()
    try:
        return os.path.samefile(a, b)
    except OSError:   # either is missing: compare where they would be
        return a.resolve() == b.resolve()


class Exported(NamedTuple):
    """What `export` wrote: the table file, the manifest file beside it, and the manifest itself."""
    table_path: Path
    manifest_path: Path
    manifest: dict


def export(result, selection, path, *, selected_only: bool = False) -> Exported:
    """Write `apply(result, selection)` (every row, or only the selected ones) to path (.csv or .parquet) and
    `<name>.manifest.json` beside it, both or neither: a failed write (a full disk, a read-only folder) raises
    InputError and leaves any previous files there as they were."""
    from selector.selection import apply
    path = Path(path).expanduser()
    fmt = format_of(path)
    table = apply(result, selection)
    if selected_only:
        table = table[table["selected"]].reset_index(drop=True)
    manifest = manifest_for(result, selection, table)
    try:
        atomic_write_all({path: table_bytes(table, fmt), manifest_path(path): manifest_bytes(manifest)})
    except OSError as exc:
        raise InputError(f"could not write {path} ({exc.strerror or exc}); nothing was written and any previous "
                         "file there is unchanged. Free some space or choose another output path, and run again "
                         "(finished stages are re-opened from the cache).") from exc
    return Exported(path, manifest_path(path), manifest)
