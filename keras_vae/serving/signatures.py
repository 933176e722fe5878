"""Kind-agnostic helpers of the exported graphs: the module that a SavedModel tracks, concrete
functions of plain tensors, and log-densities in TFLite-builtin ops.

A kind's signatures (`keras_vae.models.vae.signatures`, `keras_vae.models.vqvae.export`)
compute plain tensors through the model's layers and heads, never return TFP objects, and draw
their randomness with `tf.random` ops (TFLite builtins RANDOM_STANDARD_NORMAL /
RANDOM_UNIFORM; `keras.random` would export stateless ops that TFLite lacks).

Log-densities are the parts' own distributions' `log_prob`, except for the two TFP
computations that TFLite builtins lack (MatrixTriangularSolve, MatrixDiagPartV3): the
full-covariance Gaussian, alone or as the components of a mixture, goes through
`plain_log_prob` (forward substitution unrolled over the static latent size).
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

ConcreteFunction = tf.types.experimental.ConcreteFunction


def tracked_module(functions: dict[str, ConcreteFunction]) -> tf.Module:
    """A `tf.Module` that tracks the raw variables the signature functions capture.

    (A module that tracks Keras 3 layers loads with `tf.saved_model.load`, but the graph-mode
    loader of TF Serving does not find its variables: keras-team/keras#20095.)
    """
    module = tf.Module()
    variables = {id(v): v for fn in functions.values() for v in fn.variables}
    module.model_variables = list(variables.values())
    return module


def as_float32(tensors: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The tensors cast to float32 (a mixed-precision body computes in bfloat16/float16)."""
    return {name: tf.cast(value, tf.float32) for name, value in tensors.items()}


def function(fn, *specs: tf.TensorSpec) -> ConcreteFunction:
    """The concrete function of `fn` at `specs`, AutoGraph off: the graphs are straight-line
    code, and AutoGraph fails on some heads."""
    return tf.function(fn, input_signature=list(specs), autograph=False).get_concrete_function()


# ----------------------------------------------------------------------- log-densities
def _diagonal(matrix: tf.Tensor) -> tf.Tensor:
    """The diagonal of `[..., D, D]` as `[..., D]` (MatrixDiagPart is no TFLite builtin)."""
    size = int(matrix.shape[-1])
    return tf.reduce_sum(matrix * tf.eye(size, dtype=matrix.dtype), axis=-1)


def _forward_substitution(tril: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """y with L y = b, L lower-triangular `[..., D, D]`, b `[..., D]` (broadcasting):
    y_i = (b_i - sum_{j<i} L_ij y_j) / L_ii, unrolled over the static D."""
    size = int(tril.shape[-1])
    ys: list[tf.Tensor] = []
    for i in range(size):
        rest = b[..., i]
        if ys:
            rest -= tf.reduce_sum(tril[..., i, :i] * tf.stack(ys, axis=-1), axis=-1)
        ys.append(rest / tril[..., i, i])
    return tf.stack(ys, axis=-1)


def gaussian_tril_log_prob(loc: tf.Tensor, scale_tril: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """log N(x; mu, L L^T) = -1/2 |L^-1 (x - mu)|^2 - sum_j log L_jj - D/2 log(2 pi)."""
    size = int(loc.shape[-1])
    y = _forward_substitution(scale_tril, x - loc)
    log_det = tf.reduce_sum(tf.math.log(_diagonal(scale_tril)), axis=-1)
    return (
        -0.5 * tf.reduce_sum(tf.square(y), axis=-1) - log_det - 0.5 * size * math.log(2 * math.pi)
    )


def plain_log_prob(distribution, x: tf.Tensor) -> tf.Tensor:
    """`distribution.log_prob(x)`, with TFLite-builtin ops where TFP's need others.

    A full-covariance Gaussian (`tfd.MultivariateNormalTriL`) uses `gaussian_tril_log_prob`;
    a `tfd.MixtureSameFamily` recurses into its components,
    log p(x) = logsumexp_k [log_softmax(logits)_k + log p_k(x)]; anything else is asked.
    """
    if isinstance(distribution, tfd.MultivariateNormalTriL):
        tril = distribution.scale.to_dense()
        return gaussian_tril_log_prob(distribution.loc, tril, x)
    if isinstance(distribution, tfd.MixtureSameFamily):
        components = distribution.components_distribution
        log_weights = tf.nn.log_softmax(distribution.mixture_distribution.logits_parameter())
        per_component = plain_log_prob(components, x[..., None, :])
        return tf.reduce_logsumexp(log_weights + per_component, axis=-1)
    return distribution.log_prob(x)
