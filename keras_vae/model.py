"""The variational autoencoder as a subclassed `keras.Model`.

`VAE` wires an encoder body and a posterior head (q(z|x)), a decoder body and a likelihood head
(p(x|z)) and a prior (p(z)), and overrides `train_step` / `test_step` so that `fit`,
`evaluate`, callbacks, XLA and `tf.distribute` work the ordinary Keras way. The objective is the
pure function `keras_vae.objectives.elbo`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import distribute, objectives
from keras_vae.distributions import (
    BernoulliLikelihood,
    DiagonalGaussianPosterior,
    GaussianLikelihood,
    StandardNormalPrior,
)
from keras_vae.networks import MLP

tfd = tfp.distributions

_PACKAGE = "keras_vae"
LIKELIHOODS = ("bernoulli", "gaussian")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VAE(keras.Model):
    """Variational autoencoder trained with the SGVB estimator (Kingma & Welling, 2014).

    Training maximises, per example, the evidence lower bound

        L(x) = E_q(z|x)[log p(x|z)] - beta * KL(q(z|x) || p(z)),

    estimated with L reparameterised samples z^(l) = mu(x) + sigma(x) * eps^(l)
    (`keras_vae.objectives.elbo`), with the analytic KL when the posterior/prior pair has one
    and a Monte Carlo KL otherwise. The loss is -L(x) averaged over the batch, in nats. Under
    a distribution strategy each replica sees `b_r` of the global batch's `B = sum_r b_r`
    examples and the optimizer sums the replicas' gradients, so each replica's mean loss is
    weighted by `b_r / B` (= 1 / num_replicas_in_sync for an even split): the sum is then
    exactly the gradient of the global batch's mean loss.

    XLA (`keras_vae.distribute.resolve_xla`): on one device Keras compiles the whole step; under
    several replicas the step compiles only the replica's loss and gradients, as a pure
    function of the variables' values (keras issue 19005 prevents the Keras way there).

    Metrics (nats per example, averaged over the epoch): `loss` (the beta-weighted negative
    bound that is minimised), `elbo` (the bound with beta = 1), `reconstruction`
    (E_q[log p(x|z)]) and `kl`.

    Args:
        encoder: Body mapping x `[batch, *image_shape]` to features.
        posterior: Head mapping features to q(z|x), for example `DiagonalGaussianPosterior`.
        decoder: Body mapping z `[..., latent_dim]` to features.
        likelihood: Head mapping features to p(x|z), e.g. `BernoulliLikelihood`.
        prior: p(z); defaults to `StandardNormalPrior(posterior.latent_dim)`.
        num_samples: L, Monte Carlo samples of z per example in training and evaluation.
        beta: Weight of the KL term in the training loss (1 is the ELBO).
        analytic_kl: True, False, or "auto" (closed form when TFP registers one).
        seed: Seed of the model's own noise (sampling z); None draws a random seed.
        **kwargs: Standard `keras.Model` arguments (`name`).

    Example:
        >>> vae = keras_vae.mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500)
        >>> vae.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> vae.fit(train_images, epochs=10, batch_size=100)
        >>> q = vae.encode(x)            # tfd distribution over z
        >>> images = vae.sample(16)      # E[x|z], z ~ p(z)
    """

    def __init__(
        self,
        encoder: keras.layers.Layer,
        posterior: keras.layers.Layer,
        decoder: keras.layers.Layer,
        likelihood: keras.layers.Layer,
        prior: keras.layers.Layer | None = None,
        num_samples: int = 1,
        beta: float = 1.0,
        analytic_kl: bool | str = "auto",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                f"num_samples must be a positive int. Received: num_samples={num_samples!r}"
            )
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
            raise ValueError(f"beta must be a number >= 0. Received: beta={beta!r}")
        if analytic_kl not in (True, False, "auto"):
            raise ValueError(
                f"analytic_kl must be True, False or 'auto'. Received: analytic_kl={analytic_kl!r}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None. Received: seed={seed!r}")
        latent_dim = getattr(posterior, "latent_dim", None)
        if latent_dim is None:
            raise ValueError(
                "posterior must be a head with a `latent_dim` attribute, such as "
                f"DiagonalGaussianPosterior. Received: posterior={posterior!r}"
            )
        self.encoder = encoder
        self.posterior = posterior
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior = prior if prior is not None else StandardNormalPrior(latent_dim, name="prior")
        self.latent_dim = int(latent_dim)
        self.num_samples = num_samples
        self.beta = float(beta)
        self.analytic_kl = analytic_kl
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="noise_seed")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.xla = "off"  # set by compile()
        self._compiled_replica_step = None

    # ----------------------------------------------------------------------------- building
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
        ):
            if not layer.built:
                layer.build(shape)
        self.built = True

    def compile(self, optimizer="adam", jit_compile: bool | str | None = None, **kwargs):
        """Configures training; `jit_compile=None` means keras_vae's XLA policy.

        `self.xla` records the result: `"step"` on one device, `"replica"` under several
        replicas, `"off"` when not wanted or not possible (see
        `keras_vae.distribute.resolve_xla`). `loss` must not be given: the VAE's loss is its
        negative ELBO.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                "VAE.compile() takes no `loss`: the model minimises its negative ELBO. "
                f"Received: loss={kwargs['loss']!r}"
            )
        self.xla = distribute.resolve_xla(jit_compile, self.distribute_strategy)
        self._compiled_replica_step = None  # made on first use, see _replica_loss_and_gradients
        super().compile(optimizer=optimizer, jit_compile=self.xla == "step", **kwargs)

    def get_compile_config(self):
        if not self.compiled:
            return {}
        return {"optimizer": keras.saving.serialize_keras_object(self.optimizer)}

    def compile_from_config(self, config):
        """Restores the optimizer of a saved model so that `fit` can continue."""
        optimizer = keras.saving.deserialize_keras_object(config["optimizer"])
        self.compile(optimizer=optimizer)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # --------------------------------------------------------------------------- inference
    def encode(self, x: tf.Tensor):
        """q(z|x): a distribution with batch shape [batch] and event shape [latent_dim]."""
        return self.posterior(self.encoder(x))

    def decode(self, z: tf.Tensor):
        """p(x|z): a distribution with batch shape `z.shape[:-1]` and event `image_shape`."""
        return self.likelihood(self.decoder(z))

    def call(self, inputs, training=None):
        """E[x|z] at z = E[z|x], the deterministic reconstruction (`[batch, *image_shape]`)."""
        return self.decode(self.encode(inputs).mean()).mean()

    def reconstruct(self, x: tf.Tensor, sample_latent: bool = False, seed=None) -> tf.Tensor:
        """E[x|z] for z = E[z|x], or for one z ~ q(z|x) when `sample_latent` is True."""
        q = self.encode(x)
        z = q.sample(seed=self._stateless_seed(seed)) if sample_latent else q.mean()
        return self.decode(z).mean()

    def sample(self, num_samples: int, seed=None, return_latents: bool = False):
        """Draws z ~ p(z) and returns E[x|z], `[num_samples, *image_shape]`.

        Args:
            num_samples: How many images.
            seed: Optional int for reproducible draws; otherwise the model's own seed stream.
            return_latents: Also return z.
        """
        z = self.prior.distribution().sample(num_samples, seed=self._stateless_seed(seed))
        images = self.decode(z).mean()
        return (images, z) if return_latents else images

    # ---------------------------------------------------------------------------- training
    def _stateless_seed(self, seed=None, fold_in_replica: bool = True) -> tf.Tensor:
        """A `[2]` int32 seed for stateless samplers.

        From `seed` if given, else the next state of the model's `SeedGenerator`. Under a
        distribution strategy the replica id is folded in (unless `fold_in_replica` is False),
        so replicas draw different noise.
        """
        if seed is not None:
            return tf.constant([seed, 0], dtype=tf.int32)
        state = tf.cast(self.seed_generator.next() % (2**31 - 1), tf.int32)
        return self._fold_in_replica(state) if fold_in_replica else state

    @staticmethod
    def _fold_in_replica(seed: tf.Tensor) -> tf.Tensor:
        """`seed` made distinct per replica (unchanged outside a multi-replica context)."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return seed
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        return seed + tf.stack([tf.constant(0, tf.int32), replica + 1])

    @staticmethod
    def _batch_position(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(offset, B): where this replica's examples start in the global batch, and its size.

        A distribution strategy splits each global batch into consecutive parts, one per
        replica in replica order; without one, (0, batch).
        """
        local = tf.shape(x)[0]
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return tf.zeros_like(local), local
        sizes = context.all_gather(local[None], axis=0)  # [replicas], in replica order
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        before = tf.range(tf.shape(sizes)[0]) < replica
        return tf.reduce_sum(tf.where(before, sizes, 0)), tf.reduce_sum(sizes)

    def standard_noise(
        self, x: tf.Tensor, seed: tf.Tensor, num_samples: int | None = None, position=None
    ) -> tf.Tensor:
        """eps ~ N(0, I) for the examples `x`, `[L, batch, latent_dim]`, the same for each
        example whatever the replica layout.

        Every replica draws the global batch's noise `[L, B, latent_dim]` from the same seed
        with the Philox algorithm and keeps its own rows, so 1 device, N replicas and N workers
        use exactly the same eps for the same example. (Inside an XLA-compiled step, as on one
        device with `xla="step"`, XLA's Philox kernel draws other numbers from the same seed;
        with `xla="replica"` the noise is drawn outside the compiled function.)
        `position`: `_batch_position(x)` when already known.
        """
        num_samples = num_samples or self.num_samples
        offset, total = position if position is not None else self._batch_position(x)
        eps = tf.random.stateless_normal(
            tf.stack([num_samples, total, self.latent_dim]), seed=seed, alg="philox"
        )
        return eps[:, offset : offset + tf.shape(x)[0]]

    def posterior_samples(self, posterior, num_samples: int, seed=None, noise=None) -> tf.Tensor:
        """z^(l) ~ q(z|x), reparameterised, shape `[num_samples, batch, latent_dim]`.

        Args:
            posterior: q(z|x).
            num_samples: L.
            seed: `[2]` int32 stateless seed; None takes the next one of the model's stream.
            noise: Optional eps `[L, batch, latent_dim]` (see `standard_noise`): a diagonal
                Gaussian q then gives z = mu + sigma * eps; other posteriors sample from
                `seed` (folded with the replica id).
        """
        base = posterior.distribution if isinstance(posterior, tfd.Independent) else None
        if noise is not None and isinstance(base, tfd.Normal):
            return base.loc + base.scale * tf.cast(noise, base.loc.dtype)
        # a posterior without that form samples from the seed, distinct on every replica
        seed = self._stateless_seed() if seed is None else self._fold_in_replica(seed)
        return posterior.sample(num_samples, seed=seed)

    def _use_analytic_kl(self, posterior) -> bool:
        if self.analytic_kl == "auto":
            return objectives.has_analytic_kl(posterior, self.prior.distribution())
        return bool(self.analytic_kl)

    def elbo_terms(
        self, x: tf.Tensor, num_samples: int | None = None, seed=None, noise=None
    ) -> objectives.ElboTerms:
        """The ELBO and its parts for a batch `x`, each `[batch]` in nats.

        Args:
            x: Examples `[batch, *image_shape]`.
            num_samples: L; defaults to the model's `num_samples`.
            seed: `[2]` int32 seed of the noise eps; None takes the model's seed stream.
            noise: Optional eps `[L, batch, latent_dim]`, see `posterior_samples`.
        """
        num_samples = num_samples or self.num_samples
        if not self.built:  # fit() without a prior call: build here so build_config is saved
            self.build(x.shape)
        posterior = self.encode(x)
        z = self.posterior_samples(posterior, num_samples, seed=seed, noise=noise)
        log_likelihood = self.decode(z).log_prob(x)
        return objectives.elbo(
            log_likelihood,
            posterior,
            self.prior.distribution(),
            z,
            analytic_kl=self._use_analytic_kl(posterior),
        )

    @staticmethod
    def _unpack(data):
        # `fit(dataset)` may give x, (x,), (x, y) or (x, y, sample_weight); y is ignored.
        return data[0] if isinstance(data, (tuple, list)) else data

    def _update_metrics(self, loss, terms: objectives.ElboTerms):
        # every metric is a mean over examples: the batch-mean loss counts once per example,
        # so that replicas with uneven shares and a short last batch are weighted exactly
        batch_size = tf.cast(tf.shape(terms.elbo)[0], loss.dtype)
        self.loss_tracker.update_state(loss, sample_weight=batch_size)
        self.elbo_tracker.update_state(terms.elbo)
        self.reconstruction_tracker.update_state(terms.reconstruction)
        self.kl_tracker.update_state(terms.kl)
        return {m.name: m.result() for m in self.metrics}

    def _loss_and_gradients(self, x, share, seed, noise, values=None):
        """The replica's loss, ELBO terms and the gradients of `share * loss`.

        With `values` (tensors, one per trainable variable) the model runs statelessly on
        them and the gradients are taken with respect to them: a pure function that XLA can
        compile without touching any variable.
        """
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            if values is None:
                terms = self.elbo_terms(x, seed=seed, noise=noise)
                sources, extra_losses = variables, self.losses
            else:
                tape.watch(values)
                mapping = list(zip(variables, values, strict=True))
                with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                    terms = self.elbo_terms(x, seed=seed, noise=noise)
                    extra_losses = self.losses + scope.losses
                sources = values
            loss = objectives.beta_elbo_loss(terms, self.beta)
            if extra_losses:
                loss = loss + tf.add_n(extra_losses)
            # The optimizer sums the replicas' gradients: weight each replica's mean by its
            # share of the global batch so that the sum is the global mean.
            scaled_loss = loss * tf.cast(share, loss.dtype)
        return loss, terms, tape.gradient(scaled_loss, sources)

    def _replica_loss_and_gradients(self, x, share, seed, noise):
        """`_loss_and_gradients` XLA-compiled on the variables' values (xla="replica")."""
        if self._compiled_replica_step is None:

            def pure_step(values, x, share, seed, noise):
                return self._loss_and_gradients(x, share, seed, noise, values=values)

            self._compiled_replica_step = tf.function(pure_step, jit_compile=True)
        values = [tf.convert_to_tensor(v.value) for v in self.trainable_variables]
        return self._compiled_replica_step(values, x, share, seed, noise)

    def train_step(self, data):
        x = self._unpack(data)
        if not self.built:  # fit() without a prior call: build here so build_config is saved
            self.build(x.shape)
        seed = self._stateless_seed(fold_in_replica=False)  # the same on every replica
        position = self._batch_position(x)
        noise = self.standard_noise(x, seed, position=position)
        # b_r / B: the optimizer sums the replicas' gradients of share * (mean loss)
        share = tf.cast(tf.shape(x)[0], tf.float32) / tf.cast(position[1], tf.float32)
        if self.xla == "replica":
            loss, terms, gradients = self._replica_loss_and_gradients(x, share, seed, noise)
        else:
            loss, terms, gradients = self._loss_and_gradients(x, share, seed, noise)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._step_outputs(self._update_metrics(loss, terms))

    def test_step(self, data):
        x = self._unpack(data)
        seed = self._stateless_seed(fold_in_replica=False)
        terms = self.elbo_terms(x, seed=seed, noise=self.standard_noise(x, seed))
        logs = self._update_metrics(objectives.beta_elbo_loss(terms, self.beta), terms)
        return self._step_outputs(logs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds the model and optimizer before a distributed `fit` without reading data.

        Keras 3.15 takes a sample batch from a new iterator over the distributed dataset and
        averages it over the replicas. Both hurt here: the extra iterator advances a
        reshuffling dataset by one epoch (so a strategy would train on other batches than
        one device), and the average fails when a batch splits unevenly ("Inputs to
        operation AddN ... must have the same size"). The VAE knows its input shape from
        its likelihood, so a zero batch of that shape serves instead.
        """
        del iterator, data_batch
        sample = tf.zeros((1, *self.image_shape), dtype=self.compute_dtype)
        return super()._maybe_symbolic_build(data_batch=sample)

    def _step_outputs(self, logs: dict) -> dict:
        """Per-step logs, shaped `[1]` under multi-worker training.

        Keras 3.15 reduces a multi-worker step's outputs with `strategy.reduce(MEAN, axis=0)`,
        which fails on scalars (the error behind keras issue 20585); a `[1]` value reduces to
        the mean over all replicas, a scalar again.
        """
        if distribute.is_multi_worker(self.distribute_strategy):
            return {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def predict_step(self, data):
        return self(self._unpack(data), training=False)

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.elbo_tracker,
            self.reconstruction_tracker,
            self.kl_tracker,
        ]

    # ------------------------------------------------------------------------ serialization
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                name: keras.saving.serialize_keras_object(getattr(self, name))
                for name in ("encoder", "posterior", "decoder", "likelihood", "prior")
            }
        )
        config.update(
            {
                "num_samples": self.num_samples,
                "beta": self.beta,
                "analytic_kl": self.analytic_kl,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("encoder", "posterior", "decoder", "likelihood", "prior"):
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)


def mlp_vae(
    image_shape: Sequence[int],
    latent_dim: int = 20,
    hidden_units: Sequence[int] | int = 500,
    likelihood: str = "bernoulli",
    activation: str = "tanh",
    num_samples: int = 1,
    beta: float = 1.0,
    seed: int | None = None,
    name: str = "vae",
) -> VAE:
    """The AEVB paper's model: MLP encoder and decoder, diagonal Gaussian q(z|x), N(0, I) prior.

    Paper settings: MNIST `mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500)` with a
    Bernoulli decoder; Frey Face `mlp_vae((28, 20, 1), latent_dim=..., hidden_units=200,
    likelihood="gaussian")`.

    Args:
        image_shape: Shape of one example, for example `(28, 28, 1)`.
        latent_dim: Size of z.
        hidden_units: Hidden layer sizes of encoder and decoder (an int is one layer).
        likelihood: `"bernoulli"` (binary or [0, 1] data) or `"gaussian"` (learned variance).
        activation: Hidden activation; the paper uses tanh.
        num_samples: L, Monte Carlo samples per example.
        beta: KL weight of the training loss.
        seed: Seed of the model's noise and of nothing else (weights use Keras' global seed).
        name: Model name.

    Returns:
        An unbuilt `VAE`; it builds on first use or with `vae.build((None, *image_shape))`.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(
            f"likelihood must be one of {LIKELIHOODS}. Received: likelihood={likelihood!r}"
        )
    head_class = BernoulliLikelihood if likelihood == "bernoulli" else GaussianLikelihood
    return VAE(
        encoder=MLP(hidden_units, activation=activation, flatten=True, name="encoder"),
        posterior=DiagonalGaussianPosterior(latent_dim, name="posterior"),
        decoder=MLP(hidden_units, activation=activation, flatten=False, name="decoder"),
        likelihood=head_class(tuple(image_shape), name="likelihood"),
        prior=StandardNormalPrior(latent_dim, name="prior"),
        num_samples=num_samples,
        beta=beta,
        seed=seed,
        name=name,
    )
