"""Network bodies against NumPy, and their .keras round trip."""

import keras
import numpy as np
import pytest

from keras_vae.networks import MLP, GatedMLP


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_mlp_matches_numpy_and_keeps_leading_axes():
    body = MLP([6, 4], activation="tanh", flatten=False)
    z = np.random.default_rng(0).normal(size=(3, 5, 2)).astype("float32")
    out = body(z).numpy()
    h = z
    for layer in body.dense_layers:
        kernel, bias = layer.get_weights()
        h = np.tanh(h @ kernel + bias)
    assert out.shape == (3, 5, 4)
    np.testing.assert_allclose(out, h, atol=1e-5)


def test_gated_mlp_matches_numpy():
    body = GatedMLP([7, 5], activation="relu", flatten=True)
    x = np.random.default_rng(1).random((3, 4, 4, 1)).astype("float32")
    out = body(x).numpy()
    h = x.reshape(3, -1)
    for layer, units in zip(body.dense_layers, (7, 5), strict=True):
        kernel, bias = layer.get_weights()
        pre = h @ kernel + bias
        h = np.maximum(pre[:, :units], 0.0) * _sigmoid(pre[:, units:])
    np.testing.assert_allclose(out, h, atol=1e-5)


@pytest.mark.parametrize("body", [MLP([5], flatten=True), GatedMLP([5, 3], flatten=True)])
def test_bodies_survive_keras_round_trip(body, tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 1)), body])
    x = np.random.default_rng(2).random((2, 4, 4, 1)).astype("float32")
    model.save(tmp_path / "body.keras")
    loaded = keras.saving.load_model(tmp_path / "body.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_bad_hidden_units_are_refused():
    with pytest.raises(ValueError, match="hidden_units must be"):
        GatedMLP([0])
