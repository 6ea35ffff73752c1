"""Outliers and duplicates planted in real features: does the engine find them?

    .venv/bin/python bench/outlier_quality.py [--out bench/results/outlier_quality.md]

Data: Fashion-MNIST train embedded by the offline demo encoder (bench/_demo_features.py), with three plants:
  - a class missing from the label set: one class is removed from class_names and from the class prompts; 600
    of its images stay, each given a random label of the other classes (a whole cluster of an unknown class);
  - 500 near-copies: 500 images of the known classes, each changed a little (brightness x U(0.95, 1.05), pixel
    noise of sd 4/255), then embedded by the same encoder: the same photo, re-encoded;
  - 200 exact copies of 200 other images.
The engine runs end to end (`selector.run`, precomputed embeddings, no injected label noise, no map).
Reported: OOD ("matches no class") recall and precision on the 600 unknown-class rows, how many of those the
audit calls mislabelled instead, and near-duplicate pair recall (a planted pair counts when both rows end in
one duplicate group) with the number of rows given a partner outside the planted pairs (real near-copies in
Fashion-MNIST, or false pairs).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _demo_features import demo_features  # noqa: E402
from _machine import command_line, cpu_and_memory, write_results  # noqa: E402

UNKNOWN_CLASS = 9          # Ankle boot
N_UNKNOWN, N_NEAR, N_EXACT = 600, 500, 200


def planted(seed: int = 0):
    """(X, labels, class names, T, copy_of (n,) -1 or the row copied, unknown (n,) bool)."""
    from selector.encoders.demo import train_demo_encoder
    from selector.files import default_cache_dir
    from selector.sources import load_fashion_mnist
    X, T, y, names, _ = demo_features()
    pixels = load_fashion_mnist(split="train").pixels
    rng = np.random.default_rng(seed)
    kept_unknown = rng.choice(np.flatnonzero(y == UNKNOWN_CLASS), N_UNKNOWN, replace=False)
    rows = np.concatenate([np.flatnonzero(y != UNKNOWN_CLASS), kept_unknown])
    unknown = np.r_[np.zeros(len(rows) - N_UNKNOWN, bool), np.ones(N_UNKNOWN, bool)]
    labels = y[rows].copy()
    others = [c for c in range(len(names)) if c != UNKNOWN_CLASS]
    labels[unknown] = rng.choice(others, N_UNKNOWN)
    remap = np.full(len(names), -1)
    remap[others] = np.arange(len(others))
    labels = remap[labels]
    known = np.flatnonzero(~unknown)
    near = rng.choice(known, N_NEAR, replace=False)
    exact = rng.choice(np.setdiff1d(known, near), N_EXACT, replace=False)
    p = pixels[rows[near]].astype(np.float32) * rng.uniform(0.95, 1.05, (N_NEAR, 1, 1))
    p = np.clip(p + rng.normal(0, 4, p.shape), 0, 255).astype(np.uint8)
    encoder = train_demo_encoder(cache_dir=default_cache_dir())
    X_near = encoder._embed_pixels(p, 256)
    Xp = np.concatenate([X[rows], X_near, X[rows[exact]]]).astype(np.float32)
    lab = np.concatenate([labels, labels[near], labels[exact]])
    copy_of = np.r_[np.full(len(rows), -1), near, exact]
    unk = np.r_[unknown, np.zeros(N_NEAR + N_EXACT, bool)]
    return Xp, lab, [names[c] for c in others], T[others], copy_of, unk


def measure(table, copy_of, unknown) -> dict:
    ood, flagged = table["ood"].to_numpy(bool), table["flagged"].to_numpy(bool)
    dup = table["duplicate_of"].to_numpy()
    root = np.where(dup >= 0, dup, np.arange(len(dup)))           # duplicate_of already points at the root
    pairs = np.flatnonzero(copy_of >= 0)
    found = (root[pairs] == root[copy_of[pairs]]) & ((dup[pairs] >= 0) | (dup[copy_of[pairs]] >= 0))
    in_pair = np.zeros(len(dup), bool)
    in_pair[pairs] = in_pair[copy_of[pairs]] = True
    return {"ood_flagged": int(ood.sum()), "ood_recall": float((ood & unknown).sum() / unknown.sum()),
            "ood_precision": float((ood & unknown).sum() / max(ood.sum(), 1)),
            "unknown_called_mislabelled": float((flagged & unknown).sum() / unknown.sum()),
            "near_copy_pair_recall": float(found[:N_NEAR].mean()), "exact_copy_pair_recall": float(found[N_NEAR:].mean()),
            "pair_recall": float(found.mean()), "rows_with_partner": int((dup >= 0).sum()),
            "partners_outside_planted_pairs": int(((dup >= 0) & ~in_pair).sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "outlier_quality.md"))
    ap.add_argument("--quick", action="store_true", help="the same run (about a minute once the features are cached)")
    args = ap.parse_args(argv)
    import selector
    load = os.getloadavg()
    t_all = time.perf_counter()
    X, labels, names, T, copy_of, unknown = planted()
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "planted.npz"
        np.savez(npz, image_embeddings=X, labels=labels, class_names=np.array(names), text_embeddings=T)
        t0 = time.perf_counter()
        result = selector.run(selector.open_source("embeddings", path=str(npz)), selector.open_encoder("precomputed"),
                              selector.Config(map="none"), cache_dir=tmp)
        seconds = time.perf_counter() - t0
    m = measure(result.table, copy_of, unknown)
    lines = ["## Outliers and duplicates planted in real features", "",
             f"- date: {dt.datetime.now():%Y-%m-%d %H:%M}; machine: {cpu_and_memory()}; load average before / after "
             f"{load[0]:.2f} / {os.getloadavg()[0]:.2f}; command: `{command_line(__file__, argv)}`; engine run "
             f"{seconds:.0f} s, total {(time.perf_counter() - t_all) / 60:.1f} min",
             f"- data: Fashion-MNIST train, demo encoder features, {len(X):,} rows: {N_UNKNOWN} images of a class left out "
             f"of the label set (random labels), {N_NEAR} near-copies (re-encoded images), {N_EXACT} exact copies "
             "(see the script's docstring)", "",
             "| what | found |", "|---|---:|",
             f"| unknown-class rows flagged OOD (recall) | {m['ood_recall']:.3f} |",
             f"| precision of the OOD flag ({m['ood_flagged']:,} flagged) | {m['ood_precision']:.3f} |",
             f"| unknown-class rows called mislabelled instead | {m['unknown_called_mislabelled']:.3f} |",
             f"| near-copy pairs found ({N_NEAR}) | {m['near_copy_pair_recall']:.3f} |",
             f"| exact-copy pairs found ({N_EXACT}) | {m['exact_copy_pair_recall']:.3f} |",
             f"| rows given a partner outside the planted pairs | {m['partners_outside_planted_pairs']:,} |"]
    write_results(args.out, "\n".join(lines) + "\n", name="outlier_quality",
                  date=dt.datetime.now().isoformat(timespec="minutes"), machine=cpu_and_memory(),
                  command=command_line(__file__, argv), load=(load[0], os.getloadavg()[0]), n=len(X),
                  engine_seconds=seconds, **m)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
