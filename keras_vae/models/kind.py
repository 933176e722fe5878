"""The model-kind protocol: what the train, evaluate, plot and export workflows need of a
family of models, so that they look a kind up by name and never ask "which kind is this?".

A kind is a class registered once, like a part:

    @registry.register("model", "vqvae")
    class VQVAEKind(ModelKind):
        options = ("codebook_size", "code_dim", ...)
        def build(self, config, image_shape, epoch_steps=None, condition_dim=None): ...

`kind_of(config)` is the lookup every workflow uses. A new kind is one module that defines
and registers such a class (see tests/models/test_kind.py for one written in a test file).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_vae import registry
from keras_vae.data import pipeline as data
from keras_vae.metrics.latent import bits_per_dim  # noqa: F401  (one function, every kind)
from keras_vae.parts import objectives


def make_objective(config, epoch_steps: int | None = None) -> objectives.Objective:
    """The configured objective: ELBO with its KL schedule (epochs converted to steps with
    `epoch_steps`) and free bits, IWAE with K = `samples` and its gradient estimator, the
    disentangling ones (`keras_vae.parts.disentangling_objectives`, `factor_vae`) with their
    options, the papers' values where an option is None; any other registered one with K
    samples. (Options of another objective are refused by `TrainConfig`.)"""
    if (config.kl_warmup_epochs or config.capacity_epochs) and epoch_steps is None:
        raise ValueError("A schedule in epochs needs epoch_steps, the steps of one epoch.")
    steps = epoch_steps or 0
    capacity_steps = None if config.capacity_epochs is None else config.capacity_epochs * steps
    options = {
        "elbo": {
            "beta": config.beta,
            "warmup_steps": config.kl_warmup_epochs * steps,
            "cycle_steps": config.kl_cycle_epochs * steps,
            "free_bits": config.free_bits,
        },
        "iwae": {"gradient": config.gradient_estimator},
        # N of beta-TCVAE's aggregate posterior: the examples of one epoch
        "betatc": {
            "beta": config.tc_weight,
            "estimator": config.tc_estimator,
            "dataset_size": max(2, steps * config.batch_size) if steps else None,
        },
        "annealed_capacity": {
            "gamma": config.capacity_weight,
            "capacity": config.capacity,
            "capacity_steps": capacity_steps,
        },
        "factorvae": {
            "gamma": config.tc_weight,
            "discriminator_units": config.discriminator_units,
            "discriminator_learning_rate": config.discriminator_learning_rate,
        },
    }.get(config.objective, {})  # a user's own: its defaults
    given = {key: value for key, value in options.items() if value is not None}
    return registry.get("objective", config.objective)(num_samples=config.samples, **given)


class ModelKind:
    """What a model family gives the workflows. Subclasses override what differs.

    Attributes:
        options: TrainConfig keys that only this kind takes (another kind's are refused).
        figure_kinds: The `keras-vae plot --kind` values this kind draws.
        evaluate_options: `keras-vae evaluate` options this kind honours (others are refused
            when given).
    """

    registered_name = "?"
    options: tuple[str, ...] = ()
    figure_kinds: tuple[str, ...] = ()
    evaluate_options: tuple[str, ...] = ()

    # ---------------------------------------------------------------- configuration and data
    def resolve_config(self, config):
        """The config with settings the kind derives (e.g. from another run); default: as is."""
        return config

    def uses_labels(self, config) -> bool:
        """Whether the kind trains and evaluates on (images, labels)."""
        return False

    def check_data(self, config, x_train, x_eval) -> None:
        """Refuses data the configured model cannot take, in one line, before any run file."""

    # ----------------------------------------------------------------------------- building
    def build(self, config, image_shape, epoch_steps=None, condition_dim=None) -> keras.Model:
        """The configured model, uncompiled (called inside the strategy's scope)."""
        raise NotImplementedError

    def initialize(self, model, x_train, config) -> None:
        """Data-dependent start of a new (not resumed) model; default: nothing."""

    def describe(self, config, x_train) -> str:
        """`a VAE (...)`: the model in the first line of `keras-vae train`."""
        return f"a {self.registered_name} model"

    def likelihood_name(self, model) -> str:
        """The registered name of the model's likelihood head (data checks use it)."""
        return model.likelihood.registered_name

    # ----------------------------------------------------------------------------- training
    def monitor(self, config) -> tuple[str, str]:
        """The held-out metric early stopping watches, and its mode."""
        return "val_loss", "min"

    def metric_names(self, model, result: dict) -> list[str]:
        """The `model.evaluate` results that metrics.json records."""
        return list(result)

    def run_facts(self, config, model, metrics: dict) -> dict:
        """What metrics.json says of the model besides its metrics."""
        return {"model_kind": config.model}

    def summary_line(self, metrics: dict) -> str:
        """The last line of `keras-vae train`."""
        split = metrics["eval_split"]
        prefix = split if split.isidentifier() and split != "train" else "eval"
        return (
            f"train loss {metrics.get('train_loss', float('nan')):.4f}; {split} loss "
            f"{metrics.get(f'{prefix}_loss', float('nan')):.4f} ({_tail(metrics)})"
        )

    def training_pictures(self, model, images, labels, num_samples: int, seed: int) -> dict:
        """Batches of images by tag for the training picture callback."""
        from keras_vae.engine.callbacks import model_pictures

        return model_pictures(model, images, labels, num_samples, seed)

    # ---------------------------------------------------------------------------- evaluate
    def evaluate(self, model, images, labels=None, **options) -> tuple[dict, str]:
        """`keras-vae evaluate`: the metrics and the line to print.

        `images` is the split as `keras_vae.runs.splits.open_split` opens it for streaming:
        an array, or a `keras_vae.data.ImageStream` (a tfds split, a large array file; for a
        kind that `uses_labels`, a stream of (images, labels) with `labels` None). Read it
        once with `keras_vae.data.batches`, NumPy batches of either, so that memory holds a
        batch and not the split; Python callers may also pass an array with its `labels`.
        Default: `model.evaluate`'s metrics over batches of 100 images.
        """
        batches = ((x,) for x, _ in data.batches(images, 100))
        steps = -(-len(images) // 100)  # (the generator's length: no "ran out of data")
        result = model.evaluate(batches, steps=steps, verbose=0, return_dict=True)
        result = {k: float(v) for k, v in result.items()}
        result["num_examples"] = len(images)
        return result, ", ".join(f"{k} {v:.4f}" for k, v in result.items())

    def with_precision(self, model, config, precision: str):
        """`keras-vae evaluate --precision`: the run's model with its matmuls in `precision`
        (a `TrainConfig.precision`). Only kinds with `"precision"` among their
        `evaluate_options` are asked."""
        raise NotImplementedError(f"the {self.registered_name} kind has one precision")

    def representation(self, model, config):
        """`keras-vae evaluate --disentanglement`: the code of images that the metrics score,
        `images [n, *image_shape] -> codes [n, D]` (NumPy in and out). Only kinds with
        `"disentanglement"` among their `evaluate_options` are asked."""
        raise NotImplementedError(f"the {self.registered_name} kind has no representation")

    # ------------------------------------------------------------------------ sample, encode
    def sample(self, model, num: int, seed: int = 0, labels=None) -> np.ndarray:
        """`keras-vae sample`: `num` images drawn from the model, `[num, *image_shape]`."""
        if not hasattr(model, "sample"):
            raise ValueError(f"a {self.registered_name} run has no model to sample from.")
        return np.asarray(model.sample(num, seed=seed))

    def encode(self, model, images, labels=None) -> dict[str, np.ndarray]:
        """`keras-vae encode`: the representation of each image of a batch (an array; the
        workflow streams the data and gives `ENCODE_BATCH` images at a time), arrays by name
        with one row per image; the first is what the Projector shows."""
        raise NotImplementedError(f"the {self.registered_name} kind has no encoder")

    # -------------------------------------------------------------------------------- plot
    def make_figure(self, model, figure: str, *, images=None, labels=None, num=None, seed=0,
                    split="test"):  # fmt: skip
        """The figure `keras-vae plot --kind figure` draws. `images` (where
        `figure_needs_images`) is the split as an array or a streamed `data.ImageStream`, as
        `evaluate` gets it: read the rows a figure shows with `data.pick_rows` or
        `data.take_rows` (a `latents` figure gets the arrays it scatters)."""
        raise NotImplementedError

    def figure_needs_images(self, figure: str) -> bool:
        return figure not in ("samples", "manifold")

    # ------------------------------------------------------------------------------ export
    def export(self, model, config, output, *, images, labels=None, **options) -> dict:
        """Writes the kind's SavedModels and TFLite files through the one export pipeline
        (`keras_vae.serving.pipeline.export_parts`); returns its report."""
        raise NotImplementedError(f"the {self.registered_name} kind has no export")

    export_options: tuple[str, ...] = ()
    #: The TFLite variants the kind writes (of `keras_vae.serving.tflite.QUANTIZATIONS`).
    quantizations: tuple[str, ...] = ("none",)

    def check_figure(self, model, figure: str) -> None:
        """Refuses a figure the model cannot draw before any data is read."""

    def export_images(self, images, labels=None) -> dict:
        """Calibration and check images from a split (an array, or a stream read once and
        never held whole: `data.take_rows`): a seeded permutation's first 500 and the next
        256 (one rule for every kind), with their labels where the split has them."""
        order = np.random.default_rng(0).permutation(len(images))
        rows, row_labels = data.take_rows(images, order[:756], labels)
        check = rows[500:] if len(images) > 500 else None
        chosen = {"representative": rows[:500], "check": check, "order": order}
        if row_labels is not None:
            chosen["representative_labels"] = row_labels[:500]
            chosen["check_labels"] = row_labels[500:] if len(images) > 500 else None
        return chosen


def _tail(metrics: dict) -> str:
    return (
        f"{metrics['epochs']} epochs, {metrics['train_seconds']:.0f} s, "
        f"{metrics['train_examples_per_s']:.0f} examples/s"
    )


def kind_of(config: Any) -> ModelKind:
    """The registered kind of `config.model`; a one-line error lists the kinds."""
    return registry.get("model", config.model)()


def kind_names() -> tuple[str, ...]:
    return registry.names("model")
