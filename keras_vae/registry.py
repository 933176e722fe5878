"""Parts and model kinds registered once by name: the CLI, the config, the workflows,
validation and export ask here. A leaf: it imports nothing of keras_vae.

A part class registers itself under a kind and a name:

    @registry.register("prior", "vamp")
    class VampPrior(Prior): ...

`registry.names("prior")` lists the choices (for `--prior` and config validation) and
`registry.get("prior", "vamp")` returns the class. Every registered class is also registered
with Keras' serialization (`package="keras_vae"`), so one decorator makes a part both
selectable by name and savable in a `.keras` file.

A model kind (`keras_vae.models.kind.ModelKind`: what the train, evaluate, plot and export
workflows need of a model family) registers the same way under `"model"`:

    @registry.register("model", "vqvae")
    class VQVAEKind(ModelKind): ...

The built-in parts and kinds register when `keras_vae` is imported (its `__init__` imports
`keras_vae.parts` and `keras_vae.models`).
"""

from __future__ import annotations

import keras

PACKAGE = "keras_vae"
KINDS = ("posterior", "prior", "likelihood", "objective", "network", "model")
_NOT_LAYERS = ("model",)  # model kinds are plain classes, not Keras objects
_PARTS: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str):
    """Class decorator: registers a part under `kind`/`name` and with Keras serialization."""
    if kind not in _PARTS:
        raise ValueError(f"kind must be one of {KINDS}. Received: kind={kind!r}")

    def decorate(cls: type) -> type:
        known = _PARTS[kind].get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"A {kind} named {name!r} is already registered: {known}.")
        _PARTS[kind][name] = cls
        cls.registered_name = name
        if kind in _NOT_LAYERS:
            return cls
        return keras.saving.register_keras_serializable(package=PACKAGE)(cls)

    return decorate


def unregister(kind: str, name: str) -> None:
    """Removes the part registered as `kind`/`name` (a test's or a notebook's own part)."""
    _PARTS[kind].pop(name, None)


def names(kind: str) -> tuple[str, ...]:
    """The registered names of `kind`, in registration order."""
    return tuple(_PARTS[kind])


def get(kind: str, name: str) -> type:
    """The class registered as `kind`/`name`; a one-line error lists the valid names."""
    if name not in _PARTS.get(kind, {}):
        raise ValueError(f"{kind} must be one of {list(names(kind))}. Received: {kind}={name!r}")
    return _PARTS[kind][name]
