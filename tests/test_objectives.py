"""Objectives against closed forms, Monte Carlo estimates and a NumPy implementation."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special, stats

from keras_vae import objectives

tfd = tfp.distributions
RNG = np.random.default_rng(1)


def _diag_normal(loc, scale):
    return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)


def _posterior_and_prior(batch=4, dim=3):
    loc = RNG.normal(size=(batch, dim)).astype("float32")
    scale = RNG.uniform(0.3, 1.5, size=(batch, dim)).astype("float32")
    prior = _diag_normal(tf.zeros(dim), tf.ones(dim))
    return loc, scale, _diag_normal(loc, scale), prior


def test_closed_form_kl_matches_numpy_formula_and_tfp():
    loc, scale, q, prior = _posterior_and_prior()
    numpy_kl = 0.5 * np.sum(loc**2 + scale**2 - 1.0 - np.log(scale**2), axis=-1)
    np.testing.assert_allclose(
        objectives.gaussian_kl_to_standard_normal(loc, scale).numpy(), numpy_kl, rtol=1e-5
    )
    np.testing.assert_allclose(objectives.kl_divergence(q, prior).numpy(), numpy_kl, rtol=1e-5)
    assert objectives.has_analytic_kl(q, prior)


def test_analytic_kl_agrees_with_monte_carlo_estimate():
    loc, scale, q, prior = _posterior_and_prior()
    z = q.sample(200_000, seed=(3, 4))
    monte_carlo = objectives.kl_divergence(q, prior, z=z, analytic=False).numpy()
    analytic = objectives.kl_divergence(q, prior).numpy()
    # the estimator's standard error is below 0.01 nats here; 0.05 is five of them
    np.testing.assert_allclose(monte_carlo, analytic, atol=0.05)


def _numpy_log_bernoulli(x, logits):
    return np.sum(x * logits - np.logaddexp(0.0, logits), axis=-1)


def test_elbo_matches_numpy_on_the_same_noise():
    batch, dim, pixels, samples = 4, 3, 6, 5
    loc, scale, q, prior = _posterior_and_prior(batch, dim)
    eps = RNG.normal(size=(samples, batch, dim)).astype("float32")
    z = loc + scale * eps  # the reparameterisation, in NumPy
    weights = RNG.normal(size=(dim, pixels)).astype("float32")
    x = RNG.integers(0, 2, size=(batch, pixels)).astype("float32")
    logits = z @ weights  # a linear "decoder"

    log_likelihood = tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), 1).log_prob(x)
    terms = objectives.elbo(log_likelihood, q, prior, tf.constant(z))

    numpy_reconstruction = _numpy_log_bernoulli(x, logits).mean(axis=0)
    numpy_kl = 0.5 * np.sum(loc**2 + scale**2 - 1.0 - np.log(scale**2), axis=-1)
    np.testing.assert_allclose(terms.reconstruction.numpy(), numpy_reconstruction, rtol=1e-5)
    np.testing.assert_allclose(terms.kl.numpy(), numpy_kl, rtol=1e-5)
    np.testing.assert_allclose(terms.elbo.numpy(), numpy_reconstruction - numpy_kl, rtol=1e-5)

    # the Monte Carlo KL variant (SGVB A) in NumPy
    log_q = stats.norm.logpdf(z, loc, scale).sum(-1)
    log_p = stats.norm.logpdf(z).sum(-1)
    mc_terms = objectives.elbo(log_likelihood, q, prior, tf.constant(z), analytic_kl=False)
    np.testing.assert_allclose(mc_terms.kl.numpy(), (log_q - log_p).mean(0), rtol=1e-4)

    # IWAE bound in NumPy
    log_w = _numpy_log_bernoulli(x, logits) + log_p - log_q
    numpy_iwae = special.logsumexp(log_w, axis=0) - np.log(samples)
    iwae = objectives.iwae_bound(log_likelihood, q, prior, tf.constant(z)).numpy()
    np.testing.assert_allclose(iwae, numpy_iwae, rtol=1e-4)
    assert np.all(iwae >= mc_terms.elbo.numpy() - 1e-4)  # Jensen: L_K >= L_1 estimate


def test_beta_loss_weights_only_the_kl():
    terms = objectives.ElboTerms(
        elbo=tf.constant([-3.0, -5.0]),
        reconstruction=tf.constant([-1.0, -2.0]),
        kl=tf.constant([2.0, 3.0]),
    )
    assert float(objectives.beta_elbo_loss(terms, 1.0)) == 4.0  # -(mean(-3, -5))
    assert float(objectives.beta_elbo_loss(terms, 0.5)) == 1.5 + 1.25
    assert float(objectives.beta_elbo_loss(terms, 0.0)) == 1.5


def test_beta_loss_of_an_empty_batch_is_zero_with_zero_gradients():
    # a replica whose share of the last global batch is empty must not turn the step NaN
    reconstruction = tf.Variable(tf.zeros([0]))
    with tf.GradientTape() as tape:
        empty = objectives.ElboTerms(
            elbo=tf.zeros([0]), reconstruction=reconstruction * 2.0, kl=tf.zeros([0])
        )
        loss = objectives.beta_elbo_loss(empty)
    assert float(loss) == 0.0
    assert tape.gradient(loss, reconstruction).shape == (0,)
