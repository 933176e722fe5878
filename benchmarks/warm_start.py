"""Trains a run that starts from the kept weights of a finished run, with other options: the
fine-tuning experiment of issue 30 (an ELBO-trained hierarchical VAE, then IWAE k = 5).

    TFDS_DATA_DIR=... python benchmarks/warm_start.py --from runs/hvae-l2-e-freebits \
        -- <keras-vae train options, --output included>

The new run must build the same variables as the finished one (same architecture options);
only options that leave the weights' shapes alone may differ (objective, samples, learning
rate, schedule, epochs, ...). The weights are copied in before the first step of a fresh run
(so the weight average starts from them too); a resumed run keeps its own backup.
"""

from __future__ import annotations

import argparse
import sys

import keras
from _train_options import split_output

from keras_vae.cli.commands import train_config
from keras_vae.workflows import train as training


class WarmStart(keras.callbacks.Callback):
    """Copies every weight of the model saved in `run_dir` into the model being trained,
    before its first step; refuses, in one line, a model whose variables differ."""

    def __init__(self, run_dir: str):
        super().__init__()
        self.run_dir = run_dir

    def on_train_begin(self, logs=None):
        if int(self.model.optimizer.iterations.numpy()) != 0:
            print(f"warm start: resumed from the run's own backup, {self.run_dir} not read")
            return
        source = keras.saving.load_model(f"{self.run_dir}/model.keras", compile=False)
        pairs = list(zip(source.weights, self.model.weights, strict=False))
        if len(source.weights) != len(self.model.weights) or any(
            a.shape != b.shape for a, b in pairs
        ):
            raise SystemExit(
                f"warm_start: {self.run_dir} holds another architecture ({len(source.weights)} "
                f"variables against {len(self.model.weights)}, or other shapes); train with "
                "its architecture options."
            )
        for saved, variable in pairs:
            variable.assign(saved)
        print(f"warm start: {len(pairs)} variables from {self.run_dir}/model.keras")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="a finished run directory")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- keras-vae train options")
    args = parser.parse_args(argv)
    rest, output = split_output(args.rest)
    metrics = training.train(
        train_config(rest), output=output, verbose=2, callbacks=[WarmStart(args.source)]
    )
    print({k: v for k, v in metrics.items() if isinstance(v, float)})


if __name__ == "__main__":
    main(sys.argv[1:])
