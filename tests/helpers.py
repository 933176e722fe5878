"""Test helpers shared by the parts' tests (import with `from helpers import ...`)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def _default_outputs(part, inputs):
    """A head's named parameters at `inputs` (what an exported head outputs), else part(inputs)."""
    if hasattr(part, "parameters") and callable(part.parameters):
        return part.parameters(inputs)
    return part(inputs)


def _as_json(config: dict) -> object:
    return json.loads(json.dumps(config, default=str))  # tuples and lists compare equal


def run_saving_test(
    part: keras.layers.Layer,
    inputs=None,
    outputs: Callable | None = None,
    directory: str | Path | None = None,
) -> keras.layers.Layer:
    """Round-trips a built layer or model through a `.keras` file and checks it is the same.

    Saves `part`, loads it back with `safe_mode=True` (no Python code is deserialised), and
    asserts that the class, the config and every weight come back unchanged, and that
    `outputs(restored, inputs)` equals `outputs(part, inputs)` exactly.

    Args:
        part: A built `keras.layers.Layer` or `keras.Model`.
        inputs: What `outputs` is evaluated at.
        outputs: `(part, inputs) -> tensor, or a (nested) dict/tuple of tensors`; defaults to
            `part.parameters(inputs)` for heads that have it, else `part(inputs)`.
        directory: Where to write the file; a temporary directory by default.

    Returns:
        The restored part.
    """
    outputs = outputs or _default_outputs
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp) / "part.keras"
        keras.saving.save_model(part, path)
        restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored) is type(part)
    assert _as_json(restored.get_config()) == _as_json(part.get_config())
    assert len(restored.weights) == len(part.weights)
    for mine, theirs in zip(part.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(theirs), np.asarray(mine), err_msg=mine.path)
    expected = tf.nest.flatten(tf.nest.map_structure(np.asarray, outputs(part, inputs)))
    actual = tf.nest.flatten(tf.nest.map_structure(np.asarray, outputs(restored, inputs)))
    assert len(expected) == len(actual) > 0
    for a, b in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    return restored
