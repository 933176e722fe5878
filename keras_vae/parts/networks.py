"""Encoder and decoder bodies.

A body maps its input to features; a head (`keras_vae.posteriors`, `keras_vae.likelihoods`)
turns the features into a distribution. The AEVB paper's body is a multilayer perceptron with
one hidden layer of tanh units (500 for MNIST, 200 for Frey Face): h = tanh(W x + b), paper
appendix C.

A registered network is a family of an encoder and a decoder body: the class registered under
a name has a class method `pair(image_shape, hidden_units, activation, **options)` that returns
both, named "encoder" and "decoder" (what `keras_vae.mlp_vae(network=...)` calls):

    mlp        `MLP`, flat features `[..., units]` from both bodies
    gated_mlp  `GatedMLP`
    conv       `ConvEncoder` (images -> flat features) and `ConvDecoder` (z -> spatial features
               `[..., H, W, F]`, which the likelihood heads project pixel by pixel)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_vae import registry
from keras_vae._internal.checks import check_positive_int


def _check_units(name: str, value: object, allow_empty: bool = False) -> tuple[int, ...]:
    """`value` (an int or a list of ints) as a tuple of positive ints, else a one-line error."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    units = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if (
        units is None
        or (not units and not allow_empty)
        or any(isinstance(u, bool) or not isinstance(u, int) or u <= 0 for u in units)
    ):
        kind = "a list" if allow_empty else "a non-empty list"
        raise ValueError(
            f"{name} must be a positive int or {kind} of positive ints, for example "
            f"{[32, 64] if name == 'filters' else [500]}. Received: {name}={value!r}"
        )
    return units


def _check_hidden_units(hidden_units: object) -> tuple[int, ...]:
    return _check_units("hidden_units", hidden_units)


def _check_activation(activation: object) -> str:
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError) as error:
        raise ValueError(
            "activation must be a Keras activation name such as 'tanh' or 'relu'. "
            f"Received: activation={activation!r}"
        ) from error
    return activation


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
        self.activation = _check_activation(activation)
        self.flatten = bool(flatten)
        self.dense_layers = [
            keras.layers.Dense(
                units, activation=activation, name=f"dense_{i}", dtype=self.dtype_policy
            )
            for i, units in enumerate(self.hidden_units)
        ]

    @classmethod
    def pair(cls, image_shape, hidden_units=(500,), activation="tanh", **options):
        """The encoder (flattening images) and the decoder body of this family."""
        del image_shape  # the bodies adapt to any input size when they are built
        encoder = cls(hidden_units, activation=activation, flatten=True, name="encoder", **options)
        decoder = cls(hidden_units, activation=activation, flatten=False, name="decoder", **options)
        return encoder, decoder

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
            keras.layers.Dense(2 * units, name=f"gated_dense_{i}", dtype=self.dtype_policy)
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


def _halved(size: int, levels: int) -> int:
    """The size after `levels` stride-2 'same' convolutions: ceil(size / 2^levels)."""
    return -(-size // 2**levels)


def _collapse_leading(tensor: tf.Tensor, event_ndims: int) -> tuple[tf.Tensor, tf.Tensor]:
    """`tensor` `[..., *event]` as `[N, *event]`, and the leading shape to restore later."""
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[-1], shape[-event_ndims:]], axis=0)), shape[:-event_ndims]


def _restore_leading(tensor: tf.Tensor, leading: tf.Tensor, event_ndims: int) -> tf.Tensor:
    return tf.reshape(tensor, tf.concat([leading, tf.shape(tensor)[-event_ndims:]], axis=0))


def max_levels(image_shape: Sequence[int]) -> int:
    """The most stride-2 levels that `[H, W, ...]` images allow: L with 2^(L-1) < max(H, W).

    Level l sees ceil(S / 2^(l-1)) pixels along a side of S; past L the longer side is down to
    one pixel and a further level (a 1 x 1 map in, 1 x 1 out) adds weights, not resolution.
    """
    longest = max(image_shape[:2])
    return (longest - 1).bit_length()


def check_levels(image_shape: Sequence[int], levels: int) -> None:
    """A one-line ValueError when `levels` stride-2 levels are too many for the images."""
    allowed = max_levels(image_shape)
    if levels > allowed:
        size = "x".join(map(str, image_shape[:2]))
        raise ValueError(
            f"{size} images allow at most {allowed} stride-2 conv levels (the longer side is "
            f"1 pixel after {allowed}); give fewer filters (--conv-filters). Received: "
            f"{levels} levels"
        )


@registry.register("network", "conv")
class ConvEncoder(keras.layers.Layer):
    """Convolutional encoder body: images `[..., H, W, C]` -> features `[..., F]`.

        h_0 = x,  h_l = activation(conv_l(h_{l-1})),  l = 1..L   (k x k kernels, stride 2)
        f = activation(W_m ... activation(W_1 flatten(h_L) + b_1) ... + b_m)

    with 'same' padding, so level l has ceil(H / 2^l) x ceil(W / 2^l) positions and
    `filters[l-1]` channels; any H and W work (28x28, 28x20, 32x32). Without `hidden_units`
    the features are flatten(h_L). Leading axes before `[H, W, C]` are kept.

    Args:
        filters: Channels of each convolution level, for example `[32, 64]`.
        hidden_units: Dense layers after the flatten (may be empty), for example `[256]`.
        kernel_size: Side of the square kernels (3 or 4 are usual).
        activation: Keras activation name.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Example:
        >>> encoder, decoder = ConvEncoder.pair((28, 20, 1), hidden_units=[128], filters=[32, 64])
    """

    def __init__(
        self,
        filters: Sequence[int] | int = (32, 64),
        hidden_units: Sequence[int] | int = (),
        kernel_size: int = 3,
        activation: str = "relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = _check_units("filters", filters)
        self.hidden_units = _check_units("hidden_units", hidden_units, allow_empty=True)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.activation = _check_activation(activation)
        self.conv_layers = [
            keras.layers.Conv2D(
                f,
                kernel_size,
                strides=2,
                padding="same",
                activation=activation,
                name=f"conv_{i}",
                dtype=self.dtype_policy,
            )
            for i, f in enumerate(self.filters)
        ]
        self.dense_layers = [
            keras.layers.Dense(
                units, activation=activation, name=f"dense_{i}", dtype=self.dtype_policy
            )
            for i, units in enumerate(self.hidden_units)
        ]

    @classmethod
    def pair(
        cls, image_shape, hidden_units=(), activation="relu", filters=(32, 64), kernel_size=3,
        **options,
    ):  # fmt: skip
        """A `ConvEncoder` and the mirror `ConvDecoder` (filters and hidden units reversed)
        for images of `image_shape` `[H, W, C]`; see `check_levels` for the deepest allowed."""
        image_shape = tuple(image_shape)
        if len(image_shape) != 3:
            raise ValueError(
                "The conv network needs images of shape [height, width, channels]. "
                f"Received: image_shape={image_shape}"
            )
        units = _check_units("hidden_units", hidden_units, allow_empty=True)
        filters = _check_units("filters", filters)
        check_levels(image_shape, len(filters))
        options = {"kernel_size": kernel_size, "activation": activation, **options}
        encoder = cls(filters, units, name="encoder", **options)
        decoder = ConvDecoder(image_shape[:2], filters[::-1], units[::-1], name="decoder",
                              **options)  # fmt: skip
        return encoder, decoder

    def _image_shape(self, input_shape) -> tuple[int, int, int]:
        image = tuple(input_shape)[-3:]
        if len(input_shape) < 4 or any(d is None for d in image):
            raise ValueError(
                "ConvEncoder needs inputs [batch, height, width, channels] with known height, "
                f"width and channels. Received: input_shape={tuple(input_shape)}"
            )
        return image

    def build(self, input_shape):
        height, width, channels = self._image_shape(input_shape)
        for level, layer in enumerate(self.conv_layers):
            layer.build((None, _halved(height, level), _halved(width, level), channels))
            channels = layer.filters
        levels = len(self.conv_layers)
        size = _halved(height, levels) * _halved(width, levels) * channels
        for layer in self.dense_layers:
            layer.build((None, size))
            size = layer.units

    def compute_output_shape(self, input_shape):
        height, width, _ = self._image_shape(input_shape)
        levels = len(self.filters)
        size = _halved(height, levels) * _halved(width, levels) * self.filters[-1]
        return tuple(input_shape[:-3]) + ((self.hidden_units or (size,))[-1],)

    def call(self, inputs):
        h, leading = _collapse_leading(inputs, 3)
        for layer in self.conv_layers:
            h = layer(h)
        h = tf.reshape(h, [tf.shape(h)[0], -1])
        for layer in self.dense_layers:
            h = layer(h)
        return _restore_leading(h, leading, 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": list(self.filters),
                "hidden_units": list(self.hidden_units),
                "kernel_size": self.kernel_size,
                "activation": self.activation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class ConvDecoder(keras.layers.Layer):
    """Convolutional decoder body: z `[..., latent_dim]` -> features `[..., H, W, F]`.

        g = activation(W_m ... activation(W_1 z + b_1) ... + b_m)       (`hidden_units`)
        h_0 = reshape(activation(V g + c), [h_0, w_0, filters[0]]),
              h_0 = ceil(H / 2^L), w_0 = ceil(W / 2^L)
        h_l = activation(conv_transpose_l(h_{l-1})),  l = 1..L   (k x k kernels, stride 2)
        features = h_L[:H, :W]

    Each level doubles the height and width, so h_L is at least H x W and the crop makes it
    exactly the image's; F = filters[-1]. A likelihood head projects every pixel's F features
    to its parameters. Leading axes of z (the objective's Monte Carlo samples, `[L, B, D]`) are
    kept.

    Args:
        output_size: `(H, W)` of the images.
        filters: Channels of each transposed-convolution level, coarse to fine, for example
            `[64, 32]` (the encoder's reversed).
        hidden_units: Dense layers before the first feature map (may be empty).
        kernel_size: Side of the square kernels.
        activation: Keras activation name.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(
        self,
        output_size: Sequence[int],
        filters: Sequence[int] | int = (64, 32),
        hidden_units: Sequence[int] | int = (),
        kernel_size: int = 3,
        activation: str = "relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        size = tuple(output_size) if isinstance(output_size, Sequence) else ()
        if len(size) != 2 or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0
                                 for d in size):  # fmt: skip
            raise ValueError(
                "output_size must be (height, width), two positive ints such as (28, 20). "
                f"Received: output_size={output_size!r}"
            )
        self.output_size = size
        self.filters = _check_units("filters", filters)
        self.hidden_units = _check_units("hidden_units", hidden_units, allow_empty=True)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.activation = _check_activation(activation)
        levels = len(self.filters)
        self.base_size = tuple(_halved(d, levels) for d in size)
        self.dense_layers = [
            keras.layers.Dense(
                units, activation=activation, name=f"dense_{i}", dtype=self.dtype_policy
            )
            for i, units in enumerate(self.hidden_units)
        ]
        self.base_layer = keras.layers.Dense(
            self.base_size[0] * self.base_size[1] * self.filters[0],
            activation=activation,
            name="base",
            dtype=self.dtype_policy,
        )
        self.deconv_layers = [
            keras.layers.Conv2DTranspose(
                f,
                kernel_size,
                strides=2,
                padding="same",
                activation=activation,
                name=f"deconv_{i}",
                dtype=self.dtype_policy,
            )
            for i, f in enumerate(self.filters)
        ]

    def build(self, input_shape):
        size = input_shape[-1]
        if size is None:
            raise ValueError(f"ConvDecoder needs a known latent size. Received: {input_shape}")
        for layer in [*self.dense_layers, self.base_layer]:
            layer.build((None, size))
            size = layer.units
        (height, width), channels = self.base_size, self.filters[0]
        for level, layer in enumerate(self.deconv_layers):
            layer.build((None, height * 2**level, width * 2**level, channels))
            channels = layer.filters

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (*self.output_size, self.filters[-1])

    def call(self, inputs):
        h, leading = _collapse_leading(inputs, 1)
        for layer in self.dense_layers:
            h = layer(h)
        h = tf.reshape(self.base_layer(h), [-1, *self.base_size, self.filters[0]])
        for layer in self.deconv_layers:
            h = layer(h)
        height, width = self.output_size
        return _restore_leading(h[:, :height, :width, :], leading, 3)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_size": list(self.output_size),
                "filters": list(self.filters),
                "hidden_units": list(self.hidden_units),
                "kernel_size": self.kernel_size,
                "activation": self.activation,
            }
        )
        return config
