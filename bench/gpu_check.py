"""The GPU rows of BENCHMARKS.md, measured on a CUDA machine in one short run (about 10 minutes on one GPU).

    .venv/bin/python bench/gpu_check.py [--n 1280000] [--model ViT-B-32] [--skip-engine]

1. Image-tower throughput of an open_clip model (random weights: speed does not depend on them) on
   preprocessed batches: bare fp32 forward against the encoder's autocast precision (bf16 or fp16).
2. The global kNN (k=10, cosine) of `selector.neighbors.Neighbors` on the GPU at n synthetic 512-d rows
   (bench/_synthetic.py): build, search of every row, and the recall@10 it measured.
3. The engine end to end at n rows through the CLI (bench/scale.py, which writes scale_gpu.md/.json).

Writes bench/results/gpu_check.md and .json. Without a CUDA GPU it says what is missing and writes
nothing, so BENCHMARKS.md keeps saying "not yet measured".
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _machine import command_line, cpu_and_memory, write_results  # noqa: E402
from _synthetic import embeddings  # noqa: E402


def forward_rates(model: str, batch: int, seconds: float = 20.0) -> dict:
    """images/s of the image tower on one reused preprocessed batch: fp32 and the encoder's autocast."""
    import torch
    from selector.encoders.openclip import OpenCLIPEncoder
    out = {}
    for precision in ("fp32", "auto"):
        enc = OpenCLIPEncoder(model, pretrained=None, device="cuda", precision=precision, num_workers=0)
        size = enc.preprocess.transforms[0].size
        size = size if isinstance(size, int) else size[0]
        x = torch.randn(batch, 3, size, size, device="cuda")
        with torch.inference_mode(), enc._autocast():
            for _ in range(3):
                enc.model.encode_image(x)
            torch.cuda.synchronize()
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 2:
                enc.model.encode_image(x).float()
                done += batch
            torch.cuda.synchronize()
        out[enc.precision] = done / (time.perf_counter() - t0)
        del enc
        torch.cuda.empty_cache()
    return out


def gpu_knn(n: int) -> dict:
    from selector.neighbors import Neighbors
    X, _, _ = embeddings(n)
    t0 = time.perf_counter()
    index = Neighbors(X, device="gpu")
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.search(X, 10, exclude_self=True)
    return {"n": n, "index": f"{index.backend} {index.kind}", "nlist": index.nlist, "nprobe": index.nprobe,
            "build_s": build, "search_s": time.perf_counter() - t0, "recall_at_10": index.recall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_280_000)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--skip-engine", action="store_true", help="only the forward and kNN rows")
    ap.add_argument("--out", default=str(HERE / "results" / "gpu_check.md"))
    args = ap.parse_args(argv)
    import torch
    from selector.neighbors import gpu_available
    missing = [what for what, ok in (("a CUDA GPU visible to torch", torch.cuda.is_available()),
                                     ("faiss with GPU support (pip install faiss-gpu-cu12)", gpu_available())) if not ok]
    if missing:
        print("gpu_check: not measured; this machine lacks " + " and ".join(missing) + ".", file=sys.stderr)
        return 0
    card = torch.cuda.get_device_name()
    load = os.getloadavg()
    t0 = time.perf_counter()
    rates = forward_rates(args.model, args.batch)
    knn = gpu_knn(args.n)
    print(rates, knn, flush=True)
    if not args.skip_engine:
        subprocess.run([sys.executable, str(HERE / "scale.py"), "--sizes", str(args.n),
                        "--out", str(HERE / "results" / "scale_gpu.md")], check=True)
    auto = next(k for k in rates if k != "fp32")
    lines = ["## GPU", "",
             f"- card: {card}; machine: {cpu_and_memory()}; torch {torch.__version__}; load average before "
             f"{load[0]:.2f}; command: `{command_line(__file__, argv)}`; total {(time.perf_counter() - t0) / 60:.1f} min",
             "", "| measurement | figure |", "|---|---:|",
             f"| {args.model} image tower, batch {args.batch}, fp32 | {rates['fp32']:,.0f} img/s |",
             f"| {args.model} image tower, batch {args.batch}, autocast {auto} | {rates[auto]:,.0f} img/s "
             f"({rates[auto] / rates['fp32']:.2f}x) |",
             f"| kNN k=10 at {knn['n']:,} rows ({knn['index']}, nlist {knn['nlist']}, nprobe {knn['nprobe']}) | build "
             f"{knn['build_s']:.1f} s, search {knn['search_s']:.1f} s, recall@10 {knn['recall_at_10']:.3f} |"]
    if not args.skip_engine:
        lines.append("| the engine end to end | see scale_gpu.md |")
    import datetime as dt
    write_results(args.out, "\n".join(lines) + "\n", name="gpu_check",
                  date=dt.datetime.now().isoformat(timespec="minutes"),
                  machine=f"{card}; {cpu_and_memory()}", command=command_line(__file__, argv),
                  load=(load[0], os.getloadavg()[0]), card=card, forward_img_s=rates, knn=knn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
