"""keras_vae.data.builders.labeled_binarized_mnist: the IDX1 label file parsed (a tiny fake
file), one-line errors for missing or wrong files, and, where ../shared has the raw files,
the class-sorted binarized test images labelled by the MNIST test labels."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from helpers import SHARED

from keras_vae.data.builders import labeled_binarized_mnist as lbm


def _idx1(path, labels, magic=2049):
    """An IDX1 file: big-endian magic and count, then one uint8 per label, gzipped."""
    raw = magic.to_bytes(4, "big") + len(labels).to_bytes(4, "big") + bytes(labels)
    with gzip.open(path, "wb") as handle:
        handle.write(raw)
    return path


def test_idx1_labels_are_read_after_the_header(tmp_path):
    path = _idx1(tmp_path / "labels.gz", [7, 2, 1, 0, 4])
    labels = lbm.read_idx_labels(path)
    assert labels.dtype == np.int64 and labels.tolist() == [7, 2, 1, 0, 4]
    with pytest.raises(ValueError, match=r"is not an IDX1 label file \(magic 2051"):
        lbm.read_idx_labels(_idx1(tmp_path / "images.gz", [1, 2], magic=2051))


def test_missing_or_short_files_are_one_line_errors(tmp_path, capsys):
    output = str(tmp_path / "out.npz")
    assert lbm.main(["--manual-dir", str(tmp_path), "--output", output]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "t10k-labels-idx1-ubyte.gz is neither in" in err
    # the files in their folders (mnist/, binarized_mnist/), but three examples only
    (tmp_path / "mnist").mkdir()
    (tmp_path / "binarized_mnist").mkdir()
    _idx1(tmp_path / "mnist" / lbm.LABELS, [2, 0, 1])
    np.savetxt(tmp_path / "binarized_mnist" / lbm.AMAT, np.zeros((3, 784)), fmt="%d")
    with pytest.raises(ValueError, match=r"Expected 10000 images of 784 pixels .* \(3, 784\)"):
        lbm.load(tmp_path)
    assert lbm.main(["--manual-dir", str(tmp_path), "--output", output]) == 2
    assert "Expected 10000 images" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="no offline data")
def test_labelled_binarized_mnist_matches_the_mnist_test_images(tmp_path):
    x, y = lbm.load(SHARED / "data")
    assert x.shape == (10000, 28, 28, 1) and set(np.unique(x)) == {0.0, 1.0}
    assert np.all(np.diff(y) >= 0)  # sorted by class, with MNIST's class counts
    raw = _idx3_images(SHARED / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = lbm.read_idx_labels(SHARED / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(np.bincount(y), np.bincount(labels))
    # a binarized image correlates best with the mean grey image of its own class
    means = np.stack([raw[labels == c].mean(0) for c in range(10)]).reshape(10, -1)
    picked = np.random.default_rng(0).choice(10000, size=300, replace=False)
    flat = x[picked].reshape(300, -1)
    centred = lambda a: (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)  # noqa: E731
    best = np.argmax(centred(flat) @ centred(means).T, axis=1)
    assert np.mean(best == y[picked]) > 0.75
    path = lbm.write_npz(SHARED / "data", tmp_path / "bm.npz", seed=0)
    order = np.random.default_rng(0).permutation(10000)  # the documented seeded shuffle
    with np.load(path) as saved:
        np.testing.assert_array_equal(saved["x"], x[order])
        np.testing.assert_array_equal(saved["y"], y[order])


def _idx3_images(path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28).astype("f4") / 255.0
