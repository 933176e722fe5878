"""Priors p(z) against SciPy densities, closed-form mixture moments and a `.keras` round trip.

The references are computed here from the priors' weights with NumPy: a mixture's log density
is logsumexp_k [log pi_k + log N(z; m_k, C_k)] (scipy.stats.multivariate_normal), and its
moments are E[z] = sum_k pi_k m_k and Cov[z] = sum_k pi_k (C_k + m_k m_k^T) - E[z] E[z]^T.
A VampPrior's components are the model's posterior at the clipped pseudo-inputs, recomputed
here from the encoder's weights (tanh MLP, then the posterior head's recipe).
"""

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test
from scipy import special, stats

import keras_vae
from keras_vae import registry
from keras_vae.parts.priors import MixturePrior, gumbel_max_choice

RNG = np.random.default_rng(3)
SHAPE = (3, 3, 1)
LATENT = 2
MIN_SCALE = 1e-4


def _softplus(x):
    return np.logaddexp(0.0, x)


def _mixture_prior(latent_dim=3, components=4):
    prior = MixturePrior(latent_dim, num_components=components, seed=1)
    prior.build()
    prior.means.assign(2.0 * RNG.normal(size=(components, latent_dim)))
    prior.raw_scales.assign(RNG.normal(size=(components, latent_dim)))
    prior.logits.assign(RNG.normal(size=components))
    return prior


def _mixture_reference(prior):
    """(weights [K], means [K, D], covariances [K, D, D]) from the prior's weights, in NumPy."""
    logits = np.asarray(prior.logits, np.float64)
    scales = _softplus(np.asarray(prior.raw_scales, np.float64)) + 1e-4
    covs = np.stack([np.diag(s**2) for s in scales])
    return special.softmax(logits), np.asarray(prior.means, np.float64), covs


def _vamp_model(posterior):
    model = keras_vae.mlp_vae(
        SHAPE, LATENT, hidden_units=5, prior="vamp", prior_components=4, posterior=posterior,
        seed=2,
    )  # fmt: skip
    model.build((None, *SHAPE))
    kernel = model.posterior.projection.kernel
    kernel.assign(RNG.normal(size=kernel.shape))  # off-diagonal L entries far from zero
    pseudo = RNG.uniform(-0.3, 1.3, size=(4, *SHAPE))  # some outside [0, 1]: clipped
    model.prior.set_pseudo_inputs(pseudo)
    return model


def _vamp_reference(model):
    """The VampPrior's components q(z|clip(u_k)) as (weights, means, covariances), in NumPy."""
    u = np.clip(np.asarray(model.prior.pseudo_inputs, np.float64), 0.0, 1.0).reshape(4, -1)
    (dense,) = model.encoder.dense_layers
    hidden = np.tanh(u @ np.asarray(dense.kernel) + np.asarray(dense.bias))
    head = model.posterior.projection
    raw = hidden @ np.asarray(head.kernel) + np.asarray(head.bias)
    means, rest = raw[:, :LATENT], raw[:, LATENT:]
    if model.posterior.registered_name == "diagonal":
        covs = np.stack([np.diag((_softplus(r) + MIN_SCALE) ** 2) for r in rest])
    else:
        rows, cols = np.tril_indices(LATENT)  # the head's row-major order
        tril = np.zeros((4, LATENT, LATENT))
        tril[:, rows, cols] = rest
        diagonal = np.arange(LATENT)
        tril[:, diagonal, diagonal] = _softplus(tril[:, diagonal, diagonal]) + MIN_SCALE
        covs = tril @ np.swapaxes(tril, 1, 2)
    return np.full(4, 0.25), means, covs


def _mixture_log_prob(z, weights, means, covs):
    terms = [
        np.log(pi) + stats.multivariate_normal(m, c).logpdf(z)
        for pi, m, c in zip(weights, means, covs, strict=True)
    ]
    return special.logsumexp(np.stack(terms), axis=0)


def _mixture_moments(weights, means, covs):
    mean = weights @ means
    second = np.einsum("k,kij->ij", weights, covs + means[:, :, None] * means[:, None, :])
    return mean, second - np.outer(mean, mean)


def test_mixture_log_prob_matches_scipy():
    prior = _mixture_prior()
    z = 2.5 * RNG.normal(size=(2, 6, 3)).astype("float32")  # leading sample and batch axes
    expected = _mixture_log_prob(z, *_mixture_reference(prior))
    np.testing.assert_allclose(prior.distribution().log_prob(z), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("posterior", ["diagonal", "full"])
def test_vamp_log_prob_matches_scipy(posterior):
    model = _vamp_model(posterior)
    reference = _vamp_reference(model)
    if posterior == "full":
        assert np.abs(reference[2][:, 0, 1]).max() > 0.1  # correlated components
    z = 1.5 * RNG.normal(size=(7, LATENT)).astype("float32")
    expected = _mixture_log_prob(z, *reference)
    actual = model.prior.distribution(model).log_prob(z)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.prior_distribution().log_prob(z), expected, rtol=1e-4)
    with pytest.raises(ValueError, match="VampPrior needs the VAE"):
        model.prior.distribution()


def _check_moments(samples, mean, cov, label):
    """Sample mean within 5 standard errors; covariance entries within 5 of theirs."""
    n = len(samples)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * sd / np.sqrt(n), label)
    # Var of a sample covariance entry <= E[(z_i - m_i)^2 (z_j - m_j)^2] / n; bounded via 4th
    # moments of the samples themselves
    centred = samples - mean
    fourth = np.mean(centred[:, :, None] ** 2 * centred[:, None, :] ** 2, axis=0)
    error = np.abs(np.cov(samples.T) - cov)
    np.testing.assert_array_less(error, 5 * np.sqrt(fourth / n), label)


def test_mixture_sample_plain_and_tfp_samples_have_the_mixture_moments():
    prior = _mixture_prior()
    mean, cov = _mixture_moments(*_mixture_reference(prior))
    tf.random.set_seed(0)
    plain = np.asarray(prior.sample_plain(40000), np.float64)
    tfp_samples = np.asarray(prior.distribution().sample(40000, seed=(1, 2)), np.float64)
    assert plain.shape == tfp_samples.shape == (40000, 3)
    _check_moments(plain, mean, cov, "sample_plain")
    _check_moments(tfp_samples, mean, cov, "distribution().sample")
    np.testing.assert_allclose(plain.mean(0), tfp_samples.mean(0), atol=0.1)


@pytest.mark.parametrize("posterior", ["diagonal", "full"])
def test_vamp_sample_plain_and_tfp_samples_have_the_mixture_moments(posterior):
    model = _vamp_model(posterior)
    mean, cov = _mixture_moments(*_vamp_reference(model))
    tf.random.set_seed(0)
    plain = np.asarray(model.prior.sample_plain(40000, model), np.float64)
    tfp_samples = np.asarray(model.prior_distribution().sample(40000, seed=(3, 4)), np.float64)
    _check_moments(plain, mean, cov, "sample_plain")
    _check_moments(tfp_samples, mean, cov, "distribution().sample")


def test_gumbel_max_choice_draws_components_with_softmax_probabilities():
    logits = tf.constant([0.0, 1.0, -1.0, 2.0])
    tf.random.set_seed(1)
    n = 50000
    counts = np.bincount(np.asarray(gumbel_max_choice(logits, n)), minlength=4)
    expected = n * special.softmax(np.asarray(logits))
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < stats.chi2(3).ppf(0.999), (counts, expected)


@pytest.mark.parametrize(
    "prior, posterior",
    [(name, "diagonal") for name in registry.names("prior")] + [("vamp", "full")],
)
def test_vae_with_each_prior_round_trips_through_keras_files(prior, posterior, tmp_path):
    model = keras_vae.mlp_vae(
        SHAPE, LATENT, hidden_units=5, prior=prior, prior_components=3, posterior=posterior,
        seed=4,
    )  # fmt: skip
    model.build((None, *SHAPE))
    for weight in model.prior.weights:  # away from the initial values
        weight.assign(np.asarray(weight) + RNG.normal(scale=0.3, size=weight.shape))
    z = RNG.normal(size=(6, LATENT)).astype("float32")
    restored = run_saving_test(
        model, z, outputs=lambda m, z: m.prior_distribution().log_prob(z), directory=tmp_path
    )
    assert type(restored.prior) is type(model.prior)
    assert restored.prior.get_config() == model.prior.get_config()
