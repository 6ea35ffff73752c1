"""Headless CLI: `selector --help` (or `python -m selector --help`).

Runs the pipeline on any source, applies a selection (with a reviewer's decisions, if given) and writes the
per-sample table plus a JSON run manifest: the same bytes the app's Export page downloads. Every choice and
default comes from the engine's registries and `Selection()`; bad input exits with status 2 and a one-line
cause, before any expensive step where it can be known then. With --ray the embedding stage runs on a Ray
cluster (`selector.distributed`) and the rest here, from the embedding cache.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from selector.encoders import ENCODERS, default_encoder
from selector.errors import InputError, OfflineError
from selector.noise import NOISE_MODES
from selector.optimize import OBJECTIVES, STRATEGIES
from selector.project import MAPS
from selector.selection import Selection
from selector.sources import SOURCES, TORCHVISION_SETS
from selector.sources.torchvision_sets import SPLITS

_DEFAULT = Selection()
_CLIP = ENCODERS.get("open_clip").options


def _choices_help(registry) -> str:
    return " | ".join(f"{c.name}: {(c.help or c.label).rstrip('.')}" for c in registry).replace("%", "%%")


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, like every other bad input (argparse prints the whole usage first)
        self.exit(2, f"error: {message} (see selector --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="selector", description="Audit the labels of an image dataset and write the per-sample "
                "table with the selected subset (and a run manifest).")
    data = p.add_argument_group("data")
    data.add_argument("--source", default="demo", choices=SOURCES.names(), help=_choices_help(SOURCES))
    data.add_argument("--path", help="image folder, manifest (.csv/.parquet) or embeddings (.npz)")
    data.add_argument("--dataset", default="fashion-mnist", choices=TORCHVISION_SETS.names(),
                      help="the torchvision dataset (--source torchvision)")
    data.add_argument("--split", default="train", choices=SPLITS)
    data.add_argument("--root", help="local data folder (torchvision files, or image root for a manifest)")
    enc = p.add_argument_group("encoder")
    enc.add_argument("--encoder", choices=ENCODERS.names(),
                     help="default: the one the app starts with for this source. " + _choices_help(ENCODERS))
    enc.add_argument("--model", default=_CLIP["model"], help="open_clip model name")
    enc.add_argument("--pretrained", default=_CLIP["pretrained"], help="open_clip pretrained tag")
    enc.add_argument("--checkpoint", help="local open_clip checkpoint file (instead of --pretrained)")
    run = p.add_argument_group("run")
    run.add_argument("--noise-mode", choices=NOISE_MODES.names(),
                     help="inject synthetic label noise to check the audit (the demo plants uniform 0.2). "
                          + _choices_help(NOISE_MODES))
    run.add_argument("--noise-rate", type=float, help="share of labels to flip (needs a noise mode)")
    run.add_argument("--noise-seed", type=int, help="seed of the injected noise (needs a noise mode; default 0)")
    run.add_argument("--map", default="umap", choices=MAPS.names(), help=_choices_help(MAPS))
    run.add_argument("--k", type=int, help="neighbours for the diversity score (default ~10%% of class size)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--batch-size", type=int, default=256)
    run.add_argument("--cache-dir", help="default: $SELECTOR_CACHE_DIR or ~/.cache/selector")
    run.add_argument("--verify-content", action="store_true",
                     help="re-read every image file, not only its size and modification time, so a file replaced "
                          "by another of the same size is embedded again")
    dist = p.add_argument_group("ray (embed on a Ray cluster: pip install 'selector[ray]')")
    dist.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                      help="embed the images on Ray, then run the rest here from the embedding cache. ADDRESS: "
                           "auto (the default) = the cluster this machine belongs to; ray://host:10001 = a remote "
                           "cluster; local = a Ray on this machine only")
    dist.add_argument("--ray-workers", type=int, metavar="N",
                      help="model workers (default: one per GPU; without GPUs, 7 of every 8 CPUs)")
    dist.add_argument("--ray-gpus-per-worker", type=float, metavar="G",
                      help="GPUs per model worker (default: 1 when the cluster has GPUs, else 0 = CPUs)")
    sel = p.add_argument_group("selection (defaults: the benchmarked best)")
    sel.add_argument("--ratio", type=float, default=_DEFAULT.ratio, help="share of samples to keep, (0, 1]")
    sel.add_argument("--weights", default=",".join(f"{k}={v:g}" for k, v in _DEFAULT.weights),
                     help="objective weights, e.g. alignment=1,diversity=0.1,cleanliness=1. "
                          + _choices_help(OBJECTIVES))
    sel.add_argument("--strategy", default=_DEFAULT.strategy, choices=STRATEGIES.names(),
                     help=_choices_help(STRATEGIES))
    sel.add_argument("--exclude-flagged", default=_DEFAULT.exclude_flagged, action=argparse.BooleanOptionalAction,
                     help="drop suspected label errors and out-of-distribution images first")
    sel.add_argument("--exclude-duplicates", default=_DEFAULT.exclude_duplicates,
                     action=argparse.BooleanOptionalAction, help="drop the later copy of each near-duplicate")
    sel.add_argument("--class-balance", default=_DEFAULT.class_balance, action=argparse.BooleanOptionalAction,
                     help="equal quotas per class instead of choosing globally")
    sel.add_argument("--correct-flagged", default=_DEFAULT.correct_flagged, action=argparse.BooleanOptionalAction,
                     help="keep confidently mislabelled samples with the audit's suggested label (corrected_label) "
                          "instead of dropping them")
    sel.add_argument("--keep", metavar="FILE", help="sample ids (one per line) that are always selected")
    sel.add_argument("--never", metavar="FILE", help="sample ids (one per line) that are never selected")
    sel.add_argument("--decisions", metavar="FILE",
                     help="label decisions: the app's decisions database (cache folder/decisions/decisions.db; the "
                          "decisions on this run's dataset), a .json {id: decision}, or a .csv with columns id,decision")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="selection.csv", help="output table, .csv or .parquet (manifest beside)")
    out.add_argument("--selected-only", action="store_true", help="write only the selected rows")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


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


def _ids(path) -> list[str]:
    if path is None:
        return []
    try:
        return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise InputError(f"cannot read the id list {path}: {exc.strerror or exc}.") from exc


def settings(args) -> tuple:
    """(Config, Selection) from the arguments, every one validated before anything is loaded or computed: the
    settings, the files it reads, the output path, and the encoder's names (without loading its weights)."""
    from selector.decisions import read_decisions
    from selector.decision_store import DecisionStore, is_database
    from selector.encoders import check_encoder, options_of
    from selector.pipeline import Config
    from selector.sources import check_source, source_noise
    from selector.validate import check_int, check_number
    from selector.writer import check_output
    check_output(args.out, inputs=(args.path, args.decisions, args.keep, args.never, args.checkpoint))
    if not args.ray and (args.ray_workers is not None or args.ray_gpus_per_worker is not None):
        raise InputError("--ray-workers and --ray-gpus-per-worker need --ray [ADDRESS].")
    if args.ray_workers is not None:
        check_int(args.ray_workers, "--ray-workers", minimum=1)
    if args.ray_gpus_per_worker is not None:
        check_number(args.ray_gpus_per_worker, "--ray-gpus-per-worker", minimum=0)
    noise = source_noise(args.source) or {"noise_mode": "none", "noise_rate": 0.0, "noise_seed": 0}
    if args.noise_mode is not None:
        noise["noise_mode"] = args.noise_mode
        noise["noise_rate"] = 0.0 if args.noise_mode == "none" else noise.get("noise_rate") or 0.2
    for flag, value, key in (("--noise-rate", args.noise_rate, "noise_rate"), ("--noise-seed", args.noise_seed,
                                                                               "noise_seed")):
        if value is not None:
            if noise["noise_mode"] == "none":
                raise InputError(f"{flag} needs a noise mode: add --noise-mode uniform or confusable.")
            noise[key] = value
    config = Config(k=args.k, seed=args.seed, map=args.map, batch_size=args.batch_size,
                    verify_content=args.verify_content, **noise)
    selection = Selection(ratio=args.ratio, weights=parse_weights(args.weights), strategy=args.strategy,
                          exclude_flagged=args.exclude_flagged, exclude_duplicates=args.exclude_duplicates,
                          class_balance=args.class_balance, correct_flagged=args.correct_flagged,
                          keep=_ids(args.keep), never=_ids(args.never),
                          decisions={})
    if args.decisions and is_database(args.decisions):    # its decisions are read once the dataset is known
        DecisionStore(args.decisions, create=False).check()
    elif args.decisions:
        selection = selection.replace(decisions=read_decisions(args.decisions))
    check_source(args.source, path=args.path, root=args.root)
    kind = args.encoder or default_encoder(args.source, args.dataset)
    check_encoder(kind, args.source, args.dataset, **options_of(kind, model=args.model, pretrained=args.pretrained,
                                                                checkpoint=args.checkpoint))
    return config, selection


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
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from selector.decision_store import is_database
    from selector.decisions import read_decisions
    from selector.encoders import open_encoder, options_of
    from selector.writer import export
    from selector.files import default_cache_dir
    from selector.pipeline import load_or_run
    from selector.sources import open_source

    bars = _Bars()
    try:
        config, selection = settings(args)
        cache_dir = args.cache_dir or default_cache_dir()
        dataset = open_source(args.source, path=args.path, name=args.dataset, split=args.split, root=args.root)
        kind = args.encoder or default_encoder(args.source, args.dataset)
        options = options_of(kind, model=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint)
        if args.ray:
            from selector.distributed import embed_on_ray
            encoder = embed_on_ray(dataset, kind, options, cache_dir=cache_dir, address=args.ray,
                                   num_workers=args.ray_workers, gpus_per_worker=args.ray_gpus_per_worker,
                                   batch_size=args.batch_size, progress=bars)
        else:
            encoder = open_encoder(kind, cache_dir=cache_dir, progress=bars, source=args.source,
                                   dataset_name=args.dataset, **options)
        result = load_or_run(dataset, encoder, config, cache_dir=cache_dir, progress=bars)
        if args.decisions and is_database(args.decisions):
            selection = selection.replace(decisions=read_decisions(args.decisions, dataset=result.dataset.fingerprint))
        written = export(result, selection, args.out, selected_only=args.selected_only)
    except (InputError, OfflineError) as exc:
        bars.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bars.close()
    counts = written.manifest["counts"]
    for warning in written.manifest.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{counts['n']} samples, {counts['flagged']} flagged, {counts['selected']} selected "
          f"(ratio {selection.ratio}); encoder: {result.encoder_name}")
    print(f"wrote {written.table_path} and {written.manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
