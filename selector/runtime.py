"""What the machine offers and how much of it the engine uses: thread counts from the machine or a setting,
never a literal; CPU features, and the kernels faiss's BLAS runs (`import_faiss` picks checked ones).

`n_threads()` is $SELECTOR_THREADS when set, else the CPUs this process may run on. Work that is split
into many small products (the label audit, the adapters' batches, the paper's loop) runs on one thread
whatever the machine: below about 5e7 flops per call, threads cost more in synchronisation than they
save (measured: the 60k x 128 audit took 0.79 s on one BLAS thread against 1.29 s on two, idle 2-core
machine). Large products use `n_threads()`.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys

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


# OpenBLAS core types whose sgemm kernels stop short of AVX2: what an old OpenBLAS falls back to on a CPU it
# does not recognise (faiss-cpu bundles OpenBLAS 0.3.15).
_PRE_AVX2_CORES = {"prescott", "katmai", "core2", "penryn", "dunnington", "nehalem", "atom", "sandybridge",
                   "bulldozer", "piledriver", "barcelona", "opteron", "generic"}


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


CORE_TYPE_ENV = "OPENBLAS_CORETYPE"
# OpenBLAS core types and the CPU flags their sgemm kernels use, best first (names as OpenBLAS 0.3.15 knows them)
_CHECKED_CORES = (("SkylakeX", {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}),
                  ("Haswell", {"avx2", "fma"}))


def checked_core_type() -> str | None:
    """The best OpenBLAS core type whose instructions this CPU reports (/proc/cpuinfo flags, which the kernel
    clears for state the OS does not save), or None where none is known to fit."""
    flags = cpu_flags()
    return next((core for core, needs in _CHECKED_CORES if needs <= flags), None)


def import_faiss():
    """faiss, imported so that its bundled OpenBLAS runs kernels this CPU has: OpenBLAS 0.3.15 falls back to
    its generic (pre-AVX2) kernels on CPUs it does not recognise, ~4x slower for every flat search and every
    IVF training (bench/exact_search.py). While faiss loads, OPENBLAS_CORETYPE is set to `checked_core_type()`
    unless the user set it; other libraries keep their own detection. Where it still runs generic kernels
    (faiss imported earlier by other code, a CPU without AVX2), `faiss_blas` says so and exact search runs in
    torch blocks."""
    if "faiss" in sys.modules:
        return sys.modules["faiss"]
    core = None if os.environ.get(CORE_TYPE_ENV) else checked_core_type()
    if core:
        os.environ[CORE_TYPE_ENV] = core
    try:
        import faiss
    finally:
        if core:
            os.environ.pop(CORE_TYPE_ENV, None)
    return faiss


@functools.lru_cache(maxsize=1)
def faiss_blas() -> dict:
    """Which kernels faiss's own BLAS runs: {"core": OpenBLAS core type or None, "generic": True when that
    core lacks AVX2 on a CPU that has it (faiss's exact search then runs ~4x slower than it could)}.
    Imports faiss (`import_faiss`)."""
    import_faiss()        # loads faiss's bundled BLAS so threadpoolctl can see it
    try:
        from threadpoolctl import threadpool_info
        infos = [i for i in threadpool_info() if i.get("internal_api") == "openblas" and "faiss" in i.get("filepath", "")]
    except ImportError:
        infos = []
    core = infos[0].get("architecture") if infos else None
    generic = bool(core) and core.lower() in _PRE_AVX2_CORES and "avx2" in cpu_flags()
    return {"core": core, "generic": generic}


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB (Linux reports KiB, macOS bytes)."""
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 30 if sys.platform == "darwin" else 2 ** 20)


def available_memory_gb() -> float | None:
    """Memory the system could give this process now (Linux MemAvailable), in GB; None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2 ** 20
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        return None


# Where a CUDA driver shows itself on Linux: its control device, its /proc entry, WSL2's GPU device.
_CUDA_DRIVER_PATHS = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/dxg")


def cuda_available() -> bool:
    """torch.cuda.is_available(), without importing torch (about 1.5 s) on a Linux machine with no NVIDIA
    driver: the Home page asks before anything else needs torch."""
    if "torch" not in sys.modules and sys.platform.startswith("linux") and not any(
            os.path.exists(p) for p in _CUDA_DRIVER_PATHS):
        return False
    import torch
    return torch.cuda.is_available()
