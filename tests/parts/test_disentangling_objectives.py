"""beta-TCVAE and the capacity-annealed beta-VAE: the total-correlation estimators against an
independent NumPy/SciPy computation and against the closed form of a Gaussian aggregate
posterior, the losses against their formulas, and training under fit (XLA), saving, resuming."""

import math

import keras
import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf
from helpers import run_saving_test

import keras_vae
from keras_vae import registry
from keras_vae.parts import disentangling_objectives as dobj

SHAPE = (6, 5, 1)


def _numpy_decomposition(loc, scale, z, dataset_size, estimator):
    """mi, tc, dim_kl `[L, M]` from loc, scale `[M, D]` and z `[L, M, D]`, with SciPy."""
    per_dim = scipy.stats.norm.logpdf(z[:, :, None, :], loc[None, None], scale[None, None])
    joint = per_dim.sum(-1)  # [L, i, k]
    m, n = loc.shape[0], float(dataset_size)
    if estimator == "mws":
        log_w = np.full((m, m), -math.log(n * m))
    else:
        log_w = np.full((m, m), math.log((n - 1) / (n * (m - 1))))
        np.fill_diagonal(log_w, -math.log(n))
    log_qz = scipy.special.logsumexp(joint + log_w, axis=-1)
    log_prod = scipy.special.logsumexp(per_dim + log_w[:, :, None], axis=-2).sum(-1)
    own = np.einsum("lii->li", joint)
    log_prior = scipy.stats.norm.logpdf(z).sum(-1)
    return {"mi": own - log_qz, "tc": log_qz - log_prod, "dim_kl": log_prod - log_prior}


@pytest.mark.parametrize("estimator", dobj.TC_ESTIMATORS)
def test_decomposition_matches_numpy_on_a_small_batch(estimator):
    rng = np.random.default_rng(0)
    loc, scale = rng.normal(size=(5, 3)), rng.uniform(0.3, 1.5, size=(5, 3))
    z = loc + scale * rng.normal(size=(2, 5, 3))
    expected = _numpy_decomposition(loc, scale, z, 1000, estimator)
    pairs = scipy.stats.norm.logpdf(z[:, :, None, :], loc, scale)
    got = dobj.decomposed_kl(
        tf.constant(pairs.sum(-1)), tf.constant(pairs), tf.constant(
            scipy.stats.norm.logpdf(z).sum(-1)), 1000, estimator,
    )  # fmt: skip
    for name in ("mi", "tc", "dim_kl"):
        np.testing.assert_allclose(got[name].numpy(), expected[name], rtol=1e-10, atol=1e-10)
    # the three parts add up to the Monte Carlo KL, log q(z_i|x_i) - log p(z_i), sample by sample
    total = sum(expected.values())
    mc_kl = np.einsum("lii->li", pairs.sum(-1)) - scipy.stats.norm.logpdf(z).sum(-1)
    np.testing.assert_allclose(total, mc_kl, rtol=1e-10)


def _gaussian_aggregate_terms(cov_means, s):
    """Closed forms for q(z|x) = N(mu_x, s^2 I), mu_x ~ N(0, S): q(z) = N(0, C), C = S + s^2 I:
    I(x; z) = 1/2 log det C / s^2D, TC = 1/2 (sum log C_jj - log det C),
    sum_j KL(N(0, C_jj) || N(0, 1)) = 1/2 sum_j (C_jj - 1 - log C_jj)."""
    c = cov_means + s**2 * np.eye(len(cov_means))
    logdet = np.linalg.slogdet(c)[1]
    diag = np.diag(c)
    return {
        "mi": 0.5 * (logdet - len(c) * math.log(s**2)),
        "tc": 0.5 * (np.log(diag).sum() - logdet),
        "dim_kl": 0.5 * np.sum(diag - 1 - np.log(diag)),
    }


@pytest.mark.parametrize("correlation", [0.0, 0.9])
def test_tc_estimators_recover_the_closed_form_of_a_gaussian_aggregate(correlation):
    rng = np.random.default_rng(1)
    cov = np.array([[1.0, correlation], [correlation, 1.0]])
    m, s, n = 3000, 0.5, 10**7
    loc = rng.multivariate_normal(np.zeros(2), cov, size=m)
    scale = np.full((m, 2), s)
    z = (loc + scale * rng.normal(size=(m, 2)))[None]
    per_dim = scipy.stats.norm.logpdf(z[:, :, None, :], loc, scale).astype("float32")
    log_prior = tf.constant(scipy.stats.norm.logpdf(z).sum(-1), tf.float32)
    expected = _gaussian_aggregate_terms(cov, s)
    assert (expected["tc"] > 0.3) == (correlation > 0)
    for estimator in dobj.TC_ESTIMATORS:
        got = dobj.decomposed_kl(
            tf.constant(per_dim.sum(-1)), tf.constant(per_dim), log_prior, n, estimator
        )
        tc = float(tf.reduce_mean(got["tc"]))
        if estimator == "mws":
            # overlapping posteriors: the paper's 1 / (N M) weights put log q(z) and each
            # log q(z_j) log N too low, so its TC is offset by (D - 1) log N
            tc -= math.log(n)
        else:
            for name in ("mi", "dim_kl"):
                assert float(tf.reduce_mean(got[name])) == pytest.approx(expected[name], abs=0.06)
        assert tc == pytest.approx(expected["tc"], abs=0.03)


def _tiny_vae(objective, posterior="diagonal", seed=0):
    vae = keras_vae.mlp_vae(SHAPE, latent_dim=3, hidden_units=8, seed=seed,
                            posterior=posterior, objective=objective)  # fmt: skip
    vae.build((None, *SHAPE))
    return vae


def _images(count=64, seed=0):
    return (np.random.default_rng(seed).random((count, *SHAPE)) > 0.5).astype("float32")


@pytest.mark.parametrize("estimator", dobj.TC_ESTIMATORS)
def test_beta_tc_loss_matches_its_formula(estimator):
    objective = dobj.BetaTC(num_samples=2, alpha=0.5, beta=4.0, gamma=2.0, dataset_size=500,
                            estimator=estimator)  # fmt: skip
    vae = _tiny_vae(objective)
    x = _images(6)
    eps = np.random.default_rng(2).normal(size=(2, 6, 3)).astype("float32")
    loss, terms = objective(vae, tf.constant(x), tf.constant(eps), 0)
    params = {k: v.numpy().astype("float64") for k, v in vae.encode_parameters(x).items()}
    z = params["loc"] + params["scale"] * eps
    parts = _numpy_decomposition(params["loc"], params["scale"], z, 500, estimator)
    recon = vae.decode(tf.constant(z, tf.float32)).log_prob(x).numpy().mean(0)  # TFP's own
    penalty = 0.5 * parts["mi"].mean(0) + 4.0 * parts["tc"].mean(0) + 2.0 * parts["dim_kl"].mean(0)
    np.testing.assert_allclose(float(loss), np.mean(penalty - recon), rtol=1e-4)
    for name in ("mi", "tc", "dim_kl"):
        np.testing.assert_allclose(terms[name].numpy(), parts[name].mean(0), rtol=1e-4, atol=1e-4)
    kl = 0.5 * np.sum(
        params["loc"] ** 2 + params["scale"] ** 2 - 1 - 2 * np.log(params["scale"]), 1
    )
    np.testing.assert_allclose(terms["elbo"].numpy(), recon - kl, rtol=1e-4)  # the true bound


def test_beta_tc_with_a_full_covariance_posterior_adds_up_to_the_monte_carlo_kl():
    objective = dobj.BetaTC(dataset_size=100)
    vae = _tiny_vae(objective, posterior="full")
    x = tf.constant(_images(5))
    eps = tf.constant(np.random.default_rng(3).normal(size=(1, 5, 3)).astype("float32"))
    _, terms = objective(vae, x, eps, 0)
    parameters = vae.encode_parameters(x)
    z = vae.posterior.reparameterize(parameters, eps)
    q = vae.posterior.distribution(**parameters)
    mc_kl = (q.log_prob(z) - vae.prior_distribution().log_prob(z)).numpy()[0]
    total = (terms["mi"] + terms["tc"] + terms["dim_kl"]).numpy()
    np.testing.assert_allclose(total, mc_kl, rtol=1e-4, atol=1e-4)


def test_capacity_schedule_and_loss_match_their_formulas():
    steps = [0, 25, 50, 100, 400]
    got = [float(dobj.capacity_at(t, 8.0, 100)) for t in steps]
    np.testing.assert_allclose(got, [0.0, 2.0, 4.0, 8.0, 8.0], rtol=1e-6)
    assert float(dobj.capacity_at(5, 8.0, 0)) == 8.0
    objective = dobj.AnnealedCapacity(gamma=7.0, capacity=3.0, capacity_steps=10)
    vae = _tiny_vae(objective)
    x = _images(5)
    eps = np.random.default_rng(4).normal(size=(1, 5, 3)).astype("float32")
    loss, terms = objective(vae, tf.constant(x), tf.constant(eps), tf.constant(4, tf.int64))
    params = {k: v.numpy().astype("float64") for k, v in vae.encode_parameters(x).items()}
    kl = 0.5 * np.sum(
        params["loc"] ** 2 + params["scale"] ** 2 - 1 - 2 * np.log(params["scale"]), 1
    )
    z = params["loc"] + params["scale"] * eps
    recon = vae.decode(tf.constant(z, tf.float32)).log_prob(x).numpy().mean(0)
    np.testing.assert_allclose(float(loss), np.mean(7.0 * np.abs(kl - 1.2) - recon), rtol=1e-5)
    np.testing.assert_allclose(terms["capacity"].numpy(), np.full(5, 1.2), rtol=1e-6)


@pytest.mark.parametrize(
    "objective",
    [
        dobj.BetaTC(beta=6.0, dataset_size=64, estimator="mws"),
        dobj.BetaTC(num_samples=2, estimator="importance", dataset_size=64),
        dobj.AnnealedCapacity(gamma=10.0, capacity=2.0, capacity_steps=8),
    ],
    ids=["betatc-mws", "betatc-importance", "capacity"],
)
def test_objectives_train_under_xla_and_round_trip_through_keras_files(objective):
    vae = _tiny_vae(objective)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    assert vae.xla == "step"  # XLA on (one device)
    history = vae.fit(_images(), batch_size=16, epochs=2, verbose=0)
    assert set(history.history) == {"loss", *objective.metric_names}
    assert all(np.isfinite(v).all() for v in history.history.values())
    restored = run_saving_test(vae, _images(4), outputs=lambda m, x: m.encode_parameters(x))
    assert type(restored.objective) is type(objective)
    assert restored.objective.get_config() == objective.get_config()


def test_capacity_schedule_resumes_from_the_saved_step(tmp_path):
    objective = dobj.AnnealedCapacity(gamma=1.0, capacity=4.0, capacity_steps=8)
    vae = _tiny_vae(objective)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=1)
    first = vae.fit(_images(), batch_size=16, epochs=1, verbose=0, shuffle=False)
    # steps 0..3: C_t = 0, 0.5, 1, 1.5; the metric is their mean over the epoch
    assert first.history["capacity"][0] == pytest.approx(0.75, rel=1e-6)
    vae.save(tmp_path / "run.keras")
    resumed = keras.saving.load_model(tmp_path / "run.keras", safe_mode=True)
    assert int(resumed.optimizer.iterations) == 4
    second = resumed.fit(_images(), batch_size=16, epochs=1, verbose=0, shuffle=False)
    # steps 4..7 continue the ramp: C_t = 2, 2.5, 3, 3.5
    assert second.history["capacity"][0] == pytest.approx(2.75, rel=1e-6)


def test_registered_by_name_and_arguments_checked():
    assert registry.get("objective", "betatc") is dobj.BetaTC
    assert registry.get("objective", "annealed_capacity") is dobj.AnnealedCapacity
    with pytest.raises(ValueError, match="dataset_size must be an int >= 2, .* Received: dataset"):
        dobj.BetaTC(dataset_size=1)
    with pytest.raises(ValueError, match="estimator must be one of .* Received: estimator='mss'"):
        dobj.BetaTC(estimator="mss")
    with pytest.raises(ValueError, match="beta must be a number >= 0. Received: beta=-1"):
        dobj.BetaTC(beta=-1)
    with pytest.raises(ValueError, match="capacity_steps must be an int >= 0. Received: "):
        dobj.AnnealedCapacity(capacity_steps=2.5)
    with pytest.raises(ValueError, match="gamma must be a number >= 0"):
        dobj.AnnealedCapacity(gamma=None)


def test_train_config_builds_the_objectives_by_name():
    from keras_vae.models.vae.kind import make_objective
    from keras_vae.parts.factor_vae import FactorVAE
    from keras_vae.runs.config import TrainConfig

    config = TrainConfig(objective="betatc", batch_size=50, samples=2)
    objective = make_objective(config, epoch_steps=8)
    assert isinstance(objective, dobj.BetaTC)
    assert (objective.dataset_size, objective.num_samples) == (400, 2)  # one epoch's examples
    # the options not given are the papers' (and the Python classes') defaults
    assert (objective.beta, objective.estimator) == (6.0, "importance")
    objective = make_objective(config.replace(tc_weight=3.0, tc_estimator="mws"), epoch_steps=8)
    assert (objective.beta, objective.estimator) == (3.0, "mws")

    config = TrainConfig(objective="annealed_capacity")
    objective = make_objective(config, epoch_steps=8)
    assert isinstance(objective, dobj.AnnealedCapacity)
    assert (objective.capacity, objective.gamma, objective.capacity_steps) == (25.0, 1000, 100_000)
    config = config.replace(capacity=5.0, capacity_weight=30.0, capacity_epochs=3)
    objective = make_objective(config, epoch_steps=8)
    assert (objective.capacity, objective.gamma, objective.capacity_steps) == (5.0, 30.0, 24)
    with pytest.raises(ValueError, match="needs epoch_steps"):
        make_objective(config)

    config = TrainConfig(objective="factorvae")
    objective = make_objective(config, epoch_steps=8)
    assert isinstance(objective, FactorVAE) and objective.gamma == 10.0
    assert objective.discriminator.hidden_units == [1000] * 6
    config = config.replace(tc_weight=4.0, discriminator_units=[16, 8],
                            discriminator_learning_rate=1e-3)  # fmt: skip
    objective = make_objective(config, epoch_steps=8)
    assert (objective.gamma, objective.discriminator.hidden_units) == (4.0, [16, 8])
    assert objective.discriminator.learning_rate == 1e-3
