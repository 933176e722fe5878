"""The offline dSprites grid: factor grid and order, rendered geometry and the tfds builder
(checked against closed forms and NumPy moments). The factor-data loaders: test_factors.py."""

import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_vae.data import factors as factor_data
from keras_vae.data.builders import synthetic_dsprites as sd

FULL, SMALL = sd.FULL, sd.SMALL
# the documented geometry, written out here rather than read from the module
MARGIN, HALF_SIZE = 0.15, 0.1


def _centre_pixels(config, index):
    """Closed form of the sprite centre in pixel coordinates (pixel k covers [k, k + 1))."""
    value = np.linspace(0.0, 1.0, config.num_positions)[index]
    return (MARGIN + (1 - 2 * MARGIN) * value) * config.image_size - 0.5


def _moments(image):
    rows, cols = np.nonzero(image)
    return rows.mean(), cols.mean(), np.cov(np.stack([cols, -rows]))


def test_full_grid_is_dsprites_grid_in_dsprites_order():
    assert FULL.factor_sizes == (3, 6, 40, 32, 32) and FULL.num_examples == 737_280
    shapes, scales, angles, xs, ys = sd.factor_values(FULL)
    np.testing.assert_array_equal(shapes, [1, 2, 3])
    np.testing.assert_allclose(scales, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0], rtol=1e-6)
    np.testing.assert_allclose(angles, 2 * np.pi * np.arange(40) / 39, rtol=1e-6)
    np.testing.assert_allclose(xs, np.arange(32) / 31, rtol=1e-6)
    np.testing.assert_array_equal(xs, ys)
    grid = sd.factor_grid(FULL)
    assert grid.shape == (737_280, 5)
    assert len(np.unique(grid, axis=0)) == 737_280  # every combination exactly once
    np.testing.assert_array_equal(grid[1], [0, 0, 0, 0, 1])  # y_position varies fastest
    np.testing.assert_array_equal(grid[32], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(grid[32 * 32 * 40 * 6], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(grid[-1], [2, 5, 39, 31, 31])


def test_centroid_follows_position_in_pixels():
    xs, ys = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    for shape in (0, 1):  # point-symmetric: the centroid is the centre up to pixelisation
        factors = np.stack([np.full(1024, shape), np.full(1024, 5), np.full(1024, 7),
                            xs.ravel(), ys.ravel()], axis=1)  # fmt: skip
        images = sd.render(factors)
        for image, (x, y) in zip(images, factors[:, 3:], strict=True):
            row, col, _ = _moments(image)
            assert abs(col - _centre_pixels(FULL, x)) < 0.5
            assert abs(row - _centre_pixels(FULL, y)) < 0.5
    hearts = sd.render(np.array([[2, 5, 0, x, 3] for x in range(32)]))
    cols = np.array([_moments(image)[1] for image in hearts])  # a translation of one heart
    np.testing.assert_allclose(np.diff(cols), 0.7 * 64 / 31, atol=0.6)


def test_area_grows_with_scale_as_the_closed_form():
    grid = np.linspace(-2, 2, 1601)
    x, y = np.meshgrid(grid, grid)
    heart = ((x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0).mean() * 16.0  # the classic heart
    unit_areas = {0: 4.0, 1: np.pi * 1.25 * 0.625, 2: heart}
    scales = sd.factor_values(FULL)[1]
    for shape, unit_area in unit_areas.items():
        factors = np.array([[shape, s, 3, 16, 16] for s in range(6)])
        areas = sd.render(factors).sum(axis=(1, 2))
        expected = unit_area * (scales * HALF_SIZE * 64) ** 2
        assert np.all(np.diff(areas) > 0)
        np.testing.assert_allclose(areas, expected, rtol=0.12)


def test_orientation_turns_the_ellipse_and_shapes_differ():
    angles = sd.factor_values(FULL)[2]
    for k in (0, 3, 8, 13, 25):
        _, _, cov = _moments(sd.render(np.array([[1, 5, k, 16, 16]]))[0])
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        axis = eigenvectors[:, np.argmax(eigenvalues)]  # long axis, (right, up)
        difference = (np.arctan2(axis[1], axis[0]) - angles[k]) % np.pi
        assert min(difference, np.pi - difference) < np.radians(6)
    images = sd.render(np.array([[s, 4, 5, 10, 20] for s in range(3)]))
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(images[a].astype(int) - images[b]).sum() > 10
    heart = sd.render(np.array([[2, 5, 0, 16, 16]]))[0]  # point down, lobes up
    widths = heart[heart.any(axis=1)].sum(axis=1)
    assert widths[-1] <= 2 and np.argmax(widths) < len(widths) // 2
    # as in dSprites, orientation 0 and 2 pi render alike
    ends = sd.render(np.array([[2, 5, 0, 9, 9], [2, 5, 39, 9, 9]]))
    np.testing.assert_array_equal(ends[0], ends[1])


def test_sprites_never_touch_the_border():
    corners = [(x, y) for x in (0, 31) for y in (0, 31)]
    factors = np.array([[s, 5, k, x, y] for s in range(3) for k in range(40) for x, y in corners])
    images = sd.render(factors)
    assert images.sum(axis=(1, 2)).min() > 0
    for edge in (images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]):
        assert edge.sum() == 0


def test_render_and_config_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"factor classes must lie in \[0"):
        sd.render(np.array([[3, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="factors must be an int array"):
        sd.render(np.zeros((2, 4), int))
    with pytest.raises(ValueError, match=r"num_shapes must be an int in \[1, 3\]. Received: "):
        sd.SpritesConfig(name="bad", num_shapes=4)
    with pytest.raises(ValueError, match="image_size must be an int >= 8"):
        sd.SpritesConfig(name="bad", image_size=4)


def test_generator_streams_in_blocks(monkeypatch):
    sizes = []
    original = sd.render

    def counting(factors, config):
        sizes.append(len(factors))
        return original(factors, config)

    monkeypatch.setattr(sd, "render", counting)
    examples = sd.generate_examples(FULL, block=1000)
    assert isinstance(examples, types.GeneratorType)
    first = [next(examples) for _ in range(1001)]
    assert sizes == [1000, 1000]  # two blocks rendered for 1,001 examples of 737,280
    key, features = first[1000]
    assert key == 1000
    expected = sd.factor_grid(FULL, 1000, 1001)[0]
    assert [features[f"label_{n}"] for n in sd.FACTOR_NAMES] == expected.tolist()
    assert features["value_scale"] == np.float32(0.5) and features["image"].shape == (64, 64, 1)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    tfds.builder("synthetic_dsprites/small", data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


def test_tfds_builder_small_config_stores_every_combination(small_dir):
    images, factors, names, sizes = factor_data.load_tfds_factors(
        "synthetic_dsprites/small", data_dir=small_dir, batch_size=500
    )
    assert names == sd.FACTOR_NAMES and sizes == (3, 3, 4, 8, 8)
    assert images.shape == (2304, 32, 32, 1) and images.dtype == np.uint8
    assert len(np.unique(factors, axis=0)) == 2304
    np.testing.assert_array_equal(factors, sd.factor_grid(SMALL))  # stored in grid order
    np.testing.assert_array_equal(images[..., 0], sd.render(factors, SMALL))
    assert set(np.unique(images)) == {0, 1}
    values = tfds.as_numpy(
        tfds.load(
            "synthetic_dsprites/small", split="train[:70]", data_dir=small_dir, batch_size=70
        )  # fmt: skip
    )
    batch = next(iter(values))
    for k, name in enumerate(sd.FACTOR_NAMES):
        np.testing.assert_array_equal(
            batch[f"value_{name}"], sd.factor_values(SMALL)[k][batch[f"label_{name}"]]
        )


def test_tfds_factor_data_of_the_builder_is_the_complete_grid(small_dir):
    data = factor_data.tfds_factor_data("synthetic_dsprites/small", data_dir=small_dir)
    assert data.complete and data.scale == 1.0 and data.factor_sizes == SMALL.factor_sizes
    images, factors = data.sample(20, np.random.default_rng(0))
    np.testing.assert_array_equal(images[..., 0], sd.render(factors, SMALL))
