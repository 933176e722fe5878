"""Figures: PNG sizes, grids, the manifold's latent grid and refusal, latent scatter, the CLI."""

import argparse
import os
import stat

import keras
import matplotlib.image
import numpy as np
import pytest
import scipy.stats

import keras_vae
from keras_vae.models.vae import pictures as plotting
from keras_vae.runs.config import TrainConfig
from keras_vae.workflows import train as training

RNG = np.random.default_rng(7)
SHAPE = (6, 6, 1)


def _model(latent_dim, image_shape=SHAPE):
    model = keras_vae.mlp_vae(image_shape, latent_dim=latent_dim, hidden_units=8, seed=1)
    model.build((None, *image_shape))
    return model


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    return {dim: _model(dim) for dim in (1, 2, 5)}


@pytest.fixture(scope="module")
def images():
    return (RNG.uniform(size=(40, *SHAPE)) > 0.5).astype("float32")


def _png_shape(path):
    return matplotlib.image.imread(path).shape


def _assert_pixels(path, fig, dpi):
    """The PNG is figure size x dpi (Agg truncates; allow 1 pixel of float rounding)."""
    width, height = fig.get_size_inches() * dpi
    rows, cols = _png_shape(path)[:2]
    assert abs(rows - height) <= 1 and abs(cols - width) <= 1, (rows, cols, height, width)


@pytest.mark.parametrize("dpi", [50, 100])
def test_every_figure_writes_a_png_of_the_figure_size_times_dpi(models, images, tmp_path, dpi):
    figures = {
        "reconstructions": plotting.reconstruction_grid(models[2], images, num=8),
        "samples": plotting.sample_grid(models[2], num=10, seed=3),
        "manifold": plotting.manifold_grid(models[2], num_per_axis=5),
        "latents": plotting.latent_scatter(models[2], images, labels=np.arange(40) % 3),
        "interpolation": plotting.interpolation_grid(models[2], images[0], images[1], steps=6),
    }
    for name, fig in figures.items():
        path = plotting.save_figure(fig, tmp_path / "out" / f"{name}.png", dpi=dpi)
        assert path.stat().st_size > 1000, name
        _assert_pixels(path, fig, dpi)
        # written like `open` (umask applies), not with mkstemp's owner-only mode
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{name}.png" for name in figures
    )  # no temporary files left behind


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_save_figure_replaces_atomically_and_keeps_the_old_file_on_failure(models, tmp_path):
    path = tmp_path / "samples.png"
    plotting.save_figure(plotting.sample_grid(models[2], num=4), path)
    before = path.read_bytes()

    class Broken(Exception):
        pass

    fig = plotting.sample_grid(models[2], num=9)

    def fail(*args, **kwargs):
        raise Broken

    fig.savefig = fail
    with pytest.raises(Broken):
        plotting.save_figure(fig, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["samples.png"]


def test_grids_are_grey_without_ticks_and_titled(models, images):
    fig = plotting.reconstruction_grid(models[2], images, num=5)
    axes = fig.get_axes()
    assert len(axes) == 2  # inputs above, reconstructions beneath
    for ax in axes:
        (picture,) = ax.get_images()
        assert picture.get_cmap().name == "gray"
        assert picture.get_clim() == (0.0, 1.0)
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
        assert picture.get_array().shape == (6, 5 * 7 - 1)  # 5 images of 6x6, 1-pixel gaps
    assert [ax.get_title() for ax in axes] == ["input x", "reconstruction E[x|z], z = E[z|x]"]
    assert fig._suptitle.get_text() == "Reconstructions"
    top, bottom = (ax.get_images()[0].get_array() for ax in axes)
    np.testing.assert_array_equal(top, plotting.tile_images(images[:5], num_cols=5))
    expected = plotting.tile_images(models[2](images[:5]).numpy(), num_cols=5)
    np.testing.assert_allclose(bottom, expected, atol=1e-6)


def test_sample_grid_is_square_ish_and_reproducible(models):
    fig = plotting.sample_grid(models[2], num=10, seed=4)
    grid = fig.get_axes()[0].get_images()[0].get_array()
    assert grid.shape == (3 * 7 - 1, 4 * 7 - 1)  # 10 images: 4 columns, 3 rows
    again = plotting.sample_grid(models[2], num=10, seed=4).get_axes()[0].get_images()[0]
    np.testing.assert_array_equal(np.asarray(again.get_array()), np.asarray(grid))
    with pytest.raises(ValueError, match="num must be an int >= 1"):
        plotting.sample_grid(models[2], num=0)


def test_manifold_latents_are_normal_quantiles_of_a_grid_of_the_unit_square():
    z = plotting.manifold_latents(4)
    assert z.shape == (16, 2)
    quantiles = scipy.stats.norm.ppf(np.linspace(0.05, 0.95, 4))
    np.testing.assert_allclose(z[:4, 0], quantiles, rtol=1e-6)  # z_1 grows to the right
    np.testing.assert_allclose(z[::4, 1], quantiles[::-1], rtol=1e-6)  # z_2 grows upwards
    np.testing.assert_allclose(z[0], [quantiles[0], quantiles[-1]], rtol=1e-6)


def test_manifold_tiles_the_decoded_grid(models):
    fig = plotting.manifold_grid(models[2], num_per_axis=3)
    grid = fig.get_axes()[0].get_images()[0].get_array()
    assert grid.shape == (18, 18)  # 3x3 images of 6x6, no padding
    decoded = models[2].decode(plotting.manifold_latents(3)).mean().numpy()
    np.testing.assert_allclose(grid[6:12, 12:18], decoded[5, :, :, 0], atol=1e-6)


def test_manifold_grid_spans_the_quantile_range_it_is_given(models):
    fig = plotting.manifold_grid(models[2], num_per_axis=3, low=0.005, high=0.995)
    grid = fig.get_axes()[0].get_images()[0].get_array()
    edge = scipy.stats.norm.ppf(0.995)  # 2.576: the corners of the wider grid
    corner = models[2].decode(np.array([[-edge, -edge]], np.float32)).mean().numpy()
    np.testing.assert_allclose(grid[12:18, 0:6], corner[0, :, :, 0], atol=1e-5)  # bottom left
    assert "[0.005, 0.995]" in fig._suptitle.get_text()


def test_manifold_latents_from_prior_samples_are_their_marginal_quantiles():
    samples = np.stack([RNG.normal(3.0, 2.0, 100000), RNG.uniform(-1.0, 0.0, 100000)], 1)
    z = plotting.manifold_latents(5, low=0.1, high=0.9, prior_samples=samples)
    u = np.linspace(0.1, 0.9, 5)
    np.testing.assert_allclose(z[:5, 0], scipy.stats.norm.ppf(u, 3.0, 2.0), atol=0.05)
    np.testing.assert_allclose(z[::5, 1], (u - 1.0)[::-1], atol=0.01)  # z_2 grows upwards
    with pytest.raises(ValueError, match=r"prior_samples must have shape \[n, 2\]"):
        plotting.manifold_latents(5, prior_samples=samples[:, :1])


def _learned_prior_model(prior, posterior="diagonal"):
    model = keras_vae.mlp_vae(
        SHAPE, latent_dim=2, hidden_units=8, prior=prior, prior_components=3,
        posterior=posterior, seed=2,
    )  # fmt: skip
    model.build((None, *SHAPE))
    return model


def test_manifold_of_a_shifted_mixture_prior_is_centred_on_its_mass():
    model = _learned_prior_model("mixture")
    weights, means = np.array([0.6, 0.3, 0.1]), np.array([[4.0, -3.0], [5.0, -2.0], [4.5, -1.0]])
    scales = np.array([[0.3, 0.5], [0.4, 0.2], [0.2, 0.3]])
    model.prior.set_weights([means, np.log(np.expm1(scales - 1e-4)), np.log(weights)])
    # the reference: quantiles of the mixture's marginals from NumPy draws
    component = RNG.choice(3, size=200000, p=weights)
    draws = means[component] + scales[component] * RNG.normal(size=(200000, 2))
    expected = np.quantile(draws, np.linspace(0.05, 0.95, 5), axis=0)
    z = plotting.prior_manifold_latents(model, 5, seed=1)
    np.testing.assert_allclose(z[:5, 0], expected[:, 0], atol=0.05)
    np.testing.assert_allclose(z[::5, 1], expected[::-1, 1], atol=0.05)
    assert np.all(z[:, 0] > 3.0) and np.all(z[:, 1] < -1.0)  # not N(0, 1) quantiles
    # the figure decodes exactly this grid (the same seed draws the same prior samples)
    fig = plotting.manifold_grid(model, num_per_axis=5, seed=1)
    grid = fig.get_axes()[0].get_images()[0].get_array()
    decoded = model.decode(z).mean().numpy()
    np.testing.assert_allclose(grid[6:12, 12:18], decoded[7, :, :, 0], atol=1e-6)
    assert "F^{-1}(u)" in fig._suptitle.get_text()


@pytest.mark.parametrize(
    "prior, posterior", [("vamp", "full"), ("vamp", "diagonal"), ("standard", "full")]
)
def test_learned_prior_and_full_covariance_models_draw_every_figure(prior, posterior, images):
    model = _learned_prior_model(prior, posterior)
    if prior == "vamp":
        model.prior.set_pseudo_inputs(images[:3])
    manifold = plotting.manifold_grid(model, num_per_axis=4).get_axes()[0].get_images()[0]
    samples = plotting.sample_grid(model, num=6, seed=2).get_axes()[0].get_images()[0]
    for picture, shape in ((manifold, (4 * 6, 4 * 6)), (samples, (2 * 7 - 1, 3 * 7 - 1))):
        array = np.asarray(picture.get_array())
        assert array.shape == shape
        assert np.all(np.isfinite(array)) and array.min() >= 0.0 and array.max() <= 1.0
    if prior == "vamp":  # the grid spans the quantiles of the VampPrior's own samples
        draws = model.prior_distribution().sample(20000, seed=(0, 0)).numpy()
        z = plotting.prior_manifold_latents(model, 4)
        np.testing.assert_allclose(
            z[:4, 0], np.quantile(draws[:, 0], np.linspace(0.05, 0.95, 4)), rtol=1e-5
        )
    (ax,) = plotting.latent_scatter(model, images).get_axes()
    means = model.encode(images).mean().numpy()
    np.testing.assert_allclose(ax.collections[0].get_offsets(), means, atol=1e-6)
    axes = plotting.interpolation_grid(model, images[0], images[1], steps=3).get_axes()
    end = model.decode(means[1:2]).mean().numpy()[0, :, :, 0]
    np.testing.assert_allclose(axes[3].get_images()[0].get_array(), end, atol=1e-6)


@pytest.mark.parametrize("latent_dim", [1, 5])
def test_manifold_refuses_models_without_two_latents(models, latent_dim):
    expected = (
        f"manifold needs a 2-latent model; this model has latent_dim={latent_dim}; "
        "train with --latent-dim 2"
    )
    with pytest.raises(ValueError) as error:
        plotting.manifold_grid(models[latent_dim])
    assert str(error.value) == expected


def test_latent_scatter_with_and_without_labels(models, images):
    fig = plotting.latent_scatter(models[2], images)
    (ax,) = fig.get_axes()
    assert ax.get_title() == "Posterior means E[z|x]"
    assert ax.get_legend() is None
    (points,) = ax.collections
    means = models[2].encode(images).mean().numpy()
    np.testing.assert_allclose(points.get_offsets(), means, atol=1e-6)

    labels = np.arange(len(images)) % 4
    fig = plotting.latent_scatter(models[2], images, labels=labels)
    ax = fig.get_axes()[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2", "3"]
    assert ax.get_legend().get_title().get_text() == "label"
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(images)

    fig = plotting.latent_scatter(
        models[2], images, labels=np.linspace(0, 1, len(images)), label_name="time"
    )
    assert len(fig.get_axes()) == 2  # continuous labels: a colour bar
    assert fig.get_axes()[1].get_ylabel() == "time"
    with pytest.raises(ValueError, match=r"labels must have shape \[40\]"):
        plotting.latent_scatter(models[2], images, labels=labels[:3])


def test_latent_scatter_uses_principal_components_above_two_latents(models, images):
    fig = plotting.latent_scatter(models[5], images, labels=np.arange(len(images)) % 2)
    ax = fig.get_axes()[0]
    assert "first two principal components of 5-d" in ax.get_title()
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("PC 1", "PC 2")
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    means = models[5].encode(images).mean().numpy()
    centred = means - means.mean(axis=0)
    # the projections keep the largest share of the variance of any 2-d projection
    top_two = np.sort(np.linalg.eigvalsh(np.cov(centred.T)))[-2:].sum()
    assert np.var(points, axis=0, ddof=1).sum() == pytest.approx(top_two, rel=1e-4)
    assert "1-d latent" in plotting.latent_scatter(models[1], images).get_axes()[0].get_title()


def test_interpolation_decodes_the_line_between_posterior_means(models, images):
    fig = plotting.interpolation_grid(models[2], images[3], images[7][np.newaxis], steps=4)
    axes = fig.get_axes()
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes] == ["x_a", "t=0", "t=0.33", "t=0.67", "t=1", "x_b"]
    means = models[2].encode(images[[3, 7]]).mean().numpy()
    end = models[2].decode(means[1:]).mean().numpy()[0, :, :, 0]
    np.testing.assert_allclose(axes[4].get_images()[0].get_array(), end, atol=1e-6)
    with pytest.raises(ValueError, match=r"image_b must have shape \[N, 6, 6, 1\]"):
        plotting.interpolation_grid(models[2], images[0], np.zeros((5, 5)))
    with pytest.raises(ValueError, match="steps must be an int >= 2"):
        plotting.interpolation_grid(models[2], images[0], images[1], steps=1)


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    """Two tiny trained runs (latent_dim 2 and 3) on a labelled .npz."""
    root = tmp_path_factory.mktemp("plot_runs")
    dataset = root / "toy.npz"
    np.savez(
        dataset,
        x=(RNG.uniform(size=(200, 6, 6)) > 0.5).astype("uint8"),
        y=RNG.integers(0, 3, size=200),
    )
    dirs = {}
    for latent_dim in (2, 3):
        config = TrainConfig(
            dataset=str(dataset), eval_split="train", latent_dim=latent_dim, hidden_units=[8],
            epochs=1, batch_size=50, seed=0, jit_compile=False,
        )  # fmt: skip
        dirs[latent_dim] = root / f"run{latent_dim}"
        training.train(config, output=dirs[latent_dim], verbose=0, progress=lambda _: None)
    return dirs


def _cli(argv):
    from keras_vae.workflows import plot

    parser = argparse.ArgumentParser(prog="keras-vae plot")
    plot.add_cli_arguments(parser)
    return plot.run_cli(parser.parse_args(argv))


@pytest.mark.parametrize("kind", plotting.KINDS)
def test_cli_writes_every_kind_of_picture(run_dirs, tmp_path, capsys, kind):
    output = tmp_path / "pictures" / f"{kind}.png"
    argv = [str(run_dirs[2]), "--kind", kind, "--output", str(output), "--num", "4"]
    assert _cli([*argv, "--dpi", "50"]) == 0
    out = capsys.readouterr().out
    assert f"keras-vae plot: wrote {output}" in out
    height, width = _png_shape(output)[:2]
    assert f"{width}x{height} px" in out
    assert output.stat().st_size > 1000


def test_cli_latents_colours_by_the_labels_of_the_npz(run_dirs, tmp_path, monkeypatch):
    seen = {}
    original = plotting.latent_scatter

    def spy(model, images, labels=None):
        seen["images"], seen["labels"] = images, labels
        return original(model, images, labels)

    monkeypatch.setattr(plotting, "latent_scatter", spy)
    output = tmp_path / "latents.png"
    assert _cli([str(run_dirs[3]), "--kind", "latents", "--output", str(output)]) == 0
    assert seen["images"].shape == (200, 6, 6, 1)  # whole split (< the default 5000)
    assert seen["labels"].shape == (200,)


def test_cli_manifold_of_a_three_latent_run_is_refused_with_the_fix(run_dirs, tmp_path):
    output = tmp_path / "manifold.png"
    with pytest.raises(ValueError, match="latent_dim=3; train with --latent-dim 2"):
        _cli([str(run_dirs[3]), "--kind", "manifold", "--output", str(output)])
    assert not output.exists()
    with pytest.raises(ValueError, match="--num must be an int >= 1"):
        _cli([str(run_dirs[2]), "--kind", "samples", "--output", str(output), "--num", "0"])


def test_traversals_and_kl_figures_use_the_images_picked_with_the_seed(models, images, monkeypatch):
    """Rows by the mean KL of `KL_IMAGES` rows drawn as `numpy.random.default_rng(seed)`
    draws them, the first of those traversed; the KL bars average `num` such rows."""
    from keras_vae.models.vae import traversals

    model = models[5]
    monkeypatch.setattr(plotting, "KL_IMAGES", 12)
    picked = images[np.sort(np.random.default_rng(5).choice(40, size=12, replace=False))]
    params = {k: np.asarray(v, np.float64) for k, v in model.encode_parameters(picked).items()}
    loc, scale = params["loc"], params["scale"]
    kl = (0.5 * (loc**2 + scale**2 - 1.0 - 2.0 * np.log(scale))).mean(axis=0)  # N(0, I) prior
    fig = plotting.make_figure(model, "traversals", images=images, num=3, seed=5)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [f"z{j}  {kl[j]:.2f}" for j in np.argsort(-kl)]
    expected = traversals.traversal_figure(model, picked, num_steps=3)  # base: picked[0]
    np.testing.assert_array_equal(
        fig.axes[0].get_images()[0].get_array(), expected.axes[0].get_images()[0].get_array()
    )
    chart = plotting.make_figure(model, "kl", images=images, num=12, seed=5)
    np.testing.assert_allclose([p.get_height() for p in chart.axes[0].patches], kl, rtol=1e-5)


@pytest.mark.parametrize("prior, posterior", [("vamp", "diagonal"), ("standard", "full")])
def test_traversals_refuse_models_without_a_kl_per_latent_before_reading_data(prior, posterior):
    from keras_vae.models.kind import kind_of

    model = _learned_prior_model(prior, posterior)
    kind = kind_of(TrainConfig(prior=prior, posterior=posterior))
    for figure in ("traversals", "kl"):
        with pytest.raises(ValueError, match="gives no KL per latent for this posterior"):
            kind.check_figure(model, figure)
    kind.check_figure(_model(2), "traversals")  # N(0, I) and a diagonal posterior: drawn


def test_traversals_of_a_conditional_vae_are_refused(images):
    model = keras_vae.mlp_vae(SHAPE, latent_dim=2, hidden_units=8, condition_dim=3)
    for figure in ("traversals", "kl"):
        with pytest.raises(ValueError, match=f"--kind {figure} is drawn for a plain VAE"):
            plotting.make_figure(model, figure, images=images, num=3)
