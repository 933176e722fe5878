"""Objectives that trade reconstruction for disentangled codes: beta-TCVAE and the
capacity-annealed beta-VAE, registered as `"betatc"` and `"annealed_capacity"`.

Both follow the `keras_vae.objectives.Objective` interface: called with the model, a batch x
of B examples, the trainer's noise eps `[L, B, noise_size]` and the optimizer step, they return
the batch-mean loss and per-example terms `[B]` in nats that `fit` reports. As for ELBO and
IWAE, the reported `elbo` is always the true bound (reconstruction - KL, KL in closed form
where the prior has one), whatever is optimised.

The KL decomposition of beta-TCVAE (Chen et al. 2018, eq. 2; Hoffman & Johnson 2016), with
q(z) = 1/N sum_n q(z|x_n) the aggregate posterior over the N training examples:

    E_x[KL(q(z|x) || p(z))]
        = I_q(x; z) + KL(q(z) || prod_j q(z_j)) + E_q(z)[sum_j log q(z_j) - log p(z)]
        =    mi     +            tc             +               dim_kl

(for a factorised prior the last term is sum_j KL(q(z_j) || p(z_j))). The log densities of
the aggregate posterior are estimated on the batch (`aggregate_log_densities`).

Example:
    ```python
    from keras_vae.parts import disentangling_objectives as dis_obj
    vae = keras_vae.mlp_vae((64, 64, 1), latent_dim=10,
                            objective=dis_obj.BetaTC(beta=6.0, dataset_size=737_280))
    capacity = dis_obj.AnnealedCapacity(gamma=1000.0, capacity=25.0, capacity_steps=100_000)
    vae = keras_vae.mlp_vae((64, 64, 1), latent_dim=10, objective=capacity)
    ```
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import registry
from keras_vae._internal.checks import check_nonnegative_float
from keras_vae.parts.objectives import (
    Objective,
    _kl_terms,
    batch_mean,
    sample_posterior,
)

tfd = tfp.distributions

TC_ESTIMATORS = ("mws", "importance")


def log_aggregate_weights(
    batch_size, dataset_size: int, estimator: str = "mws", dtype=tf.float32
) -> tf.Tensor:
    """log w `[M, M]`, the weights of q(z_i) ~= sum_j w_ij q(z_i|x_j) for a batch of M:

    * `"mws"`, minibatch weighted sampling as printed by Chen et al. (2018, eq. in sec. 4.1):
      w_ij = 1 / (N M) for all j;
    * `"importance"`: w_ii = 1/N for the example the sample came from and
      w_ij = (N - 1) / (N (M - 1)) for the others: an unbiased estimate of
      q(z_i) = 1/N q(z_i|x_i) + 1/N sum_{n != i} q(z_i|x_n) when the batch is drawn without
      replacement, so its log is a consistent estimate as M grows.

    The two differ by terms that depend on the encoder, so they train differently; "mws"'s
    value is off by roughly log N (overlapping posteriors) to log M (disjoint ones).
    """
    size = tf.cast(batch_size, dtype)
    n = float(dataset_size)
    if estimator == "mws":
        return tf.fill(tf.stack([batch_size, batch_size]), -math.log(n) - tf.math.log(size))
    others = math.log((n - 1.0) / n) - tf.math.log(tf.maximum(size - 1.0, 1.0))
    eye = tf.eye(batch_size, dtype=dtype)
    return eye * -math.log(n) + (1.0 - eye) * others


def aggregate_log_densities(
    log_q_pairs: tf.Tensor,
    log_q_pairs_per_dim: tf.Tensor,
    dataset_size: int,
    estimator: str = "mws",
) -> tuple[tf.Tensor, tf.Tensor]:
    """Batch estimates of log q(z_i) and sum_j log q(z_ij) for the aggregate posterior:

        log q(z_i)           ~= logsumexp_k [log q(z_i | x_k) + log w_ik],
        sum_j log q(z_ij)    ~= sum_j logsumexp_k [log q(z_ij | x_k) + log w_ik],

    w from `log_aggregate_weights`.

    Args:
        log_q_pairs: log q(z_i | x_k), `[..., M, M]` (sample i, example k).
        log_q_pairs_per_dim: log q(z_ij | x_k) of each dimension j, `[..., M, M, D]`.
        dataset_size: N, examples in the training set.
        estimator: `"mws"` or `"importance"`.

    Returns:
        `(log_qz, log_prod_marginals)`, each `[..., M]`.
    """
    size = tf.shape(log_q_pairs)[-1]
    log_w = log_aggregate_weights(size, dataset_size, estimator, log_q_pairs.dtype)
    log_qz = tf.reduce_logsumexp(log_q_pairs + log_w, axis=-1)
    marginals = tf.reduce_logsumexp(log_q_pairs_per_dim + log_w[..., None], axis=-2)
    return log_qz, tf.reduce_sum(marginals, axis=-1)


def decomposed_kl(
    log_q_pairs: tf.Tensor,
    log_q_pairs_per_dim: tf.Tensor,
    log_prior: tf.Tensor,
    dataset_size: int,
    estimator: str = "mws",
) -> dict[str, tf.Tensor]:
    """The three parts of the KL term of Chen et al. (2018) for each sample z_i ~ q(z|x_i):

        mi_i     = log q(z_i | x_i) - log q(z_i)
        tc_i     = log q(z_i) - sum_j log q(z_ij)
        dim_kl_i = sum_j log q(z_ij) - log p(z_i)

    (aggregate densities from `aggregate_log_densities`); their batch means estimate
    I_q(x; z), the total correlation KL(q(z) || prod_j q(z_j)) and the dimension-wise KL, and
    mi + tc + dim_kl = log q(z_i|x_i) - log p(z_i), the Monte Carlo KL, for every sample.

    Args:
        log_q_pairs: log q(z_i | x_k), `[..., M, M]`.
        log_q_pairs_per_dim: `[..., M, M, D]`.
        log_prior: log p(z_i), `[..., M]`.
        dataset_size: N.
        estimator: `"mws"` or `"importance"`.

    Returns:
        `{"mi", "tc", "dim_kl"}`, each `[..., M]`.
    """
    log_qz, log_prod = aggregate_log_densities(
        log_q_pairs, log_q_pairs_per_dim, dataset_size, estimator
    )
    own = tf.linalg.diag_part(log_q_pairs)
    return {"mi": own - log_qz, "tc": log_qz - log_prod, "dim_kl": log_prod - log_prior}


def _marginal_scales(parameters: dict) -> tf.Tensor:
    """Standard deviations of q(z_j|x), `[B, D]`: `scale`, or the row norms of `scale_tril`."""
    if "scale" in parameters:
        return parameters["scale"]
    if "scale_tril" in parameters:
        return tf.sqrt(tf.reduce_sum(tf.square(parameters["scale_tril"]), axis=-1))
    raise ValueError(
        "BetaTC needs a Gaussian posterior (parameters loc and scale or scale_tril). "
        f"Received parameters: {sorted(parameters)}"
    )


def pairwise_log_q(model, parameters: dict, z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """log q(z_li | x_k) `[L, B, B]` and its per-dimension marginals `[L, B, B, D]` for the
    samples z `[L, B, D]` and the batch's posteriors (every sample under every example's q)."""
    loc = parameters["loc"]
    marginal = tfd.Normal(loc, _marginal_scales(parameters))  # batch [B, D]
    per_dim = marginal.log_prob(z[..., :, None, :])  # [L, B(sample), B(example), D]
    if set(parameters) == {"loc", "scale"}:  # diagonal: the joint is the sum
        return tf.reduce_sum(per_dim, axis=-1), per_dim
    q = model.posterior.distribution(**parameters)
    return q.log_prob(z[..., :, None, :]), per_dim


def _check_dataset_size(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(
            "dataset_size must be an int >= 2, the number of training examples N (737280 for "
            f"dSprites). Received: dataset_size={value!r}"
        )
    return value


@registry.register("objective", "betatc")
class BetaTC(Objective):
    """beta-TCVAE (Chen et al. 2018): the ELBO with its KL term split into index-code mutual
    information, total correlation and dimension-wise KL (`decomposed_kl`), each weighted:

        loss = 1/B sum_i [-1/L sum_l log p(x_i|z_il) + alpha mi_i + beta tc_i + gamma dim_kl_i]

    alpha = gamma = 1 and beta > 1 is the paper's beta-TCVAE; alpha = beta = gamma = 1 is the
    ELBO with a Monte Carlo KL. Terms reported (nats per example): `elbo` (the true bound),
    `reconstruction`, `kl`, and the batch estimates `mi`, `tc`, `dim_kl`. The aggregate
    posterior is estimated on each replica's share of the batch. The posterior must be
    Gaussian (diagonal or full covariance). With `"mws"` the reported `tc` (and `mi`,
    `dim_kl`) carry the estimator's offsets (about (D - 1) log N on `tc` when posteriors
    overlap, `log_aggregate_weights`); `"importance"` reports values near the true ones.

    Args:
        num_samples: L, samples of z per example.
        alpha: Weight of the index-code mutual information.
        beta: Weight of the total correlation.
        gamma: Weight of the dimension-wise KL.
        dataset_size: N, examples in the training set (enters the weights).
        estimator: `"importance"` (the default: unbiased weights for q(z_i),
            `log_aggregate_weights`, whose reported `tc` is near the true value) or `"mws"`
            (the paper's minibatch weighted sampling, whose `tc` is inflated by about
            (D - 1) log N).
    """

    metric_names = ("elbo", "reconstruction", "kl", "mi", "tc", "dim_kl")

    def __init__(
        self,
        num_samples=1,
        alpha=1.0,
        beta=6.0,
        gamma=1.0,
        dataset_size=737_280,
        estimator="importance",
    ):
        super().__init__(num_samples)
        self.alpha = check_nonnegative_float("alpha", alpha)
        self.beta = check_nonnegative_float("beta", beta)
        self.gamma = check_nonnegative_float("gamma", gamma)
        self.dataset_size = _check_dataset_size(dataset_size)
        if estimator not in TC_ESTIMATORS:
            raise ValueError(
                f"estimator must be one of {TC_ESTIMATORS}. Received: estimator={estimator!r}"
            )
        self.estimator = estimator

    def __call__(self, model, x, noise, step):
        parameters, q, z, prior, reconstruction = sample_posterior(model, x, noise)
        pairs, pairs_per_dim = pairwise_log_q(model, parameters, z)
        parts = decomposed_kl(
            pairs, pairs_per_dim, prior.log_prob(z), self.dataset_size, self.estimator
        )
        parts = {name: tf.reduce_mean(value, axis=0) for name, value in parts.items()}
        kl, _ = _kl_terms(model, q, prior, z, "auto")
        penalty = self.alpha * parts["mi"] + self.beta * parts["tc"] + self.gamma * parts["dim_kl"]
        loss = batch_mean(penalty - reconstruction)
        terms = {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
        return loss, {**terms, **parts}

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "dataset_size": self.dataset_size,
            "estimator": self.estimator,
        }


def capacity_at(step, capacity: float, capacity_steps: int) -> tf.Tensor:
    """The target KL of the capacity schedule (Burgess et al. 2018) at training step t:

        C_t = C_max * min(1, t / T)     (T = capacity_steps; T = 0: C_max from the start)

    A function of the step alone, so a resumed run continues the schedule where it stopped.
    Returns a float32 scalar tensor, in nats.
    """
    if not capacity_steps:
        return tf.constant(capacity, tf.float32)
    progress = tf.cast(step, tf.float32) / float(capacity_steps)
    return capacity * tf.minimum(1.0, progress)


@registry.register("objective", "annealed_capacity")
class AnnealedCapacity(Objective):
    """The capacity-annealed beta-VAE (Burgess et al. 2018, eq. 8): the KL of each example is
    pulled towards a target capacity C_t that grows linearly during training,

        loss = 1/B sum_i [-1/L sum_l log p(x_i|z_il) + gamma |KL_i - C_t|],
        C_t = `capacity_at(t, capacity, capacity_steps)`.

    The paper trained dSprites with gamma = 1000 and C growing from 0 to 25 nats. KL_i is in
    closed form where the prior has one (else the Monte Carlo estimate). Terms reported:
    `elbo` (the true bound), `reconstruction`, `kl`, and `capacity` (C_t, the same for every
    example: its epoch mean is the mean target).

    Args:
        num_samples: L, samples of z per example.
        gamma: Weight of |KL - C|.
        capacity: C_max in nats.
        capacity_steps: T, optimizer steps over which C grows from 0 to C_max (0: constant).
    """

    metric_names = ("elbo", "reconstruction", "kl", "capacity")

    def __init__(self, num_samples=1, gamma=1000.0, capacity=25.0, capacity_steps=100_000):
        super().__init__(num_samples)
        self.gamma = check_nonnegative_float("gamma", gamma)
        self.capacity = check_nonnegative_float("capacity", capacity)
        if (
            isinstance(capacity_steps, bool)
            or not isinstance(capacity_steps, int)
            or (capacity_steps < 0)
        ):
            raise ValueError(
                f"capacity_steps must be an int >= 0. Received: capacity_steps={capacity_steps!r}"
            )
        self.capacity_steps = capacity_steps

    def __call__(self, model, x, noise, step):
        parameters, q, z, prior, reconstruction = sample_posterior(model, x, noise)
        kl, _ = _kl_terms(model, q, prior, z, "auto")
        target = tf.cast(capacity_at(step, self.capacity, self.capacity_steps), kl.dtype)
        loss = batch_mean(self.gamma * tf.abs(kl - target) - reconstruction)
        terms = {
            "elbo": reconstruction - kl,
            "reconstruction": reconstruction,
            "kl": kl,
            "capacity": tf.fill(tf.shape(kl), target),
        }
        return loss, terms

    def get_config(self):
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "capacity": self.capacity,
            "capacity_steps": self.capacity_steps,
        }
