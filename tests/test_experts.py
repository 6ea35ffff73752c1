"""The audit's cross-fitted classifiers (selector.experts): no row is scored by a model that saw its label, the
network separates classes a linear discriminant cannot, and it learns the clean posterior through a noise
model."""
import numpy as np

from selector.experts import fit_lda, fit_mlp, log_softmax, logits, stratified_folds


def _out_of_fold(params, X, folds):
    P = np.empty((len(X), params[0][-1].shape[0]), np.float32)
    for f, p in enumerate(params):
        at = folds == f
        P[at] = np.exp(log_softmax(logits(p, X[at])))
    return P


def _rings(n=3000, d=8, seed=0):
    """Two classes on concentric rings in a random plane of R^d, plus small noise: not linearly separable."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = np.where(y == 0, 1.0, 2.0) + 0.1 * rng.normal(size=n)
    plane = np.linalg.qr(rng.normal(size=(d, 2)))[0]
    X = (np.c_[radius * np.cos(angle), radius * np.sin(angle)] @ plane.T + 0.05 * rng.normal(size=(n, d)))
    return X.astype(np.float32), y, np.random.default_rng(1)


def test_network_separates_what_a_linear_discriminant_cannot():
    X, y, rng = _rings()
    folds = stratified_folds(y, 5, rng)
    w = np.ones(len(y))
    lda = _out_of_fold(fit_lda(X, y, 2, w, folds, 5), X, folds)
    mlp = _out_of_fold(fit_mlp(X, y, 2, w, folds, 5, np.eye(2), seed=0), X, folds)
    assert (lda.argmax(1) == y).mean() < 0.7
    assert (mlp.argmax(1) == y).mean() > 0.95


def test_a_fold_never_sees_the_labels_of_its_own_rows():
    """Relabelling every row of fold 0 leaves fold 0's network unchanged: it is trained on the other folds
    only (the standardisation uses no labels), so no row is scored by a model that saw its label."""
    X, y, rng = _rings(n=1500)
    folds = stratified_folds(y, 5, rng)
    w = np.ones(len(y))
    before = fit_mlp(X, y, 2, w, folds, 5, np.eye(2), seed=3)
    relabelled = np.where(folds == 0, 1 - y, y)
    after = fit_mlp(X, relabelled, 2, w, folds, 5, np.eye(2), seed=3)
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(before[1], after[1]))


def test_the_network_learns_the_clean_posterior_through_the_noise_model():
    """A 35% swap between the two classes: trained through the true transition, the network's softmax is the
    clean posterior (confident on the true class); trained as if the labels were clean, it learns the noisy
    posterior (about 0.65 at best)."""
    X, y, rng = _rings(n=4000, seed=2)
    noise = np.random.default_rng(5).random(len(y)) < 0.35
    given = np.where(noise, 1 - y, y)
    folds = stratified_folds(given, 5, rng)
    w = np.ones(len(y))
    swap = np.array([[0.65, 0.35], [0.35, 0.65]])
    rows = np.arange(len(y))
    clean = _out_of_fold(fit_mlp(X, given, 2, w, folds, 5, swap, seed=0), X, folds)[rows, y].mean()
    plain = _out_of_fold(fit_mlp(X, given, 2, w, folds, 5, np.eye(2), seed=0), X, folds)[rows, y].mean()
    assert clean > 0.85 and plain < 0.72, (clean, plain)


def test_the_networks_loss_uses_the_audits_noise_kernel():
    """The network is trained through the noise model of the audit's first round (hesitation power g = 0):
    p(given | x) from `_given_through` (torch) equals sum_c P(c|x) K(c, given) from the audit's `_kernel`."""
    import torch

    from selector.audit import _kernel
    from selector.experts import _given_through
    rng = np.random.default_rng(0)
    C, b = 5, 40
    P = rng.dirichlet(np.ones(C), b).astype(np.float32)
    T = rng.dirichlet(3 * np.ones(C), C).astype(np.float32)
    y = rng.integers(0, C, b)
    for h in (0.0, 0.4, 1.0):
        K, _ = _kernel(P, np.tile(np.arange(C), (b, 1)), y, T, (h, 0.0, None))
        got = _given_through(torch.from_numpy(P), torch.from_numpy(y), torch.from_numpy(T), h).numpy()
        np.testing.assert_allclose(got, (P * K).sum(1), atol=1e-6)


def test_the_networks_steps_cost_no_more_at_many_classes_than_at_ten():
    """A step costs h (d + C) multiply-adds per row: past MLP_BUDGET_CLASSES classes the step count shrinks
    so that steps x (d + C) stays at its value for that many classes, never below MLP_MIN_STEPS; at few
    classes, or few rows, the step count is what it was."""
    from selector.experts import MLP_BUDGET_CLASSES, MLP_MIN_STEPS, MLP_STEPS, mlp_steps
    big = 10 ** 6
    assert mlp_steps(big, 512, 2) == mlp_steps(big, 512, MLP_BUDGET_CLASSES) == MLP_STEPS
    assert mlp_steps(15_000, 512, 1000) == mlp_steps(15_000, 512, 10) == 20 * 15_000 // 512    # epochs bind first
    assert mlp_steps(100, 512, 10) == MLP_MIN_STEPS
    for d, C in ((512, 100), (512, 1000), (512, 21_000), (32, 1000)):
        steps = mlp_steps(big, d, C)
        assert steps < MLP_STEPS
        assert steps == MLP_MIN_STEPS or steps * (d + C) <= MLP_STEPS * (d + MLP_BUDGET_CLASSES) < (steps + 1) * (d + C)
    assert mlp_steps(big, 512, 1000) == 690 and mlp_steps(big, 32, 1000) == MLP_MIN_STEPS
