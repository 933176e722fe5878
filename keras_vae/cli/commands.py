"""The `keras-vae` command: a thin layer over the workflows (keras_vae.workflows).

    keras-vae train    --dataset NAME|PATH [options] --output RUN_DIR
    keras-vae evaluate RUN_DIR [--split test] [--json]
    keras-vae export   RUN_DIR --output EXPORT_DIR [--version N] [--quantize ...]
    keras-vae plot     RUN_DIR --kind samples|reconstructions|manifold|latents|interpolation|
                       traversals|kl|... --output FILE.png

Settings come from the defaults, then `--config FILE`, then the options given on the command
line. Mistakes the user can fix (bad options, bad data, missing files) print one line and exit
with status 2; set KERAS_VAE_DEBUG=1 to see the traceback and TensorFlow's own start-up log
(hidden otherwise: see keras_vae._internal.quiet).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

# importing keras_vae (the package, before this module) hides TensorFlow's start-up log
import tensorflow as tf  # noqa: E402

from keras_vae import registry  # noqa: E402
from keras_vae._internal import xla_cache  # noqa: E402
from keras_vae._internal.lock import DirectoryInUseError  # noqa: E402
from keras_vae.data import pipeline as data
from keras_vae.models.kind import kind_of  # noqa: E402
from keras_vae.parts.disentangling_objectives import TC_ESTIMATORS  # noqa: E402
from keras_vae.parts.objectives import GRADIENT_ESTIMATORS  # noqa: E402
from keras_vae.runs.config import ConfigError, TrainConfig  # noqa: E402
from keras_vae.serving.checks import ExportCheckError  # noqa: E402
from keras_vae.workflows.arguments import add_renamed_option  # noqa: E402
from keras_vae.workflows.train import (  # noqa: E402
    NonFiniteLossError,
    ResourceError,
    WorkerLostError,
    describe_resource_error,
)

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors list the valid options."""

    def error(self, message):
        options = sorted({s for a in self._actions for s in a.option_strings if s.startswith("--")})
        valid = f" Valid options: {' '.join(options)}" if options else ""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}.{valid}\n")


def _names(kind: str) -> str:
    return ", ".join(registry.names(kind))


# train's options by group: (option, config key, type, help). Every default lives in
# TrainConfig and is shown from there, the choices come from the registry: neither is repeated.
_TRAIN_GROUPS = {
    "data": (
        ("--dataset", "dataset", str, "tfds name (binarized_mnist, mnist, frey_face, "
         "synthetic_dsprites[/small]: generated offline) or an .npz/.npy file"),
        ("--data-dir", "data_dir", str, "tfds data directory (default: $TFDS_DATA_DIR)"),
        ("--manual-dir", "manual_dir", str, "directory with manually downloaded raw files"),
        ("--eval-split", "eval_split", str, "held-out split for validation and final metrics"),
        ("--validation-split", "validation_split", float, ".npz/.npy: fraction held out "
         "(0.1 when there is no --eval-data)"),
        ("--eval-data", "eval_data", str, ".npz/.npy: held-out images file (the test split)"),
        ("--shuffle-buffer", "shuffle_buffer", int, "tfds: examples in the shuffle buffer"),
        ("--limit", "limit", int, "use only the first N training examples"),
    ),
    "model kind and parts": (
        ("--model", "model", str, "the model kind: {model}"),
        ("--likelihood", "likelihood", str, "p(x|z): {likelihood} (default: by dataset)"),
        ("--likelihood-components", "likelihood_components", int, "M per pixel (logistic: 5)"),
        ("--posterior", "posterior", str, "q(z|x): {posterior}"),
        ("--prior", "prior", str, "p(z): {prior}"),
        ("--prior-components", "prior_components", int, "K (default: 10 mixture, 500 vamp)"),
        ("--latent-dim", "latent_dim", int, "vae: size of z"),
        ("--log-scale-bound", "log_scale_bound", float, "hvae: b of the top-down scales, "
         "exp(b tanh(s/b)); 0: softplus floored at 1e-4"),
    ),
    "objective": (
        ("--objective", "objective", str, "{objective}; iwae uses K = --samples"),
        ("--samples", "samples", int, "L, Monte Carlo samples of z per example (iwae: K)"),
        ("--gradient-estimator", "gradient_estimator", str, "iwae: {estimators}"),
        ("--beta", "beta", float, "elbo: KL weight of the loss (1 = ELBO)"),
        ("--kl-warmup-epochs", "kl_warmup_epochs", int, "elbo: KL weight 0 -> beta over N epochs"),
        ("--kl-cycle-epochs", "kl_cycle_epochs", int, "elbo: restart the warm-up every N epochs"),
        ("--free-bits", "free_bits", float, "elbo: lambda, free nats per latent dimension"),
        ("--tc-weight", "tc_weight", float, "betatc, factorvae: weight of the total "
         "correlation (default: 6 betatc, 10 factorvae)"),
        ("--tc-estimator", "tc_estimator", str, "betatc: estimate of q(z), {tc_estimators} "
         "(mws inflates the reported tc)"),
        ("--capacity", "capacity", float, "annealed_capacity: C_max, the target KL in nats"),
        ("--capacity-epochs", "capacity_epochs", int, "annealed_capacity: C grows 0 -> C_max "
         "over N epochs (default: the paper's 100,000 steps)"),
        ("--capacity-weight", "capacity_weight", float, "annealed_capacity: gamma of |KL - C|"),
        ("--discriminator-learning-rate", "discriminator_learning_rate", float, "factorvae: "
         "the discriminator's Adam step size"),
        ("--start-samples", "start_samples", int, "samples of the first epochs (a cheap start)"),
        ("--start-samples-epochs", "start_samples_epochs", int, "epochs with --start-samples"),
    ),
    "network": (
        ("--network", "network", str, "encoder/decoder bodies: {network}"),
        ("--activation", "activation", str, "hidden activation (the paper's: tanh)"),
        ("--conv-kernel-size", "conv_kernel_size", int, "conv, vqvae: side k of the kernels"),
    ),
    "optimisation": (
        ("--epochs", "epochs", int, "training epochs"),
        ("--batch-size", "batch_size", int, "global batch size"),
        ("--learning-rate", "learning_rate", float, "Adam step size"),
        ("--lr-schedule", "lr_schedule", str, "constant, or cosine decay to 0 over the epochs"),
        ("--ema-momentum", "ema_momentum", float, "average the weights (EMA), e.g. 0.999"),
        ("--weight-decay", "weight_decay", float, "decoupled weight decay (AdamW), e.g. 0.05"),
        ("--clipnorm", "clipnorm", float, "clip each gradient to this L2 norm"),
        ("--global-clipnorm", "global_clipnorm", float, "clip all gradients jointly to this "
         "global L2 norm (not with --clipnorm)"),
        ("--early-stopping-patience", "early_stopping", int, "stop after N epochs without a "
         "better held-out bound and keep the best epoch's weights"),
        ("--steps-per-epoch", "steps_per_epoch", int, "steps per epoch (default: one pass)"),
        ("--seed", "seed", int, "seed of weights, shuffling and noise"),
    ),
    "run": (
        ("--time-budget-minutes", "time_budget_minutes", float, "stop after N minutes of "
         "training"),
        ("--image-every", "image_every", int, "TensorBoard/PNG pictures every N epochs (0: off)"),
        ("--keep-backups", "keep_backups", int, "verified per-epoch backups kept"),
    ),
    "distribution and speed": (
        ("--strategy", "strategy", str, "auto, default, mirrored or multiworker (TF_CONFIG)"),
        ("--cpu-replicas", "cpu_replicas", int, "split the CPU into N logical devices"),
        ("--steps-per-execution", "steps_per_execution", int, "train steps per compiled call"),
        ("--precision", "precision", str, "vae, hvae: float32, mixed_bfloat16 (on CPUs: no XLA, "
         "AMX matmuls) or mixed_float16 (loss scaling); matmuls low, densities float32"),
    ),
    "vqvae": (
        ("--codebook-size", "codebook_size", int, "K, the number of codes"),
        ("--code-dim", "code_dim", int, "D, the size of each code"),
        ("--commitment-weight", "commitment_weight", float, "beta of the commitment loss"),
        ("--codebook-update", "codebook_update", str, "ema, or loss (a trained codebook)"),
        ("--codebook-decay", "codebook_decay", float, "decay of the EMA codebook"),
        ("--restart-threshold", "restart_threshold", float, "restart rarer codes (0: off)"),
    ),
    "vqvae-prior": (
        ("--vqvae-run", "vqvae_run", str, "run directory of the trained VQ-VAE"),
        ("--pixelcnn-channels", "prior_channels", int, "channels of the gated PixelCNN"),
        ("--pixelcnn-layers", "prior_layers", int, "gated PixelCNN layers"),
        ("--pixelcnn-hidden-units", "prior_hidden_units", int, "units before the logits"),
    ),
}  # fmt: skip
#: Old spellings, still accepted with a one-line note.
_RENAMED = {
    "--early-stopping": "--early-stopping-patience",
    "--prior-channels": "--pixelcnn-channels",
    "--prior-layers": "--pixelcnn-layers",
    "--prior-hidden-units": "--pixelcnn-hidden-units",
}
_TRAIN_OPTIONS = tuple(option for group in _TRAIN_GROUPS.values() for option in group)
_METAVARS = {int: "N", float: "X", str: "NAME"}
_EPILOG = """examples:
  keras-vae train --dataset binarized_mnist --epochs 10 --output runs/mnist
  keras-vae train --prior vamp --objective iwae --samples 5 --network gated_mlp \\
      --hidden-units 300 300 --latent-dim 40 --output runs/vamp
  keras-vae train --dataset mydata.npz --network conv --likelihood logistic --output runs/mine
  keras-vae train --model hvae --latent-dims 64 32 --activation elu --output runs/hvae
  keras-vae train --config recipe.yaml --epochs 50    # the command line wins over the file
"""


def _help(key: str, text: str) -> str:
    """The help text with the registry's choices filled in and TrainConfig's default."""
    from keras_vae.runs.config import _default

    choices = {kind: _names(kind) for kind in ("likelihood", "posterior", "prior", "objective",
                                                "network", "model")}  # fmt: skip
    text = text.format(estimators=", ".join(GRADIENT_ESTIMATORS),
                       tc_estimators=", ".join(TC_ESTIMATORS), **choices)  # fmt: skip
    default = _default(key)
    if default is None or "default:" in text:
        return text
    shown = " ".join(map(str, default)) if isinstance(default, list) else default
    return f"{text} (default: {shown})"


# train's list options (several ints) and on/off flags: (group, option, config key, help)
_LIST_OPTIONS = (
    ("network", "--hidden-units", "hidden_units", "hidden layer sizes, e.g. 500 or 300 300"),
    ("network", "--conv-filters", "conv_filters", "conv, vqvae: channels of each stride-2 "
     "conv level (depth: their count); hvae conv: one value, every feature map's"),
    ("model kind and parts", "--latent-dims", "latent_dims", "hvae: size of each "
     "stochastic layer, z_1 (next to x) first (conv: channels of each z_i map)"),
    ("network", "--top-down-units", "top_down_units", "hvae: dense layers of every "
     "top-down cell (default: --hidden-units reversed)"),
    ("network", "--posterior-units", "posterior_units", "hvae: dense layers of every "
     "posterior cell before its projection (default: none)"),
    ("objective", "--free-bits-groups", "free_bits_groups", "hvae, --free-bits: per "
     "layer, how many groups of its units share a floor (1: the whole layer; default: "
     "each unit)"),
    ("objective", "--discriminator-units", "discriminator_units", "factorvae: hidden "
     "layer sizes of the discriminator"),
)  # fmt: skip

_FLAG_OPTIONS = (
    ("distribution and speed", "--xla", "jit_compile", "compile with XLA (default: on for "
     "one device)"),
    ("data", "--dynamic-binarization", "dynamic_binarization", "redraw binary images from "
     "grey levels every epoch"),
    ("model kind and parts", "--conditional", "conditional", "vae: q(z|x,y), p(x|z,y) given "
     "each image's label y (--prior conditional learns p(z|y))"),
    ("network", "--shared-bottom-up", "shared_bottom_up", "hvae: every layer's posterior "
     "reads the one bottom-up block's features (the VampPrior paper's HVAE)"),
    ("network", "--top-down-skip", "top_down_skip", "hvae: each top-down cell carries "
     "its input past its dense layers (z_2.. reach the decoder directly)"),
)  # fmt: skip


def _add_train_options(train: argparse.ArgumentParser) -> None:
    """train's options in their groups, with defaults and choices shown."""
    groups = {}
    for title, options in _TRAIN_GROUPS.items():
        groups[title] = train.add_argument_group(title)
        for option, key, kind, text in options:
            groups[title].add_argument(option, dest=key, type=kind, default=argparse.SUPPRESS,
                                       metavar=_METAVARS[kind], help=_help(key, text))  # fmt: skip
    for old, new in _RENAMED.items():
        key, kind = next((k, t) for o, k, t, _ in _TRAIN_OPTIONS if o == new)
        add_renamed_option(train, old, new, key, type=kind, default=argparse.SUPPRESS)
    for title, option, key, text in _LIST_OPTIONS:
        groups[title].add_argument(option, dest=key, type=int, nargs="+", metavar="N",
                                   default=argparse.SUPPRESS, help=_help(key, text))  # fmt: skip
    for title, option, key, text in _FLAG_OPTIONS:
        groups[title].add_argument(option, dest=key, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=text)  # fmt: skip
    run = groups["run"]
    run.add_argument("--config", type=Path, metavar="FILE", help="JSON or YAML file of options")
    run.add_argument("--output", type=Path, metavar="DIR", help="run directory (default: "
                     "runs/<dataset>)")  # fmt: skip
    run.add_argument("--overwrite", action="store_true", help="replace an existing run")
    run.add_argument("--quiet", action="store_true", help="no per-epoch progress")


def _version() -> str:
    import keras_vae

    return keras_vae.__version__


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The `keras-vae` parser and its subcommands' parsers by name (the docs site's CLI
    reference is generated from it)."""
    parser = _Parser(prog="keras-vae", description="Variational autoencoders for Keras 3.")
    parser.add_argument("--version", action="version", version=f"keras-vae {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser(
        "train", help="train a model and write a run directory", epilog=_EPILOG,
        description="Trains a model of the chosen kind and writes a run directory; rerunning\n"
        "the same command resumes it. Settings: the defaults shown, then --config FILE, then\n"
        "the command line.", formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    _add_train_options(train)

    found = {"train": train}
    for name, (module, text) in _workflows().items():
        found[name] = commands.add_parser(
            name, help=text, description=module.__doc__.split("\n\n")[0]
        )
        module.add_cli_arguments(found[name])
    return parser, found


def _workflows() -> dict:
    """The subcommands besides `train`: name -> (workflow module, one-line help). Each module
    has `add_cli_arguments(parser)` and `run_cli(args)`."""
    from keras_vae.workflows import encode, evaluate, export, plot, sample

    return {
        "evaluate": (evaluate, "held-out metrics of a run, or --disentanglement scores"),
        "sample": (sample, "draw images from a run's model to .npy or .png"),
        "encode": (encode, "a data set to latents (.npz), optionally for TensorBoard's Projector"),
        "plot": (plot, "reconstructions, samples, manifold, latents, ... as a PNG"),
        "export": (export, "SavedModels (TF Serving) and TFLite files of a run"),
    }


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the `--config` file, then the options given on the command line."""
    given = {key: value for key, value in vars(args).items() if key in _CONFIG_KEYS}
    values = {}
    if args.config is not None:
        from keras_vae.runs.config import read_config_file

        values = read_config_file(args.config)
        TrainConfig.from_dict(values, source=f"config file {args.config}")
    return TrainConfig.from_dict({**values, **given})


def train_config(argv: Sequence[str]) -> TrainConfig:
    """The TrainConfig that `keras-vae train ARGV` starts from (before the data resolve the
    likelihood), e.g. `train_config(["--prior", "vamp"])`."""
    parser, _ = build_parser()
    return config_from_args(parser.parse_args(["train", *argv]))


_CONFIG_KEYS = {key for _, key, _, _ in _TRAIN_OPTIONS} | {
    key for _, _, key, _ in (*_LIST_OPTIONS, *_FLAG_OPTIONS)
}


def _default_output(config: TrainConfig) -> Path:
    if config.dataset in data.DATASET_SPECS:  # a tfds name, maybe with its config
        return Path("runs") / config.dataset.replace("/", "_")
    return Path("runs") / Path(config.dataset).stem


def _run_train(args: argparse.Namespace) -> int:
    from keras_vae.workflows import train as training

    config = config_from_args(args)
    output = args.output or _default_output(config)
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)  # 2: a line per epoch
    progress = _PROGRESS.print  # first: what trains on what, then any data warnings
    metrics = training.train(
        config, output=output, verbose=verbose, overwrite=args.overwrite, progress=progress
    )
    print(kind_of(config).summary_line(metrics))
    if metrics.get("kept_for"):  # early stopping: the model holds the best epoch's weights
        print(
            f"kept the weights of epoch {metrics['kept_epoch']} of {metrics['epochs']} "
            f"({metrics['kept_for']} {metrics['kept_value']:.2f}); the metrics above are theirs"
        )
    if not metrics["chief"]:
        print(f"the chief worker writes the run files to {output}")
        return 0
    print(f"wrote {output}/model.keras, config.json, history.csv, metrics.json")
    print(f"TensorBoard: tensorboard --logdir {output / 'tensorboard'}")
    return 0


class _Progress:
    """Prints progress lines; data warnings raised before the first line (while the data are
    opened) wait for it, so that the first line says what trains on what."""

    def __init__(self):
        self.started = False
        self.waiting: list[str] = []

    def print(self, line: str) -> None:
        print(line, flush=True)
        self.started = True
        self.print_waiting()

    def print_waiting(self) -> None:
        """Prints the waiting warnings (a failed start: they may say why)."""
        for warning in self.waiting:
            print(warning, file=sys.stderr, flush=True)
        self.waiting.clear()

    def warn(self, line: str) -> None:
        if self.started:
            print(line, file=sys.stderr, flush=True)
        else:
            self.waiting.append(line)


_PROGRESS = _Progress()


def _show_warning(command: str, default):
    """`warnings.showwarning` that prints keras_vae's data warnings as one plain line."""

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, data.DataRangeWarning):
            return default(message, category, filename, lineno, file, line)
        _PROGRESS.warn(f"keras-vae {command}: warning: {message}")

    return show


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        return _run_train(args)
    module, _ = _workflows()[args.command]
    return module.run_cli(args)


OVERVIEW = """keras-vae: variational autoencoders for Keras 3 (version {version})

  keras-vae train    --dataset binarized_mnist --epochs 10 --output runs/mnist
  keras-vae evaluate runs/mnist --importance-samples 5000
  keras-vae sample   runs/mnist --output samples.png
  keras-vae encode   runs/mnist test --output latents.npz
  keras-vae plot     runs/mnist --kind manifold --output manifold.png
  keras-vae export   runs/mnist --output export/mnist

keras-vae COMMAND --help lists a command's options; keras-vae --version prints the version.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-vae` console script."""
    parser, commands = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(OVERVIEW.format(version=_version()), end="")
        return 0
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the subcommand, so that its valid options are listed
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    _PROGRESS.started = args.command != "train"  # train's first line: what trains on what
    try:
        if args.command == "train":  # before the first XLA compilation reads TF_XLA_FLAGS
            cache = xla_cache.configure()
            if os.environ.get("KERAS_VAE_DEBUG"):
                print(f"keras-vae train: XLA compilation cache: {cache}", file=sys.stderr)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning(args.command, warnings.showwarning)
            return _run(args)
    except (ConfigError, ValueError, FileExistsError, FileNotFoundError) as error:
        _PROGRESS.print_waiting()
        if os.environ.get("KERAS_VAE_DEBUG"):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"keras-vae {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except (
        NonFiniteLossError, WorkerLostError, ExportCheckError, ResourceError, DirectoryInUseError,
    ) as error:  # fmt: skip
        if os.environ.get("KERAS_VAE_DEBUG"):
            raise
        print(f"keras-vae {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"keras-vae {args.command}: interrupted", file=sys.stderr)
        return 130
    except tf.errors.InvalidArgumentError as error:  # a batch failed the streamed data checks
        message = data.data_check_message(error) or xla_cache.describe_failure(error)
        if message is None or os.environ.get("KERAS_VAE_DEBUG"):
            raise
        print(f"keras-vae {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # memory or disk exhausted in evaluate, export, plot
        message = describe_resource_error(error)
        if message is None or os.environ.get("KERAS_VAE_DEBUG"):
            raise
        print(f"keras-vae {args.command}: error: {message}", file=sys.stderr)
        return 1
    finally:
        _PROGRESS.print_waiting()  # never lost, whatever stopped the command


if __name__ == "__main__":
    sys.exit(main())
