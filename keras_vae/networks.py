"""Encoder and decoder bodies.

A body maps its input to features; a head in `keras_vae.distributions` turns the features into
a distribution. The AEVB paper's body is a multilayer perceptron with one hidden layer of tanh
units (500 for MNIST, 200 for Frey Face): h = tanh(W x + b), paper appendix C.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_vae import registry


def _check_hidden_units(hidden_units: object) -> tuple[int, ...]:
    if isinstance(hidden_units, int) and not isinstance(hidden_units, bool):
        hidden_units = (hidden_units,)
    units = tuple(hidden_units) if isinstance(hidden_units, Sequence) else None
    if not units or any(isinstance(u, bool) or not isinstance(u, int) or u <= 0 for u in units):
        raise ValueError(
            "hidden_units must be a positive int or a non-empty list of positive ints, "
            f"for example [500]. Received: hidden_units={hidden_units!r}"
        )
    return units


@registry.register("network", "mlp")
class MLP(keras.layers.Layer):
    """Multilayer perceptron body: h_k = activation(W_k h_{k-1} + b_k).

    Args:
        hidden_units: Units of each hidden layer, for example `[500]` (the paper's MNIST body).
        activation: Keras activation name; the paper uses `"tanh"`.
        flatten: If True (encoders), every axis after the batch axis is flattened first, so
            images `[batch, 28, 28, 1]` enter as `[batch, 784]`. If False (decoders), the
            layer maps the last axis only and keeps all leading axes (for example the Monte
            Carlo sample axis of `z` with shape `[samples, batch, latent_dim]`).
        **kwargs: Standard `keras.layers.Layer` arguments.

    Example:
        >>> encoder = MLP([500], activation="tanh", flatten=True)
        >>> decoder = MLP([500], activation="tanh", flatten=False)
    """

    def __init__(
        self,
        hidden_units: Sequence[int] | int = (500,),
        activation: str = "tanh",
        flatten: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_units = _check_hidden_units(hidden_units)
        try:
            keras.activations.get(activation)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "activation must be a Keras activation name such as 'tanh' or 'relu'. "
                f"Received: activation={activation!r}"
            ) from error
        self.activation = activation
        self.flatten = bool(flatten)
        self.dense_layers = [
            keras.layers.Dense(units, activation=activation, name=f"dense_{i}")
            for i, units in enumerate(self.hidden_units)
        ]

    def _flat_shape(self, input_shape):
        if not self.flatten:
            return tuple(input_shape)
        size = 1
        for dim in input_shape[1:]:
            if dim is None:
                raise ValueError(
                    "MLP(flatten=True) needs every non-batch dimension known. "
                    f"Received: input_shape={tuple(input_shape)}"
                )
            size *= dim
        return (input_shape[0], size)

    def build(self, input_shape):
        shape = self._flat_shape(input_shape)
        for layer in self.dense_layers:
            layer.build(shape)
            shape = tuple(shape[:-1]) + (layer.units,)

    def compute_output_shape(self, input_shape):
        return tuple(self._flat_shape(input_shape)[:-1]) + (self.hidden_units[-1],)

    def call(self, inputs):
        h = inputs
        if self.flatten:
            h = tf.reshape(h, [tf.shape(h)[0], -1])
        for layer in self.dense_layers:
            h = layer(h)
        return h

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_units": list(self.hidden_units),
                "activation": self.activation,
                "flatten": self.flatten,
            }
        )
        return config


@registry.register("network", "gated_mlp")
class GatedMLP(MLP):
    """Gated multilayer perceptron body (Dauphin et al. 2017; the VampPrior paper's bodies):

        h_k = activation(A_k h_{k-1} + a_k) * sigmoid(B_k h_{k-1} + b_k)

    One `Dense` of 2 * units per layer computes both halves. Same arguments as `MLP`; the
    default activation is linear, as in Tomczak & Welling (2018).
    """

    def __init__(self, hidden_units=(300, 300), activation="linear", flatten=False, **kwargs):
        super().__init__(hidden_units, activation=activation, flatten=flatten, **kwargs)
        self.dense_layers = [
            keras.layers.Dense(2 * units, name=f"gated_dense_{i}")
            for i, units in enumerate(self.hidden_units)
        ]
        self._activation_fn = keras.activations.get(activation)

    def build(self, input_shape):
        shape = self._flat_shape(input_shape)
        for layer, units in zip(self.dense_layers, self.hidden_units, strict=True):
            layer.build(shape)
            shape = tuple(shape[:-1]) + (units,)

    def call(self, inputs):
        h = inputs
        if self.flatten:
            h = tf.reshape(h, [tf.shape(h)[0], -1])
        for layer in self.dense_layers:
            value, gate = tf.split(layer(h), 2, axis=-1)
            h = self._activation_fn(value) * tf.sigmoid(gate)
        return h
