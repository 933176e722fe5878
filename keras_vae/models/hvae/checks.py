"""A hierarchical VAE's export self-checks against the Keras model it came from.

Every artefact (SavedModel or `.tflite`) runs on check images and is compared with the model
computed through its Keras layers and TFP distributions:

* deterministic signatures (encoder and decoder `serving_default`, scorer
  `score_with_noise`), at batch 1 and at the whole check batch: the decoder's max abs error,
  the encoder's and the scorer's as a relative error |a - b| / (1 + |b|) (`RELATIVE_PARTS`:
  a lower layer's loc has no fixed scale, the scorer sums hundreds of per-pixel terms);
  the encoder against `HierarchicalVAE.encode_parameters`, the decoder's mean against
  `HierarchicalVAE.decode(...).mean()` (TFP), the scorer against `sample_pass`, the pass the
  kind's evaluation (`keras_vae.models.hvae.metrics`) and training use;
* `encode_sample`: its z_1..z_L are fed back to the Keras top-down pass (z_{>i} given), whose
  q(z_i | z_{>i}, x) must have the parameters the artefact returned; shapes and finiteness;
* `sample`: the z_1..z_L it drew decode, in Keras, to the mean it returned;
* the scorer's `serving_default`, which draws its own noise: its per-example `elbo` and
  `log_likelihood` minus the model's own estimates from fresh noise must average to zero
  within 5 standard errors, and `log_likelihood - elbo` must not be negative beyond 5
  standard errors (`keras_vae.serving.checks.estimate_agreement`, as for the VAE).
"""

from __future__ import annotations

import json
import re

import numpy as np
import tensorflow as tf

from keras_vae.models.hvae.model import HierarchicalVAE
from keras_vae.models.hvae.signatures import expected_signatures
from keras_vae.serving.checks import (
    SAMPLE_CHECK_SIZE,
    ExportCheckError,
    OutputComparison,
    Runner,
    compare_deterministic,
    estimate_agreement,
)
from keras_vae.serving.precision import computes_low

DETERMINISTIC = {"encoder": "serving_default", "decoder": "serving_default",
                 "scorer": "score_with_noise"}  # fmt: skip
#: Parts whose errors are relative, |a - b| / (1 + |b|): the scorer's log-densities (sums of
#: hundreds of terms) and the encoder's parameters. A lower layer's scale is set by training,
#: not by a N(0, I) prior: the model is invariant under an affine map of z_i applied to its
#: prior, its posterior and what reads it, and trained MNIST models have |loc_1| up to 19-34,
#: where float32 rounding alone is a few 1e-5 and a float16 file's error is relative by nature.
RELATIVE_PARTS = ("encoder", "scorer")
#: The outputs bounded for quantized files (others are reported only): every layer's loc,
#: the decoder's mean.
BOUNDED = {"encoder": re.compile(r"/loc_\d+$"), "decoder": re.compile(r"/mean$")}
SCORER_CHECK_SIZE = 32
SCORER_CHECK_NOISE = 4  # noise samples of the exact score_with_noise check


# -------------------------------------------------------------------------- references
def _numpy(tensors: dict) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in tensors.items()}


def named_parameters(model: HierarchicalVAE, per_layer: list[dict]) -> dict[str, np.ndarray]:
    """`[{loc, scale, ...} per layer]` -> `{loc_1, scale_1, ..., loc_L, scale_L}` (the prior's
    `prior_loc`, `prior_scale` that `encode_parameters` adds below the top are left out)."""
    out = {}
    for i, params in enumerate(per_layer, start=1):
        for name, value in params.items():
            if not name.startswith("prior_"):
                out[f"{name}_{i}"] = np.asarray(value)
    return out


def keras_encoder(model: HierarchicalVAE, x: np.ndarray) -> dict[str, np.ndarray]:
    """Each layer's posterior parameters along the mean path (`encode_parameters`)."""
    return named_parameters(model, model.encode_parameters(tf.constant(x)))


def keras_posterior_given(model: HierarchicalVAE, x: np.ndarray, latents) -> dict:
    """q(z_i | z_{>i}, x)'s parameters with the z's given (teacher forcing), by name."""
    layers, _ = model._top_down(model.bottom_up(tf.constant(x)), [None] * model.num_layers,
                                latents=[tf.constant(z) for z in latents])  # fmt: skip
    per_layer = [{"loc": layer.q[0], "scale": layer.q[1]} for layer in layers[:-1]]
    return named_parameters(model, [*per_layer, layers[-1].q])


def keras_decoder(model: HierarchicalVAE, latents) -> dict[str, np.ndarray]:
    """E[x|z] from TFP's `decode(z).mean()`, and the likelihood's parameters at the z's."""
    latents = [tf.constant(z) for z in latents]
    _, state = model._top_down(None, None, latents=latents)
    params = model.likelihood.parameters(model.decoder(latents[0], state=state))
    return {"mean": np.asarray(model.decode(latents).mean()), **_numpy(params)}


def keras_scores(model: HierarchicalVAE, x: np.ndarray, eps: np.ndarray) -> dict:
    """The scorer's outputs through `HierarchicalVAE.sample_pass` (what the kind's evaluation
    computes), in float64: the mean over the K samples of log p(x|z_k) - sum_i KL_i and
    logsumexp_k log w_k - log K."""
    x = tf.constant(x)
    out = model.sample_pass(x, model.bottom_up(x), tf.constant(eps, tf.float32))
    log_w = np.asarray(out["log_weights"], np.float64)
    kl = sum(np.asarray(k, np.float64) for k in out["kl"])
    elbo = np.mean(np.asarray(out["log_likelihood"], np.float64) - kl, axis=0)
    top = log_w.max(axis=0)
    log_px = top + np.log(np.mean(np.exp(log_w - top), axis=0))
    return {"elbo": elbo, "log_likelihood": log_px}


def build_reference(model: HierarchicalVAE, x: np.ndarray, scorer: bool,
                    scorer_model: HierarchicalVAE | None = None) -> dict[str, dict]:  # fmt: skip
    """Inputs and outputs of each part's deterministic signature, through Keras and TFP; the
    decoder at the mean path's z's of the images.

    The scorer's come from `scorer_model` (default: `model`), the same weights in another
    precision; when it computes in low precision and `model` in float32, the scorer's
    reference also holds `float32_outputs`, the float32 model's scores on the same noise
    (`keras_vae.serving.precision.float32_agreement` bounds the scorer against them)."""
    params = keras_encoder(model, x)
    latents = [params[f"loc_{i}"] for i in range(1, model.num_layers + 1)]
    result = {
        "encoder": {"inputs": {"x": x}, "outputs": params},
        "decoder": {
            "inputs": {f"z_{i}": z for i, z in enumerate(latents, start=1)},
            "outputs": keras_decoder(model, latents),
        },
    }
    if scorer:
        x = x[:SCORER_CHECK_SIZE]
        shape = (SCORER_CHECK_NOISE, len(x), sum(model.latent_sizes))
        eps = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        source = model if scorer_model is None else scorer_model
        result["scorer"] = {"inputs": {"x": x, "eps": eps},
                            "outputs": keras_scores(source, x, eps)}  # fmt: skip
        if computes_low(source) and not computes_low(model):
            result["scorer"]["float32_outputs"] = keras_scores(model, x, eps)
    return result


# ------------------------------------------------------------------------------ checks
def _latents(model: HierarchicalVAE, outputs: dict) -> list[np.ndarray]:
    return [outputs[f"z_{i}"] for i in range(1, model.num_layers + 1)]


def _sampling_problems(model, part, runners, inputs, compare) -> list[str]:
    """Runs `encode_sample` or `sample` on `SAMPLE_CHECK_SIZE` examples; the problems found."""
    n = min(SAMPLE_CHECK_SIZE, len(next(iter(inputs.values()))))
    if part == "encoder" and "encode_sample" in runners:
        sampled = runners["encode_sample"](x=inputs["x"][:n])
        signature = "encode_sample"
    elif part == "decoder" and "sample" in runners:
        sampled = runners["sample"](num_samples=np.array(n, np.int32))
        signature = "sample"
    else:
        return []
    problems = [f"{name} is not finite" for name, v in sampled.items() if not np.isfinite(v).all()]
    for i, size in enumerate(model.latent_sizes, start=1):
        if sampled[f"z_{i}"].shape != (n, size):
            problems.append(f"z_{i} has shape {sampled[f'z_{i}'].shape}, expected {(n, size)}")
    if problems:
        return problems
    latents = _latents(model, sampled)
    if signature == "encode_sample":
        compare(signature, sampled, keras_posterior_given(model, inputs["x"][:n], latents))
    else:
        compare(signature, sampled, {"mean": keras_decoder(model, latents)["mean"]})
    return []


def check_runners(model: HierarchicalVAE, part: str, runners: dict[str, Runner],
                  reference: dict[str, dict]) -> tuple[dict[str, float], list[str]]:  # fmt: skip
    """Runs every signature; returns the errors per `signature/output` and the problems."""
    inputs, expected = reference[part]["inputs"], reference[part]["outputs"]
    compare = OutputComparison(relative=part in RELATIVE_PARTS)
    key = DETERMINISTIC[part]
    compare_deterministic(runners[key], key, inputs, expected, compare)
    compare.problems += _sampling_problems(model, part, runners, inputs, compare)
    return compare.errors, compare.problems


def worst(errors: dict[str, float], part: str, quantized: bool) -> tuple[str, float]:
    """The largest error among the bounded outputs (all of them for float32 files)."""
    pattern = BOUNDED.get(part) if quantized else None
    bounded = {k: v for k, v in errors.items() if pattern is None or pattern.search(k)}
    key = max(bounded, key=bounded.get)
    return key, bounded[key]


def check_artefact(model, part, label, runners, described, reference, bound,
                   quantized: bool) -> tuple[dict[str, float], str, float]:  # fmt: skip
    """Checks names, shapes, dtypes and values of one artefact; raises `ExportCheckError`.

    Returns:
        (errors by `signature/output`, the bounded key, its error).
    """
    want = {key: expected_signatures(model)[part][key] for key in described}
    if described != want:
        raise ExportCheckError(f"{label}: signatures {json.dumps(described)} differ from the "
                               f"expected {json.dumps(want)}")  # fmt: skip
    errors, problems = check_runners(model, part, runners, reference)
    key, error = (None, 0.0) if not errors else worst(errors, part, quantized)
    if error >= bound or not np.isfinite(error):
        problems.append(f"max {'relative ' * (part in RELATIVE_PARTS)}error of {key} is "
                        f"{error:.3g} >= bound {bound:g}")  # fmt: skip
    if problems:
        raise ExportCheckError(f"{label} failed its self-check: " + "; ".join(problems))
    return errors, key, error


def scorer_statistics(model: HierarchicalVAE, run: Runner, x: np.ndarray,
                      num_samples: int) -> tuple[dict, list]:  # fmt: skip
    """Compares the scorer's `serving_default` (own noise) with the model's own estimates
    from fresh noise (`keras_scores` with K = `num_samples`): `estimate_agreement`."""
    shape = (num_samples, len(x), sum(model.latent_sizes))
    eps = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    return estimate_agreement(run(x=x), keras_scores(model, x, eps))
