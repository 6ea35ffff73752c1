"""The label audit at many classes: the second-round network's step budget against no budget and against the
discriminant alone.

The audit's second round trains a one-hidden-layer network per fold (`selector.experts.fit_mlp`). A step costs
h (d + C) multiply-adds per row, so at 1,000 classes it costs three times as much as at 10 with 512-d
embeddings. Past `MLP_BUDGET_CLASSES` classes the network takes proportionally fewer steps
(`selector.experts.mlp_steps`). This benchmark runs the same audit three ways on one synthetic 1,000-class set
whose classes overlap (`_synthetic.hierarchical`: superclasses of ten fine classes, zero-shot about 0.71), with
20% of the labels flipped uniformly:

  budget       the engine as it is
  no budget    MLP_BUDGET_CLASSES raised past the class count: the step count of 10 classes
  discriminant MLP_MIN_ROWS raised past n: the second round refits the linear discriminant, no network

    .venv/bin/python bench/many_classes.py [--n 60000] [--classes 1000] [--quick] [--out bench/results/many_classes.md]

Writes the markdown fragment and bench/results/many_classes.json (machine, date, command, load, figures).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from _machine import command_line, cpu_and_memory, write_results  # noqa: E402
from _synthetic import hierarchical  # noqa: E402

VARIANTS = ("budget", "no budget", "discriminant")


def run(variant: str, X, T, noisy, flipped, n_classes: int) -> dict:
    from selector import audit, experts
    from selector.noise import audit_metrics
    saved = experts.MLP_BUDGET_CLASSES, audit.MLP_MIN_ROWS
    experts.MLP_BUDGET_CLASSES = n_classes if variant == "no budget" else saved[0]
    audit.MLP_MIN_ROWS = len(X) + 1 if variant == "discriminant" else saved[1]
    try:
        steps = 0 if variant == "discriminant" else experts.mlp_steps(len(X) * 4 // 5, X.shape[1], n_classes)
        t = time.perf_counter()
        result = audit.audit_labels(X, T, noisy, seed=0)
        wall = time.perf_counter() - t
    finally:
        experts.MLP_BUDGET_CLASSES, audit.MLP_MIN_ROWS = saved
    m = audit_metrics(result.noise_score, result.flagged, flipped)
    return {"variant": variant, "steps_per_fold": steps, "audit_s": wall, "load": os.getloadavg()[0],
            **{k: float(v) for k, v in m.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=0.2, help="share of labels flipped uniformly")
    ap.add_argument("--quick", action="store_true", help="20,000 rows")
    ap.add_argument("--out", default=str(HERE / "results" / "many_classes.md"))
    args = ap.parse_args(argv)
    n = 20_000 if args.quick and args.n == 60_000 else args.n
    from selector.noise import inject_noise
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    X, T, y = hierarchical(n, n_classes=args.classes)
    zero_shot = float(((X @ T.T).argmax(1) == y).mean())
    noisy, flipped = inject_noise(y, rate=args.rate, mode="uniform", n_classes=args.classes, seed=1)
    rows = []
    for variant in VARIANTS:
        rows.append(run(variant, X, T, noisy, flipped, args.classes))
        print(rows[-1], flush=True)
    load_after = os.getloadavg()
    import torch
    machine = (f"{cpu_and_memory()}; {platform.platform()}; Python {platform.python_version()}, "
               f"torch {torch.__version__}")
    date = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    command = command_line(__file__, argv)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    lines = [f"## The label audit at {args.classes:,} classes: the network's step budget", "",
             f"- date: {date}; machine: {machine}",
             f"- load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}; command: `{command}`; "
             f"total {(time.perf_counter() - t0) / 60:.1f} min; peak RSS {peak:.1f} GB",
             f"- data: {n:,} synthetic unit-norm 512-d rows, {args.classes:,} classes in superclasses of ten "
             f"(`_synthetic.hierarchical`), zero-shot accuracy {zero_shot:.3f}; {args.rate:.0%} of labels flipped "
             f"uniformly ({int(flipped.sum()):,} rows); one run each, in one process, in this order", "",
             "| second round | steps per fold | audit | AUROC | F1 | flagged / true | load |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['steps_per_fold']:,} | {r['audit_s']:.1f} s | {r['auroc']:.4f} | "
                     f"{r['f1']:.4f} | {r['n_flagged'] / r['n_true']:.3f} | {r['load']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args.out, text, name="many_classes", date=date, machine=machine, command=command,
                  load=(load_before[0], load_after[0]), n=n, classes=args.classes, rate=args.rate,
                  zero_shot=zero_shot, peak_rss_gb=peak, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
