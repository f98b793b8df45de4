import os

import pytest
import torch

# Tests never download: a missing file must give the "not found" message at once.
os.environ.setdefault("ADVLAB_OFFLINE", "1")

# pytest-xdist runs one worker per core; one thread per worker avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

# The shared trained digits models, each trained once and cached under .pytest_cache (see trained_digits.py).
from trained_digits import (_trained_digits_cache, digits_cnn, digits_cnn_short, trained_digits,  # noqa: E402,F401
                            trained_digits_run)

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
has_fashion = os.path.isfile(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz"))
needs_fashion = pytest.mark.skipif(not has_fashion, reason="apt-get install dataset-fashion-mnist")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A private user cache and no $ADVLAB_DATA, so only what the test puts there is found."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    return tmp_path / "cache" / "advlab"


@pytest.fixture(scope="session")
def digits():
    from advlab.data import load_dataset
    return load_dataset("digits")
