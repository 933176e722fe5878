"""The `keras-vae` command: a thin layer over the workflows (keras_vae.workflows).

    keras-vae train    --dataset NAME|PATH [options] --output RUN_DIR
    keras-vae evaluate RUN_DIR [--split test] [--json]
    keras-vae export   RUN_DIR --output EXPORT_DIR [--version N] [--quantize ...]
    keras-vae plot     RUN_DIR --kind samples|reconstructions|manifold|latents|interpolation
                       --output FILE.png

Settings come from the defaults, then `--config FILE`, then the options given on the command
line. Mistakes the user can fix (bad options, bad data, missing files) print one line and exit
with status 2; set KERAS_VAE_DEBUG=1 to see the traceback and TensorFlow's own start-up log
(hidden otherwise: see keras_vae._quiet).
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
from keras_vae._internal.lock import DirectoryInUseError  # noqa: E402
from keras_vae.data import pipeline as data
from keras_vae.models.kind import kind_of  # noqa: E402
from keras_vae.parts.objectives import GRADIENT_ESTIMATORS  # noqa: E402
from keras_vae.runs.config import ConfigError, TrainConfig  # noqa: E402
from keras_vae.serving.checks import ExportCheckError  # noqa: E402
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


# (option, config key, type, help); every default lives in TrainConfig, the choices in the
# registry: neither is repeated here.
_TRAIN_OPTIONS = (
    ("--dataset", "dataset", str, "tfds name (binarized_mnist, mnist, frey_face) or .npz/.npy"),
    ("--data-dir", "data_dir", str, "tfds data directory (default: $TFDS_DATA_DIR)"),
    ("--manual-dir", "manual_dir", str, "directory with manually downloaded raw files"),
    ("--eval-split", "eval_split", str, "held-out split for validation and final ELBO"),
    ("--validation-split", "validation_split", float, ".npz/.npy: fraction held out (0.1)"),
    ("--eval-data", "eval_data", str, ".npz/.npy: held-out images file (the test split)"),
    ("--shuffle-buffer", "shuffle_buffer", int, "tfds: examples in the shuffle buffer"),
    ("--likelihood", "likelihood", str, f"{_names('likelihood')} (default: by dataset)"),
    ("--likelihood-components", "likelihood_components", int, "M per pixel (logistic: 5)"),
    ("--posterior", "posterior", str, f"q(z|x): {_names('posterior')}"),
    ("--prior", "prior", str, f"p(z): {_names('prior')}"),
    ("--prior-components", "prior_components", int, "K (default: 10 mixture, 500 vamp)"),
    ("--objective", "objective", str, f"{_names('objective')}; iwae uses K = --samples"),
    ("--gradient-estimator", "gradient_estimator", str, f"iwae: {', '.join(GRADIENT_ESTIMATORS)}"),
    ("--kl-warmup-epochs", "kl_warmup_epochs", int, "elbo: KL weight 0 -> beta over N epochs"),
    ("--kl-cycle-epochs", "kl_cycle_epochs", int, "elbo: restart the warm-up every N epochs"),
    ("--free-bits", "free_bits", float, "elbo: lambda, free nats per latent dimension"),
    ("--latent-dim", "latent_dim", int, "size of z"),
    ("--activation", "activation", str, "hidden activation (paper: tanh)"),
    ("--network", "network", str, f"encoder/decoder bodies: {_names('network')}"),
    ("--lr-schedule", "lr_schedule", str, "constant, or cosine decay to 0 over the epochs"),
    ("--ema-momentum", "ema_momentum", float, "average the weights (EMA), e.g. 0.999"),
    ("--weight-decay", "weight_decay", float, "decoupled weight decay (AdamW), e.g. 0.01"),
    ("--time-budget-minutes", "time_budget_minutes", float, "stop after N minutes of training"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--steps-per-epoch", "steps_per_epoch", int, "steps per epoch (default: one pass)"),
    ("--steps-per-execution", "steps_per_execution", int, "train steps per compiled call"),
    ("--early-stopping", "early_stopping", int, "stop after N epochs without a better eval bound"),
    ("--image-every", "image_every", int, "TensorBoard/PNG pictures every N epochs (0: off)"),
    ("--batch-size", "batch_size", int, "global batch size"),
    ("--learning-rate", "learning_rate", float, "Adam step size"),
    ("--clipnorm", "clipnorm", float, "clip each gradient to this L2 norm"),
    ("--samples", "samples", int, "L, Monte Carlo samples of z per example (iwae: K)"),
    ("--start-samples", "start_samples", int, "samples of the first epochs (a cheap start)"),
    ("--start-samples-epochs", "start_samples_epochs", int, "epochs with --start-samples"),
    ("--beta", "beta", float, "elbo: KL weight of the loss (1 = ELBO)"),
    ("--seed", "seed", int, "seed of weights, shuffling and noise"),
    ("--strategy", "strategy", str, "auto, default, mirrored or multiworker (reads TF_CONFIG)"),
    ("--cpu-replicas", "cpu_replicas", int, "split the CPU into N logical devices"),
    ("--limit", "limit", int, "use only the first N training examples"),
    ("--keep-backups", "keep_backups", int, "verified per-epoch backups kept (newest resumed)"),
    ("--model", "model", str, "vae, hvae, vqvae, or vqvae-prior (needs --vqvae-run)"),
    ("--codebook-size", "codebook_size", int, "vqvae: K, the number of codes"),
    ("--code-dim", "code_dim", int, "vqvae: D, the size of each code"),
    ("--commitment-weight", "commitment_weight", float, "vqvae: beta of the commitment loss"),
    ("--codebook-update", "codebook_update", str, "vqvae: ema, or loss (a trained codebook)"),
    ("--codebook-decay", "codebook_decay", float, "vqvae: decay of the EMA codebook"),
    ("--restart-threshold", "restart_threshold", float, "vqvae: restart rarer codes (0: off)"),
    ("--conv-kernel-size", "conv_kernel_size", int, "conv, vqvae: side k of the k x k kernels"),
    ("--vqvae-run", "vqvae_run", str, "vqvae-prior: run directory of the trained VQ-VAE"),
    ("--prior-channels", "prior_channels", int, "vqvae-prior: PixelCNN channels"),
    ("--prior-layers", "prior_layers", int, "vqvae-prior: gated PixelCNN layers"),
    ("--prior-hidden-units", "prior_hidden_units", int, "vqvae-prior: units before the logits"),
)


def _version() -> str:
    import keras_vae

    return keras_vae.__version__


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The `keras-vae` parser and its subcommands' parsers by name (the docs site's CLI
    reference is generated from it)."""
    parser = _Parser(prog="keras-vae", description="Variational autoencoders for Keras 3.")
    parser.add_argument("--version", action="version", version=f"keras-vae {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train a VAE and write a run directory")
    for option, key, kind, text in _TRAIN_OPTIONS:
        train.add_argument(option, dest=key, type=kind, default=argparse.SUPPRESS, help=text)
    train.add_argument(
        "--hidden-units", dest="hidden_units", type=int, nargs="+",
        default=argparse.SUPPRESS, help="hidden layer sizes, e.g. 500 (paper) or 500 500",
    )  # fmt: skip
    train.add_argument(
        "--conv-filters", dest="conv_filters", type=int, nargs="+", default=argparse.SUPPRESS,
        help="conv, vqvae: channels of each stride-2 conv level (depth: their count), e.g. "
        "32 64 (a 7x7 map for 28x28)",
    )  # fmt: skip
    train.add_argument(
        "--latent-dims", dest="latent_dims", type=int, nargs="+", default=argparse.SUPPRESS,
        help="hvae: size of each stochastic layer, z_1 (next to x) first, e.g. 64 32",
    )  # fmt: skip
    train.add_argument(
        "--xla", dest="jit_compile", action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS, help="compile with XLA (default: on for one device)",
    )  # fmt: skip
    train.add_argument(
        "--dynamic-binarization", dest="dynamic_binarization",
        action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
        help="redraw binary images from grey levels every epoch",
    )  # fmt: skip
    train.add_argument(
        "--conditional", dest="conditional", action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS, help="a conditional VAE q(z|x,y), p(x|z,y) given each "
        "image's label y (labelled data; --prior conditional learns p(z|y))",
    )  # fmt: skip
    train.add_argument("--config", type=Path, help="JSON or YAML file of training options")
    train.add_argument("--output", type=Path, help="run directory (default: runs/<dataset>)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run")
    train.add_argument("--quiet", action="store_true", help="no per-epoch progress")

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
        "evaluate": (evaluate, "held-out metrics of a run (a VAE: ELBO, NLL, bits/dim)"),
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
    "hidden_units",
    "conv_filters",
    "latent_dims",
    "jit_compile",
    "dynamic_binarization",
    "conditional",
}


def _default_output(config: TrainConfig) -> Path:
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
        message = data.data_check_message(error)
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
