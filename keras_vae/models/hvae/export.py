"""A hierarchical VAE's encoder, decoder and scorer as SavedModels and TFLite files.

`export_hvae` writes, under an export directory (layer i = 1..L, 1 next to x):

```
EXPORT_DIR/encoder/<version>/   serving_default: x -> loc_1, scale_1, ..., loc_L, scale_L
                                (each layer's q along the mean path); encode_sample: x ->
                                z_1..z_L drawn top-down and the parameters they were drawn with
EXPORT_DIR/decoder/<version>/   serving_default: z_1, ..., z_L -> mean and the likelihood's
                                parameters; sample: num_samples -> z_1..z_L from the prior
                                through the hierarchy, mean
EXPORT_DIR/scorer/<version>/    serving_default: x -> elbo, log_likelihood (K samples of the
                                whole hierarchy, nats); score_with_noise: x, eps -> the same
EXPORT_DIR/{encoder,decoder,scorer}.tflite     float32, same signatures and tensor names
EXPORT_DIR/encoder.float16.tflite, decoder.{dynamic,float16,int8}.tflite   on request
EXPORT_DIR/export_report.json   sizes, signatures, operators and the self-check errors
```

The signatures are `keras_vae.models.hvae.signatures`, the self-checks
`keras_vae.models.hvae.checks`; staging, the atomic commit, the report and the clean-up of an
earlier export's `.tflite` files are the pipeline every kind shares
(`keras_vae.serving.pipeline`).

Self-check bounds, against the Keras model over the check images:

* float32 SavedModels and `.tflite` files: every output of every deterministic signature and
  the parameters of `encode_sample` (given its own z's) < `FLOAT32_BOUND` in max abs error
  for the decoder, in relative error |a - b| / (1 + |b|) for the encoder (a lower layer's
  loc has no fixed scale, see below) and the scorer; the SavedModels also in graph mode, as
  TF Serving runs them; the scorer's own-noise `serving_default` within 5 standard errors of
  the model's estimates;
* a scorer written from the same weights in a mixed policy (`scorer_model`, `keras-vae export
  --precision`): `keras_vae.serving.precision.LOW_PRECISION_BOUNDS` against that Keras model,
  and its mean scores within `keras_vae.serving.precision.scorer_bound` of the float32
  model's on the same noise; it has no `.tflite` file (TFLite has no bfloat16 builtins);
* quantized `.tflite` files: `QUANTIZED_BOUNDS`, on every layer's `loc_i` (encoder, relative
  error) and on the decoder's mean (abs, pixels in [0, 1]); the other outputs are reported
  only. The bounds are about 2.5x the largest errors measured on two trained binarized-MNIST
  models (256 test images): an ELU 784-[256, 256]-32-[256, 256]-16 model (ELBO, 10 epochs)
  and the gated linear 784-[300, 300]-40-[300, 300]-40 VampPrior model of the reproduction
  runs (IWAE-DReG, 5 epochs); see `PART_QUANTIZATIONS` for what is written.

Which files are written (`PART_QUANTIZATIONS`): the decoder in every variant; the encoder in
float32 and float16 only; the scorer in float32 only (its log-densities sum hundreds of
per-pixel terms). A quantized encoder fails on the lower layers: their scale is set by
training (the model is invariant under an affine map of z_i applied to its prior, its
posterior and what reads it): the trained models above have |loc_1| up to 19 and 34, while
the uninformative units of z_1 shrink p(z_1|z_2) and q(z_1|.) together (median scales 0.01 to
0.07 on the ELU model, down to the 1e-4 floor on the gated one). int8 activations then move
loc_1 by 1.9 and 29.6 (relative errors 0.29 and 2.5), dynamic-range weights by 0.19 and 0.93
(0.11 and 0.37), far beyond what a served encoder may lose; float16 keeps 0.003. A request
for them writes the decoder's files and says that the encoder's are skipped.

Integer quantization (`int8`) of the decoder is calibrated on `representative_images`: z's
drawn through the hierarchy from q(z|x) of those images and as many from the prior.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vae._internal.checks import check_positive_int
from keras_vae.models.hvae.checks import (
    DETERMINISTIC,
    RELATIVE_PARTS,
    build_reference,
    check_artefact,
    scorer_statistics,
)
from keras_vae.models.hvae.model import HierarchicalVAE
from keras_vae.models.hvae.signatures import SIGNATURE_FUNCTIONS
from keras_vae.serving import pipeline
from keras_vae.serving.checks import ExportCheckError, graph_mode_check
from keras_vae.serving.precision import (
    check_same_weights,
    float32_agreement,
    tflite_refusal,
    unquantized_bound,
)
from keras_vae.serving.tflite import QUANTIZATIONS, batches

PARTS = ("encoder", "decoder", "scorer")
DEFAULT_SCORER_SAMPLES = 100
#: Max error of float32 artefacts against the Keras model (abs for the decoder; relative for
#: the encoder and the scorer).
FLOAT32_BOUND = 1e-4
#: How to build a `scorer_model` (`check_same_weights`' error).
_SCORER_MODEL_HINT = "the same model in another precision: HierarchicalVAEKind().with_precision"
#: The TFLite variants of each part (module docstring: a quantized encoder's lower layers).
PART_QUANTIZATIONS = {"encoder": ("none", "float16"), "decoder": QUANTIZATIONS,
                      "scorer": ("none",)}  # fmt: skip
#: Max error of the quantized `.tflite` files: the encoder's loc_i relative, |a - b| / (1 +
#: |b|), the decoder's mean abs (pixels in [0, 1]). About 2.5x the largest errors measured on
#: two trained MNIST models (module docstring): encoder float16 0.0031; decoder dynamic
#: 0.076, float16 0.0011, int8 0.185.
QUANTIZED_BOUNDS = {
    "dynamic": {"decoder": 0.2},
    "float16": {"encoder": 0.008, "decoder": 0.003},
    "int8": {"decoder": 0.45},
}
_SYNTHETIC_CHECK_SIZE = 16
_CALIBRATION_SIZE = 1000
_CALIBRATION_BATCH = 32


def _whole_batches(count: int) -> int:
    """The rows that fill whole calibration batches (all of them when fewer than one)."""
    return count if count < _CALIBRATION_BATCH else count - count % _CALIBRATION_BATCH


# -------------------------------------------------------------------------- calibration
def calibration_latents(model: HierarchicalVAE, images: np.ndarray) -> list[np.ndarray]:
    """z_1..z_L drawn top-down from q(z|x) for each image, then as many from the prior
    (what a served decoder sees), each `[2 N, size_i]`."""
    x = tf.constant(images)
    eps = np.random.default_rng(0).standard_normal((1, len(images), sum(model.latent_sizes)))
    posterior = model.sample_pass(x, model.bottom_up(x), tf.constant(eps, tf.float32))["layers"]
    _, prior = model.sample(len(images), seed=0, return_latents=True)
    return [
        np.concatenate([np.asarray(q.z), np.asarray(p)]).astype(np.float32)
        for q, p in zip(posterior, prior, strict=True)
    ]


def representative_dataset(model: HierarchicalVAE, part: str, images: np.ndarray,
                           signature_keys: Sequence[str]) -> Callable:  # fmt: skip
    """Calibration inputs of each signature: `(signature_key, {input: array})` batches."""
    if part == "encoder":
        rows = batches({"x": images})
        feeds = {key: rows for key in signature_keys}
    else:
        latents = calibration_latents(model, images)
        # batches of one size: the calibrator resizes one input at a time and re-prepares the
        # graph, so z_1 and z_2 of different batch sizes meet in a CONCATENATION that fails
        rows = batches({f"z_{i}": z[: _whole_batches(len(z))] for i, z in enumerate(latents, 1)},
                       _CALIBRATION_BATCH)  # fmt: skip
        counts = [{"num_samples": np.array(len(b["z_1"]), np.int32)} for b in rows]
        feeds = {"serving_default": rows, "sample": counts}
    samples = [(key, feed) for key in signature_keys for feed in feeds[key]]
    return lambda: iter(samples)


# ------------------------------------------------------------------------------- parts
def _check(model: HierarchicalVAE, part: str, reference: dict,
           scorer_samples: int) -> pipeline.Check:  # fmt: skip
    """The self-check of one part's artefacts (bounds: `FLOAT32_BOUND`, `QUANTIZED_BOUNDS`);
    `model` is the Keras model the part was written from (for the scorer: in its precision).
    A low-precision scorer is also bounded against the float32 model (`float32_agreement`)."""

    def check(runners, described, quantization, label) -> dict:
        quantized = quantization != "none"
        bound = (QUANTIZED_BOUNDS[quantization][part] if quantized
                 else unquantized_bound(model, FLOAT32_BOUND))  # fmt: skip
        errors, key, error = check_artefact(
            model, part, label, runners, described, reference, bound, quantized
        )
        measure = "relative error" if part in RELATIVE_PARTS else "abs error"
        fields = {"errors": errors, "checked": f"max {measure} of {key}", "checked_error": error,
                  "bound": bound}  # fmt: skip
        if part == "scorer":  # its own-noise signature against the model's estimates
            x = reference["scorer"]["inputs"]["x"]
            stats, problems = scorer_statistics(
                model, runners["serving_default"], x, scorer_samples
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


def export_parts(model: HierarchicalVAE, reference: dict, scorer: bool, scorer_samples: int,
                 images: np.ndarray | None,
                 scorer_model: HierarchicalVAE | None = None) -> list:  # fmt: skip
    """The encoder, decoder (and scorer, written from `scorer_model`, default `model`) as
    parts of the export pipeline. A scorer computing in low precision has no `.tflite` file
    (TFLite has no bfloat16 builtins)."""
    images = None if images is None else images[:_CALIBRATION_SIZE]
    parts = []
    for name in PARTS if scorer else PARTS[:2]:
        make = SIGNATURE_FUNCTIONS[name]
        source = (scorer_model or model) if name == "scorer" else model
        functions = make(source, scorer_samples) if name == "scorer" else make(source)
        low = tflite_refusal(source, name)
        parts.append(pipeline.ExportPart(
            name=name, signatures=functions,
            check=_check(source, name, reference, scorer_samples),
            quantizations=() if low else PART_QUANTIZATIONS[name],
            calibration=(lambda keys, name=name: representative_dataset(
                model, name, images, keys)) if images is not None else None,
            graph_check=graph_mode_check(name, DETERMINISTIC[name], reference,
                                         unquantized_bound(source, FLOAT32_BOUND),
                                         name in RELATIVE_PARTS),
            refusal=low or (
                f"scorer.tflite: the scorer of this hierarchical VAE ({_facts(model)}) "
                "does not convert to TFLite builtins; export with scorer=False "
                "(--no-scorer) or tflite=False (--no-tflite).") if name == "scorer" else None,
        ))  # fmt: skip
    return parts


def _name(part) -> str:
    return getattr(type(part), "registered_name", type(part).__name__)


def _facts(model: HierarchicalVAE) -> str:
    return "/".join(_name(getattr(model, n)) for n in ("top_posterior", "prior", "likelihood"))


def _model_facts(model: HierarchicalVAE, scorer_model: HierarchicalVAE | None) -> dict:
    return {
        "name": model.name,
        "kind": "hvae",
        "precision": model.dtype_policy.name,
        "scorer_precision": None if scorer_model is None else scorer_model.dtype_policy.name,
        "image_shape": list(model.image_shape),
        "latent_sizes": list(model.latent_sizes),
        "latent_shapes": [list(s) for s in model.latent_shapes],
        "top_posterior": _name(model.top_posterior),
        "prior": _name(model.prior),
        "likelihood": _name(model.likelihood),
    }


# -------------------------------------------------------------------------- arguments
def _check_images(name: str, images, model: HierarchicalVAE) -> np.ndarray | None:
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
    if not isinstance(model, HierarchicalVAE):
        raise ValueError(
            f"{name} must be a keras_vae HierarchicalVAE. Received: {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"{name} is not built, so it has no weights to export: train it, load it, or call "
            f"model.build((None, *{model.image_shape})) first."
        )
    policy = model.dtype_policy.name
    if name == "model" and policy != "float32":  # the encoder's and decoder's TFLite files
        raise ValueError(  # and bounds are float32's; a scorer_model may compute lower
            f"export_hvae writes float32 artefacts, but the model computes in {policy}: give "
            "it the same model in float32 with these weights (HierarchicalVAEKind()."
            "with_precision(model, config, 'float32'), as keras-vae export does)."
        )


def export_hvae(
    model: HierarchicalVAE,
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
    scorer_model: HierarchicalVAE | None = None,
) -> dict:
    """Writes the encoder, decoder and scorer of a hierarchical VAE as SavedModels and
    `.tflite` files, checked against the Keras model and committed atomically.

    Args:
        model: A built (trained) `HierarchicalVAE` (MLP or conv, any top prior).
        export_dir: Directory of the export (created if needed); TF Serving's model base
            paths are `export_dir/encoder`, `export_dir/decoder` and `export_dir/scorer`.
        version: TF Serving version number, the name of the version directories.
        tflite: Also write `encoder.tflite`, `decoder.tflite` (and `scorer.tflite`).
        quantize: TFLite variants among `"none"` (float32), `"dynamic"`, `"float16"`,
            `"int8"`; the scorer is written as float32 only.
        scorer: Also export the scorer (x -> elbo, log_likelihood).
        scorer_samples: K, importance samples of the scorer's `log_likelihood`.
        representative_images: `[N, *image_shape]` calibration images, required for `"int8"`
            (at most 1,000 are used).
        check_images: `[N, *image_shape]` real inputs of the self-check (at most 256 are
            used, 32 for the scorer); defaults to `representative_images`, else 16 uniform
            random images.
        overwrite: Replace an existing version; without it an existing version is an error.
        progress: Receives one line per step; None is silent.
        scorer_model: The model the scorer is written from: `model`'s weights in another
            precision (`HierarchicalVAEKind.with_precision`; `keras-vae export --precision`),
            e.g. `mixed_bfloat16` for a scorer whose matmuls run in bfloat16 and whose
            densities, KLs and logsumexp stay float32. Default: `model`. Such a scorer is
            also checked against the float32 `model` on the same noise (mean difference
            below `keras_vae.serving.precision.scorer_bound`) and has no `.tflite` file.

    Returns:
        The report, also written to `export_dir/export_report.json`.

    Raises:
        ValueError: Invalid arguments. FileExistsError: The version exists.
        ExportCheckError: An artefact disagreed with the model; nothing was written.

    Example:
        ```python
        report = export_hvae(hvae, "export/hvae", quantize=["none", "int8"],
                             representative_images=train_images[:500])
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
    check_images = _check_images("check_images", check_images, model)
    if "int8" in quantize and representative_images is None:
        raise ValueError("quantize='int8' needs representative_images (calibration data).")
    names = PARTS if scorer else PARTS[:2]
    pipeline.refuse_existing(export_dir, names, version, overwrite)
    x, source = check_images, "check_images"
    if x is None:
        x, source = representative_images, "representative_images"
    if x is None:
        say("no check_images given: the self-check uses uniform random images")
        shape = (_SYNTHETIC_CHECK_SIZE, *model.image_shape)
        x, source = np.random.default_rng(0).uniform(size=shape).astype(np.float32), "synthetic"
    skipped = [q for q in quantize if tflite and q not in PART_QUANTIZATIONS["encoder"]]
    if skipped:
        say(f"encoder: no {'/'.join(skipped)} file (a quantized encoder loses the lower layers' "
            "loc, see keras_vae.models.hvae.export); the decoder's are written")  # fmt: skip
    reference = build_reference(model, x[:256], scorer, scorer_model)
    parts = export_parts(model, reference, scorer, scorer_samples, representative_images,
                         scorer_model)  # fmt: skip
    if scorer and tflite and not parts[-1].quantizations:
        low = scorer_model.dtype_policy.compute_dtype
        say(f"scorer.tflite is not written: the scorer computes in {low}, which TFLite has "
            "no builtins for")  # fmt: skip
    return pipeline.export_parts(
        parts, export_dir, model=_model_facts(model, scorer_model if scorer else None),
        check_images={"count": len(reference["encoder"]["inputs"]["x"]), "source": source},
        version=version, tflite=tflite, quantize=quantize, overwrite=overwrite, progress=progress,
    )  # fmt: skip
