"""Real faults for the fault-injection tests: damaged files, read-only folders, a full disk, a tiny CLIP that a
CLI process can load by name (plain functions and context managers; the tests are in test_faults_*.py)."""
import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DAMAGES = ("truncated", "bit-flipped", "junk")

TINY_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def damage(path: Path, how: str) -> None:
    """Damage the file at path in place: cut to half its size, one bit flipped in its middle, or its bytes
    replaced by junk of the same length."""
    data = bytearray(Path(path).read_bytes())
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "bit-flipped":
        data[len(data) // 2] ^= 0x10
    elif how == "junk":
        data = bytearray(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    else:
        raise ValueError(how)
    Path(path).write_bytes(bytes(data))


def tiny_clip_folder(folder: Path) -> str:
    """A random-init tiny open_clip model as a 'local-dir:' folder: the form a CLI process can load by name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {}}))
    return f"local-dir:{folder}"


def image_folder(root: Path, *, per_class: int = 16, classes=("cat", "dog", "owl"), size=(20, 24),
                 suffix: str = ".png", seed: int = 0) -> Path:
    """root/<class>/<k><suffix>: random images of one size (with .bmp every file has the same byte size)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / c / f"{k:03d}{suffix}")
    return root


def _root() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def read_only(folder: Path):
    """Make folder (and everything under it) read-only for this process, really: chmod for a normal user; a
    read-only bind mount for root, whom chmod does not stop (skips with the reason where mounting is refused)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not _root():
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if not p.is_symlink()}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield folder
        finally:
            for p, m in modes.items():
                p.chmod(m)
        return
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"running as root, where chmod does not stop writes, and a read-only bind mount was refused "
                    f"({bind.stderr.strip() or bind.returncode})")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True)
        if ro.returncode != 0:
            pytest.skip(f"running as root; remounting {folder} read-only was refused ({ro.stderr.strip()})")
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], capture_output=True)


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "2m"):
    """A tmpfs of `size` mounted at folder (root only; skips with the reason elsewhere), unmounted after."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not _root():
        pytest.skip("mounting a small tmpfs to fill needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs ({done.stderr.strip() or done.returncode})")
    try:
        yield folder
    finally:   # lazily: memory-mapped cache files of results still alive keep it busy until they are freed
        subprocess.run(["umount", "--lazy", str(folder)], capture_output=True)


def fill_disk(folder: Path) -> Path:
    """Fill the filesystem of folder to the last byte with one file; returns it (delete it to free the space)."""
    filler = Path(folder) / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for block in (1 << 20, 4096, 1):
            data = b"\0" * block
            while True:
                try:
                    os.write(fd, data)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst
