"""Reruns the settings of Figure 2 of the AEVB paper (Kingma & Welling, 2014).

Figure 2 plots the variational lower bound (ELBO) on the training and test sets against the
number of training samples evaluated, for several latent sizes:

* MNIST: static binarized MNIST (`binarized_mnist`), Bernoulli decoder, 500 tanh hidden
  units in encoder and decoder, latent sizes 3, 5, 10, 20 (the paper adds 200: `--latents`);
* Frey Face: Gaussian decoder (learned variance), 200 hidden units, latent sizes 2, 5, 10, 20.

Each model is `keras_vae.mlp_vae`, trained with `VAE.fit` (the model's own `train_step`) in
chunks that end at log-spaced numbers of samples seen; after every chunk `VAE.evaluate`
gives the ELBO (nats per example, one sample of z) on fixed subsets of the training and test
sets (`--eval-examples`). The paper trained to 1e8 samples with Adagrad and a weight prior
N(0, I); the default here is a quick 1e6 samples with Adam, the package's default optimizer
(`--optimizer adagrad --learning-rate 0.02` is closer to the paper). `--weight-decay` stands in
for that prior: decoupled decay, theta -= lr * wd * theta per step (the prior itself would add
theta / N to the gradient in nats per example, before the optimizer rescales it).

Frey Face note: the pixels are grey levels / 255 modelled with keras_vae's
`GaussianLikelihood` (sigmoid mean, standard deviation softplus + 0.01). The floor bounds the
density: the ELBO can be at most 560 * -log(0.01 * sqrt(2 pi)) = 2,064 nats per image, so Frey
Face bounds are positive and not comparable in scale with MNIST's. The packaged Frey Face split
is contiguous (the last 393 frames are the test set); `--frey-split shuffled` draws a seeded
random split of the same sizes instead, where neighbouring, near-identical frames fall on both
sides (the paper does not say how it split).

Outputs in `--output`: `results.csv` (dataset, latent_dim, samples_seen, train_elbo,
test_elbo, wall_s; wall_s is cumulative `fit` time, evaluation excluded, tracing and XLA
compilation included in the first chunk), `results.md` (the
final values) and `figure2.png` (train solid, test dashed, one colour per latent size);
`models/` holds each model and its rows after every chunk, so a killed run resumes where it
stopped and a rerun with a larger `--samples-seen` extends the curves.

Usage (from the repository root):
    python benchmarks/reproduce_aevb.py --output runs/aevb                  # 1e6 samples
    python benchmarks/reproduce_aevb.py --samples-seen 20000 --latents 2 20 --output /tmp/a
    python benchmarks/reproduce_aevb.py --datasets mnist --samples-seen 1e8 --output runs/f2
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import keras_vae  # noqa: E402
from keras_vae.data import pipeline as kv_data  # noqa: E402

CSV_FIELDS = ("dataset", "latent_dim", "samples_seen", "train_elbo", "test_elbo", "wall_s")


@dataclass(frozen=True)
class Experiment:
    """One panel of Figure 2."""

    key: str  # command-line name
    title: str
    tfds_name: str
    likelihood: str
    hidden_units: int
    latents: tuple[int, ...]


EXPERIMENTS = {
    "mnist": Experiment("mnist", "MNIST", "binarized_mnist", "bernoulli", 500, (3, 5, 10, 20)),
    "frey": Experiment("frey", "Frey Face", "frey_face", "gaussian", 200, (2, 5, 10, 20)),
}


def checkpoints(total: int, batch_size: int, first: int, per_decade: int) -> list[int]:
    """Log-spaced numbers of samples seen, in whole batches, from `first` to `total`.

    Every value is a multiple of `batch_size`, the values increase strictly, and the last
    one is `total` rounded up to whole batches.
    """
    last = math.ceil(total / batch_size) * batch_size
    first = min(max(first, batch_size), last)
    count = max(1, round(per_decade * math.log10(last / first))) + 1
    points = np.geomspace(first, last, count)
    result: list[int] = []
    for point in points:
        value = max(batch_size, round(point / batch_size) * batch_size)
        if not result or value > result[-1]:
            result.append(value)
    result[-1] = last
    return result


def load_experiment_data(
    experiment: Experiment, args: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test images of one data set through `keras_vae.data.load_images`."""
    if experiment.key == "frey":
        options = {"data_dir": args.frey_data_dir, "manual_dir": args.manual_dir}
    else:
        options = {"data_dir": args.data_dir}
    train = kv_data.load_images(experiment.tfds_name, split="train", **options)
    test = kv_data.load_images(experiment.tfds_name, split="test", **options)
    if experiment.key == "frey" and args.frey_split == "shuffled":
        return shuffled_split(train, test, args.seed)
    return train, test


def shuffled_split(train: np.ndarray, test: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random partition of train + test into new splits of the same two sizes.

    For Frey Face this puts near-duplicate neighbouring video frames on both sides, so the
    test bound tracks the training bound; the packaged split is contiguous to avoid exactly
    that. The paper does not say which it used.
    """
    images = np.concatenate([train, test])
    order = np.random.default_rng(seed).permutation(len(images))
    return images[order[: len(train)]], images[order[len(train) :]]


def make_optimizer(
    name: str, learning_rate: float, weight_decay: float | None = None
) -> keras.optimizers.Optimizer:
    """Adam or Adagrad; `weight_decay` is decoupled: every step theta -= lr * wd * theta."""
    optimizer = keras.optimizers.Adagrad if name == "adagrad" else keras.optimizers.Adam
    return optimizer(learning_rate, weight_decay=weight_decay or None)


def evaluate_elbo(vae: keras_vae.VAE, dataset) -> float:
    """Mean ELBO in nats per example over `dataset` (one sample of z per example)."""
    return float(vae.evaluate(dataset, verbose=0, return_dict=True)["elbo"])


def _model_state(output: Path, experiment: Experiment, latent_dim: int) -> Path:
    return output / "models" / f"{experiment.key}_z{latent_dim}"


def _load_state(state: Path) -> tuple[keras_vae.VAE | None, list[dict]]:
    """The model and result rows saved after the last finished chunk, if any."""
    rows_path, model_path = state / "rows.csv", state / "model.keras"
    if not (rows_path.is_file() and model_path.is_file()):
        return None, []
    return keras.saving.load_model(model_path), read_results(rows_path)


def _save_state(state: Path, vae: keras_vae.VAE, rows: list[dict]) -> None:
    """Model (weights and optimizer state) and rows, each replaced atomically."""
    state.mkdir(parents=True, exist_ok=True)
    partial = state / "model.partial.keras"
    vae.save(partial)
    os.replace(partial, state / "model.keras")
    partial = state / "rows.partial.csv"
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, state / "rows.csv")


def _typed(row: dict) -> dict:
    kinds = {"latent_dim": int, "samples_seen": int}
    return {k: kinds.get(k, float)(v) if k != "dataset" else v for k, v in row.items()}


def run_model(
    experiment: Experiment,
    latent_dim: int,
    train: np.ndarray,
    test: np.ndarray,
    args: argparse.Namespace,
) -> list[dict]:
    """Trains one model up to `args.samples_seen` samples; one result row per checkpoint.

    After every chunk the model (with its optimizer state) and the rows so far are saved in
    `OUTPUT/models/{dataset}_z{latent_dim}/`; a rerun resumes from there (the input order of
    the resumed part is a fresh shuffle), and a rerun with a larger `--samples-seen` extends
    the curve.
    """
    keras.utils.set_random_seed(args.seed)
    state = _model_state(Path(args.output), experiment, latent_dim)
    vae, rows = _load_state(state)
    if vae is None:
        vae = keras_vae.mlp_vae(
            train.shape[1:],
            latent_dim=latent_dim,
            hidden_units=experiment.hidden_units,
            likelihood=experiment.likelihood,
            seed=args.seed,
        )
        vae.compile(optimizer=make_optimizer(args.optimizer, args.learning_rate, args.weight_decay))
    seen = rows[-1]["samples_seen"] if rows else 0
    wall = rows[-1]["wall_s"] if rows else 0.0
    if rows:
        print(f"{experiment.title:>9}  N_z={latent_dim:<3}  resumed at {seen:,} samples")
    train_ds = kv_data.make_dataset(
        train,
        batch_size=args.batch_size,
        shuffle=True,
        seed=args.seed + seen,
        repeat=True,
        drop_remainder=True,
    )
    eval_sets = {
        name: kv_data.make_dataset(
            images[: args.eval_examples], batch_size=args.eval_batch_size, shuffle=False
        )
        for name, images in (("train", train), ("test", test))
    }
    points = checkpoints(args.samples_seen, args.batch_size, args.first_eval, args.per_decade)
    for target in (p for p in points if p > seen):
        start = time.perf_counter()
        vae.fit(
            train_ds,
            epochs=1,
            steps_per_epoch=(target - seen) // args.batch_size,
            shuffle=False,
            verbose=0,
        )
        wall += time.perf_counter() - start
        seen = target
        row = {
            "dataset": experiment.key,
            "latent_dim": latent_dim,
            "samples_seen": seen,
            "train_elbo": evaluate_elbo(vae, eval_sets["train"]),
            "test_elbo": evaluate_elbo(vae, eval_sets["test"]),
            "wall_s": round(wall, 2),
        }
        rows.append(row)
        _save_state(state, vae, rows)
        print(
            f"{experiment.title:>9}  N_z={latent_dim:<3}  samples {seen:>12,}  "
            f"train ELBO {row['train_elbo']:9.2f}  test ELBO {row['test_elbo']:9.2f} nats  "
            f"({wall:.0f} s training)",
            flush=True,
        )
    return rows


def write_markdown(rows: list[dict], path: Path, args: argparse.Namespace) -> None:
    """`results.md`: the final train/test ELBO of every model."""
    final: dict[tuple[str, int], dict] = {}
    for row in rows:
        final[(row["dataset"], row["latent_dim"])] = row
    lines = [
        f"Final ELBO (nats per example; mean over the first {args.eval_examples:,} images of "
        f"each split, one sample of z), batch {args.batch_size}, {args.optimizer} "
        f"lr {args.learning_rate:g}, weight decay {args.weight_decay:g}, seed {args.seed}, "
        f"Frey Face split {args.frey_split}.",
        "",
        "| dataset | latent_dim | samples seen | train ELBO | test ELBO | training s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in final.values():
        lines.append(
            f"| {EXPERIMENTS[row['dataset']].title} | {row['latent_dim']} | "
            f"{row['samples_seen']:,} | {row['train_elbo']:.2f} | {row['test_elbo']:.2f} | "
            f"{row['wall_s']:.0f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def plot_figure2(rows: list[dict], path: Path) -> None:
    """`figure2.png`: ELBO against samples seen, like the paper's Figure 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure2(rows)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure2(rows: list[dict], title: str | None = None):
    """A matplotlib figure of the rows: one panel per data set, train solid, test dashed."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    datasets = [key for key in EXPERIMENTS if any(r["dataset"] == key for r in rows)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, key in zip(axes[0], datasets, strict=True):
        latents = sorted({r["latent_dim"] for r in rows if r["dataset"] == key})
        colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(latents)))
        handles = []
        for latent, colour in zip(latents, colours, strict=True):
            series = [r for r in rows if r["dataset"] == key and r["latent_dim"] == latent]
            x = [r["samples_seen"] for r in series]
            ax.plot(x, [r["train_elbo"] for r in series], "-", color=colour, marker=".")
            ax.plot(x, [r["test_elbo"] for r in series], "--", color=colour, marker=".")
            handles.append(Line2D([], [], color=colour, label=f"$N_z$ = {latent}"))
        handles += [
            Line2D([], [], color="black", linestyle="-", label="train"),
            Line2D([], [], color="black", linestyle="--", label="test"),
        ]
        ax.set_xscale("log")
        ax.set_xlabel("# training samples evaluated")
        ax.set_ylabel("ELBO (nats per example)")
        ax.set_title(EXPERIMENTS[key].title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(handles=handles, fontsize="small", loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def read_results(path: Path) -> list[dict]:
    """The rows of a `results.csv`, with numbers as numbers."""
    with Path(path).open(newline="") as handle:
        return [_typed(row) for row in csv.DictReader(handle)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = REPO_ROOT.parent / "shared"
    parser.add_argument("--output", required=True, help="directory for the results")
    parser.add_argument(
        "--datasets", nargs="+", choices=sorted(EXPERIMENTS), default=["mnist", "frey"]
    )
    parser.add_argument("--latents", type=int, nargs="+", help="override the latent sizes")
    parser.add_argument(
        "--samples-seen", type=float, default=1e6, help="training samples per model (paper: 1e8)"
    )
    parser.add_argument("--first-eval", type=float, default=1e4, help="first evaluation point")
    parser.add_argument("--per-decade", type=int, default=3, help="evaluations per decade")
    parser.add_argument("--eval-examples", type=int, default=5000, help="subset size per split")
    parser.add_argument("--eval-batch-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--optimizer", choices=["adam", "adagrad"], default="adam")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--weight-decay", type=float, default=0.0, help="decoupled weight decay (0: none)"
    )
    parser.add_argument(
        "--frey-split",
        choices=["contiguous", "shuffled"],
        default="contiguous",
        help="Frey Face: the packaged contiguous split, or a seeded random one of the same sizes",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("TFDS_DATA_DIR") or str(shared / "tensorflow_datasets"),
        help="TFDS data dir holding binarized_mnist",
    )
    parser.add_argument(
        "--frey-data-dir",
        default=str(Path(tempfile.gettempdir()) / "keras_vae_tfds"),
        help="writable TFDS data dir where frey_face is prepared",
    )
    parser.add_argument(
        "--manual-dir",
        default=str(shared / "data" / "frey_face"),
        help="directory holding frey_rawface.mat",
    )
    args = parser.parse_args(argv)
    args.samples_seen = int(args.samples_seen)
    args.first_eval = int(args.first_eval)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tfds.disable_progress_bar()
    from _machine import cpu_line

    print(cpu_line())
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    print(
        f"keras_vae {keras_vae.__version__}, Keras {keras.__version__}; "
        f"{args.samples_seen:,} samples per model, batch {args.batch_size}, "
        f"{args.optimizer} lr {args.learning_rate:g}, weight decay {args.weight_decay:g}, "
        f"Frey Face split {args.frey_split}; "
        "ELBO in nats per example"
    )
    rows: list[dict] = []
    csv_path = output / "results.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for key in args.datasets:
            experiment = EXPERIMENTS[key]
            train, test = load_experiment_data(experiment, args)
            print(f"{experiment.title}: {len(train):,} train / {len(test):,} test images")
            for latent_dim in args.latents or experiment.latents:
                for row in run_model(experiment, latent_dim, train, test, args):
                    writer.writerow(row)
                    rows.append(row)
                handle.flush()
    write_markdown(rows, output / "results.md", args)
    plot_figure2(rows, output / "figure2.png")
    print(f"\nWrote {csv_path}, {output / 'results.md'}, {output / 'figure2.png'}\n")
    print((output / "results.md").read_text())


if __name__ == "__main__":
    main()
