"""The hierarchical VAE kind: `keras-vae train --model hvae --latent-dims 64 32 ...`.

The hierarchy of `mlp_hvae` (`--network mlp|gated_mlp`) or `conv_hvae` (`--network conv`)
(top-down inference, NVAE's residual posterior relative to the prior, see
`keras_vae.models.hvae.model`) from the configured parts: the likelihood, the prior of the
top layer, the objective (ELBO with its schedule and free bits, or IWAE), the hidden units of
every block or the conv cells' filters. Evaluation reports the importance-sampled NLL over
the whole hierarchy and each layer's KL and active units; `plot --kind resample` shows what
each layer encodes; `export` writes its encoder, decoder and scorer
(`keras_vae.models.hvae.export`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

from keras_vae import registry
from keras_vae._internal import figures
from keras_vae.data import pipeline as data
from keras_vae.models import precision as precisions
from keras_vae.models.hvae import metrics
from keras_vae.models.hvae.presets import conv_hvae, mlp_hvae
from keras_vae.models.kind import ModelKind, _tail, make_objective
from keras_vae.runs.config import TrainConfig

#: Options of the MLP hierarchy that a convolutional one (`--network conv`) refuses.
MLP_ONLY = ("hidden_units", "top_down_units", "posterior_units", "shared_bottom_up",
            "top_down_skip")  # fmt: skip
#: The config's shared default `conv_filters` (the VAE's two levels), which a conv hierarchy,
#: with one channel count for every feature map, reads as its first value.
SHARED_CONV_FILTERS = [32, 64]


def _mlp_body(config, image_shape, common, gated: bool):
    """`mlp_hvae` from the config: `--hidden-units` for every bottom-up block (one with
    `--shared-bottom-up`), `--top-down-units` (default: reversed) for every cell."""
    count, hidden = len(config.latent_dims), list(config.hidden_units)
    blocks = [hidden] + [[] if config.shared_bottom_up else hidden] * (count - 1)
    state = list(config.top_down_units or hidden[::-1])
    return mlp_hvae(
        image_shape, latent_dims=config.latent_dims, hidden_units=blocks,
        state_units=[state] * (count - 1), posterior_units=config.posterior_units,
        skip=config.top_down_skip, top_posterior=config.posterior, gated=gated, **common,
    )  # fmt: skip


def _conv_body(config, image_shape, common):
    """`conv_hvae` from the config: `--latent-dims` are the channels of each z_i map, z_1
    two stride-2 levels below x and each further layer one more (28x28: 7x7, 4x4, 2x2, ...),
    every feature map `--conv-filters F` channels with `--conv-kernel-size` kernels."""
    count = len(config.latent_dims)
    return conv_hvae(
        image_shape, latent_channels=config.latent_dims, downsamples=[2] + [1] * (count - 1),
        filters=config.conv_filters[0], kernel_size=config.conv_kernel_size, **common,
    )  # fmt: skip


def _describe_mlp(config) -> str:
    units = "-".join(map(str, config.hidden_units))
    blocks = "one shared bottom-up block" if config.shared_bottom_up else "per block"
    skip = ", top-down skips" if config.top_down_skip else ""
    return f"{config.network} {units} {blocks}{skip}, {config.posterior} top posterior"


def _describe_conv(config) -> str:
    size = config.conv_kernel_size
    return f"conv residual cells, {config.conv_filters[0]} filters, {size}x{size} kernels"


def _check_conv_options(config) -> None:
    """A conv hierarchy refuses the MLP's options and more than one filter count."""
    defaults = TrainConfig()
    given = [f"--{key.replace('_', '-')}" for key in MLP_ONLY
             if getattr(config, key) != getattr(defaults, key)]  # fmt: skip
    if config.posterior != defaults.posterior:
        given.append(f"--posterior {config.posterior}")
    if given:
        raise ValueError(
            f"{', '.join(given)} belong to the MLP hierarchy, not to --network conv (its "
            "z_i are maps of --latent-dims channels); remove them or choose --network mlp."
        )
    if len(config.conv_filters) != 1:
        raise ValueError(
            "--network conv for --model hvae takes one --conv-filters value, the channels of "
            f"every feature map (e.g. --conv-filters 32). Received: {config.conv_filters}"
        )


def _use_first_conv_filters(config):
    """The config's shared default `conv_filters` read as the conv hierarchy's one value."""
    if config.conv_filters == SHARED_CONV_FILTERS:
        return config.replace(conv_filters=SHARED_CONV_FILTERS[:1])
    return config


class Network(NamedTuple):
    """A `--network` of the hierarchy: how its model is built and described, how its
    options are checked (one-line `ValueError`) and its config's defaults resolved."""

    build: Callable
    describe: Callable
    check: Callable = lambda config: None
    resolve: Callable = lambda config: config


#: The `--network` values of the hierarchy: dense layers, gated dense layers (the VampPrior
#: paper's HVAE), or convolutional residual cells (NVAE's).
NETWORKS = {
    "mlp": Network(partial(_mlp_body, gated=False), _describe_mlp),
    "gated_mlp": Network(partial(_mlp_body, gated=True), _describe_mlp),
    "conv": Network(_conv_body, _describe_conv, _check_conv_options, _use_first_conv_filters),
}


@registry.register("model", "hvae")
class HierarchicalVAEKind(ModelKind):
    """An MLP hierarchical VAE of `len(latent_dims)` stochastic layers."""

    options = (
        "latent_dims", "hidden_units", "activation", "prior", "prior_components", "objective",
        "gradient_estimator", "samples", "start_samples", "start_samples_epochs", "beta",
        "kl_warmup_epochs", "kl_cycle_epochs", "free_bits", "free_bits_groups", "posterior",
        "network", "log_scale_bound", "top_down_units", "posterior_units", "shared_bottom_up",
        "top_down_skip", "precision", "conv_filters", "conv_kernel_size",
    )  # fmt: skip
    figure_kinds = ("samples", "reconstructions", "resample")
    evaluate_options = ("importance_samples", "seed", "precision")

    def resolve_config(self, config):
        """The config with its network's defaults (`Network.resolve`)."""
        network = NETWORKS.get(config.network)
        return config if network is None else network.resolve(config)

    def check_data(self, config, x_train, x_eval) -> None:
        if config.network not in NETWORKS:
            raise ValueError(
                f"--network {config.network} is not a hierarchical VAE's; its blocks are "
                f"{', '.join(NETWORKS)} (--network {'|'.join(NETWORKS)})."
            )
        NETWORKS[config.network].check(config)

    def build(self, config, image_shape, epoch_steps=None, condition_dim=None):
        return self._hvae(config, image_shape, make_objective(config, epoch_steps))

    def _hvae(self, config, image_shape, objective):
        options = {} if config.likelihood_components is None else {
            "likelihood_options": {"num_components": config.likelihood_components}}  # fmt: skip
        common = dict(
            likelihood=config.likelihood, activation=config.activation, seed=config.seed,
            prior=config.prior, prior_components=config.prior_components,
            objective=objective, free_bits_groups=config.free_bits_groups,
            log_scale_bound=config.log_scale_bound or None,
            precision=config.precision, **options,
        )  # fmt: skip
        return NETWORKS[config.network].build(config, image_shape, common)

    def with_precision(self, model, config, precision: str):
        """The run's model built again from its config with `precision` and given its
        weights, float32 under every policy (the model itself when it already computes in
        `precision`; its objective as trained)."""
        if model.dtype_policy.name == precision:
            return model
        config = config.replace(precision=precision)  # a one-line error for another value
        objective = type(model.objective).from_config(model.objective.get_config())
        rebuilt = self._hvae(config, model.image_shape, objective)
        rebuilt.build((None, *model.image_shape))
        return precisions.with_weights_of(model, rebuilt)

    def initialize(self, model, x_train, config) -> None:
        """Starts a VampPrior's pseudo-inputs from training examples (as the VAE kind)."""
        prior = model.prior
        if not hasattr(prior, "set_pseudo_inputs"):
            return
        images = data.first_images(x_train, len(x_train))
        rng = np.random.default_rng(config.seed)
        count = prior.num_components
        prior.set_pseudo_inputs(images[rng.choice(len(images), count, count > len(images))])

    def describe(self, config, x_train) -> str:
        sizes = "-".join(map(str, config.latent_dims))
        return (
            f"a hierarchical VAE (latents {sizes}, z_1 first; "
            f"{NETWORKS[config.network].describe(config)}, {config.prior} top prior, "
            f"{config.likelihood} likelihood, {config.objective})"
        )

    def monitor(self, config):
        return ("val_iwae" if config.objective == "iwae" else "val_elbo"), "max"

    def metric_names(self, model, result: dict) -> list[str]:
        return [name for name in result if name != "loss"]

    def run_facts(self, config, model, metrics: dict) -> dict:
        return {"objective": config.objective, "prior": config.prior,
                "latent_dims": list(config.latent_dims), "precision": config.precision}  # fmt: skip

    def summary_line(self, metrics: dict) -> str:
        split = metrics["eval_split"]
        prefix = split if split.isidentifier() and split != "train" else "eval"
        return (
            f"train ELBO {metrics['train_elbo']:.2f} nats/example; "
            f"{split} ELBO {metrics[f'{prefix}_elbo']:.2f} nats/example ({_tail(metrics)})"
        )

    def training_pictures(self, model, images, labels, num_samples, seed) -> dict:
        return {"reconstructions": np.asarray(model.reconstruct(images)),
                "samples": np.asarray(model.sample(num_samples, seed=seed))}  # fmt: skip

    def evaluate(self, model, images, labels=None, *, importance_samples=1000, seed=0,
                 progress_stream=None):  # fmt: skip
        result = metrics.evaluate(model, images, importance_samples, seed=seed, verbose=1,
                                  progress_stream=progress_stream)  # fmt: skip
        layers = ", ".join(f"KL_{i + 1} {kl:.2f}" for i, kl in enumerate(result["kl_layers"]))
        line = (
            f"ELBO {result['elbo']:.2f} nats, NLL {result['nll']:.2f} +- "
            f"{result['nll_stderr']:.2f} nats (K={result['importance_samples']}), "
            f"{result['bits_per_dim']:.4f} bits/dim; {layers}; active units "
            f"{result['active_units']} of {result['latent_sizes']}, "
            f"{result['num_examples']} examples, precision {result['precision']}"
        )
        return result, line

    def encode(self, model, images, labels=None) -> dict[str, np.ndarray]:
        """Each layer's posterior mean along the mean path (`mean_1`, `mean_2`, ...) of a
        batch of images."""
        x = np.asarray(images, np.float32)
        return {f"mean_{i}": np.asarray(q.mean()) for i, q in enumerate(model.encode(x), 1)}

    def figure_needs_images(self, figure: str) -> bool:
        return figure in ("reconstructions", "resample")

    def make_figure(self, model, figure, *, images=None, labels=None, num=None, seed=0,
                    split="test"):  # fmt: skip
        if figure == "samples":
            samples = np.asarray(model.sample(num or 64, seed=seed))
            return figures.grid_figure(figures.tile_images(samples), "Samples E[x|z], z ~ p(z)")
        x, _ = data.pick_rows(images, num or 8, seed)
        if figure == "reconstructions":
            return figures.reconstruction_figure(
                x, np.asarray(model.reconstruct(x)), "Reconstructions", "E[x|z], z the mean path"
            )
        rows = [x] + [np.asarray(model.resample_from_layer(x, layer, seed=seed))
                      for layer in range(model.num_layers, 0, -1)]  # fmt: skip
        grid = np.concatenate([figures.tile_images(r, num_cols=len(x)) for r in rows], axis=0)
        return figures.grid_figure(
            grid, "Resampled from layer L (top row after the inputs) down to layer 1: "
            "z_{>i} kept, the rest redrawn",
        )  # fmt: skip

    export_options = ("quantize", "scorer", "scorer_samples", "precision")
    quantizations = ("none", "dynamic", "float16", "int8")

    def export(self, model, config, output, *, images, labels=None, precision=None,
               **options) -> dict:  # fmt: skip
        """Encoder, decoder and scorer (`keras_vae.models.hvae.export.export_hvae`),
        calibrated and checked on the training split (`ModelKind.export_images`); a run
        trained in a mixed policy is exported in float32 (its weights are float32). With
        `precision` the scorer is written from the run's weights in that policy."""
        from keras_vae.models.hvae.export import export_hvae

        if precision is not None:
            options["scorer_model"] = self.with_precision(model, config, precision)
        model = self.with_precision(model, config, "float32")
        chosen = self.export_images(images)
        return export_hvae(model, output, representative_images=chosen["representative"],
                           check_images=chosen["check"], **options)  # fmt: skip
