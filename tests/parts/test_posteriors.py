"""Posterior heads q(z|x) against SciPy, NumPy closed forms and their own sampling."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test
from scipy import stats

from keras_vae.parts import objectives
from keras_vae.parts.posteriors import DiagonalGaussianPosterior, FullCovariancePosterior
from keras_vae.parts.priors import StandardNormalPrior

RNG = np.random.default_rng(0)


def _features(batch=5, width=7):
    return RNG.normal(size=(batch, width)).astype("float32")


def _full_head(latent_dim=3, width=7, spread=1.0):
    """A built full-covariance head whose off-diagonal entries of L are far from zero."""
    head = FullCovariancePosterior(latent_dim=latent_dim)
    head.build((None, width))
    head.projection.kernel.assign(spread * RNG.normal(size=head.projection.kernel.shape))
    return head


def _numpy_kl_to_standard_normal(loc, covariance):
    """1/2 [tr(S) + mu^T mu - D - log det S], per example, in float64."""
    dim = loc.shape[-1]
    _, log_det = np.linalg.slogdet(covariance)
    trace = np.trace(covariance, axis1=-2, axis2=-1)
    return 0.5 * (trace + np.sum(loc**2, axis=-1) - dim - log_det)


# ----------------------------------------------------------------------------- diagonal
def test_diagonal_log_prob_matches_scipy():
    head = DiagonalGaussianPosterior(latent_dim=3)
    h = _features()
    q = head(h)
    params = {k: v.numpy() for k, v in head.parameters(h).items()}
    z = RNG.normal(size=(5, 3)).astype("float32")
    expected = stats.norm.logpdf(z, params["loc"], params["scale"]).sum(-1)
    np.testing.assert_allclose(q.log_prob(z).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    assert head.noise_size == 3


def test_diagonal_scale_has_floor_even_for_huge_negative_logits():
    head = DiagonalGaussianPosterior(latent_dim=2, min_scale=1e-3)
    head.build((None, 4))
    head.projection.kernel.assign(tf.zeros((4, 4)))
    head.projection.bias.assign(tf.constant([0.0, 0.0, -1e4, -1e4]))
    scale = head.parameters(tf.zeros((1, 4)))["scale"].numpy()
    assert np.all(scale >= 1e-3) and np.all(np.isfinite(scale))
    assert np.isfinite(head(tf.zeros((1, 4))).log_prob(tf.ones((1, 2))).numpy()).all()


def test_diagonal_reparameterize_is_loc_plus_scale_times_noise():
    head = DiagonalGaussianPosterior(latent_dim=3)
    params = head.parameters(_features(4))
    eps = RNG.normal(size=(6, 4, 3)).astype("float32")  # [L, B, D]
    expected = params["loc"].numpy() + params["scale"].numpy() * eps
    np.testing.assert_allclose(head.reparameterize(params, eps).numpy(), expected, rtol=1e-6)


# ------------------------------------------------------------------------ full covariance
def test_full_scale_tril_is_lower_triangular_with_positive_diagonal():
    head = _full_head(latent_dim=4, spread=3.0)
    head.projection.bias.assign(np.full(head.projection.bias.shape, -30.0, "float32"))
    tril = head.parameters(_features(6))["scale_tril"].numpy()
    assert tril.shape == (6, 4, 4)
    np.testing.assert_array_equal(np.triu(tril, k=1), 0.0)
    diagonal = np.diagonal(tril, axis1=-2, axis2=-1)
    assert np.all(diagonal >= head.min_scale) and np.all(np.isfinite(diagonal))
    assert np.abs(np.tril(tril, k=-1)).max() > 1.0  # the entries below are free


def test_full_parameters_place_the_projection_exactly():
    """loc and the entries below the diagonal are the projection's numbers, bit for bit (the
    0/1 masks that keep int8 conversion from clipping loc change no value), row by row."""
    head = _full_head(latent_dim=4, spread=3.0)
    bias = RNG.choice([-1e3, -5.0, 0.0, 5.0, 1e3], size=head.projection.bias.shape)
    head.projection.bias.assign(bias.astype("float32"))
    h = _features(6)
    raw = head.projection(h).numpy()
    params = head.parameters(h)
    np.testing.assert_array_equal(params["loc"].numpy(), raw[:, :4])
    expected = np.zeros((6, 4, 4), "float32")
    rows, cols = np.tril_indices(4)  # row-major: L00, L10, L11, L20, ...
    expected[:, rows, cols] = raw[:, 4:]
    tril = params["scale_tril"].numpy()
    np.testing.assert_array_equal(np.tril(tril, -1), np.tril(expected, -1))
    np.testing.assert_array_equal(np.triu(tril, 1), 0.0)
    softplus = np.logaddexp(0.0, np.diagonal(expected, axis1=-2, axis2=-1).astype("float64"))
    np.testing.assert_allclose(
        np.diagonal(tril, axis1=-2, axis2=-1), softplus + head.min_scale, rtol=1e-6
    )


def test_full_log_prob_matches_scipy_multivariate_normal():
    head = _full_head()
    h = _features(4)
    params = {k: v.numpy().astype("float64") for k, v in head.parameters(h).items()}
    q = head(h)
    assert q.batch_shape == (4,) and q.event_shape == (3,)
    z = RNG.normal(size=(4, 3)).astype("float32")
    for i in range(4):
        covariance = params["scale_tril"][i] @ params["scale_tril"][i].T
        expected = stats.multivariate_normal.logpdf(z[i], params["loc"][i], covariance)
        np.testing.assert_allclose(q.log_prob(z).numpy()[i], expected, rtol=1e-4)


def test_full_kl_to_standard_normal_matches_numpy_closed_form():
    head = _full_head(latent_dim=4)
    h = _features(5)
    params = head.parameters(h)
    loc, tril = (params[k].numpy().astype("float64") for k in ("loc", "scale_tril"))
    expected = _numpy_kl_to_standard_normal(loc, tril @ np.swapaxes(tril, -1, -2))
    by_function = objectives.full_gaussian_kl_to_standard_normal(
        params["loc"], params["scale_tril"]
    )
    np.testing.assert_allclose(by_function.numpy(), expected, rtol=1e-4)
    by_prior = StandardNormalPrior(latent_dim=4).kl(head(h))
    np.testing.assert_allclose(by_prior.numpy(), expected, rtol=1e-4)


def test_full_reparameterized_samples_have_mean_loc_and_covariance_tril_tril_t():
    head = _full_head(latent_dim=3)
    params = head.parameters(_features(1))
    loc = params["loc"].numpy()[0].astype("float64")
    tril = params["scale_tril"].numpy()[0].astype("float64")
    covariance = tril @ tril.T
    draws = 200_000
    eps = RNG.normal(size=(draws, 1, 3)).astype("float32")
    z = head.reparameterize(params, eps).numpy()[:, 0].astype("float64")
    # five standard errors of the sample mean and of each sample covariance entry
    mean_error = np.sqrt(np.diag(covariance) / draws)
    np.testing.assert_array_less(np.abs(z.mean(0) - loc), 5 * mean_error)
    variances = np.diag(covariance)
    cov_error = np.sqrt((np.outer(variances, variances) + covariance**2) / draws)
    np.testing.assert_array_less(np.abs(np.cov(z, rowvar=False) - covariance), 5 * cov_error)


def test_full_reparameterize_broadcasts_over_samples_and_batch():
    head = _full_head(latent_dim=3)
    params = head.parameters(_features(4))
    eps = RNG.normal(size=(2, 4, 3)).astype("float32")  # [L, B, D]
    loc, tril = params["loc"].numpy(), params["scale_tril"].numpy()
    expected = loc + np.einsum("bij,lbj->lbi", tril, eps)
    np.testing.assert_allclose(head.reparameterize(params, eps).numpy(), expected, atol=1e-5)


# -------------------------------------------------------------------- saving and errors
@pytest.mark.parametrize(
    "head",
    [
        DiagonalGaussianPosterior(latent_dim=3, min_scale=1e-3, name="diagonal"),
        FullCovariancePosterior(latent_dim=3, min_scale=1e-3, name="full"),
    ],
)
def test_posterior_survives_keras_file_round_trip(head):
    head.build((None, 7))
    run_saving_test(head, _features())


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: DiagonalGaussianPosterior(latent_dim=0), "latent_dim"),
        (lambda: DiagonalGaussianPosterior(latent_dim=2, min_scale=0), "min_scale"),
        (lambda: FullCovariancePosterior(latent_dim=2.0), "latent_dim"),
        (lambda: FullCovariancePosterior(latent_dim=2, min_scale=-1.0), "min_scale"),
    ],
)
def test_bad_posterior_arguments_give_one_line_errors_naming_them(make, argument):
    with pytest.raises(ValueError, match=rf"Received: {argument}=") as error:
        make()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("head_class", [DiagonalGaussianPosterior, FullCovariancePosterior])
def test_head_can_be_called_after_its_parameters_were_asked_for(head_class):
    head = head_class(latent_dim=2)
    h = _features()
    params = head.parameters(h)  # builds the projection outside the head's own build()
    q = head(h)
    np.testing.assert_allclose(q.mean().numpy(), params["loc"].numpy())
