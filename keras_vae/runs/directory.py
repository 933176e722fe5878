"""The run directory that `keras-vae train` writes and `evaluate`/`export` read.

    RUN_DIR/config.json    the TrainConfig (written first: a rerun compares against it)
    RUN_DIR/backup/        the resume points while training: the last `keep_backups`
                           completed epochs, each `epoch-NNNNN.weights.h5` with its state
                           file `epoch-NNNNN.state.json` (removed once the run has finished)
    RUN_DIR/.keras-vae.lock  held by the training process: one writer at a time
                           (keras_vae._internal.lock)
    RUN_DIR/history.csv    per-epoch metrics (nats per example), updated every epoch
    RUN_DIR/model.keras    the trained VAE (Keras v3 format, loads with safe_mode=True)
    RUN_DIR/metrics.json   final ELBO and its terms (nats per example) on the training set
                           (`train_elbo`, ...) and the eval split (`test_elbo`,
                           `validation_elbo`, or `eval_elbo` for another split), `eval_split`
    RUN_DIR/tensorboard/   TensorBoard scalars (train/, validation/) and pictures (images/)
    RUN_DIR/images/        reconstruction and sample PNGs every few epochs

Every file is written atomically (`keras_vae._internal.atomic`): to a temporary file in the same
directory, fsync'ed, renamed with `os.replace`, and the directory fsync'ed, so a kill or a
power loss at any moment leaves either the old file or the new one, never a truncated file
that a later load would trust. A backup is committed by its state file, written only after
the weights file it names is complete and has been read back; the state records the weights'
SHA-256 and size, so that a file damaged later (a bad disk, a copy cut short) is recognised.
A resume restores the newest backup that passes these checks and says which newer ones it
skipped and why. An older backup is deleted only once a newer one has been committed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_vae._internal import atomic
from keras_vae.runs.config import TrainConfig

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
BACKUP_DIR = "backup"
BACKUP_STATE = "state.json"  # the single backup of earlier versions, still restored
TENSORBOARD_DIR = "tensorboard"
IMAGES_DIR = "images"


class RunDirectoryError(ValueError):
    """A path is not a usable keras_vae run directory, or a file in it is damaged."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes `text` to `path` atomically (`keras_vae._internal.atomic.write_text`)."""
    atomic.write_text(path, text)


def atomic_write_json(path: str | Path, value: Any) -> None:
    """Writes `value` as indented JSON with sorted keys to `path` atomically."""
    atomic.write_json(path, value, sort_keys=True)


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
    with atomic.atomic_path(path) as tmp:
        model.save(tmp)


def load_model(path: str | Path, compile: bool = True) -> keras.Model:
    """Loads a `.keras` file with `safe_mode=True`; a damaged file gets a one-line error.
    `compile=False` leaves out the optimizer (a model used frozen inside another). Every
    class of keras_vae is registered: importing any module of it imports `keras_vae`, which
    imports every part and model kind."""

    path = Path(path)
    if not path.is_file():
        raise RunDirectoryError(f"Model file not found: {path}.")
    if not zipfile.is_zipfile(path):
        raise RunDirectoryError(
            f"{path} is not a valid .keras file (truncated or corrupted); retrain or restore "
            "it from a backup."
        )
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
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


def load_config(run_dir: str | Path, data_dir: str | Path | None = None) -> TrainConfig:
    """The training config of a run directory (its model is not loaded); `data_dir`
    replaces the tfds data directory it recorded (the data moved, or another machine)."""
    config = TrainConfig.from_file(check_run_dir(run_dir) / CONFIG_FILE)
    return config if data_dir is None else config.replace(data_dir=str(data_dir))


def load_run(
    run_dir: str | Path, data_dir: str | Path | None = None
) -> tuple[keras.Model, TrainConfig]:
    """Loads the model and the training config of a run directory (see `load_config`)."""
    config = load_config(run_dir, data_dir)
    return load_model(Path(run_dir) / MODEL_FILE), config


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
        if _read_saved_config(run_dir) != config:  # another keep_backups: recorded
            atomic_write_text(run_dir / CONFIG_FILE, config.to_json())
        return True
    atomic_write_text(run_dir / CONFIG_FILE, config.to_json())
    return False


_RUN_FILES = {
    CONFIG_FILE, MODEL_FILE, HISTORY_FILE, METRICS_FILE, BACKUP_DIR, TENSORBOARD_DIR, IMAGES_DIR,
}  # fmt: skip


# settings a resumed run may change: they do not change what is trained
_FREE_ON_RESUME = ("keep_backups",)


def _free(config: TrainConfig) -> dict:
    return {key: getattr(config, key) for key in _FREE_ON_RESUME}


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
    if saved is not None and saved.replace(**_free(config)) != config:
        changed = sorted(k for k, v in config.to_dict().items() if saved.to_dict().get(k) != v)
        raise RunStateError(
            f"{run_dir} holds a run with other settings (differs in: {', '.join(changed)}); "
            "pass --overwrite to replace it or choose another --output."
        )
    if backup_states(run_dir):  # restore picks the newest intact one, or says none is
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


class ResourceError(RuntimeError):
    """Memory or disk ran out; the message says what was needed and what to change, and
    what was kept (the last backup, earlier files)."""


_BACKUP_NAME = re.compile(r"^epoch-(\d+)\.(state\.json|weights\.h5)$")


def _backup_paths(backup_dir: Path, epoch: int) -> tuple[Path, Path]:
    """The state file and the weights file of the backup after `epoch`."""
    stem = backup_dir / f"epoch-{epoch:05d}"
    return stem.with_name(stem.name + ".state.json"), stem.with_name(stem.name + ".weights.h5")


def _backup_files(backup_dir: Path) -> dict[int, dict[str, Path]]:
    """{epoch: {"state.json": path, "weights.h5": path}} of the backup files present."""
    found: dict[int, dict[str, Path]] = {}
    if backup_dir.is_dir():
        for path in backup_dir.iterdir():
            match = _BACKUP_NAME.match(path.name)
            if match:
                found.setdefault(int(match.group(1)), {})[match.group(2)] = path
    return found


def _read_state(path: Path) -> dict:
    """A backup's state file; ValueError (saying what is wrong) if it is not one."""
    try:
        state = json.loads(path.read_text())
        int(state["epoch"]), str(state["weights"]), dict(state["history"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"its state file is damaged ({type(error).__name__}: {error})") from None
    return state


def backup_states(run_dir: str | Path) -> list[tuple[Path, dict | None, str | None]]:
    """Every committed backup of a run, newest first: `(state file, state or None, problem
    or None)`. A state file of an earlier version (`state.json`) counts as the oldest."""
    backup_dir = Path(run_dir) / BACKUP_DIR
    paths = [
        files["state.json"]
        for _, files in sorted(_backup_files(backup_dir).items(), reverse=True)
        if "state.json" in files
    ]
    if (backup_dir / BACKUP_STATE).is_file():
        paths.append(backup_dir / BACKUP_STATE)
    found = []
    for path in paths:
        try:
            found.append((path, _read_state(path), None))
        except ValueError as error:
            found.append((path, None, str(error)))
    return found


def read_backup_state(run_dir: str | Path) -> dict | None:
    """The newest readable backup state of a run (`epoch`, `weights`, `sha256`, `bytes`,
    `history`), or None; whether its weights are intact is checked by `RunBackup.restore`."""
    return next((state for _, state, _ in backup_states(run_dir) if state is not None), None)


def verify_backup(backup_dir: Path, state: dict) -> str | None:
    """None if the weights file that `state` names exists with the recorded size and
    SHA-256, else what is wrong with it (a backup of an earlier version has no checksum)."""
    weights = backup_dir / state["weights"]
    if not weights.is_file():
        return f"its weights file {weights.name} is missing"
    size = weights.stat().st_size
    if "bytes" in state and size != state["bytes"]:
        return f"{weights.name} has {size} bytes, not the {state['bytes']} written (truncated)"
    if "sha256" in state and atomic.sha256(weights) != state["sha256"]:
        return f"{weights.name} does not match its SHA-256 (damaged on disk)"
    return None


def _check_weights_file(path: Path) -> None:
    """Reads every array of a just-written `.weights.h5` back from disk (a file that h5py
    cannot read through is not committed)."""
    import h5py

    def read(name, item):
        if isinstance(item, h5py.Dataset):
            item[()]

    with h5py.File(path, "r") as handle:
        handle.visititems(read)


class RunBackup(keras.callbacks.Callback):
    """Saves a verified resume point after every completed epoch; restores the newest intact
    one on start.

    Unlike `keras.callbacks.BackupAndRestore` (whose weights and epoch counter are two
    separate, non-atomic writes), each epoch's weights go to a new file
    `epoch-NNNNN.weights.h5` (written atomically, then read back), and its state file
    `epoch-NNNNN.state.json`, written after it, commits them together with the epoch, the
    whole history so far and the weights' size and SHA-256. The weights file holds the
    model's variables, the optimizer's state and the noise seed. The last `keep` backups are
    kept; an older one is deleted only after a newer one is committed. An epoch whose metrics
    or weights are not finite is never saved.

    Args:
        run_dir: The run directory; the backups live in `run_dir/backup/`.
        progress: Called with one-line messages (resume notices).
        scratch_dir: For a non-chief worker of a multi-worker run: it restores from
            `run_dir/backup/` like the chief, but writes its own backups into this private
            directory (TensorFlow's convention: every worker saves, only the chief's copy is
            kept) and no history file.
        keep: How many of the newest backups to keep (at least 1).
    """

    def __init__(
        self,
        run_dir: str | Path,
        progress=print,
        scratch_dir: str | Path | None = None,
        keep: int = 3,
    ):
        super().__init__()
        if keep < 1:
            raise ValueError(f"keep must be a positive int. Received: keep={keep!r}")
        self.run_dir = Path(run_dir)
        self.backup_dir = self.run_dir / BACKUP_DIR
        self.write_dir = Path(scratch_dir) / BACKUP_DIR if scratch_dir else self.backup_dir
        self.progress = progress
        self.keep = keep
        self.history: dict[str, list[float]] = {}
        self.initial_epoch = 0
        self._skipped: set[int] = set()  # epochs whose backups failed the checks

    def restore(self, model: keras.Model) -> int:
        """Loads the newest intact backup into `model`; returns the epoch to continue from.

        Raises:
            RunStateError: There are backups, but none is intact.
        """
        found = backup_states(self.run_dir)
        if not found:
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        skipped = []
        for path, state, problem in found:
            problem = problem or verify_backup(self.backup_dir, state) or _load(model, path, state)
            if problem is None:
                break
            skipped.append(f"{_describe(path, state)}: {problem}")
            self._skipped.add(_epoch_of(path, state))
        else:
            raise RunStateError(
                f"No intact backup in {self.backup_dir} ({'; '.join(skipped)}); pass "
                "--overwrite to start the run over."
            )
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.initial_epoch = int(state["epoch"])
        note = f"; skipped {'; '.join(skipped)}" if skipped else ""
        self.progress(
            f"keras-vae: resuming {self.run_dir} from its backup after epoch "
            f"{self.initial_epoch} (verified){note}"
        )
        return self.initial_epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(math.isfinite(float(v)) for v in logs.values()):
            return
        if not all(np.isfinite(w).all() for w in self.model.get_weights()):
            return
        history = {k: list(v) for k, v in self.history.items()}
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        try:
            self._commit(epoch + 1, history)
        except atomic.DiskFullError as error:
            raise self._disk_full(epoch + 1, error) from error
        self.history = history
        if self.write_dir == self.backup_dir:
            atomic_write_text(self.run_dir / HISTORY_FILE, history_to_csv(history))
        self._prune(epoch + 1)

    def _commit(self, epoch: int, history: dict) -> None:
        """Writes, reads back and commits the backup after `epoch` (1-based)."""
        state_path, weights = _backup_paths(self.write_dir, epoch)
        with atomic.atomic_path(weights) as tmp:
            self.model.save_weights(tmp, overwrite=True)
        _check_weights_file(weights)
        state = {
            "epoch": epoch, "weights": weights.name, "bytes": weights.stat().st_size,
            "sha256": atomic.sha256(weights), "history": history,
        }  # fmt: skip
        atomic_write_json(state_path, state)

    def _prune(self, epoch: int) -> None:
        """Keeps the newest `keep` committed backups up to `epoch`; removes the rest (older
        ones, and newer ones left by an abandoned run, skipped as damaged on resume)."""
        files = _backup_files(self.write_dir)
        kept = sorted(
            e for e, f in files.items()
            if e <= epoch and "state.json" in f and (e == epoch or e not in self._skipped)
        )  # fmt: skip
        kept = set(kept[-self.keep :])
        for number, named in files.items():
            if number not in kept:  # the state file first: no state ever names a missing file
                for kind in ("state.json", "weights.h5"):
                    if kind in named:
                        named[kind].unlink(missing_ok=True)
        (self.write_dir / BACKUP_STATE).unlink(missing_ok=True)  # an earlier version's

    def _disk_full(self, epoch: int, error: atomic.DiskFullError) -> ResourceError:
        done = len(self.history.get("loss", []))
        variables = [*self.model.weights, *getattr(self.model.optimizer, "variables", [])]
        needed = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
        written = [p.stat().st_size for p in self.write_dir.glob("epoch-*.weights.h5")]
        needed = max([needed, *written])  # a committed backup: the size with HDF5's overhead
        kept = f"the backup after epoch {done} is intact" if done else "no earlier backup exists"
        return ResourceError(
            f"The disk of {self.write_dir} is full: the backup after epoch {epoch} needs "
            f"about {atomic.format_bytes(needed)}, {atomic.format_bytes(error.free)} is free; "
            f"{kept}. Free some space (or lower --keep-backups), then rerun the same command."
        )


def _load(model: keras.Model, path: Path, state: dict) -> str | None:
    """Loads a verified backup's weights; None on success, else why it failed."""
    try:
        model.load_weights(path.parent / state["weights"])
    except Exception as error:  # noqa: BLE001 - any failure: the next older backup is tried
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        return f"its weights do not load ({type(error).__name__}: {first})"
    return None


def _epoch_of(path: Path, state: dict | None) -> int:
    """The epoch of a backup: from its file name, else from its state (-1 if neither)."""
    match = _BACKUP_NAME.match(path.name)
    if match:
        return int(match.group(1))
    return int(state["epoch"]) if state is not None else -1


def _describe(path: Path, state: dict | None) -> str:
    """`the backup after epoch 3` for the messages about skipped backups."""
    epoch = _epoch_of(path, state)
    return f"the backup after epoch {epoch}" if epoch >= 0 else f"the backup {path.name}"


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
