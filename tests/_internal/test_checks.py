"""keras_vae._internal.checks: the argument checks answer bad values with one line that names
the argument and the value received; the tensor helpers against NumPy."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vae._internal import checks


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "3", None])
def test_positive_int(value):
    with pytest.raises(ValueError) as error:
        checks.check_positive_int("latent_dim", value)
    assert str(error.value) == (
        f"latent_dim must be a positive int. Received: latent_dim={value!r}"
    )
    assert checks.check_positive_int("latent_dim", 3) == 3


@pytest.mark.parametrize("value", [0, -1e-3, float("nan"), False, "1"])
def test_positive_float(value):
    with pytest.raises(ValueError, match=r"^scale must be a positive number. Received: scale="):
        checks.check_positive_float("scale", value)
    assert checks.check_positive_float("scale", 2) == 2.0
    assert isinstance(checks.check_positive_float("scale", 2), float)


@pytest.mark.parametrize("value", [-0.5, float("nan"), True, None])
def test_nonnegative_float(value):
    with pytest.raises(ValueError, match=r"^beta must be a number >= 0. Received: beta="):
        checks.check_nonnegative_float("beta", value)
    assert checks.check_nonnegative_float("beta", 0) == 0.0


@pytest.mark.parametrize(
    ("value", "message"),
    [((), "must be a non-empty sequence"), ("28", "positive ints only"),
     ((28, 0), "must contain positive ints only"), ((28, True), "positive ints only"),
     ((28, 2.0), "positive ints only")],
)  # fmt: skip
def test_event_shape(value, message):
    with pytest.raises(ValueError, match=message) as error:
        checks.check_event_shape(value)
    assert "\n" not in str(error.value) and "Received: event_shape=" in str(error.value)
    assert checks.check_event_shape(5) == (5,)
    assert checks.check_event_shape([28, 28, 1]) == (28, 28, 1)


def test_reshape_last_and_floored_softplus_against_numpy():
    flat = np.arange(2 * 3 * 12, dtype=np.float32).reshape(2, 3, 12)
    shaped = checks.reshape_last(tf.constant(flat), (4, 3, 1))
    np.testing.assert_array_equal(shaped, flat.reshape(2, 3, 4, 3, 1))
    raw = np.array([-30.0, -1.0, 0.0, 2.0, 40.0], np.float32)
    expected = np.logaddexp(0.0, raw.astype(np.float64)) + 1e-3
    np.testing.assert_allclose(checks.floored_softplus(raw, 1e-3), expected, rtol=1e-6)
    assert float(tf.reduce_min(checks.floored_softplus(raw, 1e-3))) >= 1e-3
