"""What machine a benchmark ran on: CPU model and memory, for the header of each results table."""
from __future__ import annotations

import os
import platform
from pathlib import Path


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


def command_line(script: str, argv) -> str:
    """How a benchmark was invoked, e.g. 'python bench/scale.py --quick'."""
    import shlex
    import sys
    return "python " + " ".join(shlex.quote(a) for a in [f"bench/{Path(script).name}",
                                                          *(sys.argv[1:] if argv is None else argv)])


def write_results(out, text: str, *, name: str, date: str, machine: str, command: str, load: tuple, **figures):
    """The markdown fragment at `out`, and bench/results/<name>.json beside it with the figures."""
    import json
    out = Path(out)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {"name": name, "date": date, "machine": machine, "command": command,
         "load_average": {"before": load[0], "after": load[1]}, **figures}, indent=1))
