"""The conditional VAE (Sohn, Lee & Yan, 2015): q(z|x, y), p(x|z, y) and p(z|y).

y is a condition vector of size C given with every example: a one-hot class label (int labels
`[n]` are turned into one-hot vectors) or any float vector `[n, C]`. The model maximises per
example the conditional bound

    log p(x|y) >= E_q(z|x,y)[log p(x|z, y)] - KL(q(z|x, y) || p(z|y)),

with the same objectives, posteriors, likelihoods and network families as `VAE`:

* encoder: q(z|x, y) = posterior(encoder(concat(flatten(x), y))) for the MLP families (y
  enters with the pixels), posterior(concat(encoder(x), y)) for other bodies (for `conv`: y
  joins the dense features after the convolutions);
* decoder: p(x|z, y) = likelihood(decoder(concat(z, y)));
* prior: any unconditional prior p(z) (`standard`, `mixture`), or `ConditionalGaussianPrior`,
  p(z|y) = N(z; A y + a, diag(softplus(B y + b)^2)) (a learned Gaussian per class).

`ConditionalVAE` is a subclass of `VAE`, not a flag of it: the unconditional model, its
export and its tests stay as they are, and the objectives and the evaluation run unchanged on
`model.given(y)`, a view of the model with y fixed that has a VAE's interface
(`encode_parameters(x)`, `decoder(z)`, `decode(z)`, `prior_distribution()`). Training goes
through the same trainer (`keras_vae.engine.trainer`): the condition rides in Keras' "targets"
position, `fit(images, labels)` or a dataset of `(images, labels)`, and follows x through the
split-invariant noise, the batch shares, per-replica XLA and the fused steps.

Example:
    >>> vae = keras_vae.mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500, condition_dim=10)
    >>> vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> vae.fit(train_images, train_labels, epochs=10, batch_size=100)
    >>> sevens = vae.sample(16, y=7)          # E[x|z, y=7], z ~ p(z|y)
    >>> q = vae.encode(x, labels)             # q(z|x, y)
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import registry
from keras_vae._internal.checks import check_positive_int
from keras_vae.models.vae.model import VAE
from keras_vae.parts import objectives
from keras_vae.parts.networks import MLP
from keras_vae.parts.priors import Prior, VampPrior

tfd = tfp.distributions

ENCODER_CONDITIONING = ("input", "features")
CONDITIONAL_PRIOR = "conditional"  # `mlp_vae(prior=...)` name of `ConditionalGaussianPrior`


def as_condition(y, condition_dim: int, dtype="float32") -> tf.Tensor:
    """y as float condition vectors `[n, C]`: int labels `[n]` (any rank-1 y) become one-hot
    vectors, `[n, C]` vectors are cast. Labels outside [0, C) are refused when eager."""
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 1:
        labels = tf.cast(y, tf.int32)
        if tf.executing_eagerly() and tf.size(labels) > 0:
            low, high = int(tf.reduce_min(labels)), int(tf.reduce_max(labels))
            if low < 0 or high >= condition_dim:
                raise ValueError(
                    f"Class labels must be in [0, {condition_dim}) for this model "
                    f"(condition_dim={condition_dim}). Received: labels in [{low}, {high}]"
                )
        return tf.one_hot(labels, condition_dim, dtype=dtype)
    if y.shape.rank != 2 or (y.shape[-1] is not None and y.shape[-1] != condition_dim):
        raise ValueError(
            f"y must be int labels [n] or condition vectors [n, {condition_dim}]. "
            f"Received: shape={tuple(y.shape)}"
        )
    return tf.cast(y, dtype)


def concat_condition(z: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """concat(z, y) on the last axis, y `[B, C]` repeated along z's leading axes: z may be
    `[B, D]`, `[L, B, D]` (the objectives' samples) or `[L * B, D]` (L samples flattened
    sample-major, as the evaluation decodes them). Empty batches (B = 0) work."""
    z, y = tf.convert_to_tensor(z), tf.convert_to_tensor(y)
    size = tf.shape(z)[-1]
    batch = tf.shape(y)[0]
    if z.shape.rank == 2:  # [k * B, D]: row s * B + b belongs to example b
        grouped = tf.reshape(z, tf.stack([tf.shape(z)[0] // tf.maximum(batch, 1), batch, size]))
    elif z.shape.rank == 3:
        grouped = z
    else:
        raise ValueError(f"z must have rank 2 or 3. Received: shape={tuple(z.shape)}")
    tiled = tf.broadcast_to(
        tf.cast(y, z.dtype)[None], tf.stack([tf.shape(grouped)[0], batch, tf.shape(y)[1]])
    )
    joined = tf.concat([grouped, tiled], axis=-1)
    return tf.reshape(joined, tf.concat([tf.shape(z)[:-1], tf.shape(joined)[-1:]], axis=0))


class ConditionedVAE:
    """A `ConditionalVAE` with its condition y `[B, C]` fixed: a VAE's interface over the
    batch of y, what objectives, the evaluation and `prior.distribution(model)` read.

    Attributes:
        model: The `ConditionalVAE`.
        condition: y as float vectors `[B, C]`.
    """

    def __init__(self, model: ConditionalVAE, y):
        self.model = model
        self.condition = as_condition(y, model.condition_dim, model.compute_dtype)
        self.posterior, self.likelihood = model.posterior, model.likelihood
        self.prior, self.latent_dim = model.prior, model.latent_dim
        self.image_shape = model.image_shape

    def encode_parameters(self, x):
        return self.model.encode_parameters(x, self.condition)

    def encode(self, x):
        return self.model.encode(x, self.condition)

    def decoder(self, z):
        """The decoder body's features at concat(z, y) (see `concat_condition`)."""
        return self.model.decoder(concat_condition(z, self.condition))

    def decode(self, z):
        return self.likelihood(self.decoder(z))

    def prior_distribution(self):
        return self.model.prior.distribution(self)

    def elbo_terms(self, x, num_samples=None, seed=None, noise=None) -> objectives.ElboTerms:
        """`ConditionalVAE.elbo_terms` at this view's y."""
        return self.model.elbo_terms(x, self.condition, num_samples, seed, noise)


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class ConditionalVAE(VAE):
    """Conditional VAE (Sohn et al. 2015), trained with `fit(images, conditions)`.

    The objective (default ELBO) maximises per example the conditional bound

        L(x|y) = E_q(z|x,y)[log p(x|z, y)] - beta * KL(q(z|x, y) || p(z|y)),

    with z = posterior.reparameterize(params(x, y), eps) and the trainer's noise eps, exactly
    as `VAE` does for L(x) (same metrics, same units: nats per example).

    Args:
        encoder, posterior, decoder, likelihood: As for `VAE`; the encoder body gets
            concat(flatten(x), y) or its features are joined with y (`encoder_conditioning`),
            the decoder body gets concat(z, y).
        condition_dim: C, the size of y (the number of classes for one-hot labels).
        prior: p(z) (`standard`, `mixture`) or p(z|y) (`ConditionalGaussianPrior`); default
            N(0, I). A VampPrior is refused (its pseudo-inputs have no condition).
        objective, num_samples, beta, analytic_kl, seed: As for `VAE`.
        encoder_conditioning: `"input"` (y joins the flattened pixels; MLP bodies only) or
            `"features"` (y joins the encoder body's output); None: `"input"` for MLP bodies,
            else `"features"`.
        **kwargs: Standard `keras.Model` arguments (`name`).

    Example:
        >>> vae = ConditionalVAE(encoder, posterior, decoder, likelihood, condition_dim=10)
        >>> vae.fit(images, labels, batch_size=100)      # labels: int [N] or one-hot [N, 10]
        >>> vae.sample(10, y=np.arange(10))              # one image per class
    """

    def __init__(
        self,
        encoder: keras.layers.Layer,
        posterior: keras.layers.Layer,
        decoder: keras.layers.Layer,
        likelihood: keras.layers.Layer,
        condition_dim: int,
        prior: keras.layers.Layer | None = None,
        objective: objectives.Objective | None = None,
        num_samples: int | None = None,
        beta: float | None = None,
        analytic_kl: bool | str | None = None,
        seed: int | None = None,
        encoder_conditioning: str | None = None,
        **kwargs,
    ):
        if isinstance(prior, VampPrior):
            raise ValueError(
                "A ConditionalVAE cannot use a VampPrior (its pseudo-inputs have no condition "
                "y); use prior='standard', 'mixture' or 'conditional'."
            )
        super().__init__(
            encoder, posterior, decoder, likelihood, prior=prior, objective=objective,
            num_samples=num_samples, beta=beta, analytic_kl=analytic_kl, seed=seed, **kwargs,
        )  # fmt: skip
        self.condition_dim = check_positive_int("condition_dim", condition_dim)
        flat_body = isinstance(encoder, MLP) and encoder.flatten
        if encoder_conditioning is None:
            encoder_conditioning = "input" if flat_body else "features"
        if encoder_conditioning not in ENCODER_CONDITIONING or (
            encoder_conditioning == "input" and not flat_body
        ):
            raise ValueError(
                "encoder_conditioning must be 'input' (an MLP encoder that flattens its "
                "inputs) or 'features' (any encoder). Received: "
                f"encoder_conditioning={encoder_conditioning!r} for {type(encoder).__name__}"
            )
        self.encoder_conditioning = encoder_conditioning

    def get_config(self):
        config = super().get_config()
        config.update(
            {"condition_dim": self.condition_dim, "encoder_conditioning": self.encoder_conditioning}
        )
        return config

    def build(self, input_shape):
        if (
            isinstance(input_shape, (tuple, list))
            and input_shape
            and isinstance(input_shape[0], (tuple, list, tf.TensorShape))
        ):  # (x shape, y shape): Keras builds from the inputs' shapes
            input_shape = input_shape[0]
        input_shape = tuple(input_shape)
        if tuple(input_shape[1:]) != self.image_shape:
            raise ValueError(
                f"The model expects examples of shape {self.image_shape} (its likelihood's "
                f"event_shape). Received: input_shape={input_shape}"
            )
        size = self.condition_dim
        if self.encoder_conditioning == "input":
            encoder_shape = (None, math.prod(self.image_shape) + size)
            features = self.encoder.compute_output_shape(encoder_shape)
        else:
            encoder_shape = input_shape
            features = self.encoder.compute_output_shape(input_shape)
            features = (*features[:-1], features[-1] + size)
        decoder_shape = (None, self.latent_dim + size)
        for layer, shape in (
            (self.encoder, encoder_shape),
            (self.posterior, features),
            (self.decoder, decoder_shape),
            (self.likelihood, self.decoder.compute_output_shape(decoder_shape)),
            (self.prior, (None, size)),
            (self.auxiliary_layer, (None, self.latent_dim)),
        ):
            if layer is not None and not layer.built:
                layer.build(shape)
        self.built = True

    # ------------------------------------------------------------------------ the model
    def condition(self, y) -> tf.Tensor:
        """y as float vectors `[n, C]` (int labels `[n]` one-hot; see `as_condition`)."""
        return as_condition(y, self.condition_dim, self.compute_dtype)

    def given(self, y) -> ConditionedVAE:
        """The model with y fixed (`[B]` labels or `[B, C]` vectors): a VAE's interface."""
        return ConditionedVAE(self, y)

    def encode_parameters(self, x, y) -> dict[str, tf.Tensor]:
        """The posterior's parameters at (x, y) (for example `loc`, `scale`)."""
        y = self.condition(y)
        if self.encoder_conditioning == "input":
            flat = tf.reshape(x, [tf.shape(x)[0], -1])
            features = self.encoder(tf.concat([flat, tf.cast(y, flat.dtype)], axis=-1))
        else:
            features = self.encoder(x)
            features = tf.concat([features, tf.cast(y, features.dtype)], axis=-1)
        return self.posterior.parameters(features)

    def encode(self, x, y):
        """q(z|x, y): a distribution with batch shape [batch] and event shape [latent_dim]."""
        return self.posterior.distribution(**self.encode_parameters(x, y))

    def decode(self, z, y):
        """p(x|z, y): batch shape `z.shape[:-1]`, event `image_shape`; z `[B, D]` or
        `[L, B, D]` with y for the B examples (see `concat_condition`)."""
        return self.given(y).decode(z)

    def prior_distribution(self, y=None):
        """p(z|y) for a batch of y (batch shape [B] for a conditional prior), or p(z) of an
        unconditional prior (y may then be None)."""
        return self.prior.distribution(self if y is None else self.given(y))

    def call(self, inputs, training=None):
        """E[x|z, y] at z = E[z|x, y] for inputs (x, y)."""
        x, y = inputs
        return self.decode(self.encode(x, y).mean(), y).mean()

    def reconstruct(self, x, y, sample_latent: bool = False, seed=None) -> tf.Tensor:
        """E[x|z, y] for z = E[z|x, y], or for one z ~ q(z|x, y) when `sample_latent`."""
        q = self.encode(x, y)
        z = q.sample(seed=self._stateless_seed(seed)) if sample_latent else q.mean()
        return self.decode(z, y).mean()

    def sample_conditions(self, num_samples: int, y=None) -> tf.Tensor:
        """The `[num_samples, C]` conditions of `sample`: y as given (`[n]` labels or `[n, C]`
        vectors, n = num_samples), one class label for all, or (None) the classes in turn,
        0, 1, ..., C - 1, 0, ..."""
        num_samples = check_positive_int("num_samples", num_samples)
        if y is None:
            y = np.arange(num_samples) % self.condition_dim
        y = tf.convert_to_tensor(y)
        if y.shape.rank == 0:
            y = tf.fill([num_samples], tf.cast(y, tf.int32))
        if y.shape[0] != num_samples:
            raise ValueError(
                f"y must give one condition per sample ({num_samples}). "
                f"Received: y of shape {tuple(y.shape)}"
            )
        return self.condition(y)

    def sample(self, num_samples: int, y=None, seed=None, return_latents: bool = False):
        """Draws z ~ p(z|y) and returns E[x|z, y], `[num_samples, *image_shape]` (and z).

        Args:
            num_samples: n.
            y: int labels `[n]`, one-hot or other vectors `[n, C]`, one int label for all
                samples, or None: the classes in turn (0, 1, ..., C - 1, 0, ...).
            seed: Seed of the draws; None: the model's stream.
            return_latents: Also return z `[n, latent_dim]`.
        """
        y = self.sample_conditions(num_samples, y)
        prior = self.prior_distribution(y)
        seed = self._stateless_seed(seed)
        z = prior.sample(seed=seed) if prior.batch_shape.rank else prior.sample(num_samples, seed)
        images = self.decode(z, y).mean()
        return (images, z) if return_latents else images

    def elbo_terms(self, x, y, num_samples=None, seed=None, noise=None) -> objectives.ElboTerms:
        """The conditional ELBO (beta = 1) and its parts for a batch (x, y), each `[batch]`
        in nats, with `num_samples` samples (default the objective's) from `noise` or `seed`."""
        if not self.built:
            self.build(x.shape)
        if noise is None:
            noise = self.standard_noise(x, self._stateless_seed(seed), num_samples=num_samples)
        elbo = objectives.ELBO(num_samples=int(noise.shape[0] or 1))
        _, terms = elbo(self.given(y), x, noise, 0)
        return objectives.ElboTerms(terms["elbo"], terms["reconstruction"], terms["kl"])

    # ------------------------------------------------------------ the trainer's hooks
    def _unpack(self, data):
        """(x, y) from a batch of `fit`/`evaluate`: (x, y[, sample_weight]) or ((x, y),)."""
        first = data[0] if isinstance(data, (tuple, list)) else data
        if isinstance(first, (tuple, list)) and len(first) == 2:
            return tuple(first)
        if isinstance(data, (tuple, list)) and len(data) >= 2 and data[1] is not None:
            return data[0], data[1]
        raise ValueError(
            "A ConditionalVAE needs a condition y with every example: call fit(images, "
            "labels) or give a dataset of (images, labels) pairs."
        )

    def _zero_batch(self):
        x = tf.zeros((1, *self.image_shape), dtype=self.compute_dtype)
        return ((x, tf.zeros((1, self.condition_dim), dtype=self.compute_dtype)),)

    def compute_objective(self, inputs, noise, step):
        x, y = inputs
        if not self.built:
            self.build(x.shape)
        return self.objective(self.given(y), x, noise, step)


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class ConditionalGaussianPrior(Prior):
    """A learned Gaussian prior given y, p(z|y) = N(z; A y + a, diag(s(y)^2)), with
    s(y) = softplus(B y + b) + 1e-4: for one-hot y a Gaussian per class (Sohn et al.'s
    conditional prior network, here linear in y).

    Starts at N(0, I) for every y (A = B = 0, a = 0, softplus(b) = 1). The KL of a diagonal
    Gaussian posterior to it is in closed form.

    Args:
        latent_dim: Size of z.
        condition_dim: C, the size of y.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, latent_dim: int, condition_dim: int, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.condition_dim = check_positive_int("condition_dim", condition_dim)
        self.loc_layer = keras.layers.Dense(latent_dim, kernel_initializer="zeros", name="loc")
        self.scale_layer = keras.layers.Dense(
            latent_dim,
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(0.5413),  # softplus(0.5413) = 1
            name="scale",
        )

    def build(self, input_shape=None):
        for layer in (self.loc_layer, self.scale_layer):
            layer.build((None, self.condition_dim))

    def _parameters(self, model) -> tuple[tf.Tensor, tf.Tensor]:
        y = getattr(model, "condition", None)
        if y is None:
            raise ValueError(
                "ConditionalGaussianPrior is p(z|y): give the condition, e.g. "
                "model.prior_distribution(y) or model.sample(n, y=labels)."
            )
        return self.loc_layer(y), tf.nn.softplus(self.scale_layer(y)) + 1e-4

    def distribution(self, model=None) -> tfd.Distribution:
        """N(A y + a, diag(s(y)^2)): batch shape [B] for y `[B, C]`, event [latent_dim]."""
        loc, scale = self._parameters(model)
        return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)

    def sample_plain(self, num_samples, model=None) -> tf.Tensor:
        loc, scale = self._parameters(model)
        return loc + scale * tf.random.normal(tf.shape(loc))

    def get_config(self):
        config = super().get_config()
        config.update({"condition_dim": self.condition_dim})
        return config


__all__ = [
    "ConditionalGaussianPrior",
    "ConditionalVAE",
    "ConditionedVAE",
    "as_condition",
    "concat_condition",
]
