"""Fixtures shared by the tests; the tests mirror the package (tests/<folder>/test_<module>.py).

This folder is on `sys.path` (`pythonpath` in pyproject.toml), so every test imports the shared
helpers with `from helpers import ...`; test modules are imported by path (`importlib`), so
the mirrored folders may repeat a basename.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SHARED, TFDS_DIR, write_toy_images


@pytest.fixture(scope="session")
def shared_dir():
    """The offline data beside the clone; tests that need it skip where it is absent."""
    if not TFDS_DIR.is_dir():
        pytest.skip(f"no offline data in {SHARED} (see ../shared/DATA.md)")
    return SHARED


@pytest.fixture
def toy_npz(tmp_path):
    """256 random binary 6x6 images in an `.npz` (key `x`), uint8."""
    return write_toy_images(tmp_path / "toy.npz", 256, (6, 6), seed=7)


@pytest.fixture
def toy_npy(tmp_path):
    """96 random binary 4x4x1 images in an `.npy`, float32."""
    return write_toy_images(tmp_path / "toy.npy", 96, (4, 4, 1), seed=1, dtype="float32")


@pytest.fixture(scope="session")
def labelled_run(tmp_path_factory):
    """A finished tiny VAE run (one epoch) on 120 labelled 6x6 binary images, for the
    workflows that read a run (`sample`, `encode`): ROOT/toy.npz (`x`, `y` = index mod 3) and
    ROOT/run. Tests read it and must not change it."""
    from keras_vae.runs.config import TrainConfig
    from keras_vae.workflows import train

    root = tmp_path_factory.mktemp("labelled_run")
    x = (np.random.default_rng(3).uniform(size=(120, 6, 6, 1)) > 0.5).astype("float32")
    np.savez(root / "toy.npz", x=x, y=np.arange(120) % 3)
    config = TrainConfig(dataset=str(root / "toy.npz"), eval_split="train", latent_dim=2,
                         hidden_units=[8], epochs=1, batch_size=40, image_every=0)  # fmt: skip
    train.train(config, root / "run", verbose=0, progress=lambda line: None)
    return root
