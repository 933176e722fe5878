"""Training configuration: one dataclass, read from JSON/YAML or the CLI, written as JSON.

Config files are parsed as data only (`json.load`, `yaml.safe_load`): nothing in them runs.
Unknown keys and wrong types are refused with the list of valid keys.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keras_vae import registry
from keras_vae.engine.distribute import STRATEGIES
from keras_vae.engine.trainer import DEFAULT_STEPS_PER_EXECUTION
from keras_vae.parts.disentangling_objectives import TC_ESTIMATORS
from keras_vae.parts.objectives import GRADIENT_ESTIMATORS

# options that only some objectives take, with the value that means "not used"
LR_SCHEDULES = ("constant", "cosine")
_ARRAY_FILES = (".npz", ".npy")  # keras_vae.data.ARRAY_EXTENSIONS (data imports TensorFlow)

# options of one network family: config key -> argument of the family's `pair`
NETWORK_OPTIONS = {"conv": {"conv_filters": "filters", "conv_kernel_size": "kernel_size"}}

_OBJECTIVE_OPTIONS = {
    "elbo": {
        "beta": 1.0,
        "kl_warmup_epochs": 0,
        "kl_cycle_epochs": 0,
        "free_bits": 0.0,
        "free_bits_groups": None,
    },
    "iwae": {"gradient_estimator": "standard"},
    "betatc": {"tc_weight": None, "tc_estimator": "importance"},
    "annealed_capacity": {"capacity": 25.0, "capacity_epochs": None, "capacity_weight": 1000.0},
    "factorvae": {
        "tc_weight": None,
        "discriminator_units": [1000] * 6,
        "discriminator_learning_rate": 1e-4,
    },
}


CONDITIONAL_PRIOR = "conditional"  # keras_vae.conditional.CONDITIONAL_PRIOR (it imports TF)
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # keras_vae.models.vae.presets
CODEBOOK_UPDATES = ("ema", "loss")  # keras_vae.quantizers.CODEBOOK_UPDATES (it imports TF)


def _option_owners() -> dict[str, list[str]]:
    """Config key -> the registered model kinds that take it (`ModelKind.options`); keys
    no kind claims are shared by all."""
    owners: dict[str, list[str]] = {}
    for name in registry.names("model"):
        for key in registry.get("model", name).options:
            owners.setdefault(key, []).append(name)
    return {key: sorted(names) for key, names in owners.items()}


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the key and the fix."""


@dataclasses.dataclass
class TrainConfig:
    """Everything `keras-vae train` needs; the defaults are the AEVB paper's MNIST model.

    Attributes:
        dataset: tfds name (`binarized_mnist`, `mnist`, `frey_face`, `synthetic_dsprites`,
            `synthetic_dsprites/small`: generated offline into `data_dir` on first use) or a
            `.npz`/`.npy` path.
        data_dir: tfds data directory; None means tfds' default (`TFDS_DATA_DIR`).
        manual_dir: Directory with manually downloaded raw files (offline preparation).
        eval_split: Held-out split used for validation during training and for the final
            `<split>_elbo` of metrics.json (`test_elbo`, `validation_elbo`, ...). An array
            file's splits are `train`, `validation` (its held-out part) and `test`
            (`eval_data`); without `eval_data`, `test` becomes `validation`.
        validation_split: Array files: the fraction held out at the end of the file as the
            `validation` split (as Keras' `fit(validation_split=...)`: the last examples,
            before shuffling); None: 0.1 unless `eval_data` is given.
        eval_data: Array files: a `.npz`/`.npy` file of held-out images, the `test` split.
        shuffle_buffer: tfds data sets are streamed; a split of at most this many examples
            is cached as stored and permuted fully every epoch, a larger one is shuffled
            through a buffer of this many examples (a weaker shuffle).
        likelihood: A registered likelihood (`bernoulli`, `gaussian`, `logistic`); None picks
            the dataset's natural one.
        likelihood_components: M, mixture components per pixel of a likelihood that has them
            (`logistic`); None means the head's default.
        posterior: A registered posterior q(z|x): `diagonal` or `full` (covariance).
        prior: A registered prior p(z): `standard`, `mixture` or `vamp`.
        prior_components: K of a prior with components (`mixture`, `vamp`); None means the
            prior's own default (10 for `mixture`, 500 for `vamp`).
        objective: A registered objective: `elbo`, `iwae` (with K = `samples`), or one for
            disentanglement: `betatc` (beta-TCVAE), `annealed_capacity` (the capacity-annealed
            beta-VAE), `factorvae` (FactorVAE).
        gradient_estimator: IWAE gradients, `standard` or `dreg` (Tucker et al. 2019).
        latent_dim: Size of z.
        hidden_units: Hidden layer sizes of the encoder and decoder MLPs.
        network: A registered network family of encoder and decoder bodies (`mlp`, the
            paper's; `gated_mlp`, Dauphin et al. 2017, the VampPrior paper's; `conv`, strided
            convolutions for `[H, W, C]` images of any size).
        activation: Hidden activation (the paper: tanh).
        epochs: Passes over the training data (or of `steps_per_epoch` steps).
        steps_per_epoch: Steps per epoch; None means one pass over the training split.
        steps_per_execution: Training steps per compiled call (fewer Python round trips:
            about 25% faster for the paper's model, see benchmarks/throughput.py).
        batch_size: Global batch size (split across replicas under a strategy).
        learning_rate: Adam step size (the peak of the schedule).
        lr_schedule: `constant`, or `cosine`: decay to 0 over the `epochs` (Loshchilov &
            Hutter 2017), computed from the optimizer's step so it resumes exactly.
        ema_momentum: Keep an exponential moving average of the weights (Polyak averaging,
            Keras' `use_ema`) with this momentum, e.g. 0.999; validation uses the averaged
            weights and the final model is the average. None: off.
        weight_decay: Decoupled weight decay (Loshchilov & Hutter 2019, AdamW): after each
            Adam step every trainable weight w becomes w - lr_t * weight_decay * w, with the
            scheduled lr_t; a regulariser against overfitting a small training set. 0: off.
        time_budget_minutes: Stop after the epoch at which the training wall time, summed over
            resumed runs, reaches this many minutes (None: no budget).
        clipnorm: Clip each gradient to this L2 norm (None: no clipping).
        global_clipnorm: Clip the gradients jointly: when their global norm
            ||g|| = sqrt(sum_v ||g_v||^2) exceeds c, every g_v becomes g_v c / ||g|| (Keras'
            `global_clipnorm`; VDVAE's and NVAE's clipping). None: off; not with `clipnorm`.
        log_scale_bound: Hierarchical VAE: b of the top-down cells' scales,
            sigma = exp(b tanh(s / b)), log sigma in (-b, b) (NVAE's soft clamp, against the
            blow-up of issue 30); 0: softplus scales floored at 1e-4, as before it.
        samples: L, Monte Carlo samples of z per example (K of the IWAE bound).
        start_samples: Samples per example for the first `start_samples_epochs` epochs, a
            cheaper start for a many-sample bound (an IWAE with K = 50 costs about 50 decoder
            passes per example); `samples` afterwards. None: `samples` throughout.
        start_samples_epochs: How many epochs train with `start_samples`.
        beta: KL weight of the training loss (ELBO only).
        kl_warmup_epochs: ELBO: the KL weight grows linearly from 0 to `beta` over this many
            epochs (converted to steps; 0: no warm-up).
        kl_cycle_epochs: ELBO: restart the warm-up every this many epochs (cyclical
            annealing; 0: off; needs `kl_warmup_epochs` below it).
        free_bits: ELBO: lambda, nats per latent dimension that the KL term gets for free.
        free_bits_groups: Hierarchical VAE, ELBO with `free_bits`: per stochastic layer, the
            number g of groups of its units that share a floor (each group gets lambda times
            its units; 1: the whole layer, the Ladder VAE's per-layer free bits); None: each
            unit is its own group. A layer whose KL is Monte Carlo (a VampPrior or mixture
            on top) is one group whatever is asked.
        tc_weight: beta-TCVAE and FactorVAE: the weight of the total correlation (beta-TCVAE's
            beta, FactorVAE's gamma); None: the objective's default (6 and 10).
        tc_estimator: beta-TCVAE: the batch estimate of the aggregate posterior q(z),
            `importance` (unbiased weights; values near the true TC) or `mws` (the paper's
            minibatch weighted sampling, whose TC value is inflated by about (D - 1) log N).
        capacity: Capacity-annealed beta-VAE: C_max, the target KL in nats (Burgess et al.:
            25 on dSprites).
        capacity_epochs: Capacity-annealed beta-VAE: C grows from 0 to C_max over this many
            epochs (converted to steps; 0: C_max from the start); None: the paper's 100,000
            optimizer steps.
        capacity_weight: Capacity-annealed beta-VAE: gamma, the weight of |KL - C| (1000).
        discriminator_units: FactorVAE: hidden layer sizes of the discriminator (the paper's
            six of 1000 leaky-ReLU units).
        discriminator_learning_rate: FactorVAE: the discriminator's Adam step size (its
            betas are the paper's 0.5 and 0.9).
        dynamic_binarization: Redraw binary images from grey levels every epoch.
        seed: Seed of weights, shuffling and noise.
        strategy: `auto`, `default`, `mirrored`, or `multiworker` (the cluster in TF_CONFIG).
        cpu_replicas: Split the CPU into this many logical devices (to test multi-device).
        jit_compile: Compile training with XLA (the whole step on one device, the replica math
            under several replicas; see keras_vae.distribute.resolve_xla).
        limit: Use only the first `limit` training examples (quick runs).
        early_stopping: Stop when the eval split's bound (the IWAE bound for
            `objective="iwae"`, else the ELBO) has not improved for this many epochs and keep
            the best epoch's weights, the averaged ones with `ema_momentum` (None: train all
            epochs; >= epochs: keep the best epoch). Use `eval_split="validation"` so that the
            test split stays untouched.
        image_every: Write reconstruction and sample pictures to TensorBoard and PNG files
            every this many epochs (and after the last); 0 turns them off.
        keep_backups: Verified per-epoch backups kept in the run directory while training
            (the newest intact one is resumed); a rerun may change it.
        model: `vae` (the default), `vqvae` (`keras_vae.vqvae`: a grid of discrete codes) or
            `vqvae-prior` (a gated PixelCNN over the codes of the frozen VQ-VAE of
            `vqvae_run`, trained on that run's data). Options of another model are refused.
        codebook_size: VQ-VAE: K, the number of codes.
        code_dim: VQ-VAE: D, the size of each code.
        commitment_weight: VQ-VAE: beta of the commitment loss ||z_e - sg(z_q)||^2.
        codebook_update: VQ-VAE: `ema` (moving averages of the assigned encoder outputs) or
            `loss` (a trainable codebook and the codebook loss).
        codebook_decay: VQ-VAE: g of the EMA codebook and of the usage counts.
        restart_threshold: VQ-VAE: restart codes whose moving count of assignments per step
            falls below this (0: never).
        conv_filters: Channels of the convolutional bodies' stride-2 levels, the depth being
            their count (`network="conv"` and the VQ-VAE's encoder; the decoders mirror
            them): L levels give a ceil(H/2^L) x ceil(W/2^L) map, so at most
            ceil(log2(max(H, W))) levels. `hidden_units` are a conv VAE's dense layers between.
        conv_kernel_size: Side k of those convolutions' k x k kernels.
        latent_dims: Hierarchical VAE (`model="hvae"`): the size of each stochastic layer,
            z_1 (next to x) first; L = their count.
        top_down_units: Hierarchical VAE: the dense layers of every top-down cell T_i
            (z_{i+1}, h_{i+1} -> h_i); None: `hidden_units` reversed.
        posterior_units: Hierarchical VAE: dense layers of every posterior cell between
            [h_i, d_i] and q(z_i|.)'s offsets (empty: one linear map).
        shared_bottom_up: Hierarchical VAE: one bottom-up block (`hidden_units`) whose
            features d_1 every layer's posterior reads (blocks 2..L empty), so q(z_L|x) is as
            shallow as q(z_1|.), as in the VampPrior paper's HVAE.
        top_down_skip: Hierarchical VAE: each top-down cell carries its input past T_i,
            h_i = [T_i(u), u] with u = [z_{i+1}, h_{i+1}], so every z_{>1} reaches the
            decoder one linear map away.
        vqvae_run: VQ-VAE prior: the run directory of the trained VQ-VAE; its data settings
            (dataset, splits, likelihood) are the prior's.
        prior_channels: VQ-VAE prior: channels of the gated PixelCNN's stacks.
        prior_layers: VQ-VAE prior: gated layers.
        prior_hidden_units: VQ-VAE prior: units of the 1x1 layer before the logits.
        conditional: A conditional VAE (`keras_vae.conditional`, Sohn et al. 2015): q(z|x, y)
            and p(x|z, y) given each image's label y (the data must have labels: a labelled
            tfds data set or an `.npz` with `y`); `prior="conditional"` learns p(z|y).
        precision: VAE and hierarchical VAE: `float32`, or a Keras mixed policy for the
            bodies' and heads' matmuls (`mixed_bfloat16`, trained without XLA on CPUs;
            `mixed_float16` with loss scaling); variables, head outputs, prior and every
            log-density stay float32 (`keras_vae.mlp_vae(precision=...)`, `mlp_hvae`'s).
    """

    dataset: str = "binarized_mnist"
    data_dir: str | None = None
    manual_dir: str | None = None
    eval_split: str = "test"
    validation_split: float | None = None
    eval_data: str | None = None
    shuffle_buffer: int = 60_000
    likelihood: str | None = None
    likelihood_components: int | None = None
    posterior: str = "diagonal"
    prior: str = "standard"
    prior_components: int | None = None
    objective: str = "elbo"
    gradient_estimator: str = "standard"
    latent_dim: int = 20
    hidden_units: list[int] = dataclasses.field(default_factory=lambda: [500])
    activation: str = "tanh"
    network: str = "mlp"
    epochs: int = 10
    steps_per_epoch: int | None = None
    steps_per_execution: int = DEFAULT_STEPS_PER_EXECUTION
    batch_size: int = 100
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    ema_momentum: float | None = None
    weight_decay: float = 0.0
    time_budget_minutes: float | None = None
    clipnorm: float | None = None
    global_clipnorm: float | None = None
    log_scale_bound: float = 5.0
    samples: int = 1
    start_samples: int | None = None
    start_samples_epochs: int = 0
    beta: float = 1.0
    kl_warmup_epochs: int = 0
    kl_cycle_epochs: int = 0
    free_bits: float = 0.0
    free_bits_groups: list[int] | None = None
    tc_weight: float | None = None
    tc_estimator: str = "importance"
    capacity: float = 25.0
    capacity_epochs: int | None = None
    capacity_weight: float = 1000.0
    discriminator_units: list[int] = dataclasses.field(default_factory=lambda: [1000] * 6)
    discriminator_learning_rate: float = 1e-4
    dynamic_binarization: bool = False
    seed: int = 0
    strategy: str = "auto"
    cpu_replicas: int | None = None
    jit_compile: bool = True
    limit: int | None = None
    image_every: int = 5
    early_stopping: int | None = None
    keep_backups: int = 3
    model: str = "vae"
    codebook_size: int = 256
    code_dim: int = 16
    commitment_weight: float = 0.25
    codebook_update: str = "ema"
    codebook_decay: float = 0.99
    restart_threshold: float = 0.1
    conv_filters: list[int] = dataclasses.field(default_factory=lambda: [32, 64])
    latent_dims: list[int] = dataclasses.field(default_factory=lambda: [64, 32])
    top_down_units: list[int] | None = None
    posterior_units: list[int] = dataclasses.field(default_factory=list)
    shared_bottom_up: bool = False
    top_down_skip: bool = False
    conv_kernel_size: int = 3
    vqvae_run: str | None = None
    prior_channels: int = 64
    prior_layers: int = 6
    prior_hidden_units: int = 128
    conditional: bool = False
    precision: str = "float32"

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name), _field_types()[field.name])
        for name in (
            "latent_dim", "epochs", "batch_size", "samples", "steps_per_execution", "keep_backups",
        ):  # fmt: skip
            _check_positive(name, getattr(self, name))
        for name in (
            "steps_per_epoch", "cpu_replicas", "limit", "early_stopping", "prior_components",
            "likelihood_components",
        ):  # fmt: skip
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        for name in ("image_every", "kl_warmup_epochs", "kl_cycle_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"{name} must be an int >= 0. Received: {name}={getattr(self, name)!r}"
                )
        if not self.hidden_units or any(u <= 0 for u in self.hidden_units):
            raise ConfigError(
                "hidden_units must be a non-empty list of positive ints, for example [500]. "
                f"Received: hidden_units={self.hidden_units!r}"
            )
        if not self.learning_rate > 0:
            raise ConfigError(
                f"learning_rate must be > 0. Received: learning_rate={self.learning_rate!r}"
            )
        for name in ("clipnorm", "global_clipnorm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0. Received: {name}={value!r}")
        if self.clipnorm is not None and self.global_clipnorm is not None:
            raise ConfigError(
                "clipnorm and global_clipnorm cannot both be set (Keras takes one clipping); "
                "keep global_clipnorm to clip the gradients jointly."
            )
        if not self.log_scale_bound >= 0:
            raise ConfigError(
                "log_scale_bound must be >= 0 (0: softplus scales). "
                f"Received: log_scale_bound={self.log_scale_bound!r}"
            )
        if not self.beta >= 0:
            raise ConfigError(f"beta must be >= 0. Received: beta={self.beta!r}")
        if not self.free_bits >= 0:
            raise ConfigError(f"free_bits must be >= 0. Received: free_bits={self.free_bits!r}")
        _check_choice("strategy", self.strategy, STRATEGIES)
        self._check_data()
        self._check_recipe()
        self._check_model_options()
        self._check_parts()
        self._check_network_options()
        self._check_objective_options()

    def _check_data(self) -> None:
        """The held-out part of an array file, and the streaming buffer."""
        _check_positive("shuffle_buffer", self.shuffle_buffer)
        if self.validation_split is not None and not 0 < self.validation_split < 1:
            raise ConfigError(
                "validation_split must be a fraction in (0, 1), e.g. 0.1. Received: "
                f"validation_split={self.validation_split!r}"
            )
        array_file = self.dataset.lower().endswith(_ARRAY_FILES)
        for key in ("validation_split", "eval_data"):
            if getattr(self, key) is not None and not array_file:
                raise ConfigError(
                    f"{key} applies to array-file data sets (.npz/.npy), not to "
                    f"dataset={self.dataset!r}, which has its own splits: use eval_split."
                )
        if self.eval_data is not None and not self.eval_data.lower().endswith(_ARRAY_FILES):
            raise ConfigError(
                f"eval_data must be a .npz or .npy file. Received: eval_data={self.eval_data!r}"
            )

    def _check_recipe(self) -> None:
        """The optimisation options: schedule, weight averaging, time budget."""
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.ema_momentum is not None and not 0 < self.ema_momentum < 1:
            raise ConfigError(
                f"ema_momentum must be in (0, 1), e.g. 0.999. Received: "
                f"ema_momentum={self.ema_momentum!r}"
            )
        if not 0 <= self.weight_decay < 1:
            raise ConfigError(
                f"weight_decay must be in [0, 1), e.g. 0.01 (0: off). Received: "
                f"weight_decay={self.weight_decay!r}"
            )
        starts = self.start_samples is not None or self.start_samples_epochs != 0
        if starts and not (
            (self.start_samples or 0) > 0 and 0 < self.start_samples_epochs < self.epochs
        ):
            raise ConfigError(
                "start_samples and start_samples_epochs go together: a positive start_samples "
                "for 0 < start_samples_epochs < epochs (--start-samples 5 "
                f"--start-samples-epochs 60). Received: start_samples={self.start_samples!r}, "
                f"start_samples_epochs={self.start_samples_epochs!r}, epochs={self.epochs!r}"
            )
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise ConfigError(
                "time_budget_minutes must be > 0. Received: "
                f"time_budget_minutes={self.time_budget_minutes!r}"
            )

    def _check_parts(self) -> None:
        """Registered names only, and component counts only for parts that have components."""
        _check_choice("likelihood", self.likelihood, (*registry.names("likelihood"), None))
        for kind in ("posterior", "prior", "objective", "network"):
            if not (kind == "prior" and self._check_conditional_prior()):
                _check_choice(kind, getattr(self, kind), registry.names(kind))
        _check_choice("gradient_estimator", self.gradient_estimator, GRADIENT_ESTIMATORS)
        for kind in ("prior", "likelihood"):
            key, name = f"{kind}_components", getattr(self, kind)
            if getattr(self, key) is not None and name is not None:
                if component_default(kind, name) is None:
                    takes = [n for n in registry.names(kind) if component_default(kind, n)]
                    raise ConfigError(
                        f"{key} applies to a {kind} with components ({', '.join(takes)}); "
                        f"{kind}={name!r} has none. Remove {key} or choose such a {kind}."
                    )

    def _check_conditional_prior(self) -> bool:
        """True for the conditional VAE's own prior p(z|y); the VampPrior refused with it."""
        if self.prior == CONDITIONAL_PRIOR and not self.conditional:
            raise ConfigError(
                f"prior={CONDITIONAL_PRIOR!r} is p(z|y) of a conditional VAE; add "
                "--conditional or choose another prior."
            )
        if self.conditional and self.prior == "vamp":
            raise ConfigError(
                "prior='vamp' does not combine with conditional=True (its pseudo-inputs have "
                f"no label); choose --prior standard, mixture or {CONDITIONAL_PRIOR}."
            )
        return self.prior == CONDITIONAL_PRIOR

    def _check_model_options(self) -> None:
        """The VQ-VAE's values, and options of another model than the chosen one refused."""
        _check_choice("model", self.model, registry.names("model"))
        _check_choice("codebook_update", self.codebook_update, CODEBOOK_UPDATES)
        _check_choice("precision", self.precision, PRECISIONS)
        for name in ("codebook_size", "code_dim", "prior_channels", "prior_layers",
                     "prior_hidden_units", "conv_kernel_size"):  # fmt: skip
            _check_positive(name, getattr(self, name))
        if not self.conv_filters or min(self.conv_filters) < 1:
            raise ConfigError(
                "conv_filters must be a non-empty list of positive ints, for example [32, 64]. "
                f"Received: conv_filters={self.conv_filters!r}"
            )
        for name, value in (("codebook_decay", self.codebook_decay),
                            ("restart_threshold", self.restart_threshold),
                            ("commitment_weight", self.commitment_weight)):  # fmt: skip
            if not 0 <= value < (math.inf if name == "commitment_weight" else 1):
                allowed = ">= 0" if name == "commitment_weight" else "in [0, 1)"
                raise ConfigError(f"{name} must be {allowed}. Received: {name}={value!r}")
        foreign: dict[tuple[str, ...], list[str]] = {}
        for key, owners in _option_owners().items():
            if self.model not in owners and getattr(self, key) != _default(key):
                foreign.setdefault(tuple(owners), []).append(f"{key}={getattr(self, key)!r}")
        for owners, given in foreign.items():
            verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
            raise ConfigError(
                f"{', '.join(given)} {verb} only to model={' or '.join(map(repr, owners))}, "
                f"not to model={self.model!r}; remove {them} or choose --model {owners[0]}."
            )
        if self.model == "vqvae-prior" and self.vqvae_run is None:
            raise ConfigError(
                "model='vqvae-prior' needs vqvae_run, the run directory of a trained VQ-VAE "
                "(--vqvae-run RUN_DIR)."
            )

    def _check_network_options(self) -> None:
        """Options of another network family than the chosen one are refused (by the kinds
        that take `network`; the VQ-VAE's encoder is always convolutional)."""
        chooses = self.model in _option_owners().get("network", [])
        for network, options in NETWORK_OPTIONS.items():
            given = [f"{k}={getattr(self, k)!r}" for k in options
                     if getattr(self, k) != _default(k)]  # fmt: skip
            if given and chooses and self.network != network:
                verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
                raise ConfigError(
                    f"{', '.join(given)} {verb} only to network={network!r}, not to "
                    f"network={self.network!r}; add --network {network} or remove {them}."
                )

    def network_options(self) -> dict[str, Any]:
        """The extra arguments of the network family's `pair` (`keras_vae.mlp_vae`'s
        `network_options`), e.g. `{"filters": [32, 64], "kernel_size": 3}` for `conv`."""
        options = NETWORK_OPTIONS.get(self.network, {})
        return {argument: getattr(self, key) for key, argument in options.items()}

    def _check_objective_options(self) -> None:
        """Options of another objective than the chosen one are refused, not ignored."""
        owners: dict[str, list[str]] = {}  # option -> the objectives that take it
        for objective, options in _OBJECTIVE_OPTIONS.items():
            for key in options:
                owners.setdefault(key, []).append(objective)
        unused = {k: v for options in _OBJECTIVE_OPTIONS.values() for k, v in options.items()}
        foreign = [
            f"{key}={getattr(self, key)!r}"
            for key, objectives in owners.items()
            if self.objective not in objectives and getattr(self, key) != unused[key]
        ]
        if foreign:
            other = owners[foreign[0].split("=")[0]]
            verb, them = ("applies", "it") if len(foreign) == 1 else ("apply", "them")
            raise ConfigError(
                f"{', '.join(foreign)} {verb} only to objective={' or '.join(map(repr, other))}, "
                f"not to objective={self.objective!r}; remove {them} or choose --objective "
                f"{other[0]}."
            )
        self._check_disentangling_options()
        self._check_free_bits_groups()
        if self.kl_cycle_epochs and not 0 < self.kl_warmup_epochs < self.kl_cycle_epochs:
            raise ConfigError(
                "kl_cycle_epochs needs 0 < kl_warmup_epochs < kl_cycle_epochs (each cycle "
                "warms up, then trains at the full weight). Received: kl_cycle_epochs="
                f"{self.kl_cycle_epochs}, kl_warmup_epochs={self.kl_warmup_epochs}"
            )

    def _check_free_bits_groups(self) -> None:
        groups, sizes = self.free_bits_groups, self.latent_dims
        if groups is None:
            return
        if not self.free_bits:
            raise ConfigError(
                "free_bits_groups groups the free bits of free_bits, which is 0; add "
                "--free-bits (e.g. 0.125) or remove --free-bits-groups."
            )
        if len(groups) != len(sizes) or any(
            g < 1 or d % g for g, d in zip(groups, sizes, strict=False)
        ):
            raise ConfigError(
                f"free_bits_groups needs one int per stochastic layer of latent_dims {sizes}, "
                "each dividing the layer's size (1: the whole layer is one group). "
                f"Received: free_bits_groups={groups!r}"
            )

    def _check_disentangling_options(self) -> None:
        """The values of beta-TCVAE's, the capacity-annealed beta-VAE's and FactorVAE's."""
        _check_choice("tc_estimator", self.tc_estimator, TC_ESTIMATORS)
        for name in ("tc_weight", "capacity", "capacity_weight"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ConfigError(f"{name} must be >= 0. Received: {name}={value!r}")
        if self.capacity_epochs is not None and self.capacity_epochs < 0:
            raise ConfigError(
                f"capacity_epochs must be an int >= 0. Received: capacity_epochs="
                f"{self.capacity_epochs!r}"
            )
        if not self.discriminator_units or min(self.discriminator_units) < 1:
            raise ConfigError(
                "discriminator_units must be a non-empty list of positive ints, for example "
                f"[1000, 1000]. Received: discriminator_units={self.discriminator_units!r}"
            )
        if not self.discriminator_learning_rate > 0:
            raise ConfigError(
                "discriminator_learning_rate must be > 0. Received: "
                f"discriminator_learning_rate={self.discriminator_learning_rate!r}"
            )

    def resolved(self) -> TrainConfig:
        """A copy with `prior_components` and `likelihood_components` set to the parts' own
        defaults where None and the part has components (what config.json records)."""
        changes = {}
        for kind in ("prior", "likelihood"):
            key, name = f"{kind}_components", getattr(self, kind)
            if getattr(self, key) is None and name is not None:
                changes[key] = component_default(kind, name)
        return self.replace(**changes) if changes else self

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Builds a config, refusing unknown keys with the list of valid ones."""
        if not isinstance(values, dict):
            raise ConfigError(
                f"{source} must be a mapping of option names to values. "
                f"Received: {type(values).__name__}"
            )
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(
                f"{source} has unknown keys {unknown}. Valid keys: {', '.join(valid)}"
            )
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Reads a `.json`, `.yaml` or `.yml` file (data only; nothing in it is executed)."""
        return cls.from_dict(read_config_file(path), source=f"config file {path}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` applied and validated."""
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def component_default(kind: str, name: str) -> int | None:
    """The default `num_components` of the registered part `kind`/`name`, None if it has no
    components (read from its constructor: the part states its own default)."""
    if (kind, name) == ("prior", CONDITIONAL_PRIOR):  # not registered: no components
        return None
    parameter = inspect.signature(registry.get(kind, name).__init__).parameters.get(
        "num_components"
    )
    return None if parameter is None else parameter.default


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parses a JSON or YAML config file into a dict, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}. Give the path of a .json or .yaml file.")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text) or {}
        if path.suffix == ".json":
            return json.loads(text)
    except Exception as error:  # noqa: BLE001 - any parse error becomes one line
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"Cannot parse config file {path}: {first_line}") from None
    raise ConfigError(f"Config file {path} must end in .json, .yaml or .yml.")


def _default(name: str) -> Any:
    """The default value of the TrainConfig field `name`."""
    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    factory = field.default_factory
    return factory() if factory is not dataclasses.MISSING else field.default


@functools.cache
@typing.no_type_check
def _field_types() -> Mapping[str, Any]:
    """TrainConfig's field annotations, resolved once (`get_type_hints` evaluates every string
    annotation again on each call: it took 0.8 s of a tiny training, called per field)."""
    return types.MappingProxyType(typing.get_type_hints(TrainConfig))


def _check_type(name: str, value: Any, annotation: Any) -> None:
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        annotation = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        ok = isinstance(value, list) and all(_is_instance(v, args[0]) for v in value)
        expected = f"a list of {args[0].__name__}"
    else:
        ok = _is_instance(value, annotation)
        expected = annotation.__name__
    if not ok:
        raise ConfigError(f"{name} must be {expected}. Received: {name}={value!r}")


def _is_instance(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be a positive int. Received: {name}={value!r}")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        shown = [c for c in choices if c is not None]
        raise ConfigError(f"{name} must be one of {shown}. Received: {name}={value!r}")
