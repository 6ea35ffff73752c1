"""How faithful is the map? UMAP from a spectral or a PCA start, and landmark UMAP against full UMAP, at 60,000 rows.

    .venv/bin/python bench/map_quality.py [--quick] [--landmarks 5000 20000] [--out bench/results/map_quality.md]

Data: Fashion-MNIST train (60,000 real images; Debian's dataset-fashion-mnist), pixels projected on their
top 64 principal axes, cosine kNN (k = 10, exact) from `selector.neighbors` - the graph the pipeline hands
to UMAP. Maps: `umap_from_knn` on every row from UMAP's spectral start and from the principal components
(what the pipeline draws up to 100,000 rows), and `landmark_umap` with m landmarks (what it draws past that,
m = 50,000 by default, from the principal components too). Quality on 2,000 seeded
rows: kNN preservation (share of a row's 10 nearest neighbours in the map that are among its 10 nearest in
the 64-d space) and class agreement (share of its 10 nearest map neighbours with its class).
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


def quality(xy, X, y, rows, k=10) -> tuple[float, float]:
    from selector.neighbors import knn
    _, high = knn(X, k, metric="cosine", exclude_self=True)
    _, low = knn(xy, k, metric="l2", exclude_self=True)
    high, low = high[rows], low[rows]
    kept = np.mean([len(set(a) & set(b)) / k for a, b in zip(high, low)])
    return float(kept), float((y[low] == y[rows, None]).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 rows, one landmark size")
    ap.add_argument("--landmarks", type=int, nargs="+", default=[5_000, 20_000])
    ap.add_argument("--seeds", type=int, default=3, help="layout seeds per map (the table gives medians)")
    ap.add_argument("--out", default=str(HERE / "results" / "map_quality.md"))
    args = ap.parse_args(argv)
    from selector.linalg import principal_axes
    from selector.neighbors import knn
    from selector.project import landmark_umap, umap_from_knn
    from selector.sources import load_fashion_mnist
    load = os.getloadavg()
    t_all = time.perf_counter()
    data = load_fashion_mnist(split="train")
    n = 20_000 if args.quick else len(data)
    sizes = args.landmarks[:1] if args.quick else args.landmarks
    P = data.pixels[:n].reshape(n, -1).astype(np.float32) / 255.0
    mean, axes = principal_axes(P, 64, sample=20_000)
    X = ((P - mean) @ axes).astype(np.float32)
    y = data.labels[:n]
    S, I = knn(X, 10, metric="cosine", exclude_self=True)
    rows = np.sort(np.random.default_rng(0).choice(n, 2_000, replace=False))
    umap_from_knn(I[:2000] % 2000, np.maximum(1 - S[:2000], 0), seed=0, n_epochs=10)   # numba JIT warm-up
    maps = [(f"UMAP, all {n:,} rows, spectral start", lambda seed: umap_from_knn(
                I, np.maximum(1.0 - S, 0.0), seed=seed)),
            (f"UMAP, all {n:,} rows, PCA start (the pipeline's, up to 100,000 rows)", lambda seed: umap_from_knn(
                I, np.maximum(1.0 - S, 0.0), seed=seed, X=X, init="pca"))]
    maps += [(f"landmark UMAP, {m:,} landmarks", lambda seed, m=m: landmark_umap(X, S, I, landmarks=m, seed=seed))
             for m in sizes]
    results = []
    for name, draw in maps:
        runs = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            xy = draw(seed)
            runs.append((time.perf_counter() - t0, *quality(xy, X, y, rows)))
        seconds, kept, agree = np.median(np.array(runs), axis=0)
        results.append({"map": name, "seconds": float(seconds), "knn_preservation": float(kept),
                        "class_agreement": float(agree), "runs": runs})
        print(results[-1], os.getloadavg()[0], flush=True)
    lines = ["## Map quality: UMAP from a spectral or a PCA start, and landmark UMAP against full UMAP", "",
             f"- date: {dt.datetime.now():%Y-%m-%d %H:%M}; machine: {cpu_and_memory()}; load average before / after "
             f"{load[0]:.2f} / {os.getloadavg()[0]:.2f}; command: `{command_line(__file__, argv)}`; total "
             f"{(time.perf_counter() - t_all) / 60:.1f} min",
             f"- data: Fashion-MNIST train, {n:,} rows, pixels on 64 principal axes, exact cosine kNN k = 10; quality "
             f"on 2,000 seeded rows (see the script's docstring); medians over layout seeds 0-{args.seeds - 1}", "",
             "| map | time | kNN preservation@10 | class agreement@10 |", "|---|---:|---:|---:|"]
    lines += [f"| {r['map']} | {r['seconds']:.0f} s | {r['knn_preservation']:.3f} | {r['class_agreement']:.3f} |"
              for r in results]
    write_results(args.out, "\n".join(lines) + "\n", name="map_quality",
                  date=dt.datetime.now().isoformat(timespec="minutes"), machine=cpu_and_memory(),
                  command=command_line(__file__, argv), load=(load[0], os.getloadavg()[0]), n=n, maps=results)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
