"""VQ-VAE (van den Oord et al. 2017): a grid of discrete codes, a sibling of `VAE`.

    z_e = encoder(x)                     [B, h, w, D], h = ceil(H / 2^L), w = ceil(W / 2^L)
    k   = argmin_j ||z_e - e_j||^2       [B, h, w]  (the codes; 7 x 7 for 28 x 28 images)
    z_q = e_k,  decoded straight-through: p(x | z_e + sg(z_q - z_e))

    loss(x) = -log p(x|z_q) + beta ||z_e - sg(z_q)||^2 (+ ||sg(z_e) - z_q||^2 without EMA)

`VQVAE` shares `keras_vae.engine.trainer.ExactReplicaTrainer` with `VAE` (MirroredStrategy, multi-
worker, XLA, batch shares); it needs no noise. After each optimizer step it updates the
codebook (`VectorQuantizer.update`: EMA and dead-code restarts from statistics all-reduced
over the replicas). Metrics: `reconstruction` (-log p(x|z_q), nats per example),
`commitment` (squared distance, per example), `codebook` (with `codebook_update="loss"`),
`perplexity` (exp of the entropy of the codes' frequencies over the epoch: the effective
number of codes) and `usage` (fraction of the K codes used in the epoch).

The bodies are the "conv" family's (`keras_vae.parts.networks`) kept spatial: `GridEncoder` is a
`ConvEncoder` without the flatten and with a linear 1x1 projection to D channels;
`GridDecoder` is a `ConvDecoder` whose first layer is a 1x1 convolution of the code grid
instead of a dense layer of a flat z. A likelihood head (`keras_vae.parts.likelihoods`:
Bernoulli for binary images, the discretised logistic for 8-bit ones) projects each pixel's
features.

A learned prior over the codes (`keras_vae.models.vqvae.code_prior.CodePrior`) turns it into a
generative model with a bound on log p(x).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_vae import registry
from keras_vae._internal.checks import check_positive_int
from keras_vae.engine.trainer import ExactReplicaTrainer
from keras_vae.parts.networks import ConvDecoder, ConvEncoder, _collapse_leading, _restore_leading
from keras_vae.parts.quantizers import CodebookUsage, VectorQuantizer


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class GridEncoder(ConvEncoder):
    """`ConvEncoder` that keeps the grid: images `[..., H, W, C]` -> `[..., h, w, code_dim]`.

        h_l = activation(conv_l(h_{l-1})) (k x k, stride 2),  z_e = V h_L + b  (1x1, linear)

    Args:
        filters: Channels of each stride-2 level, for example `[32, 64]` (7 x 7 for 28 x 28).
        code_dim: D, the channels of z_e (the codes' size).
        kernel_size, activation: As in `ConvEncoder`.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, filters=(32, 64), code_dim: int = 16, kernel_size: int = 3,
                 activation: str = "relu", **kwargs):  # fmt: skip
        kwargs.pop("hidden_units", None)  # a grid encoder has no dense layers
        super().__init__(filters, (), kernel_size=kernel_size, activation=activation, **kwargs)
        self.code_dim = check_positive_int("code_dim", code_dim)
        self.projection = keras.layers.Dense(self.code_dim, name="projection")

    def build(self, input_shape):
        super().build(input_shape)
        self.projection.build((None, *self.grid_shape(input_shape), self.filters[-1]))

    def grid_shape(self, input_shape) -> tuple[int, int]:
        """(h, w) of the code grid for images of `input_shape`."""
        height, width, _ = self._image_shape(input_shape)
        levels = len(self.filters)
        return -(-height // 2**levels), -(-width // 2**levels)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-3]) + (*self.grid_shape(input_shape), self.code_dim)

    def call(self, inputs):
        h, leading = _collapse_leading(inputs, 3)
        for layer in self.conv_layers:
            h = layer(h)
        return _restore_leading(self.projection(h), leading, 3)

    def get_config(self):
        config = super().get_config()
        config.pop("hidden_units")
        config["code_dim"] = self.code_dim
        return config


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class GridDecoder(ConvDecoder):
    """`ConvDecoder` on a code grid: `[..., h, w, D]` -> features `[..., H, W, filters[-1]]`.

        h_0 = activation(W z_q + c)  (1x1),  h_l = activation(conv_transpose_l(h_{l-1})),
        features = h_L[:H, :W]

    Args:
        output_size: `(H, W)` of the images; the grid is `(ceil(H / 2^L), ceil(W / 2^L))`.
        filters: Channels per level, coarse to fine, for example `[64, 32]`.
        kernel_size, activation: As in `ConvDecoder`.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, output_size: Sequence[int], filters=(64, 32), kernel_size: int = 3,
                 activation: str = "relu", **kwargs):  # fmt: skip
        kwargs.pop("hidden_units", None)
        super().__init__(output_size, filters, (), kernel_size=kernel_size,
                         activation=activation, **kwargs)  # fmt: skip
        self.base_layer = keras.layers.Dense(self.filters[0], activation=activation, name="base")

    def build(self, input_shape):
        grid = tuple(input_shape[-3:-1])
        if len(input_shape) < 4 or grid != self.base_size or input_shape[-1] is None:
            raise ValueError(
                f"GridDecoder needs codes [..., {self.base_size[0]}, {self.base_size[1]}, D] "
                f"for output_size={self.output_size}. Received: input_shape={tuple(input_shape)}"
            )
        self.base_layer.build((None, *grid, input_shape[-1]))
        (height, width), channels = self.base_size, self.filters[0]
        for level, layer in enumerate(self.deconv_layers):
            layer.build((None, height * 2**level, width * 2**level, channels))
            channels = layer.filters

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-3]) + (*self.output_size, self.filters[-1])

    def call(self, inputs):
        h, leading = _collapse_leading(inputs, 3)
        h = self.base_layer(h)
        for layer in self.deconv_layers:
            h = layer(h)
        height, width = self.output_size
        return _restore_leading(h[:, :height, :width, :], leading, 3)

    def get_config(self):
        config = super().get_config()
        config.pop("hidden_units")
        return config


def grid_pair(image_shape, code_dim: int, filters=(32, 64), kernel_size: int = 3,
              activation: str = "relu") -> tuple[GridEncoder, GridDecoder]:  # fmt: skip
    """A `GridEncoder` and the mirror `GridDecoder` (filters reversed) for `image_shape`."""
    image_shape = tuple(image_shape)
    if len(image_shape) != 3:
        raise ValueError(
            f"A VQ-VAE needs images [height, width, channels]. Received: image_shape={image_shape}"
        )
    filters = tuple(filters) if not isinstance(filters, int) else (filters,)
    encoder = GridEncoder(filters, code_dim, kernel_size, activation, name="encoder")
    decoder = GridDecoder(image_shape[:2], filters[::-1], kernel_size, activation, name="decoder")
    return encoder, decoder


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class VQVAE(ExactReplicaTrainer):
    """Vector-quantised autoencoder trained with `fit`; see the module docstring.

    Args:
        encoder: Body mapping x `[B, H, W, C]` to z_e `[B, h, w, D]` (`GridEncoder`).
        quantizer: A `VectorQuantizer` with `code_dim` D.
        decoder: Body mapping z_q `[..., h, w, D]` to features (`GridDecoder`).
        likelihood: Head mapping features to p(x|z_q) (`keras_vae.parts.likelihoods`).
        commitment_weight: beta, the weight of the commitment loss (0.25 in the paper).
        seed: Seed of the model's randomness (dead-code restarts).
        **kwargs: Standard `keras.Model` arguments (`name`).

    Example:
        >>> from keras_vae.models.vqvae.model import vqvae
        >>> model = vqvae((28, 28, 1), codebook_size=128, code_dim=16)
        >>> model.compile(keras.optimizers.Adam(1e-3))
        >>> model.fit(train_images, epochs=5, batch_size=128)
        >>> codes = model.encode(x)                       # int32 [B, 7, 7]
        >>> images = model.decode_codes(codes).mean()
    """

    _PARTS = ("encoder", "quantizer", "decoder", "likelihood")

    def __init__(self, encoder, quantizer, decoder, likelihood, commitment_weight: float = 0.25,
                 seed: int | None = None, **kwargs):  # fmt: skip
        if not isinstance(quantizer, VectorQuantizer):
            raise ValueError(f"quantizer must be a VectorQuantizer. Received: {quantizer!r}")
        weight = commitment_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(
                f"commitment_weight must be a float >= 0. Received: commitment_weight={weight!r}"
            )
        names = ("reconstruction", "commitment") + (() if quantizer.ema else ("codebook",))
        super().__init__(metric_names=names, seed=seed, **kwargs)
        self.encoder, self.quantizer = encoder, quantizer
        self.decoder, self.likelihood = decoder, likelihood
        self.commitment_weight = float(weight)
        size = quantizer.codebook_size
        self.code_metrics = [CodebookUsage(size, "perplexity"), CodebookUsage(size, "usage")]
        # Keras' loop, not one XLA computation per k steps: XLA's CPU convolutions inside its
        # while loop ran 8 s per step against 0.3 s one step at a time (batch 128, 28x28)
        self.fuse_steps = False

    # ------------------------------------------------------------------------ shapes
    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.likelihood.event_shape)

    @property
    def code_shape(self) -> tuple[int, int]:
        """(h, w) of the code grid."""
        return self.encoder.grid_shape((None, *self.image_shape))

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def code_dim(self) -> int:
        return self.quantizer.code_dim

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if tuple(input_shape[1:]) != self.image_shape:
            raise ValueError(
                f"The model expects examples of shape {self.image_shape} (its likelihood's "
                f"event_shape). Received: input_shape={input_shape}"
            )
        grid = (None, *self.code_shape, self.code_dim)
        features = self.decoder.compute_output_shape(grid)
        for layer, shape in ((self.encoder, input_shape), (self.quantizer, grid),
                             (self.decoder, grid), (self.likelihood, features)):  # fmt: skip
            if not layer.built:
                layer.build(shape)
        self.built = True

    # ------------------------------------------------------------------------ the model
    def _ensure_built(self) -> None:
        if not self.built:
            self.build((None, *self.image_shape))

    def encode_latents(self, x: tf.Tensor) -> tf.Tensor:
        """z_e, the encoder's continuous outputs `[B, h, w, D]`."""
        self._ensure_built()
        return self.encoder(x)

    def encode(self, x: tf.Tensor) -> tf.Tensor:
        """The codes of x: int32 `[B, h, w]`."""
        return self.quantizer.codes(self.encode_latents(x))

    def quantized_latents(self, x: tf.Tensor) -> tf.Tensor:
        """z_q, the quantised latents of x `[B, h, w, D]`."""
        return self.quantizer.lookup(self.encode(x))

    def decode(self, z_q: tf.Tensor):
        """p(x|z_q) for latents `[..., h, w, D]`, event shape `image_shape`."""
        self._ensure_built()
        return self.likelihood(self.decoder(z_q))

    def decode_codes(self, codes: tf.Tensor):
        """p(x|z_q) for int codes `[..., h, w]`."""
        self._ensure_built()
        return self.decode(self.quantizer.lookup(codes))

    def call(self, inputs, training=None):
        """E[x|z_q(x)], the reconstruction `[B, *image_shape]`."""
        return self.decode(self.quantized_latents(inputs)).mean()

    def reconstruct(self, x: tf.Tensor) -> tf.Tensor:
        return self(x)

    def reconstruction_log_prob(self, x: tf.Tensor) -> tf.Tensor:
        """log p(x|z_q(x)) in nats, `[B]`."""
        return self.decode(self.quantized_latents(x)).log_prob(x)

    # ------------------------------------------------------------ the trainer's hooks
    def noise_shape(self) -> tuple[int, int]:
        return 1, 1  # deterministic: the trainer's noise is not used

    def compute_objective(self, x, noise, step):
        """`(mean loss, terms)`: terms per example, plus `codes` and `latents` (z_e), which
        the training step's codebook update and the usage metrics read."""
        del noise, step
        if not self.built:
            self.build(x.shape)
        z_e = self.encode_latents(x)
        z_st, codes = self.quantizer(z_e)
        z_q = self.quantizer.lookup(codes)
        reconstruction = -self.decode(z_st).log_prob(x)
        commitment, codebook = self.quantizer.losses_per_example(z_e, z_q)
        per_example = reconstruction + self.commitment_weight * commitment
        terms = {"reconstruction": reconstruction, "commitment": commitment,
                 "codes": codes, "latents": z_e}  # fmt: skip
        if not self.quantizer.ema:
            per_example += codebook
            terms["codebook"] = codebook
        return tf.reduce_mean(per_example), terms

    def after_update(self, terms, seed, position):
        """The codebook update from the step's codes, all-reduced over the replicas."""
        restart_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        self.quantizer.update(terms["latents"], terms["codes"], restart_seed, *position)

    def _update_metrics(self, loss, terms: dict) -> dict:
        for metric in self.code_metrics:
            metric.update_state(terms["codes"])
        return super()._update_metrics(loss, terms)

    def predict_step(self, data):
        return self(self._unpack(data), training=False)

    @property
    def metrics(self):
        return [*self.trackers, *self.code_metrics]

    # ------------------------------------------------------------------- serialization
    def get_config(self):
        return {**super().get_config(), "commitment_weight": self.commitment_weight}


def vqvae(
    image_shape: Sequence[int],
    codebook_size: int = 256,
    code_dim: int = 16,
    *,
    filters: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    activation: str = "tanh",
    likelihood: str = "bernoulli",
    likelihood_options: dict | None = None,
    commitment_weight: float = 0.25,
    codebook_update: str = "ema",
    decay: float = 0.99,
    restart_threshold: float = 0.1,
    seed: int | None = None,
    name: str = "vqvae",
) -> VQVAE:
    """A VQ-VAE with grid conv bodies, a registered likelihood and a `VectorQuantizer`.

    The defaults are `keras-vae train --model vqvae`'s (`TrainConfig`): 256 codes of 16
    dimensions, tanh, conv levels of 32 and 64 channels.

    Binarized MNIST: `vqvae((28, 28, 1), 512, 64)` (7 x 7 codes, Bernoulli); 8-bit colour
    images: `vqvae((32, 32, 3), 512, 64, likelihood="logistic", filters=[64, 128])` (8 x 8).

    Args:
        image_shape: `(H, W, C)`.
        codebook_size: K.
        code_dim: D.
        filters: Channels of the encoder's stride-2 levels (reversed in the decoder); L levels
            give a ceil(H / 2^L) x ceil(W / 2^L) grid.
        kernel_size, activation: Of the convolutions.
        likelihood: A registered likelihood: `"bernoulli"`, `"gaussian"`, `"logistic"`.
        likelihood_options: Extra arguments of the likelihood head.
        commitment_weight: beta.
        codebook_update: `"ema"` or `"loss"` (see `VectorQuantizer`).
        decay: Of the EMA codebook and usage counts.
        restart_threshold: Dead-code restart threshold (assignments per step); 0 is off.
        seed: Seed of the codebook's initial values and of the restarts.
        name: Model name.
    """
    encoder, decoder = grid_pair(image_shape, code_dim, filters, kernel_size, activation)
    head = registry.get("likelihood", likelihood)
    quantizer = VectorQuantizer(codebook_size, code_dim, codebook_update=codebook_update,
                                decay=decay, restart_threshold=restart_threshold, seed=seed,
                                name="quantizer")  # fmt: skip
    return VQVAE(
        encoder=encoder,
        quantizer=quantizer,
        decoder=decoder,
        likelihood=head(tuple(image_shape), name="likelihood", **(likelihood_options or {})),
        commitment_weight=commitment_weight,
        seed=seed,
        name=name,
    )
