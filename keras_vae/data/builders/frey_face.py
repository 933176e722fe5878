"""The Frey Face data set as a tensorflow-datasets builder (`frey_face`).

Frey Face is the continuous-pixel data set of the AEVB paper (Kingma & Welling, 2014): 1,965
grey-scale frames of 28x20 pixels of Brendan Frey's face, taken from one video. The source is
Sam Roweis' `frey_rawface.mat` (MATLAB v5): one uint8 variable `ff` of shape (560, 1965), one
image per column, each column reshaped row-major (C order) to (28, 20).

Splits (fixed; the source publishes none):

* `train`: frames 0..1571, the first 1,572 (80%).
* `test`: frames 1572..1964, the last 393.

The split is contiguous on purpose: the frames are consecutive video frames, so neighbouring
frames are near-duplicates, and a random or interleaved split would leak near-copies of test
frames into the training set. Examples are stored and read in frame order (shuffling is
disabled), so `test[0]` is frame 1572.

Preparation reads `frey_rawface.mat` from the download config's `manual_dir` when it is
there, and otherwise downloads it from `URL`. No checksum is registered for the file (copies in
circulation differ in bytes while holding the same pixels), so tfds neither validates it nor
looks it up in `manual_dir` by itself; `_split_generators` does that lookup.

Example:
    ```python
    import tensorflow_datasets as tfds
    import keras_vae.data.builders  # registers `frey_face`

    ds = tfds.load(
        "frey_face",
        split="train",
        data_dir="/tmp/tfds",  # must be writable: the data set is prepared there
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir="path/to/dir")
        },
    )
    ```
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
FILENAME = "frey_rawface.mat"
IMAGE_SHAPE = (28, 20)
NUM_FRAMES = 1965
NUM_TRAIN = 1572

_CITATION = """\
@inproceedings{kingma2014autoencoding,
  title     = {Auto-Encoding Variational {B}ayes},
  author    = {Kingma, Diederik P. and Welling, Max},
  booktitle = {International Conference on Learning Representations},
  year      = {2014}
}
"""


def read_frey_faces(path: str | os.PathLike) -> np.ndarray:
    """Reads `frey_rawface.mat` into an array of images.

    Args:
        path: Path to the MATLAB v5 file holding the uint8 variable `ff` of shape (560, 1965).

    Returns:
        uint8 array of shape (1965, 28, 20, 1), frames in the file's order.

    Raises:
        ValueError: If the file is not a MATLAB file, has no variable `ff` or `ff` has the
            wrong shape.
    """
    try:
        mat = scipy.io.loadmat(str(path))
    except (ValueError, TypeError, EOFError, scipy.io.matlab.MatReadError) as err:  # damaged
        raise ValueError(
            f"{path} is not a readable MATLAB file ({err}); replace it with the original "
            f"frey_rawface.mat from {URL}."
        ) from err
    if "ff" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(
            f"{path} has no variable 'ff' (found: {found}). Expected the original "
            f"frey_rawface.mat from {URL}."
        )
    ff = np.asarray(mat["ff"])
    expected = (IMAGE_SHAPE[0] * IMAGE_SHAPE[1], NUM_FRAMES)
    if ff.shape != expected:
        raise ValueError(
            f"'ff' in {path} has shape {ff.shape}; expected {expected} (one 28x20 image per "
            f"column). Expected the original frey_rawface.mat from {URL}."
        )
    # Column j is frame j; C-order reshape of each column gives the (28, 20) image.
    return ff.T.reshape((NUM_FRAMES, *IMAGE_SHAPE, 1)).astype(np.uint8)


class FreyFace(tfds.core.GeneratorBasedBuilder):
    """Frey Face: 1,965 grey-scale 28x20 frames; contiguous 1,572 / 393 train/test split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: contiguous train (0..1571) / test (1572..1964)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    Offline use: put the file `{FILENAME}` (Sam Roweis' Frey Face file, from {URL}) directly in
    the manual directory, i.e. `<manual_dir>/{FILENAME}`, and pass it with
    `tfds.download.DownloadConfig(manual_dir=<manual_dir>)` (keras_vae: `manual_dir=` or
    `--manual-dir`). Without it, the file is downloaded from {URL}.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Frey Face: 1,965 grey-scale 28x20 frames of one face from a video "
                "(Roweis). Fixed contiguous split: train = frames 0..1571, test = frames "
                "1572..1964 (consecutive frames are near-duplicates, so the split is not "
                "interleaved). Examples are in frame order."
            ),
            features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(*IMAGE_SHAPE, 1), dtype=np.uint8)}
            ),
            homepage="https://cs.nyu.edu/~roweis/data.html",
            citation=_CITATION,
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        path = _manual_file(dl_manager)
        if path is None:
            path = dl_manager.download(URL)
        images = read_frey_faces(path)
        return {
            "train": self._generate_examples(images, start=0, stop=NUM_TRAIN),
            "test": self._generate_examples(images, start=NUM_TRAIN, stop=NUM_FRAMES),
        }

    def _generate_examples(
        self, images: np.ndarray, start: int, stop: int
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for frame in range(start, stop):
            yield frame, {"image": images[frame]}


def _manual_file(dl_manager: tfds.download.DownloadManager) -> os.PathLike | None:
    """Returns `<manual_dir>/frey_rawface.mat` if it exists, else None.

    `dl_manager.manual_dir` raises (AssertionError) when the directory is missing or empty;
    that only means "no manual file" here.
    """
    try:
        manual_dir = dl_manager.manual_dir
    except (AssertionError, ValueError):
        return None
    if manual_dir is None:
        return None
    path = manual_dir / FILENAME
    return path if path.exists() else None
