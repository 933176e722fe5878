"""A dSprites-equivalent data set generated offline, as a tensorflow-datasets builder.

dSprites (Matthey et al. 2017) is the standard test bed of disentanglement: binary 64x64
images of one white sprite, every combination of five ground-truth factors exactly once, in a
fixed order. This module renders the same factor grid with NumPy, so it needs no download:

| factor | classes | values (`value_*`) |
| --- | --- | --- |
| shape | 3 | 1 (square), 2 (ellipse), 3 (heart), as dSprites |
| scale | 6 | linspace(0.5, 1, 6) |
| orientation | 40 | linspace(0, 2 pi, 40) radians, counter-clockwise (0 = 2 pi, as dSprites) |
| x_position | 32 | linspace(0, 1, 32), left to right |
| y_position | 32 | linspace(0, 1, 32), top to bottom |

3 x 6 x 40 x 32 x 32 = 737,280 images, stored in dSprites' order (y_position varies fastest,
then x_position, orientation, scale, shape): example i has the factor classes
`np.unravel_index(i, factor_sizes)`. Features are named as tfds' `dsprites` names them
(`image`, `label_<factor>` class indices, `value_<factor>` values), so one loader reads both
(`keras_vae.factor_data`).

Rendering (`render`): a pixel (row r, column c) of an S x S image has centre
u = ((c + 1/2) / S, (r + 1/2) / S) in the unit square. The sprite's centre is
m = MARGIN + (1 - 2 MARGIN) * (x, y); a pixel is on when its sprite coordinates

    p = R(-theta) diag(1, -1) (u - m) / (scale * HALF_SIZE)       (y axis turned upwards)

fall inside the unit shape: the square max(|p1|, |p2|) <= 1; the ellipse
(p1 / 1.25)^2 + (p2 / 0.625)^2 <= 1 (its long axis along the orientation); the heart
(p1^2 + q^2 - 1)^3 - p1^2 q^3 <= 0 with q = p2 + 0.12 (the classic implicit heart, point
down, centred). Every sprite lies within sqrt(2) HALF_SIZE of its centre (the square's
corners), so with MARGIN = 0.15 it never leaves the image. Only a window around the sprite is
evaluated, for a batch of factor combinations at once; the NumPy rendering of the full set
takes about half a minute on one core (tfds' PNG encoding and writing take longer).
dSprites' own sprite drawings are not public as code, so pixel sizes differ slightly
from the original; the factor grid, the order and the labels are the same.

Configurations (`BUILDER_CONFIGS`): `full` (the default, the grid above) and `small` (32x32
images, 3 shapes x 3 scales x 4 orientations x 8 x 8 positions = 2,304 images, in seconds: for
tests and quick looks). Both have one split, `train`, as dSprites.

Example:
    ```python
    import tensorflow_datasets as tfds
    import keras_vae.data.builders  # registers `synthetic_dsprites`

    ds = tfds.load("synthetic_dsprites/full", split="train", data_dir="/tmp/tfds")
    images = render(np.array([[2, 5, 0, 16, 16]]))   # a big heart in the middle, [1, 64, 64]
    ```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

FACTOR_NAMES = ("shape", "scale", "orientation", "x_position", "y_position")
SHAPE_NAMES = ("square", "ellipse", "heart")
HALF_SIZE = 0.1  # half the side of the square at scale 1, in image widths
MARGIN = 0.15  # sprite centres stay this far from the border (sprites reach 1.42 * HALF_SIZE)
_EXTENT = 1.42  # every unit shape lies within this radius of its centre (square: sqrt 2)
_BLOCK = 4096  # examples rendered at once by the generator (16 MB of uint8 at 64x64)

_CITATION = """\
@misc{dsprites17,
  author = {Loic Matthey and Irina Higgins and Demis Hassabis and Alexander Lerchner},
  title = {dSprites: Disentanglement testing Sprites dataset},
  howpublished = {https://github.com/deepmind/dsprites-dataset/},
  year = {2017}
}
"""


@dataclasses.dataclass(eq=False)
class SpritesConfig(tfds.core.BuilderConfig):
    """A factor grid: `num_*` values of each factor, on `image_size` x `image_size` pixels.

    Attributes:
        image_size: S, the side of the square images in pixels (>= 8).
        num_shapes: The first `num_shapes` of (square, ellipse, heart).
        num_scales: Scale values linspace(0.5, 1, num_scales).
        num_orientations: Orientations linspace(0, 2 pi, num_orientations).
        num_positions: Positions linspace(0, 1, num_positions) along x and along y.
    """

    image_size: int = 64
    num_shapes: int = 3
    num_scales: int = 6
    num_orientations: int = 40
    num_positions: int = 32

    def __post_init__(self):
        limits = {"image_size": (8, None), "num_shapes": (1, len(SHAPE_NAMES))}
        for field in ("image_size", "num_shapes", "num_scales", "num_orientations",
                      "num_positions"):  # fmt: skip
            value = getattr(self, field)
            low, high = limits.get(field, (1, None))
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < low
                or (high is not None and value > high)
            ):
                bound = f"an int in [{low}, {high}]" if high else f"an int >= {low}"
                raise ValueError(f"{field} must be {bound}. Received: {field}={value!r}")

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        """Classes per factor, in `FACTOR_NAMES` order."""
        return (
            self.num_shapes,
            self.num_scales,
            self.num_orientations,
            self.num_positions,
            self.num_positions,
        )

    @property
    def num_examples(self) -> int:
        return int(np.prod(self.factor_sizes))


FULL = SpritesConfig(name="full", description="The dSprites grid: 737,280 64x64 images.")
SMALL = SpritesConfig(
    name="small",
    description="3 shapes, 3 scales, 4 orientations, 8x8 positions, 32x32: 2,304 images.",
    image_size=32,
    num_scales=3,
    num_orientations=4,
    num_positions=8,
)


def factor_values(config: SpritesConfig = FULL) -> tuple[np.ndarray, ...]:
    """The value of every class of each factor (float32), in `FACTOR_NAMES` order:
    shape 1..num_shapes, scale linspace(0.5, 1), orientation linspace(0, 2 pi), positions
    linspace(0, 1). One value only gives the top of the range (1 for scale, 0 otherwise)."""

    def spaced(low, high, count):
        return np.linspace(low, high, count) if count > 1 else np.array([high if low else low])

    return tuple(
        np.asarray(v, np.float32)
        for v in (
            np.arange(1, config.num_shapes + 1),
            spaced(0.5, 1.0, config.num_scales),
            spaced(0.0, 2.0 * np.pi, config.num_orientations),
            spaced(0.0, 1.0, config.num_positions),
            spaced(0.0, 1.0, config.num_positions),
        )
    )


def factor_grid(config: SpritesConfig = FULL, start: int = 0, stop: int | None = None):
    """The factor classes of examples `start` to `stop` (default: all), int64 `[n, 5]`:
    row i - start is `np.unravel_index(i, config.factor_sizes)` (dSprites' order)."""
    stop = config.num_examples if stop is None else stop
    return np.stack(np.unravel_index(np.arange(start, stop), config.factor_sizes), axis=1)


def _inside(shape: int, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Whether sprite coordinates (p1, p2) lie in the unit shape of class `shape` (0, 1, 2)."""
    if shape == 0:
        return np.maximum(np.abs(p1), np.abs(p2)) <= 1.0
    if shape == 1:
        return np.square(p1 / 1.25) + np.square(p2 / 0.625) <= 1.0
    q = p2 + 0.12
    a, b = np.square(p1), np.square(q)
    return (a + b - 1.0) ** 3 <= a * b * q


def render(factors: np.ndarray, config: SpritesConfig = FULL) -> np.ndarray:
    """Renders the images of factor classes `factors` (int `[n, 5]`, `FACTOR_NAMES` order).

    See the module docstring for the geometry. Vectorised over the batch: each sprite is
    evaluated on a window of about 2.6 * HALF_SIZE * S pixels around its centre only.

    Args:
        factors: Class indices, each within `config.factor_sizes`.
        config: The factor grid and image size.

    Returns:
        uint8 `[n, S, S]` in {0, 1}.
    """
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(FACTOR_NAMES):
        raise ValueError(
            f"factors must be an int array [n, {len(FACTOR_NAMES)}] of {FACTOR_NAMES} classes. "
            f"Received: shape {factors.shape}"
        )
    sizes = np.array(config.factor_sizes)
    if factors.size and (factors.min() < 0 or (factors >= sizes).any()):
        raise ValueError(
            f"factor classes must lie in [0, {tuple(sizes)}). Received: min "
            f"{factors.min(axis=0).tolist()}, max {factors.max(axis=0).tolist()}"
        )
    _, scales, angles, xs, ys = factor_values(config)
    size = config.image_size
    count = len(factors)
    scale = scales[factors[:, 1]].astype(np.float64)
    angle = angles[factors[:, 2]].astype(np.float64)
    centre_x = MARGIN + (1.0 - 2.0 * MARGIN) * xs[factors[:, 3]].astype(np.float64)
    centre_y = MARGIN + (1.0 - 2.0 * MARGIN) * ys[factors[:, 4]].astype(np.float64)
    window = min(size, int(np.ceil(2.0 * _EXTENT * HALF_SIZE * size)) + 2)
    offsets = np.arange(window)
    col0 = np.clip(np.floor(centre_x * size - window / 2).astype(int), 0, size - window)
    row0 = np.clip(np.floor(centre_y * size - window / 2).astype(int), 0, size - window)
    cols = col0[:, None] + offsets  # [n, w]
    rows = row0[:, None] + offsets
    du = ((cols + 0.5) / size - centre_x[:, None])[:, None, :]  # [n, 1, w] rightwards
    dv = (centre_y[:, None] - (rows + 0.5) / size)[:, :, None]  # [n, w, 1] upwards
    unit = (scale * HALF_SIZE)[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    p1 = (cos * du + sin * dv) / unit  # R(-theta) applied to (du, dv)
    p2 = (cos * dv - sin * du) / unit
    mask = np.zeros(p1.shape, bool)
    for shape in np.unique(factors[:, 0]):
        chosen = factors[:, 0] == shape
        mask[chosen] = _inside(int(shape), p1[chosen], p2[chosen])
    images = np.zeros((count, size, size), np.uint8)
    batch = np.arange(count)[:, None, None]
    images[batch, rows[:, :, None], cols[:, None, :]] = mask
    return images


class SyntheticDsprites(tfds.core.GeneratorBasedBuilder):
    """dSprites' factor grid rendered offline: shape, scale, orientation, x and y position."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: the dSprites factor grid, rendered in NumPy."}
    BUILDER_CONFIGS = [FULL, SMALL]
    DEFAULT_CONFIG_NAME = "full"

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        size = config.image_size
        features = {"image": tfds.features.Image(shape=(size, size, 1), dtype=np.uint8)}
        for name, classes in zip(FACTOR_NAMES, config.factor_sizes, strict=True):
            features[f"label_{name}"] = tfds.features.ClassLabel(num_classes=classes)
        for name in FACTOR_NAMES:
            features[f"value_{name}"] = tfds.features.Tensor(shape=(), dtype=np.float32)
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "dSprites-equivalent binary images (pixels in {0, 1}) of a square, ellipse or "
                "heart at every combination of scale, orientation and x/y position, rendered "
                "offline in NumPy, with the factor classes (label_*) and values (value_*). "
                "Stored in dSprites' order (y_position fastest)."
            ),
            features=tfds.features.FeaturesDict(features),
            homepage="https://github.com/deepmind/dsprites-dataset",
            citation=_CITATION,
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # nothing to download
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict]]:
        yield from generate_examples(self.builder_config)


def generate_examples(
    config: SpritesConfig = FULL, block: int = _BLOCK
) -> Iterator[tuple[int, dict]]:
    """Yields `(index, features)` in dSprites' order, rendering `block` images at a time
    (memory stays at one block, never the whole set)."""
    values = factor_values(config)
    for start in range(0, config.num_examples, block):
        factors = factor_grid(config, start, min(start + block, config.num_examples))
        images = render(factors, config)
        for offset, (classes, image) in enumerate(zip(factors, images, strict=True)):
            features = {"image": image[:, :, None]}
            for k, name in enumerate(FACTOR_NAMES):
                features[f"label_{name}"] = int(classes[k])
                features[f"value_{name}"] = values[k][classes[k]]
            yield start + offset, features
