"""The variational autoencoder: three distributions and an objective, as a `keras.Model`.

`VAE` wires an encoder body and a posterior head (q(z|x)), a decoder body and a likelihood head
(p(x|z)), a prior p(z) and an objective, and reads top to bottom: encode, sample, decode, loss.
The training machinery (split-invariant noise, batch shares, per-replica XLA, Keras work-
arounds) lives in `keras_vae.engine.trainer.ExactReplicaTrainer`, which calls the two hooks below.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_vae import registry
from keras_vae.engine.trainer import ExactReplicaTrainer
from keras_vae.parts import objectives
from keras_vae.parts.priors import StandardNormalPrior


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class VAE(ExactReplicaTrainer):
    """Variational autoencoder (Kingma & Welling, 2014), trained with `fit`.

    The objective (default `objectives.ELBO`) maximises per example a bound such as

        L(x) = E_q(z|x)[log p(x|z)] - beta * KL(q(z|x) || p(z)),

    estimated with reparameterised samples z = posterior.reparameterize(params(x), eps),
    eps ~ N(0, I) drawn by the trainer. Metrics (nats per example): `loss` and the
    objective's terms (`elbo`, the true bound, `reconstruction`, `kl`, and `iwae` for IWAE).

    Args:
        encoder: Body mapping x `[batch, *image_shape]` to features.
        posterior: Head mapping features to q(z|x) (`keras_vae.parts.posteriors`).
        decoder: Body mapping z `[..., latent_dim]` to features.
        likelihood: Head mapping features to p(x|z) (`keras_vae.parts.likelihoods`).
        prior: p(z) (`keras_vae.parts.priors`); defaults to `StandardNormalPrior`.
        objective: What training minimises (`keras_vae.parts.objectives`); defaults to
            `ELBO(num_samples, beta, analytic_kl)`.
        num_samples, beta, analytic_kl: Shortcuts for the default ELBO objective; not
            allowed together with `objective`.
        seed: Seed of the model's own noise; None draws a random seed.
        **kwargs: Standard `keras.Model` arguments (`name`).

    Example:
        >>> vae = keras_vae.mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500)
        >>> vae.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> vae.fit(train_images, epochs=10, batch_size=100)
        >>> q = vae.encode(x)            # tfd distribution over z
        >>> images = vae.sample(16)      # E[x|z], z ~ p(z)
    """

    _PARTS = ("encoder", "posterior", "decoder", "likelihood", "prior", "objective")

    def __init__(
        self,
        encoder: keras.layers.Layer,
        posterior: keras.layers.Layer,
        decoder: keras.layers.Layer,
        likelihood: keras.layers.Layer,
        prior: keras.layers.Layer | None = None,
        objective: objectives.Objective | None = None,
        num_samples: int | None = None,
        beta: float | None = None,
        analytic_kl: bool | str | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        shortcuts = {"num_samples": num_samples, "beta": beta, "analytic_kl": analytic_kl}
        given = {k: v for k, v in shortcuts.items() if v is not None}
        if objective is None:
            objective = objectives.ELBO(**given)
        elif given:
            raise ValueError(
                f"Give {sorted(given)} to the objective, not to VAE, when "
                f"objective= is given. Received: objective={objective!r}"
            )
        if not isinstance(objective, objectives.Objective):
            raise ValueError(
                "objective must be a keras_vae.parts.objectives.Objective such as ELBO() or "
                f"IWAE(5). Received: objective={objective!r}"
            )
        latent_dim = getattr(posterior, "latent_dim", None)
        if latent_dim is None:
            raise ValueError(
                "posterior must be a head with a `latent_dim` attribute, such as "
                f"DiagonalGaussianPosterior. Received: posterior={posterior!r}"
            )
        super().__init__(metric_names=objective.metric_names, seed=seed, **kwargs)
        self.encoder = encoder
        self.posterior = posterior
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior = prior if prior is not None else StandardNormalPrior(latent_dim, name="prior")
        if self.prior.latent_dim != latent_dim:
            raise ValueError(
                f"The prior is over {self.prior.latent_dim} latents but the "
                f"posterior over {latent_dim}; give both the same latent_dim."
            )
        self.objective = objective
        # a layer the objective trains itself (FactorVAE's discriminator): tracked here so that
        # it is built, saved and restored with the model; its variables are not trainable here
        self.auxiliary_layer = objective.auxiliary_layer
        self.latent_dim = int(latent_dim)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one example, from the likelihood head."""
        return tuple(self.likelihood.event_shape)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if tuple(input_shape[1:]) != self.image_shape:
            raise ValueError(
                f"The model expects examples of shape {self.image_shape} (its likelihood's "
                f"event_shape). Received: input_shape={input_shape}"
            )
        z_shape = (None, self.latent_dim)
        for layer, shape in (
            (self.encoder, input_shape),
            (self.posterior, self.encoder.compute_output_shape(input_shape)),
            (self.decoder, z_shape),
            (self.likelihood, self.decoder.compute_output_shape(z_shape)),
            (self.prior, None),
            (self.auxiliary_layer, z_shape),
        ):
            if layer is not None and not layer.built:
                layer.build(shape)
        self.built = True

    # ------------------------------------------------------------------------ the model
    def encode_parameters(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        """The posterior's parameters at x (for example `loc`, `scale`)."""
        return self.posterior.parameters(self.encoder(x))

    def encode(self, x: tf.Tensor):
        """q(z|x): a distribution with batch shape [batch] and event shape [latent_dim]."""
        return self.posterior.distribution(**self.encode_parameters(x))

    def decode(self, z: tf.Tensor):
        """p(x|z): a distribution with batch shape `z.shape[:-1]` and event `image_shape`."""
        return self.likelihood(self.decoder(z))

    def prior_distribution(self):
        """p(z) as a distribution (the VampPrior's depends on the encoder)."""
        return self.prior.distribution(self)

    def call(self, inputs, training=None):
        """E[x|z] at z = E[z|x], the deterministic reconstruction (`[batch, *image_shape]`)."""
        return self.decode(self.encode(inputs).mean()).mean()

    def reconstruct(self, x: tf.Tensor, sample_latent: bool = False, seed=None) -> tf.Tensor:
        """E[x|z] for z = E[z|x], or for one z ~ q(z|x) when `sample_latent` is True."""
        q = self.encode(x)
        z = q.sample(seed=self._stateless_seed(seed)) if sample_latent else q.mean()
        return self.decode(z).mean()

    def sample(self, num_samples: int, seed=None, return_latents: bool = False):
        """Draws z ~ p(z) and returns E[x|z], `[num_samples, *image_shape]` (and z)."""
        z = self.prior_distribution().sample(num_samples, seed=self._stateless_seed(seed))
        images = self.decode(z).mean()
        return (images, z) if return_latents else images

    def elbo_terms(self, x, num_samples=None, seed=None, noise=None) -> objectives.ElboTerms:
        """The ELBO (beta = 1) and its parts for a batch `x`, each `[batch]` in nats, with
        `num_samples` samples (default the objective's) from `noise` or from `seed`."""
        if not self.built:
            self.build(x.shape)
        if noise is None:
            noise = self.standard_noise(x, self._stateless_seed(seed), num_samples=num_samples)
        _, terms = objectives.ELBO(num_samples=int(noise.shape[0] or 1))(self, x, noise, 0)
        return objectives.ElboTerms(terms["elbo"], terms["reconstruction"], terms["kl"])

    # ------------------------------------------------------------ the trainer's hooks
    def noise_shape(self) -> tuple[int, int]:
        return self.objective.num_samples, self.posterior.noise_size

    def compute_objective(self, x, noise, step):
        if not self.built:  # fit() without a prior call: build here so build_config is saved
            self.build(x.shape)
        return self.objective(self, x, noise, step)

    def after_update(self, terms, seed, position):
        """The objective's own update (e.g. FactorVAE's discriminator step), if it has one."""
        return self.objective.after_update(self, terms, seed, position)

    def held_out_terms(self, terms, seed, position):
        return self.objective.held_out_terms(self, terms, seed, position)

    def predict_step(self, data):
        return self(self._unpack(data), training=False)
