"""`keras-vae sample RUN_DIR --output FILE`: images drawn from the run's model (its kind's
`sample`), written as an `.npy` array `[N, *image_shape]` in [0, 1] or as a PNG grid.

    keras-vae sample runs/mnist --num 64 --output samples.png
    keras-vae sample runs/cvae --label 7 --num 16 --output sevens.npy
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from keras_vae._internal import atomic, figures
from keras_vae.models.kind import kind_of
from keras_vae.runs import directory as runs
from keras_vae.runs.config import ConfigError
from keras_vae.workflows.arguments import add_seed_argument

SUFFIXES = (".npy", ".png")


def sample_run(run_dir, num: int = 64, seed: int = 0, labels=None) -> np.ndarray:
    """`num` images from the model of a run directory, `[num, *image_shape]`."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ConfigError(f"--num must be a positive int. Received: {num!r}")
    model, config = runs.load_run(run_dir)
    kind = kind_of(config)
    if labels is not None and not kind.uses_labels(config):
        raise ConfigError(f"--label applies to a conditional run; {run_dir} has no labels.")
    return kind.sample(model, num, seed=seed, labels=labels)


def write_images(images: np.ndarray, path: str | Path) -> Path:
    """`.npy` (the array, float32) or `.png` (a tiled grid), atomically."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"--output must end in .npy or .png. Received: {path}")
    if path.suffix == ".png":
        return figures.write_png(figures.tile_images(images), path)
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.asarray(images, np.float32))
    return path


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="run directory written by `keras-vae train`")
    parser.add_argument("--output", type=Path, required=True, metavar="FILE",
                        help="FILE.npy or FILE.png")  # fmt: skip
    parser.add_argument("--num", type=int, default=64, metavar="N",
                        help="images to draw (default: 64)")  # fmt: skip
    parser.add_argument(
        "--label", type=int, default=None, metavar="N",
        help="conditional runs: the class to draw (default: the classes in turn)",
    )  # fmt: skip
    add_seed_argument(parser, "the draws")


def run_cli(args: argparse.Namespace) -> int:
    images = sample_run(args.run_dir, args.num, args.seed,
                        None if args.label is None else [args.label])  # fmt: skip
    path = write_images(images, args.output)
    print(f"keras-vae sample: wrote {path} ({len(images)} images {images.shape[1:]})")
    return 0
