"""Engine speed on synthetic 512-d embeddings: kNN, scoring, selection latency, STE loop, UMAP, memory.

    python bench/engine_speed.py [--quick] [--out PATH] [--skip-1m] [--only knn,scoring,selection,ste,umap,1m]

N = 60k (10 classes) and N = 1M (1,000 classes). --quick: UMAP at 10k instead of 60k, fewer 1M
exact queries, no IVF build at 1M. On a CPU-only machine the exact 1M x 1M search is measured on a
chunk of queries with the exact flat index and extrapolated (said so in the table). Prints a
markdown table and writes it, with the machine and date, to bench/results/engine_speed.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

from _machine import cpu_and_memory

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selector import neighbors as nb  # noqa: E402
from selector.optimize import select, selection_score  # noqa: E402
from selector.paper import paper_score, select_ste  # noqa: E402

DIM = 512
SECTIONS = ("knn", "scoring", "selection", "ste", "umap", "1m")
ROWS: list[tuple] = []   # (stage, N, median, p95, notes)


# ------------------------------------------------------------------------------------------ helpers
def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2     # ru_maxrss is KiB on Linux


def fmt_s(sec) -> str:
    if sec is None:
        return "-"
    if sec < 1e-3:
        return f"{sec * 1e6:.0f} us"
    if sec < 1:
        return f"{sec * 1e3:.1f} ms"
    if sec < 120:
        return f"{sec:.2f} s"
    return f"{sec / 60:.1f} min"


def add(stage, n, median, p95=None, notes=""):
    ROWS.append((stage, n, median, p95, notes))
    print(f"  {stage:<55} N={n:<9} {fmt_s(median):>10} {('p95 ' + fmt_s(p95)) if p95 is not None else '':>14}  "
          f"{notes}", flush=True)


def timeit(fn, repeats=1):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times)), float(np.percentile(times, 95))


def synthetic(n, n_classes, seed=0):
    """Unit-norm class clusters in 512-d (like CLIP embeddings) + class 'text' embeddings, in chunks."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, DIM), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = rng.integers(0, n_classes, n)
    X = np.empty((n, DIM), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x = centers[labels[s:e]] * 1.0 + rng.standard_normal((e - s, DIM), dtype=np.float32) * (1.2 / np.sqrt(DIM))
        X[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    T = centers + rng.standard_normal(centers.shape, dtype=np.float32) * 0.02
    return X, T, labels


def try_import(name):
    try:
        return importlib.import_module(name), ""
    except Exception as exc:  # missing or broken module of another engineer
        return None, f"{name} not importable ({type(exc).__name__}: {exc})"


# ------------------------------------------------------------------------------------------ stages
def bench_knn_60k(X, labels, quick):
    n = len(X)
    index, t_build, _ = timeit(lambda: nb.Neighbors(X, metric="cosine"))
    backend = f"{index.backend}, {index.kind}"
    (S, I), t, _ = timeit(lambda: index.search(X, 10, exclude_self=True))
    add("kNN global k=10 cosine (default index)", n, t_build + t, None,
        f"{backend}; build {fmt_s(t_build)}; peak RSS {peak_rss_gb():.1f} GB")
    ivf, t_build, _ = timeit(lambda: nb.Neighbors(X, metric="cosine", exact_limit=10_000))
    q = 10_000 if quick else n
    (_, Iv), t, _ = timeit(lambda: ivf.search(X[:q], 10, exclude_self=True, rows=np.arange(q)))
    recall = (Iv[:, :, None] == I[:q, None, :]).any(-1).mean()
    add("kNN global k=10 cosine, IVF" + (" (extrapolated)" if q < n else ""), n, t_build + t * n / q, None,
        f"{ivf.backend}; nlist {ivf.nlist}, nprobe {ivf.nprobe}; build {fmt_s(t_build)}; "
        f"{q:,} queries in {fmt_s(t)}; recall@10 {recall:.3f}")
    (Dg, Ig), t, _ = timeit(lambda: nb.knn_within_groups(X, labels, 99, metric="l2", exclude_self=True))
    add("kNN within class k=99 l2 (SDS, K=100)", n, t, None, f"{len(np.unique(labels))} classes")
    del index, ivf
    gc.collect()
    return S, I, Dg, Ig


def bench_knn_1m(X, labels, quick):
    n = len(X)
    index, t_build, _ = timeit(lambda: nb.Neighbors(X, metric="cosine", exact_limit=n))
    q = 500 if quick else 2000
    rows = np.arange(q)
    (Se, Ie), t, _ = timeit(lambda: index.search(X[:q], 10, exclude_self=True, rows=rows))
    add("kNN global k=10 cosine, exact flat (extrapolated)", n, t_build + t * n / q, None,
        f"{index.backend}; measured {q} queries in {fmt_s(t)}, x{n // q}; peak RSS {peak_rss_gb():.1f} GB")
    del index
    gc.collect()
    if not quick:
        ivf, t_build, _ = timeit(lambda: nb.Neighbors(X, metric="cosine"))
        (Sv, Iv), t, _ = timeit(lambda: ivf.search(X[:q], 10, exclude_self=True, rows=rows))
        recall = (Iv[:, :, None] == Ie[:, None, :]).any(-1).mean()
        add("kNN global k=10 cosine, default (IVF on CPU) (extrapolated)", n, t_build + t * n / q, None,
            f"{ivf.backend} {ivf.kind}; nlist {ivf.nlist}, nprobe {ivf.nprobe}; build {fmt_s(t_build)}; "
            f"{q} queries in {fmt_s(t)}; recall@10 {recall:.3f}; peak RSS {peak_rss_gb():.1f} GB")
        del ivf
        gc.collect()
    k_div = 99
    (Dg, Ig), t, _ = timeit(lambda: nb.knn_within_groups(X, labels, k_div, metric="l2", exclude_self=True))
    add(f"kNN within class k={k_div} l2", n, t, None,
        f"{len(np.unique(labels))} classes of ~{n // len(np.unique(labels))}; peak RSS {peak_rss_gb():.1f} GB")
    return Dg, Ig


def bench_scoring(X, T, labels, S, I, Dg, Ig, quick, with_adapt):
    n = len(X)
    score, note = try_import("selector.score")
    if score is None:
        add("scoring (selector.score)", n, None, None, "skipped: " + note)
        return None
    out = {}
    try:
        out["alignment"], t, _ = timeit(lambda: score.alignment(X, T, labels))
        add("score.alignment (SAS)", n, t)
        k = Dg.shape[1] + 1
        # neighbours given: distances recomputed from I in memory-bounded blocks (the pipeline instead reuses
        # the exact L2 distances that knn_within_groups returns, timed in the kNN row above)
        out["diversity"], t, _ = timeit(lambda: score.diversity(X, labels, k=k, neighbors=(Dg, Ig)))
        add(f"score.diversity (SDS, K={k}) recomputed from our kNN ids", n, t)
        if n * len(T) <= 100_000_000:
            _, t, _ = timeit(lambda: score.zero_shot_probs(X, T))
            add("score.zero_shot_probs", n, t)
        else:
            add("score.zero_shot_probs", n, None, None, f"skipped: the (n, C) output is {n * len(T) * 4 / 1e9:.0f} GB")
    except Exception as exc:
        add("scoring (selector.score)", n, None, None, f"failed: {type(exc).__name__}: {exc}")
    audit, note = try_import("selector.audit")
    if noise is None:
        add("audit.audit_labels", n, None, None, "skipped: " + note)
    elif S is not None:
        try:
            names = [f"class {c}" for c in range(len(T))]
            result, t, _ = timeit(lambda: audit.audit_labels(X, T, labels, neighbors=(S, I)))
            out["cleanliness"] = 1.0 - np.asarray(audit.noise_score, np.float32)
            add("audit.audit_labels (global kNN given)", n, t, None, f"peak RSS {peak_rss_gb():.1f} GB")
        except Exception as exc:
            add("audit.audit_labels", n, None, None, f"failed: {type(exc).__name__}: {exc}")
    if with_adapt:
        adapt, note = try_import("selector.adapt")
        if adapt is None:
            add("adapt.Adapters.fit", n, None, None, "skipped: " + note)
        else:
            try:
                model, t, _ = timeit(lambda: adapt.Adapters(seed=0).fit(X, T, labels))
                add("adapt.Adapters.fit (defaults)", n, t, None, f"epochs {getattr(model, 'epochs', '?')}")
            except Exception as exc:
                add("adapt.Adapters.fit", n, None, None, f"failed: {type(exc).__name__}: {exc}")
    return out


def bench_selection(n, labels, scores, repeats):
    rng = np.random.default_rng(1)
    cols = {name: scores.get(name, rng.random(n).astype(np.float32))
            for name in ("alignment", "diversity", "cleanliness")}
    exclude = rng.random(n) < 0.05                                   # 5% flagged
    weights = {"alignment": 1.0, "diversity": 0.5, "cleanliness": 1.0}
    base = selection_score(cols, weights)
    ratios = np.linspace(0.05, 0.9, repeats)
    weight_sets = [dict(zip(cols, rng.uniform(0.05, 1.0, 3))) for _ in range(repeats)]
    for strategy in ("topk", "stratified"):
        for balance in (False, True):
            tag = f"select {strategy}{' + class balance' if balance else ''}"
            it = iter(ratios)
            _, med, p95 = timeit(lambda: select(base, float(next(it)), labels=labels, class_balance=balance,
                                                strategy=strategy, exclude=exclude), repeats)
            add(f"{tag}: ratio change", n, med, p95, f"{repeats} ratios 0.05-0.9, 5% excluded")
            it = iter(weight_sets)
            _, med, p95 = timeit(lambda: select(selection_score(cols, next(it)), 0.3, labels=labels,
                                                class_balance=balance, strategy=strategy, exclude=exclude), repeats)
            add(f"{tag}: weight change (incl. selection_score)", n, med, p95, f"{repeats} weight sets, ratio 0.3")
    tracemalloc.start()
    select(base, 0.3, labels=labels, class_balance=True, strategy="stratified", exclude=exclude)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    add("select stratified + balance: peak allocation", n, None, None, f"{peak / 1e6:.0f} MB (tracemalloc)")


def bench_ste(n, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.beta(5, 2, n)
    D = rng.beta(2, 5, n)
    A = ((A - A.min()) / np.ptp(A)).astype(np.float32)
    D = ((D - D.min()) / np.ptp(D)).astype(np.float32)
    (loop, info), t, _ = timeit(lambda: select_ste(A, D, 0.3, repair=False))
    fast, med, p95 = timeit(lambda: select(paper_score(A, D), 0.3), 20)
    add("select_ste (paper's STE loop, ratio 0.3)", n, t, None,
        f"{info['iterations']} iterations, converged {info['converged']}, ended {info['off_by']:+d} off k; "
        f"differs from fast path in {int((loop ^ fast).sum())} rows ({(loop ^ fast).mean() * 100:.3f}% of N)")
    add("fast path select(paper_score) (same optimum)", n, med, p95, f"speed-up x{t / med:.0f}")


def bench_umap(X, n_umap):
    from selector.project import umap_from_knn
    import umap

    import warnings

    Xu = X[:n_umap]
    # numba JIT warm-up, not timed; >= 4096 rows so umap-learn's NN-descent path is compiled too
    warm = X[-4500:]
    Sw, Iw = nb.knn(warm, 10)
    umap_from_knn(Iw, 1 - Sw, seed=0, n_epochs=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        umap.UMAP(n_neighbors=11, metric="cosine", random_state=0, n_jobs=1, n_epochs=10).fit(warm)
    (S, I), t_knn, _ = timeit(lambda: nb.knn(Xu, 10, metric="cosine"))
    _, t_map, _ = timeit(lambda: umap_from_knn(I, 1 - S, seed=0))
    add("UMAP from our kNN graph (knn + layout)", n_umap, t_knn + t_map, None,
        f"kNN {fmt_s(t_knn)} + layout {fmt_s(t_map)}; seeded (1 thread); JIT warmed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, t_own, _ = timeit(lambda: umap.UMAP(n_neighbors=11, metric="cosine", random_state=0, n_jobs=1).fit(Xu))
    add("UMAP with umap-learn's own neighbour search", n_umap, t_own, None,
        "NN-descent + layout, n_neighbors=11, seeded (1 thread); JIT warmed")


def machine() -> str:
    import faiss
    import torch
    gpu = "faiss GPU: yes" if nb.gpu_available() else "no GPU (faiss-cpu)"
    return (f"{platform.node()}: {cpu_and_memory()}, {gpu}; "
            f"Python {platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__}, "
            f"torch {torch.__version__}")


def render(args, started, elapsed) -> str:
    part = f", sections {args.only}" if args.only else ""
    lines = [f"## Engine speed ({'quick' if args.quick else 'full'} run{part})", "",
             f"- date: {started:%Y-%m-%d %H:%M} (local), total {fmt_s(elapsed)}",
             f"- machine: {machine()}",
             "- data: synthetic unit-norm 512-d class clusters (float32); 5% of rows excluded in selection runs",
             "- times are wall clock; a single run unless a p95 is given (then median / p95 over the repeats)",
             "", "| stage | N | time (median) | p95 | notes |", "|---|---:|---:|---:|---|"]
    for stage, n, med, p95, notes in ROWS:
        lines.append(f"| {stage} | {n:,} | {fmt_s(med)} | {fmt_s(p95)} | {notes} |")
    lines += ["", f"Peak RSS of the whole run: {peak_rss_gb():.2f} GB (getrusage ru_maxrss)", ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="UMAP at 10k, fewer 1M queries, no 1M IVF build")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine_speed.md"))
    p.add_argument("--skip-1m", action="store_true", help="only the 60k part")
    p.add_argument("--only", default="", help=f"comma-separated sections to run: {','.join(SECTIONS)} (default all)")
    p.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    p.add_argument("--repeats", type=int, default=24, help="selection re-runs per setting (>= 20)")
    args = p.parse_args(argv)
    started, t0 = dt.datetime.now(), time.perf_counter()
    repeats = max(20, args.repeats)

    print("# N = 60,000, 10 classes", flush=True)
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if args.skip_1m:
        only.discard("1m")
    X, T, labels = synthetic(60_000, 10, seed=0)
    scores = {}
    if only & {"knn", "scoring"}:
        S, I, Dg, Ig = bench_knn_60k(X, labels, args.quick)
        if "scoring" in only:
            scores = bench_scoring(X, T, labels, S, I, Dg, Ig, args.quick, with_adapt=True) or {}
        del S, I, Dg, Ig
    if "selection" in only:
        bench_selection(len(X), labels, scores, repeats)
    if "ste" in only:
        bench_ste(len(X))
    if "umap" in only:
        bench_umap(X, 10_000 if args.quick else 60_000)
    del X
    gc.collect()

    if "1m" in only:
        print("# N = 1,000,000, 1,000 classes", flush=True)
        X, T, labels = synthetic(1_000_000, 1000, seed=1)
        Dg, Ig = bench_knn_1m(X, labels, args.quick)
        scores = bench_scoring(X, T, labels, None, None, Dg, Ig, args.quick, with_adapt=False) or {}
        del Dg, Ig
        gc.collect()
        bench_selection(len(X), labels, scores, repeats)
        del X
        gc.collect()

    text = render(args, started, time.perf_counter() - t0)
    print()
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.exists():
        with out.open("a") as fh:
            fh.write("\n" + text)
    else:
        out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
