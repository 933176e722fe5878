"""A part exported from the same weights in a low-precision Keras policy, for every kind.

`keras-vae export --precision mixed_bfloat16` writes the scorer from the run's weights in that
policy (the encoder and decoder stay float32, with their `.tflite` files). What that needs is
the same whatever the kind, and lives here:

* `check_same_weights`: the low-precision model must hold the float32 model's weights;
* `unquantized_bound`: a SavedModel of a low-precision model may fuse and round its bfloat16 or
  float16 ops differently from the Keras model (one bfloat16 rounding is 2^-8 relative), so its
  self-check bound is `LOW_PRECISION_BOUNDS` instead of the kind's float32 bound;
* `tflite_refusal`: TFLite has no bfloat16 MatMul, BiasAdd or Tanh builtins, so such a part
  has no `.tflite` file, and a request for one is a one-line error;
* `float32_agreement`: a low-precision scorer against the float32 model on the same images
  and noise, d = mean over images of (score - float32 score), |d| < `scorer_bound`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Max error of a low-precision SavedModel against its Keras model, by compute dtype (a
#: 2-unit toy bfloat16 decoder measured 1.8e-3 on its mean).
LOW_PRECISION_BOUNDS = {"bfloat16": 1e-2, "float16": 1e-3}
#: A low-precision scorer's mean elbo and log-likelihood may differ from the float32 model's by
#: this many nats (issue 29's 0.05 nats for a bfloat16 evaluation of an MNIST model, whose
#: |log p(x)| is about 100 nats; measured: 0.0018 +- 0.0010 on 500 test images,
#: benchmarks/README.md), or, for larger images, this fraction of the mean |log p(x)| (bfloat16
#: rounds each term of a sum over pixels, so the error grows with |log p(x)|).
SCORER_NATS = 0.05
SCORER_RELATIVE = 5e-4


def computes_low(model) -> bool:
    """Whether `model` computes in a dtype other than float32 (a `mixed_*` policy)."""
    return model.dtype_policy.compute_dtype != "float32"


def unquantized_bound(model, float32_bound: float) -> float:
    """`float32_bound`, or `LOW_PRECISION_BOUNDS` for a model computing in low precision."""
    return LOW_PRECISION_BOUNDS.get(model.dtype_policy.compute_dtype, float32_bound)


def tflite_refusal(model, name: str) -> str | None:
    """The one-line error of a `.tflite` file of `name` from a model computing in bfloat16 or
    float16; None for a float32 model."""
    if not computes_low(model):
        return None
    compute = model.dtype_policy.compute_dtype
    return (
        f"{name}.tflite: the model computes in {compute} ({model.dtype_policy.name}), whose ops "
        "are not TFLite builtins; export with tflite=False (--no-tflite) for the SavedModels."
    )


def check_same_weights(other, model, hint: str):
    """`other`, checked to be `model`'s class with `model`'s weights (in any precision), or
    `model` when `other` is None.

    Raises:
        ValueError: Another class, another layout or other values; `hint` says how to build
            the right one.
    """
    if other is None or other is model:
        return model
    if (
        type(other) is not type(model)
        or not other.built
        or len(other.weights) != len(model.weights)
    ):
        raise ValueError(f"scorer_model must hold the model's weights ({hint}).")
    for a, b in zip(model.weights, other.weights, strict=True):
        if tuple(a.shape) != tuple(b.shape) or not np.array_equal(a.numpy(), b.numpy()):
            raise ValueError(f"scorer_model must hold the model's weights ({hint}).")
    return other


def scorer_bound(log_likelihood: np.ndarray) -> float:
    """`SCORER_NATS`, or `SCORER_RELATIVE` of the mean |log p(x)| where that is larger."""
    scale = float(np.mean(np.abs(log_likelihood)))
    return max(SCORER_NATS, SCORER_RELATIVE * scale)


def float32_agreement(run: Callable[..., dict], reference: dict) -> tuple[dict, list[str]]:
    """A low-precision scorer's `score_with_noise` (`run`) against the float32 model:

        d = mean over the check images of (score_with_noise(x, eps) - float32 model's score)

    for `elbo` and `log_likelihood`, on `reference["inputs"]`, against
    `reference["float32_outputs"]`; |d| must stay below `scorer_bound` of the float32
    log-likelihoods.

    Returns:
        `({output: {"mean_difference", "max_abs_difference"}, "bound": b}, problems)`.
    """
    got = run(**reference["inputs"])
    want = reference["float32_outputs"]
    bound = scorer_bound(want["log_likelihood"])
    stats, problems = {"bound": bound}, []
    for name in ("elbo", "log_likelihood"):
        difference = np.asarray(got[name], np.float64) - want[name]
        stats[name] = {"mean_difference": float(difference.mean()),
                       "max_abs_difference": float(np.abs(difference).max())}  # fmt: skip
        if not np.isfinite(difference).all() or abs(difference.mean()) >= bound:
            problems.append(f"mean {name} differs from the float32 model's by "
                            f"{difference.mean():.3g} nats (bound {bound:.3g})")  # fmt: skip
    return stats, problems
