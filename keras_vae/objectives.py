"""Variational objectives as pure functions of distributions and samples (no Keras state).

Notation: x is a batch of B examples, z has shape [L, B, latent_dim] (L Monte Carlo samples per
example, drawn by the caller from q(z|x) with the reparameterisation z = mu + sigma * eps), and
`log_likelihood` is log p(x|z) with shape [L, B]. Every returned term has shape [B] and is in
nats.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


class ElboTerms(NamedTuple):
    """The parts of the evidence lower bound, each `[batch]`, in nats.

    Attributes:
        elbo: reconstruction - kl (always with weight 1: the true bound).
        reconstruction: E_q[log p(x|z)], the Monte Carlo expected log-likelihood.
        kl: KL(q(z|x) || p(z)), analytic or a Monte Carlo estimate.
    """

    elbo: tf.Tensor
    reconstruction: tf.Tensor
    kl: tf.Tensor


def gaussian_kl_to_standard_normal(loc: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """KL(N(mu, diag(sigma^2)) || N(0, I)) in closed form (AEVB paper, appendix B).

        KL = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)

    Args:
        loc: mu, `[..., latent_dim]`.
        scale: sigma > 0, `[..., latent_dim]`.

    Returns:
        The divergence summed over the last axis, `[...]`.
    """
    return -0.5 * tf.reduce_sum(
        1.0 + 2.0 * tf.math.log(scale) - tf.square(loc) - tf.square(scale), axis=-1
    )


def has_analytic_kl(posterior: tfd.Distribution, prior: tfd.Distribution) -> bool:
    """Whether TFP has a registered closed form for KL(posterior || prior)."""
    try:
        tfd.kl_divergence(posterior, prior)
    except NotImplementedError:
        return False
    return True


def kl_divergence(
    posterior: tfd.Distribution,
    prior: tfd.Distribution,
    z: tf.Tensor | None = None,
    analytic: bool = True,
) -> tf.Tensor:
    """KL(q(z|x) || p(z)) per example.

    Analytic when `analytic` is True (TFP's registered closed form; for a diagonal Gaussian
    against N(0, I) it equals `gaussian_kl_to_standard_normal`). Otherwise the Monte Carlo
    estimate over the L samples z^(l) ~ q(z|x):

        KL ~= 1/L sum_l [log q(z^(l)|x) - log p(z^(l))]

    Args:
        posterior: q(z|x), batch shape [B], event shape [latent_dim].
        prior: p(z), event shape [latent_dim].
        z: Samples `[L, B, latent_dim]`; required when `analytic` is False.
        analytic: Use the closed form.

    Returns:
        `[B]` tensor in nats.
    """
    if analytic:
        return tfd.kl_divergence(posterior, prior)
    if z is None:
        raise ValueError("kl_divergence(analytic=False) needs the samples z. Received: z=None")
    return tf.reduce_mean(posterior.log_prob(z) - prior.log_prob(z), axis=0)


def elbo(
    log_likelihood: tf.Tensor,
    posterior: tfd.Distribution,
    prior: tfd.Distribution,
    z: tf.Tensor,
    analytic_kl: bool = True,
) -> ElboTerms:
    """The SGVB estimator of the evidence lower bound (AEVB paper, equation 7 and 10).

        L(x) = 1/L sum_l log p(x|z^(l)) - KL(q(z|x) || p(z)),
        z^(l) = mu(x) + sigma(x) * eps^(l),  eps^(l) ~ N(0, I)

    With `analytic_kl=False` the KL term is the Monte Carlo estimate of `kl_divergence`, which
    makes this the paper's first estimator (equation 6, SGVB A).

    Args:
        log_likelihood: log p(x|z^(l)), `[L, B]`.
        posterior: q(z|x), batch shape [B].
        prior: p(z).
        z: The samples the likelihood was evaluated at, `[L, B, latent_dim]`.
        analytic_kl: Use the closed-form KL.

    Returns:
        `ElboTerms(elbo, reconstruction, kl)`, each `[B]`.
    """
    reconstruction = tf.reduce_mean(log_likelihood, axis=0)
    kl = kl_divergence(posterior, prior, z=z, analytic=analytic_kl)
    return ElboTerms(elbo=reconstruction - kl, reconstruction=reconstruction, kl=kl)


def beta_elbo_loss(terms: ElboTerms, beta: float = 1.0) -> tf.Tensor:
    """The training loss: the negative beta-weighted bound, averaged over the batch.

        loss = -1/B sum_i [reconstruction_i - beta * kl_i]

    beta = 1 is the ELBO of the paper; beta != 1 is the beta-VAE objective (Higgins et al.).
    An empty batch (B = 0, e.g. a replica's share of a last batch smaller than the number of
    replicas) gives 0, not NaN.
    """
    per_example = terms.reconstruction - beta * terms.kl
    count = tf.cast(tf.maximum(tf.size(per_example), 1), per_example.dtype)
    return -tf.reduce_sum(per_example) / count


def log_importance_weights(
    log_likelihood: tf.Tensor,
    posterior: tfd.Distribution,
    prior: tfd.Distribution,
    z: tf.Tensor,
) -> tf.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), `[K, B]`, for z_k ~ q(z|x).

    Their mean over k estimates the ELBO (with Monte Carlo KL); their log-mean-exp is the
    importance-weighted bound `iwae_bound`.
    """
    return log_likelihood + prior.log_prob(z) - posterior.log_prob(z)


def iwae_bound(
    log_likelihood: tf.Tensor,
    posterior: tfd.Distribution,
    prior: tfd.Distribution,
    z: tf.Tensor,
) -> tf.Tensor:
    """The importance-weighted bound of Burda et al. (2016) with K = L samples.

        L_K(x) = log 1/K sum_k p(x|z^(k)) p(z^(k)) / q(z^(k)|x),  z^(k) ~ q(z|x)

    L_1 is the ELBO; L_K increases with K and tends to log p(x).

    Args:
        log_likelihood: log p(x|z^(k)), `[K, B]`.
        posterior: q(z|x), batch shape [B].
        prior: p(z).
        z: The samples, `[K, B, latent_dim]`.

    Returns:
        `[B]` tensor in nats.
    """
    log_weights = log_importance_weights(log_likelihood, posterior, prior, z)
    num_samples = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(num_samples)
