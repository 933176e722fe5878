"""Regenerates the pictures of README.md and the docs site (docs/images/*.png).

Each picture is drawn by the `keras-vae` command line from a short training run, so anyone can
redo them and get the same kind of picture (the runs are seeded; pixels may differ between
machines and TensorFlow versions):

    python docs/make_images.py                      # about 4 minutes on 2 CPU cores
    python docs/make_images.py --epochs-scale 0.2   # a quick check of the script itself

    samples.png      the paper's 784-500-20 model (ReLU) on binarized MNIST, `plot --kind samples`
    manifold.png     the same with 2 latents, `plot --kind manifold`
    conditional.png  a conditional VAE with p(z|y) per class, trained on the labelled test
                     split, `plot --kind samples` (one row per class)

Not drawn here: traversals-beta4.png and traversals-vae.png, `plot --kind traversals` of two
runs of the disentanglement table (half an hour of training each; docs/guide/results.md gives
the commands).

Data: binarized MNIST from tensorflow-datasets (`--data-dir`, default `$TFDS_DATA_DIR` or
`../shared/tensorflow_datasets`) and, for the labelled split, the raw files in
`--manual-dir` (default `../shared/data`; see `keras_vae.data.builders.labeled_binarized_mnist`).
Runs go to a temporary directory unless `--runs DIR` is given.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
CLI = "import sys; from keras_vae.cli import main; sys.exit(main(sys.argv[1:]))"


def keras_vae(*args: str) -> None:
    """Runs `keras-vae ARGS` in a fresh process (the console script's entry point)."""
    command = [sys.executable, "-c", CLI, *args]
    print("$ keras-vae " + " ".join(args), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("TFDS_DATA_DIR", str(ROOT.parent / "shared/tensorflow_datasets"))
    parser.add_argument("--data-dir", default=default_data)
    parser.add_argument("--manual-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--runs", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--output", type=Path, default=IMAGES, help="where the PNGs go")
    parser.add_argument(
        "--epochs-scale", type=float, default=1.0, help="scale every run's epochs (quick checks)"
    )
    args = parser.parse_args(argv)

    def epochs(n: int) -> str:
        return str(max(1, round(n * args.epochs_scale)))

    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="keras_vae_images_") as temporary:
        runs = args.runs or Path(temporary)
        common = ["--data-dir", args.data_dir, "--image-every", "0", "--quiet", "--overwrite"]

        # samples: the paper's MNIST model, ReLU bodies
        mnist = runs / "mnist"
        keras_vae("train", "--dataset", "binarized_mnist", "--activation", "relu",
                  "--epochs", epochs(10), "--output", str(mnist), *common)  # fmt: skip
        keras_vae("plot", str(mnist), "--kind", "samples", "--num", "64",
                  "--output", str(args.output / "samples.png"))  # fmt: skip

        # the 2-D latent manifold (the paper's Figure 4)
        manifold = runs / "mnist-2d"
        keras_vae("train", "--dataset", "binarized_mnist", "--activation", "relu",
                  "--latent-dim", "2", "--epochs", epochs(6), "--output", str(manifold),
                  *common)  # fmt: skip
        keras_vae("plot", str(manifold), "--kind", "manifold", "--num", "16",
                  "--output", str(args.output / "manifold.png"))  # fmt: skip

        # one row of samples per class: a conditional VAE on the labelled test split
        labelled = runs / "binarized_mnist_test_labeled.npz"
        subprocess.run(
            [sys.executable, "-m", "keras_vae.data.builders.labeled_binarized_mnist",
             "--manual-dir", args.manual_dir, "--output", str(labelled)],
            check=True, cwd=ROOT,
        )  # fmt: skip
        conditional = runs / "cvae"
        keras_vae("train", "--conditional", "--prior", "conditional", "--dataset", str(labelled),
                  "--validation-split", "0.1", "--activation", "relu", "--epochs", epochs(30),
                  "--output", str(conditional), *common[2:])  # fmt: skip
        keras_vae("plot", str(conditional), "--kind", "samples",
                  "--output", str(args.output / "conditional.png"))  # fmt: skip
    print(f"wrote {args.output}/samples.png, manifold.png, conditional.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
