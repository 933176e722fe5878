"""Training configuration: one dataclass, read from JSON/YAML or the CLI, written as JSON.

Config files are parsed as data only (`json.load`, `yaml.safe_load`): nothing in them runs.
Unknown keys and wrong types are refused with the list of valid keys.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from keras_vae.distribute import STRATEGIES

LIKELIHOODS = ("bernoulli", "gaussian")


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the key and the fix."""


@dataclasses.dataclass
class TrainConfig:
    """Everything `keras-vae train` needs; the defaults are the AEVB paper's MNIST model.

    Attributes:
        dataset: tfds name (`binarized_mnist`, `mnist`, `frey_face`) or a `.npz`/`.npy` path.
        data_dir: tfds data directory; None means tfds' default (`TFDS_DATA_DIR`).
        manual_dir: Directory with manually downloaded raw files (offline preparation).
        eval_split: Held-out split used for validation during training and for `test_elbo`.
        likelihood: `bernoulli` or `gaussian`; None picks the dataset's natural one.
        latent_dim: Size of z.
        hidden_units: Hidden layer sizes of the encoder and decoder MLPs.
        activation: Hidden activation (the paper: tanh).
        epochs: Passes over the training data (or of `steps_per_epoch` steps).
        steps_per_epoch: Steps per epoch; None means one pass over the training split.
        steps_per_execution: Training steps per compiled call (fewer Python round trips:
            about 25% faster for the paper's model, see benchmarks/throughput.py).
        batch_size: Global batch size (split across replicas under a strategy).
        learning_rate: Adam step size.
        clipnorm: Clip each gradient to this L2 norm (None: no clipping).
        samples: L, Monte Carlo samples of z per example.
        beta: KL weight of the training loss.
        dynamic_binarization: Redraw binary images from grey levels every epoch.
        seed: Seed of weights, shuffling and noise.
        strategy: `auto`, `default`, `mirrored`, or `multiworker` (the cluster in TF_CONFIG).
        cpu_replicas: Split the CPU into this many logical devices (to test multi-device).
        jit_compile: Compile training with XLA (the whole step on one device, the replica math
            under several replicas; see keras_vae.distribute.resolve_xla).
        limit: Use only the first `limit` training examples (quick runs).
        early_stopping: Stop when the eval split's ELBO has not improved for this many epochs
            and keep the best epoch's weights (None: train all epochs). Use
            `eval_split="validation"` so that the test split stays untouched.
        image_every: Write reconstruction and sample pictures to TensorBoard and PNG files
            every this many epochs (and after the last); 0 turns them off.
    """

    dataset: str = "binarized_mnist"
    data_dir: str | None = None
    manual_dir: str | None = None
    eval_split: str = "test"
    likelihood: str | None = None
    latent_dim: int = 20
    hidden_units: list[int] = dataclasses.field(default_factory=lambda: [500])
    activation: str = "tanh"
    epochs: int = 10
    steps_per_epoch: int | None = None
    steps_per_execution: int = 10
    batch_size: int = 100
    learning_rate: float = 1e-3
    clipnorm: float | None = None
    samples: int = 1
    beta: float = 1.0
    dynamic_binarization: bool = False
    seed: int = 0
    strategy: str = "auto"
    cpu_replicas: int | None = None
    jit_compile: bool = True
    limit: int | None = None
    image_every: int = 5
    early_stopping: int | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name), _field_types()[field.name])
        for name in ("latent_dim", "epochs", "batch_size", "samples", "steps_per_execution"):
            _check_positive(name, getattr(self, name))
        for name in ("steps_per_epoch", "cpu_replicas", "limit", "early_stopping"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        if self.image_every < 0:
            raise ConfigError(
                f"image_every must be an int >= 0. Received: image_every={self.image_every!r}"
            )
        if not self.hidden_units or any(u <= 0 for u in self.hidden_units):
            raise ConfigError(
                "hidden_units must be a non-empty list of positive ints, for example [500]. "
                f"Received: hidden_units={self.hidden_units!r}"
            )
        if not self.learning_rate > 0:
            raise ConfigError(
                f"learning_rate must be > 0. Received: learning_rate={self.learning_rate!r}"
            )
        if self.clipnorm is not None and not self.clipnorm > 0:
            raise ConfigError(f"clipnorm must be > 0. Received: clipnorm={self.clipnorm!r}")
        if not self.beta >= 0:
            raise ConfigError(f"beta must be >= 0. Received: beta={self.beta!r}")
        _check_choice("likelihood", self.likelihood, (*LIKELIHOODS, None))
        _check_choice("strategy", self.strategy, STRATEGIES)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Builds a config, refusing unknown keys with the list of valid ones."""
        if not isinstance(values, dict):
            raise ConfigError(
                f"{source} must be a mapping of option names to values. "
                f"Received: {type(values).__name__}"
            )
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(
                f"{source} has unknown keys {unknown}. Valid keys: {', '.join(valid)}"
            )
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Reads a `.json`, `.yaml` or `.yml` file (data only; nothing in it is executed)."""
        return cls.from_dict(read_config_file(path), source=f"config file {path}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` applied and validated."""
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parses a JSON or YAML config file into a dict, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}. Give the path of a .json or .yaml file.")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text) or {}
        if path.suffix == ".json":
            return json.loads(text)
    except Exception as error:  # noqa: BLE001 - any parse error becomes one line
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"Cannot parse config file {path}: {first_line}") from None
    raise ConfigError(f"Config file {path} must end in .json, .yaml or .yml.")


@typing.no_type_check
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _check_type(name: str, value: Any, annotation: Any) -> None:
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        annotation = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        ok = isinstance(value, list) and all(_is_instance(v, args[0]) for v in value)
        expected = f"a list of {args[0].__name__}"
    else:
        ok = _is_instance(value, annotation)
        expected = annotation.__name__
    if not ok:
        raise ConfigError(f"{name} must be {expected}. Received: {name}={value!r}")


def _is_instance(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be a positive int. Received: {name}={value!r}")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        shown = [c for c in choices if c is not None]
        raise ConfigError(f"{name} must be one of {shown}. Received: {name}={value!r}")
