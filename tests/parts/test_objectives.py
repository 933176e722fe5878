"""Objectives against closed forms, Monte Carlo estimates and a NumPy implementation."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special, stats

from keras_vae import mlp_vae
from keras_vae.parts import objectives

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


def test_diagonal_mixture_log_prob_matches_scipy_and_tfp_gradients():
    k, d = 7, 5  # narrow components far from 0, points near and far: where cancellation bites
    logits = RNG.normal(size=k).astype("float32")
    loc = (20.0 * RNG.normal(size=(k, d))).astype("float32")
    scale = RNG.uniform(0.01, 2.0, size=(k, d)).astype("float32")
    near = loc[RNG.integers(k, size=(3, 4))] + scale[0] * RNG.normal(size=(3, 4, d))
    z = np.concatenate([near, 30.0 * RNG.normal(size=(3, 2, d))], axis=1).astype("float32")
    joint = special.log_softmax(logits.astype("float64")) + stats.norm.logpdf(
        z[..., None, :].astype("float64"), loc.astype("float64"), scale.astype("float64")
    ).sum(-1)
    expected = special.logsumexp(joint, axis=-1)
    actual = objectives.diagonal_normal_mixture_log_prob(z, logits, loc, scale)
    assert actual.shape == (3, 6)
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
    variables = [tf.Variable(v) for v in (z[:, :4], logits, loc, scale)]
    mixture = tfd.MixtureSameFamily(tfd.Categorical(logits=variables[1]),
                                    _diag_normal(variables[2], variables[3]))  # fmt: skip
    gradients = []
    for log_prob in (
        lambda: objectives.diagonal_normal_mixture_log_prob(*variables),
        lambda: mixture.log_prob(variables[0]),
    ):
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(log_prob())
        gradients.append(tape.gradient(total, variables))
    for ours, tfps in zip(*gradients, strict=True):
        np.testing.assert_allclose(ours, tfps, rtol=2e-3, atol=1e-3)


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


# --------------------------------------------------------------- objective objects on a VAE
SHAPE = (3, 2, 1)


def _tiny_model(latent_dim=2, prior="standard", posterior="diagonal", seed=0):
    model = mlp_vae(
        SHAPE, latent_dim=latent_dim, hidden_units=[8], prior=prior, posterior=posterior,
        prior_components=3, seed=seed,
    )  # fmt: skip
    model.build((None, *SHAPE))
    return model


def _batch_and_noise(model, batch=4, samples=3):
    x = (RNG.uniform(size=(batch, *SHAPE)) > 0.5).astype("float32")
    eps = RNG.normal(size=(samples, batch, model.latent_dim)).astype("float32")
    return x, eps


def _numpy_terms(model, x, eps):
    """log p(x|z_l), log q(z_l|x), log N(z_l; 0, I) `[L, B]` and the closed-form KL per
    dimension `[B, D]`, in float64 from the encoder's loc/scale: z = loc + scale * eps."""
    params = {k: v.numpy().astype("float64") for k, v in model.encode_parameters(x).items()}
    loc, scale = params["loc"], params["scale"]
    z = loc + scale * eps
    features = model.decoder(tf.constant(z, tf.float32))
    logits = model.likelihood.parameters(features)["logits"].numpy().astype("float64")
    flat_x, flat_logits = x.reshape(len(x), -1), logits.reshape(*z.shape[:2], -1)
    return {
        "z": z,
        "log_likelihood": _numpy_log_bernoulli(flat_x, flat_logits),
        "log_q": stats.norm.logpdf(z, loc, scale).sum(-1),
        "log_prior": stats.norm.logpdf(z).sum(-1),
        "kl_per_dim": 0.5 * (loc**2 + scale**2 - 1.0 - 2.0 * np.log(scale)),
    }


def test_iwae_with_one_sample_equals_the_elbo_with_a_monte_carlo_kl():
    for prior, analytic in (("standard", False), ("mixture", "auto")):
        model = _tiny_model(prior=prior)
        x, eps = _batch_and_noise(model, samples=1)
        elbo_loss, elbo_terms = objectives.ELBO(1, analytic_kl=analytic)(model, x, eps, 0)
        iwae_loss, iwae_terms = objectives.IWAE(1)(model, x, eps, 0)
        np.testing.assert_allclose(float(iwae_loss), float(elbo_loss), rtol=1e-6)
        np.testing.assert_allclose(iwae_terms["iwae"], elbo_terms["elbo"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gradient", ["standard", "dreg"])
def test_iwae_loss_is_minus_the_mean_log_mean_exp_of_numpy_weights(gradient):
    model = _tiny_model()
    x, eps = _batch_and_noise(model, samples=5)
    loss, terms = objectives.IWAE(5, gradient=gradient)(model, x, eps, 0)
    ref = _numpy_terms(model, x, eps)
    log_w = ref["log_likelihood"] + ref["log_prior"] - ref["log_q"]  # [K, B]
    bound = special.logsumexp(log_w, axis=0) - np.log(5)
    np.testing.assert_allclose(terms["iwae"], bound, rtol=1e-4)
    np.testing.assert_allclose(float(loss), -bound.mean(), rtol=1e-4)
    # the reported ELBO from the same samples, with the closed-form KL
    kl = ref["kl_per_dim"].sum(-1)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-4)
    np.testing.assert_allclose(terms["elbo"], ref["log_likelihood"].mean(0) - kl, rtol=1e-4)


def _encoder_and_decoder_variables(model):
    encoder = model.encoder.trainable_variables + model.posterior.trainable_variables
    decoder = model.decoder.trainable_variables + model.likelihood.trainable_variables
    return encoder, decoder


def _gradients(model, objective, x, eps):
    encoder, decoder = _encoder_and_decoder_variables(model)
    with tf.GradientTape() as tape:
        loss, _ = objective(model, x, tf.constant(eps), 0)
    grads = tape.gradient(loss, encoder + decoder)
    return [g.numpy() for g in grads[: len(encoder)]], [g.numpy() for g in grads[len(encoder) :]]


def _reference_dreg_gradients(model, x, eps):
    """DReG's gradients of -1/B sum_b objective_b, computed sample by sample:

    decoder: -1/B sum_b sum_k w~_bk grad log w_bk,
    encoder: -1/B sum_b sum_k w~_bk^2 (d log w_bk / d z_bk) (d z_bk / d phi),
    with log w_k evaluated at a fixed z_k and q's parameters held constant, weights in NumPy."""
    encoder, decoder = _encoder_and_decoder_variables(model)
    params = {k: v.numpy() for k, v in model.encode_parameters(x).items()}
    loc, scale = params["loc"], params["scale"]
    samples, batch = eps.shape[:2]
    log_w, scores, z = np.zeros((samples, batch)), np.zeros(eps.shape), loc + scale * eps
    decoder_grads = []
    for k in range(samples):
        z_k = tf.constant(z[k])
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(z_k)
            log_q = tf.reduce_sum(
                -0.5 * tf.square((z_k - loc) / scale) - np.log(scale) - 0.5 * np.log(2 * np.pi),
                axis=-1,
            )
            log_prior = tf.reduce_sum(-0.5 * tf.square(z_k) - 0.5 * np.log(2 * np.pi), axis=-1)
            log_likelihood = model.decode(z_k).log_prob(x)
            log_w_k = log_likelihood + log_prior - log_q
        log_w[k] = log_w_k.numpy()
        scores[k] = tape.gradient(log_w_k, z_k).numpy()  # log w_bk depends on z_bk only
        decoder_grads.append([g.numpy() for g in tape.jacobian(log_likelihood, decoder)])
        del tape
    normalized = special.softmax(log_w, axis=0)  # w~ [K, B]
    decoder_expected = [
        -sum(np.tensordot(normalized[k], decoder_grads[k][i], axes=1) for k in range(samples))
        / batch
        for i in range(len(decoder))
    ]
    with tf.GradientTape() as tape:  # z's dependence on the encoder: z = loc + scale * eps
        p = model.encode_parameters(x)
        z_of_phi = p["loc"] + p["scale"] * eps
        coefficients = -((normalized**2)[..., None] * scores) / batch
        surrogate = tf.reduce_sum(tf.constant(coefficients, tf.float32) * z_of_phi)
    encoder_expected = [g.numpy() for g in tape.gradient(surrogate, encoder)]
    return encoder_expected, decoder_expected


def test_dreg_gradients_equal_their_formula_computed_sample_by_sample():
    model = _tiny_model(latent_dim=2)
    x, eps = _batch_and_noise(model, batch=3, samples=4)
    encoder_dreg, decoder_dreg = _gradients(model, objectives.IWAE(4, "dreg"), x, eps)
    encoder_standard, decoder_standard = _gradients(model, objectives.IWAE(4), x, eps)
    encoder_expected, decoder_expected = _reference_dreg_gradients(model, x, eps)
    for actual, expected in zip(encoder_dreg, encoder_expected, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-6)
    for dreg, standard, expected in zip(
        decoder_dreg, decoder_standard, decoder_expected, strict=True
    ):
        np.testing.assert_allclose(dreg, expected, rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(standard, expected, rtol=1e-3, atol=1e-6)
    # the encoder gradients are another estimator's (so the comparison above can fail)
    assert (
        max(np.abs(a - b).max() for a, b in zip(encoder_dreg, encoder_standard, strict=True)) > 1e-3
    )


class _GivenPosterior:
    """The model with its posterior's parameters given (to differentiate per example)."""

    def __init__(self, model, parameters):
        self._model, self._parameters = model, parameters

    def encode_parameters(self, x):
        return self._parameters

    def __getattr__(self, name):
        return getattr(self._model, name)


def _per_example_posterior_gradients(model, objective, x, loc, scale, eps):
    """d objective_b / d (loc_b, scale_b), `[B, 2 D]`: example b's loss depends on its own
    parameters only, so the gradient of the batch mean times B gives every example's."""
    loc, scale = tf.constant(loc), tf.constant(scale)
    with tf.GradientTape() as tape:
        tape.watch([loc, scale])
        loss, _ = objective(_GivenPosterior(model, {"loc": loc, "scale": scale}), x, eps, 0)
    grads = tape.gradient(loss, [loc, scale])
    return len(x) * np.concatenate([g.numpy() for g in grads], axis=-1).astype("float64")


class _STL(objectives.IWAE):
    """The STL-like estimator sum_k w~_k (d log w_k / d z_k)(d z_k / d phi): DReG with w~ in
    place of w~^2 on the path; biased for the IWAE bound when K > 1."""

    def __call__(self, model, x, noise, step):
        params = model.encode_parameters(x)
        frozen = model.posterior.distribution(**{k: tf.stop_gradient(v) for k, v in params.items()})
        z = model.posterior.reparameterize(params, noise)
        log_w = model.decode(z).log_prob(x) + model.prior_distribution().log_prob(z)
        log_w -= frozen.log_prob(z)
        weights = tf.stop_gradient(tf.nn.softmax(log_w, axis=0))
        return -tf.reduce_mean(tf.reduce_sum(weights * log_w, axis=0)), {}


def _z_scores(per_draw):
    return per_draw.mean(0) / (per_draw.std(0) / np.sqrt(len(per_draw)))


def test_dreg_encoder_gradient_is_unbiased_for_the_standard_iwae_gradient():
    # one example repeated N times, each with its own noise: N draws of each estimator of the
    # gradient for the posterior's parameters (a deliberately poor q, so the weights vary)
    model = _tiny_model(latent_dim=2, seed=3)
    draws, samples = 20_000, 3
    x = np.repeat((RNG.uniform(size=(1, *SHAPE)) > 0.5).astype("float32"), draws, axis=0)
    loc = np.tile(np.array([[1.0, -0.5]], "float32"), (draws, 1))
    scale = np.tile(np.array([[0.6, 1.4]], "float32"), (draws, 1))
    eps = tf.constant(RNG.normal(size=(samples, draws, 2)).astype("float32"))
    estimators = {
        "standard": objectives.IWAE(samples),
        "dreg": objectives.IWAE(samples, "dreg"),
        "stl": _STL(samples),
    }
    per_draw = {
        name: _per_example_posterior_gradients(model, objective, x, loc, scale, eps)
        for name, objective in estimators.items()
    }
    # paired differences (the same noise): mean zero within 4.5 standard errors
    z_dreg = _z_scores(per_draw["dreg"] - per_draw["standard"])
    assert np.all(np.abs(z_dreg) < 4.5), z_dreg
    # the comparison has the power to see a bias: STL's is many standard errors away
    z_stl = _z_scores(per_draw["stl"] - per_draw["standard"])
    assert np.any(np.abs(z_stl) > 10), z_stl


# ------------------------------------------------------------ free bits and KL schedules
def test_free_bits_kl_floors_each_dimension_of_the_batch_mean():
    kl_per_dim = RNG.uniform(0.0, 2.0, size=(6, 4)).astype("float32")
    batch_mean = kl_per_dim.astype("float64").mean(0)
    for free_bits in (0.0, 0.5 * batch_mean.min(), np.median(batch_mean), 2 * batch_mean.max()):
        expected = np.sum(np.maximum(batch_mean, free_bits))
        actual = float(objectives.free_bits_kl(tf.constant(kl_per_dim), free_bits))
        np.testing.assert_allclose(actual, expected, rtol=1e-5)
    # the floor applies to the batch mean, not to each example
    per_example_floor = np.maximum(kl_per_dim, np.median(batch_mean)).mean(0).sum()
    assert float(objectives.free_bits_kl(kl_per_dim, np.median(batch_mean))) < per_example_floor


def test_free_bits_kl_of_an_empty_batch_is_zero():
    assert float(objectives.free_bits_kl(tf.zeros([0, 3]), 0.5)) == 0.0


@pytest.mark.parametrize("where", ["below", "between", "above"])
def test_elbo_loss_with_free_bits_matches_numpy(where):
    model = _tiny_model(latent_dim=3)
    x, eps = _batch_and_noise(model, batch=5, samples=2)
    ref = _numpy_terms(model, x, eps)
    batch_kl = ref["kl_per_dim"].mean(0)  # [D]
    free_bits = {"below": 0.5 * batch_kl.min(), "between": np.median(batch_kl),
                 "above": 2.0 * batch_kl.max()}[where]  # fmt: skip
    loss, _ = objectives.ELBO(2, beta=0.7, free_bits=float(free_bits))(model, x, eps, 0)
    # the floor acts only on the dimensions whose batch-mean KL is below lambda
    kl_term = np.sum(np.where(batch_kl < free_bits, free_bits, batch_kl))
    expected = -ref["log_likelihood"].mean() + 0.7 * kl_term
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_free_bits_without_a_per_dimension_kl_floor_the_whole_z():
    # full covariance: no per-dimension KL; all of z is one group with lambda * D free nats
    model = _tiny_model(latent_dim=3, posterior="full")
    x, eps = _batch_and_noise(model, batch=5, samples=1)
    params = {k: v.numpy().astype("float64") for k, v in model.encode_parameters(x).items()}
    covariance = params["scale_tril"] @ np.swapaxes(params["scale_tril"], -1, -2)
    _, log_det = np.linalg.slogdet(covariance)
    kl = 0.5 * (np.trace(covariance, axis1=1, axis2=2) + (params["loc"] ** 2).sum(-1) - 3 - log_det)
    _, terms = objectives.ELBO(1)(model, x, eps, 0)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-4)
    reconstruction = terms["reconstruction"].numpy().mean()
    for free_bits in (0.5 * kl.mean() / 3, 2.0 * kl.mean() / 3):
        loss, _ = objectives.ELBO(1, free_bits=float(free_bits))(model, x, eps, 0)
        expected = -reconstruction + max(kl.mean(), 3 * free_bits)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_kl_warmup_and_cyclical_annealing_weights():
    weights = lambda **kw: [float(objectives.kl_weight(t, 0.8, **kw)) for t in steps]  # noqa: E731
    steps = [0, 5, 10, 20]
    np.testing.assert_allclose(weights(warmup_steps=10), [0.0, 0.4, 0.8, 0.8], rtol=1e-6)
    np.testing.assert_allclose(weights(), [0.8] * 4, rtol=1e-6)
    steps = [0, 5, 10, 19, 20, 25, 30, 40, 45]
    expected = [0.0, 0.4, 0.8, 0.8, 0.0, 0.4, 0.8, 0.0, 0.4]  # restarts every C = 20 steps
    np.testing.assert_allclose(weights(warmup_steps=10, cycle_steps=20), expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("options", "steps", "betas"),
    [
        ({"warmup_steps": 10}, [0, 5, 10, 20], [0.0, 0.3, 0.6, 0.6]),
        ({"warmup_steps": 10, "cycle_steps": 20}, [15, 20, 25, 45], [0.6, 0.0, 0.3, 0.3]),
    ],
)
def test_elbo_loss_follows_the_kl_weight_schedule(options, steps, betas):
    model = _tiny_model()
    x, eps = _batch_and_noise(model, samples=2)
    ref = _numpy_terms(model, x, eps)
    reconstruction, kl = ref["log_likelihood"].mean(), ref["kl_per_dim"].sum(-1).mean()
    objective = objectives.ELBO(2, beta=0.6, **options)
    for step, beta in zip(steps, betas, strict=True):
        loss, terms = objective(model, x, eps, tf.constant(step, tf.int64))
        np.testing.assert_allclose(float(loss), -reconstruction + beta * kl, rtol=1e-5)


@pytest.mark.parametrize(
    "objective",
    [
        objectives.ELBO(2, beta=0.3),
        objectives.ELBO(2, beta=2.0, warmup_steps=10, free_bits=5.0),
        objectives.ELBO(2, warmup_steps=4, cycle_steps=8, free_bits=0.01),
        objectives.IWAE(2, "dreg"),
    ],
)
def test_reported_elbo_is_the_true_bound_whatever_is_optimised(objective):
    model = _tiny_model()
    x, eps = _batch_and_noise(model, samples=2)
    ref = _numpy_terms(model, x, eps)
    reconstruction, kl = ref["log_likelihood"].mean(0), ref["kl_per_dim"].sum(-1)
    loss, terms = objective(model, x, eps, 3)
    np.testing.assert_allclose(terms["reconstruction"], reconstruction, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-4)
    np.testing.assert_allclose(terms["elbo"], reconstruction - kl, rtol=1e-5)
    assert set(terms) == set(objective.metric_names)
    assert abs(float(loss) + (reconstruction - kl).mean()) > 1e-2  # something else is optimised


@pytest.mark.parametrize("objective", [objectives.ELBO(1, free_bits=0.5), objectives.IWAE(3)])
def test_objective_of_an_empty_batch_is_zero(objective):
    model = _tiny_model()
    loss, terms = objective(model, np.zeros((0, *SHAPE), "float32"), np.zeros((3, 0, 2)), 0)
    assert float(loss) == 0.0
    assert all(t.shape == (0,) for t in terms.values())


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: objectives.ELBO(num_samples=0), "num_samples"),
        (lambda: objectives.ELBO(beta=-0.1), "beta"),
        (lambda: objectives.ELBO(analytic_kl="yes"), "analytic_kl"),
        (lambda: objectives.ELBO(warmup_steps=-1), "warmup_steps"),
        (lambda: objectives.ELBO(warmup_steps=10, cycle_steps=2.5), "cycle_steps"),
        (lambda: objectives.ELBO(free_bits=-1.0), "free_bits"),
        (lambda: objectives.IWAE(num_samples=1.5), "num_samples"),
        (lambda: objectives.IWAE(5, gradient="reinforce"), "gradient"),
    ],
)
def test_bad_objective_arguments_give_one_line_errors_naming_them(make, argument):
    with pytest.raises(ValueError, match=rf"Received: {argument}=") as error:
        make()
    assert "\n" not in str(error.value)


def test_cycle_without_warmup_and_analytic_kl_without_closed_form_are_refused():
    with pytest.raises(ValueError, match="cycle_steps needs warmup_steps > 0"):
        objectives.ELBO(cycle_steps=10)
    model = _tiny_model(prior="mixture")
    x, eps = _batch_and_noise(model, samples=1)
    with pytest.raises(ValueError, match="analytic_kl=True but MixturePrior has no closed form"):
        objectives.ELBO(1, analytic_kl=True)(model, x, eps, 0)


def test_objectives_round_trip_through_their_config():
    for objective in (objectives.ELBO(3, 0.5, False, 10, 20, 0.25), objectives.IWAE(4, "dreg")):
        config = keras.saving.serialize_keras_object(objective)
        restored = keras.saving.deserialize_keras_object(config)
        assert type(restored) is type(objective)
        assert restored.get_config() == objective.get_config()
