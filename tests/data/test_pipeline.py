"""keras_vae.data.pipeline: tfds data sets and array files loaded, checked and batched
(offline; real data from ../shared). The builders' own tests: tests/data/builders/."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from helpers import SHARED, TFDS_DIR

from keras_vae import registry
from keras_vae.data import pipeline as data
from keras_vae.data.pipeline import DatasetNotFoundError, DataValidationError

# TFDS_DIR (helpers) is read-only: only read from it, never prepare into it
FREY_MANUAL_DIR = SHARED / "data" / "frey_face"
MNIST_TEST_IMAGES = SHARED / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"

needs_binarized_mnist = pytest.mark.skipif(
    not (TFDS_DIR / "binarized_mnist").is_dir(),
    reason=f"prepared binarized_mnist not found in {TFDS_DIR} (the shared offline data)",
)
needs_frey = pytest.mark.skipif(
    not (FREY_MANUAL_DIR / "frey_rawface.mat").is_file(),
    reason=f"frey_rawface.mat not found in {FREY_MANUAL_DIR} (the shared offline data)",
)


def _frey_columns() -> np.ndarray:
    """Independent reference: column j of `ff`, reshaped row-major, is frame j."""
    ff = scipy.io.loadmat(str(FREY_MANUAL_DIR / "frey_rawface.mat"))["ff"]
    return np.stack([ff[:, j].reshape(28, 20) for j in range(ff.shape[1])])


# --- binarized_mnist (real, prepared data) ------------------------------------------------


@needs_binarized_mnist
def test_binarized_mnist_split_sizes_from_info() -> None:
    info = tfds.builder("binarized_mnist", data_dir=str(TFDS_DIR)).info
    sizes = {name: split.num_examples for name, split in info.splits.items()}
    assert sizes == {"train": 50000, "validation": 10000, "test": 10000}


@needs_binarized_mnist
@pytest.mark.parametrize("split", ["validation", "test"])
def test_binarized_mnist_full_split(split: str) -> None:
    x = data.load_images("binarized_mnist", split, data_dir=str(TFDS_DIR), download=False)
    assert x.shape == (10000, 28, 28, 1)
    assert x.dtype == np.float32
    assert set(np.unique(x).tolist()) == {0.0, 1.0}
    data.validate_images(x, likelihood="bernoulli", image_shape=(28, 28, 1))


@needs_binarized_mnist
def test_binarized_mnist_train_limit() -> None:
    x, y = data.load_labeled_images("binarized_mnist", data_dir=str(TFDS_DIR), limit=500)
    assert x.shape == (500, 28, 28, 1) and y is None
    assert set(np.unique(x).tolist()) == {0.0, 1.0}
    assert 0.05 < x.mean() < 0.25  # MNIST digits: mostly background


@needs_binarized_mnist
def test_binarized_mnist_via_tfds_data_dir_env_var() -> None:
    # tfds reads TFDS_DATA_DIR when it is imported, so this needs a fresh interpreter.
    code = (
        "from keras_vae.data.pipeline import load_images; "
        "x = load_images('binarized_mnist', 'test', limit=7, download=False); "
        "print(x.shape, x.dtype)"
    )
    env = {**os.environ, "TFDS_DATA_DIR": str(TFDS_DIR)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(7, 28, 28, 1) float32" in result.stdout


# --- frey_face (custom builder, prepared from the manual dir into tmp) -------------------


@needs_frey
def test_frey_face_load_images_prepares_from_manual_dir(tmp_path: Path) -> None:
    x = data.load_images(
        "frey_face", "test", data_dir=str(tmp_path), manual_dir=str(FREY_MANUAL_DIR), limit=3
    )
    assert x.shape == (3, 28, 20, 1)
    np.testing.assert_array_equal(np.rint(x[0, ..., 0] * 255), _frey_columns()[1572])


@needs_frey
def test_frey_face_damaged_manual_file_is_named_and_leaves_nothing(tmp_path: Path) -> None:
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    (manual_dir / "frey_rawface.mat").write_bytes(b"this is not a MATLAB file" * 8)
    data_dir = tmp_path / "tfds"
    with pytest.raises(DatasetNotFoundError) as err:
        data.load_images("frey_face", "test", data_dir=str(data_dir), manual_dir=str(manual_dir))
    message = str(err.value)
    assert "frey_rawface.mat" in message and "not a readable MATLAB file" in message
    # nothing half-prepared is left: the real file then prepares normally
    x = data.load_images(
        "frey_face", "test", data_dir=str(data_dir), manual_dir=str(FREY_MANUAL_DIR), limit=2
    )
    assert x.shape == (2, 28, 20, 1)


def test_frey_face_not_prepared_and_download_false(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        data.load_images("frey_face", data_dir=str(tmp_path), download=False)
    message = str(err.value)
    for part in (
        "'frey_face'",
        "'train'",
        str(tmp_path),
        "TFDS_DATA_DIR",
        "--manual-dir",
        "frey_rawface.mat",
    ):
        assert part in message
    assert "\n" not in message


def _host_reachable(host: str, port: int) -> bool:
    if urllib.request.getproxies():
        return True  # a proxy may reach it: a real download could start
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    _host_reachable("cs.nyu.edu", 443), reason="network available: would really download"
)
@pytest.mark.parametrize("empty_manual_dir", [False, True])
def test_frey_face_offline_without_manual_file_fails_fast(
    tmp_path: Path, empty_manual_dir: bool
) -> None:
    manual_dir = None
    if empty_manual_dir:
        manual_dir = tmp_path / "manual"
        manual_dir.mkdir()
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match=r"not found in data_dir .*unreachable"):
        data.load_images(
            "frey_face",
            data_dir=str(tmp_path / "tfds"),
            manual_dir=None if manual_dir is None else str(manual_dir),
        )
    assert time.perf_counter() - start < 30


# --- mnist (mocked tfds) and names ---------------------------------------------------------


def test_mnist_mocked_grey_levels() -> None:
    with tfds.testing.mock_data(num_examples=16):
        x, y = data.load_labeled_images("mnist", "test")
    assert x.shape == (16, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert len(np.unique(x)) > 2  # grey levels, not binary
    assert y is not None and y.shape == (16,) and y.dtype == np.int64
    assert data.default_likelihood("mnist") == "bernoulli"


def test_split_not_available_lists_splits() -> None:
    with pytest.raises(
        DataValidationError, match="no split 'validation'. Available splits: train, test"
    ):
        data.load_images("mnist", "validation")


def test_unknown_name_lists_known_datasets() -> None:
    with pytest.raises(DataValidationError) as err:
        data.load_images("svhn_cropped")
    message = str(err.value)
    assert all(name in message for name in data.KNOWN_DATASETS)
    assert ".npz" in message and ".npy" in message
    assert data.default_likelihood("some/file.npz") is None


def test_bad_limit() -> None:
    with pytest.raises(DataValidationError, match=r"Received: limit=0"):
        data.load_images("mnist", limit=0)


# --- array files ---------------------------------------------------------------------------


def test_npz_uint8_scaled_with_labels(tmp_path: Path) -> None:
    raw = np.arange(4 * 5 * 6, dtype=np.int64).reshape(4, 5, 6) % 256
    path = tmp_path / "d.npz"
    np.savez(path, x=raw.astype(np.uint8), y=np.array([3, 1, 4, 1]))
    x, y = data.load_labeled_images(str(path))
    assert x.shape == (4, 5, 6, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], raw / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, [3, 1, 4, 1])
    assert data.load_images(str(path), limit=2).shape == (2, 5, 6, 1)


def test_npz_float_kept_and_no_labels(tmp_path: Path) -> None:
    raw = np.random.default_rng(0).random((3, 4, 4, 2))
    np.savez(tmp_path / "f.npz", x=raw)
    x, y = data.load_labeled_images(str(tmp_path / "f.npz"))
    assert y is None and x.dtype == np.float32
    np.testing.assert_array_equal(x, raw.astype(np.float32))


def test_npz_without_x(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz", images=np.zeros((2, 3)))
    with pytest.raises(DataValidationError, match=r"no array 'x' \(found: \['images'\]\)"):
        data.load_images(str(tmp_path / "w.npz"))


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((5, 12), (5, 12)), ((5, 3, 4), (5, 3, 4, 1)), ((5, 3, 4, 2), (5, 3, 4, 2))],
)
def test_npy_ranks(tmp_path: Path, shape: tuple, expected: tuple) -> None:
    np.save(tmp_path / "a.npy", np.full(shape, 0.5, dtype=np.float64))
    x = data.load_images(str(tmp_path / "a.npy"))
    assert x.shape == expected and x.dtype == np.float32
    assert np.all(x == 0.5)


def test_npy_int_not_scaled_and_bad_rank(tmp_path: Path) -> None:
    np.save(tmp_path / "i.npy", np.full((2, 3), 7, dtype=np.int32))
    assert np.all(data.load_images(str(tmp_path / "i.npy")) == 7.0)
    np.save(tmp_path / "r1.npy", np.zeros(5))
    with pytest.raises(DataValidationError, match=r"rank 2 .*Received: shape=\(5,\)"):
        data.load_images(str(tmp_path / "r1.npy"))


def test_pickled_object_arrays_refused(tmp_path: Path) -> None:
    objects = np.empty(2, dtype=object)
    objects[:] = [np.zeros(3), "not an image"]
    np.save(tmp_path / "o.npy", objects, allow_pickle=True)
    np.savez(tmp_path / "o.npz", x=objects)
    for name in ("o.npy", "o.npz"):
        with pytest.raises(DataValidationError, match="refused for safety"):
            data.load_images(str(tmp_path / name))


def test_missing_and_wrong_extension_files(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="Array file not found"):
        data.load_images(str(tmp_path / "missing.npz"))
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(DataValidationError, match=r"accepted array files are \.npz, \.npy"):
        data.load_images(str(tmp_path / "d.csv"))


# --- validate_images -----------------------------------------------------------------------


def _one_line_error(x: np.ndarray, match: str, **kwargs) -> str:
    kwargs.setdefault("likelihood", "bernoulli")
    with pytest.raises(DataValidationError, match=match) as err:
        data.validate_images(x, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_validate_nan_and_inf() -> None:
    x = np.zeros((4, 3, 3, 1), np.float32)
    x[2, 1, 0, 0] = x[3, 0, 0, 0] = np.nan
    _one_line_error(x, r"2 NaN value\(s\), the first at index \(2, 1, 0, 0\) \(image 2\)")
    y = np.zeros((4, 5), np.float32)
    y[1, 4] = np.inf
    _one_line_error(y, r"1 Inf value\(s\), the first at index \(1, 4\)", likelihood="gaussian")


def test_validate_empty_rank_and_shape() -> None:
    _one_line_error(np.zeros((0, 28, 28, 1)), r"empty \(shape=\(0, 28, 28, 1\)\)")
    _one_line_error(np.zeros(10), r"rank 2 .*Received: shape=\(10,\)")
    _one_line_error(np.zeros((1, 2, 3, 4, 5)), r"Received: shape=\(1, 2, 3, 4, 5\)")
    message = _one_line_error(
        np.zeros((2, 28, 28, 1)),
        r"image shape \(28, 28, 1\) but \(28, 20, 1\) is expected",
        image_shape=(28, 20, 1),
    )
    assert "reshape" in message
    data.validate_images(np.zeros((2, 28, 20, 1)), likelihood="bernoulli", image_shape=(28, 20, 1))


def test_validate_bernoulli_range() -> None:
    grey = np.array([[0.0, 128.0, 255.0]])
    message = _one_line_error(grey, r"values in \[0, 255\] but the Bernoulli likelihood")
    assert "divide by 255" in message
    message = _one_line_error(np.array([[-1.0, 0.5]]), r"values in \[-1, 0.5\]")
    assert "likelihood='gaussian'" in message
    _one_line_error(np.array([[0.5]]), "likelihood must be one of", likelihood="poisson")


def test_validate_unknown_likelihood_lists_the_registered_ones() -> None:
    message = _one_line_error(np.array([[0.5]]), "likelihood must be one of", likelihood="poisson")
    assert all(repr(name) in message for name in registry.names("likelihood"))
    assert "Received: likelihood='poisson'" in message


def test_validate_logistic_needs_8_bit_grey_levels() -> None:
    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    data.validate_images(levels.astype(np.float32) / 255, likelihood="logistic")
    between = levels.astype(np.float32) / 255
    between[0, 3, 3] += 0.4 / 255  # 0.4 of a grey level away from the grid
    message = _one_line_error(between, r"^x has values between the 256 grey levels", name="x",
                              likelihood="logistic")  # fmt: skip
    assert "quantise to 8 bits" in message
    message = _one_line_error(levels.astype(np.float32), r"values in \[0, 255\]",
                              likelihood="logistic")  # fmt: skip
    assert message.startswith("data has values") and "divide 0..255 grey levels by 255" in message


@needs_binarized_mnist
@pytest.mark.skipif(not MNIST_TEST_IMAGES.is_file(), reason=f"{MNIST_TEST_IMAGES} not found")
def test_validate_logistic_accepts_real_grey_mnist_and_binary_data() -> None:
    with gzip.open(MNIST_TEST_IMAGES) as handle:
        raw = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    grey = raw[:300].astype(np.float32) / 255
    data.validate_images(grey, likelihood="logistic")
    binary = data.load_images("binarized_mnist", "test", data_dir=str(TFDS_DIR), limit=50)
    data.validate_images(binary, likelihood="logistic")  # 0 and 1 are grey levels too
    with pytest.raises(DataValidationError, match="Bernoulli likelihood needs"):
        data.validate_images(raw[:5].astype(np.float32), likelihood="bernoulli")


def test_validate_gaussian_accepts_any_finite_values() -> None:
    data.validate_images(np.array([[-3.0, 0.5, 255.0]]), likelihood="gaussian")
    data.validate_images(np.array([[0, 1, 255]], np.uint8), likelihood="gaussian")


# --- binarization and make_dataset ---------------------------------------------------------


def _epoch(ds) -> np.ndarray:
    return np.concatenate(list(ds.as_numpy_iterator()))


def test_binarize_numpy() -> None:
    x = np.random.default_rng(0).random((200, 50))
    b = data.binarize(x, 1)
    assert b.dtype == np.float32 and set(np.unique(b).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(b, data.binarize(x, np.random.default_rng(1)))
    assert abs(b.mean() - x.mean()) < 0.01
    assert np.all(data.binarize(np.ones((3, 3)), 0) == 1)
    assert np.all(data.binarize(np.zeros((3, 3)), 0) == 0)


def test_make_dataset_batches() -> None:
    x = np.random.default_rng(0).random((10, 4, 3, 1)).astype(np.float64)
    batches = list(data.make_dataset(x, batch_size=4, seed=0).as_numpy_iterator())
    assert [b.shape for b in batches] == [(4, 4, 3, 1), (4, 4, 3, 1), (2, 4, 3, 1)]
    assert all(b.dtype == np.float32 for b in batches)
    # a shuffled epoch is a permutation of x
    np.testing.assert_allclose(
        np.sort(np.concatenate(batches).ravel()), np.sort(x.ravel()), rtol=1e-6
    )
    ordered = _epoch(data.make_dataset(x, batch_size=4, shuffle=False, drop_remainder=True))
    np.testing.assert_allclose(ordered, x[:8], rtol=1e-6)
    repeated = data.make_dataset(x, batch_size=4, repeat=True).take(7)
    assert len(list(repeated)) == 7


def test_make_dataset_dynamic_binarization() -> None:
    x = np.random.default_rng(0).random((2000, 8, 8, 1)).astype(np.float32)
    x[0] = 0.0
    x[1] = 1.0
    ds = data.make_dataset(x, batch_size=256, shuffle=False, seed=3, dynamic_binarization=True)
    first, second = _epoch(ds), _epoch(ds)
    assert first.shape == x.shape and first.dtype == np.float32
    assert set(np.unique(first).tolist()) == {0.0, 1.0}
    assert not np.array_equal(first, second)  # redrawn each epoch
    assert abs(first.mean() - float(np.mean(x))) < 0.01
    assert np.all(first[0] == 0) and np.all(first[1] == 1)
    again = data.make_dataset(x, batch_size=256, shuffle=False, seed=3, dynamic_binarization=True)
    np.testing.assert_array_equal(_epoch(again), first)  # same seed, same draws
    np.testing.assert_array_equal(_epoch(again), second)


def test_make_dataset_dynamic_binarization_needs_unit_interval() -> None:
    with pytest.raises(DataValidationError, match="divide by 255"):
        data.make_dataset(np.full((2, 3), 200.0), batch_size=1, dynamic_binarization=True)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True, None])
def test_make_dataset_bad_batch_size(batch_size) -> None:
    with pytest.raises(DataValidationError) as err:
        data.make_dataset(np.zeros((4, 2)), batch_size=batch_size)
    assert str(err.value) == (
        f"batch_size must be a positive int. Received: batch_size={batch_size!r}"
    )
