"""`keras-vae export RUN_DIR --output EXPORT_DIR`: the run's model kind writes its
SavedModels and TFLite files (`ModelKind.export`), checked and calibrated on images drawn
from the run's training split (one rule for every kind: `ModelKind.export_images`).

Options that a kind does not take (`ModelKind.export_options`) are refused in one line when
given, the same way for every kind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keras_vae.models.kind import kind_of
from keras_vae.models.vae.export import *  # noqa: F403  (keras_vae.export of 0.2.0)
from keras_vae.models.vae.export import DEFAULT_SCORER_SAMPLES, QUANTIZATIONS
from keras_vae.runs import directory as runs
from keras_vae.runs.config import ConfigError
from keras_vae.runs.splits import open_split
from keras_vae.serving import pipeline
from keras_vae.workflows.arguments import add_data_dir_argument, add_renamed_option

#: The kind-specific export options and their defaults (precision: the run's own).
_DEFAULTS = {"quantize": ["none"], "scorer": True, "scorer_samples": DEFAULT_SCORER_SAMPLES,
             "precision": None}  # fmt: skip


def export_run(
    run_dir: str | Path, export_dir: str | Path, data_dir: str | Path | None = None, **options
) -> dict:
    """Exports the model of a `keras-vae train` run directory, checked on its training data.

    Loads the run (`keras_vae.runs.load_run`), reads its training split (with the labels of
    a kind that uses them) and hands both to the kind's `export`.

    Args:
        run_dir: A run directory written by `keras-vae train`.
        export_dir: Where to export.
        data_dir: The tfds data directory, instead of the one the run recorded.
        **options: The export options (`version`, `tflite`, `overwrite`, `progress`) and
            the kind's (`ModelKind.export_options`: `quantize`; a (hierarchical) VAE's
            `scorer`, `scorer_samples`, `precision`: `"float32"`, `"mixed_bfloat16"` or
            `"mixed_float16"`, the scorer SavedModel computes in that policy, as
            `keras-vae evaluate --precision` does; default: a VAE's own, float32 for a
            hierarchical VAE, whose parts are exported in float32). One the kind does not
            take is refused in one line.

    Returns:
        The export report.
    """
    model, config = runs.load_run(run_dir, data_dir)
    kind = kind_of(config)
    given = {key: options.pop(key) for key in list(options) if key in _DEFAULTS}
    options.update(kind_options(kind, given))
    likelihood = kind.likelihood_name(model)
    # streamed: the kind keeps only its calibration and check images (`export_images`)
    images = open_split(config, "train", likelihood, labels=kind.uses_labels(config))
    return kind.export(model, config, export_dir, images=images, **options)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of `keras-vae export` to `parser`."""
    parser.add_argument("run_dir", help="run directory written by `keras-vae train`")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="export directory, e.g. export/mnist")  # fmt: skip
    parser.add_argument("--version", type=int, default=1, metavar="N",
                        help="TF Serving version (default: 1)")  # fmt: skip
    parser.add_argument(
        "--tflite", action=argparse.BooleanOptionalAction, default=True,
        help="also write .tflite files with the same signatures (default: yes)",
    )  # fmt: skip
    parser.add_argument(
        "--quantize", nargs="+", choices=QUANTIZATIONS, default=None, metavar="NAME",
        help="TFLite variants among none (float32), dynamic, float16, int8 (default: none); a "
        "(hierarchical) VAE's scorer is float32 only; a VQ-VAE run writes none and int8",
    )  # fmt: skip
    parser.add_argument(
        "--scorer", action=argparse.BooleanOptionalAction, default=None,
        help="VAE, hierarchical VAE: also export the scorer, x -> elbo and log_likelihood in nats "
        "(default: yes)",
    )  # fmt: skip
    parser.add_argument(
        "--importance-samples", dest="scorer_samples", type=int, default=None, metavar="K",
        help=f"VAE, hierarchical VAE: importance samples of the scorer's log_likelihood, as in "
        f"evaluate "
        f"(default: {DEFAULT_SCORER_SAMPLES})",
    )  # fmt: skip
    add_renamed_option(parser, "--scorer-samples", "--importance-samples", "scorer_samples",
                       type=int)  # fmt: skip
    parser.add_argument(
        "--precision", default=None, metavar="POLICY",
        help="vae, hvae: the scorer SavedModel in float32, mixed_bfloat16 or mixed_float16 "
        "(as evaluate's; matmuls low, densities and sums float32; checked against the float32 "
        "model; no scorer.tflite when low); the encoder and decoder stay the run's",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    add_data_dir_argument(parser)


def _flag(key: str) -> str:
    """The command-line spelling of an export option."""
    return {"scorer_samples": "--importance-samples"}.get(key, "--" + key.replace("_", "-"))


def kind_options(kind, given: dict) -> dict:
    """The export options given for `kind`: its defaults where not given; one given that the
    kind does not take is refused in one line."""
    options = {}
    for key, value in given.items():
        if value is not None and key not in kind.export_options:
            raise ConfigError(
                f"{_flag(key)} does not apply to a {kind.registered_name} run; its export "
                f"options are {', '.join(map(_flag, kind.export_options)) or 'none'}."
            )
        if key in kind.export_options:
            options[key] = _DEFAULTS[key] if value is None else value
    quantize = options.get("quantize", ())
    other = [q for q in ([quantize] if isinstance(quantize, str) else quantize)
             if q not in kind.quantizations]  # fmt: skip
    if other:
        raise ConfigError(
            f"--quantize {' '.join(other)} does not apply to a {kind.registered_name} run; it "
            f"writes {' and '.join(kind.quantizations)}."
        )
    return options


def run_cli(args: argparse.Namespace) -> int:
    """Runs `keras-vae export` and prints a summary table; returns the exit status."""
    config = runs.load_config(args.run_dir)
    kind = kind_of(config)
    given = {"quantize": args.quantize, "scorer": args.scorer,
             "scorer_samples": args.scorer_samples, "precision": args.precision}  # fmt: skip
    report = export_run(args.run_dir, args.output, args.data_dir, version=args.version,
                        tflite=args.tflite,
                        overwrite=args.overwrite, **kind_options(kind, given))  # fmt: skip
    for line in pipeline.report_lines(report):
        print(line)
    print(f"report: {Path(args.output) / 'export_report.json'}")
    sys.stdout.flush()
    return 0
