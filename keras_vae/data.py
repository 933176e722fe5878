"""Data for keras_vae: tfds and array-file loading, validation, binarization and pipelines.

Images are always float32 arrays of shape [N, H, W, C] (or [N, D] for flat array files) with
values in [0, 1] for the built-in data sets:

* `binarized_mnist`: the static binarization of Larochelle & Murray, 28x28x1 in {0, 1};
  splits train (50,000) / validation (10,000) / test (10,000).
* `mnist`: 28x28x1 grey levels / 255; splits train / test.
* `frey_face`: 28x20x1 grey levels / 255; splits train (1,572) / test (393), see
  `keras_vae.datasets.frey_face`.

Array files (`.npz` with key `x` and optional `y`, or `.npy`) are read with
`allow_pickle=False`. uint8 data is read as grey levels 0..255 and scaled to [0, 1]; any other
numeric dtype is cast to float32 without scaling.

tfds data sets are read from `data_dir` (None: tfds' default, which honours `TFDS_DATA_DIR`
as it was when tensorflow_datasets was imported). When a data set is not prepared there it is
prepared from `manual_dir` (the raw files) or downloaded. Before downloading, the source host
is probed with a short timeout: offline, tfds' own download retries for minutes
(urllib3 retries with exponential back-off) before it fails.

Example:
    ```python
    x = load_images("binarized_mnist", "train", data_dir="../shared/tensorflow_datasets")
    validate_images(x, likelihood="bernoulli")
    ds = make_dataset(x, batch_size=100, seed=0)
    ```
"""

from __future__ import annotations

import dataclasses
import os
import socket
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from keras_vae import registry
from keras_vae.datasets import frey_face as _frey_face  # importing registers `frey_face`

KNOWN_DATASETS = ("binarized_mnist", "mnist", "frey_face")
ARRAY_EXTENSIONS = (".npz", ".npy")
_READ_BATCH = 4096  # examples per tfds read batch when loading a whole split


class DataValidationError(ValueError):
    """Raised for data that cannot be used as given; the one-line message says how to fix it."""


class DatasetNotFoundError(DataValidationError):
    """Raised when a tfds data set is neither prepared in `data_dir` nor can be prepared."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What keras_vae knows about a built-in data set.

    Attributes:
        name: tfds name.
        image_shape: (H, W, C) of one image.
        likelihood: The natural decoder likelihood, "bernoulli" or "gaussian".
        splits: Available split names.
        scale: Factor from stored uint8 pixels to [0, 1] (1 for binarized data).
        raw_files: File names that, placed in `manual_dir`, let tfds prepare it offline.
        source_url: Where tfds downloads the raw files from.
    """

    name: str
    image_shape: tuple[int, int, int]
    likelihood: str
    splits: tuple[str, ...]
    scale: float
    raw_files: tuple[str, ...]
    source_url: str


DATASET_SPECS: dict[str, DatasetSpec] = {
    "binarized_mnist": DatasetSpec(
        name="binarized_mnist",
        image_shape=(28, 28, 1),
        likelihood="bernoulli",
        splits=("train", "validation", "test"),
        scale=1.0,
        raw_files=tuple(f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")),
        source_url="http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
    ),
    "mnist": DatasetSpec(
        name="mnist",
        image_shape=(28, 28, 1),
        likelihood="bernoulli",
        splits=("train", "test"),
        scale=1.0 / 255.0,
        raw_files=(
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ),
        source_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "frey_face": DatasetSpec(
        name="frey_face",
        image_shape=(*_frey_face.IMAGE_SHAPE, 1),
        likelihood="gaussian",
        splits=("train", "test"),
        scale=1.0 / 255.0,
        raw_files=(_frey_face.FILENAME,),
        source_url=_frey_face.URL,
    ),
}


def default_likelihood(name_or_path: str) -> str | None:
    """Returns the natural likelihood of a built-in data set, or None for array files.

    Args:
        name_or_path: A name from `KNOWN_DATASETS` or a path to an array file.

    Returns:
        "bernoulli" (binarized_mnist, mnist), "gaussian" (frey_face), or None when the
        caller must decide (array files).
    """
    spec = DATASET_SPECS.get(name_or_path)
    return spec.likelihood if spec else None


def load_images(
    name_or_path: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    download: bool = True,
    limit: int | None = None,
) -> np.ndarray:
    """Loads images as a float32 array in [0, 1] (array files: see the module docstring).

    Args:
        name_or_path: A tfds name from `KNOWN_DATASETS`, or a path to a `.npz` (key `x`,
            optional `y`) or `.npy` file.
        split: "train", "validation" (binarized_mnist only) or "test"; tfds slicing such as
            "train[:1000]" also works. Ignored for array files (the file is the split).
        data_dir: tfds data directory; None means tfds' default (`TFDS_DATA_DIR`).
        manual_dir: Directory holding the raw files, used to prepare the data set offline.
        download: Whether tfds may download and prepare a data set missing from `data_dir`.
        limit: Keep only the first `limit` images.

    Returns:
        float32 array of shape [N, H, W, C] (or [N, D] for rank-2 array files).

    Raises:
        DataValidationError: For an unknown name, bad split, unreadable file or bad array.
        DatasetNotFoundError: When a tfds data set is missing and cannot be prepared.
    """
    return load_labeled_images(
        name_or_path,
        split,
        data_dir=data_dir,
        manual_dir=manual_dir,
        download=download,
        limit=limit,
    )[0]


def load_labeled_images(
    name_or_path: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    download: bool = True,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Like `load_images`, also returning labels when the source has them.

    Returns:
        `(x, y)`: images as in `load_images`, and int64 labels of shape [N] (mnist, `.npz`
        files with `y`) or None (binarized_mnist, frey_face, `.npy` files).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataValidationError(
            f"limit must be a positive int or None. Received: limit={limit!r}"
        )
    if name_or_path in DATASET_SPECS:
        return _load_tfds(DATASET_SPECS[name_or_path], split, data_dir, manual_dir, download, limit)
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() in ARRAY_EXTENSIONS:
        if not path.is_file():
            raise DataValidationError(f"Array file not found: '{path}'.")
        return _load_array_file(path, limit)
    if path.is_file():
        raise DataValidationError(
            f"Cannot read '{path}': accepted array files are {', '.join(ARRAY_EXTENSIONS)}."
        )
    raise DataValidationError(
        f"Unknown dataset '{name_or_path}': use one of {', '.join(KNOWN_DATASETS)}, or a "
        f"path to an existing {' or '.join(ARRAY_EXTENSIONS)} file."
    )


def _load_tfds(
    spec: DatasetSpec,
    split: str,
    data_dir: str | None,
    manual_dir: str | None,
    download: bool,
    limit: int | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads a whole tfds split into numpy; prepares it first when allowed and needed."""
    base = split.split("[", 1)[0]
    if base not in spec.splits:
        raise DataValidationError(
            f"Dataset '{spec.name}' has no split '{split}'. Available splits: "
            f"{', '.join(spec.splits)}."
        )
    # `limit` beyond the split's size keeps the whole split (tfds slicing would refuse it)
    tfds_split = f"{split}[:{limit}]" if limit is not None and "[" not in split else split
    if limit is not None and "[" not in split:
        try:
            size = tfds.builder(spec.name, data_dir=data_dir).info.splits[split].num_examples
            tfds_split = split if limit >= size else tfds_split
        except Exception:  # noqa: BLE001 - not prepared yet: the load below reports it
            pass
    # Not batch_size=-1: under tfds.testing.mock_data it aborts the process (std::length_error).
    kwargs = {"split": tfds_split, "data_dir": data_dir, "batch_size": _READ_BATCH}
    try:
        # Fast path, never touches the network; AssertionError when not prepared.
        data = tfds.load(spec.name, download=False, **kwargs)
    except AssertionError as err:
        if not download:
            raise _not_found(spec, split, data_dir, "download=False") from err
        if (reason := _offline_reason(spec, manual_dir)) is not None:
            raise _not_found(spec, split, data_dir, reason) from err
        prepare = {}
        if manual_dir is not None:
            config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
            prepare = {"download_config": config}
        try:
            data = tfds.load(
                spec.name, download=True, download_and_prepare_kwargs=prepare, **kwargs
            )
        except (OSError, AssertionError, ValueError, NonMatchingChecksumError) as err2:
            reason = f"preparing it failed with {type(err2).__name__}: {_one_line(err2)}"
            raise _not_found(spec, split, data_dir, reason) from err2
    batches = list(tfds.as_numpy(data))
    if not batches:
        raise DataValidationError(f"Dataset '{spec.name}' split '{tfds_split}' is empty.")
    x = np.concatenate([b["image"] for b in batches]).astype(np.float32)
    if spec.scale != 1.0:
        x *= np.float32(spec.scale)
    y = None
    if "label" in batches[0]:
        y = np.concatenate([b["label"] for b in batches]).astype(np.int64)
    if limit is not None:
        x, y = x[:limit], (None if y is None else y[:limit])
    return x, y


def _offline_reason(spec: DatasetSpec, manual_dir: str | None) -> str | None:
    """Returns why preparing `spec` would need an unreachable network, or None if it may work.

    None when all raw files are in `manual_dir`, a proxy is configured (the host cannot be
    probed directly) or the source host accepts a TCP connection within 5 s.
    """
    if manual_dir is not None and all(
        (Path(manual_dir).expanduser() / f).is_file() for f in spec.raw_files
    ):
        return None
    if urllib.request.getproxies():
        return None
    url = urllib.parse.urlparse(spec.source_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=5).close()
    except OSError as err:
        where = "no manual_dir given" if manual_dir is None else f"raw files not in '{manual_dir}'"
        return f"{where}, and {spec.source_url} is unreachable: {_one_line(err)}"
    return None


def _not_found(
    spec: DatasetSpec, split: str, data_dir: str | None, reason: str
) -> DatasetNotFoundError:
    if data_dir is None:
        data_dir = f"{tfds.core.constants.DATA_DIR} (tfds default)"
    return DatasetNotFoundError(
        f"Dataset '{spec.name}' split '{split}' not found in data_dir '{data_dir}' "
        f"({reason}). Set TFDS_DATA_DIR or --data-dir to a directory with the prepared "
        f"dataset, or give --manual-dir with the raw files ({', '.join(spec.raw_files)})."
    )


def _one_line(error: BaseException, max_chars: int = 300) -> str:
    """`str(error)` on one line, cut to `max_chars`."""
    text = " ".join(str(error).split())
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def _load_array_file(path: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads `x` (and `y`) from a `.npz` or `.npy` file, never unpickling."""
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if "x" not in archive.files:
                    raise DataValidationError(
                        f"'{path}' has no array 'x' (found: {archive.files}); save images "
                        "with np.savez(path, x=images) or np.savez(path, x=images, y=labels)."
                    )
                x = archive["x"]
                y = archive["y"] if "y" in archive.files else None
        else:
            x, y = np.load(path, allow_pickle=False), None
    except ValueError as err:
        if "pickle" not in str(err):
            raise DataValidationError(f"Cannot read '{path}': {_one_line(err)}") from err
        raise DataValidationError(
            f"'{path}' holds object arrays, which need pickle and are refused for safety; "
            "save plain numeric arrays, e.g. np.save(path, images.astype('float32'))."
        ) from err
    except (OSError, zipfile.BadZipFile) as err:
        raise DataValidationError(f"Cannot read '{path}': {_one_line(err)}") from err
    x = _to_float_images(x, str(path))
    if y is not None:
        y = np.asarray(y)
        if y.shape[:1] != x.shape[:1]:
            raise DataValidationError(
                f"'{path}': y has {y.shape[0] if y.ndim else 0} entries but x has "
                f"{x.shape[0]} images; save one label per image."
            )
        y = y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y
    if limit is not None:
        x, y = x[:limit], (None if y is None else y[:limit])
    return x, y


def _to_float_images(x: np.ndarray, name: str) -> np.ndarray:
    """Rank 2 kept, rank 3 gets a channel axis, rank 4 kept; uint8 scaled by 1/255."""
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataValidationError(f"{name}: images must be numeric. Received: dtype={x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise DataValidationError(
            f"{name}: images must have rank 2 [N, D], 3 [N, H, W] or 4 [N, H, W, C]. "
            f"Received: shape={x.shape}"
        )
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32)


def validate_images(
    x: np.ndarray,
    *,
    likelihood: str,
    image_shape: tuple[int, ...] | None = None,
    name: str = "data",
) -> None:
    """Checks that `x` can be fed to a VAE with the given likelihood.

    Args:
        x: Images with a leading batch axis: [N, D], [N, H, W] or [N, H, W, C].
        likelihood: A registered likelihood; its head's `check_values` decides which values
            it accepts ("bernoulli": [0, 1]; "gaussian": any finite value; "logistic": the
            grey levels k/255).
        image_shape: If given, the shape every image must have (`x.shape[1:]`).
        name: What to call `x` in error messages.

    Raises:
        DataValidationError: One-line message naming the problem and the fix.
    """
    if likelihood not in registry.names("likelihood"):
        raise DataValidationError(
            f"likelihood must be one of {list(registry.names('likelihood'))}. "
            f"Received: likelihood={likelihood!r}"
        )
    x = np.asarray(x)
    if x.ndim not in (2, 3, 4):
        raise DataValidationError(
            f"{name} must have rank 2 [N, D], 3 [N, H, W] or 4 [N, H, W, C] including the "
            f"batch axis. Received: shape={x.shape}"
        )
    if x.shape[0] == 0:
        raise DataValidationError(f"{name} is empty (shape={x.shape}); pass at least one image.")
    if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        raise DataValidationError(
            f"{name} has image shape {tuple(x.shape[1:])} but {tuple(image_shape)} is "
            "expected; reshape the data or build the model for this image shape."
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataValidationError(f"{name} must be numeric. Received: dtype={x.dtype}")
    if np.issubdtype(x.dtype, np.inexact):
        for what, bad in (("NaN", np.isnan(x)), ("Inf", np.isinf(x))):
            count = int(np.count_nonzero(bad))
            if count:
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise DataValidationError(
                    f"{name} has {count} {what} value(s), the first at index {first} "
                    f"(image {first[0]}); remove or repair those images."
                )
    problem = registry.get("likelihood", likelihood).check_values(x)
    if problem is not None:
        raise DataValidationError(f"{name} {problem}")


def binarize(x: np.ndarray, rng_or_seed: np.random.Generator | int | None = None) -> np.ndarray:
    """Draws binary images x_b ~ Bernoulli(x), pixel by pixel (dynamic binarization).

    Args:
        x: Grey levels in [0, 1], any shape.
        rng_or_seed: A numpy Generator, or a seed for `np.random.default_rng`.

    Returns:
        float32 array of x's shape with values in {0, 1}; E[x_b] = x.
    """
    rng = np.random.default_rng(rng_or_seed)
    return (rng.random(np.shape(x)) < x).astype(np.float32)


def binarize_tf(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """TensorFlow version of `binarize`, stateless: the same `seed` gives the same draw.

    Args:
        x: float grey levels in [0, 1].
        seed: Shape [2] int32/int64 seed for `tf.random.stateless_uniform`.

    Returns:
        float32 tensor of x's shape with values in {0, 1}.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    u = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=tf.float32)
    return tf.cast(u < x, tf.float32)


def make_dataset(
    x: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool = True,
    seed: int | None = None,
    dynamic_binarization: bool = False,
    repeat: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Builds the input pipeline for `keras.Model.fit`: float32 image batches, no labels.

    Args:
        x: Images [N, ...] (float, in [0, 1] if `dynamic_binarization`).
        batch_size: Images per batch.
        shuffle: Reshuffle the images every epoch (every new iteration of the dataset).
        seed: Seed for shuffling and binarization; a fixed seed reproduces the whole sequence
            of epochs, while each epoch still differs from the previous one.
        dynamic_binarization: Redraw binary images ~ Bernoulli(x) for every batch, every epoch.
        repeat: Repeat forever (then give `steps_per_epoch` to `fit`).
        drop_remainder: Drop the last, smaller batch.

    Returns:
        A `tf.data.Dataset` of float32 tensors of shape [batch, ...].

    Raises:
        DataValidationError: For a bad `batch_size` or unusable `x`.
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or (batch_size < 1)
    ):
        raise DataValidationError(
            f"batch_size must be a positive int. Received: batch_size={batch_size!r}"
        )
    x = np.asarray(x)
    likelihood = "bernoulli" if dynamic_binarization else "gaussian"
    validate_images(x, likelihood=likelihood, name="x")
    ds = tf.data.Dataset.from_tensor_slices(x.astype(np.float32, copy=False))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    if dynamic_binarization:
        # One stateless seed pair per batch, from a stream that restarts differently each
        # epoch (rerandomize_each_iteration) but is reproducible from `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(binarize_tf, num_parallel_calls=tf.data.AUTOTUNE)
    # Under multi-worker training every worker builds this same pipeline (same seed, same
    # order); DATA sharding hands each replica its consecutive part of every global batch.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
