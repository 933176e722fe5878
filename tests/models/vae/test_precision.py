"""Mixed precision (`mlp_vae(precision=...)`, `keras-vae train --precision`): the bodies run
in bfloat16 or float16, the variables, heads, prior and every density in float32; float16
scales the loss. Checked against the same model in float32."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test

import keras_vae
from keras_vae.cli import commands as cli

RNG = np.random.default_rng(5)
# four prototypes with 5% of the pixels flipped: a structure the model can learn
PROTOTYPES = RNG.uniform(size=(4, 6, 5, 1)) > 0.5
X = (PROTOTYPES[RNG.integers(0, 4, 200)] ^ (RNG.uniform(size=(200, 6, 5, 1)) < 0.05)).astype(
    "float32"
)
LOW = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def _vae(precision, **kwargs):
    vae = keras_vae.mlp_vae((6, 5, 1), latent_dim=3, hidden_units=[32], seed=2,
                            precision=precision, **kwargs)  # fmt: skip
    vae.build((None, 6, 5, 1))
    return vae


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_bodies_compute_low_heads_and_densities_float32(precision):
    vae = _vae(precision, prior="vamp", prior_components=4)
    assert vae.encoder.compute_dtype == vae.decoder.compute_dtype == LOW[precision]
    for part in (vae.posterior, vae.likelihood, vae.prior):
        assert part.compute_dtype == "float32"
    assert all(v.dtype == "float32" for v in vae.weights)  # the variables stay float32
    terms = vae.elbo_terms(X[:8], seed=0)
    assert all(t.dtype == tf.float32 for t in terms)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_trains_like_float32(precision):
    losses = {}
    for name in ("float32", precision):
        keras.utils.set_random_seed(0)
        vae = _vae(name)
        vae.compile(optimizer=keras.optimizers.Adam(1e-2))
        history = vae.fit(X, batch_size=50, epochs=25, verbose=0, shuffle=False)
        losses[name] = history.history["loss"]
    assert losses[precision][-1] < 0.7 * losses[precision][0]  # it learns
    # the same model and data: the low-precision bodies change the curve only a little
    assert losses[precision][-1] == pytest.approx(losses["float32"][-1], rel=0.05)


def test_float16_scales_the_loss_and_unscales_the_gradients():
    """One SGD step (not scale-invariant, unlike Adam) moves the weights as in float32: the
    trainer scaled the loss up by the LossScaleOptimizer's factor and its apply() divided it
    out again (without the first, the step would be 2^15 times too small)."""
    models = {name: _vae(name) for name in ("float32", "mixed_float16")}
    models["mixed_float16"].set_weights(models["float32"].get_weights())
    steps = {}
    for name, vae in models.items():
        vae.compile(optimizer=keras.optimizers.SGD(0.1), steps_per_execution=1)
        before = [w.numpy().copy() for w in vae.trainable_weights]
        vae.fit(X[:50], batch_size=50, epochs=1, verbose=0, shuffle=False)
        steps[name] = np.concatenate(
            [(w.numpy() - b).ravel() for b, w in zip(before, vae.trainable_weights, strict=True)]
        )
    optimizer = models["mixed_float16"].optimizer
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(optimizer.scale_loss(tf.constant(1.0))) > 1.0
    mismatch = np.linalg.norm(steps["mixed_float16"] - steps["float32"])
    assert mismatch < 0.05 * np.linalg.norm(steps["float32"])


def test_a_mixed_model_round_trips_through_keras_files(tmp_path):
    vae = _vae("mixed_bfloat16")
    restored = run_saving_test(vae, X[:4], outputs=lambda m, x: m.encode_parameters(x))
    assert restored.encoder.compute_dtype == "bfloat16"
    assert restored.posterior.compute_dtype == "float32"


def test_unknown_precision_is_one_line():
    with pytest.raises(ValueError, match="precision must be one of"):
        _vae("float8")


def test_cli_trains_in_mixed_bfloat16_and_records_it(tmp_path, capsys):
    path = tmp_path / "toy.npz"
    np.savez(path, x=X.astype("uint8")[..., 0])
    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", str(path), "--eval-split", "train", "--latent-dim",
                     "2", "--hidden-units", "8", "--epochs", "1", "--image-every", "0",
                     "--precision", "mixed_bfloat16", "--output", str(run)]) == 0  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "mixed_bfloat16" and np.isfinite(metrics["train_elbo"])
    assert cli.main(["train", "--model", "vqvae", "--precision", "mixed_bfloat16",
                     "--output", str(tmp_path / "vq")]) == 2  # fmt: skip
    assert "precision='mixed_bfloat16' applies only to model='vae'" in capsys.readouterr().err
