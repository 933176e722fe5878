"""Fused steps (`ExactReplicaTrainer.make_train_function`): k steps in one XLA computation
train exactly as Keras' own loop of one XLA computation per step."""

import keras
import numpy as np
import pytest

from keras_vae import mlp_vae

# 2,230 examples in batches of 100: 22 full batches and a short one of 30, so that with
# steps_per_execution 10 an epoch has two fused executions and one that ends early
X = (np.random.default_rng(0).uniform(size=(2230, 6, 5, 1)) > 0.5).astype("float32")


def _train(fuse_steps: bool, steps_per_execution: int = 10, make_objective=None, epochs=2):
    keras.utils.set_random_seed(0)
    # the objective is made after the seed: FactorVAE's discriminator draws its initial weights
    objective = make_objective() if make_objective is not None else None
    model = mlp_vae((6, 5, 1), latent_dim=3, hidden_units=[16], seed=1, objective=objective)
    model.fuse_steps = fuse_steps
    model.compile(keras.optimizers.Adam(1e-2), steps_per_execution=steps_per_execution)
    history = model.fit(X, batch_size=100, epochs=epochs, shuffle=False, verbose=0).history
    return model, history


# IWAE with `-m long` (18 s): in CI, FactorVAE here and the conditional VAE's pairs
# (tests/models/vae/test_conditional.py) check the fused loop against Keras' step by step
@pytest.mark.parametrize("objective", [pytest.param("iwae", marks=pytest.mark.long), "factorvae"])
def test_fused_steps_train_exactly_like_keras_step_loop(objective):
    # the fused loop runs the model's own train step k times: IWAE with K = 3 draws noise of
    # several samples per step; FactorVAE's discriminator takes its own Adam step in it too
    from keras_vae.parts.factor_vae import FactorVAE
    from keras_vae.parts.objectives import IWAE

    make = {
        "iwae": lambda: IWAE(3),
        "factorvae": lambda: FactorVAE(discriminator_units=[8], discriminator_learning_rate=0.01),
    }[objective]
    epochs = 1 if objective == "factorvae" else 2  # (one epoch has both kinds of execution)
    fused, fused_history = _train(True, make_objective=make, epochs=epochs)
    plain, plain_history = _train(False, make_objective=make, epochs=epochs)
    assert fused._fuses_steps() and not plain._fuses_steps()
    assert int(fused.optimizer.iterations) == int(plain.optimizer.iterations) == 23 * epochs
    if fused.auxiliary_layer is not None:  # one discriminator step per model step
        assert int(fused.auxiliary_layer.optimizer.iterations) == 23
    for a, b in zip(fused.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert fused_history == plain_history
    assert np.all(np.isfinite(fused_history["loss"]))


def test_fused_steps_only_with_xla_and_several_steps_per_execution():
    model = mlp_vae((6, 5, 1), latent_dim=3, hidden_units=[16], seed=1)
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=False, steps_per_execution=10)
    assert not model._fuses_steps()
    model.compile(keras.optimizers.Adam(1e-2), steps_per_execution=1)
    assert not model._fuses_steps()
    model.compile(keras.optimizers.Adam(1e-2), steps_per_execution=4)
    assert model._fuses_steps()
    # other inputs than a dataset iterator go to Keras' own function
    logs = model.train_on_batch(X[:100], return_dict=True)
    assert np.isfinite(logs["loss"])


def test_models_with_convolutions_keep_one_xla_launch_per_step():
    # XLA on CPU runs convolutions inside a while loop many times slower (jax-ml/jax#12868)
    conv = mlp_vae((8, 8, 1), latent_dim=2, hidden_units=[8], network="conv", seed=1)
    conv.compile(keras.optimizers.Adam(1e-2), steps_per_execution=4)
    assert not conv._fuses_steps()
    logs = conv.fit(X[:200, :1, :1].repeat(8, 1).repeat(8, 2), batch_size=50, verbose=0)
    assert np.all(np.isfinite(logs.history["loss"]))
    dense = mlp_vae((8, 8, 1), latent_dim=2, hidden_units=[8], seed=1)
    dense.compile(keras.optimizers.Adam(1e-2), steps_per_execution=4)
    assert dense._fuses_steps()


@pytest.mark.parametrize("fuse_steps", [True, False])
def test_an_unbuilt_model_traces_its_train_step_once(fuse_steps, monkeypatch):
    """`fit` builds the model (and Adam's slots) before the first trace: a `tf.function`
    whose first trace creates variables is traced again, and the step with it."""
    import tensorflow as tf

    from keras_vae.engine.trainer import ExactReplicaTrainer

    traces, created_in_graph = [], []
    step = ExactReplicaTrainer.train_step
    monkeypatch.setattr(
        ExactReplicaTrainer, "train_step", lambda self, data: traces.append(1) or step(self, data)
    )

    def creator(next_creator, **kwargs):
        created_in_graph.append(tf.inside_function())
        return next_creator(**kwargs)

    model = mlp_vae((6, 5, 1), latent_dim=3, hidden_units=[16], seed=1)
    model.fuse_steps = fuse_steps
    model.compile(keras.optimizers.Adam(1e-2), steps_per_execution=10)
    assert not model.built
    with tf.variable_creator_scope(creator):
        model.fit(X[:1000], batch_size=100, epochs=1, shuffle=False, verbose=0)  # 10 full steps
    assert created_in_graph and not any(created_in_graph)
    assert len(traces) == 1 and model._fuses_steps() == fuse_steps
