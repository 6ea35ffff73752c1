"""Exact kNN as torch matmul blocks, with a flat faiss index's contract.

Where faiss-cpu's bundled OpenBLAS runs its generic kernels (selector.runtime.faiss_blas), this is what
`Neighbors` searches with up to its exact limit; it also gives the exact truth an IVF index's recall is
measured against. Rows may be scaled per row (1 / |x_i| for cosine), so X itself is never copied.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from selector.linalg import row_norms


class TorchFlat:
    """Exact search as torch matmul blocks with the flat faiss index's contract: search(Q, k) -> (D, I) sorted
    best first, inner product (cosine) or SQUARED L2, I = -1 past the last indexed row."""
    Q_BLOCK, X_BLOCK = 2048, 16384   # one block of scores is 128 MB

    def __init__(self, X: np.ndarray, metric: str, *, scale: Optional[np.ndarray] = None):
        import torch
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.metric = metric
        self.scale = None if scale is None else torch.from_numpy(scale)   # per row, applied to its scores
        self.half_sq = 0.5 * (self.X * self.X).sum(1) if metric == "l2" else None

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch
        n, m = self.X.shape[0], Q.shape[0]
        kk = min(k, n)
        D = np.full((m, k), -np.inf if self.metric == "cosine" else np.inf, np.float32)
        I = np.full((m, k), -1, np.int64)
        with torch.inference_mode():
            for a in range(0, m, self.Q_BLOCK):
                q = torch.from_numpy(np.ascontiguousarray(Q[a:a + self.Q_BLOCK], dtype=np.float32))
                best_v = best_i = None
                for b in range(0, n, self.X_BLOCK):
                    s = q @ self.X[b:b + self.X_BLOCK].T              # higher = closer, for both metrics:
                    if self.scale is not None:
                        s *= self.scale[b:b + self.X_BLOCK]
                    if self.half_sq is not None:                     # l2: maximise q.x - |x|^2 / 2
                        s -= self.half_sq[b:b + self.X_BLOCK]
                    v, i = torch.topk(s, min(kk, s.shape[1]), dim=1)
                    i += b
                    if best_v is not None:
                        v, j = torch.topk(torch.cat([best_v, v], 1), kk, dim=1)
                        i = torch.gather(torch.cat([best_i, i], 1), 1, j)
                    best_v, best_i = v, i
                v, i = best_v, best_i
                if self.half_sq is not None:        # l2: the k found pairs' distances again, as |q - x|^2 directly
                    v, i = self._squared_distances(q, i)
                D[a:a + len(q), :kk], I[a:a + len(q), :kk] = v.numpy(), i.numpy()
        return D, I

    def _squared_distances(self, q, i, rows: int = 256):
        """(|q - x_i|^2 sorted ascending, i in that order) for each query's found ids. The search ranks by
        q.x - |x|^2 / 2, whose float32 rounding leaves ~1e-5 on a zero distance (a row found as its own
        neighbour at distance 0.004 after the square root); k differences per query cost k d, not n d."""
        import torch
        out = torch.empty(i.shape, dtype=torch.float32)
        for s in range(0, len(q), rows):
            diff = q[s:s + rows, None, :] - self.X[i[s:s + rows]]
            out[s:s + rows] = (diff * diff).sum(-1)
        out, order = torch.sort(out, dim=1, stable=True)
        return out, torch.gather(i, 1, order)


def inverse_norms(X) -> np.ndarray:
    """(n,) float32 1 / |x_i| (0 for all-zero rows)."""
    norms = row_norms(X)
    return np.where(norms > 1e-12, 1.0 / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def graph_recall(X, I, *, metric: str = "cosine", scale: Optional[np.ndarray] = None, queries: int = 10_000,
                 seed: int = 0) -> tuple[float, int]:
    """(recall@k, queries used) of a kNN graph I (n, k) of X's rows among themselves (self excluded, I = -1 for
    missing), against exact search on a seeded sample of `queries` rows: the share of each sampled row's true
    k nearest neighbours that I holds. X's rows are scaled by `scale` (1 / |x_i| for cosine) when given."""
    n, k = I.shape
    rows = np.sort(np.random.default_rng([seed, 10]).choice(n, min(n, queries), replace=False))
    Q = X[rows] if scale is None else X[rows] * scale[rows, None]
    _, found = TorchFlat(X, metric, scale=scale).search(Q, min(k + 1, n))
    truth = np.array([np.resize(np.append(t[t != r], [-1] * k), k) for t, r in zip(found, rows)], np.int64)
    hit = (I[rows][:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
    return float(hit.any(-1).sum() / max(int((truth >= 0).sum()), 1)), len(rows)
