"""The precision of a model kind that offers one (`--precision`, `precision=` of the presets).

A preset gives its bodies and heads a Keras dtype policy: `float32`, or a mixed policy whose
matmuls compute in bfloat16 or float16 while every variable stays float32 (the heads cast
their outputs to float32; priors, log-densities, KLs and bounds are float32). Since the
variables are float32 under every policy, a trained model's weights move exactly into the
same model built in another policy (`with_weights_of`: `keras-vae evaluate --precision`).
"""

from __future__ import annotations

import keras

#: `precision=` of the presets and `keras-vae train --precision`: float32, or a Keras mixed
#: policy for the bodies and the heads' projections (float32 variables, head outputs, prior).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def resolve(precision: str | None) -> str:
    """The policy name of `precision`; None: Keras' global dtype policy. Anything outside
    `PRECISIONS` is a one-line error."""
    policy = keras.config.dtype_policy().name if precision is None else precision
    if policy not in PRECISIONS:
        given = "Keras' global dtype policy is" if precision is None else "Received: precision="
        raise ValueError(f"precision must be one of {PRECISIONS}. {given}{policy!r}")
    return policy


def layout(model) -> list[tuple[str, tuple]]:
    """Each weight's path inside the model (a loaded model's paths lack its name) and shape."""
    return [(w.path.removeprefix(f"{model.name}/"), tuple(w.shape)) for w in model.weights]


def with_weights_of(model, rebuilt):
    """`rebuilt` (the same architecture in another policy, built) given `model`'s weights;
    a one-line error when the two differ (a config.json edited after training)."""
    if layout(model) != layout(rebuilt):
        raise ValueError(
            "The run's model does not match its config.json (other weights): evaluate or "
            "export it without --precision."
        )
    for value, variable in zip(model.weights, rebuilt.weights, strict=True):
        variable.assign(value)
    return rebuilt
