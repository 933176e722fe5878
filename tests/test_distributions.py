"""Distribution heads against scipy log-densities and their own invariants."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from keras_vae.distributions import (
    BernoulliLikelihood,
    DiagonalGaussianPosterior,
    GaussianLikelihood,
    StandardNormalPrior,
)

RNG = np.random.default_rng(0)


def _features(batch=5, width=7):
    return RNG.normal(size=(batch, width)).astype("float32")


def test_posterior_log_prob_matches_scipy():
    head = DiagonalGaussianPosterior(latent_dim=3)
    h = _features()
    q = head(h)
    params = {k: v.numpy() for k, v in head.parameters(h).items()}
    z = RNG.normal(size=(5, 3)).astype("float32")
    expected = stats.norm.logpdf(z, params["loc"], params["scale"]).sum(-1)
    np.testing.assert_allclose(q.log_prob(z).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert q.batch_shape == (5,) and q.event_shape == (3,)


def test_posterior_scale_has_floor_even_for_huge_negative_logits():
    head = DiagonalGaussianPosterior(latent_dim=2, min_scale=1e-3)
    head.build((None, 4))
    head.projection.kernel.assign(tf.zeros((4, 4)))
    head.projection.bias.assign(tf.constant([0.0, 0.0, -1e4, -1e4]))
    scale = head.parameters(tf.zeros((1, 4)))["scale"].numpy()
    assert np.all(scale >= 1e-3) and np.all(np.isfinite(scale))
    assert np.isfinite(head(tf.zeros((1, 4))).log_prob(tf.ones((1, 2))).numpy()).all()


def test_bernoulli_log_prob_matches_scipy_with_image_event_shape():
    head = BernoulliLikelihood(event_shape=(4, 3, 1))
    h = _features()
    p = head(h)
    logits = head.parameters(h)["logits"].numpy()
    x = RNG.integers(0, 2, size=(5, 4, 3, 1)).astype("float32")
    probs = 1.0 / (1.0 + np.exp(-logits.astype("float64")))
    expected = stats.bernoulli.logpmf(x, probs).reshape(5, -1).sum(-1)
    np.testing.assert_allclose(p.log_prob(x).numpy(), expected, rtol=1e-5)
    assert p.event_shape == (4, 3, 1) and p.batch_shape == (5,)
    np.testing.assert_allclose(p.mean().numpy(), probs, rtol=1e-5)


def test_bernoulli_log_prob_is_finite_for_saturated_logits():
    head = BernoulliLikelihood(event_shape=(2,))
    p = head.distribution(tf.constant([[200.0, -200.0]]))
    # x agrees with the logits: log-probability 0; disagrees: -200 each, never -inf.
    np.testing.assert_allclose(p.log_prob(tf.constant([[1.0, 0.0]])).numpy(), [0.0], atol=1e-6)
    np.testing.assert_allclose(p.log_prob(tf.constant([[0.0, 1.0]])).numpy(), [-400.0])


def test_gaussian_likelihood_log_prob_matches_scipy():
    head = GaussianLikelihood(event_shape=(2, 3))
    h = _features()
    p = head(h)
    params = {k: v.numpy() for k, v in head.parameters(h).items()}
    assert params["loc"].min() > 0 and params["loc"].max() < 1  # sigmoid mean
    assert params["scale"].min() >= head.min_scale
    x = RNG.uniform(size=(5, 2, 3)).astype("float32")
    expected = stats.norm.logpdf(x, params["loc"], params["scale"]).reshape(5, -1).sum(-1)
    np.testing.assert_allclose(p.log_prob(x).numpy(), expected, rtol=1e-5)


def test_likelihood_keeps_leading_sample_axis():
    head = BernoulliLikelihood(event_shape=(3, 2))
    p = head(RNG.normal(size=(4, 5, 6)).astype("float32"))  # [L, B, features]
    assert p.batch_shape == (4, 5) and p.event_shape == (3, 2)


def test_standard_normal_prior_matches_scipy():
    prior = StandardNormalPrior(latent_dim=4)
    z = RNG.normal(size=(6, 4)).astype("float32")
    expected = stats.norm.logpdf(z).sum(-1)
    np.testing.assert_allclose(prior.distribution().log_prob(z).numpy(), expected, rtol=1e-5)
    assert prior(None).event_shape == (4,)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DiagonalGaussianPosterior(latent_dim=0),
        lambda: DiagonalGaussianPosterior(latent_dim=2, min_scale=0),
        lambda: BernoulliLikelihood(event_shape=()),
        lambda: BernoulliLikelihood(event_shape=(28, -1)),
        lambda: GaussianLikelihood(event_shape=(2,), mean_activation="relu"),
        lambda: StandardNormalPrior(latent_dim=2.5),
    ],
)
def test_bad_constructor_arguments_name_the_argument(make):
    with pytest.raises(ValueError, match=r"Received: \w+="):
        make()


@pytest.mark.parametrize(
    "layer",
    [
        DiagonalGaussianPosterior(latent_dim=3, min_scale=1e-3),
        BernoulliLikelihood(event_shape=(2, 3)),
        GaussianLikelihood(event_shape=(2, 3), min_scale=0.05, mean_activation="linear"),
    ],
)
def test_heads_round_trip_through_their_config(layer):
    layer.build((None, 7))
    h = _features()
    restored = keras.layers.deserialize(keras.layers.serialize(layer))  # built from config
    restored.set_weights(layer.get_weights())
    assert restored.get_config() == layer.get_config()
    for key, value in layer.parameters(h).items():
        np.testing.assert_array_equal(restored.parameters(h)[key].numpy(), value.numpy())
