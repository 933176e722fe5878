"""Files written by release 0.2.0 (commit 16777c3) still load and resume.

The fixtures in tests/fixtures/v0_2_0 were made once by `make_fixtures.py` on that commit:
three `.keras` files (VAE, conditional VAE, VQ-VAE), the outputs they gave then, and a run
directory whose training was killed in its second epoch, after the backup of the first.
"""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest
from helpers import FIXTURES as FIXTURES_DIR
from keras_vae.config import TrainConfig
from keras_vae.training import train

import keras_vae
from keras_vae import runs

FIXTURES = FIXTURES_DIR / "v0_2_0"


@pytest.fixture(scope="module")
def inputs():
    return np.load(FIXTURES / "inputs.npy")


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FIXTURES / "expected.npz"))


@pytest.mark.parametrize("name", ["vae", "cvae"])
def test_vae_files_of_0_2_0_load_and_encode_as_then(name, inputs, expected):
    model = keras.saving.load_model(FIXTURES / f"{name}.keras")
    assert isinstance(model, keras_vae.VAE)
    args = (inputs, keras.ops.one_hot(np.arange(8) % 10, 10)) if name == "cvae" else (inputs,)
    np.testing.assert_allclose(model.encode(*args).mean(), expected[f"{name}_loc"], atol=1e-6)


def test_vqvae_file_of_0_2_0_loads_after_import_keras_vae_alone(inputs, expected):
    model = keras.saving.load_model(FIXTURES / "vqvae.keras")  # only `import keras_vae`
    np.testing.assert_allclose(model(inputs), expected["vqvae_reconstruction"], atol=1e-6)


def test_interrupted_run_of_0_2_0_resumes_after_its_first_epoch(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / "vae_run_interrupted", run_dir)
    config = TrainConfig.from_file(run_dir / runs.CONFIG_FILE)
    result = train(config, run_dir, verbose=0, progress=lambda line: None)
    assert result["resumed_from_epoch"] == 1  # its backup holds the first of three epochs
    assert result["epochs"] == 3
    assert (run_dir / runs.MODEL_FILE).exists()
