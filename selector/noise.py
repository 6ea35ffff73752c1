"""Synthetic label noise, to check the audit against a known truth, and the metrics it is checked with."""
from __future__ import annotations

import numpy as np

from selector.errors import InputError, describe_rows
from selector.registry import Choice, Registry
from selector.validate import check_labels

NOISE_MODES = Registry(
    "noise mode",
    Choice("none", "off", help="Leave the labels as they are."),
    Choice("uniform", "uniform flips", help="Each flipped label moves to another class, uniformly at random."),
    Choice("confusable", "flips between confusable classes",
           help="Classes are paired with the class the encoder confuses them with most; flips stay in pairs."),
    Choice("instance", "flips where the encoder hesitates",
           help="Instance-dependent, as annotators err: the closer an image's best other class comes to its own "
                "(by the encoder's class-prompt similarity), the likelier its label flips, and it flips to that "
                "class."),
)


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


def hesitation(X, T, labels, *, block: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """(rival (n,) int64, gap (n,) float32): each row's most similar class other than its label, and how much
    closer its label's class embedding is (cosine of the label minus cosine of the rival; small or negative =
    the encoder hesitates). X (n, d) image and T (C, d) class embeddings; computed in row blocks."""
    from selector.score import zero_shot_logits
    y = np.asarray(labels, np.int64)
    rival, gap = np.empty(len(y), np.int64), np.empty(len(y), np.float32)
    for s in range(0, len(y), block):
        S = zero_shot_logits(X[s:s + block], T)
        rows = np.arange(len(S))
        own = S[rows, y[s:s + block]].copy()
        S[rows, y[s:s + block]] = -np.inf
        rival[s:s + block] = S.argmax(1)
        gap[s:s + block] = own - S[rows, rival[s:s + block]]
    return rival, gap


def inject_noise(labels, *, rate: float, mode: str = "uniform", n_classes: int, confusion=None,
                 hesitation=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly round(rate * n) labels -> (noisy_labels (n,) int64, flipped_mask (n,) bool).

    mode is a NOISE_MODES name. none: nothing flips. uniform: each flipped row gets a different class,
    uniformly. confusable: classes are paired with their most-confused partner (greedy matching on
    confusion + confusion.T; e.g. the zero-shot confusion matrix), and flipped rows (drawn from the paired
    classes) move to the partner. instance: hesitation=(rival, gap) from `hesitation`; rows are drawn without
    replacement with weight exp(-gap / sd(gap)) (a row whose rival is as close as its own class is e times
    likelier to flip than one a standard deviation clearer), and each moves to its rival."""
    NOISE_MODES.check(mode)
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
    if mode == "none":
        return noisy, flipped
    if mode == "uniform":
        rows = rng.choice(n, size=m, replace=False)
        shift = rng.integers(1, n_classes, size=m)
        noisy[rows] = (y[rows] + shift) % n_classes
    elif mode == "instance":
        if hesitation is None:
            raise InputError("mode='instance' needs hesitation=(rival, gap), e.g. from selector.noise.hesitation.")
        rival, gap = (np.asarray(a) for a in hesitation)
        if rival.shape != (n,) or gap.shape != (n,) or not np.isfinite(gap).all():
            raise InputError(f"hesitation must be two finite arrays of one entry per row ({n}); got "
                             f"{rival.shape} and {gap.shape}.")
        if ((rival < 0) | (rival >= n_classes) | (rival == y)).any():
            raise InputError("each row's rival class must be another class in [0, n_classes).")
        weight = -gap.astype(np.float64) / max(float(gap.std()), 1e-12)
        keys = np.log(rng.random(n)) / np.exp(weight - weight.max())     # weighted draw without replacement
        rows = np.argsort(-keys, kind="stable")[:m]                       # (Efraimidis-Spirakis): the m largest
        noisy[rows] = rival[rows]
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
    true mislabelled mask; best_f1 / best_n_flagged: the highest F1 that flagging the top rows by noise_score
    reaches at any threshold, and how many rows that flags (what a perfect flag count would give: best_f1 well
    above f1 means the ranking is right and the count is not). AUROC/AP are NaN when truth is all True or all
    False."""
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
    cuts = _cuts(s, t) if t.any() else None
    return {"precision": float(prec), "recall": float(rec), "f1": float(f1),
            "auroc": _auroc(s, t) if both else float("nan"),
            "average_precision": _average_precision(*cuts) if both else float("nan"),
            "n_flagged": int(f.sum()), "n_true": int(t.sum()),
            **(_best_f1(*cuts) if cuts else {"best_f1": 0.0, "best_n_flagged": 0})}


def _cuts(s, t) -> tuple[np.ndarray, np.ndarray]:
    """(flagged, hits): for each distinct score from high to low, how many rows score at least it and how many
    of those are truly mislabelled (tied scores as one threshold)."""
    order = np.argsort(-s, kind="stable")
    last = np.r_[np.flatnonzero(np.diff(s[order])), len(s) - 1]      # the last row of each tie group
    return last + 1, np.cumsum(t[order])[last]


def _best_f1(flagged, hits) -> dict:
    """{best_f1, best_n_flagged}: the highest F1 over the thresholds of `_cuts`, and how many rows it flags."""
    f1 = 2 * hits / (flagged + hits[-1])
    i = int(np.argmax(f1))
    return {"best_f1": float(f1[i]), "best_n_flagged": int(flagged[i])}


def _auroc(s, t) -> float:
    """Area under the ROC curve of scores s for labels t (ties count half): the Mann-Whitney U statistic over
    average ranks. Plain numpy, the same value as sklearn's roc_auc_score (which the Home page need not import)."""
    order = np.argsort(s, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(s[order])) + 1]
    sizes = np.diff(np.r_[starts, len(s)])
    ranks = np.empty(len(s))
    ranks[order] = np.repeat(starts + (sizes + 1) / 2, sizes)        # 1-based average rank of each tie group
    pos = int(t.sum())
    return float((ranks[t].sum() - pos * (pos + 1) / 2) / (pos * (len(t) - pos)))


def _average_precision(flagged, hits) -> float:
    """Average precision: the sum over the thresholds of `_cuts` (high to low) of precision x the recall gained
    there (sklearn's average_precision_score)."""
    recall_gain = np.diff(np.r_[0, hits]) / hits[-1]
    return float((hits / flagged * recall_gain).sum())
