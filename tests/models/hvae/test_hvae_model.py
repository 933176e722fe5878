"""The hierarchical VAE against independent references: a linear-Gaussian hierarchy with a
closed-form log p(x) (SciPy) and ELBO (NumPy), a NumPy forward pass of the top-down pass,
the plain VAE at L = 1, the .keras round trip, and training with XLA."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test  # noqa: E402
from scipy import stats

from keras_vae import mlp_vae  # noqa: E402
from keras_vae.models.hvae import (  # noqa: E402
    HierarchicalVAE,
    conv_hvae,
    importance_sampled_log_likelihood,
    mlp_hvae,
)
from keras_vae.models.hvae.layers import SOFTPLUS_ONE  # noqa: E402
from keras_vae.models.hvae.metrics import evaluate as hvae_evaluate  # noqa: E402
from keras_vae.models.vae import evaluation
from keras_vae.parts import objectives
from keras_vae.parts.disentangling_objectives import BetaTC
from keras_vae.parts.factor_vae import FactorVAE

RNG = np.random.default_rng(30)
SHAPE = (6, 5, 1)
MIN_SCALE = 1e-4


def _binary(n=8, shape=SHAPE):
    return (RNG.uniform(size=(n, *shape)) > 0.5).astype("float32")


def _patterns(n=64, shape=SHAPE):
    """Binary images with structure to learn: one of 4 fixed patterns, 5% of pixels flipped."""
    rng = np.random.default_rng(7)
    prototypes = rng.uniform(size=(4, *shape)) > 0.5
    flips = rng.uniform(size=(n, *shape)) < 0.05
    return (prototypes[rng.integers(0, 4, size=n)] ^ flips).astype("float32")


def _softplus(v):
    return np.logaddexp(0.0, v)


def _inverse_softplus(v):
    return np.log(np.expm1(v))


# ------------------------------------------------------------ a linear-Gaussian hierarchy
# z2 ~ N(0, I_2), z1 | z2 ~ N(A z2 + a, s1^2 I_3), x | z1 ~ N(B z1 + b, s2^2 I_6), with
# A = V diag(alpha), B = beta U (V, U orthonormal columns), so that the exact posterior
# p(z2|x) p(z1|z2, x) has diagonal covariances and lies inside the model's family.
DX, D1, D2 = 6, 3, 2
S1, S2 = 0.7, 0.4
U = np.linalg.qr(RNG.normal(size=(DX, D1)))[0]
V = np.linalg.qr(RNG.normal(size=(D1, D2)))[0]
A = V @ np.diag([1.5, 0.8])
B = 1.3 * U
a = RNG.normal(size=D1)
b = RNG.normal(size=DX)


def _exact_log_px(x):
    cov = B @ (A @ A.T + S1**2 * np.eye(D1)) @ B.T + S2**2 * np.eye(DX)
    return stats.multivariate_normal(B @ a + b, cov).logpdf(x)


def _exact_posterior_maps():
    """The exact posterior as affine maps: q(z2|x) = N(M2 x + m2, diag v2) and
    q(z1|z2, x) = N(Gz z2 + Gx x + g, diag v1)."""
    sigma = S1**2 * B @ B.T + S2**2 * np.eye(DX)
    inv = np.linalg.inv(sigma)
    cov2 = np.linalg.inv(np.eye(D2) + A.T @ B.T @ inv @ B @ A)
    precision1 = np.eye(D1) / S1**2 + B.T @ B / S2**2
    cov1 = np.linalg.inv(precision1)
    for cov in (cov2, cov1):
        np.testing.assert_allclose(cov, np.diag(np.diag(cov)), atol=1e-12)  # diagonal
    m2_x = cov2 @ A.T @ B.T @ inv
    return {
        "M2": m2_x, "m2": -m2_x @ (B @ a + b), "v2": np.diag(cov2),
        "Gz": cov1 @ A / S1**2, "Gx": cov1 @ B.T / S2**2,
        "g": cov1 @ (a / S1**2 - B.T @ b / S2**2), "v1": np.diag(cov1),
    }  # fmt: skip


def _linear_model(objective=None, maps=None):
    """An HVAE whose weights make it the linear-Gaussian hierarchy, with q given by `maps`."""
    model = mlp_hvae(
        (DX,), latent_dims=(D1, D2), hidden_units=[[DX], [DX]], likelihood="gaussian",
        activation="linear", likelihood_options={"mean_activation": "linear", "fixed_scale": S2},
        objective=objective, seed=1,
    )  # fmt: skip
    model.build((None, DX))
    maps = maps or _exact_posterior_maps()
    eye = np.eye(DX)
    for dense in (model.bottom_up.blocks[0][0], model.bottom_up.blocks[1][0]):
        dense.set_weights([eye, np.zeros(DX)])  # d_1 = d_2 = x
    # q(z2|x): [loc, raw] = d_2 K + k, sigma = softplus(raw) + min_scale
    raw2 = _inverse_softplus(np.sqrt(maps["v2"]) - MIN_SCALE)
    model.top_posterior.projection.set_weights(
        [
            np.concatenate([maps["M2"].T, np.zeros((DX, D2))], 1),
            np.concatenate([maps["m2"], raw2]),
        ]  # fmt: skip
    )
    cell = model.cells[0]
    # h_1 = [z2, 0, 0, 0, 0]
    cell.state_layers[0].set_weights([np.eye(D2, DX), np.zeros(DX)])
    # p(z1|z2): mu = A z2 + a, sigma = s1 = softplus(raw + c) + min_scale
    raw_p = _inverse_softplus(S1 - MIN_SCALE) - SOFTPLUS_ONE
    kernel = np.zeros((DX, 2 * D1))
    kernel[:D2, :D1] = A.T
    cell.prior_projection.set_weights([kernel, np.concatenate([a, np.full(D1, raw_p)])])
    # q(z1|z2, x) = N(mu + s1 dmu, (s1 dsigma)^2): dmu = (mean - A z2 - a) / s1 from [h_1, d_1]
    kernel = np.zeros((2 * DX, 2 * D1))
    kernel[:D2, :D1] = ((maps["Gz"] - A) / S1).T
    kernel[DX:, :D1] = (maps["Gx"] / S1).T
    raw_q = _inverse_softplus(np.sqrt(maps["v1"]) / S1 - MIN_SCALE) - SOFTPLUS_ONE
    bias = np.concatenate([(maps["g"] - a) / S1, raw_q])
    cell.posterior_projection.set_weights([kernel, bias])
    # p(x|z1): loc = B z1 + b from the decoder's [z1, h_1] -> [z1, 0, 0, 0]
    model.decoder.dense_layers[0].set_weights([np.eye(D1 + DX, DX), np.zeros(DX)])
    model.likelihood.projection.set_weights([np.eye(DX, D1) @ B.T, b])
    return model


def _perturbed_maps(scale=0.04, seed=0):
    rng = np.random.default_rng(seed)
    maps = _exact_posterior_maps()
    noisy = {k: v + scale * rng.normal(size=np.shape(v)) for k, v in maps.items()}
    noisy["v2"], noisy["v1"] = maps["v2"] * 1.4, maps["v1"] * 0.8
    return noisy


def _numpy_elbo(x, maps):
    """E_q[log p(x, z1, z2) - log q(z1, z2 | x)] in closed form for affine-Gaussian q."""
    m2, c2 = maps["M2"] @ x + maps["m2"], np.diag(maps["v2"])
    g = maps["Gx"] @ x + maps["g"]
    m1 = maps["Gz"] @ m2 + g
    c1 = maps["Gz"] @ c2 @ maps["Gz"].T + np.diag(maps["v1"])
    residual = x - B @ m1 - b
    log_px_z = -0.5 * (residual @ residual + np.trace(B @ c1 @ B.T)) / S2**2 - DX / 2 * np.log(
        2 * np.pi * S2**2
    )
    gap = maps["Gz"] - A
    mean_gap = gap @ m2 + g - a
    cov_gap = gap @ c2 @ gap.T + np.diag(maps["v1"])
    log_pz1 = -0.5 * (mean_gap @ mean_gap + np.trace(cov_gap)) / S1**2 - D1 / 2 * np.log(
        2 * np.pi * S1**2
    )
    log_pz2 = -0.5 * (m2 @ m2 + np.trace(c2)) - D2 / 2 * np.log(2 * np.pi)
    entropy = 0.5 * np.sum(np.log(2 * np.pi * np.e * maps["v2"])) + 0.5 * np.sum(
        np.log(2 * np.pi * np.e * maps["v1"])
    )
    return log_px_z + log_pz1 + log_pz2 + entropy


def _linear_x(n=4, seed=1):
    """n draws of x from the hierarchy."""
    rng = np.random.default_rng(seed)
    z2 = rng.normal(size=(n, D2))
    z1 = z2 @ A.T + a + S1 * rng.normal(size=(n, D1))
    return (z1 @ B.T + b + S2 * rng.normal(size=(n, DX))).astype("float32")


def test_exact_posterior_makes_every_importance_weight_the_exact_log_px():
    x = _linear_x()
    model = _linear_model()
    exact = _exact_log_px(x)
    noise = tf.random.normal((64, len(x), D1 + D2), seed=1)
    terms = model.latent_terms(tf.constant(x), noise)
    # log p(x, z) - log q(z|x) = log p(x) for every z when q is the posterior
    np.testing.assert_allclose(terms.log_weights.numpy(), np.tile(exact, (64, 1)), atol=2e-4)
    loss, iwae = objectives.IWAE(64)(model, tf.constant(x), noise, 0)
    np.testing.assert_allclose(iwae["iwae"].numpy(), exact, atol=2e-4)
    # the analytic-KL ELBO equals log p(x) in expectation (its terms vary per sample)
    np.testing.assert_allclose(iwae["elbo"].numpy(), exact, atol=0.5)
    result = importance_sampled_log_likelihood(model, x, 30, chunk_size=7)
    np.testing.assert_allclose(result["log_px"], exact, atol=2e-4)
    summary = hvae_evaluate(model, x, 30, chunk_size=7)
    assert summary["nll"] == pytest.approx(-exact.mean(), abs=2e-4)
    assert summary["bits_per_dim"] == pytest.approx(summary["nll"] / (DX * np.log(2)))
    assert summary["kl"] == pytest.approx(sum(summary["kl_layers"]))
    assert summary["latent_sizes"] == [D1, D2] and len(summary["active_units"]) == 2


def test_linear_gaussian_elbo_matches_numpy_and_iwae_converges_to_the_exact_log_px():
    x = _linear_x(3, seed=5)
    maps = _perturbed_maps(seed=0)
    model = _linear_model(maps=maps)
    exact = _exact_log_px(x)
    numpy_elbo = np.array([_numpy_elbo(row.astype(np.float64), maps) for row in x])
    assert np.all(numpy_elbo < exact - 0.1)  # q is not the posterior: a strict bound
    samples = 4000
    noise = tf.random.normal((samples, len(x), D1 + D2), seed=2)
    terms = model.latent_terms(tf.constant(x), noise)
    log_w = terms.log_weights.numpy().astype(np.float64)
    stderr = log_w.std(axis=0) / np.sqrt(samples)
    # the mean log weight (Monte Carlo KL) and the analytic-KL ELBO both estimate it
    np.testing.assert_array_less(np.abs(log_w.mean(0) - numpy_elbo), 4 * stderr)
    elbo = (tf.reduce_mean(terms.log_likelihood, 0) - terms.kl).numpy()
    np.testing.assert_array_less(np.abs(elbo - numpy_elbo), 4 * stderr)
    # K = 5,000 importance samples of the whole hierarchy close >= 85% of the ELBO's gap
    estimate = importance_sampled_log_likelihood(model, x, 5000, chunk_size=1000, seed=3)
    np.testing.assert_allclose(estimate["log_px"], exact, atol=0.05)
    np.testing.assert_array_less(np.abs(estimate["log_px"] - exact), 0.15 * (exact - numpy_elbo))


def test_dreg_encoder_gradients_vanish_at_the_exact_posterior():
    # log w is the constant log p(x) in z, so DReG's encoder gradient is exactly 0; the
    # standard reparameterised IWAE gradient keeps the score term, which is not
    x = tf.constant(_linear_x())
    noise = tf.random.normal((5, 4, D1 + D2), seed=4)
    norms = {}
    for gradient in ("dreg", "standard"):
        model = _linear_model(objectives.IWAE(5, gradient=gradient))
        encoder = (model.bottom_up.trainable_variables + model.top_posterior.trainable_variables
                   + model.cells[0].posterior_projection.trainable_variables)  # fmt: skip
        with tf.GradientTape() as tape:
            loss, _ = model.objective(model, x, noise, 0)
        grads = tape.gradient(loss, encoder)
        norms[gradient] = max(float(tf.reduce_max(tf.abs(g))) for g in grads)
    assert norms["dreg"] < 1e-4
    assert norms["standard"] > 1e-2


# ------------------------------------------------------------ a NumPy forward pass (tanh)
def _weights(layer):
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    return lambda h: h @ kernel + bias


def _numpy_pass(model, x, eps):
    """The top-down pass of a two-layer tanh MLP HVAE in NumPy: the parameters of each
    layer's q and p, log w per sample and the per-layer KLs."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    d1 = np.tanh(_weights(model.bottom_up.blocks[0][0])(flat))
    d2 = np.tanh(_weights(model.bottom_up.blocks[1][0])(d1))
    top = _weights(model.top_posterior.projection)(d2)
    loc2, scale2 = top[:, :D2], _softplus(top[:, D2:]) + MIN_SCALE
    eps1, eps2 = eps[..., :D1], eps[..., D1:]
    z2 = loc2 + scale2 * eps2
    cell = model.cells[0]
    h1 = np.tanh(_weights(cell.state_layers[0])(z2))
    prior = _weights(cell.prior_projection)(h1)
    mu, sigma = prior[..., :D1], _softplus(prior[..., D1:] + SOFTPLUS_ONE) + MIN_SCALE
    d1_tiled = np.broadcast_to(d1, h1.shape[:-1] + d1.shape[-1:])
    offsets = _weights(cell.posterior_projection)(np.concatenate([h1, d1_tiled], -1))
    dmu, dsigma = offsets[..., :D1], _softplus(offsets[..., D1:] + SOFTPLUS_ONE) + MIN_SCALE
    loc1, scale1 = mu + sigma * dmu, sigma * dsigma
    z1 = loc1 + scale1 * eps1
    features = np.tanh(_weights(model.decoder.dense_layers[0])(np.concatenate([z1, h1], -1)))
    logits = _weights(model.likelihood.projection)(features)
    log_px_z = np.sum(flat * logits - _softplus(logits), axis=-1)
    normal = lambda z, m, s: np.sum(stats.norm.logpdf(z, m, s), axis=-1)  # noqa: E731
    log_w = (log_px_z + normal(z1, mu, sigma) + normal(z2, 0, 1)
             - normal(z1, loc1, scale1) - normal(z2, loc2, scale2))  # fmt: skip
    # KL of two diagonal Gaussians, the textbook formula (not the offsets' form)
    kl1 = np.sum(np.log(sigma / scale1) + (scale1**2 + (loc1 - mu) ** 2) / (2 * sigma**2) - 0.5, -1)
    kl2 = np.sum(-np.log(scale2) + (scale2**2 + loc2**2) / 2 - 0.5, -1)
    return {"loc1": loc1, "scale1": scale1, "mu": mu, "sigma": sigma, "loc2": loc2,
            "scale2": scale2, "log_w": log_w, "kl1": kl1, "kl2": kl2}  # fmt: skip


def _tanh_model(**kwargs):
    model = mlp_hvae(
        SHAPE, latent_dims=(D1, D2), hidden_units=[[7], [5]], activation="tanh", seed=3, **kwargs
    )
    model.build((None, *SHAPE))
    for v in model.trainable_variables:  # non-trivial biases and scales everywhere
        v.assign(v + 0.3 * RNG.normal(size=v.shape))
    return model


def test_top_down_posterior_parameters_and_layer_kls_match_a_numpy_forward_pass():
    model = _tanh_model()
    x = _binary(4)
    mean_path = _numpy_pass(model, x, np.zeros((len(x), D1 + D2)))
    q1, q2 = model.encode_parameters(x)
    for key, ref in (("loc", "loc1"), ("scale", "scale1"), ("prior_loc", "mu"),
                     ("prior_scale", "sigma")):  # fmt: skip
        np.testing.assert_allclose(q1[key].numpy(), mean_path[ref], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(q2["loc"].numpy(), mean_path["loc2"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(q2["scale"].numpy(), mean_path["scale2"], rtol=1e-4)
    eps = RNG.normal(size=(3, len(x), D1 + D2))
    reference = _numpy_pass(model, x, eps)
    terms = model.latent_terms(tf.constant(x), tf.constant(eps, tf.float32))
    np.testing.assert_allclose(terms.log_weights.numpy(), reference["log_w"], rtol=1e-4)
    np.testing.assert_allclose(terms.terms["kl_1"].numpy(), reference["kl1"].mean(0), rtol=1e-4)
    np.testing.assert_allclose(terms.terms["kl_2"].numpy(), reference["kl2"], rtol=1e-4)
    np.testing.assert_allclose(terms.kl.numpy(), (reference["kl1"].mean(0) + reference["kl2"]),
                               rtol=1e-4)  # fmt: skip
    # Monte Carlo KL (analytic_kl=False): log q - log p of the samples, per layer
    monte_carlo = model.latent_terms(tf.constant(x), tf.constant(eps, tf.float32), False)
    np.testing.assert_allclose(
        monte_carlo.kl.numpy(),
        np.mean(terms.log_likelihood.numpy() - reference["log_w"], axis=0),
        rtol=1e-4,
    )


def test_free_bits_floor_each_group_of_each_layer():
    x = tf.constant(_binary(4))
    eps = tf.constant(RNG.normal(size=(2, 4, D1 + D2)), tf.float32)
    lam = 50.0  # far above every unit's KL, whatever the random weights: all floors bind
    for groups, floor in ((None, lam * (D1 + D2)), (1, lam * (D1 + D2))):
        model = _tanh_model(free_bits_groups=groups, objective=objectives.ELBO(2, free_bits=lam))
        loss, terms = model.objective(model, x, eps, 0)
        expected = -np.mean(terms["reconstruction"].numpy()) + floor
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
        latent = model.latent_terms(x, eps)
        assert latent.kl_groups.shape == (4, D1 + D2 if groups is None else 2)
        np.testing.assert_allclose(tf.reduce_sum(latent.kl_groups, -1), latent.kl, rtol=1e-5)
    # lambda = 0.2 per unit, groups of one layer: max(0.2 * size_i, mean KL_i) per layer
    model = _tanh_model(free_bits_groups=1, objective=objectives.ELBO(2, free_bits=0.2))
    loss, terms = model.objective(model, x, eps, 0)
    per_layer = [max(0.2 * d, float(np.mean(terms[f"kl_{i}"]))) for i, d in ((1, D1), (2, D2))]
    np.testing.assert_allclose(
        float(loss), -np.mean(terms["reconstruction"].numpy()) + sum(per_layer), rtol=1e-5
    )


# ------------------------------------------------------------------------ L = 1 is a VAE
def _vae_and_one_layer_hvae(objective):
    vae = mlp_vae(SHAPE, latent_dim=3, hidden_units=[8], objective=objective, seed=5)
    hvae = mlp_hvae(
        SHAPE, latent_dims=(3,), hidden_units=[8], activation="tanh", objective=objective, seed=5
    )
    for model in (vae, hvae):
        model.build((None, *SHAPE))
    pairs = [
        (vae.encoder.dense_layers[0], hvae.bottom_up.blocks[0][0]),
        (vae.posterior.projection, hvae.top_posterior.projection),
        (vae.decoder.dense_layers[0], hvae.decoder.dense_layers[0]),
        (vae.likelihood.projection, hvae.likelihood.projection),
    ]
    for theirs, mine in pairs:
        mine.set_weights([w + 0.2 * RNG.normal(size=w.shape) for w in theirs.get_weights()])
        theirs.set_weights(mine.get_weights())
    return vae, hvae


@pytest.mark.parametrize(
    "objective",
    [objectives.ELBO(3, free_bits=0.1), objectives.IWAE(4), objectives.IWAE(4, gradient="dreg")],
    ids=["elbo", "iwae", "dreg"],
)
def test_one_layer_equals_the_plain_vae(objective):
    vae, hvae = _vae_and_one_layer_hvae(objective)
    x = tf.constant(_binary(6))
    noise = tf.constant(RNG.normal(size=(objective.num_samples, 6, 3)), tf.float32)
    results = []
    for model in (vae, hvae):
        with tf.GradientTape() as tape:
            loss, terms = model.objective(model, x, noise, 0)
        results.append((loss, terms, tape.gradient(loss, model.trainable_variables)))
    (loss_v, terms_v, grads_v), (loss_h, terms_h, grads_h) = results
    np.testing.assert_allclose(float(loss_h), float(loss_v), rtol=1e-5)
    for key, value in terms_v.items():
        np.testing.assert_allclose(terms_h[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms_h["kl_1"].numpy(), terms_v["kl"].numpy(), rtol=1e-6)
    for gv, gh in zip(grads_v, grads_h, strict=True):  # same order: encoder ... likelihood
        np.testing.assert_allclose(gh.numpy(), gv.numpy(), rtol=1e-4, atol=1e-5)


def test_one_layer_log_px_equals_the_plain_vae_evaluation():
    vae, hvae = _vae_and_one_layer_hvae(objectives.ELBO())
    x = _binary(5)
    theirs = evaluation.importance_sampled_log_likelihood(vae, x, 60, chunk_size=25, verbose=0)
    mine = importance_sampled_log_likelihood(hvae, x, 60, chunk_size=25)
    np.testing.assert_allclose(mine["log_px"], theirs["log_px"], rtol=1e-5)
    np.testing.assert_allclose(mine["elbo"], theirs["elbo"], rtol=1e-5)
    np.testing.assert_allclose(mine["posterior_means"][0], theirs["posterior_mean"], rtol=1e-6)


# ------------------------------------------------------------------------ the model's API
def test_encode_decode_sample_and_resample_shapes_and_seeds():
    model = _tanh_model()
    x = _binary(4)
    q1, q2 = model.encode(x)
    assert q1.event_shape == (D1,) and q2.event_shape == (D2,) and q1.batch_shape == (4,)
    p = model.decode([q1.sample(2, seed=(1, 2)), q2.sample(2, seed=(3, 4))])
    assert p.batch_shape == (2, 4) and p.event_shape == SHAPE
    images, latents = model.sample(5, seed=1, return_latents=True)
    assert images.shape == (5, *SHAPE) and [z.shape for z in latents] == [(5, D1), (5, D2)]
    np.testing.assert_array_equal(model.sample(5, seed=1), images)
    np.testing.assert_allclose(model(x), model.reconstruct(x))
    # decoding the sampled z's gives the same images
    np.testing.assert_allclose(model.decode(latents).mean(), images, rtol=1e-5)
    # resampling from layer 1 keeps z_2's mean: images differ from the reconstruction, and
    # from layer L = 2 they are samples from the prior
    resampled = model.resample_from_layer(x, 1, seed=2)
    assert resampled.shape == (4, *SHAPE)
    assert not np.allclose(resampled, model.reconstruct(x))
    np.testing.assert_array_equal(model.resample_from_layer(x, 1, seed=2), resampled)
    assert model.resample_from_layer(x, 2, seed=2).shape == (4, *SHAPE)
    with pytest.raises(ValueError, match="layer must be an int from 1 to 2. Received: layer=3"):
        model.resample_from_layer(x, 3)


def test_resample_from_layer_one_draws_z1_from_its_conditional_prior():
    model = _tanh_model()
    x = _binary(1)
    q1, q2 = model.encode_parameters(x)
    # with a Gaussian likelihood the images are a function of (z1, h1(z2)): compare z1 itself
    z2 = q2["loc"]
    seeds = tf.random.experimental.stateless_split(tf.constant([7, 0]), 2)
    eps = tf.random.stateless_normal([1, 1, D1 + D2], seeds[1])[0, :, :D1]
    z1 = q1["prior_loc"] + q1["prior_scale"] * eps
    expected = model.decode([z1, z2]).mean()
    np.testing.assert_allclose(model.resample_from_layer(x, 1, seed=7), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"latent_dims": (3, 0)}, r"latent_dims must be a non-empty list of positive ints"),
        ({"hidden_units": [[4], [4], [4]]}, r"hidden_units needs one list per stochastic layer"),
        ({"free_bits_groups": 2}, r"free_bits_groups must be None .* dividing its 3 channels"),
        ({"free_bits_groups": [1]}, r"free_bits_groups needs one entry per stochastic layer"),
        ({"prior": "laplace"}, r"prior must be one of"),
        (
            {"objective": FactorVAE()},
            r"objective='factorvae' trains a one-layer VAE \(--model vae\); a hierarchical",
        ),
        ({"objective": BetaTC()}, r"objective='betatc' trains a one-layer VAE"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern) as error:
        mlp_hvae(SHAPE, **{"latent_dims": (3, 2), "hidden_units": [4], **kwargs})
    assert "\n" not in str(error.value)


def test_wrong_image_shape_is_refused():
    with pytest.raises(ValueError, match=r"expects examples of shape \(6, 5, 1\)"):
        mlp_hvae(SHAPE, hidden_units=[4]).build((None, 28, 28, 1))


# ------------------------------------------------------------- saving and training
def _outputs(noise):
    def outputs(model, x):
        loss, terms = model.objective(model, x, tf.constant(noise), 3)
        return {"call": model(x), "loss": loss, "terms": terms, "sample": model.sample(3, seed=2),
                "resample": model.resample_from_layer(x, 1, seed=3)}  # fmt: skip

    return outputs


@pytest.mark.parametrize(
    "make",
    [
        lambda: mlp_hvae(SHAPE, (4, 3, 2), [[8], [6], [5]], prior="vamp", prior_components=3,
                         objective=objectives.IWAE(2, gradient="dreg"), seed=4),
        lambda: mlp_hvae(SHAPE, (4, 2), [8], likelihood="logistic", prior="mixture",
                         top_posterior="full", posterior_units=[6], prior_components=3,
                         objective=objectives.ELBO(2, free_bits=0.1, warmup_steps=5),
                         free_bits_groups=[2, None], gated=True, seed=4),
        lambda: conv_hvae(SHAPE, (2, 3), (1, 1), filters=4, prior="vamp", prior_components=2,
                          objective=objectives.ELBO(2, free_bits=0.1), free_bits_groups=1,
                          seed=4),
    ],
    ids=["mlp-3-layers-vamp-dreg", "mlp-logistic-mixture-full", "conv-vamp"],
)  # fmt: skip
def test_keras_file_round_trip_reproduces_everything(make):
    model = make()
    model.build((None, *SHAPE))
    x = (RNG.integers(0, 256, size=(4, *SHAPE)) / 255).astype("float32")
    noise = RNG.normal(size=(2, 4, sum(model.latent_sizes))).astype("float32")
    restored = run_saving_test(model, x, _outputs(noise))
    assert isinstance(restored, HierarchicalVAE)
    assert restored.latent_shapes == model.latent_shapes


def test_fit_with_xla_and_fused_steps_reports_layer_kls_and_decreases_the_loss(tmp_path):
    x = _patterns(64)
    model = mlp_hvae(SHAPE, latent_dims=(4, 2), hidden_units=[16], seed=1)
    model.compile(keras.optimizers.Adam(1e-2))
    assert model.jit_compile is True and model._fuses_steps()
    history = model.fit(x, batch_size=16, epochs=4, verbose=0, validation_data=(x,))
    assert {"loss", "elbo", "kl", "kl_1", "kl_2", "val_kl_2"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["kl"], result["kl_1"] + result["kl_2"], rtol=1e-5)
    # resume: the optimizer comes back from a .keras file and training continues
    path = tmp_path / "hvae.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 16
    np.testing.assert_array_equal(restored(x), model(x))
    restored.fit(x, batch_size=16, epochs=1, verbose=0)
    assert int(restored.optimizer.iterations) == 20


def test_analytic_kl_true_is_refused_for_a_top_prior_without_a_closed_form():
    model = mlp_hvae(
        SHAPE, (3, 2), [4], prior="mixture", objective=objectives.ELBO(analytic_kl=True)
    )
    model.build((None, *SHAPE))
    with pytest.raises(ValueError, match="analytic_kl=True but MixturePrior has no closed form"):
        model.objective(model, tf.constant(_binary(2)), tf.zeros((1, 2, 5)), 0)


def test_conv_hvae_trains_with_xla_and_iwae():
    x = _patterns(32)
    model = conv_hvae(SHAPE, (2, 2), (1, 1), filters=8, objective=objectives.IWAE(2), seed=2)
    model.compile(keras.optimizers.Adam(3e-3))
    assert model.jit_compile is True and not model._fuses_steps()  # convolutions: per step
    history = model.fit(x, batch_size=16, epochs=4, verbose=0)
    assert {"iwae", "kl_1", "kl_2"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_importance_sampling_is_reproducible_and_float64_agrees_with_float32():
    model = _tanh_model()
    x = _binary(6)
    first = importance_sampled_log_likelihood(model, x, 40, batch_size=4, chunk_size=9, seed=1)
    again = importance_sampled_log_likelihood(model, x, 40, batch_size=4, chunk_size=9, seed=1)
    single = importance_sampled_log_likelihood(model, x, 40, batch_size=4, chunk_size=9, seed=1,
                                               dtype="float32")  # fmt: skip
    np.testing.assert_array_equal(first["log_px"], again["log_px"])
    np.testing.assert_allclose(single["log_px"], first["log_px"], rtol=1e-5)
    assert first["kl_layers"].shape == (6, 2)
    assert np.all(first["log_px"] >= first["elbo"] - 1.0)  # K = 40 bound above the ELBO


MIRRORED_EQUIVALENCE = """
import json, sys
import numpy as np
from keras_vae.engine import distribute
distribute.configure_cpu_replicas(2)
import keras
from keras_vae import registry
from keras_vae.models.hvae import mlp_hvae

case = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
x = (rng.uniform(size=(63, 6, 5, 1)) > 0.5).astype("float32")  # batches of 21 split 11 + 10

def make(strategy, jit_compile):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        spec = case["objective"]
        objective = registry.get("objective", spec["name"])(**spec["config"])
        model = mlp_hvae((6, 5, 1), latent_dims=(3, 2), hidden_units=[8], seed=1,
                         objective=objective, **case["model"])
        model.build((None, 6, 5, 1))
        model.compile(keras.optimizers.SGD(0.05), jit_compile=jit_compile)
    return model

single = make(distribute.get_strategy("default"), False)
initial = [w.copy() for w in single.get_weights()]
hs = single.fit(x, batch_size=21, epochs=2, shuffle=False, verbose=0).history
out = {"weight_change": max(float(np.abs(a - b).max())
                            for a, b in zip(initial, single.get_weights())),
       "single": {k: v[-1] for k, v in hs.items()}}
strategy = distribute.get_strategy("mirrored")
out["replicas"] = strategy.num_replicas_in_sync
for jit in case["jit_compile"]:
    mirrored = make(strategy, jit)
    mirrored.set_weights(initial)
    hm = mirrored.fit(x, batch_size=21, epochs=2, shuffle=False, verbose=0).history
    out[str(jit)] = {
        "xla": mirrored.xla,
        "weight_diff": max(float(np.abs(a - b).max())
                           for a, b in zip(single.get_weights(), mirrored.get_weights())),
        "metrics": {k: v[-1] for k, v in hm.items()},
    }
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize(
    "case",
    [
        {"model": {}, "objective": {"name": "elbo", "config": {"num_samples": 2}},
         "jit_compile": [None, False]},
        {"model": {"prior": "vamp", "prior_components": 3},
         "objective": {"name": "iwae", "config": {"num_samples": 3, "gradient": "dreg"}},
         "jit_compile": [None]},
    ],
    ids=["elbo", "iwae-dreg-vamp"],
)  # fmt: skip
def test_mirrored_steps_equal_single_device_steps(case):
    import json
    import subprocess

    completed = subprocess.run(
        [sys.executable, "-c", MIRRORED_EQUIVALENCE, json.dumps(case)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, completed.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["replicas"] == 2 and out["weight_change"] > 1e-3
    for jit in case["jit_compile"]:
        run = out[str(jit)]
        assert run["xla"] == ("replica" if jit is None else "off")
        assert run["weight_diff"] < 1e-5, jit
        for key, value in out["single"].items():
            assert run["metrics"][key] == pytest.approx(value, rel=1e-5), (jit, key)


@pytest.mark.parametrize(
    ("shape", "likelihood", "downsamples"),
    [
        ((28, 20, 1), "bernoulli", (2, 1)),
        ((9, 9, 3), "logistic", (1, 0)),
        ((5, 7, 2), "gaussian", (0, 2)),
    ],
)
def test_conv_hvae_takes_any_image_shape(shape, likelihood, downsamples):
    model = conv_hvae(shape, (2, 3), downsamples, filters=4, likelihood=likelihood, seed=1)
    model.build((None, *shape))
    x = (RNG.integers(0, 256, size=(3, *shape)) / 255).astype("float32")
    loss, terms = model.objective(
        model, tf.constant(x), tf.zeros((1, 3, sum(model.latent_sizes))), 0
    )
    assert np.isfinite(float(loss)) and terms["kl_2"].shape == (3,)
    assert model.sample(2, seed=1).shape == (2, *shape)
    assert model.resample_from_layer(x, 1, seed=1).shape == (3, *shape)
    assert [q.event_shape[0] for q in model.encode(x)] == model.latent_sizes


def test_gated_dense_is_value_times_sigmoid_gate():
    from keras_vae.models.hvae.layers import GatedDense

    layer = GatedDense(3, activation="tanh")
    x = RNG.normal(size=(4, 5)).astype("float32")
    layer.build(x.shape)
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    bias += RNG.normal(size=bias.shape).astype("float32")
    layer.set_weights([kernel, bias])
    pre = x @ kernel + bias
    expected = np.tanh(pre[:, :3]) / (1.0 + np.exp(-pre[:, 3:]))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)
    run_saving_test(layer, x, lambda part, inputs: part(inputs))
