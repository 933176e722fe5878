"""keras_vae.runs.splits: a user's array file is loaded or refused in one line that names the
file, whatever its shape, dtype, values and labels (property tests with hypothesis); the
held-out images must be of the training images' size."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_vae.data import pipeline as data
from keras_vae.runs import splits
from keras_vae.runs.config import ConfigError, TrainConfig

DTYPES = ["uint8", "int16", "int64", "float16", "float32", "float64", "bool", "complex64"]


@st.composite
def user_arrays(draw):
    """An .npz a user might save: any small shape, dtype and range, labels or none."""
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=1, max_size=4)))
    dtype = draw(st.sampled_from(DTYPES))
    low = draw(st.sampled_from([-300.0, -1.0, 0.0]))
    high = draw(st.sampled_from([0.0, 1.0, 255.0, 1e6]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.uniform(low, high, size=shape)
    if x.size and draw(st.booleans()):
        x[tuple(0 for _ in shape)] = draw(st.sampled_from([np.nan, np.inf, 0.5]))
    x = x.astype(dtype) if dtype != "bool" else x > 0
    count = shape[0]
    labels = draw(st.sampled_from(["none", "ints", "floats", "halves", "vectors", "short",
                                   "negative", "strings"]))  # fmt: skip
    y = {
        "none": None,
        "ints": rng.integers(0, 3, size=count),
        "floats": rng.integers(0, 3, size=count).astype("float32"),
        "halves": rng.integers(0, 3, size=count) + 0.5,
        "vectors": rng.uniform(size=(count, 3)).astype("float32"),
        "short": rng.integers(0, 3, size=max(count - 1, 0)),
        "negative": -rng.integers(1, 3, size=count),
        "strings": np.array(["a"] * count),
    }[labels]
    return x, y


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(arrays=user_arrays(), conditional=st.booleans())
def test_any_array_file_loads_or_is_refused_in_one_line(tmp_path, arrays, conditional):
    x, y = arrays
    path = tmp_path / "user.npz"
    np.savez(path, x=x, **({} if y is None else {"y": y}))
    try:
        config = TrainConfig(dataset=str(path), eval_split="train", conditional=conditional)
        config = splits.resolve_data(config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", data.DataRangeWarning)
            images = splits.open_split(config, "train", labels=conditional)
    except (data.DataValidationError, ConfigError, FileNotFoundError) as error:
        message = str(error)
        assert message and "\n" not in message.strip(), message
        assert "user.npz" in message or "labels" in message or "image" in message, message
        return
    assert len(images) == len(x) > 0
    head = data.first_images(images, len(images))
    assert np.all(np.isfinite(head))
    if conditional:
        labels = data.first_labels(images, len(images))
        assert labels is not None and len(labels) == len(head)


def test_float_labels_that_are_not_classes_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "halves.npz"
    np.savez(path, x=np.zeros((10, 4, 4), "uint8"), y=np.arange(10) % 2 + 0.5)
    config = TrainConfig(dataset=str(path), eval_split="train", conditional=True)
    with pytest.raises(data.DataValidationError, match=r"halves.npz.*not whole numbers \(0.5 at"):
        splits.open_split(splits.resolve_data(config), "train", labels=True)


def test_held_out_images_of_another_size_are_refused_naming_both_files(tmp_path):
    train, held_out = tmp_path / "train.npz", tmp_path / "eval.npz"
    np.savez(train, x=np.zeros((10, 6, 6), "uint8"))
    np.savez(held_out, x=np.zeros((10, 7, 7), "uint8"))
    config = splits.resolve_data(TrainConfig(dataset=str(train), eval_data=str(held_out)))
    x_train, x_eval = splits.open_split(config, "train"), splits.open_split(config, "test")
    with pytest.raises(data.DataValidationError) as error:
        splits.check_same_images(config, x_train, x_eval)
    assert str(error.value) == (
        f"The held-out images of {held_out} are 7x7x1 but the training images of {train} are "
        "6x6x1; give held-out data of the same size."
    )


def test_a_limit_reads_the_first_examples_of_any_split(tmp_path):
    """`load_split(..., limit=n)` (`keras-vae evaluate --limit n`) is the split's first n
    examples; on the training split the smaller of it and the run's own `limit`."""
    images = np.random.default_rng(3).uniform(size=(40, 3, 3)).astype("float32")
    np.save(tmp_path / "x.npy", images)
    config = TrainConfig(dataset=str(tmp_path / "x.npy"), validation_split=0.25, limit=20)
    for split, part in (("validation", images[30:]), ("train", images[:20])):
        np.testing.assert_array_equal(splits.load_split(config, split, "gaussian")[..., 0], part)
        for n, expected in ((4, part[:4]), (100, part)):
            got = splits.load_split(config, split, "gaussian", limit=n)
            np.testing.assert_array_equal(got[..., 0], expected)
