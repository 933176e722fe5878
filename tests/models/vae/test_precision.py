"""Mixed precision (`mlp_vae(precision=...)`, `keras-vae train --precision`): the bodies' and
heads' matmuls run in bfloat16 or float16; the variables, the heads' outputs, the prior and
every density in float32; float16 scales the loss; bfloat16 on CPUs trains without XLA with
the fused Adam. Checked against the same model in float32."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_mirrored_cases, run_saving_test

import keras_vae
from keras_vae.cli import commands as cli
from keras_vae.engine.fused_adam import FusedAdam

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
def test_matmuls_compute_low_heads_output_and_densities_float32(precision):
    vae = _vae(precision, prior="vamp", prior_components=4)
    # every Dense of the bodies and heads (nested layers included) computes in low precision
    dense = [layer for layer in vae._flatten_layers() if isinstance(layer, keras.layers.Dense)]
    assert len(dense) == 4  # encoder, posterior head, decoder, likelihood head
    assert all(layer.compute_dtype == LOW[precision] for layer in dense)
    assert vae.encoder(X[:8]).dtype == vae.decoder(tf.zeros((8, 3))).dtype == LOW[precision]
    assert vae.prior.compute_dtype == "float32"
    assert all(v.dtype == "float32" for v in vae.weights)  # the variables stay float32
    # the float32 islands: the heads' parameters (before softplus/exp), log-densities, bounds
    parameters = vae.encode_parameters(X[:8])
    logits = vae.likelihood.parameters(vae.decoder(parameters["loc"]))["logits"]
    assert all(t.dtype == tf.float32 for t in (*parameters.values(), logits))
    terms = vae.elbo_terms(X[:8], seed=0)
    assert all(t.dtype == tf.float32 for t in terms)


def test_keras_global_policy_gives_the_same_model():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        vae = keras_vae.mlp_vae((6, 5, 1), latent_dim=3, hidden_units=[32])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for layer in (vae, vae.encoder.dense_layers[0], vae.posterior.projection):
        assert layer.dtype_policy.name == "mixed_bfloat16"
    assert vae.prior.compute_dtype == "float32"


# float16 with `-m long` (15 s): in CI bfloat16 trains here and float16's loss scaling is
# checked on one SGD step (test_float16_scales_the_loss_and_unscales_the_gradients)
@pytest.mark.parametrize(
    "precision", ["mixed_bfloat16", pytest.param("mixed_float16", marks=pytest.mark.long)]
)
def test_trains_like_float32(precision):
    losses = {}
    for name in ("float32", precision):
        keras.utils.set_random_seed(0)
        vae = _vae(name)
        vae.compile(optimizer=keras.optimizers.Adam(1e-2))
        history = vae.fit(X, batch_size=50, epochs=25, verbose=0, shuffle=False)
        losses[name] = history.history["loss"]
        state = [v for v in vae.optimizer.variables if "int" not in v.dtype]  # not step counts
        assert all(v.dtype == "float32" for v in vae.weights + state)  # weights, m, v
    # bfloat16 on this CPU trains without XLA, with Adam fused into one op per variable
    if precision == "mixed_bfloat16":
        assert vae.xla == "off" and type(vae.optimizer) is FusedAdam
    assert np.all(np.isfinite(losses[precision]))
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
    assert restored.encoder.dense_layers[0].compute_dtype == "bfloat16"
    assert restored.posterior.projection.compute_dtype == "bfloat16"
    assert restored.prior.compute_dtype == "float32"


def test_tflite_export_of_a_mixed_model_is_refused_before_any_file(tmp_path):
    from keras_vae.models.vae import export

    vae = _vae("mixed_bfloat16")
    vae.build((None, *X.shape[1:]))
    with pytest.raises(ValueError, match=r"computes in bfloat16 .*--no-tflite"):
        export.export_vae(vae, tmp_path / "out", progress=None)
    assert not (tmp_path / "out").exists()


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
    err = capsys.readouterr().err
    assert "precision='mixed_bfloat16' applies only to model='hvae' or 'vae'" in err


MIRRORED = """
import json, sys
import numpy as np
from keras_vae.engine import distribute
distribute.configure_cpu_replicas(2)
import keras
from keras_vae import mlp_vae
from keras_vae.engine.fused_adam import FusedAdam

strategy = distribute.get_strategy("mirrored")
rng = np.random.default_rng(0)
x = (rng.uniform(size=(63, 6, 5, 1)) > 0.5).astype("float32")  # batches of 21: 11 + 10

def train(precision, strategy, optimizer):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        vae = mlp_vae((6, 5, 1), latent_dim=3, hidden_units=[16], seed=1, precision=precision)
        vae.build((None, 6, 5, 1))
        vae.compile(optimizer, jit_compile=None if precision != "float32" else False)
    loss = vae.fit(x, batch_size=21, epochs=3, shuffle=False, verbose=0).history["loss"]
    return vae, loss

def run(case):
    mirrored, loss = train(case, strategy, keras.optimizers.Adam(0.01))
    out = {"xla": mirrored.xla, "fused": type(mirrored.optimizer) is FusedAdam, "loss": loss}
    if case == "float32":  # against Keras' own Adam (a subclass is not swapped) on one device
        keep = type("KerasAdam", (keras.optimizers.Adam,), {})
        single, _ = train(case, distribute.get_strategy("default"), keep(0.01))
        out["weight_diff"] = max(float(np.abs(a - b).max())
                                 for a, b in zip(single.get_weights(), mirrored.get_weights()))
    return out
"""


@pytest.fixture(scope="module")
def mirrored():
    """One fresh process with 2 logical CPUs (set before TensorFlow starts)."""
    return run_mirrored_cases(MIRRORED, {"float32": "float32", "mixed_bfloat16": "mixed_bfloat16"})


def test_mirrored_strategy_trains_with_the_fused_adam(mirrored):
    # float32 without XLA: the fused Adam under 2 replicas gives Keras' Adam on one device
    out = mirrored["float32"]
    assert out["xla"] == "off" and out["fused"]
    assert out["weight_diff"] < 1e-5
    # bfloat16: no XLA under the strategy either (the replica step is the same code), and it
    # trains
    out = mirrored["mixed_bfloat16"]
    assert out["xla"] == "off" and out["fused"]
    assert np.all(np.isfinite(out["loss"])) and out["loss"][-1] < out["loss"][0]


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_decode_and_sample_of_a_mixed_model_give_float32_images(precision):
    """`VAE.decode` calls the likelihood layer, inside which Keras reads every variable cast
    to the compute dtype (the head's float32 bias add failed there before)."""
    low, exact = _vae(precision), _vae("float32")
    for variable, value in zip(low.weights, exact.weights, strict=True):
        variable.assign(value)
    z = np.random.default_rng(0).standard_normal((8, 3)).astype("float32")
    mean = low.decode(z).mean()
    assert mean.dtype == tf.float32
    np.testing.assert_allclose(mean.numpy(), exact.decode(z).mean().numpy(), atol=2e-2)
    assert low.sample(4, seed=0).dtype == tf.float32
