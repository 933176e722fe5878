"""The training recipe options of `keras_vae.training`: learning-rate schedule, weight
averaging (EMA), time budget across a resume, sample schedule, network choice; each against
its formula."""

import math

import keras
import numpy as np
import pytest

from keras_vae.parts.networks import GatedMLP
from keras_vae.runs.config import ConfigError, TrainConfig
from keras_vae.workflows import train as training


def _config(toy_npz, **changes):
    values = dict(dataset=str(toy_npz), eval_split="train", latent_dim=2, hidden_units=[8],
                  epochs=2, batch_size=50, seed=3, image_every=0)  # fmt: skip
    return TrainConfig(**{**values, **changes})


def test_cosine_schedule_follows_its_formula(toy_npz):
    config = _config(toy_npz, lr_schedule="cosine", learning_rate=0.01, epochs=4)
    optimizer = training.make_optimizer(config, epoch_steps=25)  # T = 100 steps
    optimizer.build([keras.Variable(0.0)])
    for step in (0, 25, 50, 100):
        optimizer.iterations.assign(step)  # the schedule reads the optimizer's step
        expected = 0.01 * 0.5 * (1 + math.cos(math.pi * step / 100))
        assert float(optimizer.learning_rate) == pytest.approx(expected, abs=1e-7)


def test_weight_decay_shrinks_each_weight_by_lr_times_decay(toy_npz):
    start = np.array([2.0, -4.0], dtype="float32")
    for decay, factor in ((0.1, 1 - 0.01 * 0.1), (0.0, 1.0)):
        optimizer = training.make_optimizer(
            _config(toy_npz, learning_rate=0.01, weight_decay=decay)
        )
        weight = keras.Variable(start)
        optimizer.apply([keras.ops.zeros(2)], [weight])  # zero gradient: Adam's own step is 0
        np.testing.assert_allclose(weight.numpy(), start * factor, rtol=1e-6)


def test_global_clipnorm_scales_all_gradients_by_c_over_their_joint_norm(toy_npz):
    optimizer = training.make_optimizer(_config(toy_npz, global_clipnorm=2.0))
    grads = [np.array([3.0, 0.0], "float32"), np.array([[0.0], [4.0]], "float32")]  # norm 5
    clipped = optimizer._clip_gradients([keras.ops.convert_to_tensor(g) for g in grads])
    for got, want in zip(clipped, grads, strict=True):
        np.testing.assert_allclose(np.asarray(got), want * 2.0 / 5.0, rtol=1e-6)
    small = [keras.ops.convert_to_tensor(g / 10.0) for g in grads]  # norm 0.5: left alone
    np.testing.assert_allclose(np.asarray(optimizer._clip_gradients(small)[1]), grads[1] / 10)
    assert training.make_optimizer(_config(toy_npz)).global_clipnorm is None


def test_weight_decay_leaves_the_vamp_pseudo_inputs_alone(toy_npz):
    optimizer = training.make_optimizer(_config(toy_npz, learning_rate=0.01, weight_decay=0.1))
    start = np.array([0.5, 0.25], dtype="float32")
    weight = keras.Variable(start, name="kernel")
    pseudo = keras.Variable(start, name="pseudo_inputs")
    optimizer.apply([keras.ops.zeros(2), keras.ops.zeros(2)], [weight, pseudo])
    np.testing.assert_allclose(weight.numpy(), start * (1 - 0.01 * 0.1), rtol=1e-6)
    np.testing.assert_array_equal(pseudo.numpy(), start)


class _TracedSamples(keras.callbacks.Callback):
    """Records (epoch, samples) whenever a step is traced: the leading axis of its noise."""

    def __init__(self):
        super().__init__()
        self.seen, self.epoch = [], None

    def on_train_begin(self, logs=None):
        compute = self.model.compute_objective

        def recording(x, noise, step):
            self.seen.append((self.epoch, int(noise.shape[0])))
            return compute(x, noise, step)

        self.model.compute_objective = recording

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


class _Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:  # before its backup: the rerun resumes after epoch 1 of 3
            raise KeyboardInterrupt


@pytest.mark.parametrize("objective", ["iwae", "elbo"])
def test_start_samples_train_the_first_epochs_then_samples_also_after_a_resume(
    toy_npz, tmp_path, objective
):
    # without XLA: the traces are the point, and compiling each one costs more than the steps
    config = _config(toy_npz, objective=objective, samples=3, start_samples=1,
                     start_samples_epochs=2, epochs=3, jit_compile=False)  # fmt: skip
    first, second = _TracedSamples(), _TracedSamples()
    with pytest.raises(KeyboardInterrupt):
        training.train(config, tmp_path / "run", verbose=0, callbacks=[first, _Crash()])
    # traces (train and test steps) happen when the samples change: K = 1 from epoch 0 on
    assert sorted(set(first.seen)) == [(0, 1)]
    result = training.train(config, tmp_path / "run", verbose=0, callbacks=[second])
    assert sorted(set(second.seen)) == [(1, 1), (2, 3)]  # resumed at epoch 1: still K = 1
    assert result["epochs"] == 3 and result["model"].objective.num_samples == 3


def test_ema_final_weights_are_the_average_of_the_trained_weights(toy_npz):
    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.weights = []

        def on_train_batch_end(self, batch, logs=None):
            self.weights.append([w.copy() for w in self.model.get_weights()])

    record = Record()
    config = _config(toy_npz, ema_momentum=0.8, steps_per_execution=1, jit_compile=False)
    result = training.train(config, verbose=0, callbacks=[record])
    model = result["model"]
    variables = model.trainable_variables
    index = {id(v): i for i, v in enumerate(model.weights)}
    expected = None
    for snapshot in record.weights:  # Keras: average = w_1, then m * average + (1 - m) * w_t
        current = [snapshot[index[id(v)]] for v in variables]
        expected = (
            current
            if expected is None
            else [0.8 * e + 0.2 * c for e, c in zip(expected, current, strict=True)]
        )
    for variable, value in zip(variables, expected, strict=True):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-4, atol=1e-5)
    assert not np.allclose(variables[0].numpy(), record.weights[-1][index[id(variables[0])]])


class _KillAtTheEnd(keras.callbacks.Callback):
    def on_train_end(self, logs=None):  # after the last backup, before the run is finished
        raise KeyboardInterrupt


def test_time_budget_stops_and_a_resumed_run_trains_no_further(toy_npz, tmp_path):
    config = _config(toy_npz, epochs=50, time_budget_minutes=1e-4, jit_compile=False)  # 6 ms
    quiet = {"verbose": 0, "progress": lambda message: None}
    with pytest.raises(KeyboardInterrupt):
        training.train(config, output=tmp_path / "run", callbacks=[_KillAtTheEnd()], **quiet)
    resumed = training.train(config, output=tmp_path / "run", **quiet)
    assert resumed["resumed_from_epoch"] == 1 and resumed["epochs"] == 1
    fresh = training.train(config, **quiet)
    assert fresh["epochs"] == 1


def test_gated_network_is_built_from_the_config(toy_npz):
    model = training.build_model(_config(toy_npz, network="gated_mlp"), (6, 6, 1), "bernoulli", 4)
    assert isinstance(model.encoder, GatedMLP) and isinstance(model.decoder, GatedMLP)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
        ({"ema_momentum": 1.5}, "ema_momentum must be in"),
        ({"time_budget_minutes": 0.0}, "time_budget_minutes must be > 0"),
        ({"weight_decay": -0.1}, "weight_decay must be in"),
        ({"start_samples": 5}, "start_samples and start_samples_epochs go together"),
        ({"start_samples_epochs": 1}, "start_samples and start_samples_epochs go together"),
        ({"start_samples": 5, "start_samples_epochs": 2}, "start_samples_epochs < epochs"),
        ({"start_samples": 0, "start_samples_epochs": 1}, "a positive start_samples"),
        ({"network": "resnet"}, "network must be one of"),
    ],
)
def test_bad_recipe_options_are_refused_in_one_line(toy_npz, changes, message):
    with pytest.raises(ConfigError, match=message):
        _config(toy_npz, **changes)
