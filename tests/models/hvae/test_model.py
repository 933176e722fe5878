"""keras_vae.models.hvae.model (HierarchicalVAE) against independent references: a
linear-Gaussian hierarchy with a closed-form log p(x) (SciPy) and ELBO (NumPy), a NumPy forward
pass of the top-down pass, the plain VAE at L = 1, the .keras round trip, training with XLA,
and 2 CPU replicas equal to one device. (Its estimate of log p(x): test_metrics.py.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_mirrored_cases, run_saving_test
from hvae_references import (
    D1,
    D2,
    MIN_SCALE,
    RNG,
    SHAPE,
    binary,
    cell_scale,
    exact_log_px,
    linear_model,
    linear_x,
    numpy_elbo,
    perturbed_maps,
    softplus,
    tanh_model,
    vae_and_one_layer_hvae,
)
from scipy import stats

from keras_vae.models.hvae import HierarchicalVAE, conv_hvae, mlp_hvae
from keras_vae.parts import objectives


def _patterns(n=64, shape=SHAPE):
    """Binary images with structure to learn: one of 4 fixed patterns, 5% of pixels flipped."""
    rng = np.random.default_rng(7)
    prototypes = rng.uniform(size=(4, *shape)) > 0.5
    flips = rng.uniform(size=(n, *shape)) < 0.05
    return (prototypes[rng.integers(0, 4, size=n)] ^ flips).astype("float32")


def test_exact_posterior_makes_every_importance_weight_the_exact_log_px():
    x = linear_x()
    model = linear_model()
    exact = exact_log_px(x)
    noise = tf.random.normal((64, len(x), D1 + D2), seed=1)
    terms = model.latent_terms(tf.constant(x), noise)
    # log p(x, z) - log q(z|x) = log p(x) for every z when q is the posterior
    np.testing.assert_allclose(terms.log_weights.numpy(), np.tile(exact, (64, 1)), atol=2e-4)
    loss, iwae = objectives.IWAE(64)(model, tf.constant(x), noise, 0)
    np.testing.assert_allclose(iwae["iwae"].numpy(), exact, atol=2e-4)
    # the analytic-KL ELBO equals log p(x) in expectation (its terms vary per sample)
    np.testing.assert_allclose(iwae["elbo"].numpy(), exact, atol=0.5)


def test_linear_gaussian_elbo_matches_numpy():
    x = linear_x(3, seed=5)
    maps = perturbed_maps(seed=0)
    model = linear_model(maps=maps)
    exact = exact_log_px(x)
    reference = np.array([numpy_elbo(row.astype(np.float64), maps) for row in x])
    assert np.all(reference < exact - 0.1)  # q is not the posterior: a strict bound
    samples = 4000
    noise = tf.random.normal((samples, len(x), D1 + D2), seed=2)
    terms = model.latent_terms(tf.constant(x), noise)
    log_w = terms.log_weights.numpy().astype(np.float64)
    stderr = log_w.std(axis=0) / np.sqrt(samples)
    # the mean log weight (Monte Carlo KL) and the analytic-KL ELBO both estimate it
    np.testing.assert_array_less(np.abs(log_w.mean(0) - reference), 4 * stderr)
    elbo = (tf.reduce_mean(terms.log_likelihood, 0) - terms.kl).numpy()
    np.testing.assert_array_less(np.abs(elbo - reference), 4 * stderr)


def test_dreg_encoder_gradients_vanish_at_the_exact_posterior():
    # log w is the constant log p(x) in z, so DReG's encoder gradient is exactly 0; the
    # standard reparameterised IWAE gradient keeps the score term, which is not
    x = tf.constant(linear_x())
    noise = tf.random.normal((5, 4, D1 + D2), seed=4)
    norms = {}
    for gradient in ("dreg", "standard"):
        model = linear_model(objectives.IWAE(5, gradient=gradient))
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
    loc2, scale2 = top[:, :D2], softplus(top[:, D2:]) + MIN_SCALE
    eps1, eps2 = eps[..., :D1], eps[..., D1:]
    z2 = loc2 + scale2 * eps2
    cell = model.cells[0]
    h1 = np.tanh(_weights(cell.state_layers[0])(z2))
    prior = _weights(cell.prior_projection)(h1)
    mu, sigma = prior[..., :D1], cell_scale(prior[..., D1:], cell.log_scale_bound)
    d1_tiled = np.broadcast_to(d1, h1.shape[:-1] + d1.shape[-1:])
    offsets = _weights(cell.posterior_projection)(np.concatenate([h1, d1_tiled], -1))
    dmu, dsigma = offsets[..., :D1], cell_scale(offsets[..., D1:], cell.log_scale_bound)
    loc1, scale1 = mu + sigma * dmu, sigma * dsigma
    z1 = loc1 + scale1 * eps1
    features = np.tanh(_weights(model.decoder.dense_layers[0])(np.concatenate([z1, h1], -1)))
    logits = _weights(model.likelihood.projection)(features)
    log_px_z = np.sum(flat * logits - softplus(logits), axis=-1)
    normal = lambda z, m, s: np.sum(stats.norm.logpdf(z, m, s), axis=-1)  # noqa: E731
    log_w = (log_px_z + normal(z1, mu, sigma) + normal(z2, 0, 1)
             - normal(z1, loc1, scale1) - normal(z2, loc2, scale2))  # fmt: skip
    # KL of two diagonal Gaussians, the textbook formula (not the offsets' form)
    kl1 = np.sum(np.log(sigma / scale1) + (scale1**2 + (loc1 - mu) ** 2) / (2 * sigma**2) - 0.5, -1)
    kl2 = np.sum(-np.log(scale2) + (scale2**2 + loc2**2) / 2 - 0.5, -1)
    return {"loc1": loc1, "scale1": scale1, "mu": mu, "sigma": sigma, "loc2": loc2,
            "scale2": scale2, "log_w": log_w, "kl1": kl1, "kl2": kl2}  # fmt: skip


@pytest.mark.parametrize("bound", [5.0, None], ids=["bounded", "softplus"])
def test_top_down_posterior_parameters_and_layer_kls_match_a_numpy_forward_pass(bound):
    model = tanh_model(log_scale_bound=bound)
    x = binary(4)
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
    x = tf.constant(binary(4))
    eps = tf.constant(RNG.normal(size=(2, 4, D1 + D2)), tf.float32)
    for groups in (None, 1):
        model = tanh_model(free_bits_groups=groups)
        latent = model.latent_terms(x, eps)
        # lambda above every group's KL (per example) of these random weights: all floors bind
        # (a fixed 50 nats was exceeded by a unit of some draws: the scales reach e^5)
        lam = 2.0 * float(tf.reduce_max(latent.kl_groups)) + 1.0
        loss, terms = objectives.ELBO(2, free_bits=lam)(model, x, eps, 0)
        expected = -np.mean(terms["reconstruction"].numpy()) + lam * (D1 + D2)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
        assert latent.kl_groups.shape == (4, D1 + D2 if groups is None else 2)
        np.testing.assert_allclose(tf.reduce_sum(latent.kl_groups, -1), latent.kl, rtol=1e-5)
    # lambda = 0.2 per unit, groups of one layer: max(0.2 * size_i, mean KL_i) per layer
    model = tanh_model(free_bits_groups=1, objective=objectives.ELBO(2, free_bits=0.2))
    loss, terms = model.objective(model, x, eps, 0)
    per_layer = [max(0.2 * d, float(np.mean(terms[f"kl_{i}"]))) for i, d in ((1, D1), (2, D2))]
    np.testing.assert_allclose(
        float(loss), -np.mean(terms["reconstruction"].numpy()) + sum(per_layer), rtol=1e-5
    )


# ------------------------------------------------------------------------ L = 1 is a VAE
@pytest.mark.parametrize(
    "objective",
    [objectives.ELBO(3, free_bits=0.1), objectives.IWAE(4), objectives.IWAE(4, gradient="dreg")],
    ids=["elbo", "iwae", "dreg"],
)
def test_one_layer_equals_the_plain_vae(objective):
    vae, hvae = vae_and_one_layer_hvae(objective)
    x = tf.constant(binary(6))
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


# ------------------------------------------------------------------------ the model's API
def test_encode_decode_sample_and_resample_shapes_and_seeds():
    model = tanh_model()
    x = binary(4)
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
    model = tanh_model()
    x = binary(1)
    q1, q2 = model.encode_parameters(x)
    # with a Gaussian likelihood the images are a function of (z1, h1(z2)): compare z1 itself
    z2 = q2["loc"]
    seeds = tf.random.experimental.stateless_split(tf.constant([7, 0]), 2)
    eps = tf.random.stateless_normal([1, 1, D1 + D2], seeds[1])[0, :, :D1]
    z1 = q1["prior_loc"] + q1["prior_scale"] * eps
    expected = model.decode([z1, z2]).mean()
    np.testing.assert_allclose(model.resample_from_layer(x, 1, seed=7), expected, rtol=1e-5)


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


def _floored_prior_scales(bound, objective, weights=None):
    """The tanh model (with `weights` if given) with every prior scale of layer 1 pushed onto
    its floor (issue 30)."""
    model = tanh_model(log_scale_bound=bound, objective=objective)
    for variable, value in zip(model.trainable_variables, weights or [], strict=False):
        variable.assign(value)
    projection = model.cells[0].prior_projection
    kernel, bias = projection.get_weights()
    kernel[:, D1:], bias[D1:] = 0.0, -60.0
    projection.set_weights([kernel, bias])
    return model


def _fixed_weights():
    """The tanh model's weights, perturbed by a local generator: the same in every test order."""
    model = mlp_hvae(SHAPE, latent_dims=(D1, D2), hidden_units=[[7], [5]], activation="tanh",
                     seed=3)  # fmt: skip
    model.build((None, *SHAPE))
    rng = np.random.default_rng(8)
    return [v.numpy() + 0.3 * rng.normal(size=v.shape) for v in model.trainable_variables]


def _gradient(model, x, noise):
    with tf.GradientTape() as tape:
        loss, _ = model.objective(model, x, noise, 0)
    grads = tape.gradient(loss, model.trainable_variables)
    return np.concatenate([g.numpy().ravel() for g in grads])


def test_dreg_gradients_have_no_one_over_sigma_term_at_floored_prior_scales():
    # holding the prior's variables constant inside log q (DReG over every variable) gave the
    # prior's mean eps / sigma per unit: a gradient norm of ~1e4 at the softplus floor (1e-4)
    # and ~250 at the bound's (e^-5) on this model, against ~10 for the standard gradient
    x = tf.constant(binary(16))
    weights = _fixed_weights()
    for bound in (5.0, None):
        norms = {}
        for gradient in ("dreg", "standard"):
            model = _floored_prior_scales(bound, objectives.IWAE(1, gradient=gradient), weights)
            noise = [tf.random.stateless_normal((1, 16, D1 + D2), (seed, 0)) for seed in range(3)]
            norms[gradient] = max(np.linalg.norm(_gradient(model, x, n)) for n in noise)
        assert norms["dreg"] < 2 * norms["standard"], (bound, norms)


def test_dreg_and_the_standard_iwae_gradient_have_the_same_mean():
    # the mean over 6,000 draws per example; the prior's variables get the standard gradient
    # and q's own DReG's, whose w~^2 path term must not reach the prior's (a bias)
    # four images of a local generator (the shared one's draws depend on the tests run before)
    images = (np.random.default_rng(11).uniform(size=(4, *SHAPE)) > 0.5).astype("float32")
    x = tf.constant(np.tile(images, (1500, 1, 1, 1)))
    weights = _fixed_weights()
    mean = {}
    for gradient, seed in (("dreg", 1), ("standard", 2)):
        model = tanh_model(objective=objectives.IWAE(3, gradient=gradient))
        for variable, value in zip(model.trainable_variables, weights, strict=True):
            variable.assign(value)
        noise = tf.random.stateless_normal((3, 6000, D1 + D2), (seed, 7))
        mean[gradient] = _gradient(model, x, noise)
    error = np.linalg.norm(mean["dreg"] - mean["standard"]) / np.linalg.norm(mean["standard"])
    # Monte Carlo error of the two means: 0.03 to 0.09 measured over input images; the w~^2
    # term on the prior's variables gave 0.18 (DReG over every variable is the norm test's)
    assert error < 0.13


def test_a_tiny_dreg_training_from_floored_scales_stays_finite():
    x = _patterns(32)
    model = _floored_prior_scales(5.0, objectives.IWAE(2, gradient="dreg"))
    model.compile(keras.optimizers.Adam(1e-2, global_clipnorm=10.0), jit_compile=False)
    history = model.fit(x, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)
    q1, _ = model.encode_parameters(x)
    assert float(tf.reduce_min(q1["prior_scale"])) >= np.exp(-5.0) * (1 - 1e-6)


def test_analytic_kl_true_is_refused_for_a_top_prior_without_a_closed_form():
    model = mlp_hvae(
        SHAPE, (3, 2), [4], prior="mixture", objective=objectives.ELBO(analytic_kl=True)
    )
    model.build((None, *SHAPE))
    with pytest.raises(ValueError, match="analytic_kl=True but MixturePrior has no closed form"):
        model.objective(model, tf.constant(binary(2)), tf.zeros((1, 2, 5)), 0)


@pytest.mark.long  # 17 s; in CI the conv hierarchical VAE trains, evaluates and plots from the CLI
# (tests/models/hvae/test_kind.py), and IWAE's bound and DReG gradients on this model are
# checked against closed forms (above)
def test_conv_hvae_trains_with_xla_and_iwae():
    x = _patterns(32)
    model = conv_hvae(SHAPE, (2, 2), (1, 1), filters=8, objective=objectives.IWAE(2), seed=2)
    model.compile(keras.optimizers.Adam(3e-3))
    assert model.jit_compile is True and not model._fuses_steps()  # convolutions: per step
    history = model.fit(x, batch_size=16, epochs=4, verbose=0)
    assert {"iwae", "kl_1", "kl_2"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]


MIRRORED_EQUIVALENCE = """
import json, sys
import numpy as np
from keras_vae.engine import distribute
distribute.configure_cpu_replicas(2)
import keras
from keras_vae import registry
from keras_vae.models.hvae import mlp_hvae

strategy = distribute.get_strategy("mirrored")  # one for every case (see helpers)
rng = np.random.default_rng(0)
x = (rng.uniform(size=(63, 6, 5, 1)) > 0.5).astype("float32")  # batches of 21 split 11 + 10

def make(case, strategy, jit_compile):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        spec = case["objective"]
        objective = registry.get("objective", spec["name"])(**spec["config"])
        model = mlp_hvae((6, 5, 1), latent_dims=(3, 2), hidden_units=[8], seed=1,
                         objective=objective, **case["model"])
        model.build((None, 6, 5, 1))
        model.compile(keras.optimizers.SGD(0.05), jit_compile=jit_compile)
    return model

def run(case):
    single = make(case, distribute.get_strategy("default"), False)
    initial = [w.copy() for w in single.get_weights()]
    hs = single.fit(x, batch_size=21, epochs=2, shuffle=False, verbose=0).history
    out = {"weight_change": max(float(np.abs(a - b).max())
                                for a, b in zip(initial, single.get_weights())),
           "single": {k: v[-1] for k, v in hs.items()}}
    out["replicas"] = strategy.num_replicas_in_sync
    for jit in case["jit_compile"]:
        mirrored = make(case, strategy, jit)
        mirrored.set_weights(initial)
        hm = mirrored.fit(x, batch_size=21, epochs=2, shuffle=False, verbose=0).history
        out[str(jit)] = {
            "xla": mirrored.xla,
            "weight_diff": max(float(np.abs(a - b).max())
                               for a, b in zip(single.get_weights(), mirrored.get_weights())),
            "metrics": {k: v[-1] for k, v in hm.items()},
        }
    return out
"""
MIRRORED_CASES = {
    # (the replica's XLA path of the hierarchy is the IWAE case's; the ELBO's without it)
    "elbo": {"model": {}, "objective": {"name": "elbo", "config": {"num_samples": 2}},
             "jit_compile": [False]},
    "iwae-dreg-vamp": {
        "model": {"prior": "vamp", "prior_components": 3},
        "objective": {"name": "iwae", "config": {"num_samples": 3, "gradient": "dreg"}},
        "jit_compile": [None],
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def mirrored_results():
    """Both cases in one fresh process (its TensorFlow start is the costly part)."""
    return run_mirrored_cases(MIRRORED_EQUIVALENCE, MIRRORED_CASES)


@pytest.mark.long
@pytest.mark.parametrize("name", MIRRORED_CASES)
def test_mirrored_steps_equal_single_device_steps(name, mirrored_results):
    case, out = MIRRORED_CASES[name], mirrored_results[name]
    assert out["replicas"] == 2 and out["weight_change"] > 1e-3
    for jit in case["jit_compile"]:
        run = out[str(jit)]
        assert run["xla"] == ("replica" if jit is None else "off")
        assert run["weight_diff"] < 1e-5, jit
        for key, value in out["single"].items():
            assert run["metrics"][key] == pytest.approx(value, rel=1e-5), (jit, key)
