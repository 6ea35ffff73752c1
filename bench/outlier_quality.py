"""Outliers, a missing class and duplicates planted in real features: does the engine find them, beside Datalab?

    PYTHONPATH=/tmp/selq/pylib:/tmp/outl/pylib .venv/bin/python bench/outlier_quality.py [--encoder demo offline weak]
        [--no-datalab] [--every-class]

(cleanlab with its Datalab extra, i.e. the `datasets` package, on the PYTHONPATH; cleanlab is AGPL and imported
only here, as a baseline.)

Data: Fashion-MNIST train embedded by each bench encoder (bench/_bench_encoders.py: the demo encoder, the
image-only offline encoder, the deliberately weak one; every one by default), with three plants:
  - a class missing from the label set: one class is removed from class_names and from the class prompts; 600
    of its images stay, each given a random label of the other classes (a whole cluster of an unknown class);
  - 500 near-copies: 500 images of the known classes, each changed a little (brightness x U(0.95, 1.05), pixel
    noise of sd 4/255), then embedded by the same encoder (as fitted on the train images): the same photo,
    re-encoded;
  - 200 exact copies of 200 other images.
Ours: the engine end to end (`selector.run`, precomputed embeddings, no injected label noise, no map).
Datalab: `cleanlab.Datalab(...).find_issues(features=X, issue_types={"outlier": {}, "near_duplicate": {}})` on the
same (frozen, unit) features, its defaults (k = 10, cosine).
Reported: recall and precision of the OOD flag on the 600 unknown-class rows (ours: `ood`, and its part
`missing_class`), how many of them the audit calls mislabelled, and near-duplicate pair recall (a planted pair
counts when the two rows end in one duplicate group; Datalab: when one is in the other's near_duplicate_set)
with the rows given a partner outside the planted pairs (real near-copies in Fashion-MNIST, or false pairs).
The same plants again with 20% uniform label flips injected by the engine into every row (NOISY): the
missing-class group's recall and precision there (rows whose labels were flipped must not join it).
Then the same engine on clean Fashion-MNIST (all 10 classes, nothing planted), also with 20% and 40% uniform
label flips: how many rows it calls a missing class, OOD or mislabelled there.
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
from _bench_encoders import ENCODERS, embed_pixels, features  # noqa: E402
from _machine import command_line, cpu_and_memory, write_results  # noqa: E402

UNKNOWN_CLASS = 9          # Ankle boot
N_UNKNOWN, N_NEAR, N_EXACT = 600, 500, 200
NOISY = ("uniform", 0.2)   # the plants again, with these label flips injected by the engine into every row


def planted(encoder: str = "demo", seed: int = 0, missing: int = UNKNOWN_CLASS):
    """(X, labels, class names, T or None (image-only), copy_of (n,) -1 or the row copied, unknown (n,) bool)."""
    from selector.sources import load_fashion_mnist
    X, T, y, names, _ = features(encoder)
    pixels = load_fashion_mnist(split="train").pixels
    again = embed_pixels(encoder, pixels[:256])           # the near-copies are embedded as the features were
    if not np.allclose(again, X[:256], atol=1e-4):
        raise RuntimeError(f"{encoder}: re-embedding train images does not give their cached features "
                           f"(max difference {np.abs(again - X[:256]).max():.2g})")
    rng = np.random.default_rng(seed)
    kept_unknown = rng.choice(np.flatnonzero(y == missing), N_UNKNOWN, replace=False)
    rows = np.concatenate([np.flatnonzero(y != missing), kept_unknown])
    unknown = np.r_[np.zeros(len(rows) - N_UNKNOWN, bool), np.ones(N_UNKNOWN, bool)]
    labels = y[rows].copy()
    others = [c for c in range(len(names)) if c != missing]
    labels[unknown] = rng.choice(others, N_UNKNOWN)
    remap = np.full(len(names), -1)
    remap[others] = np.arange(len(others))
    labels = remap[labels]
    known = np.flatnonzero(~unknown)
    near = rng.choice(known, N_NEAR, replace=False)
    exact = rng.choice(np.setdiff1d(known, near), N_EXACT, replace=False)
    p = pixels[rows[near]].astype(np.float32) * rng.uniform(0.95, 1.05, (N_NEAR, 1, 1))
    p = np.clip(p + rng.normal(0, 4, p.shape), 0, 255).astype(np.uint8)
    Xp = np.concatenate([X[rows], embed_pixels(encoder, p), X[rows[exact]]]).astype(np.float32)
    lab = np.concatenate([labels, labels[near], labels[exact]])
    copy_of = np.r_[np.full(len(rows), -1), near, exact]
    unk = np.r_[unknown, np.zeros(N_NEAR + N_EXACT, bool)]
    return Xp, lab, [names[c] for c in others], None if T is None else T[others], copy_of, unk


def groups_found(dup, copy_of):
    """(pair found (n_pairs,) bool, in a group (n,) bool) from duplicate_of (which points at each group's root)."""
    root = np.where(dup >= 0, dup, np.arange(len(dup)))
    pairs = np.flatnonzero(copy_of >= 0)
    return root[pairs] == root[copy_of[pairs]], np.bincount(root, minlength=len(dup))[root] > 1


def measure(ood, missing, flagged, found, partnered, copy_of, unknown) -> dict:
    pairs = np.flatnonzero(copy_of >= 0)
    in_pair = np.zeros(len(copy_of), bool)
    in_pair[pairs] = in_pair[copy_of[pairs]] = True
    out = {"ood_flagged": int(ood.sum()), "ood_recall": float((ood & unknown).sum() / unknown.sum()),
           "ood_precision": float((ood & unknown).sum() / max(ood.sum(), 1)),
           "near_copy_pair_recall": float(found[:N_NEAR].mean()), "exact_copy_pair_recall": float(found[N_NEAR:].mean()),
           "pair_recall": float(found.mean()), "rows_with_partner": int(partnered.sum()),
           "partners_outside_planted_pairs": int((partnered & ~in_pair).sum())}
    if missing is not None:
        out.update(missing_flagged=int(missing.sum()), missing_recall=float((missing & unknown).sum() / unknown.sum()),
                   missing_precision=float((missing & unknown).sum() / max(missing.sum(), 1)))
    if flagged is not None:
        out["unknown_called_mislabelled"] = float((flagged & unknown).sum() / unknown.sum())
    return out


def measure_table(table, copy_of, unknown) -> dict:
    """`measure` on the engine's per-sample table."""
    return measure(table["ood"].to_numpy(bool), table["missing_class"].to_numpy() >= 0, table["flagged"].to_numpy(bool),
                   *groups_found(table["duplicate_of"].to_numpy(), copy_of), copy_of, unknown)


def run_engine(X, labels, names, T, tmp, noise=("none", 0.0)):
    import selector
    npz = Path(tmp) / f"features-{noise[0]}.npz"
    np.savez(npz, image_embeddings=X, labels=labels, class_names=np.array(names),
             **({} if T is None else {"text_embeddings": T}))
    t0 = time.perf_counter()
    result = selector.run(selector.open_source("embeddings", path=str(npz)), selector.open_encoder("precomputed"),
                          selector.Config(map="none", noise_mode=noise[0], noise_rate=noise[1]), cache_dir=tmp)
    return result.table, time.perf_counter() - t0


def datalab(X, labels):
    """(is_outlier (n,), near-duplicate sets (n,) of arrays, seconds) from cleanlab's Datalab on features X."""
    from cleanlab import Datalab
    t0 = time.perf_counter()
    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(features=X, issue_types={"outlier": {}, "near_duplicate": {}})
    out = lab.get_issues("outlier")["is_outlier_issue"].to_numpy(bool)
    sets = lab.get_issues("near_duplicate")["near_duplicate_sets"].to_numpy()
    return out, sets, time.perf_counter() - t0


def datalab_pairs(sets, copy_of):
    pairs = np.flatnonzero(copy_of >= 0)
    found = np.array([copy_of[i] in sets[i] or i in sets[copy_of[i]] for i in pairs])
    return found, np.array([len(s) > 0 for s in sets])


def clean_checks(encoder, tmp) -> list:
    """The engine on clean Fashion-MNIST (nothing planted), without and with uniform label flips."""
    X, T, y, names, _ = features(encoder)
    rows = []
    for noise in (("none", 0.0), ("uniform", 0.2), ("uniform", 0.4)):
        table, seconds = run_engine(X, y, names, T, tmp, noise)
        rows.append({"encoder": encoder, "noise": f"{noise[0]} {noise[1]:.0%}" if noise[1] else "none", "n": len(table),
                     "missing_class": int((table["missing_class"] >= 0).sum()), "ood": int(table["ood"].sum()),
                     "flagged": int(table["flagged"].sum()), "seconds": seconds})
    return rows


def every_class(encoder, tmp) -> list:
    """The plants with each class in turn as the missing one: how well the missing-class group is found."""
    names = features(encoder)[3]
    rows = []
    for c in range(len(names)):
        X, labels, known, T, copy_of, unknown = planted(encoder, missing=c)
        table, _ = run_engine(X, labels, known, T, tmp)
        found, flagged = table["missing_class"].to_numpy() >= 0, table["flagged"].to_numpy(bool)
        rows.append({"encoder": encoder, "missing": names[c], "rows": int(found.sum()),
                     "recall": float((found & unknown).sum() / unknown.sum()),
                     "precision": float((found & unknown).sum() / max(found.sum(), 1)),
                     "called_mislabelled": float((flagged & unknown).sum() / unknown.sum())})
        print(rows[-1], flush=True)
    return rows


ROWS = (("unknown-class rows flagged OOD (recall)", "ood_recall"), ("precision of the OOD flag", "ood_precision"),
        ("rows flagged OOD", "ood_flagged"), ("... of them a missing-class group (recall / precision)", "missing"),
        ("unknown-class rows called mislabelled", "unknown_called_mislabelled"),
        (f"near-copy pairs found ({N_NEAR})", "near_copy_pair_recall"),
        (f"exact-copy pairs found ({N_EXACT})", "exact_copy_pair_recall"),
        (f"rows given a partner ({2 * (N_NEAR + N_EXACT):,} planted)", "rows_with_partner"),
        ("rows given a partner outside the planted pairs", "partners_outside_planted_pairs"))


def cell(m, key) -> str:
    """One figure of a table cell; '-' where it was not measured, or is a precision of nothing flagged."""
    if not m or (key not in m and key != "missing") or (key == "missing" and "missing_recall" not in m):
        return "-"
    if key == "missing":
        precision = f"{m['missing_precision']:.3f}" if m["missing_flagged"] else "-"
        return f"{m['missing_recall']:.3f} / {precision} ({m['missing_flagged']:,} rows)"
    if key == "ood_precision" and not m["ood_flagged"]:
        return "- (none flagged)"
    return f"{m[key]:,}" if isinstance(m[key], int) else f"{m[key]:.3f}"


def one_encoder(encoder, tmp, *, with_datalab: bool, sweep: bool) -> dict:
    """Every measurement on one bench encoder's features."""
    X, labels, names, T, copy_of, unknown = planted(encoder)
    table, seconds = run_engine(X, labels, names, T, tmp)
    ours = measure_table(table, copy_of, unknown)
    theirs, dl_seconds = None, None
    if with_datalab:
        is_outlier, sets, dl_seconds = datalab(X / np.linalg.norm(X, axis=1, keepdims=True), labels)
        theirs = measure(is_outlier, None, None, *datalab_pairs(sets, copy_of), copy_of, unknown)
    with_flips = measure_table(run_engine(X, labels, names, T, tmp, NOISY)[0], copy_of, unknown)
    out = {"n": len(X), "image_only": T is None, "engine_seconds": seconds, "datalab_seconds": dl_seconds,
           "ours": ours, "datalab": theirs, "with_flips": with_flips, "clean": clean_checks(encoder, tmp),
           "every_class": every_class(encoder, tmp) if sweep else []}
    print(encoder, out, flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", nargs="+", choices=ENCODERS, default=list(ENCODERS),
                    help="bench encoders to measure (default: all)")
    ap.add_argument("--out", default=str(HERE / "results" / "outlier_quality.md"))
    ap.add_argument("--no-datalab", action="store_true", help="leave out the Datalab baseline")
    ap.add_argument("--every-class", action="store_true",
                    help="also plant each class in turn as the missing one (about 10 more minutes an encoder)")
    ap.add_argument("--quick", action="store_true", help="the same run (about 5 minutes an encoder once the features "
                    "are cached)")
    args = ap.parse_args(argv)
    if not args.no_datalab:
        try:
            from cleanlab import Datalab
            Datalab(data={"label": np.zeros(2, int)}, label_name="label", verbosity=0)
        except ImportError as exc:
            sys.exit(f"Datalab cannot be imported ({exc}); install cleanlab with its datalab extra "
                     "(pip install 'cleanlab[datalab]') or put it on PYTHONPATH, or pass --no-datalab.")
    load = os.getloadavg()
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {enc: one_encoder(enc, tmp, with_datalab=not args.no_datalab, sweep=args.every_class)
                for enc in args.encoder}
    times = "; ".join(f"{e}: engine {r['engine_seconds']:.0f} s" + (f", Datalab {r['datalab_seconds']:.0f} s"
                                                                    if r["datalab_seconds"] else "")
                      for e, r in runs.items())
    encs = list(runs)
    lines = ["## Outliers, a missing class and duplicates planted in real features", "",
             f"- date: {dt.datetime.now():%Y-%m-%d %H:%M}; machine: {cpu_and_memory()}; load average before / after "
             f"{load[0]:.2f} / {os.getloadavg()[0]:.2f}; command: `{command_line(__file__, argv)}`; {times}; total "
             f"{(time.perf_counter() - t_all) / 60:.1f} min",
             f"- data: Fashion-MNIST train as each bench encoder embeds it ({', '.join(encs)}; image-only: "
             f"{', '.join(e for e in encs if runs[e]['image_only']) or 'none'}), {runs[encs[0]]['n']:,} rows: "
             f"{N_UNKNOWN} images of a class left out of the label set (random labels), {N_NEAR} near-copies "
             f"(re-encoded images), {N_EXACT} exact copies (see the script's docstring); Datalab: outlier and "
             "near_duplicate issues, its defaults, same features", "",
             "| what | " + " | ".join(f"{e}: ours | {e}: Datalab" for e in encs) + " |",
             "|---|" + "---:|---:|" * len(encs),
             *[f"| {what} | " + " | ".join(f"{cell(runs[e]['ours'], key)} | {cell(runs[e]['datalab'], key)}"
                                            for e in encs) + " |" for what, key in ROWS], "",
             f"The same plants with {NOISY[1]:.0%} {NOISY[0]} label flips injected into every row (the engine's "
             "noise_mode), ours only: does a missing-class group take in the rows whose labels were flipped?", "",
             "| encoder | missing-class group: recall / precision (rows) | OOD recall | OOD precision | "
             "unknown-class rows called mislabelled | near-copy / exact-copy pairs found |",
             "|---|---:|---:|---:|---:|---:|",
             *[f"| {e} | {cell(m, 'missing')} | {m['ood_recall']:.3f} | {cell(m, 'ood_precision')} | "
               f"{m['unknown_called_mislabelled']:.3f} | {m['near_copy_pair_recall']:.3f} / "
               f"{m['exact_copy_pair_recall']:.3f} |" for e in encs for m in [runs[e]["with_flips"]]], "",
             "The same engine on clean Fashion-MNIST (60,000 rows, all 10 classes, nothing planted):", "",
             "| encoder | label flips | rows called a missing class | rows OOD | rows flagged mislabelled |",
             "|---|---|---:|---:|---:|",
             *[f"| {r['encoder']} | {r['noise']} | {r['missing_class']:,} | {r['ood']:,} | {r['flagged']:,} |"
               for e in encs for r in runs[e]["clean"]]]
    sweep = [r for e in encs for r in runs[e]["every_class"]]
    if sweep:
        lines += ["", "Each class in turn as the missing one (same plants, ours only):", "",
                  "| encoder | class missing | missing-class rows | recall | precision | its rows called mislabelled |",
                  "|---|---|---:|---:|---:|---:|",
                  *[f"| {r['encoder']} | {r['missing']} | {r['rows']:,} | {r['recall']:.3f} | {r['precision']:.3f} | "
                    f"{r['called_mislabelled']:.3f} |" for r in sweep]]
    write_results(args.out, "\n".join(lines) + "\n", name="outlier_quality",
                  date=dt.datetime.now().isoformat(timespec="minutes"), machine=cpu_and_memory(),
                  command=command_line(__file__, argv), load=(load[0], os.getloadavg()[0]), encoders=runs)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
