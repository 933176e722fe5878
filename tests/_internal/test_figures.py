"""keras_vae._internal.figures: tiling against a NumPy construction, the display shapes, PNG
files pixel for pixel (read back with PIL), figure sizes, and no pyplot state."""

import sys

import numpy as np
import pytest
from PIL import Image

from keras_vae._internal import figures


def _numpy_tiling(images, cols, padding, pad_value):
    """Rows of `cols` images with `padding` columns/rows of `pad_value` between them (not
    around): np.block over a grid of cells, the missing cells of the last row padded."""
    count, height, width = images.shape[:3]
    rows = -(-count // cols)
    blank = np.full(images.shape[1:], pad_value, np.float32)
    cells = [[np.clip(images[r * cols + c], 0, 1) if r * cols + c < count else blank
              for c in range(cols)] for r in range(rows)]  # fmt: skip
    vertical = np.full((height, padding, *images.shape[3:]), pad_value, np.float32)
    lines = []
    for r, row in enumerate(cells):
        line = row[0]
        for cell in row[1:]:
            line = np.concatenate([line, vertical, cell], axis=1)
        if r:
            gap = np.full((padding, *line.shape[1:]), pad_value, np.float32)
            lines.append(gap)
        lines.append(line)
    return np.concatenate(lines, axis=0)


@pytest.mark.parametrize(
    ("shape", "cols", "padding", "pad_value"),
    [((7, 3, 4), 3, 1, 1.0), ((5, 2, 2, 3), 2, 2, 0.5), ((4, 5, 3), 4, 0, 0.0)],
)
def test_tile_images_equals_a_numpy_construction(shape, cols, padding, pad_value):
    images = np.random.default_rng(0).uniform(-0.5, 1.5, size=shape).astype(np.float32)
    grid = figures.tile_images(images, num_cols=cols, padding=padding, pad_value=pad_value)
    np.testing.assert_array_equal(grid, _numpy_tiling(images, cols, padding, pad_value))


def test_tile_images_layout_padding_and_clipping():
    images = np.stack([np.full((2, 3), v, np.float32) for v in (0.0, 0.5, 2.0)])
    grid = figures.tile_images(images, num_cols=2, padding=1, pad_value=1.0)
    assert grid.shape == (2 * 3 - 1, 2 * 4 - 1)
    np.testing.assert_array_equal(grid[:2, :3], 0.0)
    np.testing.assert_array_equal(grid[:2, 4:], 0.5)
    np.testing.assert_array_equal(grid[3:, :3], 1.0)  # 2.0 clipped to 1
    np.testing.assert_array_equal(grid[2, :], 1.0)  # padding row
    assert figures.tile_images(np.zeros((10, 2, 2))).shape == (3 * 3 - 1, 4 * 3 - 1)  # square-ish
    flat = figures.tile_images(np.zeros((4, 16)), padding=0)  # flat square images
    assert flat.shape == (8, 8)
    with pytest.raises(ValueError, match="Cannot draw"):
        figures.tile_images(np.zeros((4, 15)))
    with pytest.raises(ValueError, match="images must be a non-empty batch"):
        figures.tile_images(np.zeros((0, 2, 2)))
    with pytest.raises(ValueError, match="num_cols must be a positive int"):
        figures.tile_images(np.zeros((2, 2, 2)), num_cols=0)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((28, 28, 1), (28, 28)), ((32, 32, 3), (32, 32, 3)), ((5, 7), (5, 7)), ((49,), (7, 7))],
)
def test_display_shape(shape, expected):
    assert figures.display_shape(shape) == expected


def test_write_png_is_pixel_exact_grey_and_colour(tmp_path):
    grey = np.random.default_rng(1).uniform(-0.2, 1.2, size=(5, 6)).astype(np.float32)
    grey[0, 0] = np.nan  # a diverged model draws black
    figures.write_png(grey, tmp_path / "sub" / "grey.png")
    read = np.asarray(Image.open(tmp_path / "sub" / "grey.png"))
    expected = np.round(np.clip(np.nan_to_num(grey, nan=0.0), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(read, expected)
    colour = np.random.default_rng(2).uniform(size=(3, 4, 3)).astype(np.float32)
    figures.write_png(colour, tmp_path / "colour.png")
    read = np.asarray(Image.open(tmp_path / "colour.png"))
    np.testing.assert_array_equal(read, np.round(colour * 255).astype(np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colour.png", "sub"]  # no temp files


def test_figures_have_predictable_sizes_and_leave_no_pyplot_state(tmp_path):
    grid = figures.tile_images(np.zeros((4, 10, 20)), num_cols=4)  # 10 x 83 pixels
    fig = figures.grid_figure(grid, "a title")
    width, height = fig.get_size_inches()
    # each array pixel is 4 PNG pixels (at most 12 inches at 100 dpi), plus the title band
    assert width == pytest.approx(83 * 4 / 100) and height == pytest.approx(10 * 4 / 100 + 0.35)
    figures.save_figure(fig, tmp_path / "fig.png")
    assert Image.open(tmp_path / "fig.png").size == (int(width * 100), int(height * 100))
    big = figures.grid_figure(np.zeros((3000, 600)))  # longer than 12 inches at one pixel
    assert max(big.get_size_inches()) == pytest.approx(12.0)
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or not pyplot.get_fignums()


def test_stack_rows_puts_a_white_band_between():
    top, bottom = np.zeros((2, 3), np.float32), np.full((1, 3), 0.5, np.float32)
    stacked = figures.stack_rows(top, bottom, gap=2)
    np.testing.assert_array_equal(stacked, np.concatenate([top, np.ones((2, 3)), bottom]))
