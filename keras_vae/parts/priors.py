"""Priors p(z): layers that may have weights and give a distribution over z.

A prior answers, for the `VAE` it belongs to (`model`, needed by the VampPrior only):

* `distribution(model)`: a `tfd` distribution with event shape `[latent_dim]`, for
  `log_prob`, `sample` and, where TFP registers one, the closed-form KL;
* `sample_plain(num_samples, model)`: z in plain TensorFlow ops with `tf.random` draws
  (Gumbel-max for the component, `tf.random.normal` for the noise), what the exported
  decoder's `sample` signature runs in a SavedModel and in a `.tflite` file.

Priors:
    StandardNormalPrior  p(z) = N(z; 0, I)
    MixturePrior         p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)), all learned
    VampPrior            p(z) = 1/K sum_k q(z | u_k), u_k learned pseudo-inputs
                         (Tomczak & Welling 2018)
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import registry
from keras_vae._internal.checks import check_positive_int, floored_softplus
from keras_vae.parts import objectives

tfd = tfp.distributions


def gumbel_max_choice(logits: tf.Tensor, num_samples: tf.Tensor) -> tf.Tensor:
    """`num_samples` draws k ~ Categorical(softmax(logits)) as argmax(logits + Gumbel noise),
    with ops every TFLite runtime has (RANDOM_UNIFORM, LOG, ARG_MAX). Returns int32 `[n]`."""
    shape = tf.stack([num_samples, tf.shape(logits)[-1]])
    u = tf.random.uniform(shape, minval=1e-7, maxval=1.0 - 1e-7, dtype=logits.dtype)
    return tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)


class DiagonalNormalMixture(tfd.MixtureSameFamily):
    """A `tfd.MixtureSameFamily` whose log_prob, for components Independent(Normal) with
    parameters `[K, D]`, is `objectives.diagonal_normal_mixture_log_prob` (two matmuls
    instead of a `[N, K, D]` broadcast); any other components use TFP's own log_prob."""

    def _log_prob(self, x):
        components = self.components_distribution
        normal = getattr(components, "distribution", None)
        if not (
            isinstance(components, tfd.Independent)
            and isinstance(normal, tfd.Normal)
            and normal.loc.shape.rank == 2
            and self.mixture_distribution.logits is not None
        ):
            return super()._log_prob(x)
        loc, scale = normal.loc, normal.scale + tf.zeros_like(normal.loc)
        logits = self.mixture_distribution.logits
        return objectives.diagonal_normal_mixture_log_prob(x, logits, loc, scale)


class Prior(keras.layers.Layer):
    """Base class of priors over a `latent_dim` vector; see the module docstring."""

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)

    def call(self, inputs=None):
        return self.distribution()

    def kl(self, posterior: tfd.Distribution, model=None) -> tf.Tensor | None:
        """KL(q || p) in closed form, `[batch]`, or None when there is none (TFP's registry)."""
        try:
            return tfd.kl_divergence(posterior, self.distribution(model))
        except NotImplementedError:
            return None

    def kl_per_dim(self, posterior: tfd.Distribution, model=None) -> tf.Tensor | None:
        """KL per latent dimension `[batch, latent_dim]` where q and p factorise, else None."""
        return None

    def get_config(self):
        config = super().get_config()
        config.update({"latent_dim": self.latent_dim})
        return config


@registry.register("prior", "standard")
class StandardNormalPrior(Prior):
    """The standard normal prior p(z) = N(z; 0, I) (the AEVB paper's). No weights.

    Args:
        latent_dim: Size of z.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.built = True

    def distribution(self, model=None) -> tfd.Distribution:
        """N(0, I) with event shape `[latent_dim]`."""
        zeros = tf.zeros([self.latent_dim], dtype=self.compute_dtype)
        return tfd.Independent(
            tfd.Normal(loc=zeros, scale=tf.ones_like(zeros)), reinterpreted_batch_ndims=1
        )

    def sample_plain(self, num_samples, model=None) -> tf.Tensor:
        return tf.random.normal(tf.stack([num_samples, self.latent_dim]))

    def kl(self, posterior, model=None):
        """Closed forms: TFP's for a diagonal Gaussian q (AEVB appendix B), and
        `full_gaussian_kl_to_standard_normal` for a full-covariance q."""
        if isinstance(posterior, tfd.MultivariateNormalTriL):
            return objectives.full_gaussian_kl_to_standard_normal(
                posterior.loc, posterior.scale.to_dense()
            )
        return super().kl(posterior, model)

    def kl_per_dim(self, posterior, model=None):
        inner = getattr(posterior, "distribution", None)
        if isinstance(posterior, tfd.Independent) and isinstance(inner, tfd.Normal):
            return objectives.gaussian_kl_to_standard_normal(
                inner.loc[..., None], inner.scale[..., None]
            )
        return None


@registry.register("prior", "mixture")
class MixturePrior(Prior):
    """A learned mixture of K diagonal Gaussians,
    p(z) = sum_k softmax(a)_k N(z; m_k, diag(s_k^2)), s_k = softplus(r_k) + 1e-4.

    Means start at N(0, 1) draws (seeded), scales at 1 and weights equal, so the prior begins
    close to N(0, I) spread over K centres. No closed-form KL: the ELBO uses a Monte Carlo KL.

    Args:
        latent_dim: Size of z.
        num_components: K.
        seed: Seed of the initial means.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(
        self, latent_dim: int, num_components: int = 10, seed: int | None = None, **kwargs
    ):
        super().__init__(latent_dim, **kwargs)
        self.num_components = check_positive_int("num_components", num_components)
        self.seed = seed

    def build(self, input_shape=None):
        k, d = self.num_components, self.latent_dim
        self.means = self.add_weight(
            shape=(k, d), initializer=keras.initializers.RandomNormal(seed=self.seed), name="means"
        )
        # softplus(0.5413) = 1: unit scales at the start
        self.raw_scales = self.add_weight(
            shape=(k, d), initializer=keras.initializers.Constant(0.5413), name="raw_scales"
        )
        self.logits = self.add_weight(shape=(k,), initializer="zeros", name="logits")

    def _parameters(self):
        return self.logits, self.means, floored_softplus(self.raw_scales, 1e-4)

    def distribution(self, model=None) -> tfd.Distribution:
        logits, means, scales = self._parameters()
        return DiagonalNormalMixture(
            tfd.Categorical(logits=logits),
            tfd.Independent(tfd.Normal(means, scales), reinterpreted_batch_ndims=1),
        )

    def sample_plain(self, num_samples, model=None) -> tf.Tensor:
        logits, means, scales = self._parameters()
        k = gumbel_max_choice(logits, num_samples)
        eps = tf.random.normal(tf.stack([num_samples, self.latent_dim]))
        return tf.gather(means, k) + tf.gather(scales, k) * eps

    def get_config(self):
        config = super().get_config()
        config.update({"num_components": self.num_components, "seed": self.seed})
        return config


@registry.register("prior", "vamp")
class VampPrior(Prior):
    """The VampPrior: the aggregate posterior at K learned pseudo-inputs (Tomczak & Welling 2018),

        p(z) = 1/K sum_k q(z | u_k),  u_k = clip(v_k, 0, 1)  (their hard-tanh to [0, 1]),

    where q is the model's own encoder and posterior head, so the prior's weights are the
    pseudo-inputs v_k `[K, *image_shape]` and it shares the encoder's. The paper initialises
    v_k ~ N(0.05, 0.01); `set_pseudo_inputs` starts them from real examples instead.
    No closed-form KL: the ELBO uses a Monte Carlo KL.

    Args:
        latent_dim: Size of z.
        image_shape: Shape of one example (of a pseudo-input).
        num_components: K, the number of pseudo-inputs (the paper: 500).
        seed: Seed of the initial pseudo-inputs.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape,
        num_components: int = 500,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(latent_dim, **kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_components = check_positive_int("num_components", num_components)
        self.seed = seed

    def build(self, input_shape=None):
        self.pseudo_inputs = self.add_weight(
            shape=(self.num_components, *self.image_shape),
            initializer=keras.initializers.RandomNormal(0.05, 0.01, seed=self.seed),
            name="pseudo_inputs",
        )

    def set_pseudo_inputs(self, images: np.ndarray) -> None:
        """Starts the pseudo-inputs from K examples `[K, *image_shape]` (values in [0, 1])."""
        images = np.asarray(images, dtype="float32")
        if images.shape != (self.num_components, *self.image_shape):
            raise ValueError(
                f"set_pseudo_inputs needs {(self.num_components, *self.image_shape)} images. "
                f"Received: shape={images.shape}"
            )
        if not self.built:
            self.build()
        self.pseudo_inputs.assign(images)

    def component_parameters(self, model) -> dict[str, tf.Tensor]:
        """The posterior's parameters at the K pseudo-inputs, each with leading axis K."""
        if model is None:
            raise ValueError("VampPrior needs the VAE it belongs to: distribution(model).")
        inputs = tf.clip_by_value(self.pseudo_inputs, 0.0, 1.0)
        return model.posterior.parameters(model.encoder(inputs))

    def distribution(self, model=None) -> tfd.Distribution:
        parameters = self.component_parameters(model)  # a clear error without the model
        components = model.posterior.distribution(**parameters)
        logits = tf.zeros([self.num_components], dtype=self.compute_dtype)
        return DiagonalNormalMixture(tfd.Categorical(logits=logits), components)

    def sample_plain(self, num_samples, model=None) -> tf.Tensor:
        parameters = self.component_parameters(model)
        logits = tf.zeros([self.num_components])
        k = gumbel_max_choice(logits, num_samples)
        chosen = {name: tf.gather(value, k) for name, value in parameters.items()}
        eps = tf.random.normal(tf.stack([num_samples, model.posterior.noise_size]))
        return model.posterior.reparameterize(chosen, eps)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_shape": list(self.image_shape),
                "num_components": self.num_components,
                "seed": self.seed,
            }
        )
        return config
