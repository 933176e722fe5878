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
renamed into place; writes are atomic as in `keras_vae.export`):

* encoder: the codes equal Keras' (`codes_agreement` = 1 for float32 files; int8 files must
  agree on at least `INT8_CODE_AGREEMENT` of the positions, a check against a broken
  conversion only), latents within `FLOAT32_BOUND`;
* decoder: mean and parameters within `FLOAT32_BOUND` (int8: mean within `INT8_MEAN_BOUND`);
* prior: `log_prob` within `FLOAT32_BOUND` relative (int8: reported only); `serving_default`
  draws codes in [0, K) whose images equal the Keras decoder's on those codes (bounds as the
  decoder's).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vae._internal import atomic
from keras_vae.models.vqvae.code_prior import CodePrior, ancestral_sample
from keras_vae.models.vqvae.model import VQVAE
from keras_vae.serving.checks import (
    SAMPLE_CHECK_SIZE,
    ExportCheckError,
    max_error,
    run_in_session,
    saved_model_runners,
    tflite_runners,
)
from keras_vae.serving.signatures import tracked_module
from keras_vae.serving.tflite import convert_tflite, tflite_filename, tflite_operators

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
def _function(fn, *specs):
    return tf.function(fn, input_signature=list(specs), autograph=False).get_concrete_function()


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

    parts = {"encoder": {"serving_default": _function(encode, image_spec)},
             "decoder": {"serving_default": _function(decode, codes_spec)}}  # fmt: skip
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
        parts["prior"] = {"serving_default": _function(sample, num_spec),
                          "log_prob": _function(log_prob, codes_spec)}  # fmt: skip
    return parts


# ------------------------------------------------------------------------------ checks
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


def _check(vqvae, part, runners, reference, quantization, label) -> dict:
    """Runs an artefact's signatures on the reference inputs; raises `ExportCheckError`."""
    inputs, want = reference[part]
    key = "log_prob" if part == "prior" else "serving_default"
    got = runners[key](**inputs)
    errors, problems = {}, []
    int8 = quantization == "int8"
    for name, value in want.items():
        if got[name].shape != value.shape:
            problems.append(f"{key}/{name} has shape {got[name].shape}, expected {value.shape}")
        elif name == "codes":
            errors["codes_agreement"] = float(np.mean(got[name] == value))
        else:
            errors[f"{key}/{name}"] = max_error(got[name], value, relative=part == "prior")
    if part == "prior":
        n = SAMPLE_CHECK_SIZE
        drawn = runners["serving_default"](num_samples=np.array(n, np.int32))
        codes = drawn["codes"]
        if (
            codes.shape != (n, *vqvae.code_shape)
            or codes.min() < 0
            or (codes.max() >= vqvae.codebook_size)
        ):
            problems.append(f"sampled codes {codes.shape} outside [0, {vqvae.codebook_size})")
        else:
            images = vqvae.decode_codes(codes).mean().numpy()
            errors["serving_default/images"] = max_error(drawn["images"], images)
    bounds = {"codes_agreement": INT8_CODE_AGREEMENT if int8 else 1.0}
    bounded = {"decoder": "serving_default/mean", "prior": "serving_default/images"}
    for name, error in errors.items():
        if name == "codes_agreement":
            if error < bounds[name]:
                problems.append(f"codes agree with Keras on {error:.3f} < {bounds[name]}")
        elif (not int8 and error >= FLOAT32_BOUND) or (
            int8 and name == bounded.get(part) and error >= INT8_MEAN_BOUND
        ):
            problems.append(f"max error of {name} is {error:.3g}")
    if problems:
        raise ExportCheckError(f"{label} failed its self-check: " + "; ".join(problems))
    return errors


# ---------------------------------------------------------------------------- writing
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


def _stage(vqvae, prior, parts, staging, reference, quantize, images, say) -> list[dict]:
    """Writes and checks every artefact under `staging`; returns their report entries."""
    artefacts = []
    for part, functions in parts.items():
        path = staging / part
        tf.saved_model.save(tracked_module(functions), str(path), signatures=functions)
        runners, described = saved_model_runners(tf.saved_model.load(str(path)))
        errors = _check(vqvae, part, runners, reference, "none", f"{part} SavedModel")
        key = "log_prob" if part == "prior" else "serving_default"
        graph = run_in_session(path, key, reference[part][0])
        for name, value in reference[part][1].items():
            if not np.array_equal(graph[name], value) and name == "codes":
                raise ExportCheckError(f"{part} SavedModel in graph mode gives other codes")
        artefacts.append({"part": part, "kind": "saved_model", "quantization": "none",
                          "signatures": described, "errors": errors, "path": part})  # fmt: skip
        say(f"  {part} SavedModel: {errors}")
        for quantization in quantize:
            name = tflite_filename(part, quantization)
            keys = tuple(functions)
            dataset = _representative(vqvae, part, images, keys) if quantization == "int8" else None
            content = convert_tflite(path, keys, quantization, dataset)
            operators = tflite_operators(content)
            custom = [op for op in operators if op.startswith("CUSTOM")]
            if custom:
                raise ExportCheckError(f"{name} needs non-builtin (Flex/custom) ops: {custom}")
            atomic.write_bytes(staging / name, content)
            runners, described = tflite_runners(staging / name)
            errors = _check(vqvae, part, runners, reference, quantization, name)
            artefacts.append({"part": part, "kind": "tflite", "quantization": quantization,
                              "path": name, "bytes": len(content), "operators": operators,
                              "signatures": described, "errors": errors})  # fmt: skip
            say(f"  {name}: {errors}")
    return artefacts


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
    quantize = tuple(quantize) if tflite else ()
    if any(q not in QUANTIZATIONS for q in quantize):
        raise ValueError(f"quantize must be a list of {QUANTIZATIONS}. Received: {quantize!r}")
    if "int8" in quantize and representative_images is None:
        raise ValueError("quantize='int8' needs representative_images (calibration data).")
    say = progress or (lambda message: None)
    x = check_images if check_images is not None else representative_images
    if x is None:
        say("no check_images given: the self-check uses uniform random images")
        x = np.random.default_rng(0).uniform(size=(16, *vqvae.image_shape))
    x = np.asarray(x, np.float32)[:256]
    images = np.asarray(representative_images if representative_images is not None else x,
                        np.float32)[:1000]  # fmt: skip
    if prior is not None and not prior.built:
        prior.build()
    export_dir = Path(export_dir)
    parts = signatures(vqvae, prior)
    existing = [export_dir / p / str(version) for p in parts if (export_dir / p / str(version))
                .exists()]  # fmt: skip
    if existing and not overwrite:
        raise FileExistsError(f"version {version} already exists ({existing[0]}); choose "
                              "another version or pass overwrite=True")  # fmt: skip
    started = time.perf_counter()
    export_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=export_dir))
    try:
        reference = _reference(vqvae, prior, x)
        artefacts = _stage(vqvae, prior, parts, staging, reference, quantize, images, say)
        report = {"model": {"name": vqvae.name, "image_shape": list(vqvae.image_shape),
                            "code_shape": list(vqvae.code_shape),
                            "codebook_size": vqvae.codebook_size, "code_dim": vqvae.code_dim,
                            "prior": prior is not None},
                  "version": version, "check_images": len(x),
                  "seconds": round(time.perf_counter() - started, 1),
                  "artefacts": artefacts}  # fmt: skip
        atomic.write_json(staging / "export_report.json", report)
        moves = [(staging / p, export_dir / p / str(version), overwrite) for p in parts]
        for p in parts:
            (export_dir / p).mkdir(exist_ok=True)
            (staging / p).chmod(0o755)
        moves += [(staging / a["path"], export_dir / a["path"], True)
                  for a in artefacts if a["kind"] == "tflite"]  # fmt: skip
        moves.append((staging / "export_report.json", export_dir / "export_report.json", True))
        atomic.commit(moves)
    finally:
        atomic.remove(staging)
    say(f"exported version {version} to {export_dir} in {report['seconds']} s")
    return report
