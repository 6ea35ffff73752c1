"""How much of the machine the engine uses: thread counts from the machine or a setting, never a literal.

`n_threads()` is $SELECTOR_THREADS when set, else the CPUs this process may run on. Work that is split
into many small products (the label audit, the adapters' batches, the paper's loop) runs on one thread
whatever the machine: below about 5e7 flops per call, threads cost more in synchronisation than they
save (measured: the 60k x 128 audit took 0.79 s on one BLAS thread against 1.29 s on two, idle 2-core
machine). Large products use `n_threads()`.
"""
from __future__ import annotations

import contextlib
import os

from selector.errors import InputError

SMALL_WORK_FLOPS = 5e7
"""Per-call work below which a product runs single-threaded (see the module docstring)."""


def n_threads() -> int:
    """$SELECTOR_THREADS, else the number of CPUs this process may use (at least 1)."""
    raw = os.environ.get("SELECTOR_THREADS", "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise InputError(f"SELECTOR_THREADS must be a positive integer; got {raw!r}. Unset it to use "
                             "every CPU this process may run on.")
        return value
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads_for(flops_per_call: float) -> int:
    """1 for small per-call work, else n_threads()."""
    return 1 if flops_per_call < SMALL_WORK_FLOPS else n_threads()


def loader_workers() -> int:
    """Image-decoding worker processes for an encoder: one per CPU, at most 8 (on 2 cores, 2 workers kept
    the model fed: 0.98 of bare forward speed in bench/embed_speed.py)."""
    return min(8, n_threads())


@contextlib.contextmanager
def blas_threads(n: int):
    """Limit numpy's BLAS to n threads for the block."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn depends on threadpoolctl, so this is rare
        yield
        return
    with threadpool_limits(limits=max(1, int(n)), user_api="blas"):
        yield


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch's intra-op work on n threads for the block; the process-wide setting is restored after."""
    import torch
    before = torch.get_num_threads()
    n = max(1, int(n))
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)
