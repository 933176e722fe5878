"""Running exported artefacts and measuring them against the Keras model, for every kind.

`saved_model_runners` and `tflite_runners` turn a SavedModel or a `.tflite` file into
callables on NumPy arrays, one per signature, with a description of its inputs and outputs;
`run_in_session` runs a signature through the graph-mode loader that TF Serving uses. A kind's
self-checks (`keras_vae.models.vae.checks`, `keras_vae.models.vqvae.export`,
`keras_vae.models.hvae.checks`) compare their outputs with the model's through `max_error`
and raise `ExportCheckError`; `estimate_agreement` compares a scorer that draws its own noise
with the model's estimates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vae.serving.tflite import tflite_interpreter

Runner = Callable[..., dict[str, np.ndarray]]
#: Images drawn by a sampling signature in its check (every kind).
SAMPLE_CHECK_SIZE = 8
#: How far, in standard errors, a scorer's own-noise estimates may be from the model's.
STANDARD_ERRORS = 5.0


class ExportCheckError(RuntimeError):
    """An exported artefact disagrees with the Keras model; nothing was written."""


# ---------------------------------------------------------------------------- runners
def _spec(shape: Sequence[int | None], dtype) -> dict:
    return {
        "dtype": tf.as_dtype(dtype).name,
        "shape": [-1 if dim is None or dim < 0 else int(dim) for dim in shape],
    }


def saved_model_runners(loaded) -> tuple[dict[str, Runner], dict]:
    """Callables on numpy arrays for each signature, and the signatures' description."""

    def runner(fn):
        return lambda **inputs: {
            name: value.numpy()
            for name, value in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()
        }

    runners, described = {}, {}
    for key, fn in loaded.signatures.items():
        runners[key] = runner(fn)
        described[key] = {
            "inputs": {
                n: _spec(s.shape, s.dtype) for n, s in fn.structured_input_signature[1].items()
            },
            "outputs": {n: _spec(s.shape, s.dtype) for n, s in fn.structured_outputs.items()},
        }
    return runners, described


def tflite_runners(path: Path) -> tuple[dict[str, Runner], dict]:
    """Signature runners of a `.tflite` file, and the signatures' description."""
    interpreter = tflite_interpreter(path)
    runners, described = {}, {}
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        runners[key] = runner
        described[key] = {
            side: {
                name: _spec(detail["shape_signature"].tolist(), detail["dtype"])
                for name, detail in details.items()
            }
            for side, details in (
                ("inputs", runner.get_input_details()),
                ("outputs", runner.get_output_details()),
            )
        }
    return runners, described


def run_in_session(path: Path, key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs a signature the way TF Serving loads a model: graph-mode loader and a Session.

    This catches SavedModels that `tf.saved_model.load` runs but whose variables the graph-mode
    loader cannot find (keras-team/keras#20095).
    """
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # the v1 loader logs a deprecation warning
    try:
        with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
            meta_graph = tf.compat.v1.saved_model.load(session, ["serve"], str(path))
            signature = meta_graph.signature_def[key]
            fetches = {name: info.name for name, info in signature.outputs.items()}
            feeds = {signature.inputs[name].name: value for name, value in inputs.items()}
            return session.run(fetches, feeds)
    finally:
        logger.setLevel(level)


def graph_mode_check(
    part: str, key: str, reference: dict[str, dict], bound: float, relative: bool = False
) -> Callable[[Path], dict]:
    """The check of `part`'s SavedModel through TF Serving's graph-mode loader: signature
    `key` on `reference[part]["inputs"]` must give `reference[part]["outputs"]` within
    `bound`, else `ExportCheckError`. Returns the errors."""

    def check(path: Path) -> dict:
        got = run_in_session(path, key, reference[part]["inputs"])
        errors = {f"graph_mode/{name}": max_error(got[name], want, relative)
                  for name, want in reference[part]["outputs"].items()}  # fmt: skip
        if errors and max(errors.values()) >= bound:
            raise ExportCheckError(f"{part}/ disagrees with the model in graph mode: {errors}")
        return errors

    return check


class OutputComparison:
    """Collects, over several calls, the largest `max_error` of each `signature/output` and
    the outputs whose shapes differ from the expected ones (as problems, one line each)."""

    def __init__(self, relative: bool = False):
        self.relative = relative
        self.errors: dict[str, float] = {}
        self.problems: list[str] = []

    def __call__(self, signature: str, got: dict, want: dict) -> None:
        for name, value in want.items():
            if got[name].shape != value.shape:
                self.problems.append(f"{signature} output {name!r} has shape "
                                     f"{got[name].shape}, expected {value.shape}")  # fmt: skip
                continue
            key = f"{signature}/{name}"
            error = max_error(got[name], value, self.relative)
            self.errors[key] = max(self.errors.get(key, 0.0), error)


def compare_deterministic(
    runner: Runner, key: str, inputs: dict, expected: dict, compare: OutputComparison
) -> None:
    """Runs the deterministic signature `key` on one row and on the whole check batch and
    compares both with the expected outputs (`eps` [K, B, ...] has its batch on axis 1)."""
    for batch in (slice(0, 1), slice(None)):
        rows = {name: value[:, batch] if name == "eps" else value[batch]
                for name, value in inputs.items()}  # fmt: skip
        compare(key, runner(**rows), {name: value[batch] for name, value in expected.items()})


# ---------------------------------------------------------------------------- measures
def max_error(got: np.ndarray, want: np.ndarray, relative: bool = False) -> float:
    """max |got - want|, or max |got - want| / (1 + |want|) when `relative`."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    error = np.abs(got - want)
    return float(np.max(error / (1.0 + np.abs(want)) if relative else error))


def worst(errors: dict[str, float], bounded_output: str | None) -> tuple[str, float]:
    """The largest error among the bounded outputs (all when `bounded_output` is None)."""
    bounded = {
        key: error
        for key, error in errors.items()
        if bounded_output is None or key.endswith(f"/{bounded_output}")
    }
    key = max(bounded, key=bounded.get)
    return key, bounded[key]


def estimate_agreement(got: dict, want: dict) -> tuple[dict, list]:
    """Compares a scorer's per-example `elbo` and `log_likelihood` drawn with its own noise
    (`got`) with the model's own estimates from fresh noise (`want`), on the same examples.

    The mean difference over the examples must be within `STANDARD_ERRORS` standard errors
    of zero (plus 1e-4 relative, for float32 rounding), and the mean gap `log_likelihood -
    elbo` not negative beyond `STANDARD_ERRORS` standard errors (the importance-weighted
    bound is the tighter one).

    Returns:
        `({output: {"exported_mean", "keras_mean", "stderr"}, "gap": {"mean", "stderr"}},
        problems)`.
    """

    def stderr(values: np.ndarray) -> float:
        return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0

    stats, problems = {}, []
    for name in ("elbo", "log_likelihood"):
        diff = got[name].astype(np.float64) - want[name]
        error = stderr(diff)
        allowed = STANDARD_ERRORS * error + 1e-4 * (1.0 + abs(float(want[name].mean())))
        stats[name] = {"exported_mean": float(got[name].mean()),
                       "keras_mean": float(want[name].mean()), "stderr": error}  # fmt: skip
        if not np.isfinite(got[name]).all() or abs(diff.mean()) > allowed:
            problems.append(f"mean {name} {got[name].mean():.4g} differs from the model's "
                            f"{want[name].mean():.4g} by more than {allowed:.3g}")  # fmt: skip
    gap = got["log_likelihood"].astype(np.float64) - got["elbo"]
    stats["gap"] = {"mean": float(gap.mean()), "stderr": stderr(gap)}
    if gap.mean() < -STANDARD_ERRORS * stats["gap"]["stderr"] - 1e-4:
        problems.append(f"mean log_likelihood - elbo is {gap.mean():.3g} < 0")
    return stats, problems
