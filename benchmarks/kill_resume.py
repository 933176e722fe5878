"""Kill harness: SIGKILLs a real `keras-vae train` process at random moments, reruns the same
command each time, and checks that the run always finishes with a loadable model and a
continuous history. Prints how many kills were survived.

    python benchmarks/kill_resume.py --kills 20 --seed 0
    python benchmarks/kill_resume.py --kills 20 --options "--prior mixture --posterior full"

`--options` adds training options (the model's parts: any combination of `keras-vae train`'s
options); the finished run must hold them. The test suite runs the same harness with one kill
and a non-default combination (tests/runs/test_directory.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EPOCHS = 8
TRAIN_COMMAND = [
    sys.executable, "-m", "keras_vae.cli", "train", "--eval-split", "train", "--latent-dim",
    "2", "--hidden-units", "128", "--epochs", str(EPOCHS), "--batch-size", "16", "--seed", "0",
    "--steps-per-execution", "1", "--quiet",
]  # fmt: skip


def make_dataset(path: Path, examples: int = 6000) -> Path:
    """A random binary `.npz` data set, big enough for a training of ~15 s."""
    rng = np.random.default_rng(0)
    np.savez(path, x=(rng.uniform(size=(examples, 8, 8)) > 0.5).astype("uint8"))
    return path


def kill_and_resume(
    run_dir: Path,
    dataset: Path,
    kills: int,
    rng: np.random.Generator,
    max_delay: float = 14.0,
    options: Sequence[str] = (),
) -> int:
    """Starts the training (with the extra `options`), SIGKILLs it up to `kills` times at
    random moments (3 s to `max_delay` after each start), then lets it finish. Returns how
    many kills landed on a running process."""
    command = [*TRAIN_COMMAND, *options, "--dataset", str(dataset), "--output", str(run_dir)]
    landed = 0
    for _ in range(kills):
        if _finished(run_dir):  # the last kill landed after the run had finished its files
            return landed
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(3.0, max_delay))
        if process.poll() is not None:  # finished before the kill: nothing left to kill
            if process.returncode != 0:
                raise RuntimeError(process.stderr.read().decode()[-2000:])
            return landed
        os.kill(process.pid, signal.SIGKILL)
        landed += 1
        process.wait()
    if _finished(run_dir):
        return landed
    final = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if final.returncode != 0:
        raise RuntimeError(final.stderr[-2000:])
    return landed


def _finished(run_dir: Path) -> bool:
    """True once `finish_run` has written the model and dropped the backup: a kill that lands
    later (while the process tears down) leaves a finished run, which a rerun rightly refuses
    to retrain."""
    from keras_vae.runs import directory as runs

    return (run_dir / runs.MODEL_FILE).exists() and not (run_dir / runs.BACKUP_DIR).exists()


def check_run(run_dir: Path, options: Sequence[str] = ()) -> str | None:
    """None when the run is complete and consistent and its config and model hold the
    training `options` it was started with, else what is wrong."""
    from keras_vae.cli import commands as cli
    from keras_vae.runs import directory as runs

    try:
        model, config = runs.load_run(run_dir)
    except ValueError as error:
        return f"model does not load: {error}"
    wanted = cli.train_config(options).resolved()
    lost = [
        key
        for key in ("posterior", "prior", "prior_components", "objective", "gradient_estimator")
        if getattr(config, key) != getattr(wanted, key)
        or getattr(config, key) != _model_part(model, key)
    ]
    if lost:
        return f"the run lost its parts: {', '.join(lost)}"
    rows = (run_dir / runs.HISTORY_FILE).read_text().splitlines()[1:]
    epochs = [row.split(",")[0] for row in rows]
    if epochs != [str(e) for e in range(EPOCHS)]:
        return f"history is not continuous: epochs {epochs}"
    if (run_dir / runs.BACKUP_DIR).exists():
        return "backup left behind"
    return None


def _model_part(model, key: str):
    """What the trained model itself says for a config key of its parts."""
    if key in ("posterior", "prior", "objective"):
        return type(getattr(model, key)).registered_name
    if key == "prior_components":
        return getattr(model.prior, "num_components", None)
    return getattr(model.objective, "gradient", "standard")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kills in total")
    parser.add_argument("--per-run", type=int, default=4, help="kills before a run may finish")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--options", default="", help='more training options, e.g. "--prior vamp"')
    args = parser.parse_args()
    options = shlex.split(args.options)
    rng = np.random.default_rng(args.seed)
    landed_total, runs_ok, runs_total = 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_dataset(Path(tmp) / "toy.npz")
        while landed_total < args.kills:
            run_dir = Path(tmp) / f"run{runs_total}"
            landed = kill_and_resume(run_dir, dataset, args.per_run, rng, options=options)
            problem = check_run(run_dir, options)
            landed_total += landed
            runs_total += 1
            runs_ok += problem is None
            print(f"run {runs_total}: {landed} kills, {'ok' if problem is None else problem}")
    print("\n| runs | kills landed | runs finished intact |\n| ---: | ---: | ---: |")
    print(f"| {runs_total} | {landed_total} | {runs_ok}/{runs_total} |")
    print(f"survived {landed_total if runs_ok == runs_total else 'NOT all'} kills")
    sys.exit(0 if runs_ok == runs_total else 1)


if __name__ == "__main__":
    main()
