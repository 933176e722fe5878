"""Training a model from a `TrainConfig`: the logic behind `keras-vae train`, importable.

strategy (keras_vae.engine.distribute) -> data (keras_vae.runs.splits) -> the model its kind
builds (keras_vae.models.kind) + compile -> restore, or the kind's data-dependent start -> fit
-> final train/eval metrics -> run directory (keras_vae.runs)
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_vae._internal import atomic, xla_cache
from keras_vae._internal.lock import DirectoryLock
from keras_vae.data import pipeline as data
from keras_vae.engine import distribute
from keras_vae.engine.callbacks import (
    BestEpochStopping,
    ImageGridCallback,
    SampleSchedule,
    TrainingTimeBudget,
)
from keras_vae.models.kind import kind_of
from keras_vae.runs import directory as runs
from keras_vae.runs.config import TrainConfig
from keras_vae.runs.splits import (  # noqa: F401  (keras_vae.training of 0.2.0)
    check_labels,
    check_same_images,
    is_array_dataset,
    load_labeled_split,
    load_split,
    open_split,
    resolve_data,
    resolve_likelihood,
)

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


def steps_per_epoch(config: TrainConfig, num_examples: int) -> int:
    """Training steps in one epoch: `config.steps_per_epoch`, else one pass over the data."""
    return config.steps_per_epoch or -(-num_examples // config.batch_size)


def make_optimizer(config: TrainConfig, epoch_steps: int | None = None):
    """Adam with the configured schedule (cosine: lr_t = lr (1 + cos(pi t / T)) / 2 over
    T = epochs * epoch_steps steps), gradient clipping (per variable, or jointly by the
    global norm), decoupled weight decay
    (w <- w - lr_t * weight_decay * w after each step: AdamW) and weight averaging (EMA).
    Weight decay regularises the networks only: the VampPrior's pseudo-inputs (images, not
    weights) are exempt."""
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":
        if not epoch_steps:
            raise ValueError("A cosine schedule needs epoch_steps, the steps of one epoch.")
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * epoch_steps
        )
    ema = {"use_ema": True, "ema_momentum": config.ema_momentum} if config.ema_momentum else {}
    decay = {"weight_decay": config.weight_decay} if config.weight_decay else {}
    clip = {"clipnorm": config.clipnorm, "global_clipnorm": config.global_clipnorm}
    optimizer = keras.optimizers.Adam(learning_rate, **clip, **ema, **decay)
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["pseudo_inputs"])
    return optimizer


def build_model(
    config: TrainConfig,
    image_shape: tuple[int, ...],
    likelihood: str,
    epoch_steps: int | None = None,
    condition_dim: int | None = None,
):
    """The model of `config`, built by its kind (`ModelKind.build`) and compiled (call
    inside a strategy scope). `epoch_steps` converts schedules given in epochs into optimizer
    steps (see `steps_per_epoch`); `condition_dim` is C of labelled data."""
    config = config.replace(likelihood=likelihood).resolved()
    model = kind_of(config).build(config, image_shape, epoch_steps, condition_dim)
    return compile_model(model, config, epoch_steps)


def compile_model(model, config: TrainConfig, epoch_steps: int | None = None):
    """Builds `model` for the configured images and compiles it with the configured
    optimizer, XLA and steps per execution; returns it."""
    model.build((None, *model.image_shape))
    model.compile(
        optimizer=make_optimizer(config, epoch_steps),
        jit_compile=config.jit_compile,
        steps_per_execution=distribute.resolve_steps_per_execution(
            config.steps_per_execution, model.distribute_strategy
        ),
    )
    return model


def _picture_callbacks(config: TrainConfig, run_dir: Path, x_eval) -> list:
    """TensorBoard scalars under RUN_DIR/tensorboard, and the kind's training pictures."""
    log_dir = run_dir / runs.TENSORBOARD_DIR
    found = [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False)]
    if config.image_every:
        found.append(
            ImageGridCallback(
                data.first_images(x_eval, 8),
                labels=data.first_labels(x_eval, 8),
                pictures=kind_of(config).training_pictures,
                log_dir=log_dir / "images",
                png_dir=run_dir / runs.IMAGES_DIR,
                every_n_epochs=config.image_every,
                seed=config.seed,
            )
        )
    return found


def evaluate_elbo(model, images, batch_size: int = EVAL_BATCH_SIZE, kind=None) -> dict:
    """The held-out metrics of `model.evaluate` that the kind records (a VAE: ELBO,
    reconstruction, KL and its objective's other terms), averaged over `images` (an array,
    or a `data.ImageStream` read once)."""
    dataset = data.as_dataset(images, batch_size=batch_size, shuffle=False)
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    names = kind.metric_names(model, result) if kind is not None else result
    return {key: float(result[key]) for key in names}


def eval_prefix(split: str) -> str:
    """The metrics.json prefix of the eval split's results: the split's name (`test_elbo`,
    `validation_elbo`), or `eval` when it is `train` (whose prefix the training set has) or
    not a plain name (a tfds slice such as `test[:50%]`)."""
    return split if split.isidentifier() and split != "train" else "eval"


def load_training_data(config: TrainConfig):
    """Opens and checks the train and eval splits: tfds data sets as streams, array files in
    memory or memory-mapped (see `open_split`). Returns them with the config whose
    likelihood, component counts and held-out part are resolved (what config.json records)."""
    kind = kind_of(config)
    config = resolve_data(kind.resolve_config(config))
    labels = kind.uses_labels(config)
    x_train = open_split(config, "train", labels=labels)
    likelihood = resolve_likelihood(config, x_train)
    config = config.replace(likelihood=likelihood).resolved()
    if config.eval_split == "train":  # the same images (and limit): not opened twice
        kind.check_data(config, x_train, x_train)
        return config, x_train, x_train
    x_eval = open_split(config, config.eval_split, likelihood, labels=labels)
    check_same_images(config, x_train, x_eval)
    kind.check_data(config, x_train, x_eval)
    return config, x_train, x_eval


def describe_run(config: TrainConfig, x_train, x_eval, output=None) -> str:
    """The first line a user sees: which model is trained on which data, and where to."""
    model = kind_of(config).describe(config, x_train)
    how = "streamed" if isinstance(x_train, data.ImageStream) else "in memory"
    shape = "x".join(map(str, x_train.shape[1:]))
    where = "" if output is None else f"; run directory {output}"
    return (
        f"keras-vae: training {model} on {config.dataset} train ({len(x_train):,} images "
        f"{shape}, {how}), evaluating on {config.eval_split} ({len(x_eval):,}){where}"
    )


class _Session:
    """Where one `train` call runs: the strategy, this worker, the run directory and its
    lock, a non-chief worker's scratch directory, messages. `close()` releases them."""

    def __init__(self, config: TrainConfig, output, progress):
        if config.cpu_replicas:
            distribute.configure_cpu_replicas(config.cpu_replicas)
        # first: MultiWorkerMirroredStrategy must exist before any other TensorFlow op
        self.strategy = distribute.get_strategy(config.strategy)
        self.chief = distribute.is_chief(self.strategy)
        self.worker = distribute.worker_name(self.strategy)
        self.output = None if output is None else Path(output)
        self.progress = progress
        self.backup: runs.RunBackup | None = None
        self.lock: DirectoryLock | None = None
        self.scratch: tempfile.TemporaryDirectory | None = None
        self.model: keras.Model | None = None
        if self.worker:
            role = " (chief: writes the run files)" if self.chief else ""
            replicas = self.strategy.num_replicas_in_sync
            progress(f"keras-vae: {self.worker} of {replicas} replicas{role}")

    def claim_run_dir(self) -> None:
        """Locks the run directory (the chief only: the other workers of a multi-worker run
        write nothing there) and makes a non-chief worker's scratch directory."""
        if self.output is None:
            return
        if self.chief:
            if self.output.exists() and not self.output.is_dir():
                raise runs.RunStateError(
                    f"{self.output} exists and is not a directory; choose another --output."
                )
            self.lock = DirectoryLock(self.output).acquire()
        else:
            self.scratch = tempfile.TemporaryDirectory(prefix="keras-vae-worker-")

    def close(self) -> None:
        if self.scratch is not None:
            self.scratch.cleanup()
        if self.lock is not None:
            self.lock.release()

    def epochs_backed_up(self) -> int:
        return len(self.backup.history.get("loss", [])) if self.backup is not None else 0


def _model_and_restore(session: _Session, config: TrainConfig, x_train: np.ndarray):
    """Builds the model under the strategy, then restores the run's newest intact backup if
    there is one; a fresh run starts data-initialised priors from training examples. Returns
    the model and the epoch to start from."""
    with session.strategy.scope():
        model = build_model(
            config,
            tuple(x_train.shape[1:]),
            config.likelihood,
            epoch_steps=steps_per_epoch(config, len(x_train)),
            condition_dim=getattr(x_train, "condition_dim", None),
        )
    session.model = model
    initial_epoch = 0
    if session.output is not None:
        session.backup = runs.RunBackup(
            session.output,
            progress=session.progress,
            scratch_dir=session.scratch and session.scratch.name,
            keep=config.keep_backups,
        )
        with session.strategy.scope():  # the optimizer's variables are built under the strategy
            initial_epoch = session.backup.restore(model)
    if initial_epoch == 0:
        kind_of(config).initialize(model, x_train, config)
    return model, initial_epoch


def _training_callbacks(
    session: _Session, config: TrainConfig, guard: keras.callbacks.Callback, extra, x_eval
) -> list:
    """The NaN guard, the caller's callbacks, early stopping, the weight average's swap, the
    sample schedule, the time budget, the backup and the pictures, in that order."""
    callbacks = [guard, *(extra or [])]
    if config.early_stopping:  # before the average's swap: it copies the evaluated weights
        # (its patience counter is not part of the backup: a resumed run starts counting anew)
        monitor, mode = _early_stopping_monitor(config)
        callbacks.append(BestEpochStopping(monitor, patience=config.early_stopping, mode=mode))
    if config.ema_momentum:  # validation (and early stopping) see the averaged weights
        callbacks.append(keras.callbacks.SwapEMAWeights())
    if config.start_samples is not None:
        callbacks.append(
            SampleSchedule(config.start_samples, config.start_samples_epochs, config.samples)
        )
    if config.time_budget_minutes:  # before the backup, which records its epoch_seconds
        spent = sum(session.backup.history.get("epoch_seconds", [])) if session.backup else 0.0
        callbacks.append(TrainingTimeBudget(config.time_budget_minutes * 60.0, spent=spent))
    if session.backup is not None:
        callbacks.append(session.backup)
        if session.chief:
            callbacks += _picture_callbacks(config, session.output, x_eval)
    return callbacks


def _early_stopping_monitor(config: TrainConfig) -> tuple[str, str]:
    """The held-out metric early stopping watches and its mode (`ModelKind.monitor`)."""
    return kind_of(config).monitor(config)


def _fit(session: _Session, model, config: TrainConfig, x_train, x_eval, **fit_kwargs):
    """`model.fit` on the configured pipelines; a lost worker becomes `WorkerLostError`.
    Returns the Keras history and the wall time in seconds."""
    train_ds = data.as_dataset(
        x_train,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        dynamic_binarization=config.dynamic_binarization,
        repeat=config.steps_per_epoch is not None,
        likelihood=config.likelihood,  # streams check every batch
    )
    eval_ds = data.as_dataset(
        x_eval, batch_size=EVAL_BATCH_SIZE, shuffle=False, likelihood=config.likelihood
    )
    epochs = config.epochs
    if config.time_budget_minutes and session.backup is not None:
        spent = sum(session.backup.history.get("epoch_seconds", []))
        if spent >= config.time_budget_minutes * 60.0:  # a rerun after the budget was used
            epochs = fit_kwargs.get("initial_epoch", 0)
    start = time.perf_counter()
    try:
        history = model.fit(
            train_ds,
            epochs=epochs,
            steps_per_epoch=config.steps_per_epoch,
            validation_data=eval_ds,
            shuffle=False,  # the pipelines shuffle, with the configured seed
            **fit_kwargs,
        )
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError) as err:
        if not distribute.is_multi_worker(session.strategy):
            raise
        resume = "without --output, training starts over"
        if session.output is not None:
            resume = (
                f"training resumes from the backup after epoch {session.epochs_backed_up()} "
                f"in {session.output}"
            )
        raise WorkerLostError(
            f"{session.worker}: another worker of the cluster stopped ({type(err).__name__}). "
            f"Restart every worker with the same command; {resume}."
        ) from err
    return history, time.perf_counter() - start


def _raise_if_not_finite(session: _Session, guard: StopOnNonFiniteLoss) -> None:
    if not guard.failure:
        return
    done = session.epochs_backed_up()
    kept = (
        f"the backup after epoch {done} in {session.output / runs.BACKUP_DIR} is intact"
        if done
        else "no epoch completed, so there is no backup"
    )
    raise NonFiniteLossError(
        f"Training stopped: {guard.failure}; {kept}. Lower --learning-rate or set "
        "--clipnorm, and check the data."
    )


def _final_metrics(
    session: _Session, model, config: TrainConfig, x_train, x_eval, epochs_run: int
) -> dict:
    """metrics.json: `train_<term>` on the training set and `<split>_<term>` on the eval
    split (see `eval_prefix`) for every term of the objective, and the run's facts."""
    if config.steps_per_epoch is None:
        examples_seen = epochs_run * len(x_train)  # one pass, the short last batch included
    else:
        examples_seen = epochs_run * config.steps_per_epoch * config.batch_size  # full batches
    prefix = eval_prefix(config.eval_split)
    kind = kind_of(config)
    metrics = {"unit": "nats per example", "eval_split": config.eval_split}
    for name, images in (("train", x_train), (prefix, x_eval)):
        values = evaluate_elbo(model, images, kind=kind)
        metrics.update({f"{name}_{k}": v for k, v in values.items()})
    metrics.update({"model_kind": config.model, **kind.run_facts(config, model, metrics)})
    metrics.update(
        {
            "likelihood": config.likelihood,
            "examples_seen": examples_seen,
            "replicas": session.strategy.num_replicas_in_sync,
            "strategy": distribute.strategy_name(session.strategy),
            "jit_compile": model.xla != "off",
            "xla": model.xla,
        }
    )
    return metrics


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
    rerunning the same call after a kill continues from the last completed epoch, with every
    part's weights (a mixture prior's components, the VampPrior's pseudo-inputs). The same
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
        keras_vae._internal.lock.DirectoryInUseError: Another process trains into `output`.
        ResourceError: Memory or disk ran out; the message names what was needed and what
            to change, and the last backup stays intact.

    Returns:
        The metrics dict (also `RUN_DIR/metrics.json`), nats per example: `train_elbo`,
        `train_reconstruction`, `train_kl` (and the objective's other terms, e.g.
        `train_iwae`) on the whole training set, the same for the eval split named by
        `eval_split` (`test_elbo`, `validation_elbo`, ...; see `eval_prefix`), the wall time
        and the training throughput. The returned dict also holds the trained `"model"` and
        this call's Keras `"history"`, and `"chief"`: False on a non-chief worker of a
        multi-worker run, which trains and evaluates like the others but writes no run files.
    """
    session = _Session(config, output, progress)
    try:
        session.claim_run_dir()  # first: a second writer is refused before any work
        return _train(session, config, output, verbose, overwrite, callbacks)
    except (MemoryError, tf.errors.ResourceExhaustedError, OSError) as error:
        translated = _resource_error(error, session, config)
        if translated is None:
            raise
        raise translated from error
    finally:
        session.close()


def _train(session: _Session, config: TrainConfig, output, verbose, overwrite, callbacks):
    """`train` once the session holds the run directory."""
    if not session.chief:
        verbose = 0
    keras.utils.set_random_seed(config.seed)
    config, x_train, x_eval = load_training_data(config)
    session.progress(describe_run(config, x_train, x_eval, output))
    if output is not None:
        runs.prepare_run_dir(output, config, overwrite=overwrite, write=session.chief)
    distribute.barrier(session.strategy)  # workers read the run directory once it is ready
    model, initial_epoch = _model_and_restore(session, config, x_train)
    guard = StopOnNonFiniteLoss()
    fit_callbacks = _training_callbacks(session, config, guard, callbacks, x_eval)
    history, wall = _fit(
        session, model, config, x_train, x_eval,
        initial_epoch=initial_epoch, verbose=verbose, callbacks=fit_callbacks,
    )  # fmt: skip
    _raise_if_not_finite(session, guard)
    epochs_run = len(history.history.get("loss", []))  # fewer after early stopping
    metrics = _final_metrics(session, model, config, x_train, x_eval, epochs_run)
    metrics.update(
        resumed_from_epoch=initial_epoch,
        epochs=initial_epoch + epochs_run,
        **_kept_epoch(fit_callbacks, initial_epoch + epochs_run),
        train_seconds=round(wall, 2),
        train_examples_per_s=round(metrics["examples_seen"] / max(wall, 1e-9), 1),
    )
    if output is not None and session.chief:
        runs.finish_run(output, model, session.backup.history, metrics)
    return {**metrics, "model": model, "history": history.history, "chief": session.chief}


def _kept_epoch(callbacks, last_epoch: int) -> dict:
    """Which epoch's weights the model holds (1-based): the best one early stopping kept,
    with the held-out value it was kept for, else the last one trained."""
    stopper = next((c for c in callbacks if isinstance(c, BestEpochStopping)), None)
    if stopper is None or stopper.best_weights is None:
        return {"kept_epoch": last_epoch}
    return {"kept_epoch": stopper.best_epoch + 1, "kept_for": stopper.monitor,
            "kept_value": float(stopper.best)}  # fmt: skip


# ------------------------------------------------------------------ resource errors, one line
ResourceError = runs.ResourceError
_SHAPE = re.compile(r"shape\s*\[([\d,\s]*)\]\s*and type (\w+)")


def describe_resource_error(error: BaseException) -> str | None:
    """One line for an error of exhausted memory or disk, or of the command's XLA cache
    (None for any other error): what could not be had, and how much was available."""
    if isinstance(error, ResourceError):
        return str(error)
    if xla_cache.describe_failure(error):
        return xla_cache.describe_failure(error)
    if atomic.is_disk_full(error):
        where = getattr(error, "filename", None)
        free = getattr(error, "free", None)
        if where is not None and free is None:
            free = atomic.free_bytes(Path(where).parent)
        target = f" while writing {where}" if where else ""
        room = f" ({atomic.format_bytes(free)} free)" if free is not None else ""
        return (
            f"The disk is full{target}{room}; files already in place are unchanged (every "
            "write is atomic). Free some space or write to another disk, then rerun."
        )
    if isinstance(error, (MemoryError, tf.errors.ResourceExhaustedError)):
        return f"Out of memory: {_memory_needed(error)}. Use a smaller model or batch."
    return None


def _memory_needed(error: BaseException) -> str:
    """`could not allocate a [500, 4000000000] float tensor (7.3 TB; 20.1 GB of RAM
    available)`, the shape from TensorFlow's message."""
    available = f"{atomic.format_bytes(_free_memory())} of RAM available"
    match = _SHAPE.search(str(error))
    if not match:
        return f"could not allocate ({type(error).__name__}; {available})"
    shape = [int(d) for d in match.group(1).replace(" ", "").split(",") if d]
    size = np.dtype(_TF_DTYPES.get(match.group(2), match.group(2))).itemsize
    return (
        f"could not allocate a [{', '.join(map(str, shape))}] {match.group(2)} tensor "
        f"({atomic.format_bytes(size * math.prod(shape))}; {available})"
    )


_TF_DTYPES = {"float": "float32", "double": "float64", "half": "float16", "int64": "int64"}


def _free_memory() -> int:
    """Bytes of RAM available (Linux: MemAvailable; else the free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _resource_error(
    error: BaseException, session: _Session, config: TrainConfig
) -> ResourceError | None:
    """The error of a `train` that ran out of memory or disk, in one line that says what to
    change and what was kept; None for any other error."""
    if isinstance(error, ResourceError):
        return None  # already says it all
    if xla_cache.describe_failure(error):  # (a full disk there is a ResourceExhaustedError)
        cache = xla_cache.describe_failure(error).removesuffix(".")
        return ResourceError(f"{cache}{_kept(session)}.")
    if isinstance(error, (MemoryError, tf.errors.ResourceExhaustedError)):
        change = (
            f"lower --latent-dim ({config.latent_dim}), --hidden-units "
            f"({' '.join(map(str, config.hidden_units))}) or --batch-size ({config.batch_size})"
        )
        return ResourceError(f"Out of memory: {_memory_needed(error)}; {change}{_kept(session)}.")
    if atomic.is_disk_full(error) and session.output is not None:
        where = getattr(error, "filename", None) or session.output
        return ResourceError(
            f"The disk of {session.output} is full while writing {where} "
            f"({atomic.format_bytes(atomic.free_bytes(session.output))} free; the model "
            f"needs about {atomic.format_bytes(_model_bytes(session.model))} per file)"
            f"{_kept(session)}. Free some space, then rerun the same command."
        )
    return None


def _kept(session: _Session) -> str:
    done = session.epochs_backed_up()
    if session.output is None or not done:
        return ""
    return f"; the backup after epoch {done} in {session.output / runs.BACKUP_DIR} is intact"


def _model_bytes(model) -> int:
    """Bytes of a model's variables and its optimizer's (what a backup file holds)."""
    if model is None:
        return 0
    variables = [*model.weights, *getattr(model.optimizer, "variables", [])]
    return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)
