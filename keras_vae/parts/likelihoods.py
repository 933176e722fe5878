"""Likelihood heads p(x|z): decoder features -> a distribution over images.

Each head is registered once by name (`bernoulli`, `gaussian`, `logistic`) and knows:

* `parameters(features)`: its named parameters as tensors (what an exported decoder outputs);
* `distribution(**parameters)`: the distribution, `log_prob(x)` one number per example;
* `mean(parameters)`: E[x|z] in plain TensorFlow ops (the exported decoder's `mean`);
* `check_values(images)`, a class method: whether data suit it (None, or the problem and
  its fix in a line).

Heads:
    BernoulliLikelihood    p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits_d(z)))
    GaussianLikelihood     p(x|z) = prod_d N(x_d; mu_d(z), sigma_d(z)^2)
    DiscretizedLogisticLikelihood
                           p(x|z) = prod_d sum_m pi_dm [F((x_d + h - mu_dm) / s_dm)
                                                        - F((x_d - h - mu_dm) / s_dm)],
                           F the logistic CDF, h = 1/510 half a grey level (Salimans et al. 2017)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import registry
from keras_vae._internal.checks import (
    check_event_shape,
    check_positive_float,
    check_positive_int,
    floored_softplus,
)
from keras_vae.parts.projection import exact_projection

tfd = tfp.distributions

LEVELS = 256  # grey levels of an 8-bit pixel, k / 255 for k = 0..255


class Likelihood(keras.layers.Layer):
    """Base class of likelihood heads: event shape and the output projection.

    The projection is a `Dense` layer created in `build`, on one of two kinds of features:

    * flat `[..., F]` (an MLP decoder): `Dense(params_per_pixel * prod(event_shape))`, the
      output read pixel by pixel as each head documents;
    * spatial `[..., H, W, F]` with the event's H and W (a convolutional decoder): the same
      `Dense` on the last axis only, `params_per_pixel * C` units (C = prod(event_shape[2:])),
      which is a 1x1 convolution: pixel (i, j) gets W h_ij + b from its own features.

    `build` decides from the input shape; `self.spatial` records the choice. Both give the
    same parameter shapes, so `distribution` and `mean` do not depend on the path.
    """

    def __init__(self, event_shape: Sequence[int], params_per_pixel: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = check_event_shape(event_shape)
        self.event_size = math.prod(self.event_shape)
        self.params_per_pixel = params_per_pixel  # numbers per pixel the projection produces
        self.spatial = None  # decided in build: features [..., H, W, F] (True) or [..., F]
        self.projection = None

    def _is_spatial(self, input_shape) -> bool:
        """Whether features of `input_shape` are spatial `[..., H, W, F]` (see the class)."""
        input_shape = tuple(input_shape)
        if len(input_shape) < 4:
            return False
        if len(self.event_shape) >= 2 and input_shape[-3:-1] == self.event_shape[:2]:
            return True
        raise ValueError(
            "Decoder features must be flat [..., F] or spatial [..., H, W, F] with the height "
            f"and width of event_shape={self.event_shape}. Received: input_shape={input_shape}"
        )

    def build(self, input_shape):
        if self.projection is not None:  # `parameters()` before the first call built it
            return
        self.spatial = self._is_spatial(input_shape)
        per_pixel = math.prod(self.event_shape[2:]) if self.spatial else self.event_size
        self.projection = keras.layers.Dense(
            self.params_per_pixel * per_pixel, name="projection", dtype=self.dtype_policy
        )
        self.projection.build(input_shape)

    def compute_output_shape(self, input_shape):
        leading = tuple(input_shape[:-3] if self._is_spatial(input_shape) else input_shape[:-1])
        return leading + self.event_shape

    def call(self, features):
        return self.distribution(**self.parameters(features))

    def log_likelihood(self, parameters: dict[str, tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        """log p(x|z) per example, `[...]`, from the head's parameters `[..., *event_shape, ...]`
        (x `[*batch, *event_shape]` broadcasts against their leading axes).

        The same number as `distribution(**parameters).log_prob(x)`; a head may override it
        with a cheaper formula (the importance-sampled evaluation calls it K times per example).
        """
        return self.distribution(**parameters).log_prob(x)

    def _exact_projection(self, features: tf.Tensor) -> tf.Tensor:
        """W h + b in float32 whatever the policy (`keras_vae.parts.projection`)."""
        if self.projection is None:
            self.build(features.shape)
        return exact_projection(self.projection, features, self.compute_dtype)

    def _project(self, features: tf.Tensor, per_pixel: Sequence[int] = ()) -> tf.Tensor:
        """The projection of `features`, reshaped to `[..., *event_shape, *per_pixel]`.

        Flat features' last axis and spatial features' last three axes become the event axes;
        the leading axes (batch, samples) are kept.
        """
        raw = self._exact_projection(features)
        leading = tf.shape(raw)[: -3 if self.spatial else -1]
        trailing = tf.constant((*self.event_shape, *per_pixel), tf.int32)
        return tf.reshape(raw, tf.concat([leading, trailing], axis=0))

    def _per_pixel(self, features: tf.Tensor, count: int) -> list[tf.Tensor]:
        """The projection split into `count` tensors of shape `[..., *event_shape]`.

        Flat path: the first `event_size` outputs are the first tensor, and so on; spatial
        path: the first C channels of each pixel are the first tensor, and so on.
        """
        parts = tf.split(self._exact_projection(features), count, axis=-1)
        leading = tf.shape(parts[0])[: -3 if self.spatial else -1]
        shape = tf.concat([leading, tf.constant(self.event_shape, tf.int32)], axis=0)
        return [tf.reshape(p, shape) for p in parts]

    @classmethod
    def check_values(cls, images: np.ndarray) -> str | None:
        """None if `images` suit this likelihood, else the problem and its fix.

        A class method: data can be checked before any head is built.
        """
        return None

    def get_config(self):
        config = super().get_config()
        config.update({"event_shape": list(self.event_shape)})
        return config


def bernoulli_log_prob(x: tf.Tensor, logits: tf.Tensor, event_ndims: int) -> tf.Tensor:
    """log prod_d Bernoulli(x_d; sigmoid(l_d)) = sum_d [x_d l_d - softplus(l_d)], summed over the
    last `event_ndims` axes (x broadcasts against the logits' leading axes), as

        sum_d x_d l_d - sum_d max(l_d, 0) + sum_g log prod_{d in g} sigmoid(|l_d|),

    since softplus(l) = max(l, 0) - log sigmoid(|l|), stable for any l. The logs are taken of
    products of G = gcd(D, 16) factors sigmoid(|l|) in [1/2, 1] (at least 2^-16, no
    underflow), one log per G pixels instead of one per pixel; each factor rounds to float32
    first, so a pixel's term is off by at most ~6e-8 nats. Two sums and two elementwise
    passes fewer than summing x l - max(l, 0) and the factors 1 + exp(-|l|): the
    importance-sampled evaluation spends most of its non-matmul time here.
    """
    logits = tf.convert_to_tensor(logits)
    x = tf.cast(x, logits.dtype)
    event_size = math.prod(logits.shape[-event_ndims:])
    leading = tf.shape(logits)[: logits.shape.rank - event_ndims]
    flat = tf.reshape(logits, tf.concat([leading, [event_size]], axis=0))
    flat_x = tf.reshape(x, tf.concat([tf.shape(x)[: x.shape.rank - event_ndims], [-1]], axis=0))
    linear = tf.reduce_sum(flat_x * flat, axis=-1) - tf.reduce_sum(tf.nn.relu(flat), axis=-1)
    group = math.gcd(event_size, 16)
    factors = tf.reshape(tf.sigmoid(tf.abs(flat)), tf.concat([leading, [-1, group]], 0))
    return linear + tf.reduce_sum(tf.math.log(tf.reduce_prod(factors, -1)), axis=-1)


@registry.register("likelihood", "bernoulli")
class BernoulliLikelihood(Likelihood):
    """Bernoulli likelihood head for binary images (the paper's MNIST decoder).

    log p(x|z) = sum_d [x_d log y_d + (1 - x_d) log(1 - y_d)],  y = sigmoid(W h + b)
    (paper, appendix C.1). Computed from the logits, which is exact and stable for any logit.

    Args:
        event_shape: Image shape, for example `(28, 28, 1)`.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def parameters(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        """Returns `{"logits": l}` with shape `[..., *event_shape]`."""
        return {"logits": self._project(features)}

    def distribution(self, logits: tf.Tensor) -> tfd.Distribution:
        """The distribution for given logits, event shape `event_shape`."""
        return tfd.Independent(
            tfd.Bernoulli(logits=logits, dtype=logits.dtype),
            reinterpreted_batch_ndims=len(self.event_shape),
        )

    def log_likelihood(self, parameters: dict[str, tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        """log p(x|z) = sum_d [x_d l_d - softplus(l_d)] over the event axes, without TFP
        (see `bernoulli_log_prob`)."""
        return bernoulli_log_prob(x, parameters["logits"], len(self.event_shape))

    @staticmethod
    def mean(parameters: dict[str, tf.Tensor]) -> tf.Tensor:
        """E[x|z] = sigmoid(logits)."""
        return tf.sigmoid(parameters["logits"])

    @classmethod
    def check_values(cls, images):
        lo, hi = float(np.min(images)), float(np.max(images))
        if lo >= 0.0 and hi <= 1.0:
            return None
        if lo >= 0.0 and hi <= 255.0:
            fix = "it looks like 0..255 grey levels: divide by 255"
        else:
            fix = "rescale it to [0, 1] or use likelihood='gaussian'"
        return f"has values in [{lo:g}, {hi:g}] but the Bernoulli likelihood needs [0, 1]; {fix}."


@registry.register("likelihood", "gaussian")
class GaussianLikelihood(Likelihood):
    """Gaussian likelihood head (the paper's Frey Face decoder).

    log p(x|z) = sum_d log N(x_d; mu_d, sigma_d^2), with [m, s] = W h + b,
    mu = sigmoid(m) (or m when `mean_activation="linear"`) and either a learned
    sigma = softplus(s) + min_scale per pixel (paper, appendix C.2), or a fixed sigma
    (`fixed_scale`), which makes -log p(x|z) a scaled squared error.

    Args:
        event_shape: Image shape, for example `(28, 20, 1)`.
        min_scale: Floor added to every learned standard deviation. On data with discrete grey
            levels a Gaussian can shrink its variance without bound; the floor bounds it.
        mean_activation: `"sigmoid"` (means in (0, 1), for pixels in [0, 1]) or `"linear"`.
        fixed_scale: If given, sigma for every pixel instead of a learned one.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    _MEAN_ACTIVATIONS = ("sigmoid", "linear")

    def __init__(
        self,
        event_shape: Sequence[int],
        min_scale: float = 1e-2,
        mean_activation: str = "sigmoid",
        fixed_scale: float | None = None,
        **kwargs,
    ):
        if fixed_scale is not None:
            check_positive_float("fixed_scale", fixed_scale)
        super().__init__(event_shape, 2 if fixed_scale is None else 1, **kwargs)
        self.min_scale = check_positive_float("min_scale", min_scale)
        if mean_activation not in self._MEAN_ACTIVATIONS:
            raise ValueError(
                f"mean_activation must be one of {self._MEAN_ACTIVATIONS}. "
                f"Received: mean_activation={mean_activation!r}"
            )
        self.mean_activation = mean_activation
        self.fixed_scale = None if fixed_scale is None else float(fixed_scale)

    def parameters(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        """Returns `{"loc": mu, "scale": sigma}`, each `[..., *event_shape]`."""
        parts = self._per_pixel(features, self.params_per_pixel)
        loc = tf.sigmoid(parts[0]) if self.mean_activation == "sigmoid" else parts[0]
        if self.fixed_scale is None:
            scale = floored_softplus(parts[1], self.min_scale)
        else:
            scale = tf.fill(tf.shape(loc), tf.constant(self.fixed_scale, loc.dtype))
        return {"loc": loc, "scale": scale}

    def distribution(self, loc: tf.Tensor, scale: tf.Tensor) -> tfd.Distribution:
        """The distribution for given parameters, event shape `event_shape`."""
        return tfd.Independent(
            tfd.Normal(loc=loc, scale=scale), reinterpreted_batch_ndims=len(self.event_shape)
        )

    @staticmethod
    def mean(parameters: dict[str, tf.Tensor]) -> tf.Tensor:
        """E[x|z] = mu."""
        return parameters["loc"]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "min_scale": self.min_scale,
                "mean_activation": self.mean_activation,
                "fixed_scale": self.fixed_scale,
            }
        )
        return config


def discretized_logistic_log_prob(
    x: tf.Tensor, loc: tf.Tensor, log_scale: tf.Tensor, levels: int = LEVELS
) -> tf.Tensor:
    """log P(x) of a logistic(loc, exp(log_scale)) discretised to `levels` values k/(levels-1).

        P(x) = F((x + h - loc) / s) - F((x - h - loc) / s),  h = 1 / (2 (levels - 1)),

    with F the logistic CDF, except at the edges: P(0) = F((h - loc) / s) and
    P(1) = 1 - F((1 - h - loc) / s), so the `levels` probabilities sum to one exactly
    (Salimans et al. 2017, PixelCNN++, on [0, 1] instead of [-1, 1]). Where the bin's mass is
    below 1e-5 the density at x times the bin width is used (no log of a rounding error).
    Elementwise; every argument broadcasts.
    """
    half = 0.5 / (levels - 1)
    inv_scale = tf.exp(-log_scale)
    centered = x - loc
    upper = inv_scale * (centered + half)
    lower = inv_scale * (centered - half)
    log_cdf_upper = upper - tf.nn.softplus(upper)  # log F(upper), for x = 0
    log_survival_lower = -tf.nn.softplus(lower)  # log (1 - F(lower)), for x = 1
    mass = tf.sigmoid(upper) - tf.sigmoid(lower)
    middle = inv_scale * centered
    log_density_bin = middle - log_scale - 2.0 * tf.nn.softplus(middle) + math.log(2 * half)
    log_mass = tf.where(mass > 1e-5, tf.math.log(tf.maximum(mass, 1e-12)), log_density_bin)
    return tf.where(x < half, log_cdf_upper, tf.where(x > 1.0 - half, log_survival_lower, log_mass))


class DiscretizedLogisticMixture:
    """Per-pixel mixtures of discretised logistics over the grey levels k/255, as a
    distribution: `log_prob` (summed over the image), `mean`, `sample`.

    Args:
        logits: Mixture weights' logits `[..., *event_shape, M]`.
        loc: Component locations, same shape.
        log_scale: Component log-scales, same shape.
        event_ndims: How many trailing axes (before M) form one example.
    """

    def __init__(self, logits, loc, log_scale, event_ndims: int):
        self.logits, self.loc, self.log_scale = logits, loc, log_scale
        self.event_ndims = event_ndims

    @property
    def dtype(self):
        return self.loc.dtype

    def log_prob(self, x: tf.Tensor) -> tf.Tensor:
        """log p(x), summed over the event axes: `[...]`."""
        x = tf.cast(x, self.loc.dtype)[..., None]
        per_component = discretized_logistic_log_prob(x, self.loc, self.log_scale)
        log_weights = tf.nn.log_softmax(self.logits, axis=-1)
        per_pixel = tf.reduce_logsumexp(log_weights + per_component, axis=-1)
        return tf.reduce_sum(per_pixel, axis=list(range(-self.event_ndims, 0)))

    def mean(self) -> tf.Tensor:
        return discretized_logistic_mean(self.logits, self.loc)

    def sample(self, sample_shape=(), seed=None) -> tf.Tensor:
        """Draws images on the grey-level grid (component by Gumbel-max, then inverse CDF)."""
        sample_shape = tf.reshape(tf.cast(sample_shape, tf.int32), [-1])  # () is float32
        shape = tf.concat([sample_shape, tf.shape(self.loc)], axis=0)
        seeds = tfp.random.split_seed(seed, 2)
        gumbel = -tf.math.log(-tf.math.log(tf.random.stateless_uniform(
            shape, seeds[0], minval=1e-6, maxval=1.0 - 1e-6)))  # fmt: skip
        choice = tf.one_hot(tf.argmax(self.logits + gumbel, axis=-1), tf.shape(self.loc)[-1])
        u = tf.random.stateless_uniform(shape[:-1], seeds[1], minval=1e-6, maxval=1.0 - 1e-6)
        loc = tf.reduce_sum(choice * self.loc, -1)
        scale = tf.exp(tf.reduce_sum(choice * self.log_scale, -1))
        x = loc + scale * (tf.math.log(u) - tf.math.log1p(-u))
        return tf.clip_by_value(tf.round(x * (LEVELS - 1)) / (LEVELS - 1), 0.0, 1.0)


def discretized_logistic_mean(logits: tf.Tensor, loc: tf.Tensor) -> tf.Tensor:
    """E[x|z] ~= sum_m pi_m mu_m clipped to [0, 1] (the mean of the continuous mixture; the
    discretisation moves it by at most half a grey level away from the edges)."""
    # softmax over rows of a matrix: oneDNN's CPU softmax refuses tensors of rank > 5, such
    # as [samples, batch, H, W, C, M] for colour images
    flat = tf.reshape(logits, tf.stack([-1, tf.shape(logits)[-1]]))
    weights = tf.reshape(tf.nn.softmax(flat, -1), tf.shape(logits))
    return tf.clip_by_value(tf.reduce_sum(weights * loc, -1), 0.0, 1.0)


@registry.register("likelihood", "logistic")
class DiscretizedLogisticLikelihood(Likelihood):
    """Mixture of discretised logistics per pixel, for 8-bit grey or colour images.

    p(x|z) = prod_d sum_m pi_dm(z) DLogistic(x_d; mu_dm(z), s_dm(z)) over the 256 levels
    k/255 (see `discretized_logistic_log_prob`), so -log p(x|z) is a true code length and
    bits/dim compare with the literature. Channels are modelled independently given z (not
    PixelCNN++'s autoregressive channel coupling). mu = sigmoid(.), log s >= log(min_scale).

    Args:
        event_shape: Image shape, for example `(28, 20, 1)` or `(32, 32, 3)`.
        num_components: M, logistics per pixel (1 is a single discretised logistic).
        min_scale: Floor of the logistic scale s, in units of [0, 1] intensity.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        num_components: int = 5,
        min_scale: float = 1e-3,
        **kwargs,
    ):
        check_positive_int("num_components", num_components)
        super().__init__(event_shape, 3 * num_components, **kwargs)
        self.num_components = num_components
        self.min_scale = check_positive_float("min_scale", min_scale)

    def parameters(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        """Returns `{"logits", "loc", "log_scale"}`, each `[..., *event_shape, M]`."""
        # each pixel's 3M numbers are [logits, loc, scale] blocks of M; sliced on the last
        # axis (not as [..., 3, M]): TFLite's int8 calibration refuses slices of rank > 5
        m = self.num_components
        raw = self._project(features, (3 * m,))
        logits, raw_loc, raw_scale = raw[..., :m], raw[..., m : 2 * m], raw[..., 2 * m :]
        log_scale = tf.math.log(floored_softplus(raw_scale, self.min_scale))
        return {"logits": logits, "loc": tf.sigmoid(raw_loc), "log_scale": log_scale}

    def distribution(self, logits, loc, log_scale) -> DiscretizedLogisticMixture:
        return DiscretizedLogisticMixture(logits, loc, log_scale, len(self.event_shape))

    @staticmethod
    def mean(parameters: dict[str, tf.Tensor]) -> tf.Tensor:
        """E[x|z], see `discretized_logistic_mean`."""
        return discretized_logistic_mean(parameters["logits"], parameters["loc"])

    @classmethod
    def check_values(cls, images):
        lo, hi = float(np.min(images)), float(np.max(images))
        if lo < 0.0 or hi > 1.0:
            fix = "divide 0..255 grey levels by 255" if hi <= 255.0 and lo >= 0 else "rescale"
            return (f"has values in [{lo:g}, {hi:g}] but the discretised logistic likelihood "
                    f"needs grey levels k/255 in [0, 1]; {fix}.")  # fmt: skip
        levels = np.asarray(images, np.float64) * (LEVELS - 1)
        off = float(np.max(np.abs(levels - np.round(levels))))
        if off > 1e-3:
            return ("has values between the 256 grey levels k/255 that the discretised "
                    "logistic likelihood models; quantise to 8 bits or use "
                    "likelihood='gaussian'.")  # fmt: skip
        return None

    def get_config(self):
        config = super().get_config()
        config.update({"num_components": self.num_components, "min_scale": self.min_scale})
        return config
