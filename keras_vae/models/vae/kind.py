"""The VAE kind: `keras-vae train --model vae` (the default), with `--conditional` its
conditional form (Sohn et al. 2015: q(z|x, y), p(x|z, y)), which adds the label input.

Everything the workflows need of a VAE run is here: building `mlp_vae` from the configured
parts, the first line and the last, the metric early stopping watches, metrics.json's facts,
the training pictures, `evaluate` (the importance-sampled NLL), `plot`'s figures and `export`
(encoder, decoder, scorer).
"""

from __future__ import annotations

import numpy as np

from keras_vae import registry
from keras_vae.data import pipeline as data
from keras_vae.models import precision as precisions
from keras_vae.models.kind import ModelKind, _tail, make_objective  # noqa: F401
from keras_vae.models.vae import evaluation, pictures, traversals
from keras_vae.models.vae.presets import mlp_vae


@registry.register("model", "vae")
class VAEKind(ModelKind):
    """The VAE of the configured parts (posterior, prior, likelihood, objective, network)."""

    options = (
        "posterior", "prior", "prior_components", "objective", "gradient_estimator",
        "latent_dim", "hidden_units", "network", "samples", "start_samples",
        "start_samples_epochs", "beta", "kl_warmup_epochs", "kl_cycle_epochs", "free_bits",
        "conditional", "activation", "conv_filters", "conv_kernel_size", "precision",
        "tc_weight", "tc_estimator", "capacity", "capacity_epochs", "capacity_weight",
        "discriminator_units", "discriminator_learning_rate",
    )  # fmt: skip
    figure_kinds = pictures.KINDS
    evaluate_options = (
        "importance_samples", "seed", "precision", "disentanglement", "disentanglement_samples",
    )  # fmt: skip

    def uses_labels(self, config) -> bool:
        return bool(config.conditional)

    def check_data(self, config, x_train, x_eval) -> None:
        if config.network == "conv":  # too many levels for these images
            from keras_vae.parts.networks import check_levels

            check_levels(x_train.shape[1:], len(config.conv_filters))
        if config.conditional and x_eval is not x_train:
            from keras_vae.runs.splits import check_labels

            check_labels(x_train, x_eval)

    def build(self, config, image_shape, epoch_steps=None, condition_dim=None):
        return self._mlp_vae(config, image_shape, make_objective(config, epoch_steps),
                             condition_dim if config.conditional else None)  # fmt: skip

    def _mlp_vae(self, config, image_shape, objective, condition_dim):
        parts = {"posterior": config.posterior, "prior": config.prior}
        if config.prior_components is not None:  # None: a prior without components
            parts["prior_components"] = config.prior_components
        if config.likelihood_components is not None:
            parts["likelihood_options"] = {"num_components": config.likelihood_components}
        return mlp_vae(
            image_shape,
            latent_dim=config.latent_dim,
            hidden_units=config.hidden_units,
            likelihood=config.likelihood,
            activation=config.activation,
            seed=config.seed,
            objective=objective,
            network=config.network,
            network_options=config.network_options(),
            condition_dim=condition_dim,
            precision=config.precision,
            **parts,
        )

    def with_precision(self, model, config, precision: str):
        """The run's model built again from its config with `precision` and given its
        weights: every policy keeps float32 variables, so they transfer exactly (the model
        itself when it already computes in `precision`; its objective as trained)."""
        if model.dtype_policy.name == precision:
            return model
        config = config.replace(precision=precision)  # a one-line error for another value
        objective = type(model.objective).from_config(model.objective.get_config())
        rebuilt = self._mlp_vae(config, model.image_shape, objective,
                                getattr(model, "condition_dim", None))  # fmt: skip
        rebuilt.build((None, *model.image_shape))
        return precisions.with_weights_of(model, rebuilt)

    def initialize(self, model, x_train, config) -> None:
        """Starts a prior with pseudo-inputs (the VampPrior) from K training examples chosen
        at random with the seed (with replacement when K exceeds the examples)."""
        prior = model.prior
        if not hasattr(prior, "set_pseudo_inputs"):
            return
        count = prior.num_components
        images = data.first_images(x_train, len(x_train))  # a stream: its first examples
        rng = np.random.default_rng(config.seed)
        chosen = rng.choice(len(images), size=count, replace=count > len(images))
        prior.set_pseudo_inputs(images[chosen])

    def describe(self, config, x_train) -> str:
        body = f"{config.network} {'-'.join(map(str, config.hidden_units))}"
        if config.network == "conv":  # e.g. conv 32-64 (3x3) + 500
            size, filters = config.conv_kernel_size, "-".join(map(str, config.conv_filters))
            body = f"conv {filters} ({size}x{size}) + {body.split()[1]}"
        name = "VAE ("
        if config.conditional:
            name = f"conditional VAE (y of size {x_train.condition_dim}; "
        return (
            f"a {name}{body}, latent {config.latent_dim}, {config.posterior} posterior, "
            f"{config.prior} prior, {config.likelihood} likelihood, {config.objective})"
        )

    def monitor(self, config) -> tuple[str, str]:
        return ("val_iwae" if config.objective == "iwae" else "val_elbo"), "max"

    def metric_names(self, model, result: dict) -> list[str]:
        return list(model.objective.metric_names)

    def run_facts(self, config, model, metrics: dict) -> dict:
        return {"objective": config.objective, "posterior": config.posterior,
                "prior": config.prior, "conditional": config.conditional,
                "precision": config.precision}  # fmt: skip

    def summary_line(self, metrics: dict) -> str:
        split = metrics["eval_split"]
        prefix = split if split.isidentifier() and split != "train" else "eval"
        return (
            f"train ELBO {metrics['train_elbo']:.2f} nats/example; "
            f"{split} ELBO {metrics[f'{prefix}_elbo']:.2f} nats/example ({_tail(metrics)})"
        )

    def training_pictures(self, model, images, labels, num_samples, seed) -> dict:
        return {
            "reconstructions": pictures.reconstructions(model, images, labels),
            "samples": np.asarray(model.sample(num_samples, seed=seed)),
        }

    def evaluate(self, model, images, labels=None, *, importance_samples=1000, seed=0,
                 progress_stream=None):  # fmt: skip
        result = evaluation.evaluate(model, images, importance_samples, seed=seed,
                                     labels=labels, progress_stream=progress_stream)  # fmt: skip
        line = (
            f"ELBO {result['elbo']:.2f} nats, NLL {result['nll']:.2f} "
            f"+- {result['nll_stderr']:.2f} nats (K={result['importance_samples']}), "
            f"{result['bits_per_dim']:.4f} bits/dim, {result['active_units']}/"
            f"{result['latent_dim']} active units, {result['num_examples']} examples, "
            f"precision {result['precision']}"
        )
        return result, line

    def representation(self, model, config):
        """The posterior mean E[z|x], disentanglement_lib's representation of a VAE."""
        if config.conditional:
            raise ValueError(
                "--disentanglement scores codes of images alone, but a conditional VAE's q(z|x, y) "
                "needs each image's label y: evaluate an unconditional VAE."
            )
        from keras_vae.metrics.disentanglement import representation_function

        return representation_function(model)

    def sample(self, model, num, seed=0, labels=None) -> np.ndarray:
        """E[x|z], z ~ p(z) (a conditional VAE: z ~ p(z|y) for the given labels, or the
        classes in turn)."""
        if labels is None:
            return np.asarray(model.sample(num, seed=seed))
        return np.asarray(model.sample(num, seed=seed, y=np.resize(np.asarray(labels), num)))

    def encode(self, model, images, labels=None) -> dict[str, np.ndarray]:
        """The posterior's parameters, the mean E[z|x] first (`mean`), of a batch of images."""
        args = (images,) if labels is None else (images, np.asarray(labels))
        found = {"mean": np.asarray(model.encode(*args).mean())}
        found.update({k: np.asarray(v) for k, v in model.encode_parameters(*args).items()})
        return found

    def figure_needs_images(self, figure: str) -> bool:
        return figure in ("reconstructions", "latents", "interpolation", "traversals", "kl")

    def check_figure(self, model, figure: str) -> None:
        if figure == "manifold" and not pictures._is_conditional(model):
            pictures._check_two_latents(model)
        if figure in ("traversals", "kl") and not pictures._is_conditional(model):
            traversals.check_kl_per_latent(model)

    def make_figure(self, model, figure, *, images=None, labels=None, num=None, seed=0,
                    split="test"):  # fmt: skip
        return pictures.make_figure(model, figure, images=images, labels=labels, num=num,
                                    seed=seed)  # fmt: skip

    export_options = ("quantize", "scorer", "scorer_samples", "precision")
    quantizations = ("none", "dynamic", "float16", "int8")

    def export(self, model, config, output, *, images, labels=None, precision=None,
               **options) -> dict:  # fmt: skip
        """`export_vae`; with `precision` the scorer is written from the run's weights in
        that policy (`with_precision`; the encoder and decoder from the run's model)."""
        from keras_vae.models.vae.export import export_vae

        if precision is not None:
            options["scorer_model"] = self.with_precision(model, config, precision)
        chosen = self.export_images(images, labels)
        if "representative_labels" in chosen:  # a conditional VAE's labels of those images
            options.update(representative_labels=chosen["representative_labels"],
                           check_labels=chosen["check_labels"])  # fmt: skip
        return export_vae(model, output, representative_images=chosen["representative"],
                          check_images=chosen["check"], **options)  # fmt: skip
