"""keras_vae.data.factors: the factor-labelled data of the disentanglement metrics. The
rendered dSprites grid and array-held grids look images up by their factor classes (checked
against synthetic_dsprites' documented grid and its renderer), tfds' factor labels, the
uniform factor draws, and one-line refusals."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_vae.data import factors as factor_data
from keras_vae.data.builders import synthetic_dsprites as sd

SMALL = sd.SMALL


def _small_grid():
    """Every combination of the small grid in dSprites' order (y_position fastest), with
    `np.indices` rather than the module's `factor_grid`, and its rendered images."""
    factors = np.indices((3, 3, 4, 8, 8)).reshape(5, -1).T  # the documented small grid
    return factors, sd.render(factors, SMALL)


def test_rendered_sprites_are_the_documented_grid_drawn_on_demand():
    data = factor_data.RenderedSprites(SMALL)
    assert data.factor_names == ("shape", "scale", "orientation", "x_position", "y_position")
    assert data.factor_sizes == (3, 3, 4, 8, 8) and data.num_factors == 5
    factors = np.array([[0, 0, 0, 0, 0], [2, 2, 3, 7, 7], [1, 1, 2, 3, 5]])
    images = data.observations(factors)
    assert images.shape == (3, 32, 32, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(images[..., 0], sd.render(factors, SMALL))
    assert factor_data.RenderedSprites().factor_sizes == (3, 6, 40, 32, 32)  # dSprites
    with pytest.raises(ValueError, match="config must be a synthetic_dsprites.SpritesConfig"):
        factor_data.RenderedSprites("small")


def test_array_factor_data_looks_images_up_by_factors():
    factors, images = _small_grid()
    rows = np.random.default_rng(0).permutation(len(factors))  # any storage order
    data = factor_data.ArrayFactorData(images[rows][..., None], factors[rows])
    assert data.complete and data.scale == 1.0 and data.factor_sizes == (3, 3, 4, 8, 8)
    assert data.factor_names == tuple(f"factor_{j}" for j in range(5))
    drawn, drawn_factors = data.sample(50, np.random.default_rng(1))
    np.testing.assert_array_equal(
        drawn, factor_data.RenderedSprites(SMALL).observations(drawn_factors)
    )
    partial = factor_data.ArrayFactorData(images[:100, ..., None], factors[:100], (3, 3, 4, 8, 8))
    assert not partial.complete
    with pytest.raises(ValueError, match=r"No image has the factor classes \[2, 2, 3, 7, 7\]"):
        partial.observations(np.array([[0, 0, 0, 0, 1], [2, 2, 3, 7, 7]]))


def test_grey_levels_are_scaled_and_bad_grids_refused():
    grey = np.full((2, 2, 2, 1), 255, np.uint8)
    data = factor_data.ArrayFactorData(grey, np.array([[0], [1]]), factor_names=["colour"])
    assert data.scale == pytest.approx(1 / 255) and data.factor_names == ("colour",)
    np.testing.assert_allclose(data.observations(np.array([[1]])), 1.0)
    with pytest.raises(ValueError, match=r"factors must hold classes in \[0, factor_sizes"):
        factor_data.ArrayFactorData(grey, np.array([[0], [2]]), factor_sizes=[2])
    with pytest.raises(ValueError, match="factors must be int \\[N, K\\] with one row per image"):
        factor_data.ArrayFactorData(grey, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"Give one name per factor \(1\)"):
        factor_data.ArrayFactorData(grey, np.array([[0], [1]]), factor_names=["a", "b"])
    with pytest.raises(ValueError, match="factor_sizes must be a non-empty sequence"):
        factor_data.sample_factors((3, 0), 4, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("name", "sizes", "shape"),
    [
        ("dsprites", (3, 6, 40, 32, 32), (64, 64, 1)),
        ("shapes3d", (10, 10, 10, 8, 4, 15), (64, 64, 3)),
    ],
)
def test_real_tfds_sets_give_their_factor_labels(name, sizes, shape):
    # tfds' mock data follows the real builders' feature specs (no download)
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        images, factors, names, got = factor_data.load_tfds_factors(name)
    assert names == factor_data.TFDS_FACTORS[name] and got == sizes
    assert images.shape == (12, *shape) and factors.shape == (12, len(sizes))
    assert (factors >= 0).all() and (factors < np.array(sizes)).all()


def test_sampling_functions():
    rng = np.random.default_rng(1)
    factors = factor_data.sample_factors((3, 5), 3000, rng)
    counts = np.bincount(factors[:, 1], minlength=5)
    assert factors.dtype == np.int64 and counts.min() > 500  # uniform: 600 each expected
    shared = factor_data.sample_sharing_factor((3, 5, 7), 1, 200, rng)
    assert len(np.unique(shared[:, 1])) == 1 and len(np.unique(shared[:, 2])) == 7
    with pytest.raises(ValueError, match=r"factor must be in \[0, 3\). Received: factor=3"):
        factor_data.sample_sharing_factor((3, 5, 7), 3, 10, rng)
