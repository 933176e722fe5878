"""The "write your own part" examples of docs/guide/models.md, run as written, checked in NumPy."""

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

import keras_vae
from keras_vae import registry
from keras_vae.parts import objectives, priors

tfd = tfp.distributions


@pytest.fixture(scope="module")
def parts():
    """The guide's two parts, registered for this module only (the registry is global: the
    CLI tests list the registered names)."""

    # the guide's code, as written; example 1: a prior
    @registry.register("prior", "laplace")
    class LaplacePrior(priors.Prior):
        """p(z) = prod_j Laplace(z_j; 0, 1)."""

        def distribution(self, model=None):
            zeros = tf.zeros([self.latent_dim])
            return tfd.Independent(tfd.Laplace(zeros, tf.ones_like(zeros)), 1)

        def sample_plain(self, num_samples, model=None):  # the exported decoder's sample
            u = tf.random.uniform(tf.stack([num_samples, self.latent_dim]), -0.5, 0.5)
            return -tf.sign(u) * tf.math.log1p(-2.0 * tf.abs(u))

    # example 2: an objective
    @registry.register("objective", "capacity")
    class CapacityELBO(objectives.Objective):
        """Burgess et al. (2018): loss = -E_q[log p(x|z)] + gamma * |KL - C|."""

        def __init__(self, num_samples=1, gamma=100.0, capacity=5.0):
            super().__init__(num_samples)
            self.gamma, self.capacity = gamma, capacity

        def __call__(self, model, x, noise, step):
            _, terms = objectives.ELBO(self.num_samples)(model, x, noise, step)
            penalty = self.gamma * tf.abs(terms["kl"] - self.capacity)
            return objectives.batch_mean(penalty - terms["reconstruction"]), terms

        def get_config(self):
            return {**super().get_config(), "gamma": self.gamma, "capacity": self.capacity}

    yield LaplacePrior, CapacityELBO
    registry.unregister("prior", "laplace")
    registry.unregister("objective", "capacity")


def _images(count=64, seed=0):
    return (np.random.default_rng(seed).random((count, 6, 5, 1)) > 0.5).astype("float32")


def test_custom_prior_and_objective_train_save_and_load(tmp_path, parts):
    LaplacePrior, CapacityELBO = parts
    vae = keras_vae.mlp_vae((6, 5, 1), latent_dim=3, hidden_units=8, seed=0, prior="laplace",
                            objective=CapacityELBO(gamma=10.0, capacity=2.0))  # fmt: skip
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = vae.fit(_images(), batch_size=16, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "elbo", "reconstruction", "kl"}
    vae.save(tmp_path / "custom.keras")
    loaded = keras.saving.load_model(tmp_path / "custom.keras", safe_mode=True)
    assert isinstance(loaded.prior, LaplacePrior)
    assert isinstance(loaded.objective, CapacityELBO) and loaded.objective.capacity == 2.0
    np.testing.assert_allclose(loaded.predict(_images(4), verbose=0),
                               vae.predict(_images(4), verbose=0), atol=1e-6)  # fmt: skip


def test_custom_objective_loss_matches_its_formula(parts):
    _, CapacityELBO = parts
    vae = keras_vae.mlp_vae((6, 5, 1), latent_dim=3, hidden_units=8, seed=0,
                            objective=CapacityELBO(gamma=3.0, capacity=0.5))  # fmt: skip
    x = tf.constant(_images(8))
    vae.build(x.shape)
    noise = tf.random.stateless_normal([1, 8, 3], seed=[1, 2])
    loss, terms = vae.compute_objective(x, noise, 0)
    kl, rec = terms["kl"].numpy(), terms["reconstruction"].numpy()
    np.testing.assert_allclose(float(loss), np.mean(3.0 * np.abs(kl - 0.5) - rec), rtol=1e-5)


def test_custom_prior_log_prob_and_plain_sampler_match_scipy(parts):
    LaplacePrior, _ = parts
    prior = LaplacePrior(4)
    z = np.random.default_rng(1).normal(size=(10, 4)).astype("float32")
    expected = scipy.stats.laplace.logpdf(z).sum(-1)
    np.testing.assert_allclose(prior.distribution().log_prob(z).numpy(), expected, rtol=1e-5)
    draws = prior.sample_plain(20000).numpy()
    assert scipy.stats.kstest(draws[:, 0], "laplace").pvalue > 1e-3
