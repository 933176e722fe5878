"""Priors against SciPy mixtures, their `.keras` round trip, and the compat module.

(The posterior and likelihood heads are tested in test_posteriors.py and test_likelihoods.py.)
"""

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test
from scipy import special, stats

from keras_vae import mlp_vae
from keras_vae.parts import distributions, likelihoods, posteriors, priors
from keras_vae.parts.priors import MixturePrior, StandardNormalPrior, VampPrior

RNG = np.random.default_rng(0)
SHAPE = (3, 2, 1)


def _tiny_vae(prior, posterior="diagonal"):
    model = mlp_vae(
        SHAPE, latent_dim=2, hidden_units=[8], prior=prior, posterior=posterior,
        prior_components=4, seed=5,
    )  # fmt: skip
    model.build((None, *SHAPE))
    return model


def test_standard_normal_prior_matches_scipy():
    prior = StandardNormalPrior(latent_dim=4)
    z = RNG.normal(size=(6, 4)).astype("float32")
    expected = stats.norm.logpdf(z).sum(-1)
    np.testing.assert_allclose(prior.distribution().log_prob(z).numpy(), expected, rtol=1e-5)
    assert prior(None).event_shape == (4,)


def test_mixture_prior_log_prob_matches_a_scipy_mixture():
    prior = MixturePrior(latent_dim=3, num_components=4, seed=1)
    prior.build(None)
    prior.logits.assign(RNG.normal(size=4))
    z = RNG.normal(size=(5, 3)).astype("float32")
    logits, means, scales = (np.asarray(t, "float64") for t in prior._parameters())
    per_component = stats.norm.logpdf(z[:, None], means, scales).sum(-1)  # [5, K]
    expected = special.logsumexp(per_component + special.log_softmax(logits), axis=-1)
    np.testing.assert_allclose(prior.distribution().log_prob(z).numpy(), expected, rtol=1e-5)
    assert prior.kl(posteriors.DiagonalGaussianPosterior.distribution(z, np.ones_like(z))) is None


@pytest.mark.parametrize("posterior", ["diagonal", "full"])
def test_vamp_prior_is_the_mean_of_q_at_the_pseudo_inputs(posterior):
    model = _tiny_vae("vamp", posterior)
    images = RNG.uniform(size=(4, *SHAPE)).astype("float32")
    model.prior.set_pseudo_inputs(images)
    z = RNG.normal(size=(5, 2)).astype("float32")
    components = model.encode(images)  # q(z|u_k), batch [K]
    per_component = components.log_prob(z[:, None]).numpy().astype("float64")  # [5, K]
    expected = special.logsumexp(per_component, axis=-1) - np.log(4)
    np.testing.assert_allclose(model.prior_distribution().log_prob(z).numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="needs the VAE it belongs to"):
        model.prior.distribution()


def test_priors_sample_plain_draw_z_of_the_right_shape():
    for name in ("standard", "mixture", "vamp"):
        model = _tiny_vae(name)
        z = model.prior.sample_plain(tf.constant(7), model)
        assert z.shape == (7, 2) and np.isfinite(z.numpy()).all(), name


@pytest.mark.parametrize("name", ["standard", "mixture", "vamp"])
def test_prior_survives_keras_file_round_trip(name):
    model = _tiny_vae(name)
    z = RNG.normal(size=(5, 2)).astype("float32")
    # the prior is saved on its own; the VampPrior's density also needs its model's encoder
    run_saving_test(model.prior, z, lambda prior, z: prior.distribution(model).log_prob(z))


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: StandardNormalPrior(latent_dim=2.5), "latent_dim"),
        (lambda: MixturePrior(latent_dim=2, num_components=0), "num_components"),
        (lambda: VampPrior(latent_dim=0, image_shape=SHAPE), "latent_dim"),
        (lambda: VampPrior(latent_dim=2, image_shape=SHAPE, num_components=-3), "num_components"),
    ],
)
def test_bad_prior_arguments_give_one_line_errors_naming_them(make, argument):
    with pytest.raises(ValueError, match=rf"Received: {argument}=") as error:
        make()
    assert "\n" not in str(error.value)


def test_set_pseudo_inputs_names_the_shape_it_needs():
    prior = VampPrior(latent_dim=2, image_shape=SHAPE, num_components=4)
    with pytest.raises(ValueError, match=r"needs \(4, 3, 2, 1\) images. Received: shape="):
        prior.set_pseudo_inputs(np.zeros((3, *SHAPE)))


def test_distributions_module_re_exports_the_heads():
    assert distributions.DiagonalGaussianPosterior is posteriors.DiagonalGaussianPosterior
    assert distributions.FullCovariancePosterior is posteriors.FullCovariancePosterior
    assert distributions.BernoulliLikelihood is likelihoods.BernoulliLikelihood
    assert distributions.DiscretizedLogisticLikelihood is likelihoods.DiscretizedLogisticLikelihood
    assert distributions.VampPrior is priors.VampPrior
