"""Encoder, decoder and scorer as SavedModels (TF Serving) and TFLite files (phones).

`export_vae` writes, under an export directory:

```
EXPORT_DIR/encoder/<version>/   SavedModel: serving_default (x -> the posterior's parameters),
                                encode_sample (x -> z and the parameters)
EXPORT_DIR/decoder/<version>/   SavedModel: serving_default (z -> mean and the likelihood's
                                parameters), sample (num_samples -> z from the learned prior,
                                mean)
EXPORT_DIR/scorer/<version>/    SavedModel: serving_default (x -> elbo, log_likelihood in nats),
                                score_with_noise (x, eps -> the same, deterministic)
EXPORT_DIR/{encoder,decoder,scorer}.tflite     float32, same signatures and tensor names
EXPORT_DIR/{encoder,decoder}.{dynamic,float16,int8}.tflite   quantized variants, on request
EXPORT_DIR/export_report.json   sizes, signatures and the self-check errors
```

What each signature outputs is asked from the model's parts (`keras_vae.models.vae.signatures`):
the posterior's and likelihood's `parameters`, the likelihood's `mean`, the prior's
`sample_plain` and closed-form `kl`. The graphs hold only core TF ops and load with TensorFlow
alone; the `.tflite` files hold TFLite builtin ops only (`keras_vae.serving.tflite`).

Staging, the atomic commit, the report and the clean-up of an earlier export's `.tflite`
files are the pipeline every kind shares (`keras_vae.serving.pipeline`); this module gives it
the VAE's parts and their self-checks (`keras_vae.models.vae.checks`). An error or
KeyboardInterrupt removes every temporary path; a SIGKILL can leave a `.tmp-*` directory
behind, which TF Serving ignores and which may be deleted.

Self-check bounds, against the Keras model over the check images:

* float32 SavedModels and `.tflite` files: every output of every deterministic signature
  < `FLOAT32_BOUND` in max abs error (the scorer's: in relative error |a - b| / (1 + |b|);
  `keras_vae.serving.precision.LOW_PRECISION_BOUNDS` for a model computing in bfloat16 or
  float16),
  the SavedModels also in graph mode, as TF Serving runs them; the scorer's own-noise
  `serving_default` within 5 standard errors of the model's estimates.
* quantized `.tflite` files: `QUANTIZED_BOUNDS`, on the encoder's loc (in prior standard
  deviations) and the decoder's mean (pixels in [0, 1]); the other outputs are reported only.
  The bounds are about 2.5x the largest errors measured on trained MNIST and Frey Face models
  (export/README.md): they catch a broken conversion, not a small loss of accuracy. The scorer
  is written as float32 only: its log-densities sum hundreds of per-pixel terms.

A conditional VAE (`keras_vae.models.vae.conditional.ConditionalVAE`) is exported the same
way with one more named input, its class labels `y` (int32 `[batch]`), in every signature
(`sample` takes the labels instead of `num_samples`); the self-checks and the int8
calibration use the images' labels (`representative_labels`, `check_labels`; `export_run`
reads the run's own).

Integer quantization (`int8`) quantizes weights and activations, calibrated on
`representative_images` (the decoder on z ~ q(z|x) of those images and as many z ~ p(z));
inputs and outputs stay float32, so every file has the same signatures. The sampling
signatures' random ops stay float inside the int8 graph; should a converter refuse them, the
int8 file keeps `serving_default` only (reported in its signatures).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vae._internal.checks import check_positive_int
from keras_vae.models.vae.checks import (
    DETERMINISTIC,
    RELATIVE_PARTS,
    ExportCheckError,
    build_reference,
    check_artefact,
    scorer_statistics,
    worst,
)
from keras_vae.models.vae.model import VAE
from keras_vae.models.vae.signatures import (
    DECODER_SIGNATURES,
    ENCODER_SIGNATURES,
    SCORER_SIGNATURES,
    SIGNATURE_FUNCTIONS,
    decoder_signatures,
    encoder_signatures,
    expected_signatures,
    given,
    is_conditional,
    scorer_signatures,
)
from keras_vae.serving import pipeline
from keras_vae.serving.checks import graph_mode_check
from keras_vae.serving.precision import (
    check_same_weights,
    float32_agreement,
    tflite_refusal,
    unquantized_bound,
)
from keras_vae.serving.tflite import (
    QUANTIZATIONS,
    batches,
    convert_tflite,
    tflite_filename,
    tflite_operators,
)

__all__ = [
    "DECODER_SIGNATURES",
    "ENCODER_SIGNATURES",
    "FLOAT32_BOUND",
    "QUANTIZATIONS",
    "QUANTIZED_BOUNDS",
    "SCORER_SIGNATURES",
    "ExportCheckError",
    "convert_tflite",
    "decoder_signatures",
    "encoder_signatures",
    "expected_signatures",
    "export_vae",
    "representative_dataset",
    "scorer_signatures",
    "tflite_filename",
    "tflite_operators",
]

PARTS = ("encoder", "decoder", "scorer")
DEFAULT_SCORER_SAMPLES = 100
#: Max error of float32 artefacts against the Keras model (abs; relative for the scorer).
FLOAT32_BOUND = 1e-4
#: How to build a `scorer_model` (`check_same_weights`' error).
_SCORER_MODEL_HINT = (
    "the same model in another precision, e.g. keras_vae.models.vae.kind.VAEKind().with_precision"
)
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
_SYNTHETIC_CHECK_SIZE = 16


# -------------------------------------------------------------------------- calibration
def _calibration_latents(model, images: np.ndarray, labels=None) -> np.ndarray:
    """z ~ q(z|x) for each image, then as many z ~ p(z) from the learned prior (given the
    images' labels for a conditional model)."""
    view = given(model, labels)
    params = view.encode_parameters(images)
    eps = np.random.default_rng(0).standard_normal((len(images), model.posterior.noise_size))
    posterior = model.posterior.reparameterize(params, tf.constant(eps, tf.float32))
    prior = model.prior.sample_plain(len(images), view)
    return np.concatenate([posterior.numpy(), prior.numpy()]).astype(np.float32)


def representative_dataset(
    model, part: str, images: np.ndarray, signature_keys: Sequence[str], labels=None
) -> Callable:
    """Calibration inputs of each signature: `(signature_key, {input: array})` batches.

    The encoder's signatures get the images; the decoder's `serving_default` gets z ~ q(z|x)
    of the images and as many z ~ p(z) (a served decoder sees both), and `sample` gets sample
    sizes. A conditional model's inputs also carry the images' labels `y` (int32 `[N]`), and
    its `sample` gets the labels instead of sizes.
    """
    y = None if labels is None else np.asarray(labels, np.int32)
    if part == "encoder":
        rows = batches({"x": images} if y is None else {"x": images, "y": y})
        feeds = {key: rows for key in signature_keys}
    else:
        z = _calibration_latents(model, images, y)
        rows = batches({"z": z} if y is None else {"z": z, "y": np.concatenate([y, y])})
        counts = [
            {"num_samples": np.array(len(b["z"]), np.int32)} if y is None else {"y": b["y"]}
            for b in rows
        ]
        feeds = {"serving_default": rows, "sample": counts}
    samples = [(key, feed) for key in signature_keys for feed in feeds[key]]
    return lambda: iter(samples)


# ------------------------------------------------------------------------------- parts
def _check(model: VAE, part: str, reference: dict, scorer_samples: int) -> pipeline.Check:
    """The self-check of one part's artefacts (bounds: `FLOAT32_BOUND`, `QUANTIZED_BOUNDS`);
    `model` is the Keras model the part was written from (for the scorer: in its precision).
    A low-precision scorer is also bounded against the float32 model (`float32_agreement`)."""

    def check(runners, described, quantization, label) -> dict:
        float32 = quantization == "none"
        bound = (unquantized_bound(model, FLOAT32_BOUND) if float32
                 else QUANTIZED_BOUNDS[quantization][part])  # fmt: skip
        bounded = None if float32 else _BOUNDED_OUTPUTS[part]
        errors = check_artefact(
            model, part, label, runners, described, reference, bound, bounded, tuple(described)
        )
        key, error = worst(errors, bounded)
        measure = "relative error" if part in RELATIVE_PARTS else "abs error"
        fields = {"errors": errors, "checked": f"max {measure} of {key}", "checked_error": error,
                  "bound": bound}  # fmt: skip
        if part == "scorer":  # its own-noise signature against the model's estimates
            x = reference["scorer"]["inputs"]["x"]
            y = reference["scorer"]["inputs"].get("y")
            stats, problems = scorer_statistics(
                model, runners["serving_default"], x, scorer_samples, y
            )
            if "float32_outputs" in reference["scorer"]:
                agreement, more = float32_agreement(runners[DETERMINISTIC[part]],
                                                    reference["scorer"])  # fmt: skip
                problems += more
                fields["float32_agreement"] = agreement
            if problems:
                raise ExportCheckError(f"{label} failed its self-check: " + "; ".join(problems))
            fields |= {"scorer_samples": scorer_samples, "statistics": stats,
                       "precision": model.dtype_policy.name}  # fmt: skip
        return fields

    return check


def export_parts(model: VAE, reference: dict, scorer: bool, scorer_samples: int,
                 calibration: tuple, scorer_model: VAE | None = None) -> list:  # fmt: skip
    """The VAE's encoder, decoder (and scorer, written from `scorer_model`, default `model`)
    as parts of the export pipeline. A scorer computing in low precision has no `.tflite`
    file (TFLite has no bfloat16 builtins); the encoder's and decoder's are as usual."""
    images, labels = (None if value is None else value[:1000] for value in calibration)
    parts = []
    for name in PARTS if scorer else PARTS[:2]:
        make = SIGNATURE_FUNCTIONS[name]
        source = (scorer_model or model) if name == "scorer" else model
        functions = make(source, scorer_samples) if name == "scorer" else make(source)
        quantizations = QUANTIZATIONS
        if name == "scorer":
            low = source is not model and tflite_refusal(source, name)
            quantizations = () if low else ("none",)
        parts.append(pipeline.ExportPart(
            name=name, signatures=functions,
            check=_check(source, name, reference, scorer_samples),
            quantizations=quantizations,
            calibration=(lambda keys, name=name: representative_dataset(
                model, name, images, keys, labels)) if images is not None else None,
            graph_check=graph_mode_check(name, DETERMINISTIC[name], reference,
                                         unquantized_bound(source, FLOAT32_BOUND),
                                         name in RELATIVE_PARTS),
            refusal=tflite_refusal(source, name) or (
                f"scorer.tflite: the scorer of the {_combination(model)} combination "
                "does not convert to TFLite builtins; export with scorer=False "
                "(--no-scorer) or tflite=False (--no-tflite).") if name == "scorer" else
                tflite_refusal(model, name),
        ))  # fmt: skip
    return parts


def _combination(model: VAE) -> str:
    return "/".join(_part_name(model, name) for name in ("posterior", "prior", "likelihood"))


def _part_name(model: VAE, name: str) -> str:
    part = getattr(model, name)
    return getattr(type(part), "registered_name", type(part).__name__)


def _model_facts(model: VAE, scorer_model: VAE | None) -> dict:
    return {
        "name": model.name,
        "precision": model.dtype_policy.name,
        "scorer_precision": None if scorer_model is None else scorer_model.dtype_policy.name,
        "image_shape": list(model.image_shape),
        "latent_dim": model.latent_dim,
        "posterior": _part_name(model, "posterior"),
        "prior": _part_name(model, "prior"),
        "likelihood": _part_name(model, "likelihood"),
        "condition_dim": getattr(model, "condition_dim", None),
    }


# -------------------------------------------------------------------------- arguments
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


def _check_model(model: object, name: str = "model") -> None:
    if not isinstance(model, VAE):
        raise ValueError(f"{name} must be a keras_vae.VAE. Received: {type(model).__name__}")
    if not model.built:
        raise ValueError(
            "model is not built, so it has no weights to export: train it, load it, or call "
            f"model.build((None, *{model.image_shape})) first."
        )


def _check_labels(name: str, labels, images: np.ndarray | None, model: VAE, say) -> np.ndarray:
    """The int32 labels `[N]` of `images` for a conditional model (None: the classes in
    turn, 0, 1, ..., C - 1, 0, ...); None for an unconditional one, which refuses labels."""
    if not is_conditional(model):
        if labels is not None:
            raise ValueError(f"{name} are for a conditional VAE; this {type(model).__name__} "
                             "takes no labels.")  # fmt: skip
        return None
    size = model.condition_dim
    if images is None:
        if labels is not None:
            raise ValueError(f"{name} need their images.")
        return None
    if labels is None:
        say(f"no {name} given: the images are labelled with the classes in turn, 0..{size - 1}")
        return (np.arange(len(images)) % size).astype(np.int32)
    array = np.asarray(labels)
    if array.shape != (len(images),) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{name} must be int class labels [N], one per image ({len(images)}). "
            f"Received: shape {array.shape}, dtype {array.dtype}"
        )
    if array.min() < 0 or array.max() >= size:
        raise ValueError(f"{name} must be in [0, {size}) (the model's condition_dim). "
                         f"Received: labels in [{array.min()}, {array.max()}]")  # fmt: skip
    return array.astype(np.int32)


def _choose_check_images(model, check, representative, say) -> tuple:
    """(images, labels, source): `check` (images, labels), else `representative`, else uniform
    noise (labelled with the classes in turn for a conditional model)."""
    if check[0] is not None:
        return (*check, "check_images")
    if representative[0] is not None:
        return (*representative, "representative_images")
    say("no check_images given: the self-check uses uniform random images")
    shape = (_SYNTHETIC_CHECK_SIZE, *model.image_shape)
    images = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    return images, _check_labels("labels", None, images, model, lambda _: None), "synthetic"


def export_vae(
    model: VAE,
    export_dir: str | Path,
    *,
    version: int = 1,
    tflite: bool = True,
    quantize: Sequence[str] = ("none",),
    scorer: bool = True,
    scorer_samples: int = DEFAULT_SCORER_SAMPLES,
    representative_images: np.ndarray | None = None,
    check_images: np.ndarray | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = print,
    representative_labels: np.ndarray | None = None,
    check_labels: np.ndarray | None = None,
    scorer_model: VAE | None = None,
) -> dict:
    """Writes the encoder, decoder and scorer as SavedModels and `.tflite` files, checked
    and atomic.

    Every artefact is written under a temporary name, checked against the Keras model there,
    and renamed into place only when all of them passed, so a failed export leaves nothing.

    Args:
        model: A built (trained) `VAE`, any combination of posterior, prior and likelihood.
        export_dir: Directory of the export (created if needed). TF Serving's model base
            paths are `export_dir/encoder`, `export_dir/decoder` and `export_dir/scorer`.
        version: TF Serving version number, the name of the version directories.
        tflite: Also write `encoder.tflite`, `decoder.tflite` (and `scorer.tflite`).
        quantize: TFLite variants among `"none"` (float32), `"dynamic"`, `"float16"`,
            `"int8"`; the scorer is written as float32 only.
        scorer: Also export the scorer (x -> elbo, log_likelihood).
        scorer_samples: K, importance samples of the scorer's `log_likelihood`.
        representative_images: `[N, *image_shape]` calibration images, required for `"int8"`
            (at most 1,000 are used).
        check_images: `[N, *image_shape]` real inputs for the self-check (at most 256 are
            used, 32 for the scorer); defaults to `representative_images`, else 16 uniform
            random images.
        overwrite: Replace an existing version. Without it an existing version is an error.
        progress: Receives one line per step; None is silent.
        representative_labels, check_labels: A conditional VAE's int class labels `[N]` of
            those images (default: the classes in turn, 0, 1, ..., C - 1, 0, ...).
        scorer_model: The model the scorer is written from: `model`'s weights in another
            precision (`VAEKind.with_precision`; `keras-vae export --precision`), e.g.
            `mixed_bfloat16` for a scorer whose matmuls run in bfloat16 (1.2-1.3x the float32
            scorer's speed for a 784-500-20 model on an AMX CPU) and whose densities, sums and
            logsumexp stay float32. Default: `model`.
            A scorer in low precision and a float32 `model` are also checked against each
            other on the same noise (mean difference below
            `keras_vae.serving.precision.scorer_bound`, 0.05 nats for an MNIST model); such
            a scorer has no `.tflite` file (TFLite has no bfloat16 builtins), the encoder and
            decoder are written from `model` as usual.

    Returns:
        The report, also written to `export_dir/export_report.json`: versions, paths (relative
        to `export_dir`), sizes in bytes, signatures, the operators of the `.tflite` files,
        the errors against the Keras model and the scorer's statistics.

    Raises:
        ValueError: Invalid arguments.
        FileExistsError: The version exists and `overwrite` is False.
        ExportCheckError: An artefact disagreed with the model, or the scorer of this
            combination of parts does not convert to TFLite builtins; nothing was written.

    Example:
        ```python
        report = export_vae(vae, "export/mnist", quantize=["none", "int8"],
                            representative_images=train_images[:500])
        print(*(a["path"] for a in report["artefacts"]))
        # encoder/1 decoder/1 scorer/1 encoder.tflite decoder.tflite scorer.tflite ...
        ```
    """
    _check_model(model)
    if scorer_model is not None:
        _check_model(scorer_model, "scorer_model")
    scorer_model = check_same_weights(scorer_model, model, _SCORER_MODEL_HINT)
    quantize = pipeline.check_export_arguments(version, tflite, quantize, progress)
    scorer_samples = check_positive_int("scorer_samples", scorer_samples)
    say = progress or (lambda message: None)
    representative_images = _check_images("representative_images", representative_images, model)
    representative_labels = _check_labels(
        "representative_labels", representative_labels, representative_images, model, say
    )
    check_images = _check_images("check_images", check_images, model)
    check_labels = _check_labels("check_labels", check_labels, check_images, model, say)
    if "int8" in quantize and representative_images is None:
        raise ValueError("quantize='int8' needs representative_images (calibration data).")
    if tflite and tflite_refusal(model, "encoder"):  # before any file is written
        raise ValueError(tflite_refusal(model, "encoder"))
    names = PARTS if scorer else PARTS[:2]
    pipeline.refuse_existing(export_dir, names, version, overwrite)
    representative = (representative_images, representative_labels)
    check_images, check_labels, source = _choose_check_images(
        model, (check_images, check_labels), representative, say
    )
    labels = None if check_labels is None else check_labels[:256]
    reference = build_reference(model, check_images[:256], scorer, labels, scorer_model)
    parts = export_parts(model, reference, scorer, scorer_samples, representative, scorer_model)
    if scorer and tflite and not parts[-1].quantizations:
        say(
            f"scorer.tflite is not written: the scorer computes in "
            f"{scorer_model.dtype_policy.compute_dtype}, which TFLite has no builtins for"
        )
    return pipeline.export_parts(
        parts, export_dir, model=_model_facts(model, scorer_model if scorer else None),
        check_images={"count": len(reference["encoder"]["inputs"]["x"]), "source": source},
        version=version, tflite=tflite, quantize=quantize, overwrite=overwrite, progress=progress,
    )  # fmt: skip
