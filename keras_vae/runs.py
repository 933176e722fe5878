"""The run directory that `keras-vae train` writes and `evaluate`/`export` read.

    RUN_DIR/model.keras    the trained VAE (Keras v3 format, loads with safe_mode=True)
    RUN_DIR/config.json    the TrainConfig that produced it
    RUN_DIR/history.csv    per-epoch metrics (nats per example)
    RUN_DIR/metrics.json   final train and test ELBO (nats per example)

Every file is written atomically: to a temporary file in the same directory, then renamed
with `os.replace`, so a kill at any moment leaves either the old file or the new one, never a
truncated file that a later load would trust.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from keras_vae.config import TrainConfig

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"


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


def write_run(
    run_dir: str | Path,
    model: keras.Model,
    config: TrainConfig,
    history: Mapping[str, Sequence[float]],
    metrics: Mapping[str, Any],
) -> None:
    """Writes the four run files of a finished training, each atomically."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / CONFIG_FILE, config.to_json())
    save_model(model, run_dir / MODEL_FILE)
    atomic_write_text(run_dir / HISTORY_FILE, history_to_csv(history))
    atomic_write_json(run_dir / METRICS_FILE, dict(metrics))
