"""Image grids and figures, whatever drew them: tiling a batch into one array, figures on
the Agg canvas (never `pyplot`), atomic PNG files. Every model kind's pictures use these.

Figures are built on the Agg canvas directly, so they need no display and leave no global
figure state behind; a grid of images is tiled into one array (`tile_images`) and drawn with
one `imshow`, which is fast and pixel-exact.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keras_vae._internal.atomic import atomic_file as _atomic_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_DPI = 100
_MAX_INCHES = 12.0  # longest side of an image-grid figure
_MAX_PIXEL_SCALE = 4  # PNG pixels per image pixel (at DEFAULT_DPI) for small grids
_TITLE_INCHES = 0.35  # room above each image panel for its title


# ------------------------------------------------------------------------------ array helpers
def display_shape(image_shape: Sequence[int]) -> tuple[int, ...]:
    """The 2-D (grey) or 3-D (RGB) shape in which examples of `image_shape` are drawn.

    Args:
        image_shape: Shape of one example: `(H, W)`, `(H, W, 1)`, `(H, W, 3)`, or `(D,)` with
            D a perfect square (flat images from array files).

    Returns:
        `(H, W)` for grey images, `(H, W, 3)` for colour images.

    Raises:
        ValueError: For shapes that are not images.
    """
    shape = tuple(int(d) for d in image_shape)
    if len(shape) == 3 and shape[-1] == 1:
        return shape[:2]
    if (len(shape) == 3 and shape[-1] == 3) or len(shape) == 2:
        return shape
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        side = math.isqrt(shape[0])
        return (side, side)
    raise ValueError(
        "Cannot draw examples of shape "
        f"{shape}: plots need images (H, W), (H, W, 1), (H, W, 3) or flat vectors of a "
        "square number of pixels."
    )


def tile_images(
    images: np.ndarray,
    num_cols: int | None = None,
    padding: int = 1,
    pad_value: float = 1.0,
) -> np.ndarray:
    """Tiles a batch of images into one image, row by row, clipped to [0, 1].

    Args:
        images: `[N, *image_shape]` (any shape accepted by `display_shape`).
        num_cols: Images per row; None makes a square-ish grid (ceil(sqrt(N)) columns).
        padding: Pixels of `pad_value` between neighbouring images (not around the border).
        pad_value: Value of the padding (1.0: white lines between images).

    Returns:
        float32 array `[rows * (H + padding) - padding, cols * (W + padding) - padding]`, or
        with a trailing 3 for colour images. Unused cells at the end are `pad_value`.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim < 2 or len(images) == 0:
        raise ValueError(
            f"images must be a non-empty batch [N, ...]. Received: shape={images.shape}"
        )
    shape = display_shape(images.shape[1:])
    images = np.clip(images.reshape((len(images), *shape)), 0.0, 1.0)
    count = len(images)
    cols = num_cols if num_cols is not None else math.ceil(math.sqrt(count))
    if cols < 1:
        raise ValueError(f"num_cols must be a positive int. Received: num_cols={num_cols!r}")
    cols = min(cols, count)
    rows = math.ceil(count / cols)
    height, width = shape[:2]
    grid = np.full(
        (rows * (height + padding) - padding, cols * (width + padding) - padding, *shape[2:]),
        pad_value,
        dtype=np.float32,
    )
    for index, image in enumerate(images):
        top = (index // cols) * (height + padding)
        left = (index % cols) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


# ----------------------------------------------------------------------------- figure helpers
def _new_figure(width: float, height: float) -> Figure:
    # matplotlib only here (and scipy in `manifold_z_grid`): the training callbacks use the
    # NumPy tiling and PNG helpers of this module, and importing matplotlib cost `keras-vae
    # train` 0.5-0.8 s before its first step
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _grid_inches(grid_shape: Sequence[int], max_inches: float = _MAX_INCHES) -> tuple[float, float]:
    """Width and height in inches for drawing an array of `grid_shape` pixels.

    Each array pixel becomes a whole number of PNG pixels at `DEFAULT_DPI` (up to
    `_MAX_PIXEL_SCALE`; fewer when the longest side would exceed `max_inches`), so tiled images
    stay crisp.
    """
    height, width = grid_shape[:2]
    longest = max(height, width)
    scale = max(1, min(_MAX_PIXEL_SCALE, int(max_inches * DEFAULT_DPI // longest)))
    if longest * scale > max_inches * DEFAULT_DPI:  # huge grids: shrink below one pixel
        scale = max_inches * DEFAULT_DPI / longest
    return width * scale / DEFAULT_DPI, height * scale / DEFAULT_DPI


def _show(ax, grid: np.ndarray, title: str | None = None, fontsize: float = 10) -> None:
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def grid_figure(grid: np.ndarray, title: str | None = None) -> Figure:
    """A figure showing one tiled image (see `tile_images`) with an optional title."""
    width, height = _grid_inches(grid.shape)
    title_inches = _TITLE_INCHES if title else 0.0
    fig = _new_figure(width, height + title_inches)
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + title_inches)))
    _show(ax, grid)
    if title:
        fig.suptitle(title, y=1.0 - 0.1 * title_inches / (height + title_inches), va="top")
    return fig


def reconstruction_figure(
    inputs: np.ndarray,
    outputs: np.ndarray,
    title: str,
    label: str = "reconstruction E[x|z], z = E[z|x]",
) -> Figure:
    """Inputs in the top panel, their reconstructions in the bottom one (precomputed arrays)."""
    num_cols = min(len(inputs), 16)
    top = tile_images(inputs, num_cols=num_cols)
    bottom = tile_images(outputs, num_cols=num_cols)
    width, height = _grid_inches((2 * top.shape[0], top.shape[1]))
    panel = height / 2
    total = 2 * (panel + _TITLE_INCHES) + _TITLE_INCHES
    fig = _new_figure(width, total)
    fig.suptitle(title, y=1.0 - 0.1 * _TITLE_INCHES / total, va="top")
    for row, (grid, name) in enumerate(((top, "input x"), (bottom, label))):
        bottom_edge = (1 - row) * (panel + _TITLE_INCHES)
        ax = fig.add_axes((0.0, bottom_edge / total, 1.0, panel / total))
        _show(ax, grid, name, fontsize=9)
    return fig


# -------------------------------------------------------------------------------- writing
def save_figure(fig: Figure, path: str | os.PathLike, dpi: float = DEFAULT_DPI) -> Path:
    """Writes `fig` as a PNG atomically and closes it.

    The PNG is `int(width_inches * dpi)` x `int(height_inches * dpi)` pixels (no tight
    bounding box, so the size is predictable). It is written to a temporary file in the same
    directory and renamed over `path` (`os.replace`), so a reader never sees a partial file.

    Args:
        fig: The figure (from this module or `pyplot`).
        path: Destination `.png` path; parent directories are created.
        dpi: Pixels per inch.

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    try:
        with _atomic_file(path) as handle:
            fig.savefig(handle, format="png", dpi=dpi)
    finally:
        close_figure(fig)
    return path


def close_figure(fig: Figure) -> None:
    """Releases `fig`: unregisters it from `pyplot` if pyplot manages it (ours are not)."""
    pyplot = sys.modules.get("matplotlib.pyplot")  # never import pyplot just to close
    if pyplot is not None:
        pyplot.close(fig)


def to_uint8(grid: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) to uint8 grey levels 0..255, rounded."""
    grid = np.nan_to_num(np.asarray(grid, np.float32), nan=0.0)  # a diverged model draws black
    return np.round(np.clip(grid, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Writes a tiled image array (values in [0, 1]) as a PNG, pixel for pixel, atomically.

    Grey arrays become 8-bit greyscale PNGs with the grey levels of `to_uint8`, exactly.

    Args:
        array: `[H, W]` grey or `[H, W, 3]` colour, as returned by `tile_images`.
        path: Destination `.png` path; parent directories are created.

    Returns:
        `path` as a `Path`.
    """
    from PIL import Image  # matplotlib's own dependency

    pixels = to_uint8(array)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    path = Path(path)
    with _atomic_file(path) as handle:
        Image.fromarray(pixels).save(handle, format="PNG")
    return path


def stack_rows(top: np.ndarray, bottom: np.ndarray, gap: int) -> np.ndarray:
    """`top` above `bottom` with a white band of `gap` pixels between them."""
    band = np.ones((gap, *top.shape[1:]), dtype=np.float32)
    return np.concatenate([top, band, bottom], axis=0)
