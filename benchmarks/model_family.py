"""The model family on one small budget: static binarized MNIST, the same network and epochs
for every row, test ELBO and importance-sampled NLL, wall time.

Rows (all `keras_vae.mlp_vae` with gated MLP bodies, 784-300-300-40 as in the VampPrior paper,
Adam 1e-3, batch 100, `--epochs` passes over the 50,000 training images, seed 0, no model
selection):

* ELBO:       the AEVB objective, N(0, I) prior, diagonal q (the paper's model)
* IWAE k=5:   `objectives.IWAE(5)`
* VampPrior:  `prior="vamp"`, 500 pseudo-inputs started from training images
* warm-up:    the ELBO with beta rising from 0 to 1 over the first `--warmup-epochs` epochs

Each row trains, is saved as `OUTPUT/<row>/model.keras` with its wall time, then is evaluated
on all 10,000 test images with `keras_vae.evaluation.evaluate` (K = `--importance-samples`).
A rerun skips what is done (kill it at any moment and rerun the same command).

Negative result behind the choice of bodies: with the IWAE paper's tanh MLPs (784-200-200-50)
the VampPrior row collapsed (KL below 0.01 nats from the second epoch on, ELBO stuck at the
pixel marginal, -207 nats), with or without KL warm-up and with pseudo-inputs started from
data or from N(0.05, 0.01); with gated bodies it trains (`--network tanh` reruns that table).

Usage (from the repository root):
    python benchmarks/model_family.py --output runs/family --epochs 20
    python benchmarks/model_family.py --output /tmp/f --epochs 1 --limit 2000 --eval-limit 500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_vae  # noqa: E402
from keras_vae.data import pipeline as data  # noqa: E402
from keras_vae.models.vae import evaluation  # noqa: E402
from keras_vae.parts import objectives  # noqa: E402
from keras_vae.runs import directory as runs  # noqa: E402

ROWS = ("elbo", "iwae5", "vamp", "warmup")
NETWORKS = {"gated": "gated MLPs 784-300-300-40", "tanh": "tanh MLPs 784-200-200-50"}
LABELS = {
    "elbo": "ELBO (AEVB), N(0, I) prior",
    "iwae5": "IWAE k=5",
    "vamp": "VampPrior, 500 pseudo-inputs",
    "warmup": "ELBO with KL warm-up",
}


def build(row: str, args, x_train: np.ndarray) -> keras_vae.VAE:
    steps = -(-len(x_train) // args.batch_size)
    options = {
        "elbo": {},
        "iwae5": {"objective": objectives.IWAE(5)},
        "vamp": {"prior": "vamp", "prior_components": 500},
        "warmup": {"objective": objectives.ELBO(warmup_steps=args.warmup_epochs * steps)},
    }[row]
    bodies = {
        "gated": {"network": "gated_mlp", "activation": "linear", "hidden_units": [300, 300],
                  "latent_dim": 40},
        "tanh": {"network": "mlp", "activation": "tanh", "hidden_units": [200, 200],
                 "latent_dim": 50},
    }[args.network]  # fmt: skip
    model = keras_vae.mlp_vae((28, 28, 1), seed=args.seed, **bodies, **options)
    model.build((None, 28, 28, 1))
    if row == "vamp":
        pick = np.random.default_rng(args.seed).choice(len(x_train), 500, replace=False)
        model.prior.set_pseudo_inputs(x_train[pick])
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), steps_per_execution=10)
    return model


def train_row(row: str, args, x_train, x_valid, out: Path) -> None:
    keras.utils.set_random_seed(args.seed)
    model = build(row, args, x_train)
    train_ds = data.make_dataset(x_train, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    valid_ds = data.make_dataset(x_valid, batch_size=1000, shuffle=False)
    start = time.perf_counter()
    history = model.fit(
        train_ds, epochs=args.epochs, validation_data=valid_ds, shuffle=False, verbose=2
    )
    wall = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    runs.save_model(model, out / "model.keras")
    summary = {"train_seconds": round(wall, 1), "epochs": args.epochs,
               "validation_elbo": float(history.history["val_elbo"][-1])}  # fmt: skip
    runs.atomic_write_json(out / "train.json", summary)


def evaluate_row(args, x_test, out: Path) -> None:
    model = runs.load_model(out / "model.keras")
    start = time.perf_counter()
    result = evaluation.evaluate(model, x_test, importance_samples=args.importance_samples)
    result["eval_seconds"] = round(time.perf_counter() - start, 1)
    runs.atomic_write_json(out / "eval.json", result)


def table(args, output: Path) -> str:
    lines = [
        f"Static binarized MNIST, {NETWORKS[args.network]}, {args.epochs} epochs, batch "
        f"{args.batch_size}; test NLL with K = {args.importance_samples}.",
        "",
        "| row | test ELBO | test NLL | train wall time |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in ROWS:
        train_file, eval_file = output / row / "train.json", output / row / "eval.json"
        if not eval_file.exists():
            continue
        t, e = json.loads(train_file.read_text()), json.loads(eval_file.read_text())
        lines.append(
            f"| {LABELS[row]} | {e['elbo']:.2f} | {e['nll']:.2f} +- {e['nll_stderr']:.2f} | "
            f"{t['train_seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--network", choices=sorted(NETWORKS), default="gated")
    parser.add_argument("--warmup-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--importance-samples", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="training images (quick runs)")
    parser.add_argument("--eval-limit", type=int, default=None, help="test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR"))
    args = parser.parse_args(argv)
    from _machine import cpu_line

    print(cpu_line())
    load = lambda split, limit=None: data.load_images(  # noqa: E731
        "binarized_mnist", split, data_dir=args.data_dir, limit=limit
    )
    x_train, x_valid = load("train", args.limit), load("validation")
    x_test = load("test", args.eval_limit)
    for row in args.rows:
        out = args.output / row
        if not (out / "train.json").exists():
            print(f"== training {row}", flush=True)
            train_row(row, args, x_train, x_valid, out)
        if not (out / "eval.json").exists():
            print(f"== evaluating {row}", flush=True)
            evaluate_row(args, x_test, out)
        print(table(args, args.output), flush=True)
    (args.output / "results.md").write_text(table(args, args.output) + "\n")


if __name__ == "__main__":
    main()
