"""Atomic file writes: every file the engine writes goes through `atomic_write` (tmp file beside the target,
fsync, os.replace), so a killed process or a full disk never leaves half a file and never harms the file that
was there. Files get the usual permissions (0o666 less the umask), not mkstemp's 0o600."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from selector.errors import InputError


def current_umask() -> int:
    """The process's umask, read without changing it where /proc allows (os.umask sets it while reading)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _stage(path: Path, write) -> Path:
    """A temporary file beside path holding what write(f) wrote, fsynced, with 0o666 & ~umask permissions;
    removed again if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write(path, write) -> Path:
    """Call write(f) on a temporary binary file beside path, fsync it and rename it into place; no tmp file is
    left behind on failure, and the previous file at path is untouched. Returns the path."""
    path = Path(path).expanduser()
    tmp = _stage(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_all(files: dict) -> list[Path]:
    """Write {path: bytes} atomically together: every file is staged (written and fsynced) before the first
    is renamed into place, so a failed write (a full disk) replaces none of them. Returns the paths."""
    staged = {}
    try:
        for path, data in files.items():
            path = Path(path).expanduser()
            staged[path] = _stage(path, lambda f, data=data: f.write(data))
        for path, tmp in staged.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        raise
    return list(staged)


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
