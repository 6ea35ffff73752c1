"""The demo encoder's image tower: eager PyTorch against the prepared CPU tower (`selector.encoders.inference`).

    .venv/bin/python bench/demo_embed_speed.py [--quick] [--rows 20000] [--repeats 3]
                                               [--out bench/results/demo_embed_speed.md]

Both embed the same Fashion-MNIST train images (28x28, in memory) with the shipped demo encoder's weights, batch
256, in one process, alternating eager / prepared --repeats times (paired, so a busy machine slows both alike);
the table gives the median seconds, images per second and the largest difference between the two embeddings.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _machine import command_line, cpu_and_memory, write_results  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 rows, 2 repeats")
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "demo_embed_speed.md"))
    args = ap.parse_args(argv)
    import torch
    from selector.encoders import open_encoder
    from selector.encoders.demo import _to_input
    from selector.sources import load_fashion_mnist
    rows, repeats = (2_000, 2) if args.quick else (args.rows, args.repeats)
    load = os.getloadavg()
    pixels = load_fashion_mnist(split="train").pixels[:rows]
    enc = open_encoder("demo")
    towers = {"eager PyTorch (net.embed_images)": enc.net.embed_images, "prepared CPU tower": enc.image_tower}

    def embed(tower):
        with torch.inference_mode():
            return np.concatenate([tower(_to_input(pixels[s:s + 256])).numpy() for s in range(0, rows, 256)])

    outputs = {name: embed(tower) for name, tower in towers.items()}      # warm-up (and the outputs compared)
    seconds = {name: [] for name in towers}
    for _ in range(repeats):
        for name, tower in towers.items():
            t0 = time.perf_counter()
            embed(tower)
            seconds[name].append(time.perf_counter() - t0)
    diff = float(np.abs(outputs["prepared CPU tower"] - outputs["eager PyTorch (net.embed_images)"]).max())
    med = {name: float(np.median(s)) for name, s in seconds.items()}
    lines = ["## The demo encoder's image tower: eager PyTorch against the prepared CPU tower", "",
             f"- date: {dt.datetime.now():%Y-%m-%d %H:%M}; machine: {cpu_and_memory()}; torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads; load average before / after {load[0]:.2f} / "
             f"{os.getloadavg()[0]:.2f}; "
             f"command: `{command_line(__file__, argv)}`",
             f"- {rows:,} Fashion-MNIST train images, batch 256, medians of {repeats} paired repeats; largest "
             f"difference between the two embeddings (unit vectors): {diff:.1e}", "",
             "| tower | seconds | images/s | speed-up |", "|---|---:|---:|---:|"]
    base = med["eager PyTorch (net.embed_images)"]
    lines += [f"| {name} | {m:.2f} | {rows / m:,.0f} | {base / m:.1f}x |" for name, m in med.items()]
    text = "\n".join(lines) + "\n"
    write_results(args.out, text, name="demo_embed_speed", date=dt.datetime.now().isoformat(timespec="minutes"),
                  machine=cpu_and_memory(), command=command_line(__file__, argv), load=(load[0], os.getloadavg()[0]),
                  rows=rows, seconds=seconds, median_seconds=med, max_abs_difference=diff)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
