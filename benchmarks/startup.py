"""Start-up of `keras-vae train`: time from the process start to the first training step.

Runs the CLI's own `keras_vae.training.train` on the default configuration (binarized MNIST,
784-500-20, XLA, steps_per_execution 10) in a fresh Python process and timestamps its phases:

    python + imports     interpreter start to `import keras_vae.cli` done (TensorFlow, Keras,
                         TFP, the package; what `keras-vae train` imports before it parses,
                         as the console script: argv[0] `keras-vae`)
    data                 loading and checking the training and eval images (`describe_run`)
    model                building and compiling the model (`on_train_begin`)
    first execution      tracing the train function, XLA compilation and the first k steps
                         (the first `on_train_batch_end`)

The run stops there (no run directory is written). Each phase is the median over `--repeats`
fresh processes; `cpu` is the CPU seconds of the process (all threads) at the first
execution. Like `keras-vae train`, the child turns on the persistent XLA compilation cache
(`keras_vae._internal.xla_cache.configure`); the environment passes through, so
`KERAS_VAE_XLA_CACHE=off` times a start without it and `KERAS_VAE_XLA_CACHE=$(mktemp -d)`
a first start that fills an empty cache (then the next repeats read it).

Usage:
    python benchmarks/startup.py [--repeats 3] [--data-dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PHASES = ("python + imports", "data", "model", "first execution")


class _FirstExecutionDone(Exception):
    pass


def _child(data_dir: str) -> None:
    """One timed start-up in this process; prints one JSON line of phase end times."""
    start = float(os.environ["KV_STARTUP_T0"])
    marks = {}
    sys.argv[0] = "keras-vae"  # imports as the console script does (keras_vae._internal.quiet)
    # isort: off
    from keras_vae.cli import commands as cli  # noqa: F401  (first: it imports TensorFlow)
    import keras

    # isort: on
    from keras_vae.runs.config import TrainConfig
    from keras_vae.workflows.train import train

    marks["python + imports"] = time.time() - start
    try:
        from keras_vae._internal import xla_cache
    except ImportError:  # an earlier keras_vae (the baseline of an A/B): no cache
        cache = "none (this keras_vae has none)"
    else:
        cache = xla_cache.configure()  # what `keras-vae train` does before it trains

    class Marks(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            marks["model"] = time.time() - start

        def on_train_batch_end(self, batch, logs=None):
            marks["first execution"] = time.time() - start
            marks["cpu"] = time.process_time()  # CPU s of the process (all threads) so far
            raise _FirstExecutionDone

    def progress(message):
        marks.setdefault("data", time.time() - start)

    try:
        train(TrainConfig(data_dir=data_dir), progress=progress, verbose=0, callbacks=[Marks()])
    except _FirstExecutionDone:
        pass
    print(json.dumps({**marks, "xla_cache": cache}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = REPO_ROOT.parent / "shared" / "tensorflow_datasets"
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR") or str(shared))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.data_dir)
        return
    from _machine import cpu_line

    print(cpu_line())
    if os.environ.get("TF_XLA_FLAGS"):
        print(f"TF_XLA_FLAGS={os.environ['TF_XLA_FLAGS']}")
    runs = []
    for _ in range(args.repeats):
        env = {**os.environ, "KV_STARTUP_T0": repr(time.time()), "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, __file__, "--child", "--data-dir", args.data_dir]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            sys.exit(f"start-up run failed:\n{done.stderr[-2000:]}")
        runs.append(json.loads(lines[-1]))
        times = {k: v for k, v in runs[-1].items() if k != "xla_cache"}
        print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
              + f"; XLA cache {runs[-1]['xla_cache']}", flush=True)  # fmt: skip
    ends = {phase: statistics.median(run[phase] for run in runs) for phase in PHASES}
    previous = 0.0
    print("| phase | seconds (median) | ends at |\n| --- | ---: | ---: |")
    for phase, end in ends.items():
        print(f"| {phase} | {end - previous:.1f} | {end:.1f} |")
        previous = end
    print(
        f"CPU seconds to the first execution (median): "
        f"{statistics.median(run['cpu'] for run in runs):.1f}"
    )
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps({"phase_ends_s": ends, "runs": runs, "loadavg": os.getloadavg()}))


if __name__ == "__main__":
    main()
