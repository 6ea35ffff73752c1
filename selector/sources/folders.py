"""Images on disk: a folder per class, or a CSV/Parquet manifest of (path, label) rows."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from selector.dataset import Dataset, build_dataset
from selector.errors import InputError, describe_rows

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_LAYOUT = "root/<class name>/<image file>, e.g. root/cat/001.jpg and root/dog/002.png"


def load_image_folder(root, *, extensions=IMAGE_EXTENSIONS) -> Dataset:
    """root/<class>/<image> (sub-folders allowed); classes sorted; hidden and non-image files skipped."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"Image folder {root} does not exist or is not a folder. Expected layout: {_LAYOUT}.")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"{root} has no class sub-folders. Expected layout: {_LAYOUT}.")
    ids, paths, labels, skipped, empty = [], [], [], [], []
    for cdir in classes:
        n0 = len(ids)
        for p in sorted(cdir.rglob("*")):
            rel = p.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or not p.is_file():
                continue
            if p.suffix.lower() not in exts:
                skipped.append(rel.as_posix())
                continue
            ids.append(rel.as_posix())
            paths.append(str(p.resolve()))
            labels.append(cdir.name)
        if len(ids) == n0:
            empty.append(cdir.name)
    if not ids:
        raise InputError(f"No images ({', '.join(sorted(exts))}) found under {root}. Expected layout: {_LAYOUT}.")
    problems = []
    if skipped:
        problems.append(f"Skipped {len(skipped)} non-image file(s): {describe_rows(skipped, 3)}.")
    if empty:
        problems.append(f"Ignored {len(empty)} class folder(s) with no images: {describe_rows(empty)}.")
    return build_dataset(f"folder/{root.name}", ids, paths, labels, problems=problems)


def _cell_str(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v).strip()


def load_manifest(path, *, root=None) -> Dataset:
    """.csv or .parquet with columns path, label [, id, caption, split]; relative paths are resolved
    against `root` or the manifest's folder. Rows whose file is missing are skipped (noted in problems)."""
    from selector.writer import csv_unescape
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"Manifest {path} does not exist.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise InputError(f"Manifest {path.name} must be a .csv or .parquet file, got {suffix or 'no suffix'!r}.")
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any parser failure is a bad input file
        raise InputError(f"Cannot read manifest {path}: {e}. Save it as UTF-8 CSV or Parquet.") from e
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise InputError(f"Manifest {path.name} lacks column(s) {missing}; found {list(df.columns)}. It needs "
                         "columns `path` (image file) and `label` (class name), optionally id, caption, split.")
    if df.empty:
        raise InputError(f"Manifest {path.name} has no rows.")
    cols = {c: [_cell_str(v) for v in df[c]] for c in ("id", "path", "label", "caption", "split") if c in df}
    if suffix == ".csv":  # undo the export's formula guard so an exported table loads back unchanged
        cols = {c: [csv_unescape(v) for v in vals] for c, vals in cols.items()}
    where = "(row 1 = first data row)"
    for c in ("path", "label") + (("id",) if "id" in cols else ()):
        empty = [k + 1 for k, v in enumerate(cols[c]) if not v]
        if empty:
            raise InputError(f"Manifest {path.name}: empty `{c}` in rows {describe_rows(empty)} {where} "
                             f"({len(empty)} in all). Fill them in or delete those rows.")
    ids = cols.get("id", cols["path"])
    seen, dup = {}, []
    for k, v in enumerate(ids):
        if v in seen:
            dup.append(f"{v!r} (rows {seen[v] + 1} and {k + 1})")
        seen.setdefault(v, k)
    if dup:
        what = "ids" if "id" in cols else "paths (used as ids)"
        raise InputError(f"Manifest {path.name}: duplicate {what}: {describe_rows(dup, 3)}. Each row needs a "
                         "unique id: remove the repeated rows or add/fix an `id` column.")
    base = Path(root).expanduser() if root is not None else path.parent
    full = [str(p if p.is_absolute() else (base / p).resolve()) for p in map(Path, cols["path"])]
    ok = np.array([os.path.isfile(p) for p in full], dtype=bool)
    if not ok.any():
        raise InputError(f"None of the {len(full)} image files in {path.name} exist (e.g. {full[0]}); relative "
                         f"paths are resolved against {base}. Pass root= the folder the paths are relative to.")
    problems = []
    if not ok.all():
        gone = [f"{k + 1}:{cols['path'][k]}" for k in np.flatnonzero(~ok)]
        problems.append(f"Skipped {len(gone)} row(s) whose image file does not exist (row:path {where}): "
                        f"{describe_rows(gone, 3)}. Relative paths are resolved against {base}.")
    keep = np.flatnonzero(ok)
    pick = lambda vals: [vals[k] for k in keep]  # noqa: E731
    extra = {c: pick(cols[c]) for c in ("caption", "split") if c in cols}
    return build_dataset(f"manifest/{path.stem}", pick(ids), pick(full), pick(cols["label"]), extra=extra,
                         problems=problems)
