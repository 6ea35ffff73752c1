"""Shared-server mode: the one check on every path a user gives (data folders, manifests, embeddings files, image
files listed in them, checkpoints, cache folders).

SELECTOR_ALLOWED_ROOTS=/data:/srv/images (folders separated by ':', ';' on Windows) confines them to those
folders: a path is resolved first (`..`, symlinks, relative to the working folder), then refused with an
InputError unless it lies inside one of them. The server's own cache folder ($SELECTOR_CACHE_DIR) is allowed as a
cache folder, and its uploads/ folder (where the app keeps uploaded manifests and embeddings files) as data.
Unset or empty: every path is allowed. SELECTOR_OFFLINE=1 turns off every download (model weights from the
Hugging Face hub, torchvision datasets): see `selector.network`.
"""
from __future__ import annotations

import os
from pathlib import Path

from selector.errors import InputError, describe_rows

ROOTS_ENV = "SELECTOR_ALLOWED_ROOTS"
UPLOADS = "uploads"   # the app's upload folder inside the cache folder


def allowed_roots() -> tuple[Path, ...] | None:
    """The resolved allowed folders, or None when every path is allowed (read on every call)."""
    parts = [p.strip() for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return tuple(Path(os.path.realpath(os.path.expanduser(p))) for p in parts) or None


def _inside(real: Path, folders) -> bool:
    return any(real == f or real.is_relative_to(f) for f in folders)


def _cache_folder() -> Path:
    from selector.files import default_cache_dir
    return Path(os.path.realpath(default_cache_dir().expanduser()))


def _refuse(what: str, given, roots) -> InputError:
    return InputError(f"{what} {str(given)!r} is outside the folders this server allows "
                      f"({os.pathsep.join(map(str, roots))}, set by {ROOTS_ENV}); give a path inside one of them.")


def check_path(path, what: str = "path") -> Path:
    """path, with '~' expanded; InputError when allowed roots are set and its resolved form (symlinks and '..'
    followed) is outside them. Files the app saved in the cache folder's uploads/ are allowed."""
    given = Path(os.path.expanduser(str(path)))
    roots = allowed_roots()
    if roots is None:
        return given
    real = Path(os.path.realpath(given))
    if not _inside(real, roots + (_cache_folder() / UPLOADS,)):
        raise _refuse(what, path, roots)
    return given


def check_cache_dir(path) -> Path:
    """check_path for a cache folder: the server's own ($SELECTOR_CACHE_DIR, or the default) is always allowed."""
    given = Path(os.path.expanduser(str(path)))
    roots = allowed_roots()
    if roots is None or Path(os.path.realpath(given)) == _cache_folder():
        return given
    return check_path(given, "cache folder")


def check_files(paths, what: str) -> None:
    """InputError naming the first few of `paths` (image files listed by a dataset) that resolve outside the
    allowed roots; empty paths (in-memory images) are skipped."""
    roots = allowed_roots()
    if roots is None:
        return
    bad = [p for p in paths if p and not _inside(Path(os.path.realpath(p)), roots)]
    if bad:
        raise InputError(f"{len(bad)} image file(s) of {what} are outside the folders this server allows "
                         f"({os.pathsep.join(map(str, roots))}, set by {ROOTS_ENV}): {describe_rows(bad, 3)}. "
                         "Keep the images, and any symlinks to them, inside those folders.")
