"""Atomic file writes: every file the engine writes goes through `atomic_write_bytes` (tmp file beside the
target, fsync, os.replace), so a killed process never leaves half a file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from selector.errors import InputError


def atomic_write(path, write) -> Path:
    """Call write(f) on a temporary binary file beside path, fsync it and rename it into place; no tmp file is
    left behind on failure. Returns the path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write data to path atomically (see atomic_write). Returns the path."""
    return atomic_write(path, lambda f: f.write(data))


def npy_bytes(array) -> bytes:
    """The .npy file of a plain numeric/string array (object arrays are refused: no pickles)."""
    import io
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise InputError(f"only plain numeric/string arrays are stored, got dtype {array.dtype}.")
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def atomic_save_npy(path, array) -> Path:
    """np.save to exactly `path` (no suffix added), atomically."""
    return atomic_write_bytes(path, npy_bytes(array))


def default_cache_dir() -> Path:
    """Where caches live: $SELECTOR_CACHE_DIR, else ~/.cache/selector (read on every call)."""
    return Path(os.environ.get("SELECTOR_CACHE_DIR") or Path.home() / ".cache" / "selector")
