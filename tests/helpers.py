"""Helpers shared by the tests (import with `from helpers import ...`; tests/conftest.py puts
this folder on the path): where the repository and the offline data are, toy data sets, the
`.keras` round trip of any part, and an exported signature against its Keras model."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # the offline data beside the clone (../shared/DATA.md)
TFDS_DIR = SHARED / "tensorflow_datasets"
FIXTURES = REPO / "tests" / "fixtures"


def write_toy_images(path, count, shape, seed, dtype="uint8", key="x") -> Path:
    """Writes `count` random binary images of `shape` to an `.npz` (under `key`) or `.npy`."""
    images = (np.random.default_rng(seed).uniform(size=(count, *shape)) > 0.5).astype(dtype)
    path = Path(path)
    if path.suffix == ".npy":
        np.save(path, images)
    else:
        np.savez(path, **{key: images})
    return path


class RowCountingArray:
    """A stored array (a memory map, say) that records how many rows every read materialises:
    slices of rows (and a new channel axis) are views that read nothing; NumPy conversion,
    `min`/`max` and indexing by integers or index arrays are reads. Anything else fails."""

    def __init__(self, array: np.ndarray, reads: list[int]):
        self._array, self.reads = array, reads
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __len__(self) -> int:
        return len(self._array)

    def __getitem__(self, key):
        keys = key if isinstance(key, tuple) else (key,)
        if all(isinstance(k, slice) or k is Ellipsis or k is None for k in keys):
            return RowCountingArray(self._array[key], self.reads)
        rows = self._array[key]
        self.reads.append(len(rows) if np.ndim(keys[0]) else 1)
        return rows

    def __array__(self, dtype=None, copy=None):
        self.reads.append(len(self._array))
        return np.asarray(self._array, dtype=dtype)

    def min(self):
        self.reads.append(len(self._array))
        return self._array.min()

    def max(self):
        self.reads.append(len(self._array))
        return self._array.max()


def assert_signature_matches(exported, signature: str, inputs: dict, expected: dict, atol=1e-5):
    """Runs `signature` of a loaded SavedModel (`tf.saved_model.load`) on `inputs` and checks
    each named output against `expected` (what the Keras model computes), to `atol`."""
    outputs = exported.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    for name, want in expected.items():
        np.testing.assert_allclose(outputs[name].numpy(), np.asarray(want), atol=atol,
                                   err_msg=f"{signature}/{name}")  # fmt: skip


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


def run_mirrored_cases(script: str, cases: dict, timeout: float = 600) -> dict:
    """Runs `script` once in a fresh process (2 logical CPUs must be set up before TensorFlow
    starts) for all `cases` ({id: case}, JSON); the script defines `run(case) -> dict` after
    its set-up, as `MIRRORED_EQUIVALENCE` does. Returns {id: run(case)}."""
    driver = script + textwrap.dedent(
        """
        cases = json.loads(sys.argv[1])
        print("RESULT " + json.dumps({name: run(case) for name, case in cases.items()}))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", driver, json.dumps(cases)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


#: A script whose `run(case)` trains a VAE of the case's parts on one device and under a
#: 2-replica MirroredStrategy and returns both results (tests of distribute and networks; run
#: it with `run_mirrored_cases`).
MIRRORED_EQUIVALENCE = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy as np
    import tensorflow as tf
    from keras_vae.engine import distribute
    distribute.configure_cpu_replicas(2)
    import keras
    from keras_vae import mlp_vae, registry

    # one strategy for every case: a second MirroredStrategy in the same process reuses the
    # first one's collective instance keys and its steps fail ("Shape mismatch in the
    # collective instance")
    strategy = distribute.get_strategy("mirrored")
    rng = np.random.default_rng(0)
    # 63 examples in global batches of 21: every batch splits 11 + 10 over the 2 replicas
    x = (rng.uniform(size=(63, 6, 5, 1)) > 0.5).astype("float32")

    def make(case, strategy, jit_compile=None):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            # the model's own noise: every replica draws the global batch's eps and keeps its
            # rows, so the same example gets the same eps on 1 device and on 2 replicas
            objective = case.get("objective")
            if objective is not None:
                objective = registry.get("objective", objective["name"])(**objective["config"])
            model = mlp_vae((6, 5, 1), latent_dim=3, hidden_units=[16], seed=1,
                            objective=objective, **case["model"])
            model.build((None, 6, 5, 1))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.compile(keras.optimizers.SGD(0.05), jit_compile=jit_compile)
        return model, [str(w.message) for w in caught]

    # the reference: one device without XLA. (With XLA, one device compiles the whole step,
    # noise included, and XLA's Philox kernel draws other numbers than TensorFlow's; under
    # replicas the noise is drawn outside the compiled replica math, by TensorFlow's kernel.)
    def run(case):  # the model's parts and objective, the XLA settings
        single, _ = make(case, distribute.get_strategy("default"), False)
        initial = [w.copy() for w in single.get_weights()]
        # a layer the objective trains itself (FactorVAE's discriminator; in get_weights too)
        auxiliary = getattr(single, "auxiliary_layer", None)
        initial_auxiliary = [w.copy() for w in auxiliary.get_weights()] if auxiliary else []
        hs = single.fit(x, batch_size=21, epochs=2, shuffle=False, verbose=0).history
        out = {"xla_single": single.xla, "jit_single": bool(single.jit_compile),
               "weight_change": max(float(np.abs(a - b).max())
                                    for a, b in zip(initial, single.get_weights())),
               "auxiliary_change": max([float(np.abs(a - b).max()) for a, b in
                                        zip(initial_auxiliary, auxiliary.get_weights())] or [0.0])
                                   if auxiliary else None,
               "metrics_single": {k: v[-1] for k, v in hs.items()}}
        out["replicas"] = strategy.num_replicas_in_sync
        for jit in case["jit_compile"]:
            mirrored, caught = make(case, strategy, jit)
            mirrored.set_weights(initial)
            hm = mirrored.fit(x, batch_size=21, epochs=2, shuffle=False, verbose=0).history
            out[f"mirrored_{jit}"] = {
                "xla": mirrored.xla, "jit": bool(mirrored.jit_compile), "warnings": caught,
                "weight_diff": max(float(np.abs(a - b).max())
                                   for a, b in zip(single.get_weights(), mirrored.get_weights())),
                "metrics": {k: v[-1] for k, v in hm.items()},
                "evaluate": mirrored.evaluate(x, batch_size=21, verbose=0, return_dict=True),
            }
        out["evaluate_single"] = single.evaluate(x, batch_size=21, verbose=0, return_dict=True)
        return out
    """
)
