"""keras_vae.serving.signatures: the kind-agnostic helpers of the exported graphs."""

import numpy as np
import tensorflow as tf
from scipy import stats

from keras_vae.serving import signatures


def test_tracked_module_holds_every_captured_variable_once():
    a, b = tf.Variable(1.0), tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
    def f(x):
        return a * x + b

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
    def g(x):
        return a - x

    module = signatures.tracked_module({"f": f.get_concrete_function(),
                                        "g": g.get_concrete_function()})  # fmt: skip
    assert sorted(v.numpy() for v in module.model_variables) == [1.0, 2.0]


def test_gaussian_tril_log_prob_against_scipy():
    rng = np.random.default_rng(0)
    tril = np.tril(rng.normal(size=(3, 3))) + 3 * np.eye(3)
    loc, x = rng.normal(size=3), rng.normal(size=(4, 3))
    got = signatures.gaussian_tril_log_prob(
        tf.constant(loc[None], tf.float32), tf.constant(tril[None], tf.float32),
        tf.constant(x, tf.float32),
    )  # fmt: skip
    want = stats.multivariate_normal(loc, tril @ tril.T).logpdf(x)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
