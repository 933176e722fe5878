"""Encoder and decoder as separate SavedModels (TF Serving) and TFLite files (phones).

`export_vae` writes, under an export directory:

```
EXPORT_DIR/encoder/<version>/      SavedModel: serving_default (x -> loc, scale),
                                   encode_sample (x -> z, loc, scale)
EXPORT_DIR/decoder/<version>/      SavedModel: serving_default (z -> mean + the likelihood's
                                   parameters), sample (num_samples -> z, mean)
EXPORT_DIR/encoder.tflite, decoder.tflite          float32, same signatures and tensor names
EXPORT_DIR/{encoder,decoder}.{dynamic,float16,int8}.tflite   quantized variants, on request
EXPORT_DIR/export_report.json      sizes, signatures and the self-check errors
```

The exported graphs compute plain tensors through the model's layers (`encoder`,
`posterior.parameters`, `decoder`, `likelihood.parameters`), never TFP distribution objects, so
they hold only core TF ops and load with TensorFlow alone. Randomness is `tf.random.normal`,
which TFLite runs as its builtin RANDOM_STANDARD_NORMAL (`keras.random` would export stateless
ops that TFLite builtins lack).

The graphs live in a plain `tf.Module` rather than `keras.export.ExportArchive`, to control
signature, input and output names exactly. The module tracks the raw `tf.Variable`s that the
traced functions capture, not the Keras layers: a SavedModel that tracks Keras 3 layers loads
with `tf.saved_model.load` but its variables are not found by the graph-mode loader that TF
Serving and `saved_model_cli run` use, and `TFLiteConverter` then silently writes a model
without weights (keras-team/keras#20095).

Writes are atomic. Every version directory and file is first written under a temporary name
that TF Serving ignores (`encoder/.tmp-1-xxxx`: version directories must be integers), checked
there, and renamed into place only when every artefact passed its check. An existing version is
replaced only with `overwrite=True` (old one renamed aside, new one renamed in, old one
deleted). An error or KeyboardInterrupt removes every temporary path; a SIGKILL can leave a
`.tmp-*` directory behind, which TF Serving ignores and which may be deleted.

The `.tflite` files and `export_report.json` describe the most recent export: each export
replaces them and removes the TFLite variants it did not produce.

Self-check bounds, on the max absolute error against the Keras model over the check images:

* float32 SavedModels and `.tflite` files: every output of every signature < 1e-4 (the
  SavedModels also in graph mode, as TF Serving runs them).
* quantized `.tflite` files: `QUANTIZED_BOUNDS`, on the encoder's loc (in prior standard
  deviations) and the decoder's mean (pixels in [0, 1]); the other outputs are reported only.
  The bounds are about 2.5x the largest errors measured on trained MNIST and Frey Face models
  (export/README.md): they catch a broken conversion, not a small loss of accuracy.

Integer quantization (`int8`) quantizes weights and activations, calibrated on
`representative_images` (the decoder on z ~ q(z|x) of those images and as many z ~ p(z));
inputs and outputs stay float32, so every file has the same signatures. The sampling
signatures' RANDOM_STANDARD_NORMAL stays float inside the int8 graph; should a converter refuse
it, the int8 file keeps `serving_default` only (reported in its signatures).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vae.distributions import BernoulliLikelihood, GaussianLikelihood
from keras_vae.model import VAE

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
ENCODER_SIGNATURES = ("serving_default", "encode_sample")
DECODER_SIGNATURES = ("serving_default", "sample")
#: Max abs error of float32 artefacts (SavedModels, `.tflite`) against the Keras model.
FLOAT32_BOUND = 1e-4
#: Max abs error of the quantized `.tflite` files on the encoder's loc (in prior standard
#: deviations) and the decoder's mean (pixels in [0, 1]). About 2.5x the largest error measured
#: on trained tanh MNIST (784-500-20) and Frey Face (560-200-10) models; the int8 encoder bound
#: is 0.6 because a ReLU 784-500-20 model measured 0.37 (notebooks/03_deploy); see
#: export/README.md.
QUANTIZED_BOUNDS = {
    "dynamic": {"encoder": 0.1, "decoder": 0.05},
    "float16": {"encoder": 0.01, "decoder": 0.01},
    "int8": {"encoder": 0.6, "decoder": 0.15},
}
#: Outputs whose error is bounded for quantized files (the others are reported only).
_BOUNDED_OUTPUTS = {"encoder": "loc", "decoder": "mean"}
_SAMPLE_CHECK_SIZE = 8
_REPRESENTATIVE_BATCH = 32
_SYNTHETIC_CHECK_SIZE = 16


class ExportCheckError(RuntimeError):
    """An exported artefact disagrees with the Keras model; nothing was written."""


# ------------------------------------------------------------------------------ the graphs
def _tracked_module(functions: dict[str, tf.types.experimental.ConcreteFunction]) -> tf.Module:
    """A `tf.Module` that tracks the raw variables the signature functions capture."""
    module = tf.Module()
    variables = {id(v): v for fn in functions.values() for v in fn.variables}
    module.model_variables = list(variables.values())
    return module


def _as_float32(tensors: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {name: tf.cast(value, tf.float32) for name, value in tensors.items()}


def encoder_signatures(model: VAE) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """The encoder's signature functions, `serving_default` and `encode_sample`.

    Args:
        model: A built `VAE`.

    Returns:
        `{"serving_default": x -> {loc, scale}, "encode_sample": x -> {z, loc, scale}}`, with
        `x` float32 `[batch, *image_shape]` and each output float32 `[batch, latent_dim]`.
    """
    encoder, posterior = model.encoder, model.posterior
    spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="x")

    def parameters(x):
        x = tf.ensure_shape(x, spec.shape)  # a clear error in TF Serving too
        features = encoder(tf.cast(x, encoder.compute_dtype))
        params = _as_float32(posterior.parameters(features))
        return {"loc": params["loc"], "scale": params["scale"]}

    @tf.function(input_signature=[spec])
    def serving_default(x):
        return parameters(x)

    @tf.function(input_signature=[spec])
    def encode_sample(x):
        params = parameters(x)
        z = params["loc"] + params["scale"] * tf.random.normal(tf.shape(params["loc"]))
        return {"z": z, **params}

    return {
        "serving_default": serving_default.get_concrete_function(),
        "encode_sample": encode_sample.get_concrete_function(),
    }


def _likelihood_mean(params: dict[str, tf.Tensor]) -> tf.Tensor:
    """E[x|z] from the likelihood's parameters: sigmoid(logits) (Bernoulli) or loc (Gaussian)."""
    return tf.sigmoid(params["logits"]) if "logits" in params else params["loc"]


def decoder_signatures(model: VAE) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """The decoder's signature functions, `serving_default` and `sample`.

    Args:
        model: A built `VAE`.

    Returns:
        `{"serving_default": z -> {mean, **likelihood parameters}, "sample": num_samples ->
        {z, mean}}`: `z` float32 `[batch, latent_dim]`, `mean` float32 `[batch, *image_shape]`
        (sigmoid(logits) for Bernoulli, loc for Gaussian), the parameters as returned by
        `model.likelihood.parameters` (`logits`, or `loc` and `scale`), `num_samples` an
        int32 scalar; `sample` draws z ~ N(0, I) with `tf.random.normal`.
    """
    decoder, likelihood, latent_dim = model.decoder, model.likelihood, model.latent_dim

    def decode(z):
        z = tf.ensure_shape(z, [None, latent_dim])  # a clear error in TF Serving too
        features = decoder(tf.cast(z, decoder.compute_dtype))
        params = _as_float32(likelihood.parameters(features))
        return {"mean": _likelihood_mean(params), **params}

    @tf.function(input_signature=[tf.TensorSpec([None, latent_dim], tf.float32, name="z")])
    def serving_default(z):
        return decode(z)

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="num_samples")])
    def sample(num_samples):
        z = tf.random.normal(tf.stack([num_samples, latent_dim]))
        return {"z": z, "mean": decode(z)["mean"]}

    return {
        "serving_default": serving_default.get_concrete_function(),
        "sample": sample.get_concrete_function(),
    }


def expected_signatures(model: VAE) -> dict[str, dict[str, dict]]:
    """The signatures of the exported models, as `export_report.json` describes them.

    Args:
        model: A `VAE`.

    Returns:
        `{"encoder": {signature: {"inputs": {name: {"dtype", "shape"}}, "outputs": {...}}},
        "decoder": {...}}`, with -1 for the dynamic batch dimension.
    """
    image = {"dtype": "float32", "shape": [-1, *model.image_shape]}
    latent = {"dtype": "float32", "shape": [-1, model.latent_dim]}
    if isinstance(model.likelihood, BernoulliLikelihood):
        likelihood_params = {"logits": image}
    else:
        likelihood_params = {"loc": image, "scale": image}
    return {
        "encoder": {
            "serving_default": {
                "inputs": {"x": image},
                "outputs": {"loc": latent, "scale": latent},
            },
            "encode_sample": {
                "inputs": {"x": image},
                "outputs": {"loc": latent, "scale": latent, "z": latent},
            },
        },
        "decoder": {
            "serving_default": {
                "inputs": {"z": latent},
                "outputs": {"mean": image, **likelihood_params},
            },
            "sample": {
                "inputs": {"num_samples": {"dtype": "int32", "shape": []}},
                "outputs": {"mean": image, "z": latent},
            },
        },
    }


# ------------------------------------------------------------------------------------ TFLite
def _tflite_interpreter(path: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Checking the .tflite files needs the LiteRT runtime: pip install ai-edge-litert "
            "(or export with tflite=False / --no-tflite)."
        ) from error
    return Interpreter(model_path=str(path), num_threads=2)


def tflite_operators(model_content: bytes) -> list[str]:
    """Names of the operators in a `.tflite` flatbuffer; custom ops as `CUSTOM(name)`.

    Flex (TensorFlow) ops are custom ops named `Flex...`; a builtins-only file has none.
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if name.isupper()}
    flatbuffer = schema.Model.GetRootAs(model_content, 0)
    operators = set()
    for i in range(flatbuffer.OperatorCodesLength()):
        code = flatbuffer.OperatorCodes(i)
        if code.CustomCode():
            operators.add(f"CUSTOM({code.CustomCode().decode()})")
        else:
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            operators.add(names.get(builtin, f"BUILTIN_{builtin}"))
    return sorted(operators)


def _batches(array: np.ndarray, size: int = _REPRESENTATIVE_BATCH) -> Iterator[np.ndarray]:
    for start in range(0, len(array), size):
        yield array[start : start + size]


def _representative_dataset(
    model: VAE, part: str, images: np.ndarray, signature_keys: Sequence[str]
) -> Callable:
    """Calibration inputs of each signature: `(signature_key, {input: array})` batches.

    The encoder's signatures get the images; the decoder's `serving_default` gets z ~ q(z|x)
    of the images and as many z ~ p(z) (a served decoder sees both), and `sample` gets sample
    sizes.
    """
    if part == "encoder":
        feeds = {key: [{"x": batch} for batch in _batches(images)] for key in signature_keys}
    else:
        rng = np.random.default_rng(0)
        posterior = model.encode(images)
        loc, scale = posterior.mean().numpy(), posterior.stddev().numpy()
        z = np.concatenate(
            [loc + scale * rng.standard_normal(loc.shape), rng.standard_normal(loc.shape)]
        )
        batches = list(_batches(z.astype(np.float32)))
        feeds = {
            "serving_default": [{"z": batch} for batch in batches],
            "sample": [{"num_samples": np.array(len(batch), np.int32)} for batch in batches],
        }
    samples = [(key, feed) for key in signature_keys for feed in feeds[key]]
    return lambda: iter(samples)


def convert_tflite(
    saved_model_dir: str | Path,
    signature_keys: Sequence[str],
    quantization: str = "none",
    representative_dataset: Callable | None = None,
) -> bytes:
    """Converts a SavedModel's signatures to one `.tflite` flatbuffer with builtin ops only.

    Args:
        saved_model_dir: The SavedModel.
        signature_keys: Signatures to convert; they keep their names and tensor names.
        quantization: `"none"` (float32), `"dynamic"` (int8 weights, float activations),
            `"float16"` (float16 weights) or `"int8"` (int8 weights and activations, float32
            inputs and outputs; needs `representative_dataset`).
        representative_dataset: Generator function of `(signature_key, {input: array})`.

    Returns:
        The flatbuffer bytes.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=list(signature_keys)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():  # int8 calibration uses the deprecated tf.lite.Interpreter
        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
        return converter.convert()


# ------------------------------------------------------------------------------ self-check
Runner = Callable[..., dict[str, np.ndarray]]


def _spec(shape: Sequence[int | None], dtype) -> dict:
    return {
        "dtype": tf.as_dtype(dtype).name,
        "shape": [-1 if dim is None or dim < 0 else int(dim) for dim in shape],
    }


def _saved_model_runners(loaded) -> tuple[dict[str, Runner], dict]:
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


def _tflite_runners(path: Path) -> tuple[dict[str, Runner], dict]:
    interpreter = _tflite_interpreter(path)
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


def _run_in_session(path: Path, key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _reference(model: VAE, x: np.ndarray) -> dict[str, dict]:
    """Inputs and outputs of both `serving_default`s, computed through the Keras/TFP path."""
    posterior = model.encode(x)
    loc = posterior.mean().numpy()
    params = model.likelihood.parameters(model.decoder(loc))
    return {
        "encoder": {
            "inputs": {"x": x},
            "outputs": {"loc": loc, "scale": posterior.stddev().numpy()},
        },
        "decoder": {
            "inputs": {"z": loc},
            "outputs": {
                "mean": model.decode(loc).mean().numpy(),
                **{name: value.numpy() for name, value in params.items()},
            },
        },
    }


def _check_runners(
    model: VAE,
    part: str,
    runners: dict[str, Runner],
    reference: dict[str, dict],
) -> tuple[dict[str, float], list[str]]:
    """Runs every signature; returns max abs errors per `signature/output` and the problems."""
    inputs, expected = reference[part]["inputs"], reference[part]["outputs"]
    errors: dict[str, float] = {}
    problems: list[str] = []

    def compare(signature: str, got: dict, want: dict) -> None:
        for name, value in want.items():
            if got[name].shape != value.shape:
                problems.append(
                    f"{signature} output {name!r} has shape {got[name].shape}, "
                    f"expected {value.shape}"
                )
                continue
            key = f"{signature}/{name}"
            errors[key] = max(errors.get(key, 0.0), _max_abs(got[name], value))

    for batch in (slice(0, 1), slice(None)):  # batch 1 and the whole check batch
        got = runners["serving_default"](**{k: v[batch] for k, v in inputs.items()})
        compare("serving_default", got, {k: v[batch] for k, v in expected.items()})

    n = min(_SAMPLE_CHECK_SIZE, len(next(iter(inputs.values()))))
    sampled = {}
    if "encode_sample" in runners:
        sampled = runners["encode_sample"](x=inputs["x"][:n])
        compare("encode_sample", sampled, {k: v[:n] for k, v in expected.items()})
    if "sample" in runners:
        sampled = runners["sample"](num_samples=np.array(n, np.int32))
        if sampled["z"].shape == (n, model.latent_dim):  # else a problem below
            compare("sample", sampled, {"mean": model.decode(sampled["z"]).mean().numpy()})
        mean = sampled["mean"]
        if (
            isinstance(model.likelihood, BernoulliLikelihood)
            and not 0 <= mean.min() <= mean.max() <= 1
        ):
            problems.append("sample returned a Bernoulli mean outside [0, 1]")
    if sampled and sampled["z"].shape != (n, model.latent_dim):
        problems.append(f"z has shape {sampled['z'].shape}, expected {(n, model.latent_dim)}")
    problems += [f"{name} is not finite" for name, v in sampled.items() if not np.isfinite(v).all()]
    return errors, problems


def _worst(errors: dict[str, float], bounded_output: str | None) -> tuple[str, float]:
    """The largest error among the bounded outputs (all when `bounded_output` is None)."""
    bounded = {
        key: error
        for key, error in errors.items()
        if bounded_output is None or key.endswith(f"/{bounded_output}")
    }
    worst = max(bounded, key=bounded.get)
    return worst, bounded[worst]


def _check_artefact(
    model: VAE,
    part: str,
    label: str,
    runners: dict[str, Runner],
    described: dict,
    reference: dict[str, dict],
    bound: float,
    bounded_output: str | None,
    signature_keys: Sequence[str],
) -> dict[str, float]:
    """Checks names, shapes, dtypes and values of one artefact; raises `ExportCheckError`."""
    want = {key: expected_signatures(model)[part][key] for key in signature_keys}
    if described != want:
        raise ExportCheckError(
            f"{label}: signatures {json.dumps(described)} differ from the expected "
            f"{json.dumps(want)}"
        )
    errors, problems = _check_runners(model, part, runners, reference)
    worst, error = _worst(errors, bounded_output)
    if error >= bound:
        problems.append(f"max abs error of {worst} is {error:.3g} >= bound {bound:g}")
    if problems:
        raise ExportCheckError(f"{label} failed its self-check: " + "; ".join(problems))
    return errors


# ------------------------------------------------------------------------------- writing
def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _commit(moves: Sequence[tuple[Path | None, Path, bool]]) -> None:
    """Renames each staged path onto its final path, all or nothing.

    Args:
        moves: `(staged, final, may_replace)`; `staged=None` deletes `final`. An existing
            `final` is renamed aside first (and deleted at the end) if `may_replace`, else
            `FileExistsError`. On any error, including KeyboardInterrupt, every final path is
            restored as it was.
    """
    done: list[tuple[Path, Path | None]] = []
    try:
        for staged, final, may_replace in moves:
            aside = None
            if final.exists():
                if not may_replace:
                    raise FileExistsError(f"{final} appeared while exporting; nothing was written")
                aside = final.with_name(f".old-{final.name}-{secrets.token_hex(4)}")
                os.rename(final, aside)
            done.append((final, aside))
            if staged is not None:
                os.rename(staged, final)
    except BaseException:
        for final, aside in reversed(done):
            _remove(final)
            if aside is not None:
                os.rename(aside, final)
        raise
    for _, aside in done:
        if aside is not None:
            _remove(aside)


def _versions(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _format_size(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def tflite_filename(part: str, quantization: str) -> str:
    """`encoder.tflite` for float32, `encoder.int8.tflite` etc. for quantized variants."""
    return f"{part}.tflite" if quantization == "none" else f"{part}.{quantization}.tflite"


# ------------------------------------------------------------------------------- arguments
def _check_images(name: str, images: np.ndarray | None, model: VAE) -> np.ndarray | None:
    if images is None:
        return None
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != len(model.image_shape) + 1 or array.shape[1:] != model.image_shape:
        raise ValueError(
            f"{name} must have shape [N, {', '.join(map(str, model.image_shape))}] (the model's "
            f"image shape). Received: {name}.shape={np.shape(images)}"
        )
    if len(array) == 0 or not np.isfinite(array).all():
        raise ValueError(f"{name} must hold at least one image and only finite values.")
    return array


def _check_arguments(
    model: object, version: object, tflite: bool, quantize: Sequence[str] | str, progress
) -> tuple[str, ...]:
    if not isinstance(model, VAE):
        raise ValueError(f"model must be a keras_vae.VAE. Received: {type(model).__name__}")
    if not model.built:
        raise ValueError(
            "model is not built, so it has no weights to export: train it, load it, or call "
            f"model.build((None, *{model.image_shape})) first."
        )
    if not isinstance(model.likelihood, (BernoulliLikelihood, GaussianLikelihood)):
        raise ValueError(
            "export supports BernoulliLikelihood and GaussianLikelihood decoders. "
            f"Received: likelihood={type(model.likelihood).__name__}"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive int. Received: version={version!r}")
    quantize = (quantize,) if isinstance(quantize, str) else tuple(quantize)
    unknown = [q for q in quantize if q not in QUANTIZATIONS]
    if unknown or not quantize:
        raise ValueError(
            f"quantize must be a non-empty list of {QUANTIZATIONS}. Received: quantize={quantize!r}"
        )
    if not tflite and quantize != ("none",):
        raise ValueError(f"quantize={quantize!r} needs tflite=True (--tflite).")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a callable or None. Received: {progress!r}")
    return tuple(dict.fromkeys(quantize))  # unique, in order


# -------------------------------------------------------------------------------- export
_PARTS = ("encoder", "decoder")
_SIGNATURE_KEYS = {"encoder": ENCODER_SIGNATURES, "decoder": DECODER_SIGNATURES}


def _artefact(part, kind, quantization, path, size, errors, bound, bounded, signatures, **extra):
    return {
        "part": part,
        "kind": kind,
        "quantization": quantization,
        "path": path,
        "bytes": size,
        "max_abs_error": errors,
        "checked_error": _worst(errors, bounded)[1],
        "bound": bound,
        "bounded_outputs": bounded or "all",
        "signatures": signatures,
        **extra,
    }


def _summary(artefact: dict) -> str:
    return (
        f"  {artefact['path']:<26} {_format_size(artefact['bytes']):>9}  max abs error "
        f"{artefact['checked_error']:.2g} on {artefact['bounded_outputs']} outputs "
        f"(bound {artefact['bound']:g})"
    )


def _save_and_check(model: VAE, part: str, path: Path, reference: dict, label: str) -> dict:
    """Writes one SavedModel to `path` and checks it in eager and in graph mode."""
    signatures = (encoder_signatures if part == "encoder" else decoder_signatures)(model)
    tf.saved_model.save(_tracked_module(signatures), str(path), signatures=signatures)
    runners, described = _saved_model_runners(tf.saved_model.load(str(path)))
    errors = _check_artefact(
        model,
        part,
        label,
        runners,
        described,
        reference,
        FLOAT32_BOUND,
        None,
        _SIGNATURE_KEYS[part],
    )
    # The graph-mode loader that TF Serving uses, on serving_default.
    outputs = _run_in_session(path, "serving_default", reference[part]["inputs"])
    for name, value in reference[part]["outputs"].items():
        errors[f"graph_mode/{name}"] = _max_abs(outputs[name], value)
    if max(errors.values()) >= FLOAT32_BOUND:
        raise ExportCheckError(f"{label} disagrees with the model in graph mode: {errors}")
    return _artefact(
        part, "saved_model", "none", label, _size(path), errors, FLOAT32_BOUND, None, described
    )


def _convert_and_check(
    model: VAE,
    part: str,
    quantization: str,
    saved_model_dir: Path,
    path: Path,
    reference: dict,
    representative_images: np.ndarray | None,
    say: Callable[[str], None],
) -> dict:
    """Converts one SavedModel to `path` (.tflite) and checks it with the LiteRT interpreter."""
    keys = _SIGNATURE_KEYS[part]
    if quantization != "int8":
        content = convert_tflite(saved_model_dir, keys, quantization)
    else:
        images = representative_images[:1000]
        dataset = _representative_dataset(model, part, images, keys)
        try:
            content = convert_tflite(saved_model_dir, keys, quantization, dataset)
        except Exception as error:  # any converter failure: retried below
            # TF 2.21 quantizes around RANDOM_STANDARD_NORMAL (kept float); should another
            # version refuse, keep the deterministic signature rather than fail the export.
            say(
                f"{path.name}: int8 conversion of {keys} failed ({type(error).__name__}); "
                "keeping serving_default only"
            )
            keys = ("serving_default",)
            dataset = _representative_dataset(model, part, images, keys)
            content = convert_tflite(saved_model_dir, keys, quantization, dataset)
    operators = tflite_operators(content)
    custom = [op for op in operators if op.startswith("CUSTOM")]
    if custom:
        raise ExportCheckError(f"{path.name} needs non-builtin (Flex/custom) ops: {custom}")
    path.write_bytes(content)
    runners, described = _tflite_runners(path)
    bound = QUANTIZED_BOUNDS[quantization][part] if quantization != "none" else FLOAT32_BOUND
    bounded = None if quantization == "none" else _BOUNDED_OUTPUTS[part]
    errors = _check_artefact(
        model, part, path.name, runners, described, reference, bound, bounded, keys
    )
    return _artefact(
        part,
        "tflite",
        quantization,
        path.name,
        len(content),
        errors,
        bound,
        bounded,
        described,
        operators=operators,
    )


def export_vae(
    model: VAE,
    export_dir: str | Path,
    *,
    version: int = 1,
    tflite: bool = True,
    quantize: Sequence[str] = ("none",),
    representative_images: np.ndarray | None = None,
    check_images: np.ndarray | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = print,
) -> dict:
    """Writes the encoder and decoder as SavedModels and `.tflite` files, checked and atomic.

    Every artefact is written under a temporary name, checked against the Keras model there,
    and renamed into place only when all of them passed, so a failed export leaves nothing.

    Args:
        model: A built (trained) `VAE` with a Bernoulli or Gaussian likelihood.
        export_dir: Directory of the export (created if needed). TF Serving's model base
            paths are `export_dir/encoder` and `export_dir/decoder`.
        version: TF Serving version number, the name of the version directories.
        tflite: Also write `encoder.tflite` and `decoder.tflite`.
        quantize: TFLite variants among `"none"` (float32), `"dynamic"`, `"float16"`, `"int8"`.
        representative_images: `[N, *image_shape]` calibration images, required for `"int8"`
            (at most 1,000 are used).
        check_images: `[N, *image_shape]` real inputs for the self-check (at most 256 are
            used); defaults to `representative_images`, else 16 uniform random images.
        overwrite: Replace an existing version. Without it an existing version is an error.
        progress: Receives one line per step; None is silent.

    Returns:
        The report, also written to `export_dir/export_report.json`: versions, paths (relative
        to `export_dir`), sizes in bytes, signatures, the operators of the `.tflite` files and
        the max abs errors against the Keras model.

    Raises:
        ValueError: Invalid arguments.
        FileExistsError: The version exists and `overwrite` is False.
        ExportCheckError: An artefact disagreed with the model; nothing was written.

    Example:
        >>> report = export_vae(vae, "export/mnist", quantize=["none", "int8"],
        ...                     representative_images=train_images[:500])
        >>> [a["path"] for a in report["artefacts"]]
        ['encoder/1', 'decoder/1', 'encoder.tflite', 'decoder.tflite', 'encoder.int8.tflite', ...]
    """
    quantize = _check_arguments(model, version, tflite, quantize, progress)
    say = progress or (lambda message: None)
    representative_images = _check_images("representative_images", representative_images, model)
    check_images = _check_images("check_images", check_images, model)
    if "int8" in quantize and representative_images is None:
        raise ValueError("quantize='int8' needs representative_images (calibration data).")
    export_dir = Path(export_dir)
    finals = {part: export_dir / part / str(version) for part in _PARTS}
    existing = [str(path) for path in finals.values() if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"version {version} already exists ({', '.join(existing)}); "
            "choose another version or pass overwrite=True (--overwrite)"
        )

    check_source = "check_images" if check_images is not None else "representative_images"
    if check_images is None:
        check_images = representative_images
    if check_images is None:
        say("no check_images given: the self-check uses uniform random images")
        check_source = "synthetic"
        shape = (_SYNTHETIC_CHECK_SIZE, *model.image_shape)
        check_images = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    reference = _reference(model, check_images[:256])

    started = time.perf_counter()
    export_dir.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []  # removed at the end, whatever happens
    moves: list[tuple[Path | None, Path, bool]] = []
    artefacts: list[dict] = []
    saved_model_dirs: dict[str, Path] = {}
    try:
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=export_dir))
        staged.append(staging)
        for part in _PARTS:
            say(f"writing and checking the {part} SavedModel ...")
            (export_dir / part).mkdir(exist_ok=True)
            temp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir / part))
            staged.append(temp)
            temp.chmod(0o755)  # mkdtemp makes it 0700; the server may run as another user
            saved_model_dirs[part] = temp
            artefacts.append(_save_and_check(model, part, temp, reference, f"{part}/{version}"))
            say(_summary(artefacts[-1]))
            moves.append((temp, finals[part], overwrite))
        written = set()
        for quantization in quantize if tflite else ():
            for part, saved_model_dir in saved_model_dirs.items():
                name = tflite_filename(part, quantization)
                say(f"converting and checking {name} ...")
                artefacts.append(
                    _convert_and_check(
                        model,
                        part,
                        quantization,
                        saved_model_dir,
                        staging / name,
                        reference,
                        representative_images,
                        say,
                    )
                )
                say(_summary(artefacts[-1]))
                moves.append((staging / name, export_dir / name, True))
                written.add(name)
        for part in _PARTS:  # TFLite files of an earlier export would not match this one
            for quantization in QUANTIZATIONS:
                name = tflite_filename(part, quantization)
                if name not in written and (export_dir / name).exists():
                    say(f"removing {name} of an earlier export")
                    moves.append((None, export_dir / name, True))

        report = {
            "model": {
                "name": model.name,
                "image_shape": list(model.image_shape),
                "latent_dim": model.latent_dim,
                "likelihood": type(model.likelihood).__name__,
            },
            "version": version,
            "versions": {part: sorted({*_versions(export_dir / part), version}) for part in _PARTS},
            "check_images": {
                "count": len(reference["encoder"]["inputs"]["x"]),
                "source": check_source,
            },
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.perf_counter() - started, 1),
            "artefacts": artefacts,
        }
        (staging / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
        moves.append((staging / "export_report.json", export_dir / "export_report.json", True))
        _commit(moves)
    finally:
        for path in staged:
            _remove(path)
    say(f"exported version {version} to {export_dir} in {report['seconds']} s")
    return report


# ---------------------------------------------------------------------------- run dir, CLI
def export_run(
    run_dir: str | Path,
    export_dir: str | Path,
    *,
    num_representative: int = 500,
    num_check: int = 256,
    **kwargs,
) -> dict:
    """Exports the model of a `keras-vae train` run directory, checked on its training data.

    Loads `run_dir/model.keras` (safe mode) and `run_dir/config.json` with
    `keras_vae.runs.load_run`, reads the training split of the run's dataset with
    `keras_vae.data.load_images`, and calls `export_vae` with a random draw of
    `num_representative` of them as `representative_images` and `num_check` others as
    `check_images`.

    Args:
        run_dir: A run directory written by `keras-vae train`.
        export_dir: Where to export (see `export_vae`).
        num_representative: Calibration images for int8 quantization.
        num_check: Images of the self-check.
        **kwargs: `export_vae` arguments (`version`, `tflite`, `quantize`, `overwrite`,
            `progress`).

    Returns:
        The report of `export_vae`.

    Raises:
        keras_vae.runs.RunDirectoryError: `run_dir` lacks `model.keras` or `config.json`, or
            the model file is damaged (a `ValueError`).
    """
    # Lazily: the data modules import tensorflow_datasets, which is slow to import.
    from keras_vae import data, runs

    model, config = runs.load_run(run_dir)
    if not isinstance(model, VAE):
        raise runs.RunDirectoryError(f"{run_dir} holds a {type(model).__name__}, not a VAE")
    images = data.load_images(
        config.dataset,
        "train",
        data_dir=config.data_dir,
        manual_dir=config.manual_dir,
    )
    # A random draw from the whole split: its first images can be unrepresentative (Frey Face
    # is a video), and int8 clips activations outside the calibrated range. (`limit` cannot
    # help: it fails on splits smaller than the limit.)
    order = np.random.default_rng(0).permutation(len(images))
    representative = images[order[:num_representative]]
    check = images[order[num_representative : num_representative + num_check]]
    return export_vae(
        model,
        export_dir,
        representative_images=representative,
        check_images=check if len(check) else None,
        **kwargs,
    )


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of `keras-vae export` to `parser`."""
    parser.add_argument("run_dir", help="run directory written by `keras-vae train`")
    parser.add_argument("--output", required=True, help="export directory, e.g. export/mnist")
    parser.add_argument("--version", type=int, default=1, help="TF Serving version (default 1)")
    parser.add_argument(
        "--tflite",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write encoder.tflite and decoder.tflite (default: yes)",
    )
    parser.add_argument(
        "--quantize",
        nargs="+",
        choices=QUANTIZATIONS,
        default=["none"],
        help="TFLite variants: none (float32), dynamic, float16, int8 (default: none)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")


def run_cli(args: argparse.Namespace) -> int:
    """Runs `keras-vae export` and prints a summary table; returns the exit status."""
    report = export_run(
        args.run_dir,
        args.output,
        version=args.version,
        tflite=args.tflite,
        quantize=args.quantize,
        overwrite=args.overwrite,
    )
    print(f"\n{'artefact':<28} {'size':>9}  {'max abs error':>13}  bound")
    for artefact in report["artefacts"]:
        worst = artefact["checked_error"]
        print(
            f"{artefact['path']:<28} {_format_size(artefact['bytes']):>9}  {worst:>13.2g}  "
            f"{artefact['bound']:g}"
        )
    print(f"report: {Path(args.output) / 'export_report.json'}")
    return 0
