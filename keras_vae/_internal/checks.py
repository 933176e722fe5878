"""Argument checks and small tensor helpers shared by the parts (one line errors)."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")
    return value


def check_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")
    return float(value)


def check_nonnegative_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0. Received: {name}={value!r}")
    return float(value)


def check_event_shape(event_shape: object) -> tuple[int, ...]:
    if isinstance(event_shape, int):
        event_shape = (event_shape,)
    if not isinstance(event_shape, Sequence) or not event_shape:
        raise ValueError(
            "event_shape must be a non-empty sequence of positive ints such as (28, 28, 1). "
            f"Received: event_shape={event_shape!r}"
        )
    for dim in event_shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(
                "event_shape must contain positive ints only. "
                f"Received: event_shape={tuple(event_shape)!r}"
            )
    return tuple(int(d) for d in event_shape)


def reshape_last(tensor: tf.Tensor, event_shape: tuple[int, ...]) -> tf.Tensor:
    """Reshapes the last axis of `tensor` ([..., prod(event_shape)]) to `event_shape`."""
    leading = tf.shape(tensor)[:-1]
    return tf.reshape(tensor, tf.concat([leading, tf.constant(event_shape, tf.int32)], axis=0))


def floored_softplus(raw: tf.Tensor, floor: float) -> tf.Tensor:
    """sigma = softplus(raw) + floor: positive, smooth, and never below `floor`."""
    return tf.nn.softplus(raw) + floor
