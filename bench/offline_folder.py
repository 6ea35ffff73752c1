"""The offline encoder end to end on a folder of PNGs: the CLI on Fashion-MNIST train images written as files.

    .venv/bin/python bench/offline_folder.py [--n 10000] [--quick] [--out bench/results/offline_folder.md]

A seeded, class-stratified subset of Fashion-MNIST TRAIN is written as PNG files in class folders (the
layout of `--source image-folder`); then for each noise setting the CLI runs on it with `--encoder offline`
and the flips planted by `--noise-mode/--noise-rate`, in a fresh cache the first time (the encoder learns
from the images, then embeds them) and from that cache after. The audit is scored on the written table
(`noise_injected` is the truth, `noise_score` and `flagged` the audit). Nothing here saw a label except the
audit's own cross-fitted experts.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _machine import command_line, cpu_and_memory, write_results  # noqa: E402

SETTINGS = (("uniform", 0.2), ("uniform", 0.4), ("confusable", 0.3), ("instance", 0.2))


def write_folder(root: Path, n: int, seed: int = 0) -> int:
    from PIL import Image
    from selector.encoders.demo import load_fashion_mnist_arrays
    from selector.sources.torchvision_sets import FASHION_MNIST_CLASSES
    pix, lab = load_fashion_mnist_arrays("train")
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(np.flatnonzero(lab == c), n // 10, replace=False) for c in range(10)])
    for c, name in enumerate(FASHION_MNIST_CLASSES):
        (root / name.replace("/", "-")).mkdir(parents=True)
    for i in rows:
        Image.fromarray(pix[i]).save(root / FASHION_MNIST_CLASSES[lab[i]].replace("/", "-") / f"{i:05d}.png")
    return len(rows)


def run_cli(folder: Path, cache: Path, out: Path, mode: str, rate: float, seed: int) -> float:
    cmd = [sys.executable, "-m", "selector", "--source", "image-folder", "--path", str(folder), "--encoder",
           "offline", "--map", "none", "--noise-mode", mode, "--noise-rate", str(rate), "--noise-seed", str(seed),
           "--cache-dir", str(cache), "--out", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="images written (stratified; default 10,000)")
    ap.add_argument("--quick", action="store_true", help="2,000 images")
    ap.add_argument("--out", default=str(HERE / "results" / "offline_folder.md"))
    args = ap.parse_args(argv)
    import pandas as pd
    from selector.noise import audit_metrics
    n_want = 2000 if args.quick else args.n
    load_before = os.getloadavg()[0]
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        n = write_folder(tmp / "images", n_want)
        write_s = time.perf_counter() - t0
        for k, (mode, rate) in enumerate(SETTINGS):
            out = tmp / f"{mode}{rate}.csv"
            secs = run_cli(tmp / "images", tmp / "cache", out, mode, rate, seed=0)
            t = pd.read_csv(out, keep_default_na=False)
            truth = t["noise_injected"].astype(str).isin(["True", "true", "1"]).to_numpy()
            flagged = t["flagged"].astype(str).isin(["True", "true", "1"]).to_numpy()
            met = audit_metrics(t["noise_score"].to_numpy(np.float64), flagged, truth)
            met.update(cli_seconds=secs, first_run=k == 0, flagged_over_true=met["n_flagged"] / max(met["n_true"], 1))
            figures[f"{mode} {rate:.0%}"] = met
            rows.append(f"| {mode} {rate:.0%} | {met['auroc']:.3f} | {met['average_precision']:.3f} | "
                        f"{met['precision']:.3f} | {met['recall']:.3f} | {met['f1']:.3f} | "
                        f"{met['flagged_over_true']:.3f} | {secs:.0f}{' (learns + embeds)' if k == 0 else ''} |")
            print(rows[-1], flush=True)
        info = json.loads(next((tmp / "cache" / "offline_encoder").glob("*.json")).read_text())
    load_after = os.getloadavg()[0]
    command = command_line(__file__, argv)
    text = (f"## The offline encoder on a folder of PNGs, through the CLI\n\n"
            f"- date: {dt.datetime.now():%Y-%m-%d %H:%M}; machine: {cpu_and_memory()}; load average before / after "
            f"{load_before:.2f} / {load_after:.2f}; "
            f"command: `{command}`\n- data: {n:,} Fashion-MNIST train images (stratified, seed 0) written as PNG "
            f"files in class folders ({write_s:.0f} s); `selector --source image-folder --encoder offline --map "
            "none --noise-mode M --noise-rate R --noise-seed 0`; the first run learns the encoder from the images "
            f"({info['fit_images']:,} images, {info['patches']:,} patches, {info['seconds']:.0f} s of it) and embeds "
            "them, the later ones read both from the cache. Scored on the written table.\n\n"
            "| setting | AUROC | AP | precision | recall | F1 | flagged / true errors | CLI run (s) |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    write_results(args.out, text, name=Path(args.out).stem, date=dt.date.today().isoformat(),
                  machine=cpu_and_memory(), command=command, load=(load_before, load_after), n=n,
                  write_seconds=write_s, learn_seconds=info["seconds"], settings=figures)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
