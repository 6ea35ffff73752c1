"""Rows that are unusual whatever their label: out-of-distribution images, groups of a class missing from the
label set, near-duplicates, and near-duplicates leaked across splits.

All work on the frozen embeddings. OOD rows and near-duplicates read the cosine similarity of each row to its
k global neighbours (`neighbor_similarities`); their cut-offs are relative (robust z-scores, median / MAD, or
shares of the row's own neighbour distances), so they adapt to each encoder instead of assuming a fixed
cosine scale. A missing class is found as a group (`find_missing_class`), not row by row.
"""
from __future__ import annotations

import numpy as np

from selector.errors import InputError
from selector.linalg import l2_normalize, sample_rows
from selector.validate import check_matrix, check_neighbor_ids, check_number, check_vector

OOD_CUT = 3.5          # robust z (median/MAD, Iglewicz-Hoaglin "outlier" level)
DUP_LOCAL = 0.15       # a near-duplicate pair: distance <= this share of the row's farthest listed neighbour
DUP_SCALE = 0.5        # ... and <= this share of the median 1-NN distance
MISSING_MIN_SIZE = 20  # rows a group of a missing class needs
MISSING_SCATTER = 1.5  # its trusted labels: collision probability at most this multiple of the dataset's
MISSING_SPREAD = 1.5   # its spread (mean cosine distance to its centroid) at most this multiple of the median cluster's
MISSING_RELABEL = 0.9  # a flagged row the audit relabels with at least this confidence is a label error, not one
MISSING_JOIN = 0.3     # share of a row's neighbours in a group for it to join the group
_BLOCK = 8192


def robust_z(v: np.ndarray) -> np.ndarray:
    """(v - median) / (1.4826 MAD), a robust z-score (0 where MAD is 0)."""
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    return ((v - med) / mad).astype(np.float32) if mad > 0 else np.zeros_like(v, np.float32)


def neighbor_similarities(X, I) -> np.ndarray:
    """(n, k) float32 cosine similarity of each row of X (n, d) to its neighbours I (n, k), NaN where I = -1.
    Computed in row blocks, so no (n, k, d) array is held."""
    X = check_matrix(X, "X (image embeddings)")
    I = check_neighbor_ids(I, X.shape[0])
    Xn = l2_normalize(X)
    out = np.empty(I.shape, np.float32)
    for s in range(0, len(I), _BLOCK):
        Ib = I[s:s + _BLOCK]
        out[s:s + _BLOCK] = np.einsum("ijk,ik->ij", Xn[np.maximum(Ib, 0)], Xn[s:s + _BLOCK])
    out[I < 0] = np.nan
    return out


def find_ood(best_class_sim, neighbor_sims, *, cut: float = OOD_CUT) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-distribution rows: match no class prompt well AND sit far from their neighbours.

    best_class_sim (n,): each row's cosine to its best-matching class prompt; neighbor_sims (n, k) from
    `neighbor_similarities`. ood_score = min of the robust z of log(1 - best_class_sim) and of log(mean
    distance to the neighbours) (cosine distances are right-skewed, their logs near symmetric); higher =
    more unusual. Returns (ood_score (n,) float32, ood (n,) bool = ood_score > cut)."""
    best = check_vector(best_class_sim, "best_class_sim")
    sims = np.asarray(neighbor_sims, dtype=np.float32)
    if sims.ndim != 2 or sims.shape[0] != best.shape[0]:
        raise InputError(f"neighbor_sims must be ({best.shape[0]}, k); got {sims.shape}.")
    cut = check_number(cut, "cut", above=0)
    valid = ~np.isnan(sims)
    far = 1.0 - np.nanmean(np.where(valid.any(1, keepdims=True), sims, 0.0), axis=1)   # no neighbour: far = 1
    score = np.minimum(robust_z(np.log(np.maximum(1.0 - best, 1e-6))),
                       robust_z(np.log(np.maximum(far, 1e-6)))).astype(np.float32)
    return score, score > cut


def find_missing_class(X, labels, class_embeddings, audit, I, *, seed: int = 0) -> np.ndarray:
    """group (n,) int64: rows that look like a class missing from the label set, numbered by group; -1 elsewhere.

    What marks such a class: a dense group of images whose given labels are scattered as if at random (each
    image got whatever label was at hand), so its neighbours agree with each other but not with its label, and
    which matches the known classes no better than a typical row does. Label noise also scatters labels, so the
    labels are read only where the audit trusts them. X (n, d) unit rows; labels (n,) in [0, C);
    class_embeddings: a list of (C, d) unit arrays (the class prompts and/or the class prototypes); audit: the
    `LabelAudit` of these labels (its flagged, suggested_prob and knn_agreement); I (n, k) each row's neighbours
    (-1 for none). Steps:
      1. spherical k-means of X into K = clip(n / 500, 2C, 512) clusters (on a sample of 64 rows per centroid);
      2. a cluster is a missing-class seed when it has >= MISSING_MIN_SIZE rows the audit does not flag, their
         labels are nearly as scattered as all unflagged rows' (label collision probability <= MISSING_SCATTER x
         theirs), it is about as tight as a typical cluster (mean cosine distance to its centroid <=
         MISSING_SPREAD x the median over the clusters of >= MISSING_MIN_SIZE rows: a region between classes,
         where the encoder mixes them, is looser than a class) and the median class-match z of its rows
         (`_match_z`: the robust z of log(1 - cosine to the best class), the lowest over the class embeddings
         given) is > 0;
      3. twice: each seed's centroid becomes a new class prototype beside the known ones (recomputed without the
         seeds' rows), and a row joins the seed it is nearest to when that is nearer than every known prototype,
         fewer than half its neighbours share its label, and the audit does not relabel it to a known class
         with confidence >= MISSING_RELABEL (that is a label error);
      4. three neighbourhood votes, since a class mean is a coarse border: such a row also joins the group most
         of its member neighbours are in when >= MISSING_JOIN of its neighbours are members;
      5. groups smaller than MISSING_MIN_SIZE are dropped."""
    X = check_matrix(X, "X (image embeddings)")
    y = np.asarray(labels, np.int64)
    C, n = int(class_embeddings[0].shape[0]), len(X)
    I = check_neighbor_ids(I, n)
    out = np.full(n, -1, np.int64)
    if n < 2 * MISSING_MIN_SIZE:
        return out
    centroids, assign, cos = spherical_kmeans(X, int(np.clip(n // 500, 2 * C, 512)), seed=seed)
    K, trusted = len(centroids), ~np.asarray(audit.flagged, bool)
    counts = np.bincount(assign[trusted] * C + y[trusted], minlength=K * C).reshape(-1, C)   # trusted labels
    cluster_sizes = np.bincount(assign, minlength=K)
    spread = 1.0 - np.bincount(assign, weights=cos, minlength=K) / np.maximum(cluster_sizes, 1)   # to the centroid
    big = cluster_sizes >= MISSING_MIN_SIZE
    typical = np.median(spread[big]) if big.any() else 0.0
    scattered = np.flatnonzero(big & (counts.sum(1) >= MISSING_MIN_SIZE) & (spread <= MISSING_SPREAD * typical) & (
        _collision(counts) <= MISSING_SCATTER * _collision(counts.sum(0, keepdims=True))[0]))
    rows = np.flatnonzero(np.isin(assign, scattered))
    z = _match_z(X, class_embeddings, rows, seed)
    seeds = [k for k in scattered if np.median(z[assign[rows] == k]) > 0]
    if not seeds:
        return out
    new, member = centroids[seeds], np.isin(assign, seeds)
    sums = _class_sums(X, y, C)
    relabelled = ~trusted & (np.asarray(audit.suggested_prob, np.float32) >= MISSING_RELABEL)
    candidate = (np.asarray(audit.knn_agreement, np.float32) < 0.5) & ~relabelled
    maybe = np.flatnonzero(candidate)
    for _ in range(2):
        known = l2_normalize(sums - _class_sums(X[member], y[member], C))
        sim = np.concatenate([X[maybe[s:s + _BLOCK]] @ new.T for s in range(0, len(maybe), _BLOCK)] or
                             [np.zeros((0, len(new)), np.float32)])
        joined = sim.max(1) > _best_sim(X, known, maybe)
        out[:] = -1
        out[maybe[joined]] = sim[joined].argmax(1)
        member = out >= 0
        new = l2_normalize(np.stack([X[out == g].mean(0) if (out == g).any() else new[g] for g in range(len(new))]))
    for _ in range(3):
        free = np.flatnonzero(candidate & (out < 0))
        near = np.where(I[free] >= 0, out[np.maximum(I[free], 0)], -1)      # the group of each neighbour, -1 none
        joins = (near >= 0).mean(1) >= MISSING_JOIN
        out[free[joins]] = np.stack([(near[joins] == g).sum(1) for g in range(len(new))], 1).argmax(1)
    member = out >= 0
    sizes = np.bincount(out[member], minlength=len(new))
    renumber = np.where(sizes >= MISSING_MIN_SIZE, np.cumsum(sizes >= MISSING_MIN_SIZE) - 1, -1)
    out[member] = renumber[out[member]]
    return out


def spherical_kmeans(X, K: int, *, seed: int = 0, iters: int = 15, per_centroid: int = 64):
    """(centroids (K, d) unit, assignment (n,) int64, cosine (n,) float32 of each row to its centroid) of unit
    rows X: k-means++ seeding and Lloyd steps on cosine, on a seeded sample of per_centroid rows per centroid;
    then every row goes to its nearest centroid."""
    rng = np.random.default_rng(seed)
    S = X[np.sort(rng.choice(len(X), min(len(X), per_centroid * K), replace=False))]
    K = min(K, len(S))
    cen = np.empty((K, X.shape[1]), np.float32)
    cen[0] = S[rng.integers(len(S))]
    gap = 1.0 - S @ cen[0]
    for k in range(1, K):                                            # k-means++: far rows are likelier seeds
        p = np.maximum(gap, 0) ** 2
        cen[k] = S[rng.choice(len(S), p=p / p.sum()) if p.sum() > 0 else rng.integers(len(S))]
        gap = np.minimum(gap, 1.0 - S @ cen[k])
    for _ in range(iters):
        a = (S @ cen.T).argmax(1)
        sums = _class_sums(S, a, K).astype(np.float32)
        empty = np.bincount(a, minlength=K) == 0
        sums[empty] = cen[empty]
        cen = l2_normalize(sums)
    assign, cos = np.empty(len(X), np.int64), np.empty(len(X), np.float32)
    for s in range(0, len(X), _BLOCK):
        sim = X[s:s + _BLOCK] @ cen.T
        assign[s:s + _BLOCK] = sim.argmax(1)
        cos[s:s + _BLOCK] = sim[np.arange(len(sim)), assign[s:s + _BLOCK]]
    return cen, assign, cos


def _best_sim(X, E, rows) -> np.ndarray:
    """(len(rows),) each listed row's cosine to its best-matching row of E, in row blocks."""
    return np.concatenate([(X[rows[s:s + _BLOCK]] @ E.T).max(1) for s in range(0, len(rows), _BLOCK)] or
                          [np.zeros(0, np.float32)])


def _match_z(X, class_embeddings, rows, seed: int, reference: int = 100_000) -> np.ndarray:
    """(len(rows),) robust z of log(1 - cosine to the best class) for the listed rows, high = matches no class;
    the lowest over the class embeddings. Median and MAD come from every row (a seeded sample past `reference`
    rows), so only the listed rows and the sample are compared with the classes."""
    n = len(X)
    ref = sample_rows(n, reference, seed)
    z = np.full(len(rows), np.inf, np.float32)
    for E in class_embeddings:
        v_ref = np.log(np.maximum(1.0 - _best_sim(X, E, ref), 1e-6))
        med = np.median(v_ref)
        mad = 1.4826 * np.median(np.abs(v_ref - med))
        v = np.log(np.maximum(1.0 - _best_sim(X, E, rows), 1e-6))
        z = np.minimum(z, (v - med) / mad if mad > 0 else np.zeros_like(v))
    return z


def _class_sums(X, y, C) -> np.ndarray:
    """(C, d) float64: the sum of each class's rows of X, in row blocks through a sparse one-hot."""
    from scipy import sparse
    sums = np.zeros((C, X.shape[1]), np.float64)
    for s in range(0, len(X), _BLOCK):
        block = X[s:s + _BLOCK]
        sums += sparse.csr_matrix((np.ones(len(block)), (y[s:s + _BLOCK], np.arange(len(block)))),
                                  shape=(C, len(block))) @ block
    return sums


def _collision(counts) -> np.ndarray:
    """(m,): for each row of label counts (m, C), the chance that two different samples drawn from it share a
    label (unbiased; 1 where there are fewer than 2)."""
    counts = np.asarray(counts, np.float64)
    n = counts.sum(1)
    return np.where(n > 1, (counts * (counts - 1)).sum(1) / np.maximum(n * (n - 1), 1), 1.0)


def find_near_duplicates(neighbor_sims, I, *, threshold: float = 0.98) -> np.ndarray:
    """duplicate_of (n,) int64: the lowest row each row nearly duplicates, -1 for none.

    A neighbour is a near-duplicate when the two are far closer to each other than to anything else around
    them: their cosine distance is at most DUP_LOCAL (0.15) of the row's distance to its farthest listed
    neighbour (its local scale: a dense region has close neighbours, and a near-copy is closer still) and at
    most DUP_SCALE (0.5) of the dataset's median 1-NN distance, and their cosine is >= threshold. So an
    encoder whose embeddings are all near-parallel (demo CNN: median 1-NN cosine 0.994) does not make every
    row a duplicate, and a re-encoded copy (cosine 0.9998) is still found. Exact copies (distance <= 1e-6)
    always count; a pair counts when either row finds the other. Groups resolve to their lowest row. A group
    larger than the neighbour list (more than k near-copies of one image) is found only through its exact
    copies."""
    sims = np.asarray(neighbor_sims, dtype=np.float32)
    n = sims.shape[0]
    I = check_neighbor_ids(I, n)
    if sims.shape != I.shape:
        raise InputError(f"neighbor_sims {sims.shape} and I {I.shape} must have the same shape.")
    check_number(threshold, "duplicate_threshold", above=0, maximum=1)
    valid = I >= 0
    dist = np.where(valid, 1.0 - np.nan_to_num(sims, nan=-1.0), np.inf).astype(np.float32)
    nearest = dist.min(1)
    scale = np.median(nearest[np.isfinite(nearest)]) if np.isfinite(nearest).any() else 0.0
    local = np.where(valid, dist, -np.inf).max(1, keepdims=True)        # farthest listed neighbour
    close = (dist <= DUP_LOCAL * local) & (dist <= DUP_SCALE * scale) & (dist <= 1.0 - threshold + 1e-6)
    dup = valid & (close | (dist <= 1e-6))
    return _lowest_of_groups(n, np.repeat(np.arange(n), I.shape[1])[dup.ravel()], I[dup])


def _lowest_of_groups(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) int64: for each row joined to others by the pairs (a, b), the lowest row of its connected group;
    -1 for a row in no pair."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    if len(a) == 0:
        return np.full(n, -1, np.int64)
    _, comp = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    lowest = np.full(comp.max() + 1, n, np.int64)
    np.minimum.at(lowest, comp, np.arange(n))
    out = lowest[comp]
    out[out == np.arange(n)] = -1          # the lowest row of a group, and a row in no pair
    return out


def find_leaks(duplicate_of, split) -> np.ndarray:
    """leak_of (n,) int64: for each row whose near-duplicate group holds a row of another split (train/test),
    the lowest such row; -1 elsewhere. Both sides of a leak are marked. split: (n,) split names; an empty name
    is a split of its own."""
    dup = np.asarray(duplicate_of, np.int64)
    split = np.asarray(split, dtype=object).astype(str)
    if split.shape != dup.shape:
        raise InputError(f"split has {split.shape[0]} entries for {dup.shape[0]} rows; give one split name per row.")
    n = len(dup)
    root = np.where(dup >= 0, dup, np.arange(n))
    out = np.full(n, -1, np.int64)
    grouped = np.flatnonzero(np.bincount(root, minlength=n)[root] > 1)
    if not len(grouped):
        return out
    order = grouped[np.lexsort((grouped, root[grouped]))]      # by group, lowest row first
    for rows in np.split(order, np.flatnonzero(np.diff(root[order])) + 1):
        names = split[rows]
        if len(set(names)) < 2:
            continue
        for s in set(names):
            other = rows[names != s]
            out[rows[names == s]] = other[0]
    return out
