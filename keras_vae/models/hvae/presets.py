"""Hierarchical VAEs from parts named in the registry: an MLP and a convolutional preset."""

from __future__ import annotations

from collections.abc import Sequence

from keras_vae import registry
from keras_vae.models import precision as precisions
from keras_vae.models.hvae.layers import (
    LOG_SCALE_BOUND,
    ConvBottomUp,
    ConvTopDownCell,
    MLPBottomUp,
    MLPTopDownCell,
    SpatialGaussianPosterior,
    TopDownConvDecoder,
    TopDownMLPDecoder,
    check_shape,
)
from keras_vae.models.hvae.model import HierarchicalVAE
from keras_vae.parts import objectives
from keras_vae.parts.networks import _halved


def _blocks(hidden_units, count: int) -> list[list[int]]:
    """`hidden_units` (one list for every layer, or one list per layer) as `count` lists."""
    if isinstance(hidden_units, int) and not isinstance(hidden_units, bool):
        hidden_units = [hidden_units]
    nested = isinstance(hidden_units, Sequence) and any(
        isinstance(u, Sequence) for u in hidden_units
    )
    blocks = [list(u) for u in hidden_units] if nested else [list(hidden_units)] * count
    if len(blocks) != count:
        raise ValueError(
            f"hidden_units needs one list per stochastic layer ({count}) or one list for all. "
            f"Received: hidden_units={hidden_units!r}"
        )
    return blocks


def _prior(prior, latent_dim, image_shape, components, seed):
    """p(z_L), float32 under every policy (its log-densities and the VampPrior's pseudo-inputs)."""
    count = {} if components is None else {"num_components": components}  # None: the prior's
    options = {
        "mixture": {**count, "seed": seed},
        "vamp": {"image_shape": image_shape, **count, "seed": seed},
    }.get(prior, {})
    return registry.get("prior", prior)(latent_dim, name="prior", dtype="float32", **options)


def _objective(objective, num_samples, beta):
    return objective or objectives.ELBO(num_samples=num_samples, beta=beta)


def mlp_hvae(
    image_shape: Sequence[int],
    latent_dims: Sequence[int] = (64, 32),
    hidden_units: Sequence[int] | Sequence[Sequence[int]] = (256, 256),
    likelihood: str = "bernoulli",
    activation: str = "elu",
    num_samples: int = 1,
    beta: float = 1.0,
    seed: int | None = None,
    name: str = "hvae",
    *,
    posterior_units: Sequence[int] = (),
    gated: bool = False,
    top_posterior: str = "diagonal",
    prior: str = "standard",
    prior_components: int | None = None,
    objective: objectives.Objective | None = None,
    likelihood_options: dict | None = None,
    free_bits_groups=None,
    log_scale_bound: float | None = LOG_SCALE_BOUND,
    state_units: Sequence[Sequence[int]] | None = None,
    skip: bool = False,
    precision: str | None = None,
) -> HierarchicalVAE:
    """A hierarchical VAE of MLPs for flat data (any shape, flattened).

    Block i (i = 1..L) holds the dense layers between stochastic layers i-1 and i (layer 0 is
    x): the bottom-up pass runs it forwards, the top-down pass (z_i to h_{i-1}, and the decoder
    for i = 1) reversed. The IWAE paper's two-layer MNIST model: `mlp_hvae((28, 28, 1),
    latent_dims=(100, 50), hidden_units=[[200, 200], [100, 100]], activation="tanh")`.

    ELU is the default: on 10,000 binarized MNIST images (3 epochs, batch 100, Adam 1e-3) a
    784-[300, 300]-64-[150, 150]-32 model reached a validation ELBO of -138.8 nats with ELU,
    -155.3 with ReLU and -209.1 with tanh, whose two layers had collapsed (KL 1.5 and 0.9).

    Args:
        image_shape: Shape of one example, for example `(28, 28, 1)`.
        latent_dims: Size of each z_i, layer 1 (next to x) first; L = len(latent_dims).
        hidden_units: One list of units for every block, or one list per block.
        likelihood: A registered likelihood: `"bernoulli"`, `"gaussian"`, `"logistic"`.
        activation: Hidden activation (see above).
        num_samples, beta: Of the default ELBO objective (when `objective` is None).
        seed: Seed of the model's noise and of the priors' initial values.
        name: Model name.
        posterior_units: Dense layers of each posterior cell Q_i before its projection.
        gated: Gated dense layers, act(A h + a) * sigmoid(B h + b), everywhere (`GatedDense`;
            the VampPrior paper's HVAE, with `activation="linear"`).
        top_posterior: A registered posterior for q(z_L|x): `"diagonal"` or `"full"`.
        prior: A registered prior for z_L: `"standard"`, `"mixture"` or `"vamp"`.
        prior_components: K of the mixture and VampPrior; None: the prior's own default.
        objective: The objective; default `ELBO(num_samples, beta)`.
        likelihood_options: Extra arguments of the likelihood head.
        free_bits_groups: See `HierarchicalVAE` (None: per unit; 1: per layer).
        log_scale_bound: b of the top-down cells' scales, exp(b tanh(s / b)); None: softplus
            floored at 1e-4 (see `keras_vae.models.hvae.layers`, issue 30's blow-up).
        state_units: The dense layers T_i of each top-down cell (layer 1's first, L - 1
            lists); None: block i + 1 of `hidden_units` reversed.
        skip: Each cell's input carried past T_i (`MLPTopDownCell`'s `skip`).
        precision: `"float32"`, or a Keras mixed policy (`"mixed_bfloat16"`, `"mixed_float16"`
            with loss scaling) for the matmuls of the bottom-up blocks, the cells' T_i, Q'_i
            and projections, the decoder and the heads' projections, as `keras_vae.mlp_vae`'s.
            Variables stay float32, and so do the float32 islands: each cell's (mu_i, sigma_i)
            and (dmu_i, dsigma_i) (its projections' matmuls low, their biases and the scale
            map float32), z, q(z_L|x), the prior, every log-density, KL and bound. None:
            Keras' global dtype policy.

    Returns:
        An unbuilt `HierarchicalVAE`; it builds on first use or with `build((None, *shape))`.
    """
    image_shape = tuple(image_shape)
    body = {"dtype": precisions.resolve(precision)}  # bodies, cells, heads (outputs float32)
    dims = list(check_shape("latent_dims", latent_dims))
    blocks = _blocks(hidden_units, len(dims))
    cell = {"gated": gated, "log_scale_bound": log_scale_bound, **body}
    states = [b[::-1] for b in blocks[1:]] if state_units is None else [
        list(u) for u in state_units]  # fmt: skip
    if len(states) != len(dims) - 1:
        raise ValueError(
            f"state_units needs one list per top-down cell ({len(dims) - 1}, one fewer than "
            f"the stochastic layers). Received: state_units={state_units!r}"
        )
    cells = [
        MLPTopDownCell(
            dim, states[i], posterior_units, activation, skip=skip, **cell, name=f"cell_{i + 1}"
        )  # fmt: skip
        for i, dim in enumerate(dims[:-1])
    ]
    return HierarchicalVAE(
        bottom_up=MLPBottomUp(blocks, activation, gated, name="bottom_up", **body),
        cells=cells,
        top_posterior=registry.get("posterior", top_posterior)(
            dims[-1], name="top_posterior", **body
        ),
        decoder=TopDownMLPDecoder(blocks[0][::-1], activation, gated, name="decoder", **body),
        likelihood=registry.get("likelihood", likelihood)(
            image_shape, name="likelihood", **(likelihood_options or {}), **body
        ),
        prior=_prior(prior, dims[-1], image_shape, prior_components, seed),
        objective=_objective(objective, num_samples, beta),
        free_bits_groups=free_bits_groups,
        seed=seed,
        name=name,
        **body,  # the model's policy: compile() adds loss scaling under mixed_float16
    )


def conv_hvae(
    image_shape: Sequence[int],
    latent_channels: Sequence[int] = (8, 8),
    downsamples: Sequence[int] = (2, 1),
    filters: int = 32,
    blocks: int = 1,
    kernel_size: int = 3,
    likelihood: str = "bernoulli",
    activation: str = "elu",
    num_samples: int = 1,
    beta: float = 1.0,
    seed: int | None = None,
    name: str = "conv_hvae",
    *,
    prior: str = "standard",
    prior_components: int | None = None,
    objective: objectives.Objective | None = None,
    likelihood_options: dict | None = None,
    free_bits_groups=None,
    log_scale_bound: float | None = LOG_SCALE_BOUND,
    precision: str | None = None,
) -> HierarchicalVAE:
    """A hierarchical VAE of convolutional residual cells for `[H, W, C]` images.

    Layer i's latents are a `[h_i, w_i, latent_channels[i]]` map, h_i = ceil(H / 2^(sum of
    the first i downsamples)); for 28x28 images the defaults put z_1 on 7x7 and z_2 on 4x4.

    Args:
        image_shape: `(H, W, C)`.
        latent_channels: Channels of each z_i, layer 1 first; L = len(latent_channels).
        downsamples: Stride-2 levels before each stochastic layer (0 keeps the resolution).
        filters: Channels of every deterministic feature map.
        blocks: Residual cells per layer (bottom-up, top-down and the decoder).
        kernel_size: Side of the square kernels.
        likelihood, activation, num_samples, beta, seed, name, prior, prior_components,
            objective, likelihood_options, free_bits_groups, log_scale_bound, precision: As
            `mlp_hvae` (groups of channels here: each group spans every position of its
            layer; under a mixed policy the cells' and the top head's convolutions add their
            biases in the compute dtype, then cast to float32 before any scale map).

    Returns:
        An unbuilt `HierarchicalVAE`.
    """
    image_shape = check_shape("image_shape", tuple(image_shape), 3)
    body = {"dtype": precisions.resolve(precision)}
    channels = list(check_shape("latent_channels", latent_channels))
    if not isinstance(downsamples, Sequence) or len(downsamples) != len(channels):
        raise ValueError(
            f"downsamples needs one int per stochastic layer ({len(channels)}). "
            f"Received: downsamples={downsamples!r}"
        )
    sizes, size = [], image_shape[:2]
    for levels in downsamples:
        size = tuple(_halved(d, levels) for d in size)
        sizes.append(size)
    shapes = [(*s, c) for s, c in zip(sizes, channels, strict=True)]
    options = {"filters": filters, "blocks": blocks, "kernel_size": kernel_size,
               "activation": activation, **body}  # fmt: skip
    cell = {**options, "log_scale_bound": log_scale_bound}
    cells = [
        ConvTopDownCell(shapes[i], shapes[i + 1], name=f"cell_{i + 1}", **cell)
        for i in range(len(shapes) - 1)
    ]
    top_dim = shapes[-1][0] * shapes[-1][1] * shapes[-1][2]
    return HierarchicalVAE(
        bottom_up=ConvBottomUp(list(downsamples), name="bottom_up", **options),
        cells=cells,
        top_posterior=SpatialGaussianPosterior(
            shapes[-1], kernel_size, name="top_posterior", **body
        ),
        decoder=TopDownConvDecoder(shapes[0], image_shape[:2], name="decoder", **options),
        likelihood=registry.get("likelihood", likelihood)(
            image_shape, name="likelihood", **(likelihood_options or {}), **body
        ),
        prior=_prior(prior, top_dim, image_shape, prior_components, seed),
        objective=_objective(objective, num_samples, beta),
        free_bits_groups=free_bits_groups,
        seed=seed,
        name=name,
        **body,
    )
