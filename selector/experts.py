"""The label audit's experts, and the few classes per row that can matter to it.

None of the experts scores a row with a model that saw that row's own label:
  zero_shot  the frozen encoder's class-prompt similarities, softmax with one fitted temperature (only
             when the encoder has a text tower: IMAGE_ONLY_EXPERTS leave it out);
  cross_fit  a 5-fold cross-fitted classifier: a linear discriminant (class means + pooled, shrunk covariance)
             in the audit's first round, then a small ReLU network trained through the first round's noise
             model (fit_mlp), which also separates classes that are not linearly separable;
  knn        smoothed label votes of the row's global neighbours.
`Experts` computes their log-probabilities for any block of rows, so no (n, C) array is ever held.
`Experts.candidates` makes one pass over the rows and keeps, per row, only the classes that can carry the
audit's probability mass - each expert's top classes, the neighbours' labels and the given label - with
every expert's log-probability of them. The audit's later passes (noise transition, weights, per-row
scores) then cost O(n x W) for W <= 2 * TOP_CLASSES + k + 1 instead of O(n x C x d); with C <= W every class
is a candidate and nothing is approximated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selector.runtime import blas_threads, threads_for
from selector.score import zero_shot_logits

LDA_SHRINKAGE = 0.05  # covariance -> (1-s) cov + s tr(cov)/d I; 0.01-0.2 measured equal on Fashion-MNIST
KNN_SMOOTHING = 1.0    # pseudo-votes spread over classes by their frequency (kNN vote expert)
EXPERTS = ("zero_shot", "cross_fit", "knn")
IMAGE_ONLY_EXPERTS = ("cross_fit", "knn")   # no text tower: class prototypes are made from the labels, so no zero-shot
TOP_CLASSES = 8        # per expert and row, when there are more classes than candidate columns
PAD = np.float32(-1e30)  # log-probability of a repeated candidate column: it carries no mass
_CHUNK = 65_536
# the audit's second-round classifier (fit_mlp): 512 units and 2,000 steps found more label errors than 256 units
# and 1,000 steps on every bench encoder (bench/audit_quality.py's features), at about 3x the time
MLP_HIDDEN, MLP_STEPS, MLP_BATCH, MLP_EPOCHS = 512, 2000, 512, 20
MLP_WIDE_DIM = 256    # wider embeddings get proportionally fewer hidden units: the first layer costs no more than at
#                       d = 256 (the output layer, hidden x C, grows with the classes: ~15 ms a step at 1,000)
MLP_MIN_STEPS = 200   # however few the rows: a network of a few steps has learned nothing yet
MLP_BUDGET_CLASSES = 10  # more classes than this: fewer steps, so a fold's fit costs no more than with this many
#                          (1,000 classes at 512-d: 690 steps; as good as 1,875 on a 1,000-class set, bench/many_classes.py)
MLP_MIN_ROWS = 1000   # fewer rows than this: the second round refits the linear discriminant instead
MLP_LR, MLP_WEIGHT_DECAY = 3e-3, 1e-4


def blocks(rows: np.ndarray, width: int):
    """`rows` in consecutive blocks whose (block, width) float32 temporaries stay within 32 MB (a pass holds
    about ten of them: the audit's block memory stays near 0.4 GB at any n)."""
    step = max(1024, min(_CHUNK, (1 << 23) // max(width, 1)))
    for s in range(0, len(rows), step):
        yield rows[s:s + step]


def fit_temperature(S: np.ndarray, y: np.ndarray, rng) -> float:
    """Temperature of softmax(S / tau) maximising the likelihood of the given labels, on a subsample of at most
    20,000 rows of S (n, C) (label noise makes it a little softer, which is what a combination wants)."""
    rows = rng.choice(len(y), size=min(len(y), 20_000), replace=False)
    return best_temperature(S[rows], y[rows])


def best_temperature(Ss: np.ndarray, ys: np.ndarray) -> float:
    """The temperature in [0.002, 2] minimising the labels' negative log-likelihood on rows Ss (m, C) with
    labels ys (m,): a bounded scalar search over log tau (the likelihood is smooth in it), about 25
    evaluations."""
    from scipy.optimize import minimize_scalar
    Ss = Ss.astype(np.float64)
    Ss = Ss - Ss.max(1, keepdims=True)
    mine = Ss[np.arange(len(ys)), ys]

    def nll(log_tau):
        Z = Ss / np.exp(log_tau)
        return float(-(mine / np.exp(log_tau) - np.log(np.exp(Z).sum(1))).mean())

    res = minimize_scalar(nll, bounds=(np.log(0.002), np.log(2.0)), method="bounded", options={"xatol": 0.01})
    return float(np.exp(res.x))


def stratified_folds(y: np.ndarray, n_folds: int, rng) -> np.ndarray:
    fold = np.empty(len(y), np.int64)
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        fold[rows] = np.arange(len(rows)) % n_folds
    return fold


def log_softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(1, keepdims=True)
    return Z - np.log(np.exp(Z).sum(1, keepdims=True))


def fit_lda(Xn, y, C, weights, folds, n_folds, *, shrinkage=LDA_SHRINKAGE) -> list:
    """Per fold, the (A (d, C), b (C,)) float32 of a weighted linear discriminant (class means + pooled, shrunk
    covariance) fitted on the OTHER folds. Sufficient statistics are summed once in float64 and each fold's
    are subtracted, so the cost is one O(n d^2) pass however many folds."""
    d = Xn.shape[1]
    w = weights.astype(np.float64)
    cnt = np.zeros((n_folds, C))
    sx = np.zeros((n_folds, C, d))
    sxx = np.zeros((n_folds, d, d))
    step = _CHUNK // 4                                    # float64 blocks of 16k x d: ~70 MB each at d = 512
    with blas_threads(threads_for(2 * step * d * d)):
        for f in range(n_folds):
            r = np.flatnonzero(folds == f)
            cnt[f] = np.bincount(y[r], weights=w[r], minlength=C)
            for s in range(0, len(r), step):
                rr = r[s:s + step]
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
        ridge = shrinkage * np.trace(cov) / d
        if not ridge > 1e-12:    # no spread inside the classes (e.g. one repeated image each): a tiny ridge
            ridge = 1e-6
        cov = (1 - shrinkage) * cov + ridge * np.eye(d)
        A = np.linalg.solve(cov, mu.T)                      # (d,C)
        b = -0.5 * (mu * A.T).sum(1) + np.log(np.maximum(c_ / tot, 1e-12))
        b[c_ <= 0] = -1e9
        params.append((A.astype(np.float32), b.astype(np.float32)))
    return params


def fit_mlp(Xn, y, C, weights, folds, n_folds, transition, hesitant: float = 0.0, *, seed: int = 0,
            hidden: int | None = None, steps: int = MLP_STEPS, batch: int = MLP_BATCH,
            epochs: int = MLP_EPOCHS) -> list:
    """Per fold, the float32 (W1 (d, h), b1 (h,), W2 (h, C), b2 (C,)) of a one-hidden-layer ReLU network over the
    standardised embeddings, trained on the OTHER folds' given labels.

    Rows are drawn in proportion to `weights`. The loss goes through the audit's noise model (forward
    correction, Patrini et al. 2017): the network's softmax is the CLEAN posterior P(c|x), and the loss is
    -log sum_c P(c|x) K(c, given) for the kernel of `selector.audit` (class-to-class rates `transition`, a
    share `hesitant` of flips to a class the image resembles), so the network does not learn the noise the
    kernel explains. `hidden` units: by default MLP_HIDDEN, times MLP_WIDE_DIM / d for wider embeddings.
    `mlp_steps` AdamW steps on a one-cycle schedule, so the cost is bounded at any n and any number of
    classes. Batches are standardised as they are drawn (no copy of the rows); the
    standardisation (label-free) is folded into W1, b1 for `logits`."""
    import torch

    from selector.runtime import torch_threads
    d = Xn.shape[1]
    hidden = int(hidden or max(64, MLP_HIDDEN * min(1.0, MLP_WIDE_DIM / d)))
    mu = np.zeros(d)
    sq = np.zeros(d)
    for s in range(0, len(Xn), _CHUNK):
        xb = Xn[s:s + _CHUNK].astype(np.float64)
        mu += xb.sum(0)
        sq += (xb * xb).sum(0)
    mu /= len(Xn)
    sd = np.sqrt(np.maximum(sq / len(Xn) - mu ** 2, 0)) + 1e-6
    mu_t, sd_t = torch.from_numpy(mu.astype(np.float32)), torch.from_numpy(sd.astype(np.float32))
    yt = torch.from_numpy(np.asarray(y, np.int64))
    Tt = torch.from_numpy(np.asarray(transition, np.float32))
    w = np.asarray(weights, np.float64)
    params = []
    with torch_threads(threads_for(6 * batch * d * hidden)):
        for f in range(n_folds):
            rows = np.flatnonzero((folds != f) & (w > 0))
            rng = np.random.default_rng([seed, f])
            n_steps = mlp_steps(len(rows), d, C, steps, batch, epochs)
            draws = rng.choice(rows, size=(n_steps, min(batch, len(rows))), p=w[rows] / w[rows].sum())
            torch.manual_seed(int(rng.integers(2 ** 31)))
            net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, C))
            opt = torch.optim.AdamW(net.parameters(), lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, MLP_LR, total_steps=n_steps)
            for idx in draws:
                xb = (torch.from_numpy(np.ascontiguousarray(Xn[idx], np.float32)) - mu_t) / sd_t
                loss = -torch.log(_given_through(torch.softmax(net(xb), 1), yt[idx], Tt, hesitant)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            W1 = net[0].weight.detach().numpy().T.astype(np.float64)
            b1 = net[0].bias.detach().numpy() - (mu / sd) @ W1
            params.append(((W1 / sd[:, None]).astype(np.float32), b1.astype(np.float32),
                           net[2].weight.detach().numpy().T.copy(), net[2].bias.detach().numpy().copy()))
    return params


def mlp_steps(rows: int, d: int, C: int, steps: int = MLP_STEPS, batch: int = MLP_BATCH,
              epochs: int = MLP_EPOCHS) -> int:
    """A fold's step count: min(steps, epochs x rows / batch), scaled down past MLP_BUDGET_CLASSES classes by
    the cost of a step, h (d + C) multiply-adds per row (both layers), against its cost at that many classes,
    and never below MLP_MIN_STEPS."""
    budget = steps * min(1.0, (d + MLP_BUDGET_CLASSES) / (d + C))
    return int(max(MLP_MIN_STEPS, min(budget, epochs * rows // batch)))


def _given_through(P, y, T, h):
    """(b,) p(given = y | x) = sum_c P(c|x) K(c, y) for the audit's kernel: T[y, y] at c = y, else
    (1 - h) T[c, y] + h (1 - T[c, c]) P(y|x) / (1 - P(c|x)) (`selector.audit._kernel` at g = 0, in torch)."""
    Py = P.gather(1, y[:, None])[:, 0]
    Tyy = T[y, y]
    swaps = (P * T.t()[y]).sum(1) - Py * Tyy          # sum_c P(c|x) T[c, y]: O(b C), not a (b, C) x (C, C) product
    out = Py * Tyy + (1 - h) * swaps
    if h > 0:
        resemble = (P * (1 - T.diagonal())[None] / (1 - P).clamp_min(1e-6)).sum(1)
        resemble = resemble - Py * (1 - Tyy) / (1 - Py).clamp_min(1e-6)       # every class but the given one
        out = out + h * Py * resemble
    return out.clamp_min(1e-12)


def logits(params, X) -> np.ndarray:
    """(b, C) logits of one fold's fitted classifier: (A, b) linear (fit_lda) or (W1, b1, W2, b2) (fit_mlp)."""
    if len(params) == 2:
        return X @ params[0] + params[1]
    W1, b1, W2, b2 = params
    H = X @ W1
    H += b1
    np.maximum(H, 0, out=H)
    return H @ W2 + b2


@dataclass(eq=False)
class Candidates:
    """Per row, the W classes that can matter and each expert's log-probability of them.

    ids (n, W) int32 class ids, sorted per row; a repeated id's log-probabilities are PAD. logps (M, n, W)
    float32, in `names` order. best_class / best_class_sim (n,): the class embedding (text prompt, or image
    prototype) each row matches best, and its cosine."""
    ids: np.ndarray
    logps: np.ndarray
    best_class: np.ndarray
    best_class_sim: np.ndarray
    names: tuple = EXPERTS

    def pool(self, a, rows) -> np.ndarray:
        """(b, W) float32: the log-linear pool with weights a (sum > 0), renormalised over the candidates."""
        Z = np.tensordot(np.asarray(a, np.float32), self.logps[:, rows], 1)
        Z -= Z.max(1, keepdims=True)
        np.exp(Z, out=Z)
        Z /= Z.sum(1, keepdims=True)
        return Z


class Experts:
    """The experts' log-probabilities (b, C) for any block of rows, recomputed on demand: zero-shot (frozen
    prompts, temperature tau), a cross-fitted classifier (`classifier`: each fold's fit_lda or fit_mlp
    parameters, applied to that fold's rows) and smoothed kNN votes over the neighbour ids I. names: EXPERTS,
    or IMAGE_ONLY_EXPERTS (T then holds class prototypes, used only for best_class)."""

    def __init__(self, Xn, T, y, I, C, tau, folds, classifier, names=EXPERTS):
        self.Xn, self.T, self.y, self.I, self.C, self.tau, self.folds = Xn, T, y, I, C, tau, folds
        self.classifier = classifier
        self.names = tuple(names)
        self.prior = (np.bincount(y, minlength=C) / len(y)).astype(np.float32)

    def zero_shot(self, rows, cos=None) -> np.ndarray:
        cos = zero_shot_logits(self.Xn[rows], self.T) if cos is None else cos
        return np.maximum(log_softmax(cos / np.float32(self.tau)), np.float32(np.log(1e-12)))

    def cross_fit(self, rows) -> np.ndarray:
        out = np.empty((len(rows), self.C), np.float32)
        fold = self.folds[rows]
        for f, params in enumerate(self.classifier):
            at = np.flatnonzero(fold == f)
            if len(at):
                out[at] = log_softmax(logits(params, self.Xn[rows[at]]))
        return out

    def votes(self, rows) -> np.ndarray:
        """Smoothed neighbour votes (count_c + s * prior_c) / (k + s), (b, C) float32 rows summing to 1."""
        I = self.I[rows]
        valid = I >= 0
        lab = np.where(valid, self.y[np.maximum(I, 0)], 0)
        v = np.repeat(np.float32(KNN_SMOOTHING) * self.prior[None, :], len(rows), axis=0)
        np.add.at(v, (np.repeat(np.arange(len(rows)), I.shape[1]), lab.ravel()), valid.ravel().astype(np.float32))
        return v / v.sum(1, keepdims=True)

    def logps(self, rows, cos=None) -> list[np.ndarray]:
        """Each expert's (b, C) log-probabilities, in `names` order."""
        make = {"zero_shot": lambda: self.zero_shot(rows, cos), "cross_fit": lambda: self.cross_fit(rows),
                "knn": lambda: np.log(self.votes(rows))}
        return [make[name]() for name in self.names]

    def candidates(self, top: int = TOP_CLASSES) -> Candidates:
        """One pass over every row -> Candidates: each model expert's `top` classes, the neighbours' labels and
        the given label (every class when there are no more classes than that)."""
        n, C, d = len(self.y), self.C, self.Xn.shape[1]
        ranked = [m for m, name in enumerate(self.names) if name != "knn"]   # the neighbours' labels cover knn
        width = len(ranked) * top + self.I.shape[1] + 1
        dense = C <= width
        W = C if dense else width
        ids = np.empty((n, W), np.int32)
        L = np.empty((len(self.names), n, W), np.float32)
        best, best_sim = np.empty(n, np.int64), np.empty(n, np.float32)
        every = np.arange(n)
        hidden = self.classifier[0][0].shape[1] if len(self.classifier[0]) == 4 else 0   # a network's width
        with blas_threads(threads_for(2 * next(blocks(every, C)).size * d * (C + hidden))):
            for rows in blocks(every, C):
                r = np.arange(len(rows))
                cos = zero_shot_logits(self.Xn[rows], self.T)
                best[rows] = cos.argmax(1)
                best_sim[rows] = cos[r, best[rows]]
                lps = self.logps(rows, cos)
                if dense:
                    ids[rows] = np.arange(C, dtype=np.int32)
                    for m, lp in enumerate(lps):
                        L[m, rows] = lp
                    continue
                I = self.I[rows]
                yb = self.y[rows]
                nb = np.where(I >= 0, self.y[np.maximum(I, 0)], yb[:, None])
                cand = np.concatenate([np.argpartition(-lps[m], top, axis=1)[:, :top] for m in ranked]
                                      + [nb, yb[:, None]], axis=1)
                cand.sort(axis=1)
                repeat = np.zeros(cand.shape, bool)
                repeat[:, 1:] = cand[:, 1:] == cand[:, :-1]
                ids[rows] = cand
                for m, lp in enumerate(lps):
                    L[m, rows] = np.where(repeat, PAD, np.take_along_axis(lp, cand, axis=1))
        return Candidates(ids=ids, logps=L, best_class=best, best_class_sim=best_sim, names=self.names)
