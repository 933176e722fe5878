"""`keras-vae` for the VQ-VAE family: `--model vqvae` and `--model vqvae-prior` runs.

The run machinery is `keras_vae.workflows.train` and `keras_vae.runs` (strategies, data, verified
backups, resume, NaN stop, run files); this module supplies what differs for the two models:
building them, their training pictures, their metrics, and `evaluate`, `plot` and `export`.

    keras-vae train --model vqvae --codebook-size 256 --code-dim 16 --output runs/vq
    keras-vae train --model vqvae-prior --vqvae-run runs/vq --output runs/vq-prior
    keras-vae evaluate runs/vq          # reconstruction (nats, MSE), perplexity, usage
    keras-vae evaluate runs/vq-prior    # the bound on -log p(x) in nats and bits/dim
    keras-vae plot runs/vq-prior --kind samples|reconstructions|codebook --output FILE.png
    keras-vae export runs/vq-prior --output export/vq

A prior run trains a `keras_vae.models.vqvae.code_prior.CodePrior` over the frozen VQ-VAE
loaded from `vqvae_run/model.keras`, on that run's data (dataset, splits, likelihood are copied
from its config.json); its own `model.keras` holds the VQ-VAE too, so it is self-contained.

The bound on log p(x) (`evaluate` on a prior run). The VQ-VAE's encoder is deterministic,
q(z|x) = 1[z = z(x)] (one-hot at x's codes), so H(q) = 0 and KL(q || p_prior) = -log
p_prior(z(x)); the ELBO is then

    log p(x) >= E_q[log p(x|z)] - KL(q || p_prior) = log p(x|z_q(x)) + log p_prior(z(x)),

i.e. -log p(x) <= reconstruction + code NLL (nats per image), and bits/dim = that bound / (H W
C ln 2). It compares with a VAE's ELBO (a bound of the same kind) and is looser than its
importance-weighted NLL.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_vae import registry
from keras_vae._internal import figures as plotting
from keras_vae.data import pipeline as data
from keras_vae.models.kind import ModelKind, bits_per_dim
from keras_vae.models.vqvae.code_prior import CodePrior, code_prior
from keras_vae.models.vqvae.model import VQVAE, vqvae
from keras_vae.parts.quantizers import perplexity
from keras_vae.runs import directory as runs
from keras_vae.runs.config import ConfigError, TrainConfig, _default

#: Settings of a prior run that are its VQ-VAE run's: the prior trains on the same data.
DATA_KEYS = ("dataset", "data_dir", "manual_dir", "eval_split", "validation_split",
             "eval_data", "likelihood", "likelihood_components")  # fmt: skip
PLOT_KINDS = {"vqvae": ("reconstructions", "codebook"),
              "vqvae-prior": ("reconstructions", "samples", "codebook")}  # fmt: skip
_BATCH = 500
_DEFAULT_NUM = {"reconstructions": 8, "samples": 64}  # images a figure shows


# ------------------------------------------------------------------------------ training
def run_model(run_dir: str | Path) -> str:
    """The `model` of a run directory's config.json (`vae` for runs that predate it)."""
    run_dir = runs.check_run_dir(run_dir)
    return TrainConfig.from_file(run_dir / runs.CONFIG_FILE).model


def resolve_prior_data(config: TrainConfig) -> TrainConfig:
    """A prior run's config with its VQ-VAE run's data settings (`DATA_KEYS`); one given on
    the command line that differs from the VQ-VAE's is refused. Other models: unchanged."""
    if config.model != "vqvae-prior":
        return config
    run_dir = Path(config.vqvae_run)
    if run_model(run_dir) != "vqvae":
        raise ConfigError(
            f"--vqvae-run {run_dir} holds a model={run_model(run_dir)!r} run; give the run "
            "directory of a `keras-vae train --model vqvae`."
        )
    saved = TrainConfig.from_file(run_dir / runs.CONFIG_FILE)
    for key in DATA_KEYS:
        mine, theirs = getattr(config, key), getattr(saved, key)
        if mine != _default(key) and mine != theirs:
            raise ConfigError(
                f"{key}={mine!r} differs from the VQ-VAE run's {key}={theirs!r}: the prior "
                f"trains on the data of {run_dir}; remove {key}."
            )
    return config.replace(**{key: getattr(saved, key) for key in DATA_KEYS})


def build_model(config: TrainConfig, image_shape: tuple[int, ...]) -> keras.Model:
    """The `VQVAE` of `config`, or the `CodePrior` over the VQ-VAE of `config.vqvae_run`
    (uncompiled; call inside the strategy's scope)."""
    if config.model == "vqvae":
        options = {"num_components": config.likelihood_components}
        return vqvae(
            image_shape, config.codebook_size, config.code_dim, filters=config.conv_filters,
            kernel_size=config.conv_kernel_size, activation=config.activation,
            likelihood=config.likelihood, commitment_weight=config.commitment_weight,
            likelihood_options=options if config.likelihood_components else None,
            codebook_update=config.codebook_update, decay=config.codebook_decay,
            restart_threshold=config.restart_threshold, seed=config.seed,
        )  # fmt: skip
    trained = runs.load_model(Path(config.vqvae_run) / runs.MODEL_FILE, compile=False)
    if not isinstance(trained, VQVAE) or tuple(trained.image_shape) != tuple(image_shape):
        raise ConfigError(
            f"{config.vqvae_run} holds no VQ-VAE of images {tuple(image_shape)} (found "
            f"{type(trained).__name__}); give the run directory of its `--model vqvae` run."
        )
    return code_prior(trained, config.prior_channels, config.prior_layers,
                      hidden_units=config.prior_hidden_units, seed=config.seed)  # fmt: skip


def describe_model(config: TrainConfig) -> str:
    """`a VQ-VAE (...)` / `a gated PixelCNN prior (...)` for the first line of `train`."""
    if config.model == "vqvae":
        return (
            f"a VQ-VAE ({config.codebook_size} codes of {config.code_dim} dimensions, conv "
            f"{'-'.join(map(str, config.conv_filters))}, {config.codebook_update} codebook, "
            f"{config.likelihood} likelihood)"
        )
    return (
        f"a gated PixelCNN prior ({config.prior_channels} channels, {config.prior_layers} "
        f"layers) over the codes of the VQ-VAE in {config.vqvae_run}"
    )


def run_facts(config: TrainConfig, model: keras.Model) -> dict:
    """metrics.json's description of the model (a VAE's says objective, posterior, prior)."""
    vq = model.vqvae if isinstance(model, CodePrior) else model
    facts = {"model_kind": config.model, "likelihood": config.likelihood,
             "codebook_size": vq.codebook_size, "code_shape": list(vq.code_shape)}  # fmt: skip
    if isinstance(model, CodePrior):
        facts["vqvae_run"] = config.vqvae_run
    return facts


def add_bits_per_dim(metrics: dict, model: keras.Model) -> dict:
    """`<prefix>_bits_per_dim` beside every `<prefix>_bound` (nats per image) of a prior."""
    dims = math.prod(model.image_shape)
    for key in [k for k in metrics if k.endswith("_bound")]:
        metrics[key[: -len("bound")] + "bits_per_dim"] = bits_per_dim(metrics[key], dims)
    return metrics


def summary_line(metrics: dict) -> str:
    """The line `keras-vae train` prints at the end of a VQ-VAE or prior run."""
    split = metrics["eval_split"]
    prefix = split if split.isidentifier() and split != "train" else "eval"
    tail = (f"({metrics['epochs']} epochs, {metrics['train_seconds']:.0f} s, "
            f"{metrics['train_examples_per_s']:.0f} examples/s)")  # fmt: skip
    if metrics["model_kind"] == "vqvae":
        return (
            f"train reconstruction {metrics['train_reconstruction']:.2f} nats/example; {split} "
            f"reconstruction {metrics[f'{prefix}_reconstruction']:.2f} nats/example, perplexity "
            f"{metrics[f'{prefix}_perplexity']:.1f}, usage {metrics[f'{prefix}_usage']:.1%} {tail}"
        )
    return (
        f"train code NLL {metrics['train_code_nll']:.2f} nats/example; {split} bound "
        f"{metrics[f'{prefix}_bound']:.2f} nats/example = "
        f"{metrics[f'{prefix}_bits_per_dim']:.4f} bits/dim {tail}"
    )


# ---------------------------------------------------------------------------- evaluation
def _batches(images, batch_size: int = _BATCH):
    """float32 tensors of the images of an array or a stream, in order, read once
    (`data.batches`): memory holds a batch, not the split."""
    for x, _ in data.batches(images, batch_size):
        yield tf.constant(x)


def evaluate_vqvae(model: VQVAE, images) -> dict:
    """Reconstruction -log p(x|z_q(x)) (nats per image), MSE of E[x|z_q(x)] (per pixel),
    commitment ||z_e - z_q||^2, and the codes' perplexity and usage over `images` (an array
    or a `keras_vae.data.ImageStream`, read once, batch by batch)."""

    @tf.function(reduce_retracing=True)
    def terms(x):
        z_e = model.encode_latents(x)
        codes = model.quantizer.codes(z_e)
        z_q = model.quantizer.lookup(codes)
        p = model.decode(z_q)
        axes = list(range(1, len(x.shape)))
        counts = tf.reduce_sum(tf.one_hot(tf.reshape(codes, [-1]), model.codebook_size), 0)
        return {
            "reconstruction": -p.log_prob(x),
            "mse": tf.reduce_mean(tf.square(x - tf.cast(p.mean(), x.dtype)), axis=axes),
            "commitment": tf.reduce_sum(tf.square(z_e - z_q), axis=[1, 2, 3]),
        }, counts

    sums, counts, count = {}, np.zeros(model.codebook_size), 0
    for x in _batches(images):
        values, batch_counts = terms(x)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + float(tf.reduce_sum(tf.cast(value, tf.float64)))
        counts += batch_counts.numpy()
        count += int(x.shape[0])
    return {
        "reconstruction": sums["reconstruction"] / count,
        "mse": sums["mse"] / count,
        "commitment": sums["commitment"] / count,
        "perplexity": float(perplexity(counts)),
        "usage": float(np.mean(counts > 0)),
        "codes_used": int(np.sum(counts > 0)),
        "codebook_size": model.codebook_size,
        "code_shape": list(model.code_shape),
        "num_examples": count,
        "unit": "nats per example (mse: per pixel)",
    }


def evaluate_prior(prior: CodePrior, images) -> dict:
    """The bound -log p(x) <= -log p(x|z_q(x)) - log p_prior(z(x)) (see the module
    docstring) averaged over `images`, in nats per image and bits/dim, with its two terms,
    the code NLL in bits per code, a uniform prior's code NLL (h w log K) for comparison,
    and the VQ-VAE's own metrics (`vqvae_...`, a second pass over `images`: an array or a
    `keras_vae.data.ImageStream`, each pass read batch by batch)."""
    terms = tf.function(prior.bound_terms, reduce_retracing=True)
    sums, count = {"code_nll": 0.0, "reconstruction": 0.0, "bound": 0.0}, 0
    for x in _batches(images):
        values = terms(x)
        for key in sums:
            sums[key] += float(tf.reduce_sum(tf.cast(values[key], tf.float64)))
        count += int(x.shape[0])
    means = {key: value / count for key, value in sums.items()}
    dims, positions = math.prod(prior.image_shape), math.prod(prior.code_shape)
    vq = evaluate_vqvae(prior.vqvae, images)
    return {
        **means,
        "bits_per_dim": bits_per_dim(means["bound"], dims),
        "code_bits_per_code": bits_per_dim(means["code_nll"], positions),
        "uniform_code_nll": positions * math.log(prior.vqvae.codebook_size),
        **{f"vqvae_{k}": v for k, v in vq.items() if k in ("mse", "perplexity", "usage")},
        "num_examples": count,
        "unit": "nats per example",
    }


def model_likelihood(model: keras.Model) -> str:
    vq = model.vqvae if isinstance(model, CodePrior) else model
    return vq.likelihood.registered_name


# --------------------------------------------------------------------------------- plots
def codebook_figure(counts: np.ndarray, title: str):
    """Bars of each code's share of the positions, most used first, with the perplexity."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(counts, np.float64)
    share = np.sort(counts)[::-1] / max(counts.sum(), 1.0)
    fig = Figure(figsize=(8, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(np.arange(len(share)), share, width=1.0, color="tab:blue")
    ax.set_xlabel(f"code rank (of {len(share)})")
    ax.set_ylabel("share of positions")
    ax.set_title(
        f"{title}: perplexity {float(perplexity(counts)):.1f}, "
        f"{int(np.sum(counts > 0))}/{len(counts)} codes used"
    )
    fig.tight_layout()
    return fig


def code_counts(model: VQVAE, images) -> np.ndarray:
    """How often each code is assigned over `images`, `[K]`."""
    counts = np.zeros(model.codebook_size, np.int64)
    for x in _batches(images):
        codes = model.encode(x).numpy().ravel()
        counts += np.bincount(codes, minlength=model.codebook_size)
    return counts


def make_figure(model: keras.Model, kind: str, images=None, num: int | None = None,
                seed: int = 0, split: str = "test"):  # fmt: skip
    """The `keras-vae plot --kind` figure of a VQ-VAE or prior run."""
    vq = model.vqvae if isinstance(model, CodePrior) else model
    kinds = PLOT_KINDS["vqvae-prior" if isinstance(model, CodePrior) else "vqvae"]
    if kind not in kinds:
        raise ValueError(
            f"kind={kind!r} is not drawn for a {type(model).__name__} run; choose one of "
            f"{', '.join(kinds)}."
        )
    num = _DEFAULT_NUM.get(kind, 0) if num is None else num
    if kind == "samples":
        samples, _ = model.sample_images(num, seed=seed)
        grid = plotting.tile_images(np.asarray(samples))
        return plotting.grid_figure(grid, f"Samples E[x|z_q], codes ~ PixelCNN prior ({num})")
    if kind == "codebook":
        return codebook_figure(code_counts(vq, images), f"Code usage on {split}")
    inputs, _ = data.pick_rows(images, num, seed)
    outputs = np.asarray(vq.reconstruct(inputs))
    label = "reconstruction E[x|z_q(x)], z_q(x) the nearest codes"
    return plotting.reconstruction_figure(inputs, outputs, "Reconstructions", label)


# -------------------------------------------------------------------------------- export


# --------------------------------------------------------------------------------- kinds
class _VQKind(ModelKind):
    """What the VQ-VAE and its code prior share."""

    figure_kinds = ("reconstructions", "codebook")
    export_options = ("quantize",)
    quantizations = ("none", "int8")

    def resolve_config(self, config):
        return resolve_prior_data(config)

    def build(self, config, image_shape, epoch_steps=None, condition_dim=None):
        return build_model(config, image_shape)

    def describe(self, config, x_train) -> str:
        return describe_model(config)

    def likelihood_name(self, model) -> str:
        return model_likelihood(model)

    def run_facts(self, config, model, metrics: dict) -> dict:
        return {**run_facts(config, model), **_bits(add_bits_per_dim(dict(metrics), model))}

    def summary_line(self, metrics: dict) -> str:
        return summary_line(metrics)

    def figure_needs_images(self, figure: str) -> bool:
        return figure in ("reconstructions", "codebook")

    def encode(self, model, images, labels=None) -> dict[str, np.ndarray]:
        """The codes `[N, h, w]` (`codes`) and the quantized latents flattened (`latents`) of a
        batch of images."""
        vq = model.vqvae if isinstance(model, CodePrior) else model
        x = tf.constant(np.asarray(images, np.float32))
        latents = vq.quantized_latents(x).numpy().reshape(int(x.shape[0]), -1)
        return {"latents": latents, "codes": vq.encode(x).numpy()}

    def make_figure(self, model, figure, *, images=None, labels=None, num=None, seed=0,
                    split="test"):  # fmt: skip
        return make_figure(model, figure, images, num, seed, split)

    def export(self, model, config, output, *, images, labels=None, quantize=("none",),
               **options):  # fmt: skip
        from keras_vae.models.vqvae.export import export_vqvae

        prior = model if isinstance(model, CodePrior) else None
        chosen = self.export_images(images)
        return export_vqvae(
            model.vqvae if prior is not None else model, output, prior=prior,
            quantize=quantize, representative_images=chosen["representative"],
            check_images=chosen["check"], **options,
        )  # fmt: skip


def _bits(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key.endswith("_bits_per_dim")}


@registry.register("model", "vqvae")
class VQVAEKind(_VQKind):
    """The VQ-VAE (`keras_vae.models.vqvae.model.VQVAE`): a grid of discrete codes."""

    options = ("codebook_size", "code_dim", "commitment_weight", "codebook_update",
               "codebook_decay", "restart_threshold", "activation", "conv_filters",
               "conv_kernel_size")  # fmt: skip

    def training_pictures(self, model, images, labels, num_samples, seed) -> dict:
        return {"reconstructions": np.asarray(model.reconstruct(images))}

    def sample(self, model, num, seed=0, labels=None):
        raise ValueError(
            "a vqvae run has no prior over its codes to sample from; train one with "
            "`keras-vae train --model vqvae-prior --vqvae-run RUN` and sample that run."
        )

    def evaluate(self, model, images, labels=None, **options):
        result = evaluate_vqvae(model, images)
        line = (
            f"reconstruction {result['reconstruction']:.2f} nats, MSE "
            f"{result['mse']:.4f} per pixel, perplexity {result['perplexity']:.1f}, "
            f"{result['codes_used']}/{result['codebook_size']} codes used, "
            f"{result['num_examples']} examples"
        )
        return result, line


@registry.register("model", "vqvae-prior")
class CodePriorKind(_VQKind):
    """A gated PixelCNN prior over the codes of a trained VQ-VAE run (`--vqvae-run`)."""

    options = ("vqvae_run", "prior_channels", "prior_layers", "prior_hidden_units")
    figure_kinds = ("reconstructions", "samples", "codebook")

    def training_pictures(self, model, images, labels, num_samples, seed) -> dict:
        samples, _ = model.sample_images(num_samples, seed=seed)
        return {"reconstructions": np.asarray(model.vqvae.reconstruct(images)),
                "samples": np.asarray(samples)}  # fmt: skip

    def sample(self, model, num, seed=0, labels=None):
        samples, _ = model.sample_images(num, seed=seed)
        return np.asarray(samples)

    def evaluate(self, model, images, labels=None, **options):
        result = evaluate_prior(model, images)
        line = (
            f"bound on -log p(x) {result['bound']:.2f} nats = {result['bits_per_dim']:.4f}"
            f" bits/dim (reconstruction {result['reconstruction']:.2f} + code NLL "
            f"{result['code_nll']:.2f}; uniform codes {result['uniform_code_nll']:.1f}), "
            f"{result['num_examples']} examples"
        )
        return result, line
