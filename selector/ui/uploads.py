"""Files users upload to the app (a manifest, an embeddings .npz): kept under the cache folder, content-addressed,
for a week after their last upload."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from selector.errors import InputError
from selector.files import atomic_write_bytes, default_cache_dir

UPLOAD_DIR = "uploads"
UPLOAD_SUFFIXES = (".csv", ".parquet", ".npz")
UPLOAD_MAX_AGE_S = 7 * 24 * 3600   # an upload not uploaded again for a week is removed


def save_upload(name: str, data: bytes) -> str:
    """Store an uploaded file under the cache dir (content-addressed) and return its path; uploads older than
    UPLOAD_MAX_AGE_S are removed first, and uploading a file again makes it young again."""
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise InputError(f"uploaded file {name!r} must be .csv, .parquet or .npz, got {suffix or 'no suffix'}.")
    expire_uploads()
    path = default_cache_dir() / UPLOAD_DIR / f"{hashlib.sha1(data).hexdigest()[:16]}{suffix}"
    try:
        if path.exists():
            os.utime(path)
        else:
            atomic_write_bytes(path, data)
    except OSError as exc:
        raise InputError(f"could not store the upload {name!r} under {path.parent} ({exc.strerror or exc}); free "
                         "some space there or set SELECTOR_CACHE_DIR to a writable folder.") from exc
    return str(path)


def expire_uploads(max_age_s: float = UPLOAD_MAX_AGE_S) -> list[Path]:
    """Remove the uploads last stored more than max_age_s ago; returns the paths removed."""
    folder, now, removed = default_cache_dir() / UPLOAD_DIR, time.time(), []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        try:
            if path.suffix in UPLOAD_SUFFIXES and path.is_file() and now - path.stat().st_mtime > max_age_s:
                path.unlink()
                removed.append(path)
        except OSError:   # gone already (another session), or not ours to remove: leave it
            continue
    return removed
