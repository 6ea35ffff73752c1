"""Adapters on seeded synthetic embeddings: contract, determinism, that training helps, robustness."""
import numpy as np
import pytest

from selector.adapt import Adapters
from selector.errors import InputError
from selector.noise import inject_noise
from selector.score import alignment

C = 5


def _data(n=2000, d=16, seed=0, text_shift=1.2):
    """Class clusters; T = class means pushed off by a shared random shift, so zero-shot is imperfect
    and adaptation has something to learn."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(C, d)) * 1.5
    y = rng.integers(0, C, n)
    X = (mu[y] + rng.normal(scale=1.0, size=(n, d))).astype(np.float32)
    T = (mu + text_shift * rng.normal(size=(C, d))).astype(np.float32)
    return X, T, y


def _acc(ad, X, T, y):
    F, G = ad.transform_images(X), ad.transform_texts(T)
    Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
    Gn = G / np.linalg.norm(G, axis=1, keepdims=True)
    return ((Fn @ Gn.T).argmax(1) == y).mean()


def test_contract_and_identity_start():
    X, T, y = _data(n=300)
    ad = Adapters(epochs=0)
    assert ad.fit(X, T, y) is ad
    for attr in ("image_adapter_", "text_adapter_", "loss_history_", "best_epoch_", "sample_weights_"):
        assert hasattr(ad, attr)
    # untrained adapters are the identity on L2-normalised embeddings (= zero-shot)
    np.testing.assert_allclose(ad.transform_images(X), X / np.linalg.norm(X, axis=1, keepdims=True), atol=1e-6)
    F = Adapters(epochs=3).fit(X, T, y).transform_images(X)
    assert F.shape == X.shape and F.dtype == np.float32
    assert Adapters(epochs=3).fit(X, T, y).transform_texts(T).shape == T.shape


def test_seeded_and_separate_adapters():
    X, T, y = _data(n=600)
    a = Adapters(epochs=4, seed=1).fit(X, T, y)
    b = Adapters(epochs=4, seed=1).fit(X, T, y)
    np.testing.assert_allclose(a.transform_images(X), b.transform_images(X), atol=1e-6)
    assert a.loss_history_ == b.loss_history_
    # the two adapters are separate modules with their own weights
    assert not np.allclose(a.image_adapter_["weight"], a.text_adapter_["weight"])


@pytest.mark.parametrize("robust", [True, False])
def test_training_improves_the_adapted_classifier(robust):
    X, T, y = _data(text_shift=3.0)
    zero_shot = _acc(Adapters(epochs=0).fit(X, T, y), X, T, y)
    ad = Adapters(robust=robust, seed=0).fit(X, T, y)
    assert _acc(ad, X, T, y) > zero_shot + 0.05
    assert ad.loss_history_[-1] < ad.loss_history_[0]
    assert 1 <= ad.best_epoch_ <= ad.n_epochs_run_ <= ad.epochs


def test_robust_weights_discount_flipped_rows_and_keep_alignment_informative():
    X, T, y = _data(seed=2, text_shift=0.5)
    noisy, flipped = inject_noise(y, rate=0.4, n_classes=C, seed=0)
    ad = Adapters(robust=True, seed=0).fit(X, T, noisy)
    w = ad.sample_weights_
    assert w[flipped].mean() < 0.5 * w[~flipped].mean()
    # per given class the total weight is kept (no class is starved)
    np.testing.assert_allclose(np.bincount(noisy, weights=w), np.bincount(noisy), rtol=1e-3)
    sas = alignment(ad.transform_images(X), ad.transform_texts(T), noisy)
    assert sas[~flipped].mean() > sas[flipped].mean() + 0.3


def test_user_weights_zero_rows_are_ignored():
    X, T, y = _data(n=800, seed=3)
    noisy, flipped = inject_noise(y, rate=0.3, n_classes=C, seed=0)
    ref = Adapters(robust=False, epochs=5).fit(X[~flipped], T, noisy[~flipped])
    ad = Adapters(robust=False, epochs=5).fit(X, T, noisy, weights=(~flipped).astype(float))
    assert abs(_acc(ad, X, T, y) - _acc(ref, X, T, y)) < 0.03


def test_bad_input():
    X, T, y = _data(n=100)
    with pytest.raises(InputError, match="not fitted"):
        Adapters().transform_images(X)
    with pytest.raises(InputError, match="columns"):
        Adapters().fit(X, T[:, :4], y)
    with pytest.raises(InputError, match=r"\[0, 5\)"):
        Adapters().fit(X, T, y + 1)
    with pytest.raises(InputError, match="weights"):
        Adapters().fit(X, T, y, weights=np.ones(3))
    with pytest.raises(InputError, match="epochs"):
        Adapters(epochs=-1).fit(X, T, y)
    with pytest.raises(InputError, match="temperature"):
        Adapters(temperature=0).fit(X, T, y)
    Xb = X.copy()
    Xb[4] = np.inf
    with pytest.raises(InputError, match="rows 4"):
        Adapters().fit(Xb, T, y)
    ad = Adapters(epochs=1).fit(X, T, y)
    with pytest.raises(InputError, match="columns"):
        ad.transform_images(X[:, :3])


def test_epochs_on_a_sample_still_discount_flipped_rows():
    """Past max_rows each epoch trains on (and re-weights) a random sample; the final weights cover every row."""
    X, T, y = _data(seed=2, text_shift=0.5)
    noisy, flipped = inject_noise(y, rate=0.4, n_classes=C, seed=0)
    ad = Adapters(robust=True, seed=0, max_rows=len(y) // 4).fit(X, T, noisy)
    w = ad.sample_weights_
    assert w.shape == (len(y),) and (w > 0).all()
    assert w[flipped].mean() < 0.5 * w[~flipped].mean()
    np.testing.assert_allclose(np.bincount(noisy, weights=w), np.bincount(noisy), rtol=1e-3)
    X, T, y = _data(text_shift=3.0)
    zero_shot = _acc(Adapters(epochs=0).fit(X, T, y), X, T, y)
    assert _acc(Adapters(seed=0, max_rows=len(y) // 4).fit(X, T, y), X, T, y) > zero_shot + 0.05
