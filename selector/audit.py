"""Label audit: which given labels are wrong, and what the right ones are.

Why not the paper's alignment score: adapters fit on noisy labels learn the noise (AUROC 0.64 under
class-dependent flips, PAPER.md). The audit estimates the CLEAN class posterior P(c | x) by pooling
three experts, none of which scores a row with a model that saw that row's own label:
  (a) zero-shot probabilities of the frozen encoder (independent of the given labels; one temperature
      fitted by likelihood),
  (b) a linear discriminant (class means + pooled shrunk covariance) on the frozen embeddings,
      5-fold cross-fitted (out-of-fold), refit once with robust per-sample weights = agreement of the
      first-round pool with the given label, p(y_i) / max_c p(c), and
  (c) smoothed label votes of the k global neighbours in embedding space.
Pool: log-linear, P ~ exp(sum_m a_m log p_m), with a_m >= 0 fitted by likelihood of the GIVEN labels
through the estimated noise transition matrix (forward correction, so an expert that predicts the noise
is not rewarded). The transition T[true, given] comes from the calibrated confident joint (Northcutt et
al. 2021: per-class thresholds = mean self-confidence of each given class).
noise_score = posterior probability that the given label is wrong, 1 - P(y|x) T[y,y] / sum_c P(c|x) T[c,y].
flagged: the top-m rows by noise_score, m maximising the expected F1 (sum of the top-m scores is the
expected number of true positives, the sum of all scores the expected number of errors); no fixed cut.
class_noise_rate: mean noise_score of each given class.
Measured on Fashion-MNIST demo-encoder features: bench/audit_quality.py, bench/results/audit_quality.md.
At scale the experts are never held as (n, C) arrays: `_Experts` recomputes them for each block of rows.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from selector.errors import InputError
from selector.linalg import l2_normalize, softmax
from selector.progress import Progress, ensure
from selector.runtime import blas_threads
from selector.score import zero_shot_best, zero_shot_logits
from selector.validate import check_int, check_labels, check_matrix, neighbor_pair_ids

log = logging.getLogger(__name__)

LDA_SHRINKAGE = 0.05  # covariance -> (1-s) cov + s tr(cov)/d I; 0.01-0.2 measured equal on Fashion-MNIST
KNN_SMOOTHING = 1.0    # pseudo-votes spread over classes by their frequency (kNN vote expert)
EXPERTS = ("zero_shot", "cross_fit", "knn")
_CHUNK = 65_536


@dataclass(eq=False)
class LabelAudit:
    """Per-row label audit; every array has one entry per row (C entries for class_noise_rate)."""
    noise_score: np.ndarray       # (n,) float32 in [0,1], higher = more likely mislabelled (posterior)
    flagged: np.ndarray           # (n,) bool: noise_score >= threshold and suggestion != given label
    threshold: float
    suggested_label: np.ndarray   # (n,) int64 argmax of the combined probability
    suggested_prob: np.ndarray    # (n,) float32
    given_prob: np.ndarray        # (n,) float32 combined probability of the given label
    knn_agreement: np.ndarray     # (n,) float32 share of global neighbours whose label == given label
    knn_support: np.ndarray       # (n,) int64 neighbours whose label == the suggested label
    n_neighbors: np.ndarray       # (n,) int64 neighbours found (k unless the dataset is smaller)
    zero_shot_class: np.ndarray   # (n,) int64 the class prompt each image matches best (frozen encoder)
    zero_shot_sim: np.ndarray     # (n,) float32 its cosine similarity (low = matches no class well)
    class_noise_rate: np.ndarray  # (C,) float32 estimated share of mislabelled rows per given class
    n_errors_estimate: int = 0    # m, the expected-F1-optimal number of rows to flag
    components: dict | None = None  # (n,) given-label probability of each expert (EXPERTS)
    pool_weights: dict | None = None  # fitted weight of each expert in the pool


# ---------------------------------------------------------------------------------------- experts
def fit_temperature(S: np.ndarray, y: np.ndarray, rng) -> float:
    """Temperature of softmax(S / tau) maximising the likelihood of the given labels, on a subsample of at most
    20,000 rows of S (n, C) (label noise makes it a little softer, which is what a combination wants)."""
    rows = rng.choice(len(y), size=min(len(y), 20_000), replace=False)
    return _temperature(S[rows], y[rows])


def _temperature(Ss: np.ndarray, ys: np.ndarray) -> float:
    """Grid search of the temperature on rows Ss (m, C) with labels ys (m,)."""
    Ss = Ss.astype(np.float64)
    best = (np.inf, 0.05)
    for tau in np.geomspace(0.002, 2.0, 61):
        Z = Ss / tau
        Z -= Z.max(1, keepdims=True)
        nll = -(Z[np.arange(len(ys)), ys] - np.log(np.exp(Z).sum(1))).mean()
        if nll < best[0]:
            best = (nll, tau)
    return float(best[1])


def _stratified_folds(y: np.ndarray, n_folds: int, rng) -> np.ndarray:
    fold = np.empty(len(y), np.int64)
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        fold[rows] = np.arange(len(rows)) % n_folds
    return fold


def _log_softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(1, keepdims=True)
    return Z - np.log(np.exp(Z).sum(1, keepdims=True))


def _fit_lda(Xn, y, C, weights, folds, n_folds, *, shrinkage=LDA_SHRINKAGE) -> list:
    """Per fold, the (A (d, C), b (C,)) of a weighted linear discriminant (class means + pooled, shrunk
    covariance) fitted on the OTHER folds. Sufficient statistics are summed once and each fold's are
    subtracted, so the cost is one O(n d^2) pass however many folds."""
    d = Xn.shape[1]
    w = weights.astype(np.float64)
    # per-fold weighted sums: class counts, class sums of x, scatter sum x x^T (float64, chunked)
    cnt = np.zeros((n_folds, C))
    sx = np.zeros((n_folds, C, d))
    sxx = np.zeros((n_folds, d, d))
    for f in range(n_folds):
        r = np.flatnonzero(folds == f)
        cnt[f] = np.bincount(y[r], weights=w[r], minlength=C)
        for s in range(0, len(r), _CHUNK):
            rr = r[s:s + _CHUNK]
            xd = Xn[rr].astype(np.float64)
            xw = xd * w[rr, None]
            sxx[f] += xw.T @ xd
            np.add.at(sx[f], y[rr], xw)
    params = []
    for f in range(n_folds):
        c_ = cnt.sum(0) - cnt[f]
        s_ = sx.sum(0) - sx[f]
        ss = sxx.sum(0) - sxx[f]
        mu = s_ / np.maximum(c_, 1e-12)[:, None]
        tot = c_.sum()
        cov = (ss - (mu.T * c_) @ mu) / max(tot, 1e-12)
        cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
        A = np.linalg.solve(cov, mu.T)                      # (d,C)
        b = -0.5 * (mu * A.T).sum(1) + np.log(np.maximum(c_ / tot, 1e-12))
        b[c_ <= 0] = -1e9
        params.append((A, b))
    return params


class _Experts:
    """The three experts' log-probabilities (b, C) for any block of rows, recomputed on demand, so that no
    (n, C) array is ever held: zero-shot (frozen prompts, temperature tau), cross-fitted LDA (out-of-fold
    parameters per row) and smoothed kNN votes."""

    def __init__(self, Xn, T, y, I, C, tau, folds, lda):
        self.Xn, self.T, self.y, self.I, self.C, self.tau, self.folds, self.lda = Xn, T, y, I, C, tau, folds, lda
        self.prior = (np.bincount(y, minlength=C) / len(y)).astype(np.float32)

    def zero_shot(self, rows) -> np.ndarray:
        P = softmax(zero_shot_logits(self.Xn[rows], self.T) / np.float32(self.tau))
        return np.log(np.maximum(P, 1e-12))

    def cross_fit(self, rows) -> np.ndarray:
        out = np.empty((len(rows), self.C), np.float32)
        fold = self.folds[rows]
        for f, (A, b) in enumerate(self.lda):
            at = np.flatnonzero(fold == f)
            if len(at):
                out[at] = _log_softmax(self.Xn[rows[at]].astype(np.float64) @ A + b)
        return out

    def votes(self, rows) -> np.ndarray:
        """Smoothed neighbour votes (count_c + s * prior_c) / (k + s), (b, C) float32 rows summing to 1."""
        I = self.I[rows]
        valid = I >= 0
        lab = np.where(valid, self.y[np.maximum(I, 0)], 0)
        flat = (np.arange(len(rows))[:, None] * self.C + lab).ravel()
        v = np.bincount(flat, weights=valid.ravel(), minlength=len(rows) * self.C).reshape(len(rows), self.C)
        v = v.astype(np.float32) + np.float32(KNN_SMOOTHING) * self.prior[None, :]
        return v / v.sum(1, keepdims=True)

    def logps(self, rows) -> list[np.ndarray]:
        return [self.zero_shot(rows), self.cross_fit(rows), np.log(self.votes(rows))]

    def pool(self, a):
        """rows -> P (b, C): the log-linear pool of the experts with weights a."""
        return lambda rows: _combine(self.logps(rows), a)


def _blocks(rows: np.ndarray, C: int):
    """`rows` in consecutive blocks whose (block, C) float32 temporaries stay within 64 MB."""
    step = max(1024, min(_CHUNK, (1 << 24) // max(C, 1)))
    for s in range(0, len(rows), step):
        yield rows[s:s + step]


def _pool_weights(experts: _Experts, y, transition, rng) -> np.ndarray:
    """Weights a_m >= 0 of the log-linear pool P_a ~ exp(sum_m a_m log p_m) (an estimate of the CLEAN
    posterior) fitted by maximum likelihood of the GIVEN labels through the estimated noise transition
    (forward correction): p(given = j | x) = sum_c P_a(c | x) transition[c, j]. Without the transition
    the fit would reward experts that predict the noise. No leakage: every expert scores a row without
    its own label. Subsample of 20k rows (fewer when C is large, to bound memory); equal weights if the
    fit fails."""
    from scipy.optimize import minimize
    M = len(EXPERTS)
    a0 = np.full(M, 1.0 / M)
    C = transition.shape[0]
    rows = rng.choice(len(y), size=min(len(y), 20_000, max(2_000, 5_000_000 // C)), replace=False)
    L = np.stack([lp.astype(np.float64) for lp in experts.logps(rows)])   # (M, m, C)
    Tcol = transition[:, y[rows]].T                                   # (m, C): T[c, y_i]

    def f(a):
        Z = np.tensordot(a, L, 1)
        Z -= Z.max(1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(1, keepdims=True)
        u = np.maximum((P * Tcol).sum(1), 1e-300)
        Lbar = (L * P[None]).sum(2, keepdims=True)                    # (M, m, 1)
        du = (Tcol[None] * P[None] * (L - Lbar)).sum(2)              # (M, m)
        return -np.log(u).mean(), -(du / u[None]).mean(1)

    try:
        res = minimize(f, a0, jac=True, method="L-BFGS-B", bounds=[(0.0, 10.0)] * M)
        a = res.x
    except (ValueError, FloatingPointError):  # pragma: no cover - numerical failure
        return a0
    return a if np.isfinite(a).all() and a.sum() > 0 and f(a)[0] <= f(a0)[0] else a0


def _combine(logps, a) -> np.ndarray:
    Z = sum(ai * lp for ai, lp in zip(a, logps))
    return softmax(Z.astype(np.float32))


# ----------------------------------------------------------------------------- confident learning
def _transition(pool, y, C, thr=None) -> np.ndarray:
    """Noise transition T[true, given] (C, C) from the calibrated confident joint of the pool (Northcutt et al.
    2021): a row counts under its given label and the most likely class at or above that class's threshold,
    the mean P(given label) of the class (computed here unless given). One pass over the rows, two without
    `thr`."""
    rows = np.arange(len(y))
    counts = np.bincount(y, minlength=C)
    if thr is None:
        total = np.zeros(C)
        for b in _blocks(rows, C):
            total += np.bincount(y[b], weights=pool(b)[np.arange(len(b)), y[b]], minlength=C)
        thr = _thresholds(total, counts)
    cj = np.zeros((C, C), np.float64)
    for b in _blocks(rows, C):
        P = pool(b)
        above = P >= thr[None, :] - 1e-6
        true = np.where(above, P, -1.0).argmax(1)
        has = above.any(1)
        np.add.at(cj, (y[b][has], true[has]), 1.0)
    row = cj.sum(1, keepdims=True)
    Q = np.where(row > 0, cj / np.maximum(row, 1e-12), np.eye(C)) * counts[:, None]   # rows given, cols true
    Tm = Q.T + 1e-3 * np.eye(C)
    return Tm / Tm.sum(1, keepdims=True)


def _thresholds(self_conf_sum, counts) -> np.ndarray:
    return np.where(counts > 0, self_conf_sum / np.maximum(counts, 1), 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------ audit
def neighbor_ids(neighbors, Xn, k: int = 10) -> np.ndarray:
    """(n, k') int64 global neighbour ids (self excluded, -1 padded) from None (exact cosine kNN on Xn, k
    neighbours), a Neighbors index over the rows, or a (D, I) pair."""
    if neighbors is None:
        from selector.neighbors import knn
        _, I = knn(Xn, k, metric="cosine", exclude_self=True)
        return np.asarray(I, np.int64)
    if hasattr(neighbors, "search"):
        _, I = neighbors.search(Xn, k, exclude_self=True)
        return np.asarray(I, np.int64)
    return neighbor_pair_ids(neighbors, Xn.shape[0], "None, a Neighbors index over the rows, or a (D, I) pair of "
                             "global kNN (self excluded)")


def audit_labels(X, T, labels, *, neighbors=None, seed: int = 0, n_folds: int = 5, k: int = 10,
                 progress: Progress | None = None) -> LabelAudit:
    """Audit the given labels of n rows -> LabelAudit.

    X (n,d) frozen image embeddings, T (C,d) class-prompt embeddings of the same encoder, labels (n,)
    given labels in [0, C). neighbors: None (exact cosine kNN on X, k neighbours), a Neighbors index over
    these rows, or a (D, I) pair of global kNN with self excluded (e.g. the pipeline's kNN on the adapted
    F); only the neighbour ids are used. Cost: O(n d^2) for the discriminant and about seven passes of
    O(n C d) over the rows; memory O(n d + block x C): the experts are recomputed block by block in each
    pass, so no (n, C) array is held (measured at 250k x 512 x 1,000 classes: 2.1 GB peak against 12.0 GB
    with dense (n, C) arrays, 128 s against 86 s on 2 cores). kNN excluded when neighbours are passed in.
    """
    X = check_matrix(X, "X (image embeddings)")
    T = check_matrix(T, "T (class-prompt embeddings)", dim=X.shape[1])
    n, C = X.shape[0], T.shape[0]
    if C < 2:
        raise InputError(f"a label audit needs at least 2 classes; got {C}.")
    y = check_labels(labels, n, C)
    n_folds = check_int(n_folds, "n_folds", minimum=2)
    present = np.flatnonzero(np.bincount(y, minlength=C))
    if len(present) < 2:
        raise InputError(f"a label audit needs rows of at least 2 classes; all {n} rows are of class "
                         f"{int(present[0]) if len(present) else 'none'}.")
    if n < 2 * n_folds:
        raise InputError(f"a label audit needs at least {2 * n_folds} rows for {n_folds}-fold "
                         f"cross-fitting; got {n}.")
    # many small products: one BLAS thread is faster whatever the machine (selector.runtime)
    with blas_threads(1):
        return _audit(X, T, y, neighbors=neighbors, seed=seed, n_folds=n_folds, k=k, progress=ensure(progress))


def _audit(X, T, y, *, neighbors, seed, n_folds, k, progress) -> LabelAudit:
    n, C = X.shape[0], T.shape[0]
    counts = np.bincount(y, minlength=C)
    rng = np.random.default_rng(seed)
    stages = 4

    progress("auditing labels", 0, stages)            # (a) zero-shot: one temperature on a subsample
    Xn = l2_normalize(X)
    sub = rng.choice(n, size=min(n, 20_000), replace=False)
    tau = _temperature(zero_shot_logits(Xn[sub], T), y[sub])
    I = neighbor_ids(neighbors, Xn, k)                # (c) kNN votes
    progress("auditing labels", 1, stages)

    # (b) cross-fitted classifier: round 1 unweighted, round 2 weighted by agreement with round 1's pool
    folds = _stratified_folds(y, n_folds, rng)
    experts = _Experts(Xn, T, y, I, C, tau, folds, _fit_lda(Xn, y, C, np.ones(n), folds, n_folds))
    every = np.arange(n)
    a1 = _pool_weights(experts, y, _transition(experts.pool(np.full(3, 1 / 3)), y, C), rng)
    pool1 = experts.pool(a1)
    w, conf = np.empty(n), np.zeros(C)
    for b in _blocks(every, C):                       # robust weights for round 2, and round 1's thresholds
        P = pool1(b)
        given = P[np.arange(len(b)), y[b]]
        w[b] = given / P.max(1)
        conf += np.bincount(y[b], weights=given, minlength=C)
    T1 = _transition(pool1, y, C, thr=_thresholds(conf, counts))
    experts.lda = _fit_lda(Xn, y, C, w, folds, n_folds)
    pool_w = _pool_weights(experts, y, T1, rng)
    pool = experts.pool(pool_w)
    progress("auditing labels", 2, stages)

    out = _per_row(experts, pool_w, y, C, _transition(pool, y, C))
    noise_score = out["noise_score"]
    n_err, threshold, flagged = _flag(noise_score)
    flagged &= out["suggested_label"] != y   # a row whose best guess is its own label is not called mislabelled
    progress("auditing labels", 3, stages)
    zs_class, zs_sim = zero_shot_best(Xn, T)
    progress("auditing labels", 4, stages)
    log.info("audit: pool weights zero-shot %.2f, cross-fit %.2f, knn %.2f; %d flagged (expected-F1 optimum "
             "%d rows); zero-shot temperature %.3g", *pool_w, int(flagged.sum()), n_err, tau)
    return LabelAudit(
        noise_score=noise_score, flagged=flagged, threshold=threshold, suggested_label=out["suggested_label"],
        suggested_prob=out["suggested_prob"], given_prob=out["given_prob"], knn_agreement=out["knn_agreement"],
        knn_support=out["knn_support"], n_neighbors=(I >= 0).sum(1).astype(np.int64), zero_shot_class=zs_class,
        zero_shot_sim=zs_sim,
        class_noise_rate=(np.bincount(y, weights=noise_score, minlength=C) / np.maximum(counts, 1)).astype(
            np.float32),
        n_errors_estimate=n_err,
        components={name: out[f"p_{name}"] for name in EXPERTS},
        pool_weights=dict(zip(EXPERTS, map(float, pool_w))))


def _per_row(experts: _Experts, a, y, C, Tm) -> dict:
    """Everything the table keeps per row, block by block: the posterior that the given label is wrong
    (1 - P(y|x) T[y,y] / sum_c P(c|x) T[c,y]), the pool's best class and its probability, the given label's
    probability under the pool and under each expert, and the neighbours' agreement."""
    n = len(y)
    f32 = lambda: np.empty(n, np.float32)  # noqa: E731
    out = {"noise_score": f32(), "given_prob": f32(), "suggested_prob": f32(), "knn_agreement": f32(),
           "suggested_label": np.empty(n, np.int64), "knn_support": np.empty(n, np.int64),
           **{f"p_{name}": f32() for name in EXPERTS}}
    for rows in _blocks(np.arange(n), C):
        yb = y[rows]
        r = np.arange(len(rows))
        lps = experts.logps(rows)
        P = _combine(lps, a)
        given = P[r, yb]
        den = (P * Tm[:, yb].T).sum(1)
        out["noise_score"][rows] = np.clip(1.0 - given * Tm[yb, yb] / np.maximum(den, 1e-30), 0.0, 1.0)
        best = P.argmax(1)
        out["suggested_label"][rows] = best
        out["suggested_prob"][rows] = P[r, best]
        out["given_prob"][rows] = given
        I = experts.I[rows]
        valid = I >= 0
        nb = np.where(valid, y[np.maximum(I, 0)], -1)
        out["knn_agreement"][rows] = (nb == yb[:, None]).sum(1) / np.maximum(valid.sum(1), 1)
        out["knn_support"][rows] = (nb == best[:, None]).sum(1)
        for name, lp in zip(EXPERTS, lps):
            out[f"p_{name}"][rows] = np.exp(lp[r, yb])
    return out


def _flag(noise_score):
    """The expected-F1-optimal flag count m (sum of the top-m scores = expected true positives, sum of all
    scores = expected errors), its threshold, and the top-m mask."""
    n = len(noise_score)
    order = np.argsort(-noise_score, kind="stable")
    cs = np.cumsum(noise_score[order].astype(np.float64))
    n_err = int(np.argmax(2 * cs / (np.arange(1, n + 1) + cs[-1]))) + 1 if cs[-1] >= 0.5 else 0
    if n_err == 0:
        return 0, 1.0, np.zeros(n, bool)
    threshold = float(noise_score[order[n_err - 1]])
    return n_err, threshold, noise_score >= threshold
