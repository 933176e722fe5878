"""`keras-vae encode RUN_DIR DATA --output latents.npz`: the representation of each image of
DATA (a split of the run's data, e.g. `test`, or an `.npz`/`.npy` file), as the run's kind
gives it (`ModelKind.encode`: a VAE's posterior mean and parameters, a VQ-VAE's codes), with
the labels where the data have them; with `--projector DIR`, also a TensorBoard Projector
view of the first representation (embedding checkpoint, `metadata.tsv` labels, sprite image).

    keras-vae encode runs/mnist test --output latents.npz --projector runs/mnist/projector
    tensorboard --logdir runs/mnist/projector
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from keras_vae._internal import atomic, figures
from keras_vae.data import pipeline as data
from keras_vae.models.kind import kind_of
from keras_vae.runs import directory as runs
from keras_vae.runs.config import ConfigError
from keras_vae.runs.splits import load_labeled_split, load_split
from keras_vae.workflows.arguments import add_data_dir_argument, add_limit_argument

PROJECTOR_MAX = 10_000  # images in the Projector's sprite (at most 8192 x 8192 pixels)


def encode_run(run_dir, source: str = "test", *, data_dir=None, limit: int | None = None):
    """Encodes DATA with the model of a run directory.

    Returns:
        `(arrays, images, labels)`: the kind's arrays by name (one row per image), the
        images and their labels (None where the data have none).
    """
    model, config = runs.load_run(run_dir, data_dir)
    kind = kind_of(config)
    split = source
    if source.lower().endswith(data.ARRAY_EXTENSIONS):  # a file: all of it
        config = config.replace(dataset=source, eval_data=None, validation_split=None,
                                limit=None, eval_split="train")  # fmt: skip
        split = "train"
    likelihood = kind.likelihood_name(model)
    try:
        images, labels = load_labeled_split(config, split, likelihood)
    except data.DataValidationError:
        if kind.uses_labels(config):
            raise
        images, labels = load_split(config, split, likelihood), None
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be a positive int. Received: {limit}")
        images, labels = images[:limit], (None if labels is None else labels[:limit])
    used = labels if kind.uses_labels(config) else None
    return kind.encode(model, images, used), images, labels


def write_npz(path, arrays: dict, labels) -> Path:
    """The arrays (and `labels`) as an uncompressed `.npz`, atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"--output must end in .npz. Received: {path}")
    extra = {} if labels is None else {"labels": np.asarray(labels)}
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays, **extra)
    return path


def write_projector(directory, vectors: np.ndarray, images, labels) -> Path:
    """TensorBoard Projector files for the first `PROJECTOR_MAX` rows: the embedding as a
    checkpointed variable, one label per row (`metadata.tsv`) and the sprite of the images."""
    import tensorflow as tf
    from tensorboard.plugins import projector

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    count = min(len(vectors), PROJECTOR_MAX)
    vectors = np.asarray(vectors[:count], np.float32).reshape(count, -1)
    thumbs = np.asarray(images[:count], np.float32)
    side = math.ceil(math.sqrt(count))
    sprite = figures.tile_images(thumbs, num_cols=side, padding=0, pad_value=0.0)
    figures.write_png(sprite, directory / "sprite.png")
    names = labels[:count] if labels is not None else np.arange(count)
    atomic.write_text(directory / "metadata.tsv", "".join(f"{v}\n" for v in np.asarray(names)))
    embedding = tf.Variable(vectors, name="embedding")
    tf.train.Checkpoint(embedding=embedding).save(str(directory / "embedding.ckpt"))
    config = projector.ProjectorConfig()
    view = config.embeddings.add()
    view.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    view.metadata_path = "metadata.tsv"
    view.sprite.image_path = "sprite.png"
    height, width = figures.display_shape(thumbs.shape[1:])[:2]
    view.sprite.single_image_dim.extend([width, height])
    projector.visualize_embeddings(str(directory), config)
    return directory


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="run directory written by `keras-vae train`")
    parser.add_argument(
        "data", nargs="?", default="test",
        help="a split of the run's data (default: test) or an .npz/.npy file of images",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, required=True, metavar="FILE",
                        help="FILE.npz to write")  # fmt: skip
    add_limit_argument(parser, "images")
    parser.add_argument(
        "--projector", type=Path, default=None, metavar="DIR",
        help="also write a TensorBoard Projector view there (tensorboard --logdir DIR)",
    )  # fmt: skip
    add_data_dir_argument(parser)


def run_cli(args: argparse.Namespace) -> int:
    arrays, images, labels = encode_run(args.run_dir, args.data, data_dir=args.data_dir,
                                        limit=args.limit)  # fmt: skip
    path = write_npz(args.output, arrays, labels)
    shapes = ", ".join(f"{name} {value.shape}" for name, value in arrays.items())
    print(f"keras-vae encode: wrote {path} ({shapes}{', labels' * (labels is not None)})")
    if args.projector is not None:
        first = next(iter(arrays.values()))
        write_projector(args.projector, first, images, labels)
        print(f"TensorBoard Projector: tensorboard --logdir {args.projector}")
    return 0
