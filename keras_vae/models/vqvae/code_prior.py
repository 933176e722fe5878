"""A learned prior over a VQ-VAE's code grid: a gated PixelCNN (van den Oord et al. 2016).

The prior factorises the h x w grid of codes in raster order,

    p(z) = prod_{t=1}^{h w} p(z_t | z_<t),   p(z_t | z_<t) = softmax(f_t(z_<t)),

with f a gated PixelCNN: a vertical stack (k//2 + 1) x k convolutions over the rows above and a
horizontal stack 1 x (k//2 + 1) convolutions over the pixels to the left, which together see
every earlier position (no blind spot). Each layer computes tanh(W_f * u) . sigmoid(W_g * u);
the vertical stack feeds the horizontal one shifted down by a row, the first horizontal layer
sees its inputs shifted right by a position (mask "A"), later ones include their own
position (mask "B"). Shifts are pads and crops, so the graph holds only Conv2D, Pad and
elementwise ops (TFLite builtins).

`CodePrior` is trained with `fit` on *images*: it holds the trained `VQVAE` (frozen) and
encodes each batch to codes, so the data pipeline is the VQ-VAE's. `sample(n)` draws codes by
ancestral sampling (h w passes of the network; Gumbel-max draws), and `sample_images` decodes
them.

A bound on log p(x). With the deterministic encoder q(z|x) = 1[z = z(x)] (one-hot at x's
codes), the ELBO is

    log p(x) >= E_q[log p(x|z)] - KL(q || p) = log p(x | z_q(x)) + log p_prior(z(x)),

since KL(q || p) = sum_z q(z) log(q(z) / p(z)) = -log p_prior(z(x)) (q has entropy 0); it is
also log p(x) = log sum_z p(z) p(x|z) >= log of the sum's term z = z(x). So

    -log p(x) <= -log p(x | z_q(x)) - log p_prior(z(x))        (`bound`, nats)

which compares with a VAE's negative ELBO or importance-weighted bound on the same data;
bits/dim divide it by H W C log 2. Metrics when training: `code_nll` (-log p_prior(z(x)),
nats per image) and `bound` (the right-hand side, nats per image).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_vae import registry
from keras_vae._internal.checks import check_positive_int
from keras_vae.engine.trainer import ExactReplicaTrainer
from keras_vae.metrics.latent import bits_per_dim
from keras_vae.models.vqvae.model import VQVAE


def _shift_down(t: tf.Tensor) -> tf.Tensor:
    """Row i gets row i - 1 (zeros in row 0): `[B, h, w, C]`."""
    return tf.pad(t, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]


def _shift_right(t: tf.Tensor) -> tf.Tensor:
    """Column j gets column j - 1 (zeros in column 0)."""
    return tf.pad(t, [[0, 0], [0, 0], [1, 0], [0, 0]])[:, :, :-1]


def _gate(t: tf.Tensor) -> tf.Tensor:
    value, gate = tf.split(t, 2, axis=-1)
    return tf.tanh(value) * tf.sigmoid(gate)


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class GatedPixelCNN(keras.layers.Layer):
    """Gated PixelCNN over int codes `[B, h, w]` -> logits `[B, h, w, K]`; see the module.

    Args:
        num_classes: K, the codebook size.
        channels: C, features per position in each stack.
        num_layers: Gated layers (the first is the masked "A" layer).
        kernel_size: k, odd; the vertical kernels are (k//2 + 1) x k, the horizontal 1 x
            (k//2 + 1).
        hidden_units: Units of the 1x1 ReLU layer before the logits.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, num_classes: int, channels: int = 64, num_layers: int = 6,
                 kernel_size: int = 3, hidden_units: int = 128, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.channels = check_positive_int("channels", channels)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd. Received: kernel_size={kernel_size}")
        self.hidden_units = check_positive_int("hidden_units", hidden_units)
        half, c = self.kernel_size // 2, self.channels
        self.embedding = keras.layers.Embedding(self.num_classes, c, name="embedding")
        conv = keras.layers.Conv2D
        self.vertical = [conv(2 * c, (half + 1, self.kernel_size), name=f"vertical_{i}")
                         for i in range(self.num_layers)]  # fmt: skip
        self.horizontal = [conv(2 * c, (1, half + 1), name=f"horizontal_{i}")
                           for i in range(self.num_layers)]  # fmt: skip
        self.link = [conv(2 * c, 1, name=f"link_{i}") for i in range(self.num_layers)]
        self.residual = [conv(c, 1, name=f"residual_{i}") for i in range(self.num_layers)]
        self.hidden = conv(self.hidden_units, 1, activation="relu", name="hidden")
        self.logits = conv(self.num_classes, 1, name="logits")

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        half, c = self.kernel_size // 2, self.channels
        self.embedding.build(input_shape)
        for i in range(self.num_layers):
            self.vertical[i].build((None, h + half, w + 2 * half, c))
            self.horizontal[i].build((None, h, w + half, c))
            self.link[i].build((None, h, w, 2 * c))
            self.residual[i].build((None, h, w, c))
        self.hidden.build((None, h, w, c))
        self.logits.build((None, h, w, self.hidden_units))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.num_classes,)

    def call(self, codes):
        half = self.kernel_size // 2
        x = self.embedding(tf.cast(codes, tf.int32))
        v, h = x, _shift_right(x)  # mask A: the first horizontal layer skips its own position
        for i in range(self.num_layers):
            v_pre = self.vertical[i](tf.pad(v, [[0, 0], [half, 0], [half, half], [0, 0]]))
            h_pre = self.horizontal[i](tf.pad(h, [[0, 0], [0, 0], [half, 0], [0, 0]]))
            h_pre += self.link[i](_shift_down(v_pre))  # rows above only
            v = _gate(v_pre)
            gated = self.residual[i](_gate(h_pre))
            h = gated if i == 0 else h + gated
        return self.logits(self.hidden(tf.nn.relu(h)))

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "channels": self.channels,
                       "num_layers": self.num_layers, "kernel_size": self.kernel_size,
                       "hidden_units": self.hidden_units})  # fmt: skip
        return config


def gumbel_max(logits: tf.Tensor, uniform: tf.Tensor) -> tf.Tensor:
    """argmax_k (logits_k - log(-log u_k)), u ~ U(0, 1): a draw from softmax(logits), int32."""
    return tf.argmax(logits - tf.math.log(-tf.math.log(uniform)), axis=-1, output_type=tf.int32)


def ancestral_sample(logits_fn, num_samples, grid_shape, uniform_fn) -> tf.Tensor:
    """Codes `[n, h, w]` drawn position by position in raster order (a `tf.while_loop`).

    Args:
        logits_fn: Codes `[n, h, w]` int32 -> logits `[n, h, w, K]`.
        num_samples: n (an int or a scalar int32 tensor).
        grid_shape: (h, w).
        uniform_fn: `(shape, t) -> U(0, 1)` draws for step t (tf.random or stateless ops).
    """
    h, w = grid_shape
    codes = tf.zeros(tf.stack([num_samples, h, w]), tf.int32)
    positions = tf.reshape(tf.range(h * w), [1, h, w])

    def body(t, codes):
        logits = logits_fn(codes)
        draw = gumbel_max(logits, uniform_fn(tf.shape(logits), t))
        return t + 1, tf.where(tf.equal(positions, t), draw, codes)

    _, codes = tf.while_loop(lambda t, codes: t < h * w, body, [tf.constant(0), codes])
    return codes


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class CodePrior(ExactReplicaTrainer):
    """A gated PixelCNN prior over the codes of a trained, frozen `VQVAE`; see the module.

    Args:
        vqvae: The trained `VQVAE` (frozen: `trainable` is set to False).
        network: A `GatedPixelCNN` with `num_classes` = the codebook size; default one with
            the defaults of `GatedPixelCNN`.
        seed: Seed of `sample` when no seed is given.
        **kwargs: Standard `keras.Model` arguments.

    Example:
        >>> prior = CodePrior(trained_vqvae)
        >>> prior.compile(keras.optimizers.Adam(1e-3))
        >>> prior.fit(train_images, epochs=10, batch_size=128)
        >>> images, codes = prior.sample_images(16)
        >>> prior.bits_per_dim(test_images)      # the bound on -log2 p(x) per dimension
    """

    _PARTS = ("vqvae", "network")

    def __init__(self, vqvae: VQVAE, network: GatedPixelCNN | None = None,
                 seed: int | None = None, **kwargs):  # fmt: skip
        if not isinstance(vqvae, VQVAE):
            raise ValueError(f"vqvae must be a trained keras_vae VQVAE. Received: {vqvae!r}")
        network = network or GatedPixelCNN(vqvae.codebook_size, name="pixelcnn")
        if network.num_classes != vqvae.codebook_size:
            raise ValueError(
                f"The network predicts {network.num_classes} classes but the VQ-VAE has "
                f"{vqvae.codebook_size} codes; give GatedPixelCNN(num_classes="
                f"{vqvae.codebook_size})."
            )
        super().__init__(metric_names=("code_nll", "bound"), seed=seed, **kwargs)
        vqvae.trainable = False
        self.vqvae, self.network = vqvae, network
        # Keras' loop, not one XLA computation per k steps: XLA's CPU convolutions inside its
        # while loop ran 16 s per step against 0.5 s one step at a time (batch 128, 7x7 codes)
        self.fuse_steps = False

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.vqvae.image_shape

    @property
    def code_shape(self) -> tuple[int, int]:
        return self.vqvae.code_shape

    def build(self, input_shape=None):
        if not self.vqvae.built:
            self.vqvae.build((None, *self.image_shape))
        if not self.network.built:
            self.network.build((None, *self.code_shape))
        self.built = True

    @property
    def trainable_variables(self):
        """The network's only: the VQ-VAE is frozen (also a loaded one, whose layers Keras
        rebuilds with trainable weights whatever its `trainable` flag)."""
        return self.network.trainable_variables

    @property
    def trainable_weights(self):
        return self.trainable_variables

    # ------------------------------------------------------------------------ the model
    def log_prob(self, codes: tf.Tensor) -> tf.Tensor:
        """log p_prior(z) in nats for int codes `[B, h, w]`: `[B]`."""
        logits = self.network(codes)
        log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        one_hot = tf.one_hot(tf.cast(codes, tf.int32), self.network.num_classes)
        return tf.reduce_sum(one_hot * log_p, axis=[1, 2, 3])

    def bound_terms(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per example, nats: `code_nll` = -log p(z(x)), `reconstruction` = -log p(x|z_q(x))
        and `bound` = their sum >= -log p(x)."""
        codes = tf.stop_gradient(self.vqvae.encode(x))
        code_nll = -self.log_prob(codes)
        reconstruction = tf.stop_gradient(-self.vqvae.decode_codes(codes).log_prob(x))
        return {"code_nll": code_nll, "reconstruction": reconstruction,
                "bound": code_nll + reconstruction}  # fmt: skip

    def bits_per_dim(self, x, batch_size: int = 500) -> dict[str, float]:
        """Mean bound over `x` in nats and bits per dimension, and the codes' bits per code."""
        if not self.built:
            self.build()
        sums = {"code_nll": 0.0, "reconstruction": 0.0, "bound": 0.0}
        for start in range(0, len(x), batch_size):
            terms = self.bound_terms(tf.constant(x[start : start + batch_size]))
            for name in sums:
                sums[name] += float(tf.reduce_sum(terms[name]))
        means = {name: value / len(x) for name, value in sums.items()}
        dims = math.prod(self.image_shape)
        return {**{f"{k}_nats": v for k, v in means.items()},
                "bits_per_dim": bits_per_dim(means["bound"], dims),
                "code_bits_per_code": bits_per_dim(means["code_nll"],
                                                   math.prod(self.code_shape))}  # fmt: skip

    def sample(self, num_samples: int, seed: int | None = None) -> tf.Tensor:
        """Codes `[num_samples, h, w]` by ancestral sampling (seeded: reproducible)."""
        if not self.built:
            self.build()
        base = self._stateless_seed(seed)

        def uniform(shape, t):
            seed_t = tf.random.experimental.stateless_fold_in(base, t)
            return tf.random.stateless_uniform(shape, seed_t, minval=1e-7, maxval=1.0)

        return ancestral_sample(self.network, num_samples, self.code_shape, uniform)

    def sample_images(self, num_samples: int, seed: int | None = None):
        """`(images, codes)`: E[x|z_q] of codes drawn from the prior."""
        codes = self.sample(num_samples, seed)
        return self.vqvae.decode_codes(codes).mean(), codes

    def call(self, inputs, training=None):
        """Logits `[B, h, w, K]` of the codes of images `inputs`."""
        return self.network(self.vqvae.encode(inputs))

    # ------------------------------------------------------------ the trainer's hooks
    def noise_shape(self) -> tuple[int, int]:
        return 1, 1

    def compute_objective(self, x, noise, step):
        del noise, step
        if not self.built:
            self.build()
        terms = self.bound_terms(x)
        return tf.reduce_mean(terms["code_nll"]), terms


def code_prior(vqvae: VQVAE, channels: int = 64, num_layers: int = 6, kernel_size: int = 3,
               hidden_units: int = 128, seed: int | None = None,
               name: str = "code_prior") -> CodePrior:  # fmt: skip
    """A `CodePrior` with a `GatedPixelCNN` of the given size over `vqvae`'s codes."""
    network = GatedPixelCNN(vqvae.codebook_size, channels, num_layers, kernel_size,
                            hidden_units, name="pixelcnn")  # fmt: skip
    return CodePrior(vqvae, network, seed=seed, name=name)


def empirical_code_log_prob(codes: np.ndarray, codebook_size: int) -> float:
    """Mean nats per grid of an i.i.d. model of codes fitted to `codes` (a baseline for the
    PixelCNN: log p(z) = sum_t log freq(z_t), frequencies Laplace-smoothed)."""
    codes = np.asarray(codes).reshape(len(codes), -1)
    counts = np.bincount(codes.ravel(), minlength=codebook_size) + 1.0
    log_freq = np.log(counts / counts.sum())
    return float(log_freq[codes].sum(axis=1).mean())
