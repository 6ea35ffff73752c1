"""Global kNN at scale: which index to use past the exact limit, by measured time, memory and recall.

The pipeline needs the 10 nearest neighbours of every row among all rows (cosine, on the adapted
embeddings). Exact search costs n^2 d: fine at 60k, about 3 minutes at 250k on 2 cores, over an hour at
1.28M. Each candidate index below is built on the same synthetic clustered embeddings (unit-norm, 512-d,
one Gaussian cluster per class, like adapted CLIP features) and searched for k = 10 + 1 (self) with a
sample of queries; recall@10 is measured against exact search on a fixed 2,000-query sample, and the time
for all n queries is the sample's rate times n (stated as extrapolated).

    .venv/bin/python bench/knn_scale.py [--n 250000] [--queries 20000] [--quick] [--out bench/results/knn_scale.md]

Writes the markdown fragment and bench/results/knn_scale.json (machine, date, command, load, figures).
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from _machine import command_line, cpu_and_memory, write_results  # noqa: E402
from _synthetic import embeddings  # noqa: E402


def candidates(n: int, d: int, quick: bool):
    """(name, factory) pairs: factory() -> a trained-and-filled faiss index over X (inner product)."""
    import faiss
    nlist = int(max(1, min(4 * math.sqrt(n), n // 39)))
    out = []
    for nprobe in ((16, 64) if quick else (8, 16, 32, 64)):
        out.append((f"IVF-Flat nlist {nlist} nprobe {nprobe}", ("ivfflat", nlist, nprobe)))
    for nprobe in ((16,) if quick else (16, 32)):
        out.append((f"IVF-SQ8 nlist {nlist} nprobe {nprobe}", ("ivfsq8", nlist, nprobe)))
    out.append((f"IVF-PQ64 + refine nlist {nlist} nprobe 32", ("ivfpq", nlist, 32)))
    if not quick:
        out.append(("HNSW32 efSearch 64", ("hnsw", 32, 64)))
    return out, faiss


def build(kind, X, faiss, seed=0):
    n, d = X.shape
    name = kind[0]
    if name == "hnsw":
        index = faiss.IndexHNSWFlat(d, kind[1], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.add(X)
        index.hnsw.efSearch = kind[2]
        return index, None
    nlist, nprobe = kind[1], kind[2]
    quantizer = faiss.IndexFlatIP(d)
    if name == "ivfflat":
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    elif name == "ivfsq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
    else:
        ivf = faiss.IndexIVFPQ(quantizer, d, nlist, 64, 8, faiss.METRIC_INNER_PRODUCT)
        index = faiss.IndexRefineFlat(ivf)
        index.k_factor = 4
    rng = np.random.default_rng(seed)
    train = X[np.sort(rng.choice(n, min(n, nlist * 64), replace=False))]
    index.train(train)
    index.add(X)
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    return index, quantizer               # the caller keeps the quantizer alive as long as the index


def index_bytes(index, faiss) -> int:
    return int(faiss.serialize_index(index).size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=250_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=20_000, help="queries timed per index (then extrapolated to n)")
    ap.add_argument("--quick", action="store_true", help="fewer candidates, 100k rows")
    ap.add_argument("--out", default=str(HERE / "results" / "knn_scale.md"))
    args = ap.parse_args(argv)
    n = 100_000 if args.quick and args.n == 250_000 else args.n
    from selector.neighbors import Neighbors
    from selector.runtime import faiss_blas, n_threads
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    X = embeddings(n, args.d, args.classes)[0]
    rng = np.random.default_rng(1)
    truth_rows = np.sort(rng.choice(n, 2000, replace=False))
    exact = Neighbors(X, metric="cosine", exact_limit=n)
    t = time.perf_counter()
    _, I_true = exact.search(X[truth_rows], 10, exclude_self=True, rows=truth_rows)
    exact_rate = (time.perf_counter() - t) / len(truth_rows)
    del exact
    rows = []
    rows.append({"index": f"exact ({'torch' if faiss_blas()['generic'] else 'faiss'} flat)", "build_s": 0.0,
                 "search_all_s": exact_rate * n, "recall@10": 1.0, "index_mb": X.nbytes / 2 ** 20,
                 "note": f"{len(truth_rows):,} queries timed"})
    q_rows = np.sort(rng.choice(n, min(n, args.queries), replace=False))
    cands, faiss = candidates(n, args.d, args.quick)
    for name, kind in cands:
        t = time.perf_counter()
        index, _quantizer = build(kind, X, faiss)
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        index.search(X[q_rows], 11)
        rate = (time.perf_counter() - t) / len(q_rows)
        _, I = index.search(X[truth_rows], 11)
        I = np.array([r[r != q][:10] for r, q in zip(I, truth_rows)])    # drop self
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, I_true)]))
        rows.append({"index": name, "build_s": t_build, "search_all_s": rate * n, "recall@10": recall,
                     "index_mb": index_bytes(index, faiss) / 2 ** 20, "note": f"{len(q_rows):,} queries timed"})
        print(rows[-1], flush=True)
        del index, _quantizer
    load_after = os.getloadavg()
    import faiss as _f
    machine = (f"{cpu_and_memory()}; {platform.platform()}; Python {platform.python_version()}, faiss "
               f"{_f.__version__}, {n_threads()} threads, faiss BLAS {faiss_blas()['core']}")
    date = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    command = command_line(__file__, argv)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    lines = [f"## Global kNN at {n:,} rows: index trade-offs", "",
             f"- date: {date}; machine: {machine}",
             f"- load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}; command: `{command}`; "
             f"total {(time.perf_counter() - t0) / 60:.1f} min; peak RSS {peak:.1f} GB",
             f"- data: {n:,} synthetic unit-norm {args.d}-d rows: {args.classes:,} class centres plus shared variation in a 64-d subspace; k = 10 (self excluded); "
             "recall@10 against exact search on 2,000 fixed queries; 'search, all rows' = timed rate x n "
             "(extrapolated)", "",
             "| index | build | search, all rows | recall@10 | index size |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['index']} | {r['build_s']:.1f} s | {r['search_all_s']:.0f} s | {r['recall@10']:.3f} | "
                     f"{r['index_mb']:.0f} MB |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args.out, text, name="knn_scale", date=date, machine=machine, command=command,
                  load=(load_before[0], load_after[0]), n=n, d=args.d, classes=args.classes, peak_rss_gb=peak,
                  rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
