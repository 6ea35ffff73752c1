"""Label audit (mislabelled / corrupted / near-duplicate rows), synthetic noise injection, audit metrics.

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
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from selector.errors import InputError, describe_rows
from selector.progress import Progress, ensure
from selector.score import (check_labels, check_matrix, l2_normalize, softmax, blas_threads,
                            zero_shot_logits)

log = logging.getLogger(__name__)

NOISE_MODES = ("uniform", "confusable")
LDA_SHRINKAGE = 0.05  # covariance -> (1-s) cov + s tr(cov)/d I; 0.01-0.2 measured equal on Fashion-MNIST
OOD_CUT = 3.5          # robust z (median/MAD, Iglewicz-Hoaglin "outlier" level) on both OOD criteria
KNN_SMOOTHING = 1.0    # pseudo-votes spread over classes by their frequency (kNN vote expert)
_CHUNK = 65_536


@dataclass(eq=False)
class Audit:
    """Per-row label audit; every array has one entry per row (C entries for class_noise_rate)."""
    noise_score: np.ndarray       # (n,) float32 in [0,1], higher = more likely mislabelled (posterior)
    flagged: np.ndarray           # (n,) bool: noise_score >= threshold and suggestion != given label
    threshold: float
    suggested_label: np.ndarray   # (n,) int64 argmax of the combined probability
    suggested_prob: np.ndarray    # (n,) float32
    given_prob: np.ndarray        # (n,) float32 combined probability of the given label
    knn_agreement: np.ndarray     # (n,) float32 share of global neighbours whose label == given label
    ood_score: np.ndarray         # (n,) float32 robust z: min(low best prompt match, far from neighbours)
    ood: np.ndarray               # (n,) bool ood_score > OOD_CUT
    duplicate_of: np.ndarray      # (n,) int64, -1 = none, else the lowest row it nearly duplicates
    reason: np.ndarray            # (n,) object str, "" when nothing to say
    class_noise_rate: np.ndarray  # (C,) float32 estimated share of mislabelled rows per given class
    n_errors_estimate: int = 0    # m, the expected-F1-optimal number of rows to flag
    components: dict | None = None  # (n,) given-label probability of each expert (zero_shot, cross_fit, knn)
    pool_weights: dict | None = None  # fitted weight of each expert in the pool


# ---------------------------------------------------------------------------------------- experts
def _fit_temperature(S: np.ndarray, y: np.ndarray, rng) -> float:
    """Temperature of softmax(S / tau) maximising the likelihood of the given labels (grid search on
    a subsample; label noise makes it a little softer, which is what a combination wants)."""
    rows = rng.choice(len(y), size=min(len(y), 20_000), replace=False)
    Ss, ys = S[rows].astype(np.float64), y[rows]
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


def _cross_fit_lda(Xn, y, C, weights, folds, n_folds, *, shrinkage=LDA_SHRINKAGE):
    """Out-of-fold log p(c | x) (n,C) of a weighted linear discriminant (class means + pooled, shrunk
    covariance). Sufficient statistics are summed once and each fold's are subtracted, so the cost is
    one O(n d^2) pass however many folds."""
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
    out = np.empty((len(y), C), np.float32)
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
        te = np.flatnonzero(folds == f)
        for s in range(0, len(te), _CHUNK):
            r = te[s:s + _CHUNK]
            Z = Xn[r].astype(np.float64) @ A + b
            Z -= Z.max(1, keepdims=True)
            out[r] = Z - np.log(np.exp(Z).sum(1, keepdims=True))
    return out


def _knn_logprobs(I, y, C, prior):
    """Smoothed neighbour votes: (count_c + s * prior_c) / (k + s), as log-probabilities."""
    valid = I >= 0
    lab = np.where(valid, y[np.maximum(I, 0)], 0)
    flat = (np.arange(len(y))[:, None] * C + lab).ravel()
    votes = np.bincount(flat, weights=valid.ravel(), minlength=len(y) * C).reshape(len(y), C)
    votes = votes.astype(np.float32) + np.float32(KNN_SMOOTHING) * prior[None, :].astype(np.float32)
    votes /= votes.sum(1, keepdims=True)
    return np.log(votes), votes


def _pool_weights(logps, y, transition, rng) -> np.ndarray:
    """Weights a_m >= 0 of the log-linear pool P_a ~ exp(sum_m a_m log p_m) (an estimate of the CLEAN
    posterior) fitted by maximum likelihood of the GIVEN labels through the estimated noise transition
    (forward correction): p(given = j | x) = sum_c P_a(c | x) transition[c, j]. Without the transition
    the fit would reward experts that predict the noise. No leakage: every expert scores a row without
    its own label. Subsample of 20k rows; equal weights if the fit fails."""
    from scipy.optimize import minimize
    M = len(logps)
    a0 = np.full(M, 1.0 / M)
    rows = rng.choice(len(y), size=min(len(y), 20_000), replace=False)
    L = np.stack([lp[rows].astype(np.float64) for lp in logps])      # (M, m, C)
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


def _transition(P, y, C):
    """Noise transition T[true, given] from the calibrated confident joint of P (rows sum to 1)."""
    Q, _, _ = _confident_joint(P, y, C)          # rows given, cols true
    Tm = Q.T + 1e-3 * np.eye(C)
    return Tm / Tm.sum(1, keepdims=True)


def _combine(logps, a) -> np.ndarray:
    Z = sum(ai * lp for ai, lp in zip(a, logps))
    return softmax(Z.astype(np.float32))


# ----------------------------------------------------------------------------- confident learning
def _confident_joint(P: np.ndarray, y: np.ndarray, C: int):
    """Calibrated confident joint Q (C,C) counts: rows = given label, cols = estimated true label."""
    n = len(y)
    counts = np.bincount(y, minlength=C)
    self_conf = np.bincount(y, weights=P[np.arange(n), y], minlength=C)
    thr = np.where(counts > 0, self_conf / np.maximum(counts, 1), 1.0).astype(np.float32)
    above = P >= thr[None, :] - 1e-6
    masked = np.where(above, P, -1.0)
    true = masked.argmax(1)
    has = above.any(1)
    cj = np.zeros((C, C), np.float64)
    np.add.at(cj, (y[has], true[has]), 1.0)
    row = cj.sum(1, keepdims=True)
    Q = np.where(row > 0, cj / np.maximum(row, 1e-12), np.eye(C)) * counts[:, None]
    return Q, thr, n


# ------------------------------------------------------------------------------------------ audit
def _resolve_neighbors(neighbors, Xn, k):
    if neighbors is None:
        from selector.neighbors import knn
        _, I = knn(Xn, k, metric="cosine", exclude_self=True)
        return np.asarray(I, np.int64)
    if hasattr(neighbors, "search"):
        _, I = neighbors.search(Xn, k, exclude_self=True)
        return np.asarray(I, np.int64)
    try:
        _, I = neighbors
    except (TypeError, ValueError) as exc:
        raise InputError("neighbors must be None, a Neighbors index over the rows, or a (D, I) pair of "
                         f"global kNN (self excluded); got {type(neighbors).__name__}.") from exc
    I = np.asarray(I)
    if I.ndim != 2 or I.shape[0] != Xn.shape[0] or I.shape[1] < 1:
        raise InputError(f"neighbors I must have shape (n, k) = ({Xn.shape[0]}, k>=1); got {I.shape}.")
    if ((I < -1) | (I >= Xn.shape[0])).any():
        raise InputError(f"neighbors I holds row ids outside [-1, {Xn.shape[0]}); recompute the kNN "
                         "on the same rows as X.")
    return I.astype(np.int64, copy=False)


def _robust_z(v: np.ndarray) -> np.ndarray:
    """(v - median) / (1.4826 MAD), a robust z-score (0 where MAD is 0)."""
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    return ((v - med) / mad).astype(np.float32) if mad > 0 else np.zeros_like(v, np.float32)


def audit_labels(X, T, labels, class_names, **kwargs) -> Audit:
    with blas_threads(1):
        return _audit_labels(X, T, labels, class_names, **kwargs)


def _audit_labels(X, T, labels, class_names, *, neighbors=None, seed: int = 0, n_folds: int = 5,
                 k: int = 10, duplicate_threshold: float = 0.98, progress: Progress | None = None) -> Audit:
    """Audit the given labels of n rows.

    X (n,d) frozen image embeddings, T (C,d) class-prompt embeddings of the same encoder, labels (n,)
    given labels in [0, C), class_names (C,). neighbors: None (exact cosine kNN on X, k neighbours), a
    Neighbors index over these rows, or a (D, I) pair of global kNN with self excluded (e.g. the
    pipeline's kNN on the adapted F); only the neighbour ids are used, similarities are recomputed on X.
    duplicate_threshold: cosine on X at or above which a neighbour with a lower row id is a near-duplicate.
    Cost: O(n d^2 + n k d + n C) time, about 6 n C floats of memory (fine for C <= ~100 at 1M rows);
    kNN excluded when neighbours are passed in.
    """
    progress = ensure(progress)
    X = check_matrix(X, "X (image embeddings)")
    T = check_matrix(T, "T (class-prompt embeddings)", dim=X.shape[1])
    n, C = X.shape[0], T.shape[0]
    names = [str(c) for c in class_names]
    if len(names) != C:
        raise InputError(f"class_names has {len(names)} entries but T has {C} rows; give one name per "
                         "class prompt, in the same order.")
    if C < 2:
        raise InputError(f"a label audit needs at least 2 classes; got {C}.")
    y = check_labels(labels, n, C)
    if not (0 < duplicate_threshold <= 1):
        raise InputError(f"duplicate_threshold must be in (0, 1]; got {duplicate_threshold!r}.")
    if not (isinstance(n_folds, (int, np.integer)) and n_folds >= 2):
        raise InputError(f"n_folds must be an integer >= 2; got {n_folds!r}.")
    counts = np.bincount(y, minlength=C)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise InputError(f"a label audit needs rows of at least 2 classes; all {n} rows are "
                         f"{names[present[0]] if len(present) else 'absent'!r}.")
    if n < 2 * n_folds:
        raise InputError(f"a label audit needs at least {2 * n_folds} rows for {n_folds}-fold "
                         f"cross-fitting; got {n}.")
    rng = np.random.default_rng(seed)
    stages = 5

    # (a) zero-shot
    progress("auditing labels", 0, stages)
    Xn = l2_normalize(X)
    S = zero_shot_logits(Xn, T)
    tau = _fit_temperature(S, y, rng)
    lp_zs = np.log(np.maximum(softmax(S / np.float32(tau)), 1e-12))
    progress("auditing labels", 1, stages)

    # (c) kNN votes (also gives neighbour ids for OOD / duplicates)
    I = _resolve_neighbors(neighbors, Xn, k)
    prior = counts / n
    lp_knn, votes = _knn_logprobs(I, y, C, prior)
    valid = I >= 0
    knn_agree = ((y[np.maximum(I, 0)] == y[:, None]) & valid).sum(1) / np.maximum(valid.sum(1), 1)
    progress("auditing labels", 2, stages)

    # (b) cross-fitted classifier: round 1 unweighted, round 2 weighted by agreement with round 1
    folds = _stratified_folds(y, n_folds, rng)
    lp_cf = _cross_fit_lda(Xn, y, C, np.ones(n), folds, n_folds)
    experts = [lp_zs, lp_cf, lp_knn]
    P0 = _combine(experts, np.full(3, 1 / 3))
    a1 = _pool_weights(experts, y, _transition(P0, y, C), rng)
    P1 = _combine(experts, a1)
    w = P1[np.arange(n), y] / P1.max(1)
    lp_cf = _cross_fit_lda(Xn, y, C, w, folds, n_folds)
    experts = [lp_zs, lp_cf, lp_knn]
    pool = _pool_weights(experts, y, _transition(P1, y, C), rng)
    P = _combine(experts, pool)
    progress("auditing labels", 3, stages)

    # posterior probability that the given label is wrong; expected-F1-optimal flag count
    rows = np.arange(n)
    given = P[rows, y]
    Tm = _transition(P, y, C)
    den = (P * Tm[:, y].T).sum(1)
    noise_score = np.clip(1.0 - given * Tm[y, y] / np.maximum(den, 1e-30), 0.0, 1.0).astype(np.float32)
    class_noise_rate = (np.bincount(y, weights=noise_score, minlength=C) / np.maximum(counts, 1)).astype(
        np.float32)
    order = np.argsort(-noise_score, kind="stable")
    cs = np.cumsum(noise_score[order].astype(np.float64))
    n_err = int(np.argmax(2 * cs / (np.arange(1, n + 1) + cs[-1]))) + 1 if cs[-1] >= 0.5 else 0
    if n_err > 0:
        threshold = float(noise_score[order[n_err - 1]])
        flagged = noise_score >= threshold
    else:
        threshold, flagged = 1.0, np.zeros(n, bool)
    suggested = P.argmax(1).astype(np.int64)
    flagged &= suggested != y   # a row whose best guess is its own label is not called mislabelled
    progress("auditing labels", 4, stages)

    # OOD: matches no class prompt well AND far from its neighbours (robust z on both, take the min)
    sims = np.einsum("ijk,ik->ij", Xn[np.maximum(I, 0)], Xn) if n * I.shape[1] * X.shape[1] < 5e8 \
        else np.vstack([np.einsum("ijk,ik->ij", Xn[np.maximum(I[s:s + 8192], 0)], Xn[s:s + 8192])
                        for s in range(0, n, 8192)])
    sims = np.where(valid, sims, np.nan)
    best_sim = S.max(1)
    far = 1.0 - np.nanmean(np.where(valid.any(1, keepdims=True), sims, 0.0), axis=1)
    # robust z of log(1 - cosine): the cosine distances are right-skewed, the logs close to symmetric
    ood_score = np.minimum(_robust_z(np.log(np.maximum(1.0 - best_sim, 1e-6))),
                           _robust_z(np.log(np.maximum(far, 1e-6)))).astype(np.float32)
    ood = ood_score > OOD_CUT

    # near-duplicates: lowest-index neighbour at cosine >= threshold that is ALSO far closer than
    # typical nearest neighbours (robust z of log cosine distance vs the 1-NN distances < -OOD_CUT), so
    # an encoder whose embeddings are all near-parallel (demo CNN: median 1-NN cosine 0.994) does not
    # make every row a duplicate; exact copies (distance <= 1e-6) always count
    close = np.nan_to_num(sims, nan=-2.0)
    log_d = np.log(np.maximum(1.0 - close, 1e-6))
    nn1 = log_d[:, 0][valid[:, 0]]
    med = np.median(nn1) if len(nn1) else 0.0
    mad = 1.4826 * np.median(np.abs(nn1 - med)) if len(nn1) else 0.0
    unusual = (log_d - med < -OOD_CUT * mad) if mad > 0 else np.ones_like(valid)
    dup_mask = valid & (close >= duplicate_threshold - 1e-6) & (unusual | (1.0 - close <= 1e-6)) \
        & (I < rows[:, None])
    duplicate_of = np.where(dup_mask.any(1), np.where(dup_mask, I, n).min(1), -1).astype(np.int64)
    has = np.flatnonzero(duplicate_of >= 0)
    for _ in range(32):
        nxt = duplicate_of[duplicate_of[has]]
        move = nxt >= 0
        if not move.any():
            break
        duplicate_of[has[move]] = nxt[move]

    reason = _reasons(names, y, suggested, P, given, votes, I, flagged, ood, best_sim, S, duplicate_of,
                      sims, k_eff=valid.sum(1))
    progress("auditing labels", 5, stages)
    log.info("audit: pool weights zero-shot %.2f, cross-fit %.2f, knn %.2f", *pool)
    log.info("audit: %d flagged (expected-F1 optimum %d rows), %d OOD, %d near-duplicates, zero-shot "
             "temperature %.3g", int(flagged.sum()), n_err, int(ood.sum()), int(len(has)), tau)
    return Audit(
        noise_score=noise_score, flagged=flagged, threshold=threshold, suggested_label=suggested,
        suggested_prob=P[rows, suggested].astype(np.float32), given_prob=given.astype(np.float32),
        knn_agreement=knn_agree.astype(np.float32), ood_score=ood_score, ood=ood,
        duplicate_of=duplicate_of, reason=reason, class_noise_rate=class_noise_rate,
        n_errors_estimate=n_err,
        components={"zero_shot": np.exp(lp_zs[rows, y]).astype(np.float32),
                    "cross_fit": np.exp(lp_cf[rows, y]).astype(np.float32),
                    "knn": votes[rows, y].astype(np.float32)},
        pool_weights=dict(zip(("zero_shot", "cross_fit", "knn"), map(float, pool))))


def _reasons(names, y, sug, P, given, votes, I, flagged, ood, best_sim, S, dup, sims, k_eff):
    reason = np.full(len(y), "", dtype=object)
    valid = I >= 0
    for i in np.flatnonzero(flagged | ood | (dup >= 0)):
        parts = []
        if flagged[i]:
            s, g = sug[i], y[i]
            m = int(((y[I[i]] == s) & valid[i]).sum())
            parts.append(f"image matches '{names[s]}' ({P[i, s]:.2f}) far better than its label "
                         f"'{names[g]}' ({given[i]:.2f}); {m}/{int(k_eff[i])} neighbours say {names[s]}")
        if ood[i]:
            parts.append(f"matches no class well (best '{names[int(S[i].argmax())]}', cosine "
                         f"{best_sim[i]:.2f}) and is far from its neighbours: corrupted or out of "
                         "distribution?")
        if dup[i] >= 0:
            parts.append(f"near-duplicate of row {int(dup[i])}")
        reason[i] = "; ".join(parts)
    return reason


# ---------------------------------------------------------------------------------- noise injection
def confusable_pairs(confusion) -> list[tuple[int, int]]:
    """Pair classes greedily by symmetric off-diagonal confusion (largest first); an odd class out
    stays unpaired. confusion (C,C): rows true class, columns predicted (counts or rates)."""
    M = np.asarray(confusion, dtype=np.float64)
    M = M + M.T
    np.fill_diagonal(M, -np.inf)
    C = M.shape[0]
    free = np.ones(C, bool)
    pairs = []
    for flat in np.argsort(-M, axis=None, kind="stable"):
        a, b = divmod(int(flat), C)
        if a < b and free[a] and free[b]:
            pairs.append((a, b))
            free[a] = free[b] = False
    return pairs


def inject_noise(labels, *, rate: float, mode: str = "uniform", n_classes: int, confusion=None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly round(rate * n) labels -> (noisy_labels (n,) int64, flipped_mask (n,) bool).

    uniform: each flipped row gets a different class, uniformly. confusable: classes are paired with
    their most-confused partner (greedy matching on confusion + confusion.T; e.g. the zero-shot
    confusion matrix), and flipped rows (drawn from the paired classes) move to the partner."""
    if mode not in NOISE_MODES:
        raise InputError(f"mode must be one of {NOISE_MODES}; got {mode!r}.")
    if not (isinstance(n_classes, (int, np.integer)) and n_classes >= 2):
        raise InputError(f"n_classes must be an integer >= 2; got {n_classes!r}.")
    if np.ndim(labels) != 1:
        raise InputError(f"labels must be 1-D (one per row); got shape {np.shape(labels)}.")
    y = check_labels(labels, len(labels), n_classes)
    if not (isinstance(rate, (int, float, np.floating)) and 0 <= rate <= 1):
        raise InputError(f"rate must be a number in [0, 1]; got {rate!r}.")
    n = len(y)
    m = int(round(rate * n))
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    flipped = np.zeros(n, bool)
    if mode == "uniform":
        rows = rng.choice(n, size=m, replace=False)
        shift = rng.integers(1, n_classes, size=m)
        noisy[rows] = (y[rows] + shift) % n_classes
    else:
        if confusion is None:
            raise InputError("mode='confusable' needs confusion=(C,C) matrix (e.g. the zero-shot "
                             "confusion of true vs predicted class) to choose the class pairs.")
        Cm = np.asarray(confusion, dtype=np.float64)
        if Cm.shape != (n_classes, n_classes) or not np.isfinite(Cm).all():
            raise InputError(f"confusion must be a finite ({n_classes}, {n_classes}) matrix; got shape "
                             f"{Cm.shape}.")
        partner = np.full(n_classes, -1)
        for a, b in confusable_pairs(Cm):
            partner[a], partner[b] = b, a
        eligible = np.flatnonzero(partner[y] >= 0)
        if m > len(eligible):
            raise InputError(f"cannot flip {m} rows between confusable pairs: only {len(eligible)} rows "
                             "belong to paired classes; lower the rate.")
        rows = rng.choice(eligible, size=m, replace=False)
        noisy[rows] = partner[y[rows]]
    flipped[rows] = True
    return noisy, flipped


# ------------------------------------------------------------------------------------------ metrics
def audit_metrics(noise_score, flagged, truth) -> dict:
    """Precision, recall, F1 of `flagged` and AUROC / average precision of `noise_score` against the
    true mislabelled mask. AUROC/AP are NaN when truth is all True or all False."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = np.asarray(noise_score, dtype=np.float64)
    f = np.asarray(flagged)
    t = np.asarray(truth)
    if s.ndim != 1 or f.shape != s.shape or t.shape != s.shape:
        raise InputError(f"noise_score, flagged and truth must be 1-D of one length; got {s.shape}, "
                         f"{f.shape}, {t.shape}.")
    if not np.isfinite(s).all():
        raise InputError(f"noise_score has NaN/inf at rows {describe_rows(np.flatnonzero(~np.isfinite(s)))}.")
    f, t = f.astype(bool), t.astype(bool)
    tp = int((f & t).sum())
    prec = tp / f.sum() if f.sum() else 0.0
    rec = tp / t.sum() if t.sum() else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    both = 0 < t.sum() < len(t)
    return {"precision": float(prec), "recall": float(rec), "f1": float(f1),
            "auroc": float(roc_auc_score(t, s)) if both else float("nan"),
            "average_precision": float(average_precision_score(t, s)) if both else float("nan"),
            "n_flagged": int(f.sum()), "n_true": int(t.sum())}
