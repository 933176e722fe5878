"""The run directory that `keras-vae train` writes and `evaluate`/`export` read.

    RUN_DIR/config.json    the TrainConfig (written first: a rerun compares against it)
    RUN_DIR/backup/        the resume point while training: state.json + weights of the last
                           completed epoch (removed once the run has finished)
    RUN_DIR/history.csv    per-epoch metrics (nats per example), updated every epoch
    RUN_DIR/model.keras    the trained VAE (Keras v3 format, loads with safe_mode=True)
    RUN_DIR/metrics.json   final ELBO and its terms (nats per example) on the training set
                           (`train_elbo`, ...) and the eval split (`test_elbo`,
                           `validation_elbo`, or `eval_elbo` for another split), `eval_split`
    RUN_DIR/tensorboard/   TensorBoard scalars (train/, validation/) and pictures (images/)
    RUN_DIR/images/        reconstruction and sample PNGs every few epochs

Every file is written atomically: to a temporary file in the same directory, then renamed
with `os.replace`, so a kill at any moment leaves either the old file or the new one, never a
truncated file that a later load would trust. The backup is committed by `state.json`, which
is replaced only after the weights file it names is complete.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_vae.config import TrainConfig

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
BACKUP_DIR = "backup"
BACKUP_STATE = "state.json"
TENSORBOARD_DIR = "tensorboard"
IMAGES_DIR = "images"


class RunDirectoryError(ValueError):
    """A path is not a usable keras_vae run directory, or a file in it is damaged."""


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes `text` to `path` atomically (temporary file, fsync, rename)."""
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def atomic_write_json(path: str | Path, value: Any) -> None:
    """Writes `value` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def history_to_csv(history: Mapping[str, Sequence[float]]) -> str:
    """Formats a Keras `History.history` dict as CSV with an `epoch` column (0-based)."""
    keys = sorted(history)
    rows = zip(*(history[k] for k in keys), strict=True)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for epoch, row in enumerate(rows):
        writer.writerow([epoch, *(f"{float(v):.6f}" for v in row)])
    return out.getvalue()


def save_model(model: keras.Model, path: str | Path) -> None:
    """Saves `model` to a `.keras` file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(path: str | Path) -> keras.Model:
    """Loads a `.keras` file with `safe_mode=True`; a damaged file gets a one-line error."""
    import keras_vae  # noqa: F401 - registers the serializable classes

    path = Path(path)
    if not path.is_file():
        raise RunDirectoryError(f"Model file not found: {path}.")
    if not zipfile.is_zipfile(path):
        raise RunDirectoryError(
            f"{path} is not a valid .keras file (truncated or corrupted); retrain or restore "
            "it from a backup."
        )
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - any load failure becomes one line
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RunDirectoryError(
            f"Cannot load {path}: {type(error).__name__}: {first_line}"
        ) from error


def check_run_dir(run_dir: str | Path) -> Path:
    """Returns `run_dir` as a Path if it holds a model and config, else a clear error."""
    run_dir = Path(run_dir)
    missing = [name for name in (MODEL_FILE, CONFIG_FILE) if not (run_dir / name).is_file()]
    if missing:
        raise RunDirectoryError(
            f"{run_dir} is not a keras_vae run directory (missing {', '.join(missing)}); "
            "give the --output directory of a finished `keras-vae train`."
        )
    return run_dir


def load_run(run_dir: str | Path) -> tuple[keras.Model, TrainConfig]:
    """Loads the model and the training config of a run directory."""
    run_dir = check_run_dir(run_dir)
    config = TrainConfig.from_file(run_dir / CONFIG_FILE)
    return load_model(run_dir / MODEL_FILE), config


class RunStateError(RunDirectoryError):
    """A rerun into an existing run directory that cannot continue it."""


def prepare_run_dir(
    run_dir: str | Path, config: TrainConfig, overwrite: bool = False, write: bool = True
) -> bool:
    """Makes `run_dir` ready for training `config`; returns True when it resumes a backup.

    * A new or empty directory: config.json is written, training starts at epoch 0.
    * The same config and a backup from a killed run: training resumes from the backup.
    * Anything else already there (other settings, a finished run, unknown files) is refused
      unless `overwrite`, which removes the earlier run's files first.

    `write=False` (a non-chief worker of a multi-worker run) makes the same checks and
    changes nothing; with `overwrite` it checks nothing, since the chief replaces the run.
    """
    run_dir = Path(run_dir)
    if not write:
        if overwrite or not run_dir.is_dir() or not any(run_dir.iterdir()):
            return False
        return _check_existing_run(run_dir, config)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunStateError(f"{run_dir} exists and is not a directory; choose another --output.")
    present = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if overwrite:
        for name in set(present) & _RUN_FILES:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif present and _check_existing_run(run_dir, config):
        return True
    atomic_write_text(run_dir / CONFIG_FILE, config.to_json())
    return False


_RUN_FILES = {
    CONFIG_FILE, MODEL_FILE, HISTORY_FILE, METRICS_FILE, BACKUP_DIR, TENSORBOARD_DIR, IMAGES_DIR,
}  # fmt: skip


def _check_existing_run(run_dir: Path, config: TrainConfig) -> bool:
    """True when `run_dir` holds a backup of `config` to resume, False when it holds only
    that config; RunStateError for anything that cannot be continued."""
    present = sorted(p.name for p in run_dir.iterdir())
    # hidden names are the temporary files of atomic writes: another worker's write in
    # progress, or one a kill cut short (the file it was to replace is intact)
    foreign = [
        name for name in present
        if name not in _RUN_FILES and not name.startswith(("eval_", "."))
    ]  # fmt: skip
    if foreign:
        raise RunStateError(
            f"{run_dir} is not empty and not a keras_vae run directory (found "
            f"{', '.join(foreign[:3])}); choose another --output."
        )
    saved = _read_saved_config(run_dir)
    if saved is not None and saved != config:
        changed = sorted(k for k, v in config.to_dict().items() if saved.to_dict().get(k) != v)
        raise RunStateError(
            f"{run_dir} holds a run with other settings (differs in: {', '.join(changed)}); "
            "pass --overwrite to replace it or choose another --output."
        )
    if read_backup_state(run_dir) is not None:
        return True
    if (run_dir / MODEL_FILE).exists():
        raise RunStateError(
            f"{run_dir} already holds a finished run; pass --overwrite to retrain it or "
            "choose another --output."
        )
    return False


def _read_saved_config(run_dir: Path) -> TrainConfig | None:
    if not (run_dir / CONFIG_FILE).is_file():
        return None
    try:
        return TrainConfig.from_file(run_dir / CONFIG_FILE)
    except ValueError as error:
        raise RunStateError(
            f"{run_dir / CONFIG_FILE} is unreadable ({error}); pass --overwrite to start over."
        ) from None


def read_backup_state(run_dir: str | Path) -> dict | None:
    """The committed backup state of a run (`epoch`, `weights`, `history`), or None."""
    path = Path(run_dir) / BACKUP_DIR / BACKUP_STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        weights = Path(run_dir) / BACKUP_DIR / state["weights"]
        int(state["epoch"]), dict(state["history"])
    except (ValueError, KeyError, TypeError) as error:
        raise RunStateError(
            f"{path} is damaged ({error}); pass --overwrite to start the run over."
        ) from None
    if not weights.is_file():
        raise RunStateError(f"{path} names {weights.name}, which is missing; pass --overwrite.")
    return state


class RunBackup(keras.callbacks.Callback):
    """Saves a resume point after every completed epoch, atomically; restores it on start.

    Unlike `keras.callbacks.BackupAndRestore` (whose weights and epoch counter are two
    separate, non-atomic writes), the weights go to a new file and `state.json`, replaced
    atomically afterwards, commits them together with the epoch and the whole history so far.
    The weights file holds the model's variables, the optimizer's state and the noise seed.
    An epoch whose metrics or weights are not finite is never saved.

    Args:
        run_dir: The run directory; the backup lives in `run_dir/backup/`.
        progress: Called with one-line messages (resume notices).
        scratch_dir: For a non-chief worker of a multi-worker run: it restores from
            `run_dir/backup/` like the chief, but writes its own backups into this private
            directory (TensorFlow's convention: every worker saves, only the chief's copy is
            kept) and no history file.
    """

    def __init__(self, run_dir: str | Path, progress=print, scratch_dir: str | Path | None = None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.backup_dir = self.run_dir / BACKUP_DIR
        self.write_dir = Path(scratch_dir) / BACKUP_DIR if scratch_dir else self.backup_dir
        self.progress = progress
        self.history: dict[str, list[float]] = {}
        self.initial_epoch = 0

    def restore(self, model: keras.Model) -> int:
        """Loads the committed backup into `model`; returns the epoch to continue from."""
        state = read_backup_state(self.run_dir)
        if state is None:
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(self.backup_dir / state["weights"])
        except Exception as error:  # noqa: BLE001
            raise RunStateError(
                f"Cannot load backup {state['weights']} ({type(error).__name__}); pass "
                "--overwrite to start the run over."
            ) from error
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.initial_epoch = int(state["epoch"])
        self.progress(
            f"keras-vae: resuming {self.run_dir} from its backup after epoch "
            f"{self.initial_epoch} (of the {self.initial_epoch} completed)"
        )
        return self.initial_epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(math.isfinite(float(v)) for v in logs.values()):
            return
        if not all(np.isfinite(w).all() for w in self.model.get_weights()):
            return
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.write_dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:05d}.weights.h5"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".weights.h5", dir=self.write_dir)
        os.close(fd)
        try:
            self.model.save_weights(tmp, overwrite=True)
            os.replace(tmp, self.write_dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        state = {"epoch": epoch + 1, "weights": name, "history": self.history}
        atomic_write_json(self.write_dir / BACKUP_STATE, state)
        if self.write_dir == self.backup_dir:
            atomic_write_text(self.run_dir / HISTORY_FILE, history_to_csv(self.history))
        for old in self.write_dir.glob("*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


def finish_run(
    run_dir: str | Path,
    model: keras.Model,
    history: Mapping[str, Sequence[float]],
    metrics: Mapping[str, Any],
) -> None:
    """Writes the final model, history and metrics, each atomically, then drops the backup.

    A kill before the backup is removed only means a rerun finds the backup at the last
    epoch, trains nothing and writes these files again.
    """
    run_dir = Path(run_dir)
    save_model(model, run_dir / MODEL_FILE)
    atomic_write_text(run_dir / HISTORY_FILE, history_to_csv(history))
    atomic_write_json(run_dir / METRICS_FILE, dict(metrics))
    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
