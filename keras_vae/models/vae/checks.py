"""A VAE's export self-checks against the Keras model it came from.

Every artefact (SavedModel or `.tflite`) is run on check images and compared with the model
computed through its Keras layers and TFP distributions:

* deterministic signatures (encoder and decoder `serving_default`, scorer
  `score_with_noise`), at batch 1 and at the whole check batch: max abs error (the scorer's
  log-densities, sums over hundreds of pixels, as a relative error |a - b| / (1 + |b|));
* sampling signatures: shapes, finiteness, and that a sample decodes as the model decodes
  it (`sample`) or carries the same parameters (`encode_sample`);
* the scorer's `serving_default`, which draws its own noise: its per-example `elbo` and
  `log_likelihood` minus the model's own estimates from fresh noise (`VAE.elbo_terms` and
  the importance-weighted bound of `keras_vae.parts.objectives`) must average to zero within 5
  standard errors, and `log_likelihood - elbo` must not be negative beyond 5 standard errors.

A conditional model is checked the same way at the check images' labels `y`, an input of
every signature (the references through `ConditionalVAE.given(y)`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_vae.models.vae.signatures import expected_signatures, is_conditional
from keras_vae.parts import objectives
from keras_vae.serving.checks import (  # noqa: F401  (of 0.2.0's keras_vae.export_checks)
    SAMPLE_CHECK_SIZE,
    STANDARD_ERRORS,
    ExportCheckError,
    OutputComparison,
    Runner,
    compare_deterministic,
    estimate_agreement,
    max_error,
    run_in_session,
    saved_model_runners,
    tflite_runners,
    worst,
)
from keras_vae.serving.precision import computes_low

DETERMINISTIC = {"encoder": "serving_default", "decoder": "serving_default",
                 "scorer": "score_with_noise"}  # fmt: skip
#: Parts whose errors are relative, |a - b| / (1 + |b|).
RELATIVE_PARTS = ("scorer",)
SCORER_CHECK_SIZE = 32
SCORER_CHECK_NOISE = 4  # noise samples of the exact score_with_noise check


# -------------------------------------------------------------------------- references
def keras_view(model, y=None):
    """The Keras model given labels y (`ConditionalVAE.given`), or the model itself."""
    return model.given(y) if is_conditional(model) else model


def _labelled(inputs: dict, y) -> dict:
    """`inputs` with the labels `y` added when there are some."""
    return inputs if y is None else {**inputs, "y": np.asarray(y, np.int32)}


def keras_scores(model, x: np.ndarray, eps: np.ndarray, y=None) -> dict[str, np.ndarray]:
    """The scorer's outputs through the Keras model and TFP: `VAE.elbo_terms` on eps[0],
    and log 1/K sum_k w_k with `objectives.log_importance_weights` on all K samples
    (given the labels y for a conditional model)."""
    x, eps = tf.constant(x), tf.constant(eps)
    model = keras_view(model, y)
    elbo = model.elbo_terms(x, noise=eps[:1]).elbo
    params = model.encode_parameters(x)
    q = model.posterior.distribution(**params)
    z = model.posterior.reparameterize(params, eps)
    log_w = objectives.log_importance_weights(
        model.decode(z).log_prob(x), q, model.prior_distribution(), z
    )
    log_px = tf.reduce_logsumexp(log_w, axis=0) - math.log(int(eps.shape[0]))
    return {"elbo": elbo.numpy(), "log_likelihood": log_px.numpy()}


def build_reference(model, x: np.ndarray, scorer: bool, y=None, scorer_model=None) -> dict:
    """Inputs and outputs of each part's deterministic signature, through Keras and TFP
    (at the labels y `[N]` for a conditional model: then an input of every signature).

    The scorer's come from `scorer_model` (default: `model`), the same weights in another
    precision; when it computes in low precision and `model` in float32, the scorer's
    reference also holds `float32_outputs`, the float32 model's scores on the same noise
    (`keras_vae.serving.precision.float32_agreement` bounds the scorer against them)."""
    view = keras_view(model, y)
    params = {k: v.numpy() for k, v in view.encode_parameters(x).items()}
    loc = view.encode(x).mean().numpy()
    decoded = model.likelihood.parameters(view.decoder(loc))
    result = {
        "encoder": {"inputs": _labelled({"x": x}, y), "outputs": params},
        "decoder": {
            "inputs": _labelled({"z": loc}, y),
            "outputs": {
                "mean": view.decode(loc).mean().numpy(),
                **{name: value.numpy() for name, value in decoded.items()},
            },
        },
    }
    if scorer:
        x, y = x[:SCORER_CHECK_SIZE], None if y is None else y[:SCORER_CHECK_SIZE]
        shape = (SCORER_CHECK_NOISE, len(x), model.posterior.noise_size)
        eps = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        scorer_model = model if scorer_model is None else scorer_model
        result["scorer"] = {
            "inputs": _labelled({"x": x, "eps": eps}, y),
            "outputs": keras_scores(scorer_model, x, eps, y),
        }
        if computes_low(scorer_model) and not computes_low(model):
            result["scorer"]["float32_outputs"] = keras_scores(model, x, eps, y)
    return result


# ------------------------------------------------------------------------------ checks
def _sampling_problems(model, part, runners, inputs, compare) -> list[str]:
    """Runs `encode_sample` or `sample`; returns the problems found."""
    n = min(SAMPLE_CHECK_SIZE, len(next(iter(inputs.values()))))
    y = inputs["y"][:n] if "y" in inputs else None
    if part == "encoder" and "encode_sample" in runners:
        sampled = runners["encode_sample"](**_labelled({"x": inputs["x"][:n]}, y))
        params = {k: v[:n] for k, v in reference_outputs(model, inputs["x"][:n], y).items()}
        compare("encode_sample", sampled, params)
    elif part == "decoder" and "sample" in runners:
        count = {"y": y} if y is not None else {"num_samples": np.array(n, np.int32)}
        sampled = runners["sample"](**count)
        if sampled["z"].shape == (n, model.latent_dim):  # else a problem below
            decoded = keras_view(model, y).decode(sampled["z"]).mean().numpy()
            compare("sample", sampled, {"mean": decoded})
    else:
        return []
    problems = [f"{name} is not finite" for name, v in sampled.items() if not np.isfinite(v).all()]
    if sampled["z"].shape != (n, model.latent_dim):
        problems.append(f"z has shape {sampled['z'].shape}, expected {(n, model.latent_dim)}")
    return problems


def reference_outputs(model, x: np.ndarray, y=None) -> dict[str, np.ndarray]:
    """The posterior's parameters at x (and labels y), through the Keras model."""
    return {k: v.numpy() for k, v in keras_view(model, y).encode_parameters(x).items()}


def scorer_statistics(
    model, run: Runner, x: np.ndarray, num_samples: int, y=None
) -> tuple[dict, list]:
    """Compares the scorer's `serving_default` (own noise) with the model's own estimates.

    Returns:
        `({output: {"exported_mean", "keras_mean", "stderr"}, "gap": {...}}, problems)`.
    """
    got = run(**_labelled({"x": x}, y))
    eps = np.random.default_rng(2).standard_normal(
        (num_samples, len(x), model.posterior.noise_size)
    )
    return estimate_agreement(got, keras_scores(model, x, eps.astype(np.float32), y))


def check_runners(
    model, part: str, runners: dict[str, Runner], reference: dict[str, dict]
) -> tuple[dict[str, float], list[str]]:
    """Runs every signature; returns the errors per `signature/output` and the problems."""
    inputs, expected = reference[part]["inputs"], reference[part]["outputs"]
    compare = OutputComparison(relative=part in RELATIVE_PARTS)
    key = DETERMINISTIC[part]
    compare_deterministic(runners[key], key, inputs, expected, compare)
    compare.problems += _sampling_problems(model, part, runners, inputs, compare)
    return compare.errors, compare.problems


def check_artefact(
    model,
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
        raise ExportCheckError(f"{label}: signatures {json.dumps(described)} differ from the "
                               f"expected {json.dumps(want)}")  # fmt: skip
    errors, problems = check_runners(model, part, runners, reference)
    key, error = worst(errors, bounded_output)
    if error >= bound:
        problems.append(f"max {'relative ' * (part in RELATIVE_PARTS)}error of {key} is "
                        f"{error:.3g} >= bound {bound:g}")  # fmt: skip
    if problems:
        raise ExportCheckError(f"{label} failed its self-check: " + "; ".join(problems))
    return errors
