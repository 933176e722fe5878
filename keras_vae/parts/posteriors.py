"""Posterior heads q(z|x): features -> a reparameterisable distribution over z.

A posterior head declares its parameters as data and owns its reparameterised sample:

* `parameters(features)` returns named tensors (what an exported encoder outputs);
* `distribution(**parameters)` builds the `tfd` distribution from them;
* `reparameterize(parameters, eps)` maps standard normal noise eps `[..., noise_size]` to z,
  so gradients reach the encoder through z, and the trainer can draw eps itself (the same eps
  for an example whatever the replica layout, see `keras_vae.trainer`).

Under a mixed policy (`dtype="mixed_bfloat16"`) a head's projection computes in the low
precision and its parameters come out in float32 (`Posterior._project`).

Heads:
    DiagonalGaussianPosterior  q(z|x) = N(z; mu(x), diag(sigma(x)^2)),  z = mu + sigma * eps
    FullCovariancePosterior    q(z|x) = N(z; mu(x), L(x) L(x)^T),       z = mu + L eps
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import registry
from keras_vae._internal.checks import check_positive_float, check_positive_int, floored_softplus

tfd = tfp.distributions


class Posterior(keras.layers.Layer):
    """Base class of posterior heads; see the module docstring for the contract."""

    def __init__(self, latent_dim: int, min_scale: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.min_scale = check_positive_float("min_scale", min_scale)

    @property
    def noise_size(self) -> int:
        """How many standard normal numbers one sample of z needs."""
        return self.latent_dim

    def build(self, input_shape):
        if not self.projection.built:  # `parameters()` before the first call builds it
            self.projection.build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.latent_dim,)

    def call(self, features):
        return self.distribution(**self.parameters(features))

    def _project(self, features: tf.Tensor) -> tf.Tensor:
        """W h + b in the head's compute dtype (bfloat16 under `mixed_bfloat16`: the matmul),
        cast to its variable dtype (float32) before any softplus, exp or density: the
        parameters, z, the KL and log q are float32 whatever the policy."""
        return tf.cast(self.projection(features), self.variable_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"latent_dim": self.latent_dim, "min_scale": self.min_scale})
        return config


@registry.register("posterior", "diagonal")
class DiagonalGaussianPosterior(Posterior):
    """Gaussian posterior head with diagonal covariance, the AEVB paper's q(z|x).

    q(z|x) = N(z; mu(x), diag(sigma(x)^2)), with [mu, s] = W h + b and
    sigma = softplus(s) + min_scale. Samples are reparameterised,
    z = mu + sigma * eps with eps ~ N(0, I) (paper, section 2.4).

    Args:
        latent_dim: Size of z.
        min_scale: Floor added to the standard deviation; keeps log q finite.
        **kwargs: Standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Example:
        >>> head = DiagonalGaussianPosterior(latent_dim=20)
        >>> q = head(features)            # tfd.Independent(tfd.Normal), event shape [20]
        >>> z = head.reparameterize(head.parameters(features), eps)
    """

    def __init__(self, latent_dim: int, min_scale: float = 1e-4, **kwargs):
        super().__init__(latent_dim, min_scale, **kwargs)
        self.projection = keras.layers.Dense(
            2 * self.latent_dim, name="projection", dtype=self.dtype_policy
        )

    def parameters(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        """Returns `{"loc": mu, "scale": sigma}`, each `[..., latent_dim]`."""
        loc, raw_scale = tf.split(self._project(features), 2, axis=-1)
        return {"loc": loc, "scale": floored_softplus(raw_scale, self.min_scale)}

    @staticmethod
    def distribution(loc: tf.Tensor, scale: tf.Tensor) -> tfd.Distribution:
        """The distribution for given parameters, event shape `[latent_dim]`."""
        return tfd.Independent(tfd.Normal(loc=loc, scale=scale), reinterpreted_batch_ndims=1)

    @staticmethod
    def reparameterize(parameters: dict[str, tf.Tensor], eps: tf.Tensor) -> tf.Tensor:
        """z = mu + sigma * eps; eps `[..., batch, latent_dim]` broadcasts over leading axes."""
        return parameters["loc"] + parameters["scale"] * tf.cast(eps, parameters["loc"].dtype)


def _tril_indices(size: int) -> np.ndarray:
    """Gather indices that place a vector of size(size + 1)/2 numbers (and a trailing zero)
    into a row-major lower-triangular `[size, size]` matrix."""
    count = size * (size + 1) // 2
    index = np.full((size, size), count, dtype=np.int32)  # `count` points at the zero
    rows, cols = np.tril_indices(size)
    index[rows, cols] = np.arange(count, dtype=np.int32)
    return index.reshape(-1)


@registry.register("posterior", "full")
class FullCovariancePosterior(Posterior):
    """Gaussian posterior head with a full covariance given by its Cholesky factor.

    q(z|x) = N(z; mu(x), L(x) L(x)^T), L lower-triangular with diagonal
    softplus(d) + min_scale > 0 and free entries below it; z = mu + L eps, eps ~ N(0, I).
    The head predicts latent_dim + latent_dim (latent_dim + 1) / 2 numbers per example.
    Its KL to a standard normal prior has the closed form
    1/2 [tr(L L^T) + mu^T mu - latent_dim - 2 sum_j log L_jj].

    Args:
        latent_dim: Size of z.
        min_scale: Floor added to the diagonal of L.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, latent_dim: int, min_scale: float = 1e-4, **kwargs):
        super().__init__(latent_dim, min_scale, **kwargs)
        size = self.latent_dim
        self.projection = keras.layers.Dense(
            size + size * (size + 1) // 2, name="projection", dtype=self.dtype_policy
        )
        self._tril_index = _tril_indices(size)
        self._loc_mask = (np.arange(self.projection.units) < size).astype(np.float32)
        self._diagonal = np.eye(size, dtype=np.float32)
        self._below_diagonal = np.tril(np.ones((size, size), np.float32), -1)

    def parameters(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        """Returns `{"loc": mu [..., D], "scale_tril": L [..., D, D]}`.

        With [mu, e] = W h + b and E the entries e placed row-major into the lower triangle
        (zeros above), L = E * (strictly lower mask) + (softplus(E) + min_scale) * I.

        Quantization-friendly: every step that changes the range of values is a product or
        a sum, which an int8 converter gives its own scale. Slices, gathers, reshapes and
        `tf.where` must keep the scale of their input; on the raw projection they would tie
        mu to the narrower range of L (or of its entries) and clip mu. Multiplying by 0/1
        masks first, and by the diagonal masks instead of `tf.where`, is exact in float.
        """
        size = self.latent_dim
        raw = self._project(features)
        loc_mask = tf.constant(self._loc_mask, raw.dtype)
        loc = (raw * loc_mask)[..., :size]
        entries = (raw * (1 - loc_mask))[..., size:]
        padded = tf.concat([entries, tf.zeros_like(entries[..., :1])], axis=-1)
        tril = tf.gather(padded, self._tril_index, axis=-1)
        tril = tf.reshape(tril, tf.concat([tf.shape(raw)[:-1], [size, size]], axis=0))
        positive = floored_softplus(tril, self.min_scale)
        below, diagonal = (
            tf.constant(m, raw.dtype) for m in (self._below_diagonal, self._diagonal)
        )
        return {"loc": loc, "scale_tril": tril * below + positive * diagonal}

    @staticmethod
    def distribution(loc: tf.Tensor, scale_tril: tf.Tensor) -> tfd.Distribution:
        """The distribution for given parameters, event shape `[latent_dim]`."""
        return tfd.MultivariateNormalTriL(loc=loc, scale_tril=scale_tril)

    @staticmethod
    def reparameterize(parameters: dict[str, tf.Tensor], eps: tf.Tensor) -> tf.Tensor:
        """z = mu + L eps; eps `[..., batch, latent_dim]` broadcasts over leading axes."""
        loc, tril = parameters["loc"], parameters["scale_tril"]
        return loc + tf.linalg.matvec(tril, tf.cast(eps, loc.dtype))
