"""keras_vae.workflows.sample (`keras-vae sample`): what it writes equals what the run's model
draws, as an array or a PNG grid; bad requests are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from keras_vae.cli import commands as cli
from keras_vae.runs import directory as runs
from keras_vae.runs.config import ConfigError
from keras_vae.workflows import sample


def test_sample_writes_what_the_model_draws(labelled_run, tmp_path):
    run = str(labelled_run / "run")
    assert cli.main(["sample", run, "--num", "5", "--seed", "4",
                     "--output", str(tmp_path / "s.npy")]) == 0  # fmt: skip
    model = runs.load_model(labelled_run / "run" / runs.MODEL_FILE)
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), model.sample(5, seed=4), atol=1e-6)
    assert cli.main(["sample", run, "--output", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert cli.main(["sample", run, "--output", str(tmp_path / "s.txt")]) == 2
    assert cli.main(["sample", run, "--label", "1", "--output",
                     str(tmp_path / "l.npy")]) == 2  # not a conditional run  # fmt: skip


def test_the_png_is_the_grid_of_the_same_draws(labelled_run, tmp_path):
    model = runs.load_model(labelled_run / "run" / runs.MODEL_FILE)
    images = sample.sample_run(labelled_run / "run", num=5, seed=2)
    np.testing.assert_allclose(images, model.sample(5, seed=2), atol=1e-6)
    sample.write_images(images, tmp_path / "grid.png")
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    # 5 images of 6x6: 3 columns, 2 rows, 1-pixel white gaps; the sixth cell is white
    assert grid.shape == (2 * 7 - 1, 3 * 7 - 1) and grid.dtype == np.uint8
    for index in range(5):
        top, left = (index // 3) * 7, (index % 3) * 7
        expected = np.round(np.clip(images[index, :, :, 0], 0, 1) * 255)
        np.testing.assert_array_equal(grid[top : top + 6, left : left + 6], expected)
    assert (grid[7:, 14:] == 255).all() and (grid[6, :] == 255).all()


@pytest.mark.parametrize("num", [0, -3, 2.5, True])
def test_a_bad_number_of_images_is_refused(labelled_run, num):
    with pytest.raises(ConfigError, match="--num must be a positive int"):
        sample.sample_run(labelled_run / "run", num=num)
