"""Data with ground-truth factors of variation, for the disentanglement metrics.

A factor-labelled data set is a grid of K discrete factors (factor j has `factor_sizes[j]`
classes) and an image for each combination. The metrics (`keras_vae.disentanglement`) need two
things of it, the interface of disentanglement_lib's ground-truth data (Locatello et al. 2019):

* `sample_factors(num, rng)`: factor classes drawn independently and uniformly, `[num, K]`;
* `observations(factors)`: the images of given factor classes, float32 `[num, H, W, C]`.

Two implementations:

* `RenderedSprites`: the dSprites grid rendered on demand (`keras_vae.datasets.
  synthetic_dsprites.render`): exact, offline, nothing stored.
* `ArrayFactorData`: images and their factor classes in arrays, looked up by factor tuple;
  `tfds_factor_data` fills one from a tfds data set with `label_*` features: tfds' `dsprites`
  and `shapes3d` (downloaded by tfds for online users) or our `synthetic_dsprites`.
  `load_tfds_factors` returns the plain `(images, factors)` arrays.

The pure sampling functions (`sample_factors`, `sample_sharing_factor`) draw the factor
batches of the intervention-based metrics (beta-VAE and FactorVAE scores).

`dataset_factors(dataset)` is the factor data of a training data set by its `--dataset` name:
`synthetic_dsprites` and `synthetic_dsprites/small` (rendered, the images the run trained on),
or an `.npz` file with `x` and `factors` (int `[N, K]`, every combination once); any other
data set has no factors (a one-line `DataValidationError`).

Example:
    ```python
    data = RenderedSprites()                         # the full 737,280-image grid, lazily
    rng = np.random.default_rng(0)
    factors = data.sample_factors(64, rng)           # int64 [64, 5]
    images = data.observations(factors)              # float32 [64, 64, 64, 1] in {0, 1}

    data = tfds_factor_data("dsprites", data_dir="~/tensorflow_datasets", download=True)
    ```
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_vae.data import pipeline
from keras_vae.data.builders import synthetic_dsprites

# the factor order of the known tfds data sets (their `label_<name>` features)
TFDS_FACTORS = {
    "dsprites": ("shape", "scale", "orientation", "x_position", "y_position"),
    "shapes3d": ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
    "synthetic_dsprites": synthetic_dsprites.FACTOR_NAMES,
}


def _check_sizes(factor_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(factor_sizes)
    if not sizes or any(isinstance(s, bool) or int(s) != s or s < 1 for s in sizes):
        raise ValueError(
            f"factor_sizes must be a non-empty sequence of positive ints. Received: {sizes!r}"
        )
    return tuple(int(s) for s in sizes)


def sample_factors(factor_sizes: Sequence[int], num: int, rng: np.random.Generator) -> np.ndarray:
    """Factor classes drawn independently and uniformly: int64 `[num, K]`, column j in
    [0, factor_sizes[j])."""
    sizes = _check_sizes(factor_sizes)
    return np.stack([rng.integers(0, s, size=num) for s in sizes], axis=1).astype(np.int64)


def sample_sharing_factor(
    factor_sizes: Sequence[int], factor: int, num: int, rng: np.random.Generator
) -> np.ndarray:
    """`num` factor combinations that share the class of factor `factor` (drawn once) and
    draw all others uniformly: the batch of the FactorVAE score (Kim & Mnih 2018)."""
    sizes = _check_sizes(factor_sizes)
    if not 0 <= factor < len(sizes):
        raise ValueError(f"factor must be in [0, {len(sizes)}). Received: factor={factor!r}")
    factors = sample_factors(sizes, num, rng)
    factors[:, factor] = rng.integers(0, sizes[factor])
    return factors


class FactorData:
    """Base class: a complete grid of `factor_sizes` classes with an image per combination.

    Subclasses set `factor_names` and `factor_sizes` and implement `observations`.
    """

    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """int64 `[num, K]` drawn uniformly (see `sample_factors`)."""
        return sample_factors(self.factor_sizes, num, rng)

    def observations(self, factors: np.ndarray) -> np.ndarray:
        """The images of the factor classes `factors` `[n, K]`: float32 `[n, H, W, C]`."""
        raise NotImplementedError

    def sample(self, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`(images, factors)` for `num` uniformly drawn factor combinations."""
        factors = self.sample_factors(num, rng)
        return self.observations(factors), factors


class RenderedSprites(FactorData):
    """The dSprites-equivalent grid, rendered on demand (nothing stored).

    Args:
        config: A `synthetic_dsprites.SpritesConfig` (default the full 737,280-image grid).
    """

    factor_names = synthetic_dsprites.FACTOR_NAMES

    def __init__(self, config: synthetic_dsprites.SpritesConfig = synthetic_dsprites.FULL):
        if not isinstance(config, synthetic_dsprites.SpritesConfig):
            raise ValueError(
                "config must be a synthetic_dsprites.SpritesConfig such as FULL or SMALL. "
                f"Received: config={config!r}"
            )
        self.config = config
        self.factor_sizes = config.factor_sizes

    def observations(self, factors: np.ndarray) -> np.ndarray:
        images = synthetic_dsprites.render(np.asarray(factors), self.config)
        return images[..., None].astype(np.float32)


class ArrayFactorData(FactorData):
    """Images and their factor classes held in arrays, looked up by factor combination.

    Args:
        images: `[N, H, W, C]` (uint8 grey levels or {0, 1} values, or float).
        factors: int `[N, K]` factor classes of each image.
        factor_sizes: Classes per factor; default `factors.max(0) + 1`.
        factor_names: A name per factor; default `factor_0`, ...
        scale: Multiplier from stored values to image values (1/255 for uint8 grey levels,
            1 for {0, 1} pixels); default 1/255 for uint8 images with values above 1, else 1.

    `observations` raises a one-line error for a combination that has no image (a grid with
    gaps cannot serve the metrics, which draw combinations freely).
    """

    def __init__(
        self,
        images: np.ndarray,
        factors: np.ndarray,
        factor_sizes: Sequence[int] | None = None,
        factor_names: Sequence[str] | None = None,
        scale: float | None = None,
    ):
        factors = np.asarray(factors)
        if factors.ndim != 2 or len(factors) != len(images) or not len(images):
            raise ValueError(
                "factors must be int [N, K] with one row per image (N > 0). Received: factors "
                f"{factors.shape}, images {np.shape(images)}"
            )
        sizes = _check_sizes(factor_sizes or (factors.max(axis=0) + 1).tolist())
        if len(sizes) != factors.shape[1] or factors.min() < 0 or (factors >= sizes).any():
            raise ValueError(
                f"factors must hold classes in [0, factor_sizes={sizes}). Received: min "
                f"{factors.min(axis=0).tolist()}, max {factors.max(axis=0).tolist()}"
            )
        names = tuple(factor_names or (f"factor_{j}" for j in range(len(sizes))))
        if len(names) != len(sizes):
            raise ValueError(f"Give one name per factor ({len(sizes)}). Received: {names}")
        if scale is None:
            scale = 1.0 / 255.0 if images.dtype == np.uint8 and images.max() > 1 else 1.0
        self.images, self.factor_sizes, self.factor_names = images, sizes, names
        self.scale = float(scale)
        self._row = np.full(int(np.prod(sizes)), -1, np.int64)  # flat factor index -> row
        self._row[np.ravel_multi_index(factors.T, sizes)] = np.arange(len(factors))

    @property
    def complete(self) -> bool:
        """Whether every factor combination has an image."""
        return bool((self._row >= 0).all())

    def observations(self, factors: np.ndarray) -> np.ndarray:
        factors = np.asarray(factors)
        rows = self._row[np.ravel_multi_index(factors.T, self.factor_sizes)]
        if (rows < 0).any():
            missing = factors[np.argmax(rows < 0)].tolist()
            raise ValueError(
                f"No image has the factor classes {missing} ({self.factor_names}); the metrics "
                "need a complete factor grid (load the whole split)."
            )
        return self.images[rows].astype(np.float32) * np.float32(self.scale)


def load_tfds_factors(
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    download: bool = False,
    batch_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[int, ...]]:
    """The images and factor classes of a tfds data set with `label_<factor>` features.

    Reads tfds' `dsprites` (5 factors, 737,280 binary 64x64 images: 2.9 GB as uint8) and
    `shapes3d` (6 factors, 480,000 colour 64x64 images: 5.9 GB), our `synthetic_dsprites`
    (any config, e.g. `"synthetic_dsprites/small"`), or any builder whose factors are
    `ClassLabel` features named `label_*`. The split is read batch by batch into arrays
    allocated once (when tfds knows its size).

    Args:
        name: tfds name, with an optional `/config`.
        split: tfds split (slicing such as `"train[:10%]"` allowed).
        data_dir: tfds data directory (None: tfds' default / `TFDS_DATA_DIR`).
        download: Prepare the data set (download it) when it is not there yet.
        batch_size: Examples read per batch.

    Returns:
        `(images, factors, factor_names, factor_sizes)`: uint8 `[N, H, W, C]` as stored,
        int64 `[N, K]`, the K factor names and their class counts.
    """
    import tensorflow_datasets as tfds

    import keras_vae.data.builders  # noqa: F401  registers synthetic_dsprites

    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    features = builder.info.features
    names = TFDS_FACTORS.get(name.split("/")[0]) or tuple(
        key[len("label_") :] for key in features.keys() if key.startswith("label_")
    )
    if not names or any(f"label_{n}" not in features for n in names):
        raise ValueError(
            f"{name} has no factor labels (features named label_*). Received features: "
            f"{sorted(features.keys())}"
        )
    sizes = tuple(int(features[f"label_{n}"].num_classes) for n in names)
    dataset = builder.as_dataset(split=split, batch_size=batch_size, shuffle_files=False)
    try:
        total = int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError, TypeError):
        total = 0
    image_parts, factor_parts, images, factors, stored = [], [], None, None, 0
    for batch in tfds.as_numpy(dataset):
        labels = np.stack([batch[f"label_{n}"] for n in names], axis=1).astype(np.int64)
        if total and images is None:
            images = np.empty((total, *batch["image"].shape[1:]), batch["image"].dtype)
            factors = np.empty((total, len(names)), np.int64)
        if images is not None and not image_parts and stored + len(labels) <= total:
            images[stored : stored + len(labels)] = batch["image"]
            factors[stored : stored + len(labels)] = labels
            stored += len(labels)
        else:  # size unknown, or more examples than tfds announced
            image_parts.append(batch["image"])
            factor_parts.append(labels)
    if images is not None:
        image_parts.insert(0, images[:stored])
        factor_parts.insert(0, factors[:stored])
    if not image_parts:
        raise ValueError(f"{name} split {split!r} has no examples.")
    if len(image_parts) == 1:
        return image_parts[0], factor_parts[0], names, sizes
    return np.concatenate(image_parts), np.concatenate(factor_parts), names, sizes


def tfds_factor_data(
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    download: bool = False,
) -> ArrayFactorData:
    """`load_tfds_factors` as an `ArrayFactorData` (for the metrics). dSprites-like images
    stored as {0, 1} are used as they are; grey or colour levels are divided by 255."""
    images, factors, names, sizes = load_tfds_factors(name, split, data_dir, download)
    return ArrayFactorData(images, factors, sizes, names)


#: The training data sets (`--dataset` names) whose factors are rendered exactly.
SPRITES = {"synthetic_dsprites": synthetic_dsprites.FULL,
           "synthetic_dsprites/small": synthetic_dsprites.SMALL}  # fmt: skip


def dataset_factors(dataset: str) -> FactorData:
    """The factor data of a training data set, as the pipeline gives its images.

    * `synthetic_dsprites`, `synthetic_dsprites/small`: `RenderedSprites` of that grid (the
      images its tfds builder stores, pixel for pixel, without reading them);
    * an `.npz` file with `x` and `factors` (int `[N, K]`, one row per image, every
      combination of the factor classes once): an `ArrayFactorData` scaled as the pipeline
      scales `x` (uint8 by 1/255, else as stored), with a channel axis for `[N, H, W]`.

    Raises:
        pipeline.DataValidationError: In one line, for a data set without factor labels.
    """
    if dataset in SPRITES:
        return RenderedSprites(SPRITES[dataset])
    path = Path(dataset).expanduser()
    if path.suffix.lower() == ".npz" and path.is_file():
        images, _ = pipeline.open_array_file(path)
        with np.load(path, allow_pickle=False) as stored:
            factors = stored["factors"] if "factors" in stored.files else None
        if factors is not None:
            if images.ndim == 3:
                images = images[..., np.newaxis]
            scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
            try:
                data = ArrayFactorData(images, np.asarray(factors, np.int64), scale=scale)
            except ValueError as error:
                raise pipeline.DataValidationError(f"{dataset}: {error}") from None
            if not data.complete:
                raise pipeline.DataValidationError(
                    f"{dataset}: its factors have {int((data._row >= 0).sum())} of the "
                    f"{len(data._row)} combinations of {data.factor_sizes} classes; the "
                    "metrics draw any combination, so give an image of every one."
                )
            return data
    raise pipeline.DataValidationError(
        f"{dataset} has no factor labels, which the disentanglement metrics need: train on "
        f"{' or '.join(SPRITES)}, or on an .npz with x and factors (int [N, K], every "
        "combination of the factor classes once)."
    )
