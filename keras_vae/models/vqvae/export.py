"""A VQ-VAE and its code prior as SavedModels (TF Serving) and TFLite files (phones).

`export_vqvae(vqvae, export_dir, prior=...)` writes

```
EXPORT_DIR/encoder/<version>/  serving_default: x [B, H, W, C] -> codes int32 [B, h, w],
                               latents float32 [B, h, w, D] (the quantised z_q = e_codes)
EXPORT_DIR/decoder/<version>/  serving_default: codes int32 [B, h, w] -> mean [B, H, W, C]
                               and the likelihood's parameters
EXPORT_DIR/prior/<version>/    serving_default: num_samples int32 [] -> codes int32 [n, h, w],
                               images [n, H, W, C] (E[x|z_q] of codes drawn from the prior);
                               log_prob: codes -> log_prob [B] (nats, log p_prior(codes))
EXPORT_DIR/{encoder,decoder,prior}.tflite       float32, same signatures and tensor names
EXPORT_DIR/{encoder,decoder,prior}.int8.tflite  int8 weights and activations, on request
EXPORT_DIR/export_report.json                   sizes, signatures, operators, self-checks
```

The graphs hold core TF ops and TFLite builtins only: nearest codes by MatMul and ArgMin,
codes to vectors by Gather, the prior's ancestral sampling as a `tf.while_loop` (TFLite WHILE)
over the h w positions with Gumbel-max draws from `tf.random.uniform` (RANDOM_UNIFORM).

Self-checks against the Keras model, on check images (every artefact, before anything is
renamed into place: staging, the atomic commit, the report and the clean-up are the pipeline
every kind shares, `keras_vae.serving.pipeline`):

* encoder: the codes equal Keras' (`codes_agreement` = 1 for float32 files; int8 files must
  agree on at least `INT8_CODE_AGREEMENT` of the positions, a check against a broken
  conversion only), latents within `FLOAT32_BOUND`;
* decoder: mean and parameters within `FLOAT32_BOUND` (int8: mean within `INT8_MEAN_BOUND`);
* prior: `log_prob` within `FLOAT32_BOUND` relative (int8: reported only); `serving_default`
  draws codes in [0, K) whose images equal the Keras decoder's on those codes (bounds as the
  decoder's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vae.models.vqvae.code_prior import CodePrior, ancestral_sample
from keras_vae.models.vqvae.model import VQVAE
from keras_vae.serving import pipeline
from keras_vae.serving.checks import SAMPLE_CHECK_SIZE, ExportCheckError, max_error, run_in_session
from keras_vae.serving.signatures import function

QUANTIZATIONS = ("none", "int8")  # of keras_vae.serving.tflite.QUANTIZATIONS
FLOAT32_BOUND = 1e-4
#: Max abs error of an int8 decoder's mean pixels (and of the int8 prior's decoded samples):
#: about 2.5x the 0.161 that a trained binarized-MNIST VQ-VAE measured (K = 256, D = 16, conv
#: 32-64 ReLU; max over 256 check images x 784 pixels; the VAE's 0.15 was set on MLPs).
INT8_MEAN_BOUND = 0.4
#: Least fraction of positions where an int8 encoder's codes equal Keras'. It catches a broken
#: conversion (chance is about 1 / perplexity), not the loss of accuracy: int8 activations move
#: z_e across the boundaries of close codes; a trained binarized-MNIST model (K = 256, D = 16)
#: measured 0.445. Use the float32 encoder where exact codes matter.
INT8_CODE_AGREEMENT = 0.2
_BATCH = 32


# ------------------------------------------------------------------------- signatures
def _decode(vqvae: VQVAE, codes: tf.Tensor) -> dict[str, tf.Tensor]:
    params = vqvae.likelihood.parameters(vqvae.decoder(vqvae.quantizer.lookup(codes)))
    params = {k: tf.cast(v, tf.float32) for k, v in params.items()}
    return {"mean": vqvae.likelihood.mean(params), **params}


def signatures(vqvae: VQVAE, prior: CodePrior | None = None) -> dict[str, dict]:
    """`{part: {signature: concrete function}}` for encoder, decoder (and prior)."""
    grid = list(vqvae.code_shape)
    image_spec = tf.TensorSpec([None, *vqvae.image_shape], tf.float32, name="x")
    codes_spec = tf.TensorSpec([None, *grid], tf.int32, name="codes")

    def encode(x):
        z_e = vqvae.encoder(tf.ensure_shape(x, image_spec.shape))
        codes = vqvae.quantizer.codes(z_e)
        return {"codes": codes, "latents": tf.cast(vqvae.quantizer.lookup(codes), tf.float32)}

    def decode(codes):
        return _decode(vqvae, tf.ensure_shape(codes, codes_spec.shape))

    parts = {"encoder": {"serving_default": function(encode, image_spec)},
             "decoder": {"serving_default": function(decode, codes_spec)}}  # fmt: skip
    if prior is not None:

        def uniform(shape, t):
            del t
            return tf.random.uniform(shape, minval=1e-7, maxval=1.0)

        def sample(num_samples):
            codes = ancestral_sample(prior.network, num_samples, vqvae.code_shape, uniform)
            return {"codes": codes, "images": _decode(vqvae, codes)["mean"]}

        def log_prob(codes):
            return {"log_prob": prior.log_prob(tf.ensure_shape(codes, codes_spec.shape))}

        num_spec = tf.TensorSpec([], tf.int32, name="num_samples")
        parts["prior"] = {"serving_default": function(sample, num_spec),
                          "log_prob": function(log_prob, codes_spec)}  # fmt: skip
    return parts


# ------------------------------------------------------------------------------ checks
_KEYS = {"encoder": "serving_default", "decoder": "serving_default", "prior": "log_prob"}


def _reference(vqvae: VQVAE, prior: CodePrior | None, x: np.ndarray) -> dict:
    codes = vqvae.encode(x).numpy()
    decoded = {k: v.numpy() for k, v in _decode(vqvae, codes).items()}
    reference = {
        "encoder": ({"x": x}, {"codes": codes, "latents": vqvae.quantizer.lookup(codes).numpy()}),
        "decoder": ({"codes": codes}, decoded),
    }
    if prior is not None:
        reference["prior"] = ({"codes": codes}, {"log_prob": prior.log_prob(codes).numpy()})
    return reference


def _measure(vqvae, part, runners, reference) -> tuple[dict, list]:
    """The errors of one artefact's signatures against the Keras model, and its problems."""
    inputs, want = reference[part]
    key = _KEYS[part]
    got = runners[key](**inputs)
    errors, problems = {}, []
    for name, value in want.items():
        if got[name].shape != value.shape:
            problems.append(f"{key}/{name} has shape {got[name].shape}, expected {value.shape}")
        elif name == "codes":
            errors["code_disagreement"] = float(np.mean(got[name] != value))
        else:
            errors[f"{key}/{name}"] = max_error(got[name], value, relative=part == "prior")
    if part == "prior":
        n = SAMPLE_CHECK_SIZE
        codes = runners["serving_default"](num_samples=np.array(n, np.int32))
        images, codes = codes["images"], codes["codes"]
        if (
            codes.shape != (n, *vqvae.code_shape)
            or codes.min() < 0
            or (codes.max() >= vqvae.codebook_size)
        ):
            problems.append(f"sampled codes {codes.shape} outside [0, {vqvae.codebook_size})")
        else:
            want_images = vqvae.decode_codes(codes).mean().numpy()
            errors["serving_default/images"] = max_error(images, want_images)
    return errors, problems


#: The measure each part's quantized (int8) files are held to, and its bound.
_INT8_CHECKED = {"encoder": ("code_disagreement", 1.0 - INT8_CODE_AGREEMENT),
                 "decoder": ("serving_default/mean", INT8_MEAN_BOUND),
                 "prior": ("serving_default/images", INT8_MEAN_BOUND)}  # fmt: skip


def _check(vqvae, part: str, reference: dict) -> pipeline.Check:
    """float32: every error below `FLOAT32_BOUND` (codes: equal); int8: `_INT8_CHECKED`."""

    def check(runners, described, quantization, label) -> dict:
        errors, problems = _measure(vqvae, part, runners, reference)
        if problems:
            raise ExportCheckError(f"{label} failed its self-check: " + "; ".join(problems))
        if quantization == "none":
            if errors.get("code_disagreement", 0.0) > 0.0:  # float32 codes must be Keras'
                raise ExportCheckError(f"{label} failed its self-check: its codes differ from "
                                       f"the model's at {errors['code_disagreement']:.3g} of "
                                       "the positions")  # fmt: skip
            floats = {k: v for k, v in errors.items() if k != "code_disagreement"}
            checked, bound = max(floats, key=floats.get), FLOAT32_BOUND
        else:
            checked, bound = _INT8_CHECKED[part]
        if errors[checked] >= bound:
            raise ExportCheckError(
                f"{label} failed its self-check: {checked} is {errors[checked]:.3g} "
                f"(bound {bound:g})"
            )
        return {"errors": errors, "checked": checked, "checked_error": errors[checked],
                "bound": bound}  # fmt: skip

    return check


def _graph_check(part: str, reference: dict):
    """The checked signature through TF Serving's graph-mode loader."""

    def graph_check(path: Path) -> dict:
        inputs, want = reference[part]
        got = run_in_session(path, _KEYS[part], inputs)
        if "codes" in want and not np.array_equal(got["codes"], want["codes"]):
            raise ExportCheckError(f"{part}/ in graph mode gives other codes than the model")
        errors = {f"graph_mode/{name}": max_error(got[name], value, relative=part == "prior")
                  for name, value in want.items() if name != "codes"}  # fmt: skip
        if errors and max(errors.values()) >= FLOAT32_BOUND:
            raise ExportCheckError(f"{part}/ disagrees with the model in graph mode: {errors}")
        return errors

    return graph_check


# --------------------------------------------------------------------------- calibration
def _representative(vqvae, part, images, keys):
    batches = [images[i : i + _BATCH] for i in range(0, len(images), _BATCH)]
    feeds = []
    for batch in batches:
        codes = vqvae.encode(batch).numpy()
        feed = {"encoder": {"serving_default": {"x": batch}},
                "decoder": {"serving_default": {"codes": codes}},
                "prior": {"serving_default": {"num_samples": np.array(2, np.int32)},
                          "log_prob": {"codes": codes}}}[part]  # fmt: skip
        feeds += [(key, feed[key]) for key in keys]
    return lambda: iter(feeds)


def export_parts(vqvae: VQVAE, prior: CodePrior | None, reference: dict,
                 images: np.ndarray) -> list[pipeline.ExportPart]:  # fmt: skip
    """The encoder, decoder (and prior) as parts of the export pipeline."""
    return [
        pipeline.ExportPart(
            name=name,
            signatures=functions,
            check=_check(vqvae, name, reference),
            quantizations=QUANTIZATIONS,
            calibration=lambda keys, name=name: _representative(vqvae, name, images, keys),
            graph_check=_graph_check(name, reference),
        )  # fmt: skip
        for name, functions in signatures(vqvae, prior).items()
    ]


def export_vqvae(
    vqvae: VQVAE,
    export_dir: str | Path,
    *,
    prior: CodePrior | None = None,
    version: int = 1,
    tflite: bool = True,
    quantize=("none",),
    representative_images: np.ndarray | None = None,
    check_images: np.ndarray | None = None,
    overwrite: bool = False,
    progress=print,
) -> dict:
    """Writes the encoder, decoder (and prior) as checked SavedModels and `.tflite` files.

    Args:
        vqvae: A built (trained) `VQVAE`.
        export_dir: Directory of the export; TF Serving's base paths are its `encoder`,
            `decoder` and `prior` folders.
        prior: A trained `CodePrior` of this `vqvae` (adds `prior/`, `prior.tflite`).
        version: TF Serving version number.
        tflite: Also write `.tflite` files.
        quantize: TFLite variants among `"none"` (float32) and `"int8"`.
        representative_images: `[N, H, W, C]` calibration images (needed for `"int8"`).
        check_images: Images of the self-check (defaults to the representative images).
        overwrite: Replace an existing version.
        progress: Receives one line per step; None is silent.

    Returns:
        The report, also written to `export_dir/export_report.json`.

    Raises:
        ValueError: Invalid arguments. FileExistsError: the version exists.
        ExportCheckError: An artefact disagreed with the model; nothing was written.
    """
    if not isinstance(vqvae, VQVAE) or not vqvae.built:
        raise ValueError(f"vqvae must be a built keras_vae VQVAE. Received: {vqvae!r}")
    if prior is not None and (not isinstance(prior, CodePrior) or prior.vqvae is not vqvae):
        raise ValueError("prior must be a CodePrior over this vqvae (CodePrior(vqvae)).")
    quantize = pipeline.check_export_arguments(version, tflite, quantize, progress)
    if any(q not in QUANTIZATIONS for q in quantize):
        raise ValueError(f"quantize must be a list of {QUANTIZATIONS}. Received: {quantize!r}")
    if "int8" in quantize and representative_images is None:
        raise ValueError("quantize='int8' needs representative_images (calibration data).")
    say = progress or (lambda message: None)
    names = ("encoder", "decoder", "prior") if prior is not None else ("encoder", "decoder")
    pipeline.refuse_existing(export_dir, names, version, overwrite)
    x, source = check_images, "check_images"
    if x is None:
        x, source = representative_images, "representative_images"
    if x is None:
        say("no check_images given: the self-check uses uniform random images")
        x = np.random.default_rng(0).uniform(size=(16, *vqvae.image_shape))
        source = "synthetic"
    x = np.asarray(x, np.float32)[:256]
    images = np.asarray(representative_images if representative_images is not None else x,
                        np.float32)[:1000]  # fmt: skip
    if prior is not None and not prior.built:
        prior.build()
    model = {"name": vqvae.name, "image_shape": list(vqvae.image_shape),
             "code_shape": list(vqvae.code_shape), "codebook_size": vqvae.codebook_size,
             "code_dim": vqvae.code_dim, "prior": prior is not None}  # fmt: skip
    parts = export_parts(vqvae, prior, _reference(vqvae, prior, x), images)
    return pipeline.export_parts(
        parts, export_dir, model=model, check_images={"count": len(x), "source": source},
        version=version, tflite=tflite, quantize=quantize, overwrite=overwrite, progress=progress,
    )  # fmt: skip
