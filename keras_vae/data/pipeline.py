"""Data for keras_vae: tfds and array-file loading, validation, binarization and pipelines.

Images are always float32 arrays of shape [N, H, W, C] (or [N, D] for flat array files) with
values in [0, 1] for the built-in data sets:

* `binarized_mnist`: the static binarization of Larochelle & Murray, 28x28x1 in {0, 1};
  splits train (50,000) / validation (10,000) / test (10,000).
* `mnist`: 28x28x1 grey levels / 255; splits train / test.
* `frey_face`: 28x20x1 grey levels / 255; splits train (1,572) / test (393), see
  `keras_vae.datasets.frey_face`.
* `synthetic_dsprites` (64x64x1, 737,280 images) and `synthetic_dsprites/small` (32x32x1,
  2,304): dSprites' factor grid in {0, 1}, generated offline by our tfds builder
  (`keras_vae.data.builders.synthetic_dsprites`) into the data directory on first use; one
  split, train (as dSprites), which is also where a run evaluates (`--eval-split train`).

Array files (`.npz` with key `x` and optional `y`, or `.npy`) are read with
`allow_pickle=False`. uint8 data is read as grey levels 0..255 and scaled to [0, 1]; any other
numeric dtype is cast to float32 without scaling (`range_warning` says when that looks wrong).
`.npy` files and uncompressed `.npz` files (`np.savez`) are memory-mapped; a compressed `.npz`
(`np.savez_compressed`) cannot be and is decompressed into memory.

Two ways to feed training (`as_dataset` takes either):

* in memory: a float32 NumPy array and `make_dataset` (a full random permutation per epoch);
* streamed: an `ImageStream` (`open_stream` for tfds data sets, `open_array` for array files
  larger than `IN_MEMORY_BYTES`), read batch by batch through tf.data, so that memory does not
  grow with the data set. A tfds split with at most `shuffle_buffer` examples is cached as
  stored (uint8) and fully permuted every epoch; a larger one is read from disk every epoch
  through a shuffle buffer of `shuffle_buffer` examples, a weaker shuffle than a permutation:
  the i-th example of an epoch is drawn from the first i + `shuffle_buffer` examples of the
  files, so an example never comes more than `shuffle_buffer` places ahead of its place there.
  (Shuffling raw uint8 images keeps the buffer 4x smaller than float32 would: 60,000 MNIST
  digits are 47 MB.)

An evaluation reads either once, in order, with `batches`: NumPy batches sliced from an array
or read from a stream in its stored order (nothing cached), so that it never holds the split.

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

    stream = open_stream("binarized_mnist", "train[:90%]", data_dir="../shared/tensorflow_datasets")
    ds = stream.dataset(batch_size=100, seed=0, likelihood="bernoulli")
    ```
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import urllib.parse
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from keras_vae import registry
from keras_vae.data.builders import frey_face as _frey_face  # importing registers `frey_face`
from keras_vae.data.builders import synthetic_dsprites as _sprites  # ... and synthetic_dsprites

KNOWN_DATASETS = (
    "binarized_mnist", "mnist", "fashion_mnist", "cifar10", "frey_face", "synthetic_dsprites",
    "synthetic_dsprites/small",
)  # fmt: skip
ARRAY_EXTENSIONS = (".npz", ".npy")
_READ_BATCH = 4096  # examples per tfds read batch when loading a whole split
HEAD_SIZE = 1000  # examples a stream reads up front (checks, pictures, pseudo-inputs) ...
HEAD_BYTES = 32 << 20  # ... at most this many bytes of them as float32
SHUFFLE_BUFFER = 60_000  # examples; MNIST-sized splits are cached and fully permuted
SORTED_SHARDS = 128  # files keras_vae writes a large sorted data set in, all read at once
IN_MEMORY_BYTES = 1 << 30  # array files whose float32 images need more are streamed
CHECK_BYTES = 16 << 20  # float32 bytes of stored images that a check of values reads at once
# In-memory arrays larger than this skip tf.data's default optimizations: their graph rewrite
# serializes the pipeline, the array in it as a constant (a copy of it); smaller ones keep them
# (~2% less CPU per training step of the 784-500-20 VAE at batch 100).
REWRITE_BYTES = 64 << 20
DEFAULT_VALIDATION_SPLIT = 0.1  # fraction of an array file held out when no eval file is given


def _not_the_ordering_note(record: logging.LogRecord) -> bool:
    """False for tfds' warning that a sorted data set is not read in order: `open_stream`
    interleaves the files of one on purpose (`DatasetSpec.sorted`)."""
    return "examples will not be read in order" not in record.getMessage()


logging.getLogger("absl").addFilter(_not_the_ordering_note)


class DataValidationError(ValueError):
    """Raised for data that cannot be used as given; the one-line message says how to fix it."""


class DatasetNotFoundError(DataValidationError):
    """Raised when a tfds data set is neither prepared in `data_dir` nor can be prepared."""


class DataRangeWarning(UserWarning):
    """The data's values look wrong for the way they are scaled (see `range_warning`)."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What keras_vae knows about a built-in data set.

    Attributes:
        name: tfds name.
        image_shape: (H, W, C) of one image.
        likelihood: The natural decoder likelihood, "bernoulli", "gaussian" or "logistic".
        splits: Available split names.
        scale: Factor from stored uint8 pixels to [0, 1] (1 for binarized data).
        raw_files: File names that, placed in `manual_dir`, let tfds prepare it offline;
            none for a data set that its builder generates (nothing to download).
        source_url: Where tfds downloads the raw files from ("" when generated).
        sorted: Whether the examples are stored in a sorted order (dSprites' factor order):
            keras_vae prepares such a data set in `SORTED_SHARDS` files and a stream reads
            them all at once, so that its shuffle buffer holds examples from all over the
            split (see `open_stream`).
    """

    name: str
    image_shape: tuple[int, int, int]
    likelihood: str
    splits: tuple[str, ...]
    scale: float
    raw_files: tuple[str, ...]
    source_url: str
    sorted: bool = False


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
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
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
        source_url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        image_shape=(32, 32, 3),
        likelihood="logistic",
        splits=("train", "test"),
        scale=1.0 / 255.0,
        raw_files=("cifar-10-binary.tar.gz",),
        source_url="https://www.cs.toronto.edu/~kriz/",
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
    **{
        name: DatasetSpec(
            name=f"synthetic_dsprites/{config.name}",
            image_shape=(config.image_size, config.image_size, 1),
            likelihood="bernoulli",
            splits=("train",),
            scale=1.0,
            raw_files=(),
            source_url="",
            sorted=True,
        )
        for name, config in (
            ("synthetic_dsprites", _sprites.FULL),
            ("synthetic_dsprites/small", _sprites.SMALL),
        )
    },
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
    _check_split(spec, split)
    # `limit` beyond the split's size keeps the whole split (tfds slicing would refuse it)
    tfds_split = f"{split}[:{limit}]" if limit is not None and "[" not in split else split
    if limit is not None and "[" not in split:
        try:
            size = tfds.builder(spec.name, data_dir=data_dir).info.splits[split].num_examples
            tfds_split = split if limit >= size else tfds_split
        except Exception:  # noqa: BLE001 - not prepared yet: the load below reports it
            pass
    # Not batch_size=-1: under tfds.testing.mock_data it aborts the process (std::length_error).
    data = _read_tfds(spec, tfds_split, data_dir, manual_dir, download, batch_size=_READ_BATCH)
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


def _check_split(spec: DatasetSpec, split: str) -> None:
    if split.split("[", 1)[0] not in spec.splits:
        raise DataValidationError(
            f"Dataset '{spec.name}' has no split '{split}'. Available splits: "
            f"{', '.join(spec.splits)}."
        )


def _read_tfds(
    spec: DatasetSpec,
    split: str,
    data_dir: str | None,
    manual_dir: str | None,
    download: bool,
    **kwargs,
) -> tf.data.Dataset:
    """`tfds.load(spec.name, split=split, **kwargs)`, preparing the data set first when it is
    missing, allowed to and able to (raw files in `manual_dir`, or a reachable host)."""
    kwargs = {"split": split, "data_dir": data_dir, **kwargs}
    try:
        # Fast path, never touches the network; AssertionError when not prepared.
        return tfds.load(spec.name, download=False, **kwargs)
    except AssertionError as err:
        if not download:
            raise _not_found(spec, split, data_dir, "download=False") from err
        if (reason := _offline_reason(spec, manual_dir)) is not None:
            raise _not_found(spec, split, data_dir, reason) from err
        prepare = {}
        if manual_dir is not None or spec.sorted:
            config = tfds.download.DownloadConfig(
                manual_dir=None if manual_dir is None else os.fspath(manual_dir),
                num_shards=SORTED_SHARDS if spec.sorted else None,
            )
            prepare = {"download_config": config}
        try:
            return tfds.load(
                spec.name, download=True, download_and_prepare_kwargs=prepare, **kwargs
            )
        except (OSError, AssertionError, ValueError, NonMatchingChecksumError) as err2:
            reason = f"preparing it failed with {type(err2).__name__}: {_one_line(err2)}"
            raise _not_found(spec, split, data_dir, reason) from err2


def _offline_reason(spec: DatasetSpec, manual_dir: str | None) -> str | None:
    """Returns why preparing `spec` would need an unreachable network, or None if it may work.

    None when all raw files are in `manual_dir`, a proxy is configured (the host cannot be
    probed directly) or the source host accepts a TCP connection within 5 s.
    """
    if not spec.raw_files:  # generated by its builder: nothing to download
        return None
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
    fix = (
        f"give --manual-dir with the raw files ({', '.join(spec.raw_files)})"
        if spec.raw_files
        else "let keras_vae generate it there (download=True)"
    )
    return DatasetNotFoundError(
        f"Dataset '{spec.name}' split '{split}' not found in data_dir '{data_dir}' "
        f"({reason}). Set TFDS_DATA_DIR or --data-dir to a directory with the prepared "
        f"dataset, or {fix}."
    )


def _one_line(error: BaseException, max_chars: int = 300) -> str:
    """`str(error)` on one line, cut to `max_chars`."""
    text = " ".join(str(error).split())
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def _load_array_file(path: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads `x` (and `y`) from a `.npz` or `.npy` file into float32 memory, never unpickling."""
    x, y = open_array_file(path)
    if limit is not None:
        x, y = x[:limit], (None if y is None else y[:limit])
    return _to_float_images(x, str(path)), y


_SAFETY = (
    "holds object arrays, which need pickle and are refused for safety; save plain numeric "
    "arrays, e.g. np.save(path, images.astype('float32'))."
)


def open_array_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Opens the images `x` (and labels `y`) of an array file as stored, without copying.

    `.npy` files and the members of uncompressed `.npz` files (`np.savez`) are memory-mapped
    read-only: the pages are read from disk when used and can be dropped again by the
    system. A compressed `.npz` (`np.savez_compressed`) cannot be memory-mapped and is
    decompressed into memory. Nothing is ever unpickled.

    Args:
        path: A `.npy` file, or a `.npz` file with key `x` (and optional `y`).

    Returns:
        `(x, y)`: `x` in its stored dtype and shape (an `np.memmap` where possible), `y` an
        int64 array of one label per image, or None.

    Raises:
        DataValidationError: For an unreadable file, object arrays, a missing `x`, or a `y`
            that does not match `x`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataValidationError(f"Array file not found: '{path}'.")
    try:
        if path.suffix.lower() == ".npz":
            x, y = _open_npz(path)
        else:
            x, y = np.load(path, mmap_mode="r", allow_pickle=False), None
    except ValueError as err:
        if "pickle" not in str(err) and "Python objects" not in str(err):
            raise DataValidationError(f"Cannot read '{path}': {_one_line(err)}") from err
        raise DataValidationError(f"'{path}' {_SAFETY}") from err
    except (OSError, zipfile.BadZipFile) as err:
        raise DataValidationError(f"Cannot read '{path}': {_one_line(err)}") from err
    if x.dtype.hasobject:
        raise DataValidationError(f"'{path}' {_SAFETY}")
    if x.ndim >= 2 and (x.shape[0] == 0 or min(x.shape[1:]) == 0):  # (rank: checked later)
        raise DataValidationError(
            f"'{path}' holds no images: x has shape {x.shape}; save N >= 1 images as [N, H, W], "
            "[N, H, W, C] or flat [N, D]."
        )
    if y is not None:
        y = np.asarray(y)
        if y.shape[:1] != x.shape[:1]:
            raise DataValidationError(
                f"'{path}': y has {y.shape[0] if y.ndim else 0} entries but x has "
                f"{x.shape[0]} images; save one label per image."
            )
        y = y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y
    return x, y


def _open_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as archive:
        if "x" not in archive.files:
            raise DataValidationError(
                f"'{path}' has no array 'x' (found: {archive.files}); save images "
                "with np.savez(path, x=images) or np.savez(path, x=images, y=labels)."
            )
        y = archive["y"] if "y" in archive.files else None
        x = _memmap_npz_member(path, "x.npy")
        return (archive["x"] if x is None else x), y


def _memmap_npz_member(path: Path, member: str) -> np.ndarray | None:
    """Memory-maps an uncompressed (stored) `.npy` member of a zip archive; None when it is
    compressed or not a plain array. The member's bytes start after its local file header:
    30 fixed bytes, then its file name and extra field, whose lengths the header gives."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        name_length = int.from_bytes(local[26:28], "little")
        extra_length = int.from_bytes(local[28:30], "little")
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        readers = {(1, 0): np.lib.format.read_array_header_1_0}
        readers[2, 0] = np.lib.format.read_array_header_2_0
        if version not in readers:
            return None
        shape, fortran, dtype = readers[version](handle)
        offset = handle.tell()
    if dtype.hasobject:
        raise DataValidationError(f"'{path}' {_SAFETY}")
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


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
        for what, test in (("NaN", np.isnan), ("Inf", np.isinf)):
            count, first = _count_where(test, x)
            if count:
                raise DataValidationError(
                    f"{name} has {count} {what} value(s), the first at index {first} "
                    f"(image {first[0]}); remove or repair those images."
                )
    problem = registry.get("likelihood", likelihood).check_values(x)
    if problem is not None:
        raise DataValidationError(f"{name} {problem}")


def _count_where(test, x: np.ndarray) -> tuple[int, tuple[int, ...] | None]:
    """How many values of `x` pass `test` (np.isnan, say) and the index of the first, one
    chunk at a time (`_chunks`): the boolean mask of a whole large array is never made."""
    count, first = 0, None
    for start, chunk in _chunks(x):
        mask = test(chunk)
        found = int(np.count_nonzero(mask))
        if found and first is None:
            index = tuple(int(i) for i in np.argwhere(mask)[0])
            first = (start + index[0], *index[1:])
        count += found
    return count, first


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


def _binarize_batch(batch, seed):
    """`binarize_tf` of a batch's images; its labels (if any) pass unchanged."""
    if isinstance(batch, tuple):
        return (binarize_tf(batch[0], seed), *batch[1:])
    return binarize_tf(batch, seed)


def _map_images(ds: tf.data.Dataset, fn, **options) -> tf.data.Dataset:
    """`ds.map(fn)` on the images of batches that are images or (images, labels), traced
    without AutoGraph (`fn` is straight-line TensorFlow; converting it took 0.3 to 0.6 s of
    the `keras-vae train` start-up)."""

    def images(x, *rest):
        return (fn(x), *rest) if rest else fn(x)

    return ds.map(tf.autograph.experimental.do_not_convert(images), **options)


def _check_labels(labels, x, name: str = "the data") -> np.ndarray:
    """Labels as int64 `[N]` or float32 `[N, C]`, one per image, else a one-line error that
    names the file: class labels must be whole numbers (a float 1.5 is no class)."""
    labels = np.asarray(labels)
    integer = np.issubdtype(labels.dtype, np.integer)
    numeric = integer or np.issubdtype(labels.dtype, np.floating) or labels.dtype == bool
    shape_ok = (
        len(labels) == len(x) and labels.ndim in (1, 2) and not (labels.ndim == 2 and integer)
    )
    if not numeric or not shape_ok:
        raise DataValidationError(
            f"The labels y of {name} must be one int label [N] or one float vector [N, C] per "
            f"image ({len(x)}). Received: shape={labels.shape}, dtype={labels.dtype}"
        )
    if not np.all(np.isfinite(labels.astype(np.float64))):
        raise DataValidationError(f"The labels y of {name} hold NaN or inf; save finite labels.")
    if labels.ndim == 1 and not integer:
        whole = np.round(labels) == labels
        if not np.all(whole):
            bad = int(np.argmin(whole))
            raise DataValidationError(
                f"The labels y of {name} are not whole numbers ({labels[bad]:g} at index {bad}); "
                "save int class labels 0 .. C - 1 (or one vector [N, C] per image)."
            )
    return labels.astype(np.int64 if labels.ndim == 1 else np.float32)


def condition_dim(labels: np.ndarray) -> int:
    """C of the labels: the number of classes (largest int label + 1) or the vectors' size."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return int(labels.shape[1])
    if len(labels) == 0 or labels.min() < 0:
        raise DataValidationError("Class labels must be ints >= 0; save labels 0 .. C - 1.")
    return int(labels.max()) + 1


def make_dataset(
    x: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool = True,
    seed: int | None = None,
    dynamic_binarization: bool = False,
    repeat: bool = False,
    drop_remainder: bool = False,
    labels: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Builds the input pipeline for `keras.Model.fit`: float32 image batches, and with
    `labels` `(images, labels)` batches (a conditional VAE's x and y, shuffled together).

    Args:
        x: Images [N, ...] (float, in [0, 1] if `dynamic_binarization`).
        batch_size: Images per batch.
        shuffle: Reshuffle the images every epoch (every new iteration of the dataset).
        seed: Seed for shuffling and binarization; a fixed seed reproduces the whole sequence
            of epochs, while each epoch still differs from the previous one.
        dynamic_binarization: Redraw binary images ~ Bernoulli(x) for every batch, every epoch.
        repeat: Repeat forever (then give `steps_per_epoch` to `fit`).
        drop_remainder: Drop the last, smaller batch.
        labels: One label (int) or condition vector (float) per image, or None.

    Returns:
        A `tf.data.Dataset` of float32 tensors of shape [batch, ...] (or of pairs).

    Raises:
        DataValidationError: For a bad `batch_size` or unusable `x`.
    """
    _check_batch_size(batch_size)
    x = np.asarray(x)
    likelihood = "bernoulli" if dynamic_binarization else "gaussian"
    validate_images(x, likelihood=likelihood, name="x")
    x = x.astype(np.float32, copy=False)
    # One copy of x in TensorFlow, as a single element, gathered by batches of (permuted)
    # indices: no shuffle buffer of the images (a copy of them all, element by element).
    whole = tf.data.Dataset.from_tensors(x if labels is None else (x, _check_labels(labels, x)))
    indices = epoch_indices(len(x), shuffle=shuffle, seed=seed, repeat=repeat)
    indices = indices.batch(int(batch_size), drop_remainder=drop_remainder)
    ds = tf.data.Dataset.zip(whole.repeat(), indices).map(
        lambda arrays, i: tf.nest.map_structure(lambda a: tf.gather(a, i), arrays)
    )
    if x.nbytes > REWRITE_BYTES:  # tf.data's graph rewrite would copy x: skip it
        options = tf.data.Options()
        options.experimental_optimization.apply_default_optimizations = False
        ds = ds.with_options(options)
    return _finish(ds, seed, dynamic_binarization)


# --- streamed splits -----------------------------------------------------------------------


class ImageStream:
    """A split read batch by batch through tf.data: memory does not grow with its size.

    Subclasses say where raw batches come from (`_raw_batches`); this class turns them into
    float32 images, checks them and binarizes them. `len(stream)` and `stream.shape` behave
    like those of the array the split would be in memory; `head` holds its first examples.

    Attributes:
        name: What to call the split in messages.
        num_examples: Examples in the split.
        image_shape: Shape of one image.
        head: float32 array of the first `head_size(image_shape)` examples (`HEAD_SIZE`, or
            fewer for large images).
        scale: Factor from stored values to the images' values (1/255 for uint8 grey levels).
        checked: Whether every example was already checked (else every batch is checked in
            the pipeline; see `dataset`).
        head_labels: The labels of `head` when the stream gives (images, labels) batches (a
            conditional VAE's data), else None.
        condition_dim: C of the labels (classes, or the size of float label vectors), or None.
        likelihood: The likelihood the split was opened for (`keras_vae.runs.splits.open_split`
            checks the first examples for it): `batches` checks the others for it, unless
            `checked`; None: no checks.
    """

    likelihood: str | None = None

    def __init__(
        self, name: str, num_examples: int, head: np.ndarray, scale: float, checked,
        head_labels: np.ndarray | None = None, condition_dim: int | None = None,
    ):  # fmt: skip
        self.name = name
        self.num_examples = int(num_examples)
        self.head = head
        self.image_shape = tuple(head.shape[1:])
        self.scale = float(scale)
        self.checked = checked
        self.head_labels = head_labels
        self.condition_dim = condition_dim

    @property
    def labeled(self) -> bool:
        """Whether the batches are (images, labels) pairs."""
        return self.head_labels is not None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.num_examples, *self.image_shape)

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, shape={self.shape})"

    def _raw_batches(self, batch_size, shuffle, seed, repeat, drop_remainder) -> tf.data.Dataset:
        raise NotImplementedError

    def _in_order(self, batch_size: int) -> tf.data.Dataset:
        """Raw batches of the split once, in its stored order, nothing cached (`batches`)."""
        raise NotImplementedError

    def _float_batches(self, ds: tf.data.Dataset, likelihood: str | None) -> tf.data.Dataset:
        """Raw batches as float32 images (times `scale`), checked for `likelihood` unless the
        whole split was checked when it was opened."""
        scale = self.scale
        ds = _map_images(
            ds, lambda b: tf.cast(b, tf.float32) * scale, num_parallel_calls=tf.data.AUTOTUNE
        )
        if likelihood is not None and not self.checked:
            ds = _map_images(ds, _batch_checker(likelihood, self.name, self.image_shape))
        return ds

    def dataset(
        self,
        *,
        batch_size: int,
        shuffle: bool = True,
        seed: int | None = None,
        dynamic_binarization: bool = False,
        repeat: bool = False,
        drop_remainder: bool = False,
        likelihood: str | None = None,
    ) -> tf.data.Dataset:
        """The pipeline for `keras.Model.fit`, like `make_dataset`'s, read from the source.

        Args:
            batch_size, shuffle, seed, dynamic_binarization, repeat, drop_remainder: As for
                `make_dataset`.
            likelihood: Check every batch for this likelihood (NaN, Inf, value range; with
                `dynamic_binarization`, for [0, 1]) unless the whole split was checked when it
                was opened; a bad batch stops the pipeline with `DataCheckError`'s message.

        Returns:
            A `tf.data.Dataset` of float32 tensors of shape [batch, *image_shape] (of pairs
            (images, labels) for a `labeled` stream).
        """
        _check_batch_size(batch_size)
        ds = self._raw_batches(int(batch_size), shuffle, seed, repeat, drop_remainder)
        ds = self._float_batches(ds, "bernoulli" if dynamic_binarization else likelihood)
        return _finish(ds, seed, dynamic_binarization)

    def batches(self, batch_size: int):
        """The split once, in its stored order (that of `load_images`), as NumPy
        `(images, labels)` batches of `batch_size`, the last one smaller: an evaluation's one
        pass. Nothing is cached and a sorted split is read file after file, so memory holds a
        few batches whatever the split's size. Images are float32; labels are None unless the
        stream is `labeled`. Unless `checked`, every batch is checked for `likelihood`: a bad
        one raises `DataCheckError` with the checks' one-line message.
        """
        _check_batch_size(batch_size)
        ds = self._float_batches(self._in_order(int(batch_size)), self.likelihood)
        labeled = self.labeled
        try:
            for batch in ds.prefetch(1).as_numpy_iterator():
                yield batch if labeled else (batch, None)
        except tf.errors.InvalidArgumentError as error:
            message = data_check_message(error)
            if message is None:
                raise
            raise DataCheckError(message) from None


class DataCheckError(DataValidationError):
    """A batch read while training failed the data checks; the message says how to fix it."""

    MARKER = "keras_vae data check: "


def _batch_checker(likelihood: str, name: str, image_shape: tuple[int, ...]):
    """A tf.data map function that checks each batch with `validate_images` (in NumPy) and
    fails the pipeline with an InvalidArgumentError whose message starts with
    `DataCheckError.MARKER` (not a Python exception: tf.data would print its traceback)."""

    def problem(batch: np.ndarray) -> bytes:
        try:
            validate_images(batch, likelihood=likelihood, name=f"a batch of {name}")
        except DataValidationError as err:
            return str(err).replace("(image ", "(image of the batch ").encode()
        return b""

    def check(batch: tf.Tensor) -> tf.Tensor:
        message = tf.numpy_function(problem, [batch], tf.string, stateful=False)
        ok = tf.equal(tf.strings.length(message), 0)
        with tf.control_dependencies(
            [tf.debugging.Assert(ok, [DataCheckError.MARKER, message], summarize=1)]
        ):
            return tf.ensure_shape(tf.identity(batch), [None, *image_shape])

    return check


def data_check_message(error: BaseException) -> str | None:
    """The one-line message of a failed in-pipeline data check (`DataCheckError`) inside a
    TensorFlow error, or None when `error` is something else."""
    text = str(getattr(error, "message", error))
    if DataCheckError.MARKER not in text:
        return None
    return text.split(DataCheckError.MARKER, 1)[1].strip().splitlines()[0].strip("[]' ")


class TfdsStream(ImageStream):
    """A tfds split streamed from its files (see `open_stream`)."""

    def __init__(
        self, read, num_examples, head, scale, name, shuffle_buffer: int, read_in_order=None,
        **labels,
    ):  # fmt: skip
        super().__init__(name, num_examples, head, scale, checked=False, **labels)
        self._read = read
        self._read_in_order = read_in_order or read
        self.shuffle_buffer = int(shuffle_buffer)

    @property
    def cached(self) -> bool:
        """Whether the split is small enough to cache as stored and permute fully."""
        return self.num_examples <= self.shuffle_buffer

    def _examples(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        labeled = self.labeled
        return ds.map(
            lambda e: (e["image"], e["label"]) if labeled else e["image"],
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def _in_order(self, batch_size):
        return self._examples(self._read_in_order()).batch(batch_size)

    def _raw_batches(self, batch_size, shuffle, seed, repeat, drop_remainder):
        ds = self._examples(self._read())
        if self.cached:  # at most shuffle_buffer examples, as stored (uint8)
            ds = ds.cache()
        if shuffle:
            buffer = min(self.num_examples, self.shuffle_buffer)
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        return ds.batch(batch_size, drop_remainder=drop_remainder)


class ArrayStream(ImageStream):
    """An array (e.g. a memory-mapped file) read by batches of indices (see `open_array`).

    Shuffling permutes the indices only (8 bytes per example), so every epoch is a full
    random permutation however large the array is. With `labels` (one int label or float
    vector per example, in memory) the batches are (images, labels) pairs.
    """

    def __init__(
        self, array: np.ndarray, name: str, checked: bool = True, labels: np.ndarray | None = None
    ):  # fmt: skip
        scale = 1.0 / 255.0 if array.dtype == np.uint8 else 1.0
        head = _to_float_images(np.asarray(array[: head_size(array.shape[1:])]), name)
        extra = {}
        if labels is not None:
            labels = _check_labels(labels, array, name)
            extra = {"head_labels": labels[: len(head)], "condition_dim": condition_dim(labels)}
        super().__init__(name, len(array), head, scale, checked, **extra)
        self.array = array
        self.labels = labels

    def _raw_batches(self, batch_size, shuffle, seed, repeat, drop_remainder):
        array, shape, labels = self.array, self.image_shape, self.labels
        dtype = np.float32 if array.dtype == np.float64 else array.dtype

        def gather(indices: np.ndarray) -> np.ndarray:
            batch = np.asarray(array[indices], dtype=dtype)
            return batch.reshape(len(indices), *shape)

        ds = epoch_indices(self.num_examples, shuffle=shuffle, seed=seed, repeat=repeat)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)

        def images(i):
            batch = tf.numpy_function(gather, [i], tf.as_dtype(dtype), stateful=False)
            return tf.ensure_shape(batch, [None, *shape])

        if labels is None:
            return ds.map(images)
        return ds.map(lambda i: (images(i), tf.gather(labels, i)))

    def _in_order(self, batch_size):
        return self._raw_batches(batch_size, False, None, False, False)

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The whole array as float32 images in memory, and the labels (or None)."""
        return _to_float_images(np.asarray(self.array), self.name), self.labels


def epoch_indices(count: int, *, shuffle: bool, seed: int | None, repeat: bool) -> tf.data.Dataset:
    """The int64 indices 0 .. count - 1, one epoch (forever with `repeat`), each epoch in a new
    random order when shuffling, reproducible from `seed`.

    An epoch's order is one permutation of `count` indices (8 bytes each, made when the epoch
    starts by `tf.random.experimental.stateless_shuffle`) from a seed pair that
    `tf.data.Dataset.random` draws anew every epoch and every new iteration. (Not
    `Dataset.range(count).shuffle(count)`: a shuffle buffer holds every index as a tensor,
    about 170 bytes each, 107 MiB for 630,000 examples, and fills before the first batch.)
    """
    if not shuffle:
        ds = tf.data.Dataset.range(count)
        return ds.repeat() if repeat else ds
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    if not repeat:
        seeds = seeds.take(1)

    def permutation(pair: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), pair)
        return tf.data.Dataset.from_tensor_slices(order)

    ds = seeds.flat_map(permutation)  # (flat_map does not know how many: say it)
    size = tf.data.INFINITE_CARDINALITY if repeat else count
    return ds.apply(tf.data.experimental.assert_cardinality(size))


def head_size(image_shape) -> int:
    """Examples a stream keeps up front: `HEAD_SIZE`, fewer for images so large that they
    would need more than `HEAD_BYTES` as float32 (at least one)."""
    return max(1, min(HEAD_SIZE, HEAD_BYTES // (4 * math.prod(image_shape))))


def open_stream(
    name: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    download: bool = True,
    limit: int | None = None,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    labels: bool = False,
) -> TfdsStream:
    """Opens a tfds split for streaming: nothing but its first examples (`head_size`) is read.

    The files are read in their stored order (`shuffle_files=False`) and without tfds'
    automatic in-memory cache, so a seed reproduces every epoch. The number of examples comes
    from tfds' split information (slices such as `train[:90%]` included).

    A split stored sorted (`DatasetSpec.sorted`: dSprites' factor order) that is too large to
    cache is read from all its files at once (keras_vae writes such a data set in
    `SORTED_SHARDS` consecutive parts), one example from each in turn, so that the shuffle
    buffer holds examples from every part of the split instead of the next `shuffle_buffer`
    ones (for the 737,280 sprites: every shape and scale at once, where the first 60,000 are
    squares of the two smallest scales).

    Args:
        name: A tfds name from `KNOWN_DATASETS`.
        split: A split name or a tfds slice (`train[:90%]`, `test[1000:]`).
        data_dir, manual_dir, download: As for `load_images`.
        limit: Keep only the first `limit` examples (all when the split has fewer).
        shuffle_buffer: Splits with at most this many examples are cached as stored and
            permuted fully every epoch; larger ones are shuffled through a buffer this size.
        labels: Stream (images, labels) pairs (a `DataValidationError` when the data set has
            no labels); `condition_dim` is then its number of classes.

    Returns:
        A `TfdsStream`; its `dataset(...)` gives the batches.

    Raises:
        DataValidationError, DatasetNotFoundError: As for `load_images`.
    """
    if name not in DATASET_SPECS:
        raise DataValidationError(
            f"Unknown dataset '{name}': streaming reads the tfds data sets "
            f"{', '.join(KNOWN_DATASETS)}; open array files with open_array."
        )
    spec = DATASET_SPECS[name]
    _check_split(spec, split)
    options = {"shuffle_files": False, "read_config": tfds.ReadConfig(try_autocache=False)}
    first = _read_tfds(spec, split, data_dir, manual_dir, download, **options)
    num_examples = int(first.cardinality())
    if num_examples < 0:  # unknown: count (only for sources without split information)
        num_examples = int(first.reduce(np.int64(0), lambda n, _: n + 1))
    if limit is not None:
        num_examples = min(num_examples, limit)
    if num_examples == 0:
        raise DataValidationError(f"Dataset '{name}' split '{split}' is empty.")
    count = min(num_examples, head_size(first.element_spec["image"].shape))
    head_batches = list(tfds.as_numpy(first.take(count).batch(64)))
    head = np.concatenate([b["image"] for b in head_batches])
    head = head.astype(np.float32) * np.float32(spec.scale)
    extra = {}
    if labels:
        if "label" not in first.element_spec:
            raise no_labels_error(name)
        feature = tfds.builder(name, data_dir=data_dir).info.features["label"]
        head_labels = np.concatenate([b["label"] for b in head_batches]).astype(np.int64)
        extra = {"head_labels": head_labels, "condition_dim": int(feature.num_classes)}

    part, reading = split, options
    if spec.sorted and num_examples > shuffle_buffer:  # every file at once, in turn
        config = tfds.ReadConfig(
            try_autocache=False, interleave_cycle_length=SORTED_SHARDS,
            interleave_block_length=1, enable_ordering_guard=False,  # not in order: on purpose
        )  # fmt: skip
        reading = {**options, "read_config": config}
        if limit is not None and "[" not in split:  # the first examples of the split
            part = f"{split}[:{num_examples}]"
        _warn_about_few_files(spec, split, data_dir)

    def read() -> tf.data.Dataset:  # `limit`: the first examples, as `split[:limit]` would
        ds = _read_tfds(spec, part, data_dir, manual_dir, False, **reading)
        return ds.take(num_examples)

    def read_in_order() -> tf.data.Dataset:  # stored order, as `load_images` reads it
        return _read_tfds(spec, split, data_dir, manual_dir, False, **options).take(num_examples)

    return TfdsStream(
        read, num_examples, head, spec.scale, f"{name} {split}", shuffle_buffer,
        read_in_order=None if reading is options else read_in_order, **extra,
    )  # fmt: skip


def _warn_about_few_files(spec: DatasetSpec, split: str, data_dir: str | None) -> None:
    """A warning when a sorted data set was prepared in fewer than `SORTED_SHARDS` files
    (by tfds itself, not by keras_vae): the stream then mixes only that many parts."""
    info = tfds.builder(spec.name, data_dir=data_dir).info.splits[split.split("[", 1)[0]]
    if info.num_shards < SORTED_SHARDS:
        warnings.warn(
            f"{spec.name} {split} is stored sorted in {info.num_shards} file(s): streamed, its "
            f"shuffle buffer holds examples of only {info.num_shards} part(s) of it at a time. "
            f"Delete {info.filepaths[0].parent if info.filepaths else 'it'} and let keras_vae "
            f"prepare it again in {SORTED_SHARDS} parts.",
            stacklevel=3,
        )


def no_labels_error(name: str) -> DataValidationError:
    """The one-line error for a conditional VAE's data without labels."""
    return DataValidationError(
        f"{name} has no labels, which a conditional VAE needs (y with every image): use a "
        "labelled data set (mnist), an .npz with x and y, or drop --conditional; offline "
        "labelled binarized MNIST: python -m keras_vae.datasets.labeled_binarized_mnist."
    )


def open_array(
    path: str | os.PathLike,
    part: str = "all",
    *,
    validation_split: float | None = None,
    limit: int | None = None,
    likelihood: str | None = None,
    max_in_memory_bytes: int = IN_MEMORY_BYTES,
    labels: bool = False,
) -> np.ndarray | ArrayStream:
    """One part of an array file: in memory when the file is small, else streamed from the map.

    The held-out part follows Keras' `fit(validation_split=...)`: the last
    `validation_split` of the file, taken before any shuffling. (Shuffle a file that is
    ordered, e.g. by class, before saving it.)

    Args:
        path: A `.npz` (key `x`) or `.npy` file.
        part: "train" (the file without its last `validation_split`), "validation" (that
            last part) or "all".
        validation_split: Fraction in (0, 1) held out at the end of the file; None: none.
        limit: Keep only the first `limit` examples of the part.
        likelihood: If given, check the whole part for it (`validate_images`, in chunks).
        max_in_memory_bytes: Every part of a file whose float32 images need more bytes is
            streamed (the held-out part too: as an array it would cost its float32 size
            several times over, in NumPy and in tf.data).
        labels: Give the file's `y` with the images (a `DataValidationError` when it has
            none): always an `ArrayStream` of (images, labels) pairs, over the stored array.

    Returns:
        A float32 array, or an `ArrayStream` over the mapped file.

    Raises:
        DataValidationError: For a bad file, part or split, or data that fail the checks.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataValidationError(f"Array file not found: '{path}'.")
    x, y = open_array_file(path)
    streamed = math.prod(x.shape) * 4 > max_in_memory_bytes
    name = f"{path.name} ({part})" if part != "all" else path.name
    x = split_array(x, part, validation_split, name=path.name)
    if labels and y is None:
        raise no_labels_error(f"{path.name} (an array file without y)")
    y = split_array(y, part, validation_split, name=path.name) if labels else None
    if limit is not None:
        x, y = x[:limit], (None if y is None else y[:limit])
    if x.ndim not in (2, 3, 4) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        _to_float_images(x[:1], name)  # raises the shape/dtype error
    if likelihood is not None:
        validate_array(x, likelihood=likelihood, name=name)
    if labels:
        stored = x if x.ndim != 3 else x[..., np.newaxis]
        return ArrayStream(stored, name, checked=bool(likelihood), labels=y)
    if not streamed:
        return _to_float_images(np.asarray(x), name)
    return ArrayStream(x if x.ndim != 3 else x[..., np.newaxis], name, checked=bool(likelihood))


def split_array(x: np.ndarray, part: str, validation_split: float | None, name: str = "data"):
    """`x` without its last `validation_split` ("train"), that last part ("validation"), or
    all of it ("all"); views, never copies. The split point is floor(N (1 - fraction))."""
    if part == "all":
        return x
    if part not in ("train", "validation"):
        raise DataValidationError(
            f"part must be 'train', 'validation' or 'all'. Received: part={part!r}"
        )
    if not validation_split:
        if part == "validation":
            raise DataValidationError(
                f"{name} has no validation part: give a validation_split in (0, 1)."
            )
        return x
    split_at = math.floor(len(x) * (1.0 - validation_split))
    if not 0 < split_at < len(x):
        raise DataValidationError(
            f"validation_split={validation_split} of {name}'s {len(x)} examples leaves "
            f"{split_at} for training and {len(x) - split_at} held out; both need at least "
            "one: choose another fraction or give an eval file."
        )
    return x[:split_at] if part == "train" else x[split_at:]


def _chunks(x: np.ndarray):
    """`(start, x[start : start + rows])` over `x`, `rows` images needing at most
    `CHECK_BYTES` as float32 (at least one): what the checks hold at once."""
    rows = max(1, CHECK_BYTES // (4 * math.prod(x.shape[1:])))
    for start in range(0, len(x), rows):
        yield start, x[start : start + rows]


def validate_array(x: np.ndarray, *, likelihood: str, name: str = "data") -> None:
    """`validate_images` on stored images (any dtype, e.g. memory-mapped), chunk by chunk so
    that memory stays bounded; image indices in errors count from the start of `x`."""
    if len(x) == 0:
        raise DataValidationError(f"{name} is empty (shape={x.shape}); pass at least one image.")
    for start, chunk in _chunks(x):
        try:
            validate_images(_to_float_images(np.asarray(chunk), name), likelihood=likelihood,
                            name=name)  # fmt: skip
        except DataValidationError as err:
            if start == 0:
                raise
            message = str(err).replace("(image ", f"(image {start} + ")
            raise DataValidationError(message) from err


def value_range(images: np.ndarray | ImageStream) -> tuple[float, float]:
    """(min, max) of the images' values: exact for arrays (in chunks), over the first
    examples (`head`) for tfds streams, over the whole array for array streams."""
    if isinstance(images, ArrayStream):
        lows, highs = zip(*((c.min(), c.max()) for _, c in _chunks(images.array)), strict=True)
        return float(min(lows)) * images.scale, float(max(highs)) * images.scale
    if isinstance(images, ImageStream):
        images = images.head
    return float(np.min(images)), float(np.max(images))


def range_warning(stored: np.ndarray, name: str = "data") -> str | None:
    """Says when stored values look wrong for their scaling, else None.

    uint8 is read as 8-bit grey levels k/255, so uint8 data whose maximum is below 32 (0/1
    masks, 4-bit levels) become nearly black images; other dtypes are used as they are, so
    integers or floats with values up to 255 were probably meant as grey levels.

    Args:
        stored: The images as stored (any dtype; a memory-mapped file is read in chunks).
        name: What to call the data.
    """
    if len(stored) == 0 or not np.issubdtype(stored.dtype, np.number):
        return None
    lows, highs = zip(*((float(c.min()), float(c.max())) for _, c in _chunks(stored)), strict=True)
    low, high = min(lows), max(highs)
    if stored.dtype == np.uint8 and high < 32:
        return (
            f"{name} is uint8 with maximum {high:g}: uint8 is read as 8-bit grey levels and "
            f"divided by 255 (to at most {high / 255:.3g}); if the values are not 0..255 grey "
            "levels (e.g. 0/1 binary images), save them as float32 in [0, 1], e.g. "
            "x.astype('float32') / x.max()."
        )
    if stored.dtype != np.uint8 and low >= 0 and 1 < high <= 255:
        return (
            f"{name} is {stored.dtype} with values in [{low:g}, {high:g}], used as they are "
            "(only uint8 is divided by 255); if they are grey levels, save them as uint8 or "
            "divide by 255."
        )
    return None


def as_dataset(images: np.ndarray | ImageStream, **options) -> tf.data.Dataset:
    """`make_dataset` for an array, `ImageStream.dataset` for a stream (same options;
    `likelihood` only applies to streams, arrays being checked when loaded)."""
    if isinstance(images, ImageStream):
        return images.dataset(**options)
    options.pop("likelihood", None)
    return make_dataset(images, **options)


def take_rows(images: np.ndarray | ImageStream, indices, labels=None, batch_size: int = 1000):
    """Rows `indices` of `images` (and of `labels`) in the order of `indices`, as float32
    NumPy arrays `(rows, row_labels)` (None without labels).

    An array (with `labels`, one per image, or None) is indexed; an `ImageStream` (its labels
    with its images) is read once in its stored order through `batches` and only the wanted
    rows are kept, stopping after the last one: memory holds those rows and a few batches,
    not the split (what export's calibration images need from a 737,280-image grid).
    """
    wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
    if wanted.size and (wanted.min() < 0 or wanted.max() >= len(images)):
        raise ValueError(f"Row indices must lie in [0, {len(images)}). Received: "
                         f"{wanted.min()}..{wanted.max()}")  # fmt: skip
    if not isinstance(images, ImageStream):
        rows = np.asarray(images[wanted], np.float32)
        return rows, None if labels is None else np.asarray(labels)[wanted]
    order = np.argsort(wanted, kind="stable")
    rows, found, k, start = [None] * wanted.size, [None] * wanted.size, 0, 0
    for x, y in batches(images, batch_size, labels):
        stop = start + len(x)
        while k < wanted.size and wanted[order[k]] < stop:
            rows[order[k]] = x[wanted[order[k]] - start]
            found[order[k]] = None if y is None else y[wanted[order[k]] - start]
            k += 1
        start = stop
        if k == wanted.size:
            break
    if k < wanted.size:
        raise ValueError(f"The stream ended after {start} images, before row {wanted[order[k]]}.")
    image_shape = tuple(images.image_shape) if hasattr(images, "image_shape") else ()
    stacked = np.stack(rows).astype(np.float32) if rows else np.zeros((0, *image_shape), "f4")
    has_labels = bool(found) and found[0] is not None
    return stacked, (np.stack(found) if has_labels else None)


def pick_rows(images: np.ndarray | ImageStream, count: int, seed: int, labels=None):
    """`min(count, len(images))` rows drawn without replacement by
    `numpy.random.default_rng(seed)`, in their stored order, as `take_rows` gives them
    (`(rows, row_labels)`): the images a figure shows, from an array or a stream alike."""
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(images), size=min(count, len(images)), replace=False))
    return take_rows(images, picked, labels)


def batches(images: np.ndarray | ImageStream, batch_size: int, labels=None):
    """`(images, labels)` NumPy batches of `batch_size` (the last one smaller) in order, the
    split read once, whatever holds it: what every kind's evaluation reads.

    An array (with `labels`, one per image, or None) is sliced; an `ImageStream` is read by
    `ImageStream.batches`, its labels with its images (`labels` must then be None), so memory
    holds a few batches whatever the split's size. Images are float32, labels None without
    labels.
    """
    if isinstance(images, ImageStream):
        if labels is not None:
            raise ValueError("A stream's labels come with its images: give labels=None.")
        yield from images.batches(batch_size)
        return
    _check_batch_size(batch_size)
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"Give one label per image: {len(labels)} labels, {len(images)} images.")
    for start in range(0, len(images), batch_size):
        part = slice(start, start + batch_size)
        yield (np.asarray(images[part], np.float32),
               None if labels is None else np.asarray(labels[part]))  # fmt: skip


def first_images(images: np.ndarray | ImageStream, count: int) -> np.ndarray:
    """The first `count` images (at most a stream's `head`) as a float32 array."""
    if isinstance(images, ImageStream):
        return images.head[:count]
    return np.asarray(images[:count], dtype=np.float32)


def first_labels(images: ImageStream, count: int) -> np.ndarray | None:
    """The labels of `first_images(images, count)` (None for data without labels)."""
    labels = getattr(images, "head_labels", None)
    return None if labels is None else labels[:count]


def _check_batch_size(batch_size) -> None:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or (batch_size < 1)
    ):
        raise DataValidationError(
            f"batch_size must be a positive int. Received: batch_size={batch_size!r}"
        )


def _finish(ds: tf.data.Dataset, seed: int | None, dynamic_binarization: bool) -> tf.data.Dataset:
    """Binarization (one stateless seed pair per batch), sharding policy and prefetch."""
    if dynamic_binarization:
        # One stateless seed pair per batch, from a stream that restarts differently each
        # epoch (rerandomize_each_iteration) but is reproducible from `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            _binarize_batch, num_parallel_calls=tf.data.AUTOTUNE
        )
    # Under multi-worker training every worker builds this same pipeline (same seed, same
    # order); DATA sharding hands each replica its consecutive part of every global batch.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
