"""Atomic file writes and cache files: every file the engine writes goes through `atomic_write` (tmp file
beside the target, fsync, os.replace), so a killed process or a full disk never leaves half a file and never
harms the file that was there. Files get the usual permissions (0o666 less the umask), not mkstemp's 0o600.
Every cache file is checksummed (`file_record` / `check_file`, `sealed_json` / `read_sealed_json`), and a
cache that cannot be written is reported (`cache_problem`) while the run goes on without it."""
from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from selector.errors import InputError

log = logging.getLogger(__name__)


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


# ------------------------------------------------------------------------------------------ cache files
# Every cache file is checksummed when written and verified when read. Files are checked with zlib.crc32 over
# 16 MB blocks (3.3 GB/s on one core here, against 0.9 GB/s for blake2b and sha256; bench/cache_check.py), so
# even a 1.28M x 512 re-open can read and check every byte. CRC-32 finds accidental damage (torn writes, bit
# flips, truncation, junk); it is no defence against someone who may write the cache folder.
_BLOCK = 1 << 24


class CacheCorrupt(ValueError):
    """A cache file is missing, damaged or does not match what was recorded when it was written."""


def file_record(path) -> dict:
    """{"size": bytes, "crc32": hex} of the file at path, read in 16 MB blocks into one buffer. One thread: on a
    busy 2-core machine more threads cost more CPU (fresh buffers, contention) and gain no time."""
    crc, size = 0, 0
    with open(path, "rb", buffering=0) as f:
        buf = memoryview(bytearray(_BLOCK))
        while k := f.readinto(buf):
            crc = zlib.crc32(buf[:k], crc)
            size += k
    return {"size": size, "crc32": f"{crc:08x}"}


def check_file(path, record) -> None:
    """CacheCorrupt unless the file at path has the size and checksum in record (the size is compared first:
    a truncated or grown file costs no read)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise CacheCorrupt(f"{path.name} is missing or not a file")
        size = path.stat().st_size
        if not isinstance(record, dict) or size != record.get("size"):
            raise CacheCorrupt(f"{path.name} has {size} bytes, {record.get('size') if isinstance(record, dict) else '?'} "
                               "were written")
        if file_record(path) != record:
            raise CacheCorrupt(f"{path.name} does not match its checksum")
    except OSError as exc:
        raise CacheCorrupt(f"{path.name} cannot be read ({exc.strerror or exc})") from exc


def sealed_json(obj: dict) -> bytes:
    """obj as JSON with a "checksum" entry over the rest: read_sealed_json finds any edit."""
    body = {k: v for k, v in obj.items() if k != "checksum"}
    return json.dumps({**body, "checksum": _json_digest(body)}, indent=1, sort_keys=True).encode()


def read_sealed_json(path) -> dict:
    """The dict written by sealed_json at path (without "checksum"); CacheCorrupt when it is missing, is not
    JSON, or was changed since it was written."""
    if not Path(path).is_file():        # a folder, a symlink loop, a pipe: nothing to read (and never wait on it)
        raise CacheCorrupt(f"{Path(path).name} is missing or not a file")
    try:
        obj = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CacheCorrupt(f"{Path(path).name} is unreadable ({getattr(exc, 'strerror', None) or exc})") from exc
    if not isinstance(obj, dict) or "checksum" not in obj:
        raise CacheCorrupt(f"{Path(path).name} has no checksum")
    body = {k: v for k, v in obj.items() if k != "checksum"}
    if obj["checksum"] != _json_digest(body):
        raise CacheCorrupt(f"{Path(path).name} was changed after it was written")
    return body


def _json_digest(body) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def file_digests(paths) -> np.ndarray:
    """(len(paths), 16) uint8: blake2b of each file's contents; zeros for an empty path or an unreadable file."""
    out = np.zeros((len(paths), 16), np.uint8)
    for i, p in enumerate(paths):
        if p:
            try:
                h = hashlib.blake2b(digest_size=16)
                with open(p, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                out[i] = np.frombuffer(h.digest(), np.uint8)
            except OSError:
                pass
    return out


def remove_entry(path) -> None:
    """Remove a cache entry, whatever it is (file, symlink, symlink loop, folder); errors are ignored."""
    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def clear_way(path) -> Path:
    """Remove what stands where a cache file is to be written when it is not a file (a folder, a symlink
    loop), so the write can replace it. Returns the path."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_file():
        remove_entry(path)
    return path


def entry_folder(path) -> Path:
    """path as a folder inside a cache (made when absent); an entry in the way (a file, a symlink loop) is
    replaced. OSError when the folder above cannot be written."""
    path = Path(path)
    if not path.is_dir() and os.path.lexists(path):
        remove_entry(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def swap_in(tmp: Path, path: Path) -> None:
    """Move the complete folder tmp to path; what was at path is removed only once tmp is in its place."""
    old = None
    if os.path.lexists(path):
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        remove_entry(old)
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError:
        if old is not None:
            os.replace(old, path)
        raise
    if old is not None:
        remove_entry(old)


# The cache problems (unwritable or full cache folder) met while a block runs, for the app to show.
_PROBLEMS: contextvars.ContextVar = contextvars.ContextVar("selector_cache_problems", default=None)


@contextlib.contextmanager
def cache_problems():
    """Collect the messages cache_problem reports in this block (this thread only) into the list yielded; an
    enclosing block gets them too."""
    found: list[str] = []
    token = _PROBLEMS.set(found)
    try:
        yield found
    finally:
        _PROBLEMS.reset(token)
        outer = _PROBLEMS.get()
        if outer is not None:
            outer.extend(m for m in found if m not in outer)


def cache_problem(message: str) -> None:
    """Log a warning that a cache could not be written or read; the run goes on without it."""
    log.warning(message)
    found = _PROBLEMS.get()
    if found is not None and message not in found:
        found.append(message)


def unwritable(what: str, where, exc: OSError) -> str:
    """The message for a cache that cannot be written: what, where, why, and what to do."""
    why = exc.strerror or type(exc).__name__
    blocker = next((p for p in [Path(where), *Path(where).parents] if os.path.lexists(p) and not p.is_dir()), None)
    if exc.errno == errno.ENOSPC:
        fix = "free some space there"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "make it writable"
    elif blocker is not None:
        what_it_is = "a symlink that leads to no folder (a loop?)" if blocker.is_symlink() else "a file, not a folder"
        why, fix = f"{blocker} is {what_it_is}", f"move {blocker} away"
    else:
        fix = "check the folder"
    return (f"cannot write the {what} in {where} ({why}); the run goes on without caching it. To cache it, {fix} "
            "or choose another cache folder (--cache-dir or SELECTOR_CACHE_DIR).")
