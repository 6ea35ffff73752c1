"""Embedding pipeline efficiency: end-to-end images/s over bare model-forward images/s (target >= 0.9).

    .venv/bin/python bench/embed_speed.py [--quick] [--model ViT-B-32] [--out bench/results/embed_speed.md]

End to end = `embed_dataset` on an image folder of real PNG files on disk (decode, resize, batch, forward,
cache write). Bare forward = the same model on already-preprocessed tensors at the same batch size, on the
same device. open_clip runs with random weights (pretrained=None: no weights can be downloaded here); the
speed of a forward pass does not depend on the weight values.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selector.embed import embed_dataset  # noqa: E402
from selector.encoders.openclip import OpenCLIPEncoder  # noqa: E402
from selector.sources import load_fashion_mnist, load_image_folder  # noqa: E402


def write_pngs(folder: Path, n: int) -> None:
    """n Fashion-MNIST images as 28x28 PNG files in folder/<class>/ (decoding real files is part of the work)."""
    from PIL import Image
    pool = load_fashion_mnist(split="test")
    for i in range(n):
        cls = folder / pool.class_names[pool.labels[i]].replace("/", "-")
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pool.pixels[i]).save(cls / f"{i:05d}.png")


def bare_forward(encoder, n: int, batch: int) -> float:
    """images/s of the model alone on preprocessed tensors (one batch reused), same device and precision."""
    import torch
    from PIL import Image
    x = encoder.preprocess(Image.new("RGB", (28, 28))).unsqueeze(0).repeat(batch, 1, 1, 1).to(encoder.device)
    with torch.inference_mode(), encoder._autocast():
        encoder.model.encode_image(x)  # warm-up
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(max(1, n // batch)):
            encoder.model.encode_image(x).float().cpu()
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()
    return max(1, n // batch) * batch / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer images and repeats")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "embed_speed.md"))
    args = p.parse_args(argv)
    n = 256 if args.quick else 1024
    repeats = 1 if args.quick else 3
    encoder = OpenCLIPEncoder(args.model, pretrained=None, num_workers=args.workers)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_pngs(Path(tmp) / "images", n)
        dataset = load_image_folder(Path(tmp) / "images")
        for r in range(repeats):
            bare = bare_forward(encoder, n, args.batch_size)
            t0 = time.perf_counter()
            X, _, ok = embed_dataset(dataset, encoder, cache_dir=Path(tmp) / f"cache{r}", batch_size=args.batch_size)
            end_to_end = n / (time.perf_counter() - t0)
            assert ok.all() and np.isfinite(X).all()
            rows.append((end_to_end, bare))
    e2e = statistics.median(r[0] for r in rows)
    bare = statistics.median(r[1] for r in rows)
    ratios = [a / b for a, b in rows]
    device = str(encoder.device)
    if encoder.device.type == "cuda":
        import torch
        device += f" ({torch.cuda.get_device_name()})"
    lines = [
        "## Embedding pipeline efficiency",
        "",
        f"- date: {datetime.date.today()}; machine: {platform.platform()}, {os.cpu_count()} CPUs; device: {device}, "
        f"precision {encoder.precision}",
        f"- command: `.venv/bin/python bench/embed_speed.py{' --quick' if args.quick else ''}`",
        f"- {args.model} (open_clip, random weights), batch {args.batch_size}, {args.workers} decode workers; "
        f"{n} Fashion-MNIST PNG files from disk; medians over {repeats} run(s). End to end includes the text "
        "prompts, file decoding, preprocessing and the atomic cache writes.",
        "",
        "| end to end (img/s) | bare forward (img/s) | ratio (target >= 0.9) | ratios per run |",
        "|---:|---:|---:|---|",
        f"| {e2e:.1f} | {bare:.1f} | {e2e / bare:.2f} | {', '.join(f'{r:.2f}' for r in ratios)} |",
    ]
    if encoder.device.type != "cuda":
        lines += ["", "GPU rows: not yet measured (no GPU was available to this run)."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
