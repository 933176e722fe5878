"""`FusedAdam` (TF's one-op `ResourceApplyAdam`) against Keras' own Adam, the options that the
base optimizer applies around the update, the ones it refuses, its config, and where the
trainer swaps it in."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae.engine.fused_adam import FusedAdam, fused_equivalent

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 5)).astype("float32")
Y = RNG.normal(size=(64, 3)).astype("float32")


def _train(optimizer: keras.optimizers.Optimizer, steps: int = 8) -> np.ndarray:
    """The weights of a small tanh MLP after `steps` full-batch steps of squared error."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(3)])  # fmt: skip

    for _ in range(steps):  # eagerly: tracing would cost more than the steps
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(X) - Y) ** 2)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    return np.concatenate([w.numpy().ravel() for w in model.weights])


START = _train(keras.optimizers.SGD(0.0), steps=1)


OPTIONS = {
    "defaults": {},
    "betas, epsilon, schedule": {
        "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3,
        "learning_rate": keras.optimizers.schedules.ExponentialDecay(3e-2, 3, 0.5),
    },
    "weight decay": {"weight_decay": 0.1},
    "EMA": {"use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 4},
    "clipnorm": {"clipnorm": 0.01},
}  # fmt: skip


@pytest.mark.parametrize("name", OPTIONS)
def test_fused_adam_gives_keras_adams_update(name):
    options = {"learning_rate": 1e-2, **OPTIONS[name]}
    keras_weights = _train(keras.optimizers.Adam(**options))
    fused_weights = _train(FusedAdam(**options))
    assert np.abs(keras_weights - START).max() > 1e-2  # the steps moved the weights
    np.testing.assert_allclose(fused_weights, keras_weights, atol=3e-6, rtol=0)


def test_amsgrad_is_refused_and_keeps_keras_adam():
    with pytest.raises(ValueError, match="FusedAdam does not fuse AMSGrad"):
        FusedAdam(amsgrad=True)
    amsgrad = keras.optimizers.Adam(amsgrad=True)
    assert fused_equivalent(amsgrad) is amsgrad


def test_only_a_plain_unbuilt_adam_is_replaced():
    assert type(fused_equivalent("adam")) is FusedAdam
    adam = keras.optimizers.Adam(3e-3, clipnorm=1.0, weight_decay=0.01, use_ema=True)
    fused = fused_equivalent(adam)
    assert type(fused) is FusedAdam and fused.get_config() == adam.get_config() | {
        "name": fused.get_config()["name"]
    }
    built = keras.optimizers.Adam()
    built.build([keras.Variable(np.zeros(2, "float32"))])
    subclass = type("MyAdam", (keras.optimizers.Adam,), {})()
    sgd = keras.optimizers.SGD()
    for optimizer in (built, subclass, sgd):
        assert fused_equivalent(optimizer) is optimizer


def test_config_round_trip():
    optimizer = FusedAdam(learning_rate=2e-3, beta_1=0.8, clipnorm=0.5, weight_decay=0.01)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert type(restored) is FusedAdam
    assert restored.get_config() == optimizer.get_config()


def test_compile_swaps_it_in_where_the_update_runs_outside_xla(tmp_path):
    x = (RNG.uniform(size=(40, 4, 3, 1)) > 0.5).astype("float32")
    vae = keras_vae.mlp_vae((4, 3, 1), latent_dim=2, hidden_units=[8], seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))  # float32: XLA fuses Keras' Adam
    assert vae.xla == "step" and type(vae.optimizer) is keras.optimizers.Adam
    vae.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    assert vae.xla == "off" and type(vae.optimizer) is FusedAdam
    vae.fit(x, batch_size=20, epochs=1, verbose=0)
    # saved and restored with the model, state included: training continues where it was
    path = tmp_path / "vae.keras"
    vae.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.optimizer) is FusedAdam
    assert int(restored.optimizer.iterations) == int(vae.optimizer.iterations) == 2
    for mine, theirs in zip(vae.optimizer.variables, restored.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(theirs), np.asarray(mine))
