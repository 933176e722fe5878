"""The hierarchical VAE's layers: bottom-up bodies, top-down cells, decoders, a spatial head.

Notation of `keras_vae.models.hvae.model`: stochastic layers i = 1..L (1 next to x), bottom-up
features d_i, top-down state h_i, latents z_i passed around flat, `[N, size_i]` (a conv
layer's z_i is a `[h, w, c]` map flattened in that order).

    bottom-up   d_1 = B_1(x), d_i = B_i(d_{i-1})                  (`MLPBottomUp`, `ConvBottomUp`)
    top-down    h_i = T_i(z_{i+1}, h_{i+1})  (no h_{i+1} for i = L-1)
                [mu_i, s_i] = P_i(h_i),      sigma_i = g(s_i)
                [dmu_i, t_i] = Q_i(h_i, d_i), dsigma_i = g(t_i)
                                                   (`MLPTopDownCell`, `ConvTopDownCell`)
    decoder     features = D(z_1, h_1)  (no h_1 when L = 1)
                                     (`TopDownMLPDecoder`, `TopDownConvDecoder`)

The cells' scale map g (`cell_scale`) is NVAE's soft clamp of the log-scale (the default,
`log_scale_bound` b = 5):

    g(s) = exp(b tanh(s / b)),  log g(s) in (-b, b)                       (`bounded_scale`)

or, with `log_scale_bound=None` (models saved before it existed), g(s) = softplus(s + c) +
min_scale, c = log(e - 1) (`unit_softplus`). Both give a unit scale at a zero pre-activation:
at initialisation (outputs near zero) each p(z_i|z_{>i}) is close to N(0, I) and each
q(z_i|.) to its prior.

Why the bound (issue 30): a unit of z_i that the KL does not use (dmu = 0, dsigma = 1) costs
no nats whatever its prior scale sigma_i, so training is free to shrink sigma_i until z_i =
mu_i(z_{>i}) is a noiseless copy of the prior's mean, down to the softplus floor (1e-4) in
the first epoch of the first two-layer MNIST run. Any gradient that does not cancel sigma_i
between log p and log q then carries terms like eps / (sigma_i dsigma_i), whose variance
grows like 1 / sigma_i^2: DReG over every variable did (it held the prior's (mu_i, sigma_i)
constant inside log q; `HierarchicalVAE._dreg_weights` now keeps them live), and its gradient
norms of 1e4-4e5 ended in that run's blow-up. With b = 5, sigma_i >= e^-5 = 0.0067 and such a
term stays below about 150 |eps|. (NVAE, Vahdat & Kautz 2020, clamps its log-scales the same
way against the same instability.)

The cells create their sub-layers in `__init__` and the sub-layers their weights when the model
builds (`HierarchicalVAE.build` runs the whole model once on a zero batch): the cells have
several inputs whose sizes come from their neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_vae import registry
from keras_vae._internal.checks import check_positive_float, check_positive_int
from keras_vae.parts.networks import _check_activation, _check_units
from keras_vae.parts.posteriors import DiagonalGaussianPosterior, Posterior
from keras_vae.parts.projection import exact_projection

#: softplus(x + SOFTPLUS_ONE) = 1 at x = 0.
SOFTPLUS_ONE = math.log(math.e - 1.0)


#: b of `bounded_scale`, NVAE's soft clamp: log sigma in (-5, 5), sigma in (0.0067, 148).
LOG_SCALE_BOUND = 5.0


def unit_softplus(raw: tf.Tensor, floor: float) -> tf.Tensor:
    """sigma = softplus(raw + log(e - 1)) + floor: positive, and 1 + floor at raw = 0."""
    return tf.nn.softplus(raw + SOFTPLUS_ONE) + floor


def bounded_scale(raw: tf.Tensor, bound: float) -> tf.Tensor:
    """sigma = exp(b tanh(raw / b)): NVAE's soft clamp of the log-scale.

    log sigma = b tanh(raw / b) lies in (-b, b), is raw itself near 0 (sigma = 1 at raw = 0)
    and d log sigma / d raw = 1 - tanh^2(raw / b) is 1 at 0 and vanishes only towards the
    bounds, so sigma never leaves (e^-b, e^b) and its gradient stays finite.
    """
    return tf.exp(bound * tf.tanh(raw / bound))


def cell_scale(raw: tf.Tensor, min_scale: float, log_scale_bound: float | None) -> tf.Tensor:
    """A top-down cell's scale from its pre-activation: `bounded_scale(raw, log_scale_bound)`,
    or `unit_softplus(raw, min_scale)` when `log_scale_bound` is None (module docstring)."""
    if log_scale_bound is None:
        return unit_softplus(raw, min_scale)
    return bounded_scale(raw, log_scale_bound)


def check_log_scale_bound(value) -> float | None:
    """`log_scale_bound` as a positive float or None, else a one-line error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            "log_scale_bound must be a positive number such as 5.0 (log sigma in (-5, 5)) or "
            f"None (softplus scales floored at min_scale). Received: log_scale_bound={value!r}"
        )
    return float(value)


class _ScaleBounded:
    """What both top-down cells share about `log_scale_bound`: the scale map and the
    loading of configs saved before it existed (which had softplus scales)."""

    def _scale(self, raw):
        return cell_scale(raw, self.min_scale, self.log_scale_bound)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("log_scale_bound", None)  # saved before the bound: softplus
        return super().from_config(config)


def check_shape(name: str, value: object, rank: int | None = None) -> tuple[int, ...]:
    """`value` as a tuple of positive ints (of `rank` entries if given), else a one-line error."""
    shape = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if (
        shape is None
        or not shape
        or (rank is not None and len(shape) != rank)
        or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in shape)
    ):
        what = f"{rank} positive ints" if rank else "a non-empty list of positive ints"
        raise ValueError(f"{name} must be {what}. Received: {name}={value!r}")
    return tuple(int(d) for d in shape)


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class GatedDense(keras.layers.Layer):
    """A gated dense layer (Dauphin et al. 2017; the VampPrior paper's HVAE):

        h = activation(A x + a) * sigmoid(B x + b),  one `Dense(2 * units)` for both halves.

    Args:
        units: Output size.
        activation: Keras activation name of the value half.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, units: int, activation: str = "linear", **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.activation = _check_activation(activation)
        self._act = keras.activations.get(activation)
        self.dense = keras.layers.Dense(2 * self.units, name="dense", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        value, gate = tf.split(self.dense(x), 2, axis=-1)
        return self._act(value) * tf.sigmoid(gate)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "activation": self.activation})
        return config


def _dense_stack(units: Sequence[int], activation: str, prefix: str, gated: bool,
                 dtype) -> list:  # fmt: skip
    """The dense (or gated dense) layers of a block, in the dtype policy of their owner."""
    kind = GatedDense if gated else keras.layers.Dense
    return [kind(u, activation=activation, name=f"{prefix}_{i}", dtype=dtype)
            for i, u in enumerate(units)]  # fmt: skip


def _run(layers, h):
    for layer in layers:
        h = layer(h)
    return h


def _join(*tensors, dtype=None):
    """Concatenation on the last axis of the tensors that are not None (cast to `dtype`)."""
    present = [t for t in tensors if t is not None]
    if dtype is not None:  # (two steps: one comprehension with a conditional expression
        present = [tf.cast(t, dtype) for t in present]  # broke under AutoGraph)
    return present[0] if len(present) == 1 else tf.concat(present, axis=-1)


def float32_pair(layer, dense, features):
    """(loc, raw) of a cell's projection `dense` (`Dense(2 size)`) in float32 whatever the
    policy (`exact_projection`, as the likelihood heads use it), so that every scale map,
    z, log-density and KL downstream is float32 (`keras_vae.models.hvae.model`)."""
    return tf.split(exact_projection(dense, features, layer.compute_dtype), 2, axis=-1)


# ------------------------------------------------------------------------------------ MLP
@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class MLPBottomUp(keras.layers.Layer):
    """The deterministic bottom-up pass of an MLP hierarchy: x -> [d_1, ..., d_L].

        d_0 = flatten(x),  d_i = B_i(d_{i-1}),  B_i = activation(W_ik ... activation(W_i1 . + b))

    Args:
        hidden_units: One list of units per stochastic layer (block i maps d_{i-1} to d_i),
            for example `[[200, 200], [100, 100]]` (the IWAE paper's two-layer MNIST model).
            A block may be empty, d_i = d_{i-1}: `[[300, 300], []]` forms q(z_2|x) from the
            same two layers over x as q(z_1|.), as the VampPrior paper's HVAE does.
        activation: Keras activation name.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(
        self,
        hidden_units: Sequence[Sequence[int]],
        activation: str = "tanh",
        gated: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.gated = bool(gated)
        if not isinstance(hidden_units, Sequence) or not hidden_units:
            raise ValueError(
                "hidden_units must be one list of units per stochastic layer, such as "
                f"[[200, 200], [100, 100]]. Received: hidden_units={hidden_units!r}"
            )
        self.hidden_units = [
            list(_check_units("hidden_units", u, allow_empty=True)) for u in hidden_units
        ]
        self.activation = _check_activation(activation)
        self.blocks = [
            _dense_stack(units, activation, f"block_{i + 1}", self.gated, self.dtype_policy)
            for i, units in enumerate(self.hidden_units)
        ]

    def build(self, input_shape):
        size = math.prod(input_shape[1:])
        for block in self.blocks:
            for layer in block:
                layer.build((None, size))
                size = layer.units

    def call(self, x):
        h = tf.reshape(x, [tf.shape(x)[0], -1])
        features = []
        for block in self.blocks:
            h = _run(block, h)
            features.append(h)
        return features

    def get_config(self):
        config = super().get_config()
        config.update(
            {"hidden_units": self.hidden_units, "activation": self.activation, "gated": self.gated}
        )
        return config


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class MLPTopDownCell(_ScaleBounded, keras.layers.Layer):
    """One layer i < L of the top-down pass of an MLP hierarchy (see the module docstring):

        h_i = T_i([z_{i+1}, h_{i+1}])             dense layers `hidden_units` (none: the join)
        h_i = [T_i(u), u],  u = [z_{i+1}, h_{i+1}]  with `skip` (and some hidden units)
        [mu_i, s_i] = W_p h_i + b_p               the prior p(z_i | z_{>i})
        [dmu_i, t_i] = W_q Q'_i([h_i, d_i]) + b_q  the posterior's offsets (`posterior_units`)

    Args:
        latent_dim: Size of z_i.
        hidden_units: Dense layers of T_i (may be empty: h_i = [z_{i+1}, h_{i+1}]).
        posterior_units: Dense layers of Q'_i before its projection (may be empty).
        activation: Keras activation name.
        min_scale: Floor of sigma_i and dsigma_i when `log_scale_bound` is None.
        gated: `GatedDense` layers instead of `Dense` ones.
        log_scale_bound: b of the scales sigma_i, dsigma_i = exp(b tanh(s / b)) (module
            docstring); None: softplus(s + log(e - 1)) + min_scale.
        skip: Carry the cell's input u = [z_{i+1}, h_{i+1}] past T_i into h_i, so every
            z_{>i} reaches the prior, the posterior and (through h_1) the decoder one linear
            map away, as z_2 reaches p(x | z_1, z_2) in the VampPrior paper's HVAE; without
            it z_L sits behind every T_i of the stack (issue 30's two-layer diagnosis).
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(
        self,
        latent_dim: int,
        hidden_units: Sequence[int] = (100, 100),
        posterior_units: Sequence[int] = (),
        activation: str = "tanh",
        min_scale: float = 1e-4,
        gated: bool = False,
        log_scale_bound: float | None = LOG_SCALE_BOUND,
        skip: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.log_scale_bound = check_log_scale_bound(log_scale_bound)
        self.gated = bool(gated)
        self.skip = bool(skip)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.latent_shape = (self.latent_dim,)
        self.hidden_units = list(_check_units("hidden_units", hidden_units, allow_empty=True))
        self.posterior_units = list(
            _check_units("posterior_units", posterior_units, allow_empty=True)
        )
        self.activation = _check_activation(activation)
        self.min_scale = check_positive_float("min_scale", min_scale)
        policy = self.dtype_policy
        self.state_layers = _dense_stack(self.hidden_units, activation, "state", self.gated,
                                         policy)  # fmt: skip
        self.prior_projection = keras.layers.Dense(2 * self.latent_dim, name="prior",
                                                   dtype=policy)  # fmt: skip
        self.posterior_layers = _dense_stack(
            self.posterior_units, activation, "posterior", self.gated, policy
        )
        self.posterior_projection = keras.layers.Dense(2 * self.latent_dim, name="offsets",
                                                       dtype=policy)  # fmt: skip

    def build(self, input_shape):
        self.built = True  # the sub-layers build on the model's first pass

    def call(self, z_above, state=None):
        """h_i from z_{i+1} `[N, size_{i+1}]` and h_{i+1} (None at the top)."""
        inputs = _join(z_above, state, dtype=self.compute_dtype)
        h = _run(self.state_layers, inputs)
        return _join(h, inputs) if self.skip and self.state_layers else h

    @property
    def posterior_variables(self) -> list:
        """The variables of q alone (Q'_i and its projection), not shared with the prior."""
        layers = [*self.posterior_layers, self.posterior_projection]
        return [v for layer in layers for v in layer.trainable_variables]

    def prior_parameters(self, state):
        """(mu_i, sigma_i) of p(z_i | z_{>i}), each `[N, latent_dim]`, float32."""
        loc, raw = float32_pair(self, self.prior_projection, state)
        return loc, self._scale(raw)

    def posterior_offsets(self, state, features):
        """(dmu_i, dsigma_i) of q(z_i | z_{>i}, x) relative to the prior, `[N, latent_dim]`,
        float32."""
        h = _run(self.posterior_layers, _join(state, features, dtype=self.compute_dtype))
        loc, raw = float32_pair(self, self.posterior_projection, h)
        return loc, self._scale(raw)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "latent_dim": self.latent_dim,
                "hidden_units": self.hidden_units,
                "posterior_units": self.posterior_units,
                "activation": self.activation,
                "min_scale": self.min_scale,
                "gated": self.gated,
                "log_scale_bound": self.log_scale_bound,
                "skip": self.skip,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class TopDownMLPDecoder(keras.layers.Layer):
    """The generative end of an MLP hierarchy: features = D([z_1, h_1]) (z_1 alone for L = 1),
    dense layers `activation(W_k ... activation(W_1 [z_1, h_1] + b_1) ... + b_k)`; with L = 1
    it is `keras_vae.networks.MLP` (same weights, same output).

    h_1 carries z_{>1} to the likelihood (the VampPrior paper's p(x | z_1, z_2)); zero weights
    on it give the Markov chain x <- z_1 <- z_2 <- ... of the Ladder VAE.

    Args:
        hidden_units: Dense layers, for example `[200, 200]`.
        activation: Keras activation name.
        gated: `GatedDense` layers instead of `Dense` ones.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (200, 200),
        activation: str = "tanh",
        gated: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.gated = bool(gated)
        self.hidden_units = list(_check_units("hidden_units", hidden_units))
        self.activation = _check_activation(activation)
        self.dense_layers = _dense_stack(self.hidden_units, activation, "dense", self.gated,
                                         self.dtype_policy)  # fmt: skip

    def build(self, input_shape):
        self.built = True  # the sub-layers build on the model's first pass

    def call(self, z, state=None):
        return _run(self.dense_layers, _join(z, state, dtype=self.compute_dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            {"hidden_units": self.hidden_units, "activation": self.activation, "gated": self.gated}
        )
        return config


# ----------------------------------------------------------------------------------- conv
@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class ResidualCell(keras.layers.Layer):
    """A pre-activation residual cell: y = x + conv_2(act(conv_1(act(x)))), k x k 'same'
    convolutions with the channels of x; conv_2 starts at zero, so every cell starts as the
    identity (Fixup/ReZero-style), which keeps a deep top-down stack stable at the start.

    Args:
        kernel_size: Side of the square kernels.
        activation: Keras activation name.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, kernel_size: int = 3, activation: str = "elu", **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.activation = _check_activation(activation)
        self._act = keras.activations.get(activation)
        self.conv_1 = None
        self.conv_2 = None

    def build(self, input_shape):
        channels = input_shape[-1]
        k = self.kernel_size
        policy = self.dtype_policy
        self.conv_1 = keras.layers.Conv2D(channels, k, padding="same", name="conv_1",
                                          dtype=policy)  # fmt: skip
        self.conv_2 = keras.layers.Conv2D(
            channels, k, padding="same", kernel_initializer="zeros", name="conv_2", dtype=policy
        )
        self.conv_1.build(input_shape)
        self.conv_2.build(input_shape)

    def call(self, x):
        return x + self.conv_2(self._act(self.conv_1(self._act(x))))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "activation": self.activation})
        return config


def _conv(filters, kernel_size, name, strides=1, activation=None, transpose=False, dtype=None):
    kind = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    return kind(filters, kernel_size, strides=strides, padding="same", activation=activation,
                name=name, dtype=dtype)  # fmt: skip


def _upsample(layers, h, size):
    """Transposed stride-2 convolutions, then a crop to `size` (h, w)."""
    for layer in layers:
        h = layer(h)
    return h[:, : size[0], : size[1], :]


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class ConvBottomUp(keras.layers.Layer):
    """The deterministic bottom-up pass of a conv hierarchy: x `[N, H, W, C]` -> [d_1..d_L],
    d_i `[N, h_i, w_i, filters]`:

        e = act(conv(x));  d_i = R_i^blocks(act(conv_s2^{downsamples[i]}(d_{i-1}))),  d_0 = e

    with stride-2 'same' convolutions (h_i = ceil(h_{i-1} / 2) per level) and `ResidualCell`s
    R; layer i's latents live on the h_i x w_i grid.

    Args:
        downsamples: Stride-2 levels before each stochastic layer, for example `[2, 1]`
            (28x28 images: layer 1 at 7x7, layer 2 at 4x4); 0 keeps the resolution.
        filters: Channels of every feature map.
        blocks: Residual cells per layer.
        kernel_size: Side of the square kernels.
        activation: Keras activation name.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, downsamples, filters=32, blocks=1, kernel_size=3, activation="elu",
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        if (
            not isinstance(downsamples, Sequence)
            or not downsamples
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in downsamples)
        ):
            raise ValueError(
                "downsamples must be one int >= 0 per stochastic layer, such as [2, 1]. "
                f"Received: downsamples={downsamples!r}"
            )
        self.downsamples = [int(d) for d in downsamples]
        self.filters = check_positive_int("filters", filters)
        self.blocks = _nonnegative_int("blocks", blocks)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.activation = _check_activation(activation)
        policy = self.dtype_policy
        self.stem = _conv(filters, kernel_size, "stem", activation=activation, dtype=policy)
        self.levels = [
            [
                _conv(filters, kernel_size, f"down_{i + 1}_{j}", 2, activation, dtype=policy)
                for j in range(d)
            ]
            + [
                ResidualCell(kernel_size, activation, name=f"cell_{i + 1}_{j}", dtype=policy)
                for j in range(self.blocks)
            ]  # fmt: skip
            for i, d in enumerate(self.downsamples)
        ]

    def build(self, input_shape):
        self.built = True  # the sub-layers build on the model's first pass

    def call(self, x):
        h = self.stem(x)
        features = []
        for level in self.levels:
            h = _run(level, h)
            features.append(h)
        return features

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "downsamples": self.downsamples,
                "filters": self.filters,
                "blocks": self.blocks,
                "kernel_size": self.kernel_size,
                "activation": self.activation,
            }
        )
        return config


def _nonnegative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0. Received: {name}={value!r}")
    return value


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class ConvTopDownCell(_ScaleBounded, keras.layers.Layer):
    """One layer i < L of the top-down pass of a conv hierarchy (module docstring):

        h_i = R^blocks(crop(deconv_s2^levels(act(conv([z_{i+1}, h_{i+1}])))))   `[N, h, w, F]`
        [mu_i, s_i] = conv_p(h_i),  [dmu_i, t_i] = conv_q(act(conv([h_i, d_i])))

    z_{i+1} enters as its `[h', w', c']` map (`above_shape`); the prior and the offsets are
    per position and channel of z_i's `[h, w, c]` map (`latent_shape`), flattened.

    Args:
        latent_shape: `(h, w, c)` of z_i.
        above_shape: `(h', w', c')` of z_{i+1}; h' = ceil(h / 2^levels) for `levels` upsamplings.
        filters: Channels of h_i.
        blocks: Residual cells after the upsampling.
        kernel_size: Side of the square kernels.
        activation: Keras activation name.
        min_scale: Floor of sigma_i and dsigma_i when `log_scale_bound` is None.
        log_scale_bound: As `MLPTopDownCell`'s.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, latent_shape, above_shape, filters=32, blocks=1, kernel_size=3,
                 activation="elu", min_scale=1e-4, log_scale_bound=LOG_SCALE_BOUND,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.log_scale_bound = check_log_scale_bound(log_scale_bound)
        self.latent_shape = check_shape("latent_shape", latent_shape, 3)
        self.above_shape = check_shape("above_shape", above_shape, 3)
        self.latent_dim = math.prod(self.latent_shape)
        self.filters = check_positive_int("filters", filters)
        self.blocks = _nonnegative_int("blocks", blocks)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.activation = _check_activation(activation)
        self.min_scale = check_positive_float("min_scale", min_scale)
        levels = _levels_between(self.above_shape[:2], self.latent_shape[:2])
        k, c, policy = kernel_size, self.latent_shape[-1], self.dtype_policy
        self.entry = _conv(filters, k, "entry", activation=activation, dtype=policy)
        self.up = [_conv(filters, k, f"up_{j}", 2, activation, True, policy)
                   for j in range(levels)]  # fmt: skip
        self.cells = [ResidualCell(k, activation, name=f"cell_{j}", dtype=policy)
                      for j in range(self.blocks)]  # fmt: skip
        self.prior_projection = _conv(2 * c, k, "prior", dtype=policy)
        self.posterior_hidden = _conv(filters, k, "posterior", activation=activation,
                                      dtype=policy)  # fmt: skip
        self.posterior_projection = _conv(2 * c, k, "offsets", dtype=policy)

    def build(self, input_shape):
        self.built = True  # the sub-layers build on the model's first pass

    def call(self, z_above, state=None):
        z_map = tf.reshape(z_above, [-1, *self.above_shape])
        h = self.entry(_join(z_map, state, dtype=self.compute_dtype))
        return _run(self.cells, _upsample(self.up, h, self.latent_shape[:2]))

    def _flat_pair(self, raw):
        """(loc, scale) per position of the latent map, flat and float32 (the convolution's
        bias added in the compute dtype) before the scale map."""
        loc, scale = tf.split(tf.cast(raw, self.variable_dtype), 2, axis=-1)
        flat = lambda t: tf.reshape(t, [-1, self.latent_dim])  # noqa: E731
        return flat(loc), self._scale(flat(scale))

    @property
    def posterior_variables(self) -> list:
        """The variables of q alone (the offsets' convolutions), not shared with the prior."""
        layers = (self.posterior_hidden, self.posterior_projection)
        return [v for layer in layers for v in layer.trainable_variables]

    def prior_parameters(self, state):
        return self._flat_pair(self.prior_projection(state))

    def posterior_offsets(self, state, features):
        joined = _join(state, features, dtype=self.compute_dtype)
        return self._flat_pair(self.posterior_projection(self.posterior_hidden(joined)))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "latent_shape": list(self.latent_shape),
                "above_shape": list(self.above_shape),
                "filters": self.filters,
                "blocks": self.blocks,
                "kernel_size": self.kernel_size,
                "activation": self.activation,
                "min_scale": self.min_scale,
                "log_scale_bound": self.log_scale_bound,
            }
        )
        return config


def _levels_between(small, large) -> int:
    """Stride-2 levels from a `small` grid up to one at least `large` (0 when equal)."""
    levels = 0
    while any(s * 2**levels < big for s, big in zip(small, large, strict=True)):
        levels += 1
    return levels


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class TopDownConvDecoder(keras.layers.Layer):
    """The generative end of a conv hierarchy: z_1's `[h, w, c]` map and h_1 -> features
    `[N, H, W, filters]` that a likelihood head projects per pixel:

        f = act(conv(R^blocks(crop(deconv_s2^levels(act(conv([z_1, h_1])))))))

    Args:
        latent_shape: `(h, w, c)` of z_1.
        output_size: `(H, W)` of the images.
        filters: Channels of the feature maps.
        blocks: Residual cells at z_1's resolution.
        kernel_size: Side of the square kernels.
        activation: Keras activation name.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, latent_shape, output_size, filters=32, blocks=1, kernel_size=3,
                 activation="elu", **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.latent_shape = check_shape("latent_shape", latent_shape, 3)
        self.output_size = check_shape("output_size", output_size, 2)
        self.filters = check_positive_int("filters", filters)
        self.blocks = _nonnegative_int("blocks", blocks)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.activation = _check_activation(activation)
        levels = _levels_between(self.latent_shape[:2], self.output_size)
        k, policy = kernel_size, self.dtype_policy
        self.entry = _conv(filters, k, "entry", activation=activation, dtype=policy)
        self.cells = [ResidualCell(k, activation, name=f"cell_{j}", dtype=policy)
                      for j in range(self.blocks)]  # fmt: skip
        self.up = [_conv(filters, k, f"up_{j}", 2, activation, True, policy)
                   for j in range(levels)]  # fmt: skip
        self.exit = _conv(filters, k, "exit", activation=activation, dtype=policy)

    def build(self, input_shape):
        self.built = True  # the sub-layers build on the model's first pass

    def call(self, z, state=None):
        h = self.entry(_join(tf.reshape(z, [-1, *self.latent_shape]), state,
                             dtype=self.compute_dtype))  # fmt: skip
        return self.exit(_upsample(self.up, _run(self.cells, h), self.output_size))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "latent_shape": list(self.latent_shape),
                "output_size": list(self.output_size),
                "filters": self.filters,
                "blocks": self.blocks,
                "kernel_size": self.kernel_size,
                "activation": self.activation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class SpatialGaussianPosterior(Posterior):
    """q(z_L | x) over a `[h, w, c]` latent map, flattened: [mu, s] = conv(d_L) per position,
    sigma = softplus(s) + min_scale (as `DiagonalGaussianPosterior`, whose `distribution` and
    `reparameterize` it shares); `latent_dim` = h w c.

    Args:
        latent_shape: `(h, w, c)`; the features must be `[N, h, w, F]`.
        kernel_size: Side of the projection's square kernel.
        min_scale: Floor added to the standard deviation.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, latent_shape, kernel_size: int = 3, min_scale: float = 1e-4, **kwargs):
        self.latent_shape = check_shape("latent_shape", latent_shape, 3)
        kwargs.pop("latent_dim", None)  # from a saved config: it follows from latent_shape
        super().__init__(math.prod(self.latent_shape), min_scale, **kwargs)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.projection = _conv(2 * self.latent_shape[-1], kernel_size, "projection",
                                dtype=self.dtype_policy)  # fmt: skip

    distribution = staticmethod(DiagonalGaussianPosterior.distribution)
    reparameterize = staticmethod(DiagonalGaussianPosterior.reparameterize)

    def parameters(self, features):
        raw = tf.cast(self.projection(features), self.variable_dtype)  # softplus in float32
        loc, raw = tf.split(raw, 2, axis=-1)
        flat = lambda t: tf.reshape(t, [-1, self.latent_dim])  # noqa: E731
        return {"loc": flat(loc), "scale": tf.nn.softplus(flat(raw)) + self.min_scale}

    def get_config(self):
        config = super().get_config()
        config.update({"latent_shape": list(self.latent_shape), "kernel_size": self.kernel_size})
        return config
