"""The finished stages of a run in progress, so that a killed run resumes after its last finished stage.

`Checkpoints(folder)` keeps each finished stage's arrays (the adapted embeddings, the kNN) as .npy files in
a folder beside the result cache, each written to a temporary file, checksummed and renamed into place, with
a small JSON file per stage that lists them (written last: a stage without it never finished). A file whose
checksum or shape does not match is not used; the stage is computed again. `load_or_run` removes the folder
once the run's result is cached.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from selector.files import atomic_write, atomic_write_bytes

log = logging.getLogger(__name__)


def _sha1(arr: np.ndarray) -> str:
    h = hashlib.sha1()
    flat = arr.reshape(-1)
    for s in range(0, len(flat), 1 << 24):
        h.update(np.ascontiguousarray(flat[s:s + (1 << 24)]).data)
    return h.hexdigest()


class Checkpoints:
    """Stage checkpoints under `folder` (see the module docstring)."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def save(self, stage: str, info: dict | None = None, **arrays) -> None:
        """Write the stage's arrays, then its listing; a failure to write only costs the checkpoint."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            listing = {"info": info or {}, "arrays": {}}
            for name, arr in arrays.items():
                arr = np.ascontiguousarray(arr)
                atomic_write(self.folder / f"{stage}.{name}.npy", lambda f, a=arr: np.save(f, a, allow_pickle=False))
                listing["arrays"][name] = {"shape": list(arr.shape), "dtype": arr.dtype.str, "sha1": _sha1(arr)}
            atomic_write_bytes(self.folder / f"{stage}.json", json.dumps(listing).encode())
        except OSError as exc:
            log.warning("could not checkpoint stage %s in %s (%s); a killed run will compute it again",
                        stage, self.folder, exc)

    def load(self, stage: str) -> tuple[dict, dict] | None:
        """(arrays, info) of a finished stage, the arrays memory-mapped copy-on-write; None when the stage did
        not finish or a file does not match its listing."""
        try:
            listing = json.loads((self.folder / f"{stage}.json").read_text())
            arrays = {}
            for name, meta in listing["arrays"].items():
                arr = np.load(self.folder / f"{stage}.{name}.npy", mmap_mode="c", allow_pickle=False)
                if list(arr.shape) != meta["shape"] or arr.dtype.str != meta["dtype"] or _sha1(arr) != meta["sha1"]:
                    raise ValueError(f"{stage}.{name}.npy does not match its checksum")
                arrays[name] = arr
            return arrays, listing["info"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("checkpoint of stage %s in %s is unusable (%s); computing it again", stage, self.folder, exc)
            return None

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
