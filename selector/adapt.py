"""Dataset adaptation: separate image and text adapters on frozen embeddings (paper module 1).

Each adapter is a dimension-preserving Linear(d, d) initialised to the identity, applied to the
L2-normalised frozen embedding, so an untrained adapter reproduces the zero-shot classifier exactly.
Training minimises cross-entropy of cos(A_img(x_i), A_txt(t_c)) / temperature over all C class prompts
(an adapted zero-shot classifier; in-batch InfoNCE would treat same-class pairs as negatives), plus
`weight_decay` * squared distance of both adapters from the identity, which keeps them near the
frozen encoder instead of towards zero.

robust=True (the default) keeps the adapters from simply learning label noise:
  * per-sample weights = agreement between the current model and the given label,
    r_i = p(y_i | x_i) / max_c p(c | x_i) (starts from the zero-shot model, refreshed every epoch),
    renormalised inside each given class so no class loses its total weight;
  * early stopping on a held-out 10% split (best epoch restored), which stops before memorisation;
  * at most `max_rows` rows per epoch (a random sample, whose weights alone are refreshed), which bounds
    the cost of an epoch at any n.
robust=False is the paper's way: every row, equal weight, all epochs.
"""
from __future__ import annotations

import logging

import numpy as np

from selector.errors import InputError
from selector.progress import Progress, ensure
from selector.linalg import l2_normalize
from selector.runtime import blas_threads, threads_for, torch_threads
from selector.validate import check_int, check_labels, check_matrix, check_number

log = logging.getLogger(__name__)

_CHUNK = 65_536


class Adapters:
    """Image and text adapters (scikit-learn style: __init__ stores, fit returns self).

    Defaults: epochs=20 (upper bound when robust: early stopping), lr=1e-3 (Adam), batch 1024,
    temperature=0.05 (logit scale 20), weight_decay=1e-3 (pull towards the identity), seed=0.
    Learned: image_adapter_, text_adapter_ ({"weight": (d,d), "bias": (d,)} float32 numpy, applied to
    L2-normalised inputs as x @ W.T + b), loss_history_ (train loss per epoch), val_history_,
    best_epoch_, n_epochs_run_, sample_weights_ (final robust weights, (n,) float32).
    """

    def __init__(self, *, epochs: int = 20, lr: float = 1e-3, temperature: float = 0.05,
                 weight_decay: float = 1e-3, seed: int = 0, robust: bool = True,
                 batch_size: int = 1024, max_rows: int = 200_000, patience: int = 3):
        self.epochs = epochs
        self.lr = lr
        self.temperature = temperature
        self.weight_decay = weight_decay
        self.seed = seed
        self.robust = robust
        self.batch_size = batch_size
        self.max_rows = max_rows
        self.patience = patience

    # ------------------------------------------------------------------------------------------ fit
    def _check_params(self):
        check_int(self.epochs, "Adapters epochs", minimum=0)
        for name in ("batch_size", "max_rows", "patience"):
            check_int(getattr(self, name), f"Adapters {name}", minimum=1)
        for name in ("lr", "temperature"):
            check_number(getattr(self, name), f"Adapters {name}", above=0)
        check_number(self.weight_decay, "Adapters weight_decay", minimum=0)

    def fit(self, X, T, labels, *, weights=None, progress: Progress | None = None) -> "Adapters":
        """X (n,d) frozen image embeddings, T (C,d) class-prompt embeddings, labels (n,) given labels in
        [0, C); weights optional (n,) >= 0 per-sample weights (multiplied with the robust ones)."""
        self._check_params()
        X = check_matrix(X, "X (image embeddings)")
        threads = threads_for(self.batch_size * X.shape[1] ** 2)
        with blas_threads(threads), torch_threads(threads):
            return self._fit(X, T, labels, weights, progress)

    def _fit(self, X, T, labels, weights, progress):
        import torch

        X = check_matrix(X, "X (image embeddings)")
        T = check_matrix(T, "T (class-prompt embeddings)", dim=X.shape[1])
        n, d = X.shape
        C = T.shape[0]
        if n == 0 or C < 2:
            raise InputError(f"Adapters need at least 1 sample and 2 classes; got n={n}, C={C}.")
        y = check_labels(labels, n, C)
        w_user = np.ones(n, np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
        if w_user.shape != (n,) or not np.isfinite(w_user).all() or (w_user < 0).any():
            raise InputError(f"weights must be (n,) = ({n},) finite and >= 0; got shape {w_user.shape}.")
        progress = ensure(progress)
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)

        Xn = torch.from_numpy(l2_normalize(X))
        Tn = torch.from_numpy(l2_normalize(T))
        yt = torch.from_numpy(y)
        img, txt = torch.nn.Linear(d, d), torch.nn.Linear(d, d)
        for layer in (img, txt):
            with torch.no_grad():
                layer.weight.copy_(torch.eye(d))
                layer.bias.zero_()
        params = list(img.parameters()) + list(txt.parameters())
        opt = torch.optim.Adam(params, lr=self.lr)
        eye = torch.eye(d)
        scale = 1.0 / self.temperature

        def logits_of(xb):
            f = torch.nn.functional.normalize(img(xb), dim=1)
            g = torch.nn.functional.normalize(txt(Tn), dim=1)
            return f @ g.T * scale

        step = max(1024, min(_CHUNK, (1 << 24) // C))       # (step, C) logits at a time: never all n rows

        def agreement(rows) -> np.ndarray:
            """r_i = p(y_i|x_i) / max_c p(c|x_i) under the current adapters for `rows`, float32."""
            r = np.empty(len(rows), np.float32)
            with torch.no_grad():
                for s in range(0, len(rows), step):
                    at = rows[s:s + step]
                    L = logits_of(Xn[torch.from_numpy(at)]).numpy()
                    r[s:s + step] = np.exp(L[np.arange(len(L)), y[at]] - L.max(axis=1))
            return r

        def val_loss(rows) -> float:
            with torch.no_grad():
                total = sum(float(torch.nn.functional.cross_entropy(logits_of(Xn[rows[s:s + step]]),
                                                                    yt[rows[s:s + step]], reduction="sum"))
                            for s in range(0, len(rows), step))
            return total / len(rows)

        # robust: hold out a stratified 10% for early stopping (only when every class can spare rows)
        val = np.zeros(n, bool)
        if self.robust and n >= 50:
            for c in range(C):
                rows = np.flatnonzero(y == c)
                if len(rows) >= 10:
                    val[rng.choice(rows, size=len(rows) // 10, replace=False)] = True
        train_rows = np.flatnonzero(~val)
        val_rows = torch.from_numpy(np.flatnonzero(val))

        w = w_user.copy()
        self.loss_history_, self.val_history_ = [], []
        best = (np.inf, None, 0)
        bad_epochs = 0
        sampled = self.robust and len(train_rows) > self.max_rows
        every = np.arange(n)
        for epoch in range(self.epochs):
            rows = rng.choice(train_rows, size=self.max_rows, replace=False) if sampled else train_rows
            if sampled:   # weights only for this epoch's rows: the cost per epoch stays bounded at any n
                w = np.zeros(n, np.float32)
                w[rows] = w_user[rows] * self._class_renormalised(agreement(rows), y[rows], C)
            elif self.robust:
                w = w_user * self._class_renormalised(agreement(every), y, C)
            rows = rng.permutation(rows)
            total, wsum = 0.0, 0.0
            for s in range(0, len(rows), self.batch_size):
                b = torch.from_numpy(rows[s:s + self.batch_size])
                wb = torch.from_numpy(w[b.numpy()])
                if float(wb.sum()) <= 0:
                    continue
                ce = torch.nn.functional.cross_entropy(logits_of(Xn[b]), yt[b], reduction="none")
                data_loss = (wb * ce).sum() / wb.sum()
                reg = ((img.weight - eye) ** 2).sum() + (img.bias ** 2).sum() \
                    + ((txt.weight - eye) ** 2).sum() + (txt.bias ** 2).sum()
                loss = data_loss + self.weight_decay * reg
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(data_loss.detach()) * float(wb.sum())
                wsum += float(wb.sum())
            self.loss_history_.append(total / max(wsum, 1e-12))
            progress("fitting adapters", epoch + 1, self.epochs)
            if len(val_rows):
                vl = val_loss(val_rows)
                self.val_history_.append(vl)
                if vl < best[0] - 1e-5:
                    best = (vl, self._state(img, txt), epoch + 1)
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                    if bad_epochs >= self.patience:
                        log.info("adapters: early stop after epoch %d (best %d)", epoch + 1, best[2])
                        break
        self.n_epochs_run_ = len(self.loss_history_)
        if best[1] is not None:
            self.image_adapter_, self.text_adapter_ = best[1]
            self.best_epoch_ = best[2]
        else:
            self.image_adapter_, self.text_adapter_ = self._state(img, txt)
            self.best_epoch_ = self.n_epochs_run_
        if sampled:   # the final weights of every row, from the adapters as trained
            w = w_user * self._class_renormalised(agreement(every), y, C)
        self.sample_weights_ = w.astype(np.float32)
        return self

    @staticmethod
    def _class_renormalised(r, y, C) -> np.ndarray:
        """Agreement weights r renormalised so that each given class keeps its total weight (its row count)."""
        sums = np.bincount(y, weights=r, minlength=C)
        counts = np.bincount(y, minlength=C)
        return (r * (counts / np.maximum(sums, 1e-12))[y]).astype(np.float32)

    @staticmethod
    def _state(img, txt):
        def grab(layer):
            return {"weight": layer.weight.detach().numpy().astype(np.float32).copy(),
                    "bias": layer.bias.detach().numpy().astype(np.float32).copy()}
        return grab(img), grab(txt)

    # ------------------------------------------------------------------------------------ transform
    def _apply(self, A, state, name):
        if not hasattr(self, "image_adapter_"):
            raise InputError("Adapters are not fitted yet: call fit(X, T, labels) first.")
        W = state["weight"]
        A = check_matrix(A, name, dim=W.shape[1])
        out = np.empty((A.shape[0], W.shape[0]), np.float32)
        for s in range(0, A.shape[0], _CHUNK):
            out[s:s + _CHUNK] = l2_normalize(A[s:s + _CHUNK]) @ W.T + state["bias"]
        return out

    def transform_images(self, X) -> np.ndarray:
        """Adapted image embeddings F (n,d) float32 (not normalised; scores use cosine / L2 on them)."""
        return self._apply(X, self.image_adapter_ if hasattr(self, "image_adapter_") else None,
                           "X (image embeddings)")

    def transform_texts(self, T) -> np.ndarray:
        """Adapted class-prompt embeddings G (C,d) float32."""
        return self._apply(T, self.text_adapter_ if hasattr(self, "text_adapter_") else None,
                           "T (class-prompt embeddings)")
