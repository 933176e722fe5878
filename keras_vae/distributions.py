"""Keras 3 layers that return TensorFlow Probability distributions.

`tfp.layers` are tf_keras (Keras 2) layers and cannot be used in Keras 3 models, so keras_vae
builds its own: each head owns a `Dense` projection from features to the distribution's
parameters and returns a `tfp.distributions.Distribution` from `call`. The parameters are also
available as plain tensors through `parameters(features)`, which is what the exported
SavedModels and TFLite files compute (a distribution object cannot cross a serving boundary).

Event dimensions are wrapped in `tfd.Independent`, so `log_prob` returns one number per
example: a posterior over a `latent_dim` vector has event shape `[latent_dim]`, a likelihood
over images has event shape `image_shape` (for example `[28, 28, 1]`).

Heads:
    DiagonalGaussianPosterior  q(z|x) = N(z; mu(x), diag(sigma(x)^2))
    BernoulliLikelihood        p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits_d(z)))
    GaussianLikelihood         p(x|z) = prod_d N(x_d; mu_d(z), sigma_d(z)^2)
    StandardNormalPrior        p(z)   = N(z; 0, I)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

_PACKAGE = "keras_vae"


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")
    return value


def _check_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")
    return float(value)


def _check_event_shape(event_shape: object) -> tuple[int, ...]:
    if isinstance(event_shape, int):
        event_shape = (event_shape,)
    if not isinstance(event_shape, Sequence) or not event_shape:
        raise ValueError(
            "event_shape must be a non-empty sequence of positive ints such as (28, 28, 1). "
            f"Received: event_shape={event_shape!r}"
        )
    for dim in event_shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(
                "event_shape must contain positive ints only. "
                f"Received: event_shape={tuple(event_shape)!r}"
            )
    return tuple(int(d) for d in event_shape)


def _reshape_last(tensor: tf.Tensor, event_shape: tuple[int, ...]) -> tf.Tensor:
    """Reshapes the last axis of `tensor` ([..., prod(event_shape)]) to `event_shape`."""
    leading = tf.shape(tensor)[:-1]
    return tf.reshape(tensor, tf.concat([leading, tf.constant(event_shape, tf.int32)], axis=0))


def _floored_softplus(raw: tf.Tensor, floor: float) -> tf.Tensor:
    """sigma = softplus(raw) + floor: positive, smooth, and never below `floor`."""
    return tf.nn.softplus(raw) + floor


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiagonalGaussianPosterior(keras.layers.Layer):
    """Gaussian posterior head with diagonal covariance, the AEVB paper's q(z|x).

    q(z|x) = N(z; mu(x), diag(sigma(x)^2)), with [mu, s] = W h + b and
    sigma = softplus(s) + min_scale. Samples are reparameterised,
    z = mu + sigma * eps with eps ~ N(0, I) (paper, section 2.4), so gradients reach the
    encoder through `sample`.

    Args:
        latent_dim: Size of z.
        min_scale: Floor added to the standard deviation; keeps log q finite.
        **kwargs: Standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Example:
        >>> head = DiagonalGaussianPosterior(latent_dim=20)
        >>> q = head(features)            # tfd.Independent(tfd.Normal), event shape [20]
        >>> z = q.sample(seed=(1, 2))     # [batch, 20]
    """

    def __init__(self, latent_dim: int, min_scale: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = _check_positive_int("latent_dim", latent_dim)
        self.min_scale = _check_positive_float("min_scale", min_scale)
        self.projection = keras.layers.Dense(2 * self.latent_dim, name="projection")

    def build(self, input_shape):
        self.projection.build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.latent_dim,)

    def parameters(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        """Returns `{"loc": mu, "scale": sigma}`, each `[..., latent_dim]`."""
        raw = self.projection(features)
        loc, raw_scale = tf.split(raw, 2, axis=-1)
        return {"loc": loc, "scale": _floored_softplus(raw_scale, self.min_scale)}

    @staticmethod
    def distribution(loc: tf.Tensor, scale: tf.Tensor) -> tfd.Distribution:
        """The distribution for given parameters, event shape `[latent_dim]`."""
        return tfd.Independent(tfd.Normal(loc=loc, scale=scale), reinterpreted_batch_ndims=1)

    def call(self, features):
        return self.distribution(**self.parameters(features))

    def get_config(self):
        config = super().get_config()
        config.update({"latent_dim": self.latent_dim, "min_scale": self.min_scale})
        return config


class _ImageLikelihood(keras.layers.Layer):
    """Shared plumbing of the likelihood heads: event shape and the output projection."""

    #: how many numbers per pixel the projection produces
    _params_per_pixel = 1

    def __init__(self, event_shape: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.event_shape = _check_event_shape(event_shape)
        self.event_size = math.prod(self.event_shape)
        self.projection = keras.layers.Dense(
            self._params_per_pixel * self.event_size, name="projection"
        )

    def build(self, input_shape):
        self.projection.build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + self.event_shape

    def call(self, features):
        return self.distribution(**self.parameters(features))

    def mean(self, features: tf.Tensor) -> tf.Tensor:
        """E[x|z], shape `[..., *event_shape]`."""
        return self.distribution(**self.parameters(features)).mean()

    def get_config(self):
        config = super().get_config()
        config.update({"event_shape": list(self.event_shape)})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BernoulliLikelihood(_ImageLikelihood):
    """Bernoulli likelihood head for binary images (the paper's MNIST decoder).

    log p(x|z) = sum_d [x_d log y_d + (1 - x_d) log(1 - y_d)],  y = sigmoid(W h + b)
    (paper, appendix C.1). Computed from the logits, which is exact and stable for any logit.

    Args:
        event_shape: Image shape, for example `(28, 28, 1)`.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def parameters(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        """Returns `{"logits": l}` with shape `[..., *event_shape]`."""
        return {"logits": _reshape_last(self.projection(features), self.event_shape)}

    def distribution(self, logits: tf.Tensor) -> tfd.Distribution:
        """The distribution for given logits, event shape `event_shape`."""
        return tfd.Independent(
            tfd.Bernoulli(logits=logits, dtype=logits.dtype),
            reinterpreted_batch_ndims=len(self.event_shape),
        )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GaussianLikelihood(_ImageLikelihood):
    """Gaussian likelihood head with a learned variance per pixel (the paper's Frey Face decoder).

    log p(x|z) = sum_d log N(x_d; mu_d, sigma_d^2), with [m, s] = W h + b,
    mu = sigmoid(m) (or m when `mean_activation="linear"`) and
    sigma = softplus(s) + min_scale (paper, appendix C.2, where the decoder's means are
    constrained to (0, 1) by a sigmoid and the variance is an output of the network).

    Args:
        event_shape: Image shape, for example `(28, 20, 1)`.
        min_scale: Floor added to every standard deviation. On data with discrete grey levels
            a Gaussian can shrink its variance without bound; the floor bounds the density.
        mean_activation: `"sigmoid"` (means in (0, 1), for pixels in [0, 1]) or `"linear"`.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    _params_per_pixel = 2
    _MEAN_ACTIVATIONS = ("sigmoid", "linear")

    def __init__(
        self,
        event_shape: Sequence[int],
        min_scale: float = 1e-2,
        mean_activation: str = "sigmoid",
        **kwargs,
    ):
        super().__init__(event_shape, **kwargs)
        self.min_scale = _check_positive_float("min_scale", min_scale)
        if mean_activation not in self._MEAN_ACTIVATIONS:
            raise ValueError(
                f"mean_activation must be one of {self._MEAN_ACTIVATIONS}. "
                f"Received: mean_activation={mean_activation!r}"
            )
        self.mean_activation = mean_activation

    def parameters(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        """Returns `{"loc": mu, "scale": sigma}`, each `[..., *event_shape]`."""
        raw_loc, raw_scale = tf.split(self.projection(features), 2, axis=-1)
        loc = tf.sigmoid(raw_loc) if self.mean_activation == "sigmoid" else raw_loc
        scale = _floored_softplus(raw_scale, self.min_scale)
        return {
            "loc": _reshape_last(loc, self.event_shape),
            "scale": _reshape_last(scale, self.event_shape),
        }

    def distribution(self, loc: tf.Tensor, scale: tf.Tensor) -> tfd.Distribution:
        """The distribution for given parameters, event shape `event_shape`."""
        return tfd.Independent(
            tfd.Normal(loc=loc, scale=scale), reinterpreted_batch_ndims=len(self.event_shape)
        )

    def get_config(self):
        config = super().get_config()
        config.update({"min_scale": self.min_scale, "mean_activation": self.mean_activation})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StandardNormalPrior(keras.layers.Layer):
    """The standard normal prior p(z) = N(z; 0, I) over a `latent_dim` vector.

    It has no weights. `call(inputs)` ignores its input (Keras layers need one) and returns the
    same distribution as `distribution()`; the input only lets the prior compose like the other
    heads.

    Args:
        latent_dim: Size of z.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = _check_positive_int("latent_dim", latent_dim)
        self.built = True  # no weights to create

    def distribution(self) -> tfd.Distribution:
        """N(0, I) with event shape `[latent_dim]`."""
        zeros = tf.zeros([self.latent_dim], dtype=self.compute_dtype)
        return tfd.Independent(
            tfd.Normal(loc=zeros, scale=tf.ones_like(zeros)), reinterpreted_batch_ndims=1
        )

    def call(self, inputs=None):
        return self.distribution()

    def get_config(self):
        config = super().get_config()
        config.update({"latent_dim": self.latent_dim})
        return config
