"""keras_vae.workflows.sample and .encode (`keras-vae sample`, `keras-vae encode`): what they
write equals what the run's model computes, for an array-file run with labels."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_vae.cli import commands as cli
from keras_vae.runs import directory as runs
from keras_vae.runs.config import TrainConfig
from keras_vae.workflows import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(3)
    x = (rng.uniform(size=(120, 6, 6, 1)) > 0.5).astype("float32")
    np.savez(root / "toy.npz", x=x, y=np.arange(120) % 3)
    config = TrainConfig(dataset=str(root / "toy.npz"), eval_split="train", latent_dim=2,
                         hidden_units=[8], epochs=1, batch_size=40, image_every=0)  # fmt: skip
    train.train(config, root / "run", verbose=0, progress=lambda line: None)
    return root


def test_sample_writes_what_the_model_draws(run, tmp_path):
    assert cli.main(["sample", str(run / "run"), "--num", "5", "--seed", "4",
                     "--output", str(tmp_path / "s.npy")]) == 0  # fmt: skip
    model = runs.load_model(run / "run" / runs.MODEL_FILE)
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), model.sample(5, seed=4), atol=1e-6)
    assert cli.main(["sample", str(run / "run"), "--output", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert cli.main(["sample", str(run / "run"), "--output", str(tmp_path / "s.txt")]) == 2
    assert cli.main(["sample", str(run / "run"), "--label", "1", "--output",
                     str(tmp_path / "l.npy")]) == 2  # not a conditional run  # fmt: skip


def test_encode_writes_the_posterior_and_the_projector(run, tmp_path):
    projector = tmp_path / "projector"
    assert cli.main(["encode", str(run / "run"), str(run / "toy.npz"), "--output",
                     str(tmp_path / "z.npz"), "--projector", str(projector)]) == 0  # fmt: skip
    found = np.load(tmp_path / "z.npz")
    model = runs.load_model(run / "run" / runs.MODEL_FILE)
    x = np.load(run / "toy.npz")["x"]
    np.testing.assert_allclose(found["mean"], model.encode(x).mean(), atol=1e-5)
    np.testing.assert_array_equal(found["labels"], np.arange(120) % 3)
    assert (projector / "metadata.tsv").read_text().split() == [str(i % 3) for i in range(120)]
    reader = tf.train.load_checkpoint(str(projector))
    stored = reader.get_tensor("embedding/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_allclose(stored, found["mean"], atol=1e-6)
    assert "sprite.png" in (projector / "projector_config.pbtxt").read_text()
