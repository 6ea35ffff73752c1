"""The finished stages of a run in progress, so that a killed run resumes after its last finished stage.

`Checkpoints(folder)` keeps each finished stage's arrays (the adapted embeddings, the kNN) as .npy files in
a folder beside the result cache, each written to a temporary file and renamed into place, with a small
sealed JSON file per stage that lists them with their sizes and CRC-32 (written last: a stage without it never
finished). A file that does not match its listing, or a listing that was changed, is not used; the stage is
computed again. `load_or_run` removes the folder once the run's result is cached; a second run of the same
inputs that finds it removed while it reads a stage computes that stage, with no warning.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from selector.files import (CacheCorrupt, atomic_write, atomic_write_bytes, check_file, clear_way,
                            entry_folder,
                            file_record, read_sealed_json, remove_entry, sealed_json)

log = logging.getLogger(__name__)


class Checkpoints:
    """Stage checkpoints under `folder` (see the module docstring)."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def save(self, stage: str, info: dict | None = None, **arrays) -> None:
        """Write the stage's arrays, then its listing; a failure to write only costs the checkpoint."""
        try:
            entry_folder(self.folder)
            listing = {"info": info or {}, "arrays": {}}
            for name, arr in arrays.items():
                arr = np.ascontiguousarray(arr)
                path = clear_way(self.folder / f"{stage}.{name}.npy")
                atomic_write(path, lambda f, a=arr: np.save(f, a, allow_pickle=False))
                listing["arrays"][name] = {"shape": list(arr.shape), "dtype": arr.dtype.str, **file_record(path)}
            atomic_write_bytes(clear_way(self.folder / f"{stage}.json"), sealed_json(listing))
        except OSError as exc:   # the result cache, written next to it, will say so to the user
            log.info("could not checkpoint stage %s in %s (%s); a killed run will compute it again", stage,
                     self.folder, exc.strerror or exc)

    def load(self, stage: str) -> tuple[dict, dict] | None:
        """(arrays, info) of a finished stage, the arrays memory-mapped copy-on-write; None when the stage did
        not finish or a file does not match its listing."""
        listing_path = self.folder / f"{stage}.json"
        try:
            if not listing_path.is_file():
                return None
            listing = read_sealed_json(listing_path)
            arrays = {}
            for name, meta in listing["arrays"].items():
                path = self.folder / f"{stage}.{name}.npy"
                check_file(path, {"size": meta["size"], "crc32": meta["crc32"]})
                arr = np.load(path, mmap_mode="c", allow_pickle=False)
                if list(arr.shape) != meta["shape"] or arr.dtype.str != meta["dtype"]:
                    raise CacheCorrupt(f"{path.name} holds {arr.shape} {arr.dtype}, not what its listing says")
                arrays[name] = arr
            return arrays, listing["info"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not listing_path.exists():      # cleared meanwhile by a run of the same inputs that finished first
                log.info("checkpoint of stage %s in %s was removed while it was read", stage, self.folder)
                return None
            log.warning("checkpoint of stage %s in %s is unusable (%s); computing it again", stage, self.folder, exc)
            return None

    def clear(self) -> None:
        remove_entry(self.folder)
