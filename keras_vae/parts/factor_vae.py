"""FactorVAE (Kim & Mnih 2018): the ELBO with a total-correlation penalty that a discriminator
on the latents estimates, the discriminator trained with its own optimizer after each update.

The total correlation of the aggregate posterior q(z) is TC = KL(q(z) || prod_j q(z_j)). With
D(z) the probability that z came from q(z) rather than from prod_j q(z_j), the density-ratio
trick gives, for the optimal D,

    TC = E_q(z)[log q(z) - log prod_j q(z_j)] = E_q(z)[log D(z) - log(1 - D(z))]
       = E_q(z)[l(z)],        l = logit D, the discriminator's log-odds.

The VAE minimises per example (registered as the objective `"factorvae"`)

    -1/L sum_l log p(x|z_l) + KL(q(z|x) || p(z)) + gamma * 1/L sum_l l(z_l),  z_l ~ q(z|x),

and after each of its updates the discriminator takes one step of its own Adam on the
cross-entropy of telling the step's samples z_i (label 1) from `permute_dims(z)` (label 0),
whose rows are samples of prod_j q(z_j):

    L_D = 1/B sum_i 1/2 [softplus(-l(z_i)) + softplus(l(z~_i))].

Both use the same batch's samples, as disentanglement_lib does (the paper's Algorithm 1 draws a
second batch for the permuted samples). The discriminator (`TotalCorrelationDiscriminator`)
is the model's `auxiliary_layer`: built, saved (its weights and its optimizer's state) and
restored with the model, not trained by the model's optimizer. The update runs in the trainer's
`after_update` hook, so it works under XLA (fused steps included) and under replicas: the
permutation is of the global batch (every replica gathers the samples, permutes them with the
step's seed, the same on all of them, and keeps its own rows) and each replica's loss is
weighted by its share b_r / B, so N replicas train the discriminator as one device does.

Example:
    ```python
    from keras_vae.parts.factor_vae import FactorVAE
    vae = keras_vae.mlp_vae((64, 64, 1), latent_dim=10, hidden_units=[1200, 1200],
                            objective=FactorVAE(gamma=10.0))
    vae.compile(optimizer=keras.optimizers.Adam(1e-4))
    vae.fit(images, epochs=10, batch_size=64)   # metrics: tc, discriminator_loss, ...
    ```
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_vae import registry
from keras_vae._internal.checks import (
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from keras_vae.parts.objectives import Objective, _kl_terms, batch_mean, sample_posterior

#: The paper's discriminator: 6 hidden layers of 1000 leaky-ReLU units (Kim & Mnih 2018, app. A).
PAPER_DISCRIMINATOR_UNITS = (1000,) * 6


def permute_dims(z: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Each dimension of z `[L, B, D]` permuted independently across the batch axis:

        z~_lij = z_l,pi_lj(i),j,    pi_lj a uniform random permutation of the B rows,

    drawn from the `[2]` seed (stateless: the same seed gives the same permutations). When the
    rows are samples of q(z), the rows of z~ are samples of prod_j q(z_j).
    """
    keys = tf.random.stateless_uniform(tf.shape(z), seed=seed, alg="philox")
    order = tf.argsort(keys, axis=1)  # [L, B, D]: for each (l, j) a permutation of the rows
    columns = tf.transpose(z, [0, 2, 1])  # [L, D, B]
    rows = tf.transpose(order, [0, 2, 1])
    return tf.transpose(tf.gather(columns, rows, batch_dims=2), [0, 2, 1])


def _global_batch(z: tf.Tensor) -> tf.Tensor:
    """The samples `[L, B, D]` of the whole global batch: this replica's rows `[L, b, D]`
    gathered from every replica in replica order (unchanged outside several replicas)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return z
    return context.all_gather(z, axis=1)


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class TotalCorrelationDiscriminator(keras.layers.Layer):
    """FactorVAE's discriminator: an MLP of leaky-ReLU layers giving the log-odds
    l(z) = log D(z) - log(1 - D(z)) that z `[..., D]` came from q(z) rather than from
    prod_j q(z_j), with its own Adam optimizer (built with the layer, saved with it).

    Its variables are not trainable as far as the model is concerned (the layer is frozen): only
    `update` changes them, with its own optimizer.

    Args:
        hidden_units: Sizes of the hidden layers (the paper: six of 1000).
        learning_rate, beta_1, beta_2: Its Adam's (the paper: 1e-4, 0.5, 0.9).
        negative_slope: Slope of the leaky ReLU below 0 (0.2).
        **kwargs: Standard `keras.layers.Layer` arguments (the dtype defaults to float32).
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = PAPER_DISCRIMINATOR_UNITS,
        learning_rate: float = 1e-4,
        beta_1: float = 0.5,
        beta_2: float = 0.9,
        negative_slope: float = 0.2,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # densities stay float32 under a mixed policy
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        if isinstance(hidden_units, int):
            hidden_units = [hidden_units]
        self.hidden_units = [check_positive_int("hidden_units", u) for u in hidden_units]
        self.learning_rate = check_positive_float("learning_rate", learning_rate)
        for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1). Received: {name}={value!r}")
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)
        self.negative_slope = check_nonnegative_float("negative_slope", negative_slope)
        self.hidden = [
            keras.layers.Dense(units, name=f"hidden_{i}", dtype=self.dtype_policy, trainable=False)
            for i, units in enumerate(self.hidden_units)
        ]
        self.logit = keras.layers.Dense(1, name="logit", dtype=self.dtype_policy, trainable=False)
        self.optimizer = None  # made in build(): under the strategy the model is built in

    def build(self, input_shape):
        shape = (None, int(input_shape[-1]))
        for layer in (*self.hidden, self.logit):
            layer.build(shape)
            shape = (None, layer.units)
        self.optimizer = keras.optimizers.Adam(
            self.learning_rate, beta_1=self.beta_1, beta_2=self.beta_2, name="discriminator_adam"
        )
        self.optimizer.build(self.weights)
        self.built = True

    def call(self, z):
        """l(z), the log-odds `[...]` for z `[..., D]`."""
        h = z
        for layer in self.hidden:
            h = tf.nn.leaky_relu(layer(h), alpha=self.negative_slope)
        return tf.squeeze(self.logit(h), axis=-1)

    def classify(self, real: tf.Tensor, permuted: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-example loss and accuracy `[b]` (means over the L samples) of telling `real`
        (label 1) from `permuted` (label 0), both `[L, b, D]`:

            loss_i = 1/2 [softplus(-l(z_i)) + softplus(l(z~_i))],
            accuracy_i = 1/2 [1(l(z_i) > 0) + 1(l(z~_i) < 0)].
        """
        real_logits, permuted_logits = self(real), self(permuted)
        losses = 0.5 * (tf.nn.softplus(-real_logits) + tf.nn.softplus(permuted_logits))
        hits = tf.cast(real_logits > 0, losses.dtype) + tf.cast(permuted_logits < 0, losses.dtype)
        return tf.reduce_mean(losses, axis=0), tf.reduce_mean(0.5 * hits, axis=0)

    def pairs(self, latents, seed, position) -> tuple[tf.Tensor, tf.Tensor]:
        """(this replica's samples, its rows of the permuted global batch), both `[L, b, D]`."""
        real = tf.stop_gradient(tf.cast(latents, self.compute_dtype))
        offset = position[0]
        permuted = permute_dims(_global_batch(real), seed)
        return real, permuted[:, offset : offset + tf.shape(real)[1]]

    def score(self, latents, seed, position) -> dict[str, tf.Tensor]:
        """`discriminator_loss` and `discriminator_accuracy` `[b]`, without an update."""
        losses, accuracy = self.classify(*self.pairs(latents, seed, position))
        return {"discriminator_loss": losses, "discriminator_accuracy": accuracy}

    def update(self, latents, seed, position) -> dict[str, tf.Tensor]:
        """One step of the discriminator's optimizer on `L_D` of the step's samples `latents`
        `[L, b, D]` (this replica's rows of the global batch at `position` = (offset, B)).
        The gradient is that of (b / B) * (the replica's mean loss): the optimizer's sum over
        the replicas is the global batch's mean. Returns `score`'s terms (before the step)."""
        real, permuted = self.pairs(latents, seed, position)
        variables = self.weights
        values = [v.value for v in variables]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(values)
            losses, accuracy = self.classify(real, permuted)
            share = tf.cast(tf.shape(real)[1], losses.dtype) / tf.cast(position[1], losses.dtype)
            loss = share * batch_mean(losses)
        self.optimizer.apply(tape.gradient(loss, values), variables)
        return {"discriminator_loss": losses, "discriminator_accuracy": accuracy}

    def get_config(self):
        config = super().get_config()
        config.pop("trainable", None)  # always frozen for the model
        return {
            **config,
            "hidden_units": list(self.hidden_units),
            "learning_rate": self.learning_rate,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "negative_slope": self.negative_slope,
        }


def _permutation_seed(seed: tf.Tensor) -> tf.Tensor:
    """The permutation's seed, from the step's (distinct from the model's noise)."""
    return tf.random.experimental.stateless_fold_in(seed, 2)


@registry.register("objective", "factorvae")
class FactorVAE(Objective):
    """FactorVAE (Kim & Mnih 2018): the ELBO plus gamma times the discriminator's estimate of
    the total correlation (module docstring):

        loss = 1/B sum_i [-1/L sum_l log p(x_i|z_il) + KL_i + gamma * 1/L sum_l l(z_il)]

    KL_i in closed form where the prior has one, else its Monte Carlo estimate. Terms reported
    (per example): `elbo` (the true bound), `reconstruction`, `kl`, `tc` (the discriminator's
    estimate 1/L sum_l l(z_il), nats), and from the discriminator's step `discriminator_loss`
    (its cross-entropy, nats) and `discriminator_accuracy` (0.5 is chance). The objective
    owns its discriminator (`auxiliary_layer`): give each model its own FactorVAE.

    Args:
        num_samples: L, samples of z per example.
        gamma: Weight of the total correlation (Locatello et al. 2019 swept 10 to 100).
        discriminator_units: Hidden layer sizes of the discriminator (default the paper's six
            of 1000; smaller ones cost less per step on a CPU).
        discriminator_learning_rate, discriminator_beta_1, discriminator_beta_2: The
            discriminator's Adam (the paper's 1e-4, 0.5, 0.9).
    """

    metric_names = (
        "elbo", "reconstruction", "kl", "tc", "discriminator_loss", "discriminator_accuracy",
    )  # fmt: skip

    def __init__(
        self,
        num_samples=1,
        gamma=10.0,
        discriminator_units=PAPER_DISCRIMINATOR_UNITS,
        discriminator_learning_rate=1e-4,
        discriminator_beta_1=0.5,
        discriminator_beta_2=0.9,
    ):
        super().__init__(num_samples)
        self.gamma = check_nonnegative_float("gamma", gamma)
        self.discriminator = TotalCorrelationDiscriminator(
            discriminator_units,
            learning_rate=discriminator_learning_rate,
            beta_1=discriminator_beta_1,
            beta_2=discriminator_beta_2,
            name="discriminator",
        )
        self.auxiliary_layer = self.discriminator

    def __call__(self, model, x, noise, step):
        parameters, q, z, prior, reconstruction = sample_posterior(model, x, noise)
        kl, _ = _kl_terms(model, q, prior, z, "auto")
        tc = tf.reduce_mean(tf.cast(self.discriminator(z), kl.dtype), axis=0)
        loss = batch_mean(kl + self.gamma * tc - reconstruction)
        terms = {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl,
                 "tc": tc, "latents": tf.stop_gradient(z)}  # fmt: skip
        return loss, terms

    def after_update(self, model, terms, seed, position):
        """The discriminator's step on the step's samples (its `update`)."""
        return self.discriminator.update(terms["latents"], _permutation_seed(seed), position)

    def held_out_terms(self, model, terms, seed, position):
        return self.discriminator.score(terms["latents"], _permutation_seed(seed), position)

    def get_config(self):
        d = self.discriminator
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "discriminator_units": list(d.hidden_units),
            "discriminator_learning_rate": d.learning_rate,
            "discriminator_beta_1": d.beta_1,
            "discriminator_beta_2": d.beta_2,
        }
