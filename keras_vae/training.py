"""Training a VAE from a `TrainConfig`: the logic behind `keras-vae train`, importable.

data (keras_vae.data) -> strategy (keras_vae.distribute) -> mlp_vae + compile -> fit
-> final train/test ELBO -> run directory (keras_vae.runs)
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_vae import data, distribute, runs
from keras_vae.callbacks import ImageGridCallback
from keras_vae.config import TrainConfig
from keras_vae.model import VAE, mlp_vae

EVAL_BATCH_SIZE = 1000


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good backup is kept."""


class WorkerLostError(RuntimeError):
    """A worker of a multi-worker run stopped; the chief's last backup is intact."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first step whose loss is not finite and remembers where."""

    def __init__(self):
        super().__init__()
        self.failure: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss) and self.failure is None:
            self.failure = f"the loss became {loss} at epoch {self._epoch + 1}, step {batch + 1}"
            self.model.stop_training = True


def resolve_likelihood(config: TrainConfig, images: np.ndarray) -> str:
    """The configured likelihood, else the dataset's natural one, else from the values."""
    if config.likelihood:
        return config.likelihood
    natural = data.default_likelihood(config.dataset)
    if natural:
        return natural
    inside_unit_interval = float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    return "bernoulli" if inside_unit_interval else "gaussian"


def load_split(config: TrainConfig, split: str, likelihood: str | None = None) -> np.ndarray:
    """Loads and validates one split of the configured dataset."""
    images = data.load_images(
        config.dataset,
        split,
        data_dir=config.data_dir,
        manual_dir=config.manual_dir,
        limit=config.limit if split == "train" else None,
    )
    data.validate_images(
        images, likelihood=likelihood or resolve_likelihood(config, images), name=split
    )
    return images


def build_model(config: TrainConfig, image_shape: tuple[int, ...], likelihood: str) -> VAE:
    """The paper's MLP VAE for `config`, built and compiled (call inside a strategy scope)."""
    model = mlp_vae(
        image_shape,
        latent_dim=config.latent_dim,
        hidden_units=config.hidden_units,
        likelihood=likelihood,
        activation=config.activation,
        num_samples=config.samples,
        beta=config.beta,
        seed=config.seed,
    )
    model.build((None, *image_shape))
    optimizer = keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm)
    model.compile(
        optimizer=optimizer,
        jit_compile=config.jit_compile,
        steps_per_execution=distribute.resolve_steps_per_execution(
            config.steps_per_execution, model.distribute_strategy
        ),
    )
    return model


def _picture_callbacks(config: TrainConfig, run_dir: Path, x_eval: np.ndarray) -> list:
    """TensorBoard scalars under RUN_DIR/tensorboard, and reconstruction/sample pictures."""
    log_dir = run_dir / runs.TENSORBOARD_DIR
    found = [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False)]
    if config.image_every:
        found.append(
            ImageGridCallback(
                x_eval[:8],
                log_dir=log_dir / "images",
                png_dir=run_dir / runs.IMAGES_DIR,
                every_n_epochs=config.image_every,
                seed=config.seed,
            )
        )
    return found


def evaluate_elbo(model: VAE, images: np.ndarray, batch_size: int = EVAL_BATCH_SIZE) -> dict:
    """Held-out ELBO, reconstruction and KL, nats per example, averaged over `images`."""
    dataset = data.make_dataset(images, batch_size=batch_size, shuffle=False)
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    return {key: float(result[key]) for key in ("elbo", "reconstruction", "kl")}


def train(
    config: TrainConfig,
    output: str | Path | None = None,
    verbose: Any = "auto",
    overwrite: bool = False,
    progress=print,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict:
    """Trains the configured VAE, reports the final ELBOs and (optionally) writes a run dir.

    With a run directory, every completed epoch is backed up (`keras_vae.runs.RunBackup`), so
    rerunning the same call after a kill continues from the last completed epoch. The same
    config and seed on the same machine give the same weights and metrics: the weights, the
    shuffling and the model's noise are all seeded, and the CPU kernels used are deterministic.
    (TensorFlow's `enable_op_determinism` is not used: Keras turns XLA off under it.)

    Args:
        config: What to train.
        output: Run directory (see `keras_vae.runs`); None writes nothing.
        verbose: Keras progress display (`"auto"`, 0, 1, 2).
        overwrite: Replace a run with other settings or a finished run in `output`.
        progress: Called with one-line status messages.
        callbacks: More Keras callbacks for `fit`.

    Raises:
        NonFiniteLossError: The loss became NaN/Inf; the message names the step, and the
            backup of the last good epoch stays intact.

    Returns:
        The metrics dict (also `RUN_DIR/metrics.json`): `train_elbo`, `test_elbo` (nats per
        example, on the whole training set and the eval split), their parts, the wall time
        and the training throughput. The returned dict also holds the trained `"model"` and
        this call's Keras `"history"`, and `"chief"`: False on a non-chief worker of a
        multi-worker run, which trains and evaluates like the others but writes no run files.
    """
    if config.cpu_replicas:
        distribute.configure_cpu_replicas(config.cpu_replicas)
    # first: MultiWorkerMirroredStrategy must exist before any other TensorFlow op
    strategy = distribute.get_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    worker = distribute.worker_name(strategy)
    if worker:
        progress(f"keras-vae: {worker} of {strategy.num_replicas_in_sync} replicas"
                 f"{' (chief: writes the run files)' if chief else ''}")  # fmt: skip
    if not chief:
        verbose = 0
    keras.utils.set_random_seed(config.seed)

    x_train = data.load_images(
        config.dataset,
        "train",
        data_dir=config.data_dir,
        manual_dir=config.manual_dir,
        limit=config.limit,
    )
    likelihood = resolve_likelihood(config, x_train)
    data.validate_images(x_train, likelihood=likelihood, name=f"{config.dataset} train split")
    x_eval = load_split(config, config.eval_split, likelihood)
    config = config.replace(likelihood=likelihood)
    if output is not None:
        runs.prepare_run_dir(output, config, overwrite=overwrite, write=chief)
    distribute.barrier(strategy)  # workers read the run directory once the chief prepared it

    with strategy.scope():
        model = build_model(config, tuple(x_train.shape[1:]), likelihood)
    guard = StopOnNonFiniteLoss()
    callbacks = [guard, *(callbacks or [])]
    if config.early_stopping:
        # (its patience counter is not part of the backup: a resumed run starts counting anew)
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_elbo",
                mode="max",
                patience=config.early_stopping,
                restore_best_weights=True,
            )
        )
    initial_epoch = 0
    scratch = None if chief else tempfile.TemporaryDirectory(prefix="keras-vae-worker-")
    if output is not None:
        backup = runs.RunBackup(output, progress=progress, scratch_dir=scratch and scratch.name)
        with strategy.scope():  # the optimizer's variables are built under the strategy
            initial_epoch = backup.restore(model)
        callbacks.append(backup)
        if chief:
            callbacks += _picture_callbacks(config, Path(output), x_eval)

    train_ds = data.make_dataset(
        x_train,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        dynamic_binarization=config.dynamic_binarization,
        repeat=config.steps_per_epoch is not None,
    )
    eval_ds = data.make_dataset(x_eval, batch_size=EVAL_BATCH_SIZE, shuffle=False)
    start = time.perf_counter()
    try:
        history = model.fit(
            train_ds,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=config.steps_per_epoch,
            validation_data=eval_ds,
            shuffle=False,  # make_dataset shuffles, with the configured seed
            callbacks=callbacks,
            verbose=verbose,
        )
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError) as err:
        if not distribute.is_multi_worker(strategy):
            raise
        resume = "without --output, training starts over"
        if output is not None:
            done = len(backup.history.get("loss", []))
            resume = f"training resumes from the backup after epoch {done} in {output}"
        raise WorkerLostError(
            f"{worker}: another worker of the cluster stopped ({type(err).__name__}). Restart "
            f"every worker with the same command; {resume}."
        ) from err
    wall = time.perf_counter() - start
    if guard.failure:
        done = len(backup.history.get("loss", [])) if output is not None else 0
        kept = (
            f"the backup after epoch {done} in {Path(output) / runs.BACKUP_DIR} is intact"
            if done
            else "no epoch completed, so there is no backup"
        )
        raise NonFiniteLossError(
            f"Training stopped: {guard.failure}; {kept}. Lower --learning-rate or set "
            "--clipnorm, and check the data."
        )
    steps = config.steps_per_epoch or -(-len(x_train) // config.batch_size)
    epochs_run = len(history.history.get("loss", []))  # fewer than asked after early stopping
    examples_seen = epochs_run * steps * config.batch_size

    train_metrics = evaluate_elbo(model, x_train)
    eval_metrics = evaluate_elbo(model, x_eval)
    metrics = {
        "unit": "nats per example",
        "resumed_from_epoch": initial_epoch,
        "train_elbo": train_metrics["elbo"],
        "test_elbo": eval_metrics["elbo"],
        "test_split": config.eval_split,
        "train_reconstruction": train_metrics["reconstruction"],
        "train_kl": train_metrics["kl"],
        "test_reconstruction": eval_metrics["reconstruction"],
        "test_kl": eval_metrics["kl"],
        "likelihood": likelihood,
        "epochs": initial_epoch + epochs_run,
        "examples_seen": examples_seen,
        "train_seconds": round(wall, 2),
        "train_examples_per_s": round(examples_seen / max(wall, 1e-9), 1),
        "replicas": strategy.num_replicas_in_sync,
        "strategy": distribute.strategy_name(strategy),
        "jit_compile": model.xla != "off",
        "xla": model.xla,
    }
    if output is not None and chief:
        runs.finish_run(output, model, backup.history, metrics)
    if scratch is not None:
        scratch.cleanup()
    return {**metrics, "model": model, "history": history.history, "chief": chief}
