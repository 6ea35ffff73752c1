"""Label audit: which given labels are wrong, and what the right ones are.

Why not the paper's alignment score: adapters fit on noisy labels learn the noise (AUROC 0.64 under
class-dependent flips, PAPER.md). The audit estimates the CLEAN class posterior P(c | x) by pooling
three experts, none of which scores a row with a model that saw that row's own label:
  (a) zero-shot probabilities of the frozen encoder (independent of the given labels; one temperature
      fitted by likelihood); left out for image-only embeddings (`zero_shot=False`: no text tower, so T
      holds class prototypes made from the labels, which only name each row's best-matching class),
  (b) a 5-fold cross-fitted (out-of-fold) classifier on the frozen embeddings: in the first round a linear
      discriminant (class means + pooled shrunk covariance); in the second a one-hidden-layer ReLU network
      (`selector.experts.fit_mlp`; the discriminant again below MLP_MIN_ROWS rows), rows drawn by robust
      weights = agreement of the first-round pool with the given label, p(y_i) / max_c p(c), and trained
      through the first round's noise model (EM-refined, as below) so that its softmax estimates the clean
      posterior (forward correction). The network separates classes an encoder leaves non-linearly
      separable: on the weak bench encoder (32-d) a network trained on the TRUE labels reaches 0.86 accuracy
      against the discriminant's 0.76. And
  (c) smoothed label votes of the k global neighbours in embedding space.
Pool: log-linear, P ~ exp(sum_m a_m log p_m), with a_m >= 0 fitted by likelihood of the GIVEN labels
through the estimated noise transition matrix (forward correction, so an expert that predicts the noise
is not rewarded). The transition T[true, given] comes from the calibrated confident joint (Northcutt et
al. 2021: per-class thresholds = mean self-confidence of each given class).
The noise model is then refined by EM (EM_ROUNDS rounds): each row's posterior over its true class gives
the expected joint of true and given classes (the new T), and the pool is refitted through it. The
confident joint alone overestimates the flip rates (by 13-61% on the bench encoders under uniform flips),
and a transition that is too noisy makes the fitted pool overconfident; EM climbs down from that start
slowly, hence EM_ROUNDS = 10. The model also mixes in hesitant flips, the way annotators err: with share h
(fitted by likelihood, in [0, 1]) a row of true class c that flips goes to a class in proportion to how much
the image resembles it, P(j|x) / (1 - P(c|x)), rather than by T's class-to-class rates. A hesitant flip is
also likelier where the image is ambiguous: its rate for class c is (1 - T[c, c]) (1 - P(c|x))^g, scaled so
that it averages 1 - T[c, c] over the class, with the power g in HESITATION_POWERS fitted by likelihood at
that h, kept only where it beats g = 0 by more than BIC's price of one parameter (so g = 0, every image of a
class alike, wherever h is near 0). h and g are fitted before every EM round, so that each step counts the
joint under the model the audit ends with (the cross-fitted network's loss takes h alone). Measured: h comes
out near 0 under uniform and pair flips and near 1 under instance-dependent flips, where g > 0 is chosen.
noise_score = posterior probability that the given label is wrong, 1 - P(y|x) K(y, y) / sum_c P(c|x) K(c, y)
for K(c, y) = p(given = y | x, true = c) under that model (T[c,y] when h = 0).
flagged: the top-m rows by noise_score, m maximising the expected F1 (sum of the top-m scores is the
expected number of true positives, the sum of all scores the expected number of errors); no fixed cut.
class_noise_rate: mean noise_score of each given class.
Measured on Fashion-MNIST demo-encoder features: bench/audit_quality.py, bench/results/audit_quality.md.
The experts live in selector.experts: no (n, C) array is held, and after one pass per round the audit
works on each row's few candidate classes (`Experts.candidates`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from selector.errors import InputError
from selector.experts import (EXPERTS, IMAGE_ONLY_EXPERTS, MLP_MIN_ROWS, Candidates, Experts, best_temperature, blocks,
                               fit_lda, fit_mlp, stratified_folds)
from selector.linalg import l2_normalize
from selector.progress import Progress, ensure
from selector.runtime import blas_threads
from selector.score import zero_shot_logits
from selector.validate import check_int, check_labels, check_matrix, neighbor_pair_ids

log = logging.getLogger(__name__)

EM_ROUNDS = 10  # refinements of the noise model: 3 left the weak bench encoder's transition short of the optimum
                # (flagged 1.17x the true errors at 20% uniform flips, 1.10x at 10; 30 rounds gave 1.10x)

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
    best_class: np.ndarray        # (n,) int64 the class embedding each image matches best (frozen encoder; the
                                  # class prompt, or the class prototype for image-only embeddings)
    best_class_sim: np.ndarray    # (n,) float32 its cosine similarity (low = matches no class well)
    class_noise_rate: np.ndarray  # (C,) float32 estimated share of mislabelled rows per given class
    n_errors_estimate: int = 0    # m, the expected-F1-optimal number of rows to flag
    hesitant_share: float = 0.0   # h: share of flips modelled as hesitant (to a class the image resembles)
    hesitation_power: float = 0.0  # g: a hesitant flip's rate grows as (1 - P(c|x))^g (0: alike over a class)
    components: dict | None = None  # (n,) given-label probability of each expert that ran
    pool_weights: dict | None = None  # fitted weight of each expert in the pool
    experts: tuple = EXPERTS          # the experts that ran (IMAGE_ONLY_EXPERTS without a text tower)


def _pool_weights(cands: Candidates, y, transition, rng) -> np.ndarray:
    """Weights a_m >= 0 of the log-linear pool P_a ~ exp(sum_m a_m log p_m) (an estimate of the CLEAN
    posterior) fitted by maximum likelihood of the GIVEN labels through the estimated noise transition
    (forward correction): p(given = j | x) = sum_c P_a(c | x) transition[c, j]. Without the transition
    the fit would reward experts that predict the noise. No leakage: every expert scores a row without
    its own label. Fitted on the candidates of a subsample of 20k rows; equal weights if the fit fails."""
    from scipy.optimize import minimize
    M = len(cands.names)
    a0 = np.full(M, 1.0 / M)
    rows = np.sort(rng.choice(len(y), size=min(len(y), 20_000), replace=False))
    L = cands.logps[:, rows].astype(np.float64)                       # (M, m, W)
    Tcol = transition[cands.ids[rows], y[rows][:, None]]              # (m, W): T[c, y_i] per candidate c

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


# ----------------------------------------------------------------------------- confident learning
def _given(P, ids, y) -> np.ndarray:
    """(b,) the pooled probability of each row's given label (a candidate of every row)."""
    return (P * (ids == y[:, None])).sum(1)


def _transition(cands: Candidates, a, y, C, thr=None) -> np.ndarray:
    """Noise transition T[true, given] (C, C) from the calibrated confident joint of the pool with weights a
    (Northcutt et al. 2021): a row counts under its given label and the most likely class at or above that
    class's threshold, the mean P(given label) of the class (computed here unless given). One pass over the
    candidates, two without `thr`."""
    rows = np.arange(len(y))
    counts = np.bincount(y, minlength=C)
    W = cands.ids.shape[1]
    if thr is None:
        total = np.zeros(C)
        for b in blocks(rows, W):
            total += np.bincount(y[b], weights=_given(cands.pool(a, b), cands.ids[b], y[b]), minlength=C)
        thr = _thresholds(total, counts)
    cj = np.zeros((C, C), np.float64)
    for b in blocks(rows, W):
        P, ids = cands.pool(a, b), cands.ids[b]
        above = P >= thr[ids] - 1e-6
        true = ids[np.arange(len(b)), np.where(above, P, -1.0).argmax(1)]
        has = above.any(1)
        np.add.at(cj, (y[b][has], true[has]), 1.0)
    row = cj.sum(1, keepdims=True)
    Q = np.where(row > 0, cj / np.maximum(row, 1e-12), np.eye(C)) * counts[:, None]   # rows given, cols true
    return _row_stochastic(Q.T)


def _row_stochastic(joint) -> np.ndarray:
    """T[true, given] from a (C, C) joint count of true and given classes: a little mass on the diagonal (so a
    class with no rows keeps its own label), then each row normalised."""
    Tm = joint + 1e-3 * np.eye(len(joint))
    return Tm / Tm.sum(1, keepdims=True)


def _thresholds(self_conf_sum, counts) -> np.ndarray:
    return np.where(counts > 0, self_conf_sum / np.maximum(counts, 1), 1.0).astype(np.float32)


def _kernel(P, ids, y, transition, hes=(0.0, 0.0, None)):
    """(b, W) p(given = y | x, true = c) for each candidate class c of a block, and the (b, W) given-label mask.
    hes = (h, g, amb). A mixture: with share 1 - h the class-to-class rate transition[c, y]; with share h a flip
    at an instance rate r_c(x) = rho_c (1 - P(c|x))^g / amb[c] (rho_c = 1 - transition[c, c]; amb[c] the mean
    of (1 - P(c|x))^g over class c, so r averages rho_c over the class) that lands on y in proportion to the
    image's resemblance, P(y|x) / (1 - P(c|x)); at c = y the row keeps its label with 1 - r_y(x)."""
    h, g, amb = hes
    is_given = ids == y[:, None]
    K = transition[ids, y[:, None]]               # at the given label this is already transition[y, y]
    if h > 0:
        given = (P * is_given).sum(1, keepdims=True)
        away = np.maximum(1 - P, 1e-6)
        rho = 1 - transition[ids, ids]
        rate = rho if g == 0 else np.minimum(1.0, rho * away ** g / np.maximum(amb[ids], 1e-12))
        keep = transition[y, y][:, None] if g == 0 else (1 - h) * transition[y, y][:, None] + h * (1 - rate)
        K = np.where(is_given, keep, (1 - h) * K + h * rate * given / away)
    return K, is_given


HESITATION_POWERS = (0.25, 0.5, 1.0)   # g tried for the instance rate once h is fitted at g = 0


def _hesitation(cands: Candidates, a, y, transition, rows, C, powers=()) -> tuple:
    """(h, g, amb) for the given labels of `rows`: h in [0, 1] maximising their likelihood with every image of
    a class flipping alike (g = 0; the log of a sum that is linear in h: concave, so a bounded scalar search
    finds its maximum), then, at that h, the g in `powers` of the highest likelihood where it beats g = 0 by
    more than BIC's price of one parameter (amb from the same rows, weighted by P(c|x))."""
    from scipy.optimize import minimize_scalar
    P, ids, yr = cands.pool(a, rows), cands.ids[rows], y[rows]
    u0 = (P * _kernel(P, ids, yr, transition)[0]).sum(1, dtype=np.float64)
    u1 = (P * _kernel(P, ids, yr, transition, (1.0, 0.0, None))[0]).sum(1, dtype=np.float64)
    nll = lambda u: -np.log(np.maximum(u, 1e-300)).mean()  # noqa: E731
    h = float(minimize_scalar(lambda h: nll((1 - h) * u0 + h * u1), bounds=(0.0, 1.0), method="bounded",
                              options={"xatol": 1e-3}).x)
    best, fit = nll((1 - h) * u0 + h * u1), (h, 0.0, None)
    away = np.maximum(1 - P, 1e-6)
    penalty = np.log(len(rows)) / (2 * len(rows))     # BIC: g must pay for itself (it cannot at h near 0)
    for g in powers:
        amb = np.bincount(ids.ravel(), weights=(P * away ** g).ravel(), minlength=C) / np.maximum(
            np.bincount(ids.ravel(), weights=P.ravel(), minlength=C), 1e-12)
        u = (1 - h) * u0 + h * (P * _kernel(P, ids, yr, transition, (1.0, g, amb))[0]).sum(1, dtype=np.float64)
        if nll(u) < best - penalty:
            best, fit = nll(u), (h, g, amb)
    return fit


def _em_transition(cands: Candidates, a, y, C, transition, hes) -> np.ndarray:
    """One EM step for T[true, given]: the expected joint of true and given classes under each row's posterior
    P(c|x) K(c, y) / sum, over every row (one pass; counted with bincount, no (n, C) array)."""
    W = cands.ids.shape[1]
    joint = np.zeros(C * C)
    for b in blocks(np.arange(len(y)), W):
        P, ids = cands.pool(a, b), cands.ids[b]
        K, _ = _kernel(P, ids, y[b], transition, hes)
        q = P * K
        q /= np.maximum(q.sum(1, keepdims=True), 1e-30)
        joint += np.bincount((ids.astype(np.int64) * C + y[b][:, None]).ravel(), weights=q.ravel(),
                             minlength=C * C)
    return _row_stochastic(joint.reshape(C, C))


# ------------------------------------------------------------------------------------------ audit
def _refine(cands: Candidates, a, y, C, transition, rows, rng, powers=HESITATION_POWERS):
    """EM_ROUNDS refinements of the noise model, each followed by the pool weights through it -> (transition,
    pool weights, (h, g, amb)). The hesitation (h, and its power g from `powers`) is fitted on `rows` before
    every round, so each EM step counts the joint under the model it ends with. With g held at 0 in the rounds
    and fitted once at the end, 10 rounds under instance flips on the ring of tests/test_audit.py ended at
    g = 0 and flagged 0.20 of the errors (0.78 with g fitted in every round)."""
    hes = _hesitation(cands, a, y, transition, rows, C, powers)
    for _ in range(EM_ROUNDS):
        transition = _em_transition(cands, a, y, C, transition, hes)
        a = _pool_weights(cands, y, transition, rng)
        hes = _hesitation(cands, a, y, transition, rows, C, powers)
    return transition, a, hes


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
                 zero_shot: bool = True, progress: Progress | None = None) -> LabelAudit:
    """Audit the given labels of n rows -> LabelAudit.

    X (n,d) frozen image embeddings, T (C,d) class-prompt embeddings of the same encoder, labels (n,)
    given labels in [0, C). zero_shot=False for an encoder without a text tower: T is then any class
    embedding (e.g. `selector.linalg.class_prototypes`), used only for best_class, and the audit pools the
    label-based experts alone (IMAGE_ONLY_EXPERTS). neighbors: None (exact cosine kNN on X, k neighbours), a
    Neighbors index over these rows, or a (D, I) pair of global kNN with self excluded (e.g. the pipeline's kNN
    on the adapted F); only the neighbour ids are used. Cost: O(n d^2) for the discriminant and two O(n C d)
    passes over the rows, one per round, each keeping every row's candidate classes (selector.experts); the
    other passes (noise transition, its EM_ROUNDS refinements, per-row scores) cost O(n W) for W <= 27
    candidates. Memory O(n (d + 16 W) + block x C): no (n, C) array is held.
    kNN excluded when neighbours are passed in.
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
        return _audit(X, T, y, neighbors=neighbors, seed=seed, n_folds=n_folds, k=k,
                      names=EXPERTS if zero_shot else IMAGE_ONLY_EXPERTS, progress=ensure(progress))


def _audit(X, T, y, *, neighbors, seed, n_folds, k, names, progress) -> LabelAudit:
    n, C = X.shape[0], T.shape[0]
    counts = np.bincount(y, minlength=C)
    rng = np.random.default_rng(seed)
    stages = 4

    progress("auditing labels", 0, stages)            # (a) zero-shot: one temperature on a subsample
    Xn = l2_normalize(X)
    sub = rng.choice(n, size=min(n, 20_000), replace=False)
    tau = best_temperature(zero_shot_logits(Xn[sub], T), y[sub]) if "zero_shot" in names else 1.0
    I = neighbor_ids(neighbors, Xn, k)                # (c) kNN votes
    progress("auditing labels", 1, stages)

    # (b) cross-fitted classifier: round 1 unweighted, round 2 weighted by agreement with round 1's pool
    folds = stratified_folds(y, n_folds, rng)
    experts = Experts(Xn, T, y, I, C, tau, folds, fit_lda(Xn, y, C, np.ones(n), folds, n_folds), names)
    cands = experts.candidates()
    M = len(names)
    a1 = _pool_weights(cands, y, _transition(cands, np.full(M, 1 / M), y, C), rng)
    w, conf = np.empty(n), np.zeros(C)
    for b in blocks(np.arange(n), cands.ids.shape[1]):   # robust weights for round 2, round 1's thresholds
        P = cands.pool(a1, b)
        given = _given(P, cands.ids[b], y[b])
        w[b] = given / P.max(1)
        conf += np.bincount(y[b], weights=given, minlength=C)
    T1 = _transition(cands, a1, y, C, thr=_thresholds(conf, counts))
    fit_rows = np.sort(rng.choice(n, size=min(n, 20_000), replace=False))
    # round 1's noise model, for the network's loss (which takes no power g: none is fitted)
    T_fit, _, (h_fit, _, _) = _refine(cands, a1, y, C, T1, fit_rows, rng, powers=())
    del cands                                         # round 1's candidates are not needed past here: free them first
    experts.classifier = (fit_mlp(Xn, y, C, w, folds, n_folds, T_fit, h_fit, seed=seed) if n >= MLP_MIN_ROWS
                          else fit_lda(Xn, y, C, w, folds, n_folds))
    progress("auditing labels", 2, stages)

    cands = experts.candidates()
    pool_w = _pool_weights(cands, y, T1, rng)
    transition, pool_w, hes = _refine(cands, pool_w, y, C, _transition(cands, pool_w, y, C), fit_rows, rng)
    out = _per_row(cands, I, pool_w, y, transition, hes)
    h = hes[0]
    noise_score = out["noise_score"]
    n_err, threshold, flagged = _flag(noise_score)
    flagged &= out["suggested_label"] != y   # a row whose best guess is its own label is not called mislabelled
    progress("auditing labels", 4, stages)
    log.info("audit: pool weights %s; hesitant share %.2f; %d flagged (expected-F1 optimum %d rows); zero-shot "
             "temperature %s; %d candidate classes per row", ", ".join(f"{m} {w:.2f}" for m, w in zip(names, pool_w)),
             h, int(flagged.sum()), n_err, f"{tau:.3g}" if "zero_shot" in names else "-", cands.ids.shape[1])
    return LabelAudit(
        noise_score=noise_score, flagged=flagged, threshold=threshold, suggested_label=out["suggested_label"],
        suggested_prob=out["suggested_prob"], given_prob=out["given_prob"], knn_agreement=out["knn_agreement"],
        knn_support=out["knn_support"], n_neighbors=(I >= 0).sum(1).astype(np.int64),
        best_class=cands.best_class, best_class_sim=cands.best_class_sim,
        class_noise_rate=(np.bincount(y, weights=noise_score, minlength=C) / np.maximum(counts, 1)).astype(
            np.float32),
        n_errors_estimate=n_err, hesitant_share=h, hesitation_power=hes[1],
        components={name: out[f"p_{name}"] for name in names},
        pool_weights=dict(zip(names, map(float, pool_w))), experts=names)


def _per_row(cands: Candidates, I, a, y, Tm, hes) -> dict:
    """Everything the table keeps per row, block by block: the posterior that the given label is wrong
    (1 - P(y|x) K(y, y) / sum_c P(c|x) K(c, y), `_kernel`), the pool's best class and its probability, the given
    label's probability under the pool and under each expert, and the neighbours' agreement."""
    n = len(y)
    f32 = lambda: np.empty(n, np.float32)  # noqa: E731
    out = {"noise_score": f32(), "given_prob": f32(), "suggested_prob": f32(), "knn_agreement": f32(),
           "suggested_label": np.empty(n, np.int64), "knn_support": np.empty(n, np.int64),
           **{f"p_{name}": f32() for name in cands.names}}
    for rows in blocks(np.arange(n), cands.ids.shape[1]):
        yb, ids = y[rows], cands.ids[rows]
        r = np.arange(len(rows))
        P = cands.pool(a, rows)
        K, is_given = _kernel(P, ids, yb, Tm, hes)
        given = (P * is_given).sum(1)
        den = (P * K).sum(1)
        out["noise_score"][rows] = np.clip(1.0 - given * (K * is_given).sum(1) / np.maximum(den, 1e-30), 0.0, 1.0)
        top = P.argmax(1)
        best = ids[r, top]
        out["suggested_label"][rows] = best
        out["suggested_prob"][rows] = P[r, top]
        out["given_prob"][rows] = given
        valid = I[rows] >= 0
        nb = np.where(valid, y[np.maximum(I[rows], 0)], -1)
        out["knn_agreement"][rows] = (nb == yb[:, None]).sum(1) / np.maximum(valid.sum(1), 1)
        out["knn_support"][rows] = (nb == best[:, None]).sum(1)
        for name, lp in zip(cands.names, cands.logps[:, rows]):
            out[f"p_{name}"][rows] = (np.exp(lp) * is_given).sum(1)
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
