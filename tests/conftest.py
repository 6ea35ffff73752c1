"""Shared test set-up: the environment every test runs in, markers, and shared fixtures (the seeded data
helpers are plain functions in tests/synthetic.py).

- No test starts the 60k demo by itself (the Home page's autorun is off).
- `@pytest.mark.fashion_mnist` tests need Fashion-MNIST's files (Debian's dataset-fashion-mnist or the data
  cache); they are skipped, with the reason, where the files are absent.
- `@pytest.mark.slow` tests take more than a few seconds; `-m "not slow"` leaves them out.
- `@pytest.mark.faults` tests inject real faults (tests/faults.py: damaged files, read-only folders, a full
  tmpfs, kill -9); those that need root to mount skip, with the reason, where mounting is refused.
"""
import os
from pathlib import Path

import pytest

os.environ["SELECTOR_AUTORUN"] = "0"


_ABSENT = ("Fashion-MNIST files absent: `apt-get install dataset-fashion-mnist` (or run `bash .ci/setup` as "
           "root) to run the tests on the real images")


def _fashion_mnist_present() -> bool:
    from selector.sources import torchvision_sets as tvs
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for folder in (Path(tvs.DEBIAN_FASHION_MNIST), Path(tvs.DATA_CACHE).expanduser() / "FashionMNIST" / "raw"):
        if all(tvs._find_idx(folder, s) for s in stems):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    if _fashion_mnist_present():
        return
    skip = pytest.mark.skip(reason=_ABSENT)
    for item in items:
        if "fashion_mnist" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fashion_mnist_test_split():
    """Fashion-MNIST's test split (10,000 real images), loaded once per session; skips where absent."""
    from selector.sources import load_fashion_mnist
    if not _fashion_mnist_present():
        pytest.skip(_ABSENT)
    return load_fashion_mnist(split="test", download=False)
