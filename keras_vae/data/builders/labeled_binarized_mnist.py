"""The static binarized MNIST test split with its class labels, offline, as an `.npz` file.

The test file of the static binarization (Larochelle & Murray), `binarized_mnist_test.amat`,
is sorted by class: all the zeros, then all the ones, ..., with the class counts of the MNIST
test labels. Its labels are therefore `np.sort(t10k_labels)`, row for row (t10k_labels from
MNIST's `t10k-labels-idx1-ubyte.gz`). TFDS's `binarized_mnist` stores the split in another
order and without labels, so they are attached here by reading the `.amat` file. (The train
and validation files are shuffled and have no recoverable labels.)

`write_npz` saves `x` (float32 in {0, 1}, `[10000, 28, 28, 1]`) and `y` (int64 class labels)
in a random order (seeded): the file is no longer sorted by class, so that the held-out last
part of `--validation-split` holds every class.

Command line (nothing is copied into the project; the `.npz` goes where you say):

    python -m keras_vae.datasets.labeled_binarized_mnist --manual-dir ../shared/data \
        --output /tmp/binarized_mnist_test_labeled.npz
    keras-vae train --conditional --dataset /tmp/binarized_mnist_test_labeled.npz ...

`--manual-dir` holds `binarized_mnist_test.amat` and `t10k-labels-idx1-ubyte.gz`, directly or
in its `binarized_mnist/` and `mnist/` folders.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

AMAT = "binarized_mnist_test.amat"
LABELS = "t10k-labels-idx1-ubyte.gz"
NUM_EXAMPLES = 10_000


def _find(manual_dir: Path, name: str, folder: str) -> Path:
    for path in (manual_dir / name, manual_dir / folder / name):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{name} is neither in {manual_dir} nor in {manual_dir / folder}; give --manual-dir "
        "the folder of the raw files (e.g. ../shared/data)."
    )


def read_idx_labels(path: str | Path) -> np.ndarray:
    """MNIST labels from an IDX1 file (gzip): magic 2049, count, then one uint8 per label."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    magic, count = int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:8], "big")
    if magic != 2049 or len(raw) != 8 + count:
        raise ValueError(f"{path} is not an IDX1 label file (magic {magic}, {len(raw)} bytes).")
    return np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)


def load(manual_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The binarized MNIST test images, in the `.amat` file's (class-sorted) order, and
    their labels `np.sort(t10k_labels)`.

    Returns:
        `(x, y)`: float32 `[10000, 28, 28, 1]` in {0, 1} and int64 `[10000]`.
    """
    manual_dir = Path(manual_dir).expanduser()
    labels = np.sort(read_idx_labels(_find(manual_dir, LABELS, "mnist")))
    x = np.loadtxt(_find(manual_dir, AMAT, "binarized_mnist"), dtype=np.float32)
    if x.shape != (NUM_EXAMPLES, 784) or len(labels) != NUM_EXAMPLES:
        raise ValueError(
            f"Expected {NUM_EXAMPLES} images of 784 pixels and as many labels. Received: "
            f"images {x.shape}, labels {labels.shape}"
        )
    return x.reshape(-1, 28, 28, 1), labels


def write_npz(manual_dir: str | Path, output: str | Path, seed: int | None = 0) -> Path:
    """Writes `load(manual_dir)` to `output` (`np.savez`: keys `x` and `y`), shuffled with
    `seed` (None: kept sorted by class). Returns the path."""
    x, y = load(manual_dir)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(x))
        x, y = x[order], y[order]
    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as handle:  # savez would append .npz to a name without it
        np.savez(handle, x=x, y=y)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manual-dir", required=True, type=Path, help="folder of the raw files")
    parser.add_argument("--output", required=True, type=Path, help=".npz file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    parser.add_argument("--sorted", action="store_true", help="keep the class-sorted order")
    args = parser.parse_args(argv)
    try:
        path = write_npz(args.manual_dir, args.output, None if args.sorted else args.seed)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} (x: 10000 binarized MNIST test images, y: their class labels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
