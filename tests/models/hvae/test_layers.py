"""keras_vae.models.hvae.layers: the gated dense layer, the unit softplus, the bounded scale
(value, range and gradient), the MLP bottom-up pass and the residual cell against NumPy; the
cells' `log_scale_bound` round trip; one-line errors for bad shapes and bounds."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test

from keras_vae.models.hvae.layers import (
    SOFTPLUS_ONE,
    ConvBottomUp,
    ConvTopDownCell,
    GatedDense,
    MLPBottomUp,
    MLPTopDownCell,
    ResidualCell,
    bounded_scale,
    check_shape,
    unit_softplus,
)

RNG = np.random.default_rng(31)


def test_gated_dense_is_value_times_sigmoid_gate():
    layer = GatedDense(3, activation="tanh")
    x = RNG.normal(size=(4, 5)).astype("float32")
    layer.build(x.shape)
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    bias += RNG.normal(size=bias.shape).astype("float32")
    layer.set_weights([kernel, bias])
    pre = x @ kernel + bias
    expected = np.tanh(pre[:, :3]) / (1.0 + np.exp(-pre[:, 3:]))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)
    run_saving_test(layer, x, lambda part, inputs: part(inputs))


def test_unit_softplus_is_one_plus_the_floor_at_zero():
    raw = np.array([-3.0, 0.0, 2.5], np.float32)
    expected = np.log1p(np.exp(raw + np.log(np.e - 1.0))) + 0.01
    np.testing.assert_allclose(unit_softplus(raw, 0.01), expected, rtol=1e-6)
    assert float(unit_softplus(np.float32(0.0), 0.01)) == pytest.approx(1.01, rel=1e-6)
    assert SOFTPLUS_ONE == pytest.approx(0.5413248546)


@pytest.mark.parametrize("bound", [5.0, 2.0])
def test_bounded_scale_stays_inside_its_bounds_with_a_finite_gradient(bound):
    raw = tf.constant([-1e4, -60.0, -5.0, -0.3, 0.0, 0.7, 4.0, 60.0, 1e4], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(raw)
        scale = bounded_scale(raw, bound)
    gradient = tape.gradient(scale, raw).numpy()
    r, t = raw.numpy(), np.tanh(raw.numpy() / bound)
    np.testing.assert_allclose(scale.numpy(), np.exp(bound * t), rtol=1e-12)
    # log sigma in [-b, b] (reached only in floating point, at |raw| >> b), 1 at raw = 0
    assert np.all(np.abs(np.log(scale.numpy())) <= bound) and scale.numpy()[4] == 1.0
    # d sigma / d raw = sigma (1 - tanh^2(raw / b)): finite, 1 at raw = 0, 0 only far out
    expected = np.exp(bound * t) / np.cosh(r / bound) ** 2  # (1 - tanh^2 loses digits far out)
    np.testing.assert_allclose(gradient, expected, rtol=1e-9, atol=1e-10)
    assert np.all(np.isfinite(gradient)) and gradient[4] == 1.0
    assert np.all(gradient[2:7] > 0) and np.all(gradient[[0, -1]] == 0)


def _cells(bound):
    return [
        MLPTopDownCell(3, [4], log_scale_bound=bound, name="cell"),
        ConvTopDownCell((4, 4, 2), (2, 2, 1), filters=3, log_scale_bound=bound, name="cell"),
    ]


def test_top_down_cells_round_trip_their_bound_and_read_older_configs_as_softplus():
    for cell, default in zip(_cells(2.5), _cells(None), strict=True):
        config = cell.get_config()
        assert type(cell).from_config(config).log_scale_bound == 2.5
        assert type(cell).from_config({**config, "log_scale_bound": None}).log_scale_bound is None
        del config["log_scale_bound"]  # a cell saved before the bound existed: softplus
        assert type(cell).from_config(config).log_scale_bound is None
        assert type(default)(**{**config, "log_scale_bound": 5.0}).log_scale_bound == 5.0
    assert MLPTopDownCell(3).log_scale_bound == 5.0  # NVAE's bound, the default


def test_a_cells_prior_scale_saturates_at_exp_minus_the_bound():
    state = np.zeros((2, 4), np.float32)
    for bound, floor in ((5.0, np.exp(-5.0)), (None, 1e-4)):
        cell = MLPTopDownCell(3, [4], log_scale_bound=bound)
        cell.prior_projection.build((None, 4))
        cell.prior_projection.set_weights([np.zeros((4, 6)), np.full(6, -1e3)])
        _, scale = cell.prior_parameters(state)
        np.testing.assert_allclose(scale.numpy(), floor, rtol=1e-5)


@pytest.mark.parametrize("value", [0, -1.0, True, "5", float("nan")])
def test_bad_log_scale_bounds_are_refused_in_one_line(value):
    with pytest.raises(ValueError, match="log_scale_bound must be a positive number") as error:
        MLPTopDownCell(3, log_scale_bound=value)
    assert "\n" not in str(error.value)


def test_mlp_bottom_up_features_are_each_blocks_output():
    layer = MLPBottomUp([[5, 4], [3]], activation="tanh", name="bottom_up")
    x = RNG.uniform(size=(2, 3, 2, 1)).astype("float32")
    layer.build(x.shape)
    d1, d2 = (np.asarray(d) for d in layer(x))
    h = x.reshape(2, -1)
    for dense in layer.blocks[0]:
        kernel, bias = dense.get_weights()
        h = np.tanh(h @ kernel + bias)
    np.testing.assert_allclose(d1, h, rtol=1e-5, atol=1e-6)
    kernel, bias = layer.blocks[1][0].get_weights()
    np.testing.assert_allclose(d2, np.tanh(h @ kernel + bias), rtol=1e-5, atol=1e-6)


def test_an_empty_bottom_up_block_passes_the_features_below_on():
    layer = MLPBottomUp([[5], []], activation="tanh", name="bottom_up")
    x = RNG.uniform(size=(2, 3, 2, 1)).astype("float32")
    layer.build(x.shape)
    d1, d2 = (np.asarray(d) for d in layer(x))
    kernel, bias = layer.blocks[0][0].get_weights()
    np.testing.assert_allclose(d1, np.tanh(x.reshape(2, -1) @ kernel + bias), rtol=1e-5)
    np.testing.assert_array_equal(d2, d1)


@pytest.mark.parametrize("skip", [False, True])
def test_a_skip_cell_carries_its_input_past_its_dense_layers(skip):
    cell = MLPTopDownCell(3, [4], activation="tanh", skip=skip)
    z_above = RNG.normal(size=(2, 2)).astype("float32")
    state = RNG.normal(size=(2, 5)).astype("float32")
    h = np.asarray(cell(z_above, state=state))
    kernel, bias = cell.state_layers[0].get_weights()
    inputs = np.concatenate([z_above, state], axis=-1)
    expected = np.tanh(inputs @ kernel + bias)
    expected = np.concatenate([expected, inputs], axis=-1) if skip else expected
    np.testing.assert_allclose(h, expected, rtol=1e-5, atol=1e-6)
    config = cell.get_config()
    assert MLPTopDownCell.from_config(config).skip is skip
    del config["skip"]  # a cell saved before the option: no skip
    assert MLPTopDownCell.from_config(config).skip is False


def test_a_residual_cell_starts_as_the_identity():
    cell = ResidualCell(kernel_size=3, activation="elu")
    x = RNG.normal(size=(2, 5, 4, 3)).astype("float32")
    cell.build(x.shape)
    np.testing.assert_array_equal(cell(x), x)  # conv_2 starts at zero
    cell.conv_2.set_weights([w + 0.1 for w in cell.conv_2.get_weights()])
    assert not np.allclose(cell(x), x)


def test_conv_bottom_up_halves_the_grid_per_level_rounding_up():
    layer = ConvBottomUp([2, 0, 1], filters=4, blocks=1)
    features = layer(np.zeros((1, 9, 7, 1), np.float32))
    # ceil(9 / 4) = 3, ceil(7 / 4) = 2; then kept; then ceil(3 / 2) = 2, ceil(2 / 2) = 1
    assert [tuple(f.shape) for f in features] == [(1, 3, 2, 4), (1, 3, 2, 4), (1, 2, 1, 4)]


@pytest.mark.parametrize("value", [(), (3, 0), (2.5,), "28", (True, 2), None])
def test_bad_shapes_are_refused_in_one_line(value):
    with pytest.raises(ValueError, match=r"latent_dims must be a non-empty list of positive") as e:
        check_shape("latent_dims", value)
    assert "\n" not in str(e.value)
    assert check_shape("latent_dims", [4, 2]) == (4, 2)
    with pytest.raises(ValueError, match="image_shape must be 3 positive ints"):
        check_shape("image_shape", (28, 28), 3)


def test_bad_downsamples_are_refused():
    with pytest.raises(ValueError, match=r"downsamples must be one int >= 0 per stochastic"):
        ConvBottomUp([2, -1])
    with pytest.raises(ValueError, match="filters must be a positive int"):
        ConvBottomUp([1], filters=0)
    assert keras.layers.Layer in type(ConvBottomUp([1])).__mro__
