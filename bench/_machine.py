"""What machine a benchmark ran on: CPU model and memory, for the header of each results table."""
from __future__ import annotations

import os
import platform


def cpu_and_memory() -> str:
    """e.g. 'AMD EPYC 7B13, 2 logical CPUs, 24 GB RAM' (model from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    except (ValueError, OSError):
        mem = float("nan")
    return f"{cpu}, {os.cpu_count()} logical CPUs, {mem:.0f} GB RAM"
