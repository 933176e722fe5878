"""Importance-sampled log-likelihood against a model whose log p(x) is known in closed form.

A linear-Gaussian decoder p(x|z) = N(W z + b, s^2 I) with prior N(0, I) has
p(x) = N(b, W W^T + s^2 I). With orthogonal columns of W the exact posterior is a diagonal
Gaussian, N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^-1, which the
DiagonalGaussianPosterior head can represent exactly.
"""

import math

import keras
import numpy as np
import pytest
from scipy import stats

from keras_vae import VAE, evaluation
from keras_vae.distributions import DiagonalGaussianPosterior, GaussianLikelihood

D, LATENT, NOISE = 4, 2, 0.5
RNG = np.random.default_rng(5)
Q, _ = np.linalg.qr(RNG.normal(size=(D, D)))
W = Q[:, :LATENT] * np.array([1.5, 0.7])  # orthogonal columns
B = RNG.normal(size=D)
S = np.linalg.inv(np.eye(LATENT) + W.T @ W / NOISE**2)  # diagonal
assert np.allclose(S, np.diag(np.diag(S)))


def _softplus_inverse(y):
    return np.log(np.expm1(y))


def _linear_gaussian_vae(scale_factor=1.0, loc_shift=0.0):
    """The exact model, with the encoder optionally made worse than the true posterior."""
    model = VAE(
        encoder=keras.layers.Flatten(),
        posterior=DiagonalGaussianPosterior(LATENT, min_scale=1e-4),
        decoder=keras.layers.Identity(),
        likelihood=GaussianLikelihood((D,), min_scale=1e-3, mean_activation="linear"),
    )
    model.build((None, D))
    gain = S @ W.T / NOISE**2  # posterior mean = gain (x - b)
    post_scale = np.sqrt(np.diag(S)) * scale_factor
    model.posterior.projection.set_weights(
        [
            np.concatenate([gain.T, np.zeros((D, LATENT))], axis=1),
            np.concatenate([-gain @ B + loc_shift, _softplus_inverse(post_scale - 1e-4)]),
        ]
    )
    model.likelihood.projection.set_weights(
        [
            np.concatenate([W.T, np.zeros((LATENT, D))], axis=1),
            np.concatenate([B, np.full(D, _softplus_inverse(NOISE - 1e-3))]),
        ]
    )
    return model


def _data(n=200):
    z = RNG.normal(size=(n, LATENT))
    return (z @ W.T + B + NOISE * RNG.normal(size=(n, D))).astype("float32")


def _exact_log_px(x):
    return stats.multivariate_normal(B, W @ W.T + NOISE**2 * np.eye(D)).logpdf(x)


def test_exact_posterior_gives_the_exact_log_likelihood_with_any_k():
    x = _data()
    result = evaluation.importance_sampled_log_likelihood(
        _linear_gaussian_vae(), x, num_samples=10, verbose=0
    )
    np.testing.assert_allclose(result["log_px"], _exact_log_px(x), atol=2e-3)
    # with q = p(z|x) the ELBO is log p(x) too
    np.testing.assert_allclose(result["elbo"], _exact_log_px(x), atol=2e-3)


def test_estimate_tightens_towards_log_px_as_k_grows_with_an_imperfect_encoder():
    x = _data(100)
    model = _linear_gaussian_vae(scale_factor=1.6, loc_shift=0.3)
    exact = _exact_log_px(x).mean()
    estimates = {
        k: evaluation.importance_sampled_log_likelihood(
            model, x, num_samples=k, chunk_size=256, verbose=0
        )
        for k in (1, 10, 2000)
    }
    means = {k: r["log_px"].mean() for k, r in estimates.items()}
    elbo = estimates[2000]["elbo"].mean()
    assert elbo < exact - 0.1  # the imperfect encoder has a visible gap
    assert means[1] < means[10] < means[2000]
    assert means[2000] == pytest.approx(exact, abs=0.02)
    assert means[2000] <= exact + 0.01  # a lower bound in expectation


def test_evaluate_reports_consistent_summary_metrics():
    x = _data(150)
    report = evaluation.evaluate(
        _linear_gaussian_vae(scale_factor=1.3), x, importance_samples=300, batch_size=64,
        chunk_size=128, verbose=0,
    )  # fmt: skip
    assert report["num_examples"] == 150 and report["importance_samples"] == 300
    assert report["bits_per_dim"] == pytest.approx(report["nll"] / (D * math.log(2)))
    assert report["nll"] < -report["elbo"]  # NLL estimate below the negative ELBO
    exact = -_exact_log_px(x)
    assert report["nll"] == pytest.approx(exact.mean(), abs=3 * report["nll_stderr"] + 0.05)
    assert report["nll_stderr"] == pytest.approx(exact.std(ddof=1) / math.sqrt(150), rel=0.1)
    assert report["kl"] == pytest.approx(sum(report["kl_per_dim"]), rel=1e-6)
    assert report["active_units"] == 2 and report["latent_dim"] == 2


def test_active_units_counts_latents_whose_mean_varies():
    means = np.stack([RNG.normal(size=500), 0.05 * RNG.normal(size=500), np.zeros(500)], 1)
    assert evaluation.active_units(means) == 1
    assert evaluation.active_units(means, threshold=1e-4) == 2


def test_bits_per_dim_converts_nats():
    assert evaluation.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)


def test_bad_sample_counts_are_refused():
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        evaluation.importance_sampled_log_likelihood(_linear_gaussian_vae(), _data(4), 0)
