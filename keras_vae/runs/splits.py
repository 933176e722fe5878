"""The data of a run: its splits opened and checked as its config says, one loader for
every workflow (train, evaluate, plot, export).

An array file's splits are `train`, `validation` (its held-out last part) and `test` (the
`eval_data` file); a tfds data set's are its own. tfds splits are streamed unless loaded.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from keras_vae.data import pipeline as data
from keras_vae.runs.config import TrainConfig


def resolve_likelihood(config: TrainConfig, images) -> str:
    """The configured likelihood, else the dataset's natural one, else from the values:
    `bernoulli` for values in [0, 1], `gaussian` otherwise (`data.value_range`: the whole
    array, or a tfds stream's first examples, its `head`)."""
    if config.likelihood:
        return config.likelihood
    natural = data.default_likelihood(config.dataset)
    if natural:
        return natural
    low, high = data.value_range(images)
    return "bernoulli" if low >= 0.0 and high <= 1.0 else "gaussian"


def is_array_dataset(config: TrainConfig) -> bool:
    """Whether the configured dataset is an array file (`.npz`/`.npy`), not a tfds name."""
    return config.dataset not in data.DATASET_SPECS and config.dataset.lower().endswith(
        data.ARRAY_EXTENSIONS
    )


def resolve_data(config: TrainConfig) -> TrainConfig:
    """The config with an array file's held-out part settled (what config.json records).

    An array file's splits are `train` (the file without its last `validation_split`),
    `validation` (that last part) and `test` (the `eval_data` file). Without `eval_data` the
    default eval split `test` becomes `validation`, and evaluating on `validation` makes
    `validation_split` default to `data.DEFAULT_VALIDATION_SPLIT`, so that held-out metrics
    never use training images. (`eval_split="train"` asks for metrics on the training images:
    then the whole file trains unless `validation_split` is given.)

    A tfds data set with one split and no `test` (dSprites' grid, `synthetic_dsprites`) has no
    held-out images: the default eval split `test` becomes that split, as disentanglement_lib
    trains and scores on the whole grid.
    """
    spec = data.DATASET_SPECS.get(config.dataset)
    if spec is not None and config.eval_split == "test" and spec.splits == ("train",):
        return config.replace(eval_split="train")
    if not is_array_dataset(config):
        return config
    changes = {}
    if config.eval_split == "test" and config.eval_data is None:
        changes["eval_split"] = "validation"
    eval_split = changes.get("eval_split", config.eval_split)
    if config.validation_split is None and eval_split == "validation":
        changes["validation_split"] = data.DEFAULT_VALIDATION_SPLIT
    return config.replace(**changes) if changes else config


def open_split(
    config: TrainConfig,
    split: str,
    likelihood: str | None = None,
    *,
    stream: bool = True,
    labels: bool = False,
    limit: int | None = None,
):
    """One split of the configured data, checked for `likelihood` (default: resolved).

    tfds data sets are streamed (`data.open_stream`) unless `stream` is False; array files
    give their `train`/`validation` part or the `eval_data` file (`test`), in memory or, when
    large, streamed from the memory-mapped file (`data.open_array`). The config's `limit`
    applies to the training split; `limit` (e.g. `keras-vae evaluate --limit`) to any split,
    before it is read: only its first `limit` examples are.
    With `labels` (a kind that `uses_labels`) the split is a stream of (images, labels)
    batches (`data.ImageStream.labeled`). A stream records the likelihood it was checked for
    (`data.ImageStream.likelihood`): its `batches` check the examples not yet checked.
    """
    limits = [n for n in (config.limit if split == "train" else None, limit) if n is not None]
    limit = min(limits) if limits else None
    if not is_array_dataset(config):
        return _open_tfds_split(config, split, likelihood, limit, stream, labels)
    path, part = _array_part(config, split)
    if part != "validation":  # once per file: train part or eval file
        _warn_about_range(path)
    images = data.open_array(
        path,
        part,
        validation_split=config.validation_split,
        limit=limit,
        max_in_memory_bytes=data.IN_MEMORY_BYTES if stream else math.inf,
        labels=labels,
    )
    likelihood = likelihood or resolve_likelihood(config, images)
    if isinstance(images, data.ArrayStream):  # the whole mapped file, chunk by chunk
        data.validate_array(images.array, likelihood=likelihood, name=images.name)
        images.checked, images.likelihood = True, likelihood
    else:
        data.validate_images(images, likelihood=likelihood, name=f"{Path(path).name} {split}")
    return images


def _open_tfds_split(
    config: TrainConfig, split: str, likelihood, limit, stream: bool, labels: bool = False
):
    """A tfds split, streamed or loaded; a stream's first examples (`head`) are checked
    here, the others batch by batch in its pipeline."""
    options = {"data_dir": config.data_dir, "manual_dir": config.manual_dir, "limit": limit}
    if stream:
        options.update(shuffle_buffer=config.shuffle_buffer, labels=labels)
    images = (data.open_stream if stream else data.load_images)(config.dataset, split, **options)
    likelihood = likelihood or resolve_likelihood(config, images)
    data.validate_images(
        data.first_images(images, len(images)),
        likelihood=likelihood,
        name=f"{config.dataset} {split} split",
    )
    if stream:  # the other examples: checked batch by batch as they are read
        images.likelihood = likelihood
    return images


def _array_part(config: TrainConfig, split: str) -> tuple[str, str]:
    """(file, part) of an array-file split: train/validation of `dataset`, test = `eval_data`."""
    if split == "test" and config.eval_data is not None:
        return config.eval_data, "all"
    if split in ("train", "validation"):
        return config.dataset, split
    test = "test (--eval-data FILE)" if config.eval_data is None else "test"
    raise data.DataValidationError(
        f"Array file {config.dataset} has no split {split!r}: its splits are train, "
        f"validation (the held-out last --validation-split of the file) and {test}."
    )


def _warn_about_range(path: str) -> None:
    """A `data.DataRangeWarning` when the file's stored values look wrong for their scaling."""
    stored, _ = data.open_array_file(path)
    message = data.range_warning(stored, name=Path(path).name)
    if message is not None:
        warnings.warn(message, data.DataRangeWarning, stacklevel=3)


def load_split(
    config: TrainConfig, split: str, likelihood: str | None = None, limit: int | None = None
) -> np.ndarray:
    """Loads and validates one split of the configured dataset into memory (float32); with
    `limit`, its first `limit` examples only (the others are not read)."""
    return open_split(config, split, likelihood, stream=False, limit=limit)


def load_labeled_split(
    config: TrainConfig, split: str, likelihood: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One split in memory with its labels (a conditional VAE's evaluation): `(x, y)`."""
    if is_array_dataset(config):
        return open_split(config, split, likelihood, labels=True).arrays()
    options = {"data_dir": config.data_dir, "manual_dir": config.manual_dir}
    x, y = data.load_labeled_images(config.dataset, split, **options)
    if y is None:
        raise data.no_labels_error(config.dataset)
    likelihood = likelihood or resolve_likelihood(config, x)
    data.validate_images(x, likelihood=likelihood, name=f"{config.dataset} {split} split")
    return x, y


def check_same_images(config: TrainConfig, train, held_out) -> None:
    """A one-line error, naming both sources and their sizes, when the held-out images are not
    of the training images' shape (an `--eval-data` file of other images, say)."""
    if held_out is train or tuple(train.shape[1:]) == tuple(held_out.shape[1:]):
        return
    name = config.eval_data if config.eval_data and config.eval_split == "test" else (
        f"{config.dataset} {config.eval_split}")  # fmt: skip
    size = lambda images: "x".join(map(str, images.shape[1:]))  # noqa: E731
    raise data.DataValidationError(
        f"The held-out images of {name} are {size(held_out)} but the training images of "
        f"{config.dataset} are {size(train)}; give held-out data of the same size."
    )


def check_labels(train, held_out) -> int:
    """C, the size of the condition, from the training split; a one-line error when the
    held-out split's labels do not fit it (a class that training never saw)."""
    size = train.condition_dim
    other = getattr(held_out, "labels", None)
    if other is None or held_out is train:
        return size
    if other.ndim != (2 if train.labels.ndim == 2 else 1) or data.condition_dim(other) > size:
        raise data.DataValidationError(
            f"The labels of {held_out.name} do not fit those of {train.name} (C={size}): "
            "give held-out labels of the training classes (ints below C, or vectors of size C)."
        )
    return size
