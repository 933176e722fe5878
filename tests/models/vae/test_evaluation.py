"""Importance-sampled log-likelihood against models whose log p(x) is known in closed form.

A linear-Gaussian decoder p(x|z) = N(W z + b, s^2 I) with prior N(0, I) has
p(x) = N(b, W W^T + s^2 I) and the exact posterior p(z|x) = N(S W^T (x - b) / s^2, S) with
S = (I + W^T W / s^2)^-1. With orthogonal columns of W, S is diagonal and the
DiagonalGaussianPosterior head can represent p(z|x); in general S is a full matrix, which the
FullCovariancePosterior head represents with L = chol(S).

With a Gaussian mixture prior p(z) = sum_k pi_k N(m_k, C_k) the marginal is again closed form,
p(x) = sum_k pi_k N(x; W m_k + b, W C_k W^T + s^2 I): the reference for the mixture prior and
the VampPrior (whose components are the posterior head at the pseudo-inputs).
"""

import io
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import RowCountingArray
from scipy import special, stats

import keras_vae
from keras_vae import VAE
from keras_vae.data import pipeline as data
from keras_vae.models.vae import evaluation
from keras_vae.models.vae.kind import VAEKind
from keras_vae.parts import likelihoods, objectives
from keras_vae.parts.likelihoods import BernoulliLikelihood, GaussianLikelihood
from keras_vae.parts.posteriors import DiagonalGaussianPosterior, FullCovariancePosterior
from keras_vae.parts.priors import MixturePrior, VampPrior
from keras_vae.runs.config import TrainConfig

D, LATENT, NOISE, MIN_SCALE = 4, 2, 0.5, 1e-4
RNG = np.random.default_rng(5)
Q, _ = np.linalg.qr(RNG.normal(size=(D, D)))
W_ORTHOGONAL = Q[:, :LATENT] * np.array([1.5, 0.7])  # S is diagonal
W_MIXED = np.array([[1.2, 0.9], [0.3, -0.8], [0.5, 1.1], [-0.4, 0.2]])  # S is a full matrix
B = RNG.normal(size=D)


def _posterior_cov(w):
    return np.linalg.inv(np.eye(LATENT) + w.T @ w / NOISE**2)


def _gain(w):
    """E[z|x] = gain (x - b) under the N(0, I) prior."""
    return _posterior_cov(w) @ w.T / NOISE**2


def _softplus_inverse(y):
    return np.log(np.expm1(y))


def _scale_bias(kind, cov):
    """The head's bias entries that give q(z|x) the covariance `cov` (the kernel is zero)."""
    if kind == "diagonal":
        return _softplus_inverse(np.sqrt(np.diag(cov)) - MIN_SCALE)
    tril = np.linalg.cholesky(cov)
    rows, cols = np.tril_indices(LATENT)  # the head's row-major order
    entries = tril[rows, cols]
    diagonal = rows == cols
    entries[diagonal] = _softplus_inverse(entries[diagonal] - MIN_SCALE)
    return entries


def _linear_gaussian_vae(w, kind="diagonal", cov=None, loc_shift=0.0, prior=None):
    """Decoder N(W z + b, s^2 I); q(z|x) = N(gain (x - b) + loc_shift, cov), by default the
    exact posterior under N(0, I)."""
    head = {"diagonal": DiagonalGaussianPosterior, "full": FullCovariancePosterior}[kind]
    model = VAE(
        encoder=keras.layers.Flatten(),
        posterior=head(LATENT, min_scale=MIN_SCALE),
        decoder=keras.layers.Identity(),
        likelihood=GaussianLikelihood((D,), fixed_scale=NOISE, mean_activation="linear"),
        prior=prior,
    )
    model.build((None, D))
    gain = _gain(w)
    cov = _posterior_cov(w) if cov is None else cov
    scale_bias = _scale_bias(kind, cov)
    model.posterior.projection.set_weights(
        [
            np.concatenate([gain.T, np.zeros((D, len(scale_bias)))], axis=1),
            np.concatenate([-gain @ B + loc_shift, scale_bias]),
        ]
    )
    model.likelihood.projection.set_weights([w.T, B])
    return model


def _data(w, n=200, latents=None):
    z = RNG.normal(size=(n, LATENT)) if latents is None else latents
    return (z @ w.T + B + NOISE * RNG.normal(size=(len(z), D))).astype("float32")


def _exact_log_px(w, x):
    return stats.multivariate_normal(B, w @ w.T + NOISE**2 * np.eye(D)).logpdf(x)


def _mixture_log_px(w, x, weights, means, covs):
    """log sum_k pi_k N(x; W m_k + b, W C_k W^T + s^2 I)."""
    terms = [
        np.log(pi)
        + stats.multivariate_normal(w @ m + B, w @ c @ w.T + NOISE**2 * np.eye(D)).logpdf(x)
        for pi, m, c in zip(weights, means, covs, strict=True)
    ]
    return special.logsumexp(np.stack(terms), axis=0)


def _estimate(model, x, k, **kwargs):
    return evaluation.importance_sampled_log_likelihood(
        model, x, num_samples=k, chunk_size=kwargs.pop("chunk_size", 256), verbose=0, **kwargs
    )


def test_exact_diagonal_posterior_gives_the_exact_log_likelihood_with_any_k():
    x = _data(W_ORTHOGONAL)
    assert np.allclose(_posterior_cov(W_ORTHOGONAL), np.diag(np.diag(_posterior_cov(W_ORTHOGONAL))))
    exact = _exact_log_px(W_ORTHOGONAL, x)
    result = _estimate(_linear_gaussian_vae(W_ORTHOGONAL), x, 10)
    np.testing.assert_allclose(result["log_px"], exact, atol=2e-3)
    # with q = p(z|x) the ELBO is log p(x) too (up to the Monte Carlo error of its first term)
    result = _estimate(_linear_gaussian_vae(W_ORTHOGONAL), x, 2000)
    np.testing.assert_allclose(result["elbo"], exact, atol=0.15)
    assert result["elbo"].mean() == pytest.approx(exact.mean(), abs=0.02)
    # KL(N(m, s^2) || N(0, 1)) per latent, from E[z|x] and the diagonal of S
    mean = (x - B) @ _gain(W_ORTHOGONAL).T
    var = np.diag(_posterior_cov(W_ORTHOGONAL))
    kl_per_dim = 0.5 * (var + mean**2 - 1.0 - np.log(var))
    assert result["kl_method"] == "closed_form"
    np.testing.assert_allclose(result["kl_per_dim"], kl_per_dim, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result["kl"], kl_per_dim.sum(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result["posterior_mean"], mean, atol=1e-4)


def test_full_covariance_posterior_is_exact_where_a_diagonal_one_is_not():
    x = _data(W_MIXED, 150)
    cov = _posterior_cov(W_MIXED)
    assert abs(cov[0, 1]) > 0.1 * np.sqrt(cov[0, 0] * cov[1, 1])  # correlated posterior
    exact = _exact_log_px(W_MIXED, x)
    full = _estimate(_linear_gaussian_vae(W_MIXED, "full"), x, 1000)
    np.testing.assert_allclose(full["log_px"], exact, atol=2e-3)  # constant weights: exact
    assert full["elbo"].mean() == pytest.approx(exact.mean(), abs=0.02)
    # the closed-form KL(N(m, S) || N(0, I)); no per-dimension split for a full covariance
    mean = (x - B) @ _gain(W_MIXED).T
    kl = 0.5 * (np.trace(cov) + np.sum(mean**2, 1) - LATENT - np.log(np.linalg.det(cov)))
    np.testing.assert_allclose(full["kl"], kl, rtol=1e-4, atol=1e-5)
    assert full["kl_method"] == "closed_form" and full["kl_per_dim"] is None

    # the best diagonal q has precisions diag(S^-1): a gap in the ELBO, none in log p(x)
    diagonal_cov = np.diag(1.0 / np.diag(np.linalg.inv(cov)))
    diagonal = _estimate(_linear_gaussian_vae(W_MIXED, "diagonal", diagonal_cov), x, 1000)
    gap = 0.5 * np.log(np.linalg.det(cov) / np.linalg.det(diagonal_cov))  # KL(q || p(z|x))
    assert diagonal["elbo"].mean() == pytest.approx(exact.mean() - gap, abs=0.03)
    assert gap > 0.1
    assert diagonal["log_px"].mean() == pytest.approx(exact.mean(), abs=0.02)


@pytest.mark.parametrize("kind", ["diagonal", "full"])
def test_iwae_bound_rises_with_k_towards_log_px_with_an_imperfect_encoder(kind):
    w = W_ORTHOGONAL if kind == "diagonal" else W_MIXED
    x = _data(w, 100)
    model = _linear_gaussian_vae(w, kind, cov=1.6**2 * _posterior_cov(w), loc_shift=0.3)
    exact = _exact_log_px(w, x).mean()
    estimates = {k: _estimate(model, x, k) for k in (1, 10, 1000)}
    means = {k: r["log_px"].mean() for k, r in estimates.items()}
    assert estimates[1000]["elbo"].mean() < exact - 0.1  # a visible gap
    assert means[1] < means[10] < means[1000]
    assert means[1000] == pytest.approx(exact, abs=0.02)
    assert means[1000] <= exact + 0.01  # a lower bound in expectation


def _mixture_prior(weights, means, scales):
    prior = MixturePrior(LATENT, num_components=len(weights))
    prior.build()
    prior.set_weights([means, _softplus_inverse(scales - 1e-4), np.log(weights)])
    return prior


def test_mixture_prior_log_likelihood_matches_the_closed_form_marginal():
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[-1.5, 0.5], [1.2, 1.0], [0.3, -1.4]])
    scales = np.array([[0.6, 0.8], [0.5, 0.4], [0.9, 0.7]])
    prior = _mixture_prior(weights, means, scales)
    model = _linear_gaussian_vae(W_MIXED, "full", cov=1.5**2 * _posterior_cov(W_MIXED), prior=prior)
    component = RNG.choice(3, size=150, p=weights)
    x = _data(W_MIXED, latents=means[component] + scales[component] * RNG.normal(size=(150, 2)))
    exact = _mixture_log_px(W_MIXED, x, weights, means, [np.diag(s**2) for s in scales])
    result = _estimate(model, x, 2000)
    assert result["log_px"].mean() == pytest.approx(exact.mean(), abs=0.03)
    np.testing.assert_allclose(result["log_px"], exact, atol=0.15)
    # no closed-form KL: Monte Carlo, so the ELBO is the mean log weight, below log p(x)
    assert result["kl_method"] == "monte_carlo" and result["kl_per_dim"] is None
    assert result["elbo"].mean() < exact.mean() - 0.05
    assert np.all(result["kl"] > 0)


def test_vamp_prior_log_likelihood_matches_the_closed_form_marginal():
    cov = 1.3**2 * _posterior_cov(W_ORTHOGONAL)
    prior = VampPrior(LATENT, image_shape=(D,), num_components=4)
    model = _linear_gaussian_vae(W_ORTHOGONAL, "diagonal", cov=cov, prior=prior)
    pseudo = RNG.uniform(size=(4, D)).astype("float32")
    pseudo[0, 0] = 1.7  # clipped to 1 by the prior
    prior.set_pseudo_inputs(pseudo)
    # components q(z|u_k) = N(gain (clip(u_k) - b), cov), computed here from the weights' recipe
    centres = (np.clip(pseudo, 0, 1) - B) @ _gain(W_ORTHOGONAL).T
    component = RNG.choice(4, size=150)
    latents = centres[component] + RNG.normal(size=(150, 2)) @ np.linalg.cholesky(cov).T
    x = _data(W_ORTHOGONAL, latents=latents)
    exact = _mixture_log_px(W_ORTHOGONAL, x, np.full(4, 0.25), centres, [cov] * 4)
    result = _estimate(model, x, 2000)
    assert result["log_px"].mean() == pytest.approx(exact.mean(), abs=0.03)
    np.testing.assert_allclose(result["log_px"], exact, atol=0.15)
    assert result["kl_method"] == "monte_carlo" and result["kl_per_dim"] is None


def test_evaluate_reports_consistent_summary_metrics():
    x = _data(W_ORTHOGONAL, 150)
    model = _linear_gaussian_vae(W_ORTHOGONAL, cov=1.3**2 * _posterior_cov(W_ORTHOGONAL))
    report = evaluation.evaluate(
        model, x, importance_samples=300, batch_size=64, chunk_size=128, verbose=0
    )
    assert report["num_examples"] == 150 and report["importance_samples"] == 300
    assert report["bits_per_dim"] == pytest.approx(report["nll"] / (D * math.log(2)))
    assert report["nll"] < -report["elbo"]  # NLL estimate below the negative ELBO
    exact = -_exact_log_px(W_ORTHOGONAL, x)
    assert report["nll"] == pytest.approx(exact.mean(), abs=3 * report["nll_stderr"] + 0.05)
    assert report["nll_stderr"] == pytest.approx(exact.std(ddof=1) / math.sqrt(150), rel=0.1)
    assert report["kl"] == pytest.approx(sum(report["kl_per_dim"]), rel=1e-5)
    assert report["elbo"] == pytest.approx(report["reconstruction"] - report["kl"], rel=1e-5)
    assert report["kl_method"] == "closed_form"
    assert report["active_units"] == 2 and report["latent_dim"] == 2


def test_a_stream_evaluates_as_numpy_summarises_its_images_a_batch_at_a_time():
    # a diagonal posterior and the standard prior: the KL in closed form and per dimension
    model = _linear_gaussian_vae(W_ORTHOGONAL, cov=1.3**2 * _posterior_cov(W_ORTHOGONAL))
    x = _data(W_ORTHOGONAL, 250)
    reads: list[int] = []
    stream = data.ArrayStream(RowCountingArray(x, reads), "x")
    del reads[:]  # (its first examples, read when it opened)
    progress = io.StringIO()
    streamed = evaluation.evaluate(model, stream, importance_samples=64, seed=3,
                                   progress_stream=progress)  # fmt: skip
    assert max(reads) == 100  # read a batch at a time, never the split
    lines = progress.getvalue().splitlines()
    assert lines[0].endswith("K=64 samples per example, 250 examples")
    assert lines[-1].startswith("250/250 examples") and lines[-1].endswith(
        f"NLL so far {streamed['nll']:.2f} nats")  # fmt: skip
    # the summaries NumPy computes from the per-example estimates of the array (same seed)
    each = _estimate(model, x, 64, chunk_size=evaluation.DEFAULT_CHUNK_SIZE, seed=3)
    log_px = each["log_px"].astype(np.float64)
    expected = {
        "nll": -log_px.mean(), "nll_stderr": log_px.std(ddof=1) / math.sqrt(250),
        "elbo": each["elbo"].mean(), "reconstruction": each["reconstruction"].mean(),
        "kl": each["kl"].mean(), "bits_per_dim": -log_px.mean() / (D * math.log(2)),
        "active_units": int(np.sum(np.var(each["posterior_mean"], 0) > 0.01)),
        "num_examples": 250,
    }  # fmt: skip
    for key, value in expected.items():
        assert streamed[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert streamed["kl_method"] == each["kl_method"] == "closed_form"
    np.testing.assert_allclose(streamed["kl_per_dim"], each["kl_per_dim"].mean(0), rtol=1e-6)
    # and the in-memory array evaluates to the same numbers
    in_memory = evaluation.evaluate(model, x, importance_samples=64, seed=3, verbose=0)
    assert json.dumps(in_memory, sort_keys=True) == json.dumps(streamed, sort_keys=True)


def test_evaluate_without_a_per_dimension_kl_writes_valid_json():
    prior = _mixture_prior(np.array([0.5, 0.5]), np.array([[-1.0, 0.0], [1.0, 0.5]]),
                           np.full((2, 2), 0.7))  # fmt: skip
    model = _linear_gaussian_vae(W_MIXED, "full", prior=prior)
    report = evaluation.evaluate(model, _data(W_MIXED, 20), importance_samples=50, verbose=0)
    decoded = json.loads(json.dumps(report, allow_nan=False))
    assert decoded["kl_per_dim"] is None and decoded["kl_method"] == "monte_carlo"
    assert math.isfinite(decoded["kl"]) and decoded["kl"] > 0


def test_active_units_counts_latents_whose_mean_varies():
    means = np.stack([RNG.normal(size=500), 0.05 * RNG.normal(size=500), np.zeros(500)], 1)
    assert evaluation.active_units(means) == 1
    assert evaluation.active_units(means, threshold=1e-4) == 2


def test_bits_per_dim_converts_nats():
    assert evaluation.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)


def test_bad_sample_counts_are_refused():
    model = _linear_gaussian_vae(W_ORTHOGONAL)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        evaluation.importance_sampled_log_likelihood(model, _data(W_ORTHOGONAL, 4), 0)


@pytest.mark.parametrize(
    "prior, posterior, likelihood",
    [("vamp", "full", "logistic"), ("mixture", "diagonal", "bernoulli")],
)
def test_models_built_from_other_parts_and_iwae_evaluate_to_finite_json(
    prior, posterior, likelihood
):
    model = keras_vae.mlp_vae(
        (3, 3, 1), latent_dim=2, hidden_units=6, likelihood=likelihood, prior=prior,
        prior_components=3, posterior=posterior, objective=objectives.IWAE(5), seed=0,
    )  # fmt: skip
    x = (RNG.integers(0, 256, size=(12, 3, 3, 1)) / 255.0).astype("float32")
    if likelihood == "bernoulli":
        x = np.round(x)
    report = evaluation.evaluate(model, x, importance_samples=40, batch_size=5, verbose=0)
    json.dumps(report, allow_nan=False)
    assert report["kl_per_dim"] is None and report["kl_method"] == "monte_carlo"
    assert report["nll"] < -report["elbo"]  # log p(x) estimate above the ELBO on average


@pytest.mark.parametrize("event_shape", [(4, 4, 1), (3, 3, 1)])  # groups of 16 and of 1 pixel
def test_bernoulli_log_likelihood_matches_scipy(event_shape):
    head = BernoulliLikelihood(event_shape)
    logits = RNG.normal(scale=6.0, size=(5, 3, *event_shape)).astype("float32")
    logits[0, 0].flat[:2] = [40.0, -40.0]  # saturated pixels
    x = RNG.integers(0, 2, size=(3, *event_shape)).astype("float32")
    x[1].flat[0] = 0.3  # the formula also holds between 0 and 1
    expected = np.sum(
        x * special.log_expit(logits.astype(np.float64))
        + (1 - x) * special.log_expit(-logits.astype(np.float64)),
        axis=(2, 3, 4),
    )
    got = head.log_likelihood({"logits": logits}, x).numpy()
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    tfp_value = head.distribution(logits=logits).log_prob(np.round(x)).numpy()
    got_binary = head.log_likelihood({"logits": logits}, np.round(x)).numpy()
    np.testing.assert_allclose(got_binary, tfp_value, rtol=1e-5, atol=1e-4)


def _numpy_log_px(model, x, k, rng):
    """The importance-sampled log p(x) of a one-hidden-layer Bernoulli `mlp_vae`, in NumPy
    (float64) from the model's weights: log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x)."""
    w = [np.asarray(v, np.float64) for v in model.get_weights()]
    enc_w, enc_b, post_w, post_b, dec_w, dec_b, out_w, out_b = w
    flat = x.reshape(len(x), -1).astype(np.float64)
    loc, raw = np.split(np.tanh(flat @ enc_w + enc_b) @ post_w + post_b, 2, axis=1)
    scale = np.logaddexp(0.0, raw) + 1e-4
    z = loc + scale * rng.normal(size=(k, *loc.shape))
    logits = np.tanh(z @ dec_w + dec_b) @ out_w + out_b
    log_px_z = np.sum(
        flat * special.log_expit(logits) + (1 - flat) * special.log_expit(-logits), -1
    )
    log_pz = stats.norm.logpdf(z).sum(-1)
    log_qz = stats.norm.logpdf(z, loc, scale).sum(-1)
    return special.logsumexp(log_px_z + log_pz - log_qz, axis=0) - math.log(k)


def test_bernoulli_estimate_agrees_with_a_numpy_importance_sampler():
    model = keras_vae.mlp_vae((3, 3, 1), latent_dim=2, hidden_units=6, seed=1)
    model.build((None, 3, 3, 1))
    assert len(model.get_weights()) == 8  # the layout _numpy_log_px reads
    # a weak encoder with scales near 1 (softplus(0.5413) = 1), wider than p(z|x): light-tailed
    # weights, so K = 3000 pins each example's log p(x); a decoder strong enough that log p(x)
    # differs between examples (standard deviation ~0.6 nats)
    weights = model.get_weights()
    weights = [0.4 * w for w in weights[:4]] + [2.0 * w for w in weights[4:]]
    weights[3][2:] += 0.5413
    model.set_weights(weights)
    x = RNG.integers(0, 2, size=(40, 3, 3, 1)).astype("float32")
    got = _estimate(model, x, 3000, chunk_size=64, batch_size=16)["log_px"]
    expected = _numpy_log_px(model, x, 3000, np.random.default_rng(0))
    difference = got - expected  # the same examples: Monte Carlo error only
    stderr = difference.std(ddof=1) / math.sqrt(len(x))
    assert abs(difference.mean()) < 4 * stderr + 1e-3
    assert expected.std() > 0.3
    np.testing.assert_allclose(got, expected, atol=0.25)


def test_chunk_and_batch_sizes_change_the_estimate_only_by_monte_carlo_error():
    x = _data(W_MIXED, 90)
    model = _linear_gaussian_vae(W_MIXED, "full", cov=1.5**2 * _posterior_cov(W_MIXED))
    exact = _exact_log_px(W_MIXED, x)
    results = {
        (chunk, batch): _estimate(model, x, 1000, chunk_size=chunk, batch_size=batch)
        for chunk, batch in ((7, 90), (64, 32), (1000, 50), (5000, 90))  # 1000 % 7: a rest chunk
    }
    for result in results.values():
        np.testing.assert_allclose(result["log_px"], exact, atol=0.1)
        assert result["log_px"].mean() == pytest.approx(exact.mean(), abs=0.01)
        np.testing.assert_allclose(result["kl"], results[(7, 90)]["kl"], rtol=1e-5)  # closed form
        assert result["elbo"].mean() == pytest.approx(results[(7, 90)]["elbo"].mean(), abs=0.02)
    assert not np.array_equal(results[(7, 90)]["log_px"], results[(64, 32)]["log_px"])


def test_a_seed_gives_identical_results_and_another_seed_others():
    prior = _mixture_prior(np.array([0.5, 0.5]), np.array([[-1.0, 0.0], [1.0, 0.5]]),
                           np.full((2, 2), 0.7))  # fmt: skip
    model = _linear_gaussian_vae(W_MIXED, "full", cov=2 * _posterior_cov(W_MIXED), prior=prior)
    x = _data(W_MIXED, 30)
    first, again, other = (_estimate(model, x, 200, chunk_size=30, seed=s) for s in (3, 3, 4))
    for key in ("log_px", "elbo", "kl", "reconstruction"):
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["log_px"], other["log_px"])


def test_progress_line_reports_rate_and_time_left(capsys):
    model = _linear_gaussian_vae(W_ORTHOGONAL)
    evaluation.importance_sampled_log_likelihood(
        model, _data(W_ORTHOGONAL, 30), 20, batch_size=10, verbose=1
    )
    out = capsys.readouterr().out
    assert "K=20 samples per example, 30 examples" in out
    assert "30/30 examples" in out and "examples/s" in out and "left" in out


def _bfloat16_round(t):
    return tf.cast(tf.cast(t, tf.bfloat16), t.dtype)


def test_bfloat16_evaluation_agrees_with_float32_within_a_fraction_of_bfloat16_spacing(
    monkeypatch,
):
    """A float32 VAE trained on 28x28 prototypes with 10% of the pixels flipped (log p(x)
    about -270 nats), evaluated again with its matmuls in bfloat16 (`VAEKind.with_precision`,
    the same weights) on the same samples.

    The tolerance on the mean |difference| per example is 2^-12 |log p(x)| (0.07 nats here):
    bfloat16 keeps 8 significant bits, so numbers near v are 2^-8 |v| to 2^-7 |v| apart and a
    log p(x) summed over pixels or log-sum-exp'ed in bfloat16 errs by about a quarter of that
    spacing, 2^-10 |v| or more (a little less once the K weights' roundings average), which
    the two mutants below check exceeds the tolerance. The bfloat16 matmuls only move the
    logits (by ~2^-8 relative), and log p(x|z) with them by (x - sigmoid(l)) dl, small wherever
    the model fits (measured: half the tolerance)."""
    rng = np.random.default_rng(5)
    prototypes = rng.uniform(size=(4, 28, 28, 1)) > 0.5
    flips = rng.uniform(size=(364, 28, 28, 1)) < 0.1
    x = (prototypes[rng.integers(0, 4, 364)] ^ flips).astype("float32")
    config = TrainConfig(latent_dim=4, hidden_units=[32], seed=2, likelihood="bernoulli")
    kind = VAEKind()
    keras.utils.set_random_seed(0)
    model = kind.build(config, (28, 28, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    model.fit(x[:300], batch_size=50, epochs=25, verbose=0)
    low = kind.with_precision(model, config, "mixed_bfloat16")
    assert low.decoder.dense_layers[0].compute_dtype == "bfloat16"

    def log_px(vae):
        return evaluation.importance_sampled_log_likelihood(vae, x[300:], 16, verbose=0,
                                                            seed=1)["log_px"]  # fmt: skip

    exact = log_px(model)
    tolerance = 2.0**-12 * abs(exact.mean())
    difference = log_px(low) - exact
    assert np.mean(np.abs(difference)) < tolerance
    assert abs(difference.mean()) < 0.05  # issue 29: the same estimate within 0.05 nats
    # every per-example output of the compiled loop is float32 under the bfloat16 policy
    outputs = evaluation._batch_fn(low, 16, 8, False)(tf.constant(x[:4]), tf.constant([1, 2]))
    assert {name: value.dtype for name, value in outputs.items()} == dict.fromkeys(
        outputs, tf.float32
    )

    # the test can fail: the same float32 model with its sum over pixels in bfloat16 ...
    def bfloat16_pixel_sum(x, logits, event_ndims):
        terms = tf.cast(x, logits.dtype) * logits - tf.nn.softplus(logits)
        return tf.cast(tf.reduce_sum(tf.cast(terms, tf.bfloat16), [-3, -2, -1]), tf.float32)

    with monkeypatch.context() as patched:
        patched.setattr(likelihoods, "bernoulli_log_prob", bfloat16_pixel_sum)
        assert np.mean(np.abs(log_px(model) - exact)) > tolerance  # (measured: 2.7x)
    # ... or its log-sum-exp reading log-weights rounded to bfloat16
    weights = objectives.log_importance_weights
    with monkeypatch.context() as patched:
        patched.setattr(objectives, "log_importance_weights",
                        lambda *args: _bfloat16_round(weights(*args)))  # fmt: skip
        assert np.mean(np.abs(log_px(model) - exact)) > tolerance  # (measured: 3.9x)
