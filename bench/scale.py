"""The engine at ImageNet size on one machine: the CLI end to end on cached embeddings, per stage.

For each size, synthetic embeddings shaped like adapted CLIP features (bench/_synthetic.py: 1,000 classes,
512-d) are written once as an .npz, then the real CLI runs on them as a user would, in its own process:

    selector --source embeddings --path <npz> --map umap --noise-mode uniform --noise-rate 0.2 --out <parquet>

and a second, identical run re-opens the cached result. Recorded per size: wall time and peak RSS of each
process (os.wait4), each stage's time from the run manifest, the kNN index with its recall@10, and the
audit against the planted flips (AUROC, F1).

    .venv/bin/python bench/scale.py [--sizes 60000 250000] [--map umap|pca|none] [--quick] [--out bench/results/scale.md]

--map umap (the default) is the whole engine, the map included (above 100,000 rows: 50,000 landmarks, the rest
placed from the kNN graph); --map none leaves the map out.

Writes the markdown fragment and bench/results/scale.json (machine, date, command, load, figures).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _machine import command_line, cpu_and_memory, write_results  # noqa: E402
from _synthetic import write_npz  # noqa: E402


def run_cli(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS GB, stderr tail) of one `selector` CLI process."""
    exe = Path(sys.executable).with_name("selector")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"selector {' '.join(args)} exited {proc.returncode}:\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 2 ** 20, err[-2000:]


def measure(n: int, work: Path, map_kind: str = "umap") -> dict:
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    npz = write_npz(work / f"emb_{n}.npz", n)
    cache, out = work / f"cache_{n}", work / f"out_{n}.parquet"
    shutil.rmtree(cache, ignore_errors=True)          # the first run computes everything (a reused --work too)
    args = ["--source", "embeddings", "--path", str(npz), "--map", map_kind, "--noise-mode", "uniform",
            "--noise-rate", "0.2", "--cache-dir", str(cache), "--out", str(out)]
    load = os.getloadavg()[0]
    wall, rss, _ = run_cli(args)
    manifest = json.loads(out.with_suffix(".manifest.json").read_text())
    wall_again, rss_again, _ = run_cli(args)
    table = pd.read_parquet(out, columns=["noise_score", "flagged", "noise_injected"])
    truth, flagged = table["noise_injected"].to_numpy(), table["flagged"].to_numpy()
    return {"n": n, "load_before": load, "wall_s": wall, "peak_rss_gb": rss, "reopen_wall_s": wall_again,
            "reopen_peak_rss_gb": rss_again, "stages_s": manifest["timings_s"], "neighbors": manifest["neighbors"],
            "auroc": float(roc_auc_score(truth, table["noise_score"])),
            "f1": float(2 * (flagged & truth).sum() / (flagged.sum() + truth.sum())),
            "flagged": int(flagged.sum()), "planted": int(truth.sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[60_000, 250_000])
    ap.add_argument("--quick", action="store_true", help="60,000 rows only")
    ap.add_argument("--work", help="folder for the .npz files and caches (default: a temporary one)")
    ap.add_argument("--map", default="umap", choices=("umap", "pca", "none"), help="the CLI's --map")
    ap.add_argument("--out", default=str(HERE / "results" / "scale.md"))
    args = ap.parse_args(argv)
    sizes = [60_000] if args.quick else args.sizes
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="selector-scale-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for n in sizes:
            rows.append(measure(n, work, args.map))
            print(json.dumps(rows[-1]), flush=True)
    load_after = os.getloadavg()
    import torch
    machine = f"{cpu_and_memory()}; {platform.platform()}; Python {platform.python_version()}, numpy " \
              f"{np.__version__}, torch {torch.__version__}"
    date = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    command = command_line(__file__, argv)
    stages = ["embed_s", "adapt_s", "neighbors_s", "score_audit_s", "map_s"]
    lines = ["## The engine at scale: the CLI on cached embeddings", "",
             f"- date: {date}; machine: {machine}",
             f"- load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}; command: `{command}`; "
             f"total {(time.perf_counter() - t0) / 60:.1f} min",
             "- data: synthetic unit-norm 512-d embeddings, 1,000 classes (bench/_synthetic.py), 20% uniform flips "
             f"planted by the CLI; `--map {args.map}`; every figure from one run per size", "",
             "| rows | wall | peak RSS | " + " | ".join(s.removesuffix("_s") for s in stages) +
             " | kNN index | recall@10 | re-open | AUROC | F1 |",
             "|---:|---:|---:|" + "---:|" * len(stages) + "---|---:|---:|---:|---:|"]
    for r in rows:
        nb = r["neighbors"]
        lines.append(f"| {r['n']:,} | {r['wall_s'] / 60:.1f} min | {r['peak_rss_gb']:.1f} GB | "
                     + " | ".join(f"{r['stages_s'].get(s, 0):.0f} s" for s in stages)
                     + f" | {nb['index']}{' nprobe ' + str(nb['nprobe']) if nb['nprobe'] else ''} | "
                     f"{nb['recall_at_10']:.3f} | {r['reopen_wall_s']:.1f} s | {r['auroc']:.3f} | {r['f1']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args.out, text, name="scale", date=date, machine=machine, command=command,
                  load=(load_before[0], load_after[0]), rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
