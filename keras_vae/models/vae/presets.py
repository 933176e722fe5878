"""The VAE kind's preset: `mlp_vae`, a VAE (or a conditional VAE) from registered parts.

`keras_vae.mlp_vae` is this function; the defaults are the AEVB paper's MNIST model and
those of `keras-vae train` (`TrainConfig`).
"""

from __future__ import annotations

from collections.abc import Sequence

from keras_vae import registry
from keras_vae.models import precision as precisions
from keras_vae.models.vae import conditional
from keras_vae.models.vae.model import VAE
from keras_vae.parts import objectives

#: `mlp_vae(precision=...)` and `keras-vae train --precision` (`keras_vae.models.precision`).
PRECISIONS = precisions.PRECISIONS


def mlp_vae(
    image_shape: Sequence[int],
    latent_dim: int = 20,
    hidden_units: Sequence[int] | int = 500,
    likelihood: str = "bernoulli",
    activation: str = "tanh",
    num_samples: int = 1,
    beta: float = 1.0,
    seed: int | None = None,
    name: str = "vae",
    *,
    posterior: str = "diagonal",
    prior: str = "standard",
    prior_components: int | None = None,
    objective: objectives.Objective | None = None,
    likelihood_options: dict | None = None,
    network: str = "mlp",
    network_options: dict | None = None,
    condition_dim: int | None = None,
    precision: str | None = None,
) -> VAE:
    """A VAE from parts named in the registry; the defaults are the AEVB paper's MLP model.

    Paper settings: MNIST `mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500)` with a
    Bernoulli decoder; Frey Face `mlp_vae((28, 20, 1), latent_dim=..., hidden_units=200,
    likelihood="gaussian")`. A convolutional VAE for colour images:
    `mlp_vae((32, 32, 3), hidden_units=[256], activation="relu", likelihood="logistic",
    network="conv", network_options={"filters": [32, 64]})`.

    Args:
        image_shape: Shape of one example, for example `(28, 28, 1)`.
        latent_dim: Size of z.
        hidden_units: Hidden layer sizes of encoder and decoder (an int is one layer); for
            `network="conv"` the dense layers after the encoder's convolutions and before the
            decoder's (may be empty).
        likelihood: A registered likelihood: `"bernoulli"`, `"gaussian"`, `"logistic"`.
        activation: Hidden activation; the paper uses tanh.
        num_samples, beta: Of the default ELBO objective (when `objective` is None).
        seed: Seed of the model's noise and of the priors' initial values.
        name: Model name.
        posterior: A registered posterior: `"diagonal"` or `"full"`.
        prior: A registered prior: `"standard"`, `"mixture"` or `"vamp"`.
        prior_components: K of the mixture and VampPrior; None: the prior's own default
            (10 components for `mixture`, 500 pseudo-inputs for `vamp`, as `keras-vae train`).
        objective: The objective; default `ELBO(num_samples, beta)`.
        likelihood_options: Extra arguments of the likelihood head.
        network: A registered network family (`keras_vae.parts.networks`): `"mlp"`, `"gated_mlp"`
            (Dauphin et al. 2017) or `"conv"` (strided convolutions; any `[H, W, C]` images).
        network_options: Extra arguments of the family's `pair`; for `"conv"`: `filters`
            (channels per level of the encoder, reversed in the decoder; default `[32, 64]`)
            and `kernel_size` (default 3).
        condition_dim: C: a conditional VAE (`keras_vae.ConditionalVAE`) given
            y of size C with every example (C classes for int labels); None: a plain VAE.
            `prior="conditional"` then learns p(z|y) (`ConditionalGaussianPrior`).
        precision: `"float32"`, or a Keras mixed policy for the encoder and decoder bodies
            and the heads' projections: `"mixed_bfloat16"` (CPUs with bfloat16 units, TPUs;
            on CPUs the model then trains without XLA, whose CPU dots do not reach AMX) or
            `"mixed_float16"` (GPUs; the model's policy makes `compile` wrap the optimizer in
            Keras' `LossScaleOptimizer`, and the trainer scales the loss). Variables stay
            float32; the heads cast their outputs to float32 before any softplus or exp, and
            the prior, every log-density, KL, bound and metric are float32 (`PRECISIONS`).
            None: Keras' global dtype policy (`keras.config.dtype_policy()`, float32 unless
            set with `keras.mixed_precision.set_global_policy`).

    Returns:
        An unbuilt `VAE` (a `ConditionalVAE` with `condition_dim`); it builds on first use or
        with `vae.build((None, *image_shape))`.
    """
    image_shape = tuple(image_shape)
    policy = precisions.resolve(precision)
    body = {"dtype": policy}  # bodies and heads' projections (heads output float32)
    exact = {"dtype": "float32"}  # the prior: log-densities in float32
    components = {} if prior_components is None else {"num_components": prior_components}
    prior_options = {
        "standard": {},
        "mixture": {**components, "seed": seed},
        "vamp": {"image_shape": image_shape, **components, "seed": seed},
    }.get(prior, {})
    head = registry.get("likelihood", likelihood)
    encoder, decoder = registry.get("network", network).pair(
        image_shape, hidden_units, activation=activation, **(network_options or {}), **body
    )
    parts = dict(
        encoder=encoder,
        posterior=registry.get("posterior", posterior)(latent_dim, name="posterior", **body),
        decoder=decoder,
        likelihood=head(image_shape, name="likelihood", **(likelihood_options or {}), **body),
        objective=objective or objectives.ELBO(num_samples=num_samples, beta=beta),
        seed=seed,
        name=name,
        **body,  # the model's policy: compile() adds loss scaling under mixed_float16
    )
    if condition_dim is not None:
        if prior == conditional.CONDITIONAL_PRIOR:
            p = conditional.ConditionalGaussianPrior(
                latent_dim, condition_dim, name="prior", **exact
            )
        else:
            p = registry.get("prior", prior)(latent_dim, name="prior", **prior_options, **exact)
        return conditional.ConditionalVAE(condition_dim=condition_dim, prior=p, **parts)
    prior_layer = registry.get("prior", prior)(latent_dim, name="prior", **prior_options, **exact)
    return VAE(prior=prior_layer, **parts)
