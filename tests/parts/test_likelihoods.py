"""Likelihood heads p(x|z) against SciPy log-densities and their own invariants."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test
from scipy import special, stats

from keras_vae.parts.likelihoods import (
    BernoulliLikelihood,
    DiscretizedLogisticLikelihood,
    DiscretizedLogisticMixture,
    GaussianLikelihood,
    discretized_logistic_log_prob,
)

RNG = np.random.default_rng(3)
GRID = np.arange(256, dtype="float32") / 255.0  # the 8-bit grey levels k/255


def _features(batch=5, width=7):
    return RNG.normal(size=(batch, width)).astype("float32")


# ---------------------------------------------------------------- Bernoulli and Gaussian
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


def test_gaussian_likelihood_with_fixed_scale_matches_scipy():
    head = GaussianLikelihood(event_shape=(2, 3), fixed_scale=0.2, mean_activation="linear")
    h = _features()
    params = {k: v.numpy() for k, v in head.parameters(h).items()}
    assert head.projection.kernel.shape == (7, 6)  # one number per pixel: the mean
    np.testing.assert_array_equal(params["scale"], np.full((5, 2, 3), 0.2, "float32"))
    x = RNG.uniform(size=(5, 2, 3)).astype("float32")
    expected = stats.norm.logpdf(x, params["loc"], 0.2).reshape(5, -1).sum(-1)
    np.testing.assert_allclose(head(h).log_prob(x).numpy(), expected, rtol=1e-5)
    np.testing.assert_array_equal(head.mean(head.parameters(h)).numpy(), params["loc"])


def test_likelihood_keeps_leading_sample_axis():
    head = BernoulliLikelihood(event_shape=(3, 2))
    p = head(RNG.normal(size=(4, 5, 6)).astype("float32"))  # [L, B, features]
    assert p.batch_shape == (4, 5) and p.event_shape == (3, 2)


# ----------------------------------------------------------------- discretised logistic
# locations and log-scales from ordinary to extreme: far outside [0, 1], tiny and huge scales
LOCS = np.array([-3.0, 0.0, 1e-3, 0.3, 0.5, 0.77, 1.0, 4.0], "float32")
LOG_SCALES = np.log(np.array([1e-4, 1e-3, 0.01, 0.1, 1.0, 30.0], "float32"))


def test_discretized_logistic_probabilities_sum_to_one_over_the_256_levels():
    loc, log_scale = (a.reshape(-1) for a in np.meshgrid(LOCS, LOG_SCALES))
    log_p = discretized_logistic_log_prob(GRID[:, None], loc[None], log_scale[None]).numpy()
    assert log_p.dtype == np.float32 and np.isfinite(log_p).all()
    np.testing.assert_allclose(np.exp(log_p.astype("float64")).sum(0), 1.0, atol=1e-4)


def test_discretized_logistic_mixture_probabilities_sum_to_one_per_pixel():
    pixels, components = 6, 3
    logits = RNG.normal(scale=3.0, size=(pixels, components)).astype("float32")
    loc = RNG.choice(LOCS, size=(pixels, components))
    log_scale = RNG.choice(LOG_SCALES, size=(pixels, components))
    mixture = DiscretizedLogisticMixture(logits, loc, log_scale, event_ndims=0)
    log_p = mixture.log_prob(GRID[:, None]).numpy()  # [256 levels, pixels]
    assert log_p.shape == (256, pixels)
    np.testing.assert_allclose(np.exp(log_p.astype("float64")).sum(0), 1.0, atol=1e-4)


def test_discretized_logistic_log_prob_matches_scipy_cdf_differences():
    loc = np.array([0.2, 0.5, 0.9], "float32")
    scale = np.array([0.05, 0.01, 0.3], "float32")
    log_p = discretized_logistic_log_prob(GRID[:, None], loc, np.log(scale)).numpy()
    half = 0.5 / 255
    grid = GRID.astype("float64")[:, None]
    upper = stats.logistic.cdf(grid + half, loc, scale)
    lower = stats.logistic.cdf(grid - half, loc, scale)
    interior = (upper - lower)[1:-1]
    mask = interior > 1e-4  # where float32 resolves the difference of two CDFs
    np.testing.assert_allclose(np.exp(log_p[1:-1])[mask], interior[mask], rtol=2e-3)
    np.testing.assert_allclose(np.exp(log_p[1:-1]), interior, atol=1e-6)
    # the edges take the tails: P(0) = F(h), P(1) = 1 - F(1 - h)
    np.testing.assert_allclose(np.exp(log_p[0]), stats.logistic.cdf(half, loc, scale), rtol=1e-4)
    np.testing.assert_allclose(
        np.exp(log_p[-1]), stats.logistic.sf(1 - half, loc, scale), rtol=1e-4
    )


def test_discretized_logistic_log_prob_at_an_edge_far_in_the_tail_is_finite():
    # loc far from the edge and a tiny scale: log P(0) is about -(1 / 2 - h) / s, not -inf
    x, loc, log_scale = tf.constant([0.0, 1.0]), tf.constant(0.5), tf.math.log(1e-3)
    log_p = discretized_logistic_log_prob(x, loc, log_scale).numpy()
    expected = stats.logistic.logcdf(0.5 / 255, 0.5, 1e-3)
    np.testing.assert_allclose(log_p, [expected, expected], rtol=1e-4)


def _mixture(pixels=4, components=3, spread=1.0):
    logits = RNG.normal(scale=spread, size=(pixels, components)).astype("float32")
    loc = RNG.uniform(0.1, 0.9, size=(pixels, components)).astype("float32")
    log_scale = np.log(RNG.uniform(0.02, 0.1, size=(pixels, components))).astype("float32")
    return DiscretizedLogisticMixture(logits, loc, log_scale, event_ndims=1)


def test_discretized_logistic_samples_lie_on_the_grid_with_the_pmf_mean():
    mixture = _mixture()
    draws = mixture.sample(20_000, seed=(1, 2)).numpy()
    assert draws.shape == (20_000, 4)
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    np.testing.assert_allclose(draws * 255, np.round(draws * 255), atol=1e-3)
    assert mixture.sample(seed=(3, 4)).shape == (4,)  # one draw: the default sample_shape ()
    assert mixture.sample([2, 3]).shape == (2, 3, 4)
    # the sample mean against the exact mean of the pmf over the 256 levels
    per_level = np.exp(
        special.logsumexp(
            special.log_softmax(mixture.logits, -1)
            + discretized_logistic_log_prob(GRID[:, None, None], mixture.loc, mixture.log_scale),
            axis=-1,
        )
    )  # [256, pixels]
    pmf_mean = (GRID[:, None] * per_level).sum(0)
    pmf_std = np.sqrt((GRID[:, None] ** 2 * per_level).sum(0) - pmf_mean**2)
    np.testing.assert_array_less(np.abs(draws.mean(0) - pmf_mean), 5 * pmf_std / np.sqrt(20_000))
    # mean(): the mixture of the locations, within a grey level of the pmf mean here
    np.testing.assert_allclose(mixture.mean().numpy(), pmf_mean, atol=1 / 255)


def test_discretized_logistic_mean_stays_in_the_unit_interval():
    loc = np.array([[-5.0, 0.5], [3.0, 9.0], [0.0, 1.0]], "float32")
    logits = np.array([[20.0, -20.0], [0.0, 0.0], [1.0, -1.0]], "float32")
    mean = DiscretizedLogisticMixture(logits, loc, np.zeros_like(loc), 1).mean().numpy()
    assert mean.min() >= 0.0 and mean.max() <= 1.0


def test_discretized_logistic_head_parameters_and_log_prob():
    head = DiscretizedLogisticLikelihood(event_shape=(2, 3), num_components=4)
    h = _features()
    params = {k: v.numpy() for k, v in head.parameters(h).items()}
    assert {k: v.shape for k, v in params.items()} == {
        "logits": (5, 2, 3, 4),
        "loc": (5, 2, 3, 4),
        "log_scale": (5, 2, 3, 4),
    }
    assert params["log_scale"].min() >= np.log(head.min_scale) - 1e-6
    x = RNG.integers(0, 256, size=(5, 2, 3)).astype("float32") / 255
    # per pixel: log sum_m pi_m P_m(x), the component probabilities from SciPy's CDF
    half, scale = 0.5 / 255, np.exp(params["log_scale"].astype("float64"))
    cdf = lambda v: stats.logistic.cdf(v[..., None], params["loc"], scale)  # noqa: E731
    upper = np.where(x[..., None] > 1 - half, 1.0, cdf(x + half))
    lower = np.where(x[..., None] < half, 0.0, cdf(x - half))
    weights = special.softmax(params["logits"].astype("float64"), -1)
    expected = np.log((weights * (upper - lower)).sum(-1)).reshape(5, -1).sum(-1)
    np.testing.assert_allclose(head(h).log_prob(x).numpy(), expected, rtol=1e-4)
    assert head.check_values(x) is None
    assert "grey levels" in head.check_values(x + 0.5 / 255)


# -------------------------------------------------------------------- saving and errors
@pytest.mark.parametrize(
    "head",
    [
        BernoulliLikelihood(event_shape=(2, 3), name="bernoulli"),
        GaussianLikelihood(event_shape=(2, 3), min_scale=0.05, mean_activation="linear"),
        GaussianLikelihood(event_shape=(2, 3), fixed_scale=0.3, name="fixed"),
        DiscretizedLogisticLikelihood(event_shape=(2, 3), num_components=2, min_scale=1e-2),
    ],
)
def test_likelihood_survives_keras_file_round_trip(head):
    head.build((None, 7))
    run_saving_test(head, _features())


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: BernoulliLikelihood(event_shape=()), "event_shape"),
        (lambda: BernoulliLikelihood(event_shape=(28, -1)), "event_shape"),
        (lambda: GaussianLikelihood(event_shape=(2,), mean_activation="relu"), "mean_activation"),
        (lambda: GaussianLikelihood(event_shape=(2,), fixed_scale=0.0), "fixed_scale"),
        (lambda: GaussianLikelihood(event_shape=(2,), min_scale=-1), "min_scale"),
        (lambda: DiscretizedLogisticLikelihood((2,), num_components=0), "num_components"),
        (lambda: DiscretizedLogisticLikelihood((2,), min_scale=0.0), "min_scale"),
    ],
)
def test_bad_likelihood_arguments_give_one_line_errors_naming_them(make, argument):
    with pytest.raises(ValueError, match=rf"Received: {argument}=") as error:
        make()
    assert "\n" not in str(error.value)


# ------------------------------------------------- spatial features [..., H, W, F] (conv)
SPATIAL_EVENT = (4, 3, 2)  # H, W, C: two channels, so the channel layout is exercised
HEADS = {
    "bernoulli": lambda: BernoulliLikelihood(SPATIAL_EVENT),
    "gaussian": lambda: GaussianLikelihood(SPATIAL_EVENT, min_scale=0.05),
    "gaussian-fixed": lambda: GaussianLikelihood(SPATIAL_EVENT, fixed_scale=0.3),
    "logistic": lambda: DiscretizedLogisticLikelihood(SPATIAL_EVENT, num_components=3),
}


def _softplus(v):
    return np.logaddexp(0.0, v)


def _numpy_parameters(head, features, spatial):
    """The head's parameters from its projection's kernel and bias, in NumPy: flat features
    give [..., P * H * W * C] read parameter by parameter; spatial features [..., H, W, F] get
    the same kernel at every pixel (a 1x1 convolution), [..., H, W, P * C]."""
    kernel, bias = (np.asarray(w, "float64") for w in head.projection.get_weights())
    raw = features.astype("float64") @ kernel + bias
    leading = features.shape[:-3] if spatial else features.shape[:-1]
    if isinstance(head, DiscretizedLogisticLikelihood):  # [..., H, W, C, 3, M] on both paths
        raw = raw.reshape(*leading, *SPATIAL_EVENT, 3, head.num_components)
        floor = head.min_scale
        return {"logits": raw[..., 0, :], "loc": 1 / (1 + np.exp(-raw[..., 1, :])),
                "log_scale": np.log(_softplus(raw[..., 2, :]) + floor)}  # fmt: skip
    count = head.params_per_pixel
    if spatial:  # each pixel's outputs: count blocks of C channels
        parts = np.moveaxis(raw.reshape(*leading, *SPATIAL_EVENT[:2], count, -1), -2, 0)
    else:  # count blocks of H * W * C outputs
        parts = np.moveaxis(raw.reshape(*leading, count, *SPATIAL_EVENT), -4, 0)
    if isinstance(head, BernoulliLikelihood):
        return {"logits": parts[0]}
    loc = 1 / (1 + np.exp(-parts[0]))
    scale = np.full_like(loc, head.fixed_scale) if count == 1 else _softplus(parts[1]) + 0.05
    return {"loc": loc, "scale": scale}


def _numpy_log_prob(head, params, x):
    """log p(x) per example from SciPy, summed over the event axes."""
    x = x.astype("float64")
    if isinstance(head, BernoulliLikelihood):
        per_pixel = stats.bernoulli.logpmf(x, special.expit(params["logits"]))
    elif isinstance(head, GaussianLikelihood):
        per_pixel = stats.norm.logpdf(x, params["loc"], params["scale"])
    else:
        half, scale = 0.5 / 255, np.exp(params["log_scale"])
        cdf = lambda v: stats.logistic.cdf(v[..., None], params["loc"], scale)  # noqa: E731
        upper = np.where(x[..., None] > 1 - half, 1.0, cdf(x + half))
        lower = np.where(x[..., None] < half, 0.0, cdf(x - half))
        weights = special.softmax(params["logits"], -1)
        per_pixel = np.log((weights * (upper - lower)).sum(-1))
    return per_pixel.reshape(*x.shape[:-3], -1).sum(-1)


@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize("spatial", [False, True], ids=["flat", "spatial"])
def test_head_on_flat_and_spatial_features_matches_numpy(name, spatial):
    head = HEADS[name]()
    leading = (2, 3)  # [samples, batch]
    shape = (*leading, *SPATIAL_EVENT[:2], 6) if spatial else (*leading, 7)
    features = RNG.normal(size=shape).astype("float32")
    params = {k: v.numpy() for k, v in head.parameters(features).items()}
    assert head.spatial is spatial
    per_pixel = head.params_per_pixel * (SPATIAL_EVENT[-1] if spatial else 24)
    assert head.projection.kernel.shape == (shape[-1], per_pixel)
    expected = _numpy_parameters(head, features, spatial)
    assert {k: v.shape for k, v in params.items()} == {k: v.shape for k, v in expected.items()}
    for key, value in expected.items():
        np.testing.assert_allclose(params[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    if name == "bernoulli":
        x = RNG.integers(0, 2, size=(*leading, *SPATIAL_EVENT)).astype("float32")
    else:
        x = RNG.integers(0, 256, size=(*leading, *SPATIAL_EVENT)).astype("float32") / 255
    p = head(features)
    np.testing.assert_allclose(p.log_prob(x).numpy(), _numpy_log_prob(head, expected, x),
                               rtol=1e-4)  # fmt: skip
    assert head.compute_output_shape(shape) == (*leading, *SPATIAL_EVENT)


@pytest.mark.parametrize("name", ["gaussian", "logistic"])
def test_spatial_head_survives_keras_file_round_trip(name):
    head = HEADS[name]()
    head.build((None, *SPATIAL_EVENT[:2], 5))
    restored = run_saving_test(head, RNG.normal(size=(2, *SPATIAL_EVENT[:2], 5)).astype("float32"))
    assert restored.spatial is True


def test_spatial_features_of_another_size_are_refused_in_one_line():
    head = BernoulliLikelihood((28, 28, 1))
    with pytest.raises(ValueError, match=r"spatial \[\.\.\., H, W, F\]") as error:
        head.build((None, 32, 32, 8))
    assert "\n" not in str(error.value)
