"""`LazyArray`: an array whose shape is known now and whose bytes are read the first time they are used.

A re-opened run whose results are cached needs the frozen embeddings only where a page compares images (the
Duplicates page); at 1.28M x 512 they are 2.6 GB that a re-open would otherwise read, check and normalise
before showing anything. The .npz loader and the result cache hand them over as a LazyArray: the shape and
dtype for checks and fingerprints at once, the values (read by `load`, once, from bytes verified against their
checksum) only when asked for. numpy functions take it as an array (`np.asarray`, `@`, indexing)."""
from __future__ import annotations

import threading
from typing import Callable

import numpy as np


class LazyArray:
    """shape, dtype now; `load()` -> the ndarray, read by `read` on first use and kept (one read however many
    threads ask at once: the app's sessions share one run)."""

    def __init__(self, shape: tuple, dtype, read: Callable[[], np.ndarray]):
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self._read, self._value, self._lock = read, None, threading.Lock()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def __len__(self) -> int:
        return self.shape[0]

    def load(self) -> np.ndarray:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    value = np.asarray(self._read(), dtype=self.dtype)
                    if value.shape != self.shape:
                        raise ValueError(f"a lazily read array has shape {value.shape}, {self.shape} was expected")
                    self._value, self._read = value, None
        return self._value

    def take(self, rows) -> "LazyArray":
        """The rows `rows` (indices), still unread."""
        rows = np.asarray(rows)
        return LazyArray((len(rows), *self.shape[1:]), self.dtype, lambda: self.load()[rows])

    def __array__(self, dtype=None, copy=None):
        value = self.load()
        return value if dtype is None else value.astype(dtype, copy=False)

    def __getitem__(self, index):
        return self.load()[index]

    def __reduce__(self):
        """Pickled (e.g. handed to Ray workers) as the array itself, read now."""
        return np.asarray, (self.load(),)

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype}, {'read' if self.loaded else 'not read yet'})"


def materialize(a):
    """a as an ndarray if it is a LazyArray (read now), else a unchanged."""
    return a.load() if isinstance(a, LazyArray) else a
