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
from keras_vae.runs.splits import open_split
from keras_vae.workflows.arguments import add_data_dir_argument, add_limit_argument

PROJECTOR_MAX = 10_000  # images in the Projector's sprite (at most 8192 x 8192 pixels)
ENCODE_BATCH = 1000  # images read and encoded at a time


def encode_run(run_dir, source: str = "test", *, data_dir=None, limit: int | None = None):
    """Encodes DATA with the model of a run directory, streaming it: the split is read once,
    `ENCODE_BATCH` images at a time, so memory holds the representations, not the images
    (the 737,280 64x64 images of `synthetic_dsprites/full` would take 12 GB as float32).

    Returns:
        `(arrays, images, labels)`: the kind's arrays by name (one row per image), the first
        `PROJECTOR_MAX` images (what the Projector's sprite shows) and all the labels (None
        where the data have none).
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be a positive int. Received: {limit}")
    model, config = runs.load_run(run_dir, data_dir)
    kind = kind_of(config)
    split = source
    if source.lower().endswith(data.ARRAY_EXTENSIONS):  # a file: all of it
        config = config.replace(dataset=source, eval_data=None, validation_split=None,
                                limit=None, eval_split="train")  # fmt: skip
        split = "train"
    likelihood = kind.likelihood_name(model)
    try:
        images = open_split(config, split, likelihood, labels=True, limit=limit)
    except data.DataValidationError:
        if kind.uses_labels(config):
            raise
        images = open_split(config, split, likelihood, limit=limit)
    found: dict[str, list] = {}
    shown, labels, done = [], [], 0
    for x, y in data.batches(images, ENCODE_BATCH):
        used = y if kind.uses_labels(config) else None
        for name, value in kind.encode(model, x, used).items():
            found.setdefault(name, []).append(np.asarray(value))
        shown.append(x[: max(PROJECTOR_MAX - done, 0)])
        labels.append(y)
        done += len(x)
    if not done:
        raise ConfigError(f"{source} holds no images to encode.")
    arrays = {name: np.concatenate(parts) for name, parts in found.items()}
    has_labels = labels[0] is not None
    return arrays, np.concatenate(shown), (np.concatenate(labels) if has_labels else None)


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
