"""keras_vae.workflows.encode (`keras-vae encode`): the written representation equals what the
run's model computes, with the data's labels and a TensorBoard Projector view."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_vae.cli import commands as cli
from keras_vae.runs import directory as runs
from keras_vae.runs.config import ConfigError
from keras_vae.workflows import encode


def test_encode_writes_the_posterior_and_the_projector(labelled_run, tmp_path):
    projector = tmp_path / "projector"
    assert cli.main(["encode", str(labelled_run / "run"), str(labelled_run / "toy.npz"),
                     "--output", str(tmp_path / "z.npz"), "--projector",
                     str(projector)]) == 0  # fmt: skip
    found = np.load(tmp_path / "z.npz")
    model = runs.load_model(labelled_run / "run" / runs.MODEL_FILE)
    x = np.load(labelled_run / "toy.npz")["x"]
    np.testing.assert_allclose(found["mean"], model.encode(x).mean(), atol=1e-5)
    np.testing.assert_array_equal(found["labels"], np.arange(120) % 3)
    assert (projector / "metadata.tsv").read_text().split() == [str(i % 3) for i in range(120)]
    reader = tf.train.load_checkpoint(str(projector))
    stored = reader.get_tensor("embedding/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_allclose(stored, found["mean"], atol=1e-6)
    assert "sprite.png" in (projector / "projector_config.pbtxt").read_text()


def test_a_split_of_the_runs_data_with_a_limit(labelled_run, tmp_path):
    arrays, images, labels = encode.encode_run(labelled_run / "run", "train", limit=7)
    model = runs.load_model(labelled_run / "run" / runs.MODEL_FILE)
    q = model.encode(images)
    assert len(images) == len(labels) == 7 and images.shape[1:] == (6, 6, 1)
    np.testing.assert_allclose(arrays["mean"], q.mean(), atol=1e-6)
    np.testing.assert_allclose(arrays["scale"], q.stddev(), atol=1e-6)
    with pytest.raises(ConfigError, match="--limit must be a positive int"):
        encode.encode_run(labelled_run / "run", "train", limit=0)
    with pytest.raises(ConfigError, match=r"--output must end in .npz"):
        encode.write_npz(tmp_path / "z.csv", arrays, labels)


def test_the_data_are_streamed_a_batch_at_a_time(labelled_run, monkeypatch):
    """The kind sees at most ENCODE_BATCH images per call, in order; the representations and
    labels cover every image; only the first PROJECTOR_MAX images are kept."""
    from keras_vae.models.kind import kind_of

    monkeypatch.setattr(encode, "ENCODE_BATCH", 50)
    monkeypatch.setattr(encode, "PROJECTOR_MAX", 70)
    model, config = runs.load_run(labelled_run / "run")
    kind_class = type(kind_of(config))
    sizes = []
    original = kind_class.encode

    def counting(self, model, images, labels=None):
        sizes.append(len(images))
        return original(self, model, images, labels)

    monkeypatch.setattr(kind_class, "encode", counting)
    arrays, images, labels = encode.encode_run(labelled_run / "run", str(labelled_run / "toy.npz"))
    x = np.load(labelled_run / "toy.npz")["x"]
    assert sizes == [50, 50, 20]
    np.testing.assert_allclose(arrays["mean"], model.encode(x).mean(), atol=1e-5)
    np.testing.assert_array_equal(images, x[:70])
    np.testing.assert_array_equal(labels, np.arange(120) % 3)
