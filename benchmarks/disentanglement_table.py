"""The disentanglement results table (issue 31): the plain VAE, beta-VAE (beta 4 and 16),
beta-TCVAE, FactorVAE and the capacity-annealed beta-VAE on the offline dSprites grid, with
the five metrics of `keras-vae evaluate RUN --disentanglement` and the reconstruction error.

Every row is the command line a user would type, in a fresh process:

    keras-vae train --dataset DATASET --objective ... --seed S --output OUTPUT/<row>-s<S>
    keras-vae evaluate OUTPUT/<row>-s<S> --disentanglement --json

with one network for all rows (the MLP of disentanglement_lib's beta-VAE baselines: 1200-1200
ReLU, 10 latents, Bernoulli pixels, Adam 1e-3, batch 64) and a wall-clock cap per run
(`--minutes`, at most the issue's 30). The table gives, per row, the mean and the spread
(sample standard deviation; one seed: none) of MIG, DCI disentanglement, SAP, the beta-VAE
and FactorVAE scores, and the reconstruction error E_q[-log p(x|z)] in nats per image on the
training images (the grid *is* the data set: there is no held-out part of a factor grid).

On the full 737,280-image grid an epoch is 11,520 steps of 64, and the end-of-epoch
validation pass and the final metrics over the whole grid cost minutes: `--steps-per-epoch`
cuts the epochs short and `--eval-split` validates on a slice (the table's reconstruction
error is still the final one over the whole training split). Every row gets the same number
of steps, so a row's result does not depend on how loaded the machine was (the minutes are
then only a guard: the table records the steps each run made and its wall time).

A rerun skips the runs whose `eval_disentanglement.json` exists and resumes an interrupted
training (the CLI's resume): kill it at any moment and rerun the same command. Results go to
`OUTPUT/table.json` after every run, beside those of earlier invocations on the same OUTPUT.

    python benchmarks/disentanglement_table.py --output runs/disentangle
    python benchmarks/disentanglement_table.py --output /tmp/d --epochs 1 --samples 200 --rows vae
    python benchmarks/disentanglement_table.py ... --rows vae beta4 --seeds 1 2  # later seeds
    python benchmarks/disentanglement_table.py --output runs/disentangle-full \
        --dataset synthetic_dsprites --epochs 6 --steps-per-epoch 5000 --minutes 90 \
        --eval-split "train[:2000]"
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_info  # noqa: E402

#: row -> (label, `keras-vae train` options, seeds)
ROWS = {
    "vae": ("VAE (ELBO)", ["--objective", "elbo"], (0, 1, 2)),
    "beta4": ("beta-VAE, beta 4", ["--objective", "elbo", "--beta", "4"], (0, 1, 2)),
    "beta16": ("beta-VAE, beta 16", ["--objective", "elbo", "--beta", "16"], (0,)),
    "betatc": ("beta-TCVAE, beta 6", ["--objective", "betatc", "--tc-weight", "6"], (0, 1, 2)),
    "factorvae": ("FactorVAE, gamma 10", ["--objective", "factorvae", "--tc-weight", "10"], (0,)),
    "annealed": (
        "annealed capacity, C 25 nats",
        ["--objective", "annealed_capacity", "--capacity", "25", "--capacity-weight", "1000"],
        (0,),
    ),
}
NETWORK = ["--hidden-units", "1200", "1200", "--activation", "relu", "--latent-dim", "10",
           "--batch-size", "64", "--learning-rate", "1e-3"]  # fmt: skip
METRICS = (("MIG", "mig"), ("DCI", "dci_disentanglement"), ("SAP", "sap"),
           ("beta-VAE", "beta_vae"), ("FactorVAE", "factor_vae"))  # fmt: skip


def keras_vae(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """`keras-vae ARGS` in a fresh process (its progress shown; stdout captured if asked)."""
    command = [str(Path(sys.executable).parent / "keras-vae"), *args]  # the installed script
    stdout = subprocess.PIPE if capture else None
    return subprocess.run(command, stdout=stdout, text=True, check=False, cwd=REPO_ROOT)


def run_one(row: str, seed: int, args) -> dict:
    """Trains (or resumes) and scores one run; returns its results, read back from disk."""
    run_dir = args.output / f"{row}-s{seed}"
    scores_file = run_dir / "eval_disentanglement.json"
    if not scores_file.exists():
        capacity_epochs = ["--capacity-epochs", str(max(1, args.epochs * 3 // 4))]
        options = ROWS[row][1] + (capacity_epochs if row == "annealed" else [])
        train = ["train", "--dataset", args.dataset, "--seed", str(seed), "--epochs",
                 str(args.epochs), "--time-budget-minutes", str(args.minutes),
                 "--image-every", "0", "--output", str(run_dir), *NETWORK, *options]  # fmt: skip
        train += ["--data-dir", str(args.data_dir)]
        if args.steps_per_epoch:
            train += ["--steps-per-epoch", str(args.steps_per_epoch)]
        if args.eval_split:
            train += ["--eval-split", args.eval_split]
        done = keras_vae(*train)
        if done.returncode != 0:
            raise SystemExit(f"{row} seed {seed}: training failed (exit {done.returncode})")
        score = ["evaluate", str(run_dir), "--disentanglement", "--json",
                 "--disentanglement-samples", str(args.samples)]  # fmt: skip
        scored = keras_vae(*score, capture=True)
        if scored.returncode != 0:
            raise SystemExit(f"{row} seed {seed}: evaluation failed (exit {scored.returncode})")
    scores = json.loads(scores_file.read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        **{key: scores[key] for _, key in METRICS},
        "reconstruction": -metrics["train_reconstruction"],
        "kept_epoch": metrics.get("kept_epoch"),
        "epochs": metrics.get("epochs"),
        "steps": _steps(run_dir),
        "train_seconds": _train_seconds(run_dir),
    }


def _train_seconds(run_dir: Path) -> float:
    """Wall-clock seconds of the run's epochs, summed over its resumes (history.csv)."""
    with open(run_dir / "history.csv", newline="") as file:
        return round(sum(float(row["epoch_seconds"]) for row in csv.DictReader(file)), 1)


def _steps(run_dir: Path) -> int | None:
    """Training steps the run made: its config's steps per epoch times its epochs."""
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    per_epoch = config.get("steps_per_epoch")
    return None if per_epoch is None else int(per_epoch) * int(metrics["epochs"])


def summary(values: list[float]) -> str:
    """'mean' for one value, 'mean ± sample std' for several."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.3f} ± {spread:.3f}"


def table(results: dict) -> str:
    """A Markdown table of every row with at least one finished seed."""
    head = ["model", "seeds", *(label for label, _ in METRICS), "reconstruction (nats)"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for row, (label, _, _) in ROWS.items():
        runs = [r for key, r in results.items() if key.startswith(f"{row}-s")]
        if runs:
            cells = [summary([r[key] for r in runs]) for _, key in METRICS]
            recon = summary([r["reconstruction"] for r in runs])
            lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + f" | {recon} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="runs and table.json")
    parser.add_argument("--dataset", default="synthetic_dsprites/small")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the grid is generated (default: OUTPUT/tensorflow_datasets;"
        " never a shared tfds directory)",
    )
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock cap per run")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="passed to train")
    parser.add_argument("--eval-split", default=None, help="validation split (train's default)")
    parser.add_argument("--samples", type=int, default=10_000, help="--disentanglement-samples")
    parser.add_argument("--rows", nargs="+", choices=tuple(ROWS), default=list(ROWS))
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None, help="only these of each row's seeds"
    )
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    args.data_dir = args.data_dir or args.output / "tensorflow_datasets"
    machine = cpu_info()
    print(f"CPU: {machine['model_name']} ({machine['cpus']} CPUs); load "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    table_file = args.output / "table.json"
    # the runs an earlier invocation (other --rows or --seeds) recorded in the same table stay
    results = json.loads(table_file.read_text())["runs"] if table_file.exists() else {}
    # every row's first seed before any second seed: an interrupted table has every row
    for seed_index in range(3):
        for row in args.rows:
            seeds = [s for s in ROWS[row][2] if args.seeds is None or s in args.seeds]
            if seed_index < len(seeds):
                key = f"{row}-s{seeds[seed_index]}"
                print(f"[{key}] ...", flush=True)
                results[key] = run_one(row, seeds[seed_index], args)
                document = {"machine": machine, "argv": sys.argv[1:], "runs": results}
                table_file.write_text(json.dumps(document, indent=1, sort_keys=True))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
