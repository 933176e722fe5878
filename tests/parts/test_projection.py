"""`exact_projection`: W h + b with the matmul in the compute dtype, the bias added in float32."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vae.parts.projection import exact_projection

# a bias that bfloat16 and float16 cannot hold (1 + 2^-12): added in the compute dtype it
# would round to 1
BIAS = 1.0 + 2.0**-12


def _dense(dtype_policy: str) -> keras.layers.Dense:
    dense = keras.layers.Dense(3, dtype=dtype_policy, bias_initializer="ones")
    dense.build((None, 4))
    dense.bias.assign(np.full(3, BIAS, np.float32))
    return dense


def _round(values: np.ndarray, dtype: str) -> np.ndarray:
    return tf.cast(tf.cast(values, dtype), tf.float32).numpy().astype(np.float64)


def test_float32_policy_is_the_dense_layer():
    dense = _dense("float32")
    h = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    out = exact_projection(dense, tf.constant(h), "float32")
    assert out.dtype == tf.float32
    expected = h.astype(np.float64) @ dense.kernel.numpy() + BIAS
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("compute", ["bfloat16", "float16"])
def test_mixed_policy_matmul_in_the_compute_dtype_bias_exact(compute):
    dense = _dense(f"mixed_{compute}")
    h = np.random.default_rng(1).normal(size=(2, 5, 4)).astype(np.float32)  # [samples, batch, .]
    out = exact_projection(dense, tf.constant(h), compute)
    assert out.dtype == tf.float32 and out.shape == (2, 5, 3)
    # the reference: inputs and kernel rounded to the compute dtype, products summed exactly
    # (the matmul's float32 accumulation differs from it by far less than the rounding)
    low = _round(h, compute) @ _round(dense.kernel.numpy(), compute)
    np.testing.assert_allclose(out.numpy() - BIAS, low, rtol=2e-2, atol=2e-2)
    # the bias is the float32 one: what is left after the matmul's part is BIAS to float32
    # precision, not 1 (BIAS in the compute dtype)
    matmul_only = exact_projection(_zero_bias(dense), tf.constant(h), compute).numpy()
    np.testing.assert_allclose(out.numpy() - matmul_only, BIAS, rtol=0, atol=4e-7)


def _zero_bias(dense: keras.layers.Dense) -> keras.layers.Dense:
    twin = keras.layers.Dense(3, dtype=dense.dtype_policy)
    twin.build((None, 4))
    twin.kernel.assign(dense.kernel)
    twin.bias.assign(np.zeros(3, np.float32))
    return twin


def test_builds_an_unbuilt_layer():
    dense = keras.layers.Dense(2, dtype="mixed_bfloat16")
    out = exact_projection(dense, tf.ones((3, 4)), "bfloat16")
    assert dense.built and out.shape == (3, 2) and out.dtype == tf.float32
