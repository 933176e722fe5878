"""keras_vae.data.builders.frey_face: `frey_rawface.mat` parsed column by column (on a tiny
fake file and, where ../shared has it, the real one), and the tfds builder's contiguous
1,572 / 393 split prepared from the manual directory into a temporary one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from helpers import SHARED

from keras_vae.data import pipeline as data
from keras_vae.data.builders import frey_face

FREY_MANUAL_DIR = SHARED / "data" / "frey_face"
needs_frey = pytest.mark.skipif(
    not (FREY_MANUAL_DIR / "frey_rawface.mat").is_file(),
    reason=f"frey_rawface.mat not found in {FREY_MANUAL_DIR} (the shared offline data)",
)


def _frey_columns() -> np.ndarray:
    """Independent reference: column j of `ff`, reshaped row-major, is frame j."""
    ff = scipy.io.loadmat(str(FREY_MANUAL_DIR / "frey_rawface.mat"))["ff"]
    return np.stack([ff[:, j].reshape(28, 20) for j in range(ff.shape[1])])


def test_each_column_of_ff_is_one_frame_row_major(tmp_path: Path) -> None:
    # a fake file of the real layout: frame j holds the values j, j + 1, ... row by row
    frames = (np.arange(1965)[:, None] + np.arange(560)[None, :]) % 256
    scipy.io.savemat(tmp_path / "fake.mat", {"ff": frames.T.astype(np.uint8)})
    images = frey_face.read_frey_faces(tmp_path / "fake.mat")
    assert images.shape == (1965, 28, 20, 1) and images.dtype == np.uint8
    for frame in (0, 1, 1572, 1964):
        expected = [[(frame + 20 * row + col) % 256 for col in range(20)] for row in range(28)]
        np.testing.assert_array_equal(images[frame, :, :, 0], expected)


def test_read_frey_faces_rejects_bad_files(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "no_ff.mat", {"faces": np.zeros((560, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"no variable 'ff' \(found: \['faces'\]\)"):
        frey_face.read_frey_faces(tmp_path / "no_ff.mat")
    scipy.io.savemat(tmp_path / "shape.mat", {"ff": np.zeros((560, 10), np.uint8)})
    with pytest.raises(ValueError, match=r"shape \(560, 10\); expected \(560, 1965\)"):
        frey_face.read_frey_faces(tmp_path / "shape.mat")
    (tmp_path / "text.mat").write_text("not a MATLAB file")
    with pytest.raises(ValueError, match="is not a readable MATLAB file") as error:
        frey_face.read_frey_faces(tmp_path / "text.mat")
    assert "\n" not in str(error.value) and frey_face.URL in str(error.value)


@pytest.fixture(scope="module")
def frey_data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = tfds.builder("frey_face", data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(FREY_MANUAL_DIR))
    )
    return str(data_dir)


@needs_frey
def test_frey_face_builder_splits_the_real_frames_contiguously(frey_data_dir: str) -> None:
    info = tfds.builder("frey_face", data_dir=frey_data_dir).info
    sizes = {name: split.num_examples for name, split in info.splits.items()}
    assert sizes == {"train": 1572, "test": 393}
    assert info.features["image"].shape == (28, 20, 1)
    columns = _frey_columns()
    train = data.load_images("frey_face", "train", data_dir=frey_data_dir, download=False)
    test = data.load_images("frey_face", "test", data_dir=frey_data_dir, download=False)
    assert train.shape == (1572, 28, 20, 1) and test.shape == (393, 28, 20, 1)
    assert train.dtype == np.float32 and 0.0 <= train.min() and train.max() <= 1.0
    for frame in (0, 1, 700, 1571):
        np.testing.assert_array_equal(np.rint(train[frame, ..., 0] * 255), columns[frame])
    for frame in (1572, 1573, 1964):  # 1572 is the first test frame
        np.testing.assert_array_equal(np.rint(test[frame - 1572, ..., 0] * 255), columns[frame])
    assert data.default_likelihood("frey_face") == "gaussian"
