"""Latent traversals and the per-latent KL chart: the order of the rows against KLs computed
in NumPy, each cell against its own decoding, the sweep values against SciPy's quantiles."""

import io

import numpy as np
import pytest
import scipy.stats
from matplotlib.image import imread

import keras_vae
from keras_vae.models.vae import pictures as plotting
from keras_vae.models.vae import traversals

SHAPE = (6, 5, 1)


@pytest.fixture(scope="module")
def vae_and_images():
    vae = keras_vae.mlp_vae(SHAPE, latent_dim=4, hidden_units=8, seed=3)
    vae.build((None, *SHAPE))
    images = (np.random.default_rng(0).random((50, *SHAPE)) > 0.5).astype("float32")
    return vae, images


def _numpy_kl(vae, images):
    params = {k: np.asarray(v, np.float64) for k, v in vae.encode_parameters(images).items()}
    loc, scale = params["loc"], params["scale"]
    return (0.5 * (loc**2 + scale**2 - 1.0 - 2.0 * np.log(scale))).mean(axis=0)


def test_mean_kl_and_row_order_match_numpy(vae_and_images):
    vae, images = vae_and_images
    expected = _numpy_kl(vae, images)
    kl = traversals.mean_kl_per_latent(vae, images, batch_size=7)  # several batches
    np.testing.assert_allclose(kl, expected, rtol=1e-5)
    assert len(set(np.round(expected, 6))) == 4  # distinct: the order is well defined
    _, order, _ = traversals.latent_traversals(vae, images, num_steps=3)
    np.testing.assert_array_equal(order, np.argsort(-expected))
    assert list(traversals.kl_order(np.array([0.5, 2.0, 0.5, 1.0]))) == [1, 3, 0, 2]


def test_each_cell_is_the_decoding_of_its_latent(vae_and_images):
    vae, images = vae_and_images
    decoded, order, _ = traversals.latent_traversals(
        vae, images, num_steps=5, base_index=2, num_latents=2
    )
    assert decoded.shape == (2, 5, *SHAPE) and len(order) == 2
    values = scipy.stats.norm.ppf(np.linspace(0.05, 0.95, 5))  # the prior's quantiles
    base = np.asarray(vae.encode_parameters(images[2:3])["loc"])[0]
    for row, latent in enumerate(order):
        z = np.tile(base, (5, 1))
        z[:, latent] = values
        expected = np.asarray(vae.decode(z.astype("float32")).mean())
        np.testing.assert_allclose(decoded[row], expected, rtol=1e-5, atol=1e-6)
    # moving one latent changes the image; the other rows hold the other latents fixed
    assert np.abs(decoded[0, 0] - decoded[0, -1]).max() > 1e-4


def test_learned_prior_values_are_its_empirical_quantiles():
    vae = keras_vae.mlp_vae(SHAPE, latent_dim=2, hidden_units=8, seed=0, prior="mixture")
    vae.build((None, *SHAPE))
    values = traversals.traversal_values(vae, num_steps=4, num_prior_samples=4000, seed=1)
    draws = np.asarray(vae.prior_distribution().sample(4000, seed=(1, 0)), np.float64)
    np.testing.assert_allclose(values, np.quantile(draws, np.linspace(0.05, 0.95, 4), axis=0))
    with pytest.raises(ValueError, match="MixturePrior gives no KL per latent"):
        traversals.mean_kl_per_latent(vae, np.zeros((2, *SHAPE), "float32"))


def test_figures_show_rows_by_kl_and_bars_equal_the_kl(vae_and_images, tmp_path):
    vae, images = vae_and_images
    kl = _numpy_kl(vae, images)
    fig = traversals.traversal_figure(vae, images, num_steps=4)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [f"z{j}  {kl[j]:.2f}" for j in np.argsort(-kl)]
    fig.canvas.draw()
    assert all(t.get_window_extent().x0 >= 0 for t in fig.axes[0].get_yticklabels())  # inside
    path = plotting.save_figure(fig, tmp_path / "traversals.png")
    grid_shape = (4 * 7 - 1, 4 * 6 - 1)  # 4 rows of 6-pixel images, 4 columns of 5, padding
    width, height = plotting._grid_inches(grid_shape)
    png = imread(io.BytesIO(path.read_bytes()))
    assert png.shape[1] == int((width + traversals.LABEL_INCHES) * plotting.DEFAULT_DPI)
    chart = traversals.kl_bar_chart(vae, images)
    heights = [patch.get_height() for patch in chart.axes[0].patches]
    np.testing.assert_allclose(heights, kl, rtol=1e-5)
    assert chart.axes[0].get_ylabel() == "mean KL (nats)"
    assert plotting.save_figure(chart, tmp_path / "kl.png").stat().st_size > 0


def test_bad_arguments_give_one_line_errors(vae_and_images):
    vae, images = vae_and_images
    with pytest.raises(ValueError, match="num_steps must be an int >= 2. Received: num_steps=1"):
        traversals.traversal_values(vae, num_steps=1)
    with pytest.raises(ValueError, match="Need 0 < low < high < 1"):
        traversals.traversal_values(vae, low=0.9, high=0.1)
    with pytest.raises(ValueError, match="base_index must index images"):
        traversals.latent_traversals(vae, images[:3], base_index=3)
    with pytest.raises(ValueError, match="Give model and images, or kl"):
        traversals.kl_bar_chart()
