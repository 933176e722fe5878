"""Trains a hierarchical VAE with `keras-vae train` options and logs what issue 30's blow-up
needs to be explained: every 100 steps the smallest scales of each layer and, for every 10
steps, the largest gradient norms per part of the model.

    TFDS_DATA_DIR=... python benchmarks/hvae_scale_diagnostics.py --log scales.csv \
        -- <keras-vae train options, --output included>

Columns of the log (one row per `fit` callback, i.e. per `steps_per_execution` steps):
step, loss, the largest global gradient norm of those steps and the largest per part
(bottom_up; the cells' state layers, prior projections and posterior layers; top_posterior,
decoder, likelihood, prior), and every 100 steps, on 1000
fixed training images along the mean path: the smallest prior scale sigma_1 of layer 1, the
smallest posterior scale sigma_1 * dsigma_1, the smallest and largest dsigma_1, the smallest
top posterior scale on the images and at the VampPrior's pseudo-inputs, and the number of
layer-1 units whose median prior scale is below 0.01.
"""

from __future__ import annotations

import argparse
import csv
import sys

import keras
import numpy as np
import tensorflow as tf
from _train_options import split_output

from keras_vae.cli.commands import train_config
from keras_vae.data.pipeline import first_images
from keras_vae.workflows import train as training

PARTS = ("bottom_up", "cell_state", "cell_prior", "cell_posterior", "top_posterior", "decoder",
         "likelihood", "prior")  # fmt: skip


def part_of_each_variable(model) -> dict[str, str]:
    """Variable path -> the part of the model it belongs to (one of PARTS)."""
    owners = {name: getattr(model, name) for name in
              ("bottom_up", "top_posterior", "decoder", "likelihood", "prior")}  # fmt: skip
    for cell in model.cells:
        owners.setdefault("cell_state", []).extend(cell.state_layers)
        owners.setdefault("cell_prior", []).append(cell.prior_projection)
        posterior = [*cell.posterior_layers, cell.posterior_projection]
        owners.setdefault("cell_posterior", []).extend(posterior)
    found = {}
    for name, layers in owners.items():
        for layer in layers if isinstance(layers, list) else [layers]:
            found.update({v.path: name for v in layer.trainable_variables})
    return found


class _Tracker:
    """Running maxima of gradient norms, reset by the callback after each read."""

    def __init__(self):
        self.maxima = {name: tf.Variable(0.0, trainable=False) for name in ("global", *PARTS)}
        self.parts: dict[str, str] = {}

    def record(self, grads, variables):
        by_part: dict[str, list] = {}
        for g, v in zip(grads, variables, strict=True):
            if g is not None:
                by_part.setdefault(self.parts.get(v.path, "other"), []).append(
                    tf.convert_to_tensor(g))  # fmt: skip
        every = [g for gs in by_part.values() for g in gs]
        for name, gs in [("global", every), *by_part.items()]:
            if name in self.maxima:
                self.maxima[name].assign(tf.maximum(self.maxima[name], tf.linalg.global_norm(gs)))

    def read_and_reset(self) -> dict:
        out = {k: float(v.numpy()) for k, v in self.maxima.items()}
        for v in self.maxima.values():
            v.assign(0.0)
        return out


def _instrumented(make_optimizer, tracker):
    def make(config, epoch_steps=None):
        optimizer = make_optimizer(config, epoch_steps)
        original = optimizer.apply

        def apply(grads, trainable_variables=None):
            tracker.record(grads, trainable_variables)
            return original(grads, trainable_variables)

        optimizer.apply = apply
        return optimizer

    return make


def scale_stats(model, images) -> dict:
    """Smallest scales of each layer on `images` along the mean path (see the module doc)."""
    params = model.encode_parameters(images)
    below, top = params[0], params[-1]
    prior, q = below["prior_scale"].numpy(), below["scale"].numpy()
    offsets = q / prior
    stats = {
        "min_prior_scale_1": prior.min(),
        "min_q_scale_1": q.min(),
        "min_dsigma_1": offsets.min(),
        "max_dsigma_1": offsets.max(),
        "small_prior_units_1": int((np.median(prior, axis=0) < 0.01).sum()),
        "min_q_scale_top": top["scale"].numpy().min(),
    }
    if hasattr(model.prior, "pseudo_inputs"):
        pseudo = tf.clip_by_value(model.prior.pseudo_inputs, 0.0, 1.0)
        scale = model.top_posterior.parameters(model.bottom_up(pseudo)[-1])["scale"]
        stats["min_vamp_scale"] = float(tf.reduce_min(scale))
    return {k: float(v) for k, v in stats.items()}


class ScaleLog(keras.callbacks.Callback):
    def __init__(self, path, tracker, images, every=100):
        super().__init__()
        self.path, self.tracker, self.images, self.every = path, tracker, images, every
        self.file = open(path, "a", newline="")  # noqa: SIM115
        self.writer = None
        self.epoch = 0

    def set_model(self, model):
        super().set_model(model)
        self.tracker.parts = part_of_each_variable(model)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        row = {"epoch": self.epoch + 1, "step": step, "loss": float((logs or {}).get("loss", 0))}
        row.update({f"gmax_{k}": v for k, v in self.tracker.read_and_reset().items()})
        if step % self.every == 0:
            row.update(scale_stats(self.model, self.images))
        if self.writer is None:
            keys = list(row) + [k for k in _STAT_KEYS if k not in row]
            self.writer = csv.DictWriter(self.file, keys, restval="")
            if self.file.tell() == 0:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()


_STAT_KEYS = ("min_prior_scale_1", "min_q_scale_1", "min_dsigma_1", "max_dsigma_1",
              "small_prior_units_1", "min_q_scale_top", "min_vamp_scale")  # fmt: skip


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest, output = split_output(args.rest)
    config = train_config(rest)
    _, x_train, _ = training.load_training_data(config)
    images = first_images(x_train, 1000)
    tracker = _Tracker()
    training.make_optimizer = _instrumented(training.make_optimizer, tracker)
    log = ScaleLog(args.log, tracker, images)
    metrics = training.train(config, output=output, verbose=2, callbacks=[log])
    print({k: v for k, v in metrics.items() if isinstance(v, float)})


if __name__ == "__main__":
    main(sys.argv[1:])
