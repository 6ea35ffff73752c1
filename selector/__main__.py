"""Headless CLI: `python -m selector --help`.

Runs the pipeline on any source, selects a subset and writes the per-sample table plus a JSON run manifest.
Bad input exits with status 2 and a one-line cause.
"""
from __future__ import annotations

import argparse
import logging
import sys

from selector.errors import InputError, OfflineError
from selector.pipeline import DEFAULT_SELECTION, DEFAULT_WEIGHTS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m selector", description=__doc__.splitlines()[0])
    p.add_argument("--source", default="demo", choices=["demo", "image-folder", "manifest", "torchvision", "embeddings"])
    p.add_argument("--path", help="image folder, manifest (.csv/.parquet) or embeddings (.npz)")
    p.add_argument("--dataset", default="fashion-mnist", help="torchvision dataset: fashion-mnist, cifar10, cifar100")
    p.add_argument("--split", default="train")
    p.add_argument("--root", help="local data folder (torchvision files, or image root for a manifest)")
    p.add_argument("--encoder", choices=["demo", "open_clip", "precomputed"],
                   help="default: demo for --source demo, precomputed for embeddings, else open_clip")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--pretrained", default="laion2b_s34b_b79k")
    p.add_argument("--checkpoint", help="local open_clip checkpoint file (instead of --pretrained)")
    p.add_argument("--ratio", type=float, default=DEFAULT_SELECTION["ratio"])
    p.add_argument("--weights", default=",".join(f"{k}={v:g}" for k, v in DEFAULT_WEIGHTS.items()),
                   help="objective weights, e.g. alignment=1,diversity=0.1,cleanliness=0.5")
    p.add_argument("--strategy", default=DEFAULT_SELECTION["strategy"], choices=["topk", "stratified"],
                   help="stratified spreads the budget over each class's score range; topk is the paper's optimum")
    p.add_argument("--keep-flagged", action="store_true", help="do not exclude suspected label errors first")
    p.add_argument("--no-class-balance", dest="class_balance", action="store_false",
                   help="select globally instead of equal quotas per class")
    p.add_argument("--noise-mode", choices=["none", "uniform", "confusable"],
                   help="inject synthetic label noise to check the audit (demo default: uniform 0.2)")
    p.add_argument("--noise-rate", type=float)
    p.add_argument("--noise-seed", type=int, default=0)
    p.add_argument("--map", default="umap", choices=["umap", "pca", "none"])
    p.add_argument("--k", type=int, help="neighbours for the diversity score (default ~10%% of class size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--cache-dir", help="default: $SELECTOR_CACHE_DIR or ~/.cache/selector")
    p.add_argument("--out", default="selection.csv", help="output table, .csv or .parquet (manifest written beside)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def parse_weights(text: str) -> dict:
    weights = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"--weights entry {part!r} is not name=number (e.g. alignment=1,diversity=0.1)") from None
        if not sep:
            raise InputError(f"--weights entry {part!r} is not name=number (e.g. alignment=1,diversity=0.1)")
    return weights


class _Bars:
    """tqdm bars, one per stage, fed by the engine's progress callback."""

    def __init__(self):
        self.bars = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="", leave=True, file=sys.stderr)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    def close(self):
        for bar in self.bars.values():
            bar.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from selector import pipeline, sources

    bars = _Bars()
    try:
        cache_dir = args.cache_dir or sources.default_cache_dir()
        weights = parse_weights(args.weights)
        dataset = sources.open_source(args.source, path=args.path, name=args.dataset, split=args.split, root=args.root)
        encoder_kind = args.encoder or {"demo": "demo", "embeddings": "precomputed"}.get(args.source, "open_clip")
        encoder = sources.open_encoder(encoder_kind, cache_dir=cache_dir, model=args.model,
                                       pretrained=args.pretrained, checkpoint=args.checkpoint, progress=bars)
        noise = dict(sources.DEMO_NOISE) if args.source == "demo" else {"noise_mode": "none", "noise_rate": 0.0}
        if args.noise_mode is not None:
            noise["noise_mode"] = args.noise_mode
        if args.noise_rate is not None:
            noise["noise_rate"] = args.noise_rate
        noise["noise_seed"] = args.noise_seed
        config = pipeline.Config(k=args.k, seed=args.seed, map=args.map, batch_size=args.batch_size, **noise)
        result = pipeline.load_or_run(dataset, encoder, config, cache_dir=cache_dir, progress=bars)
        selection = dict(ratio=args.ratio, weights=weights, exclude_flagged=not args.keep_flagged,
                         class_balance=args.class_balance, strategy=args.strategy)
        table = pipeline.with_selection(result, **selection)
        table_path, manifest_path = pipeline.export(table, args.out, result.manifest, selection=selection)
    except (InputError, OfflineError) as exc:
        bars.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bars.close()
    n = len(table)
    print(f"{n} samples, {int(table['flagged'].sum())} flagged, {int(table['selected'].sum())} selected "
          f"(ratio {args.ratio}); encoder: {result.encoder_name}")
    print(f"wrote {table_path} and {manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
