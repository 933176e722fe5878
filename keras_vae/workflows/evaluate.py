"""`keras-vae evaluate RUN_DIR`: the run's model kind evaluates it on a split of its data
(`ModelKind.evaluate`: a VAE's importance-sampled NLL, a VQ-VAE's reconstruction and code
usage, a code prior's bound) and the result goes to `RUN_DIR/eval_<split>.json`. The split is
opened for streaming (`open_split`) and read once, batch by batch: memory does not grow with
its size (the 737,280 images of `synthetic_dsprites` are 12 GB as float32).

`keras-vae evaluate RUN_DIR --disentanglement` scores instead the run's code
(`ModelKind.representation`: a VAE's posterior mean) on the factors of its data set
(`keras_vae.data.factors.dataset_factors`) with the five metrics of Locatello et al. 2019
(`keras_vae.metrics.disentanglement`: MIG, DCI, SAP, the beta-VAE and FactorVAE scores) and
writes `RUN_DIR/eval_disentanglement.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from keras_vae.data.factors import dataset_factors
from keras_vae.metrics import disentanglement as metrics
from keras_vae.models.kind import kind_of
from keras_vae.runs import directory as runs
from keras_vae.runs.config import ConfigError
from keras_vae.runs.splits import open_split

#: disentanglement_lib's sample sizes: codes for MIG and to train DCI and SAP's predictors
#: and the scores' classifiers (half as many again to test them).
DISENTANGLEMENT_SAMPLES = 10_000


def evaluate_run(
    run_dir: str | Path,
    split: str | None = None,
    *,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    progress_stream=None,
    **options,
) -> dict:
    """Evaluates the model of a run directory on `split` (default: the run's eval split).

    Args:
        run_dir: A run directory written by `keras-vae train`.
        split: The split of the run's data.
        limit: The first `limit` examples only.
        data_dir: The tfds data directory, instead of the one the run recorded.
        progress_stream: Where a long evaluation reports progress.
        **options: The kind's evaluation options (`ModelKind.evaluate_options`; a VAE's
            `importance_samples` and `seed`, or `disentanglement=True` with
            `disentanglement_samples` and `seed`: see `evaluate_disentanglement`; and a VAE's
            or hierarchical VAE's `precision`, `"float32"`, `"mixed_bfloat16"` or
            `"mixed_float16"`: the run's weights with the matmuls in that policy, by default
            the run's own, recorded as `precision`). One the kind does not take is refused.

    Returns:
        The metrics, with `split` and `line` (what the command prints).
    """
    model, config = runs.load_run(run_dir, data_dir)
    kind = _check_options(config, options)
    precision = options.pop("precision", None)
    if precision is not None:  # the same weights, matmuls in that policy
        model = kind.with_precision(model, config, precision)
    if options.pop("disentanglement", False):
        if split is not None or limit is not None:
            raise ConfigError(
                "--split and --limit do not apply to --disentanglement: the metrics draw "
                "factor combinations from the whole grid of the run's data set."
            )
        return _disentanglement(run_dir, model, config, kind, progress_stream=progress_stream,
                                **options)  # fmt: skip
    options.pop("disentanglement_samples", None)  # (refused above unless disentanglement)
    split = split or config.eval_split
    likelihood = kind.likelihood_name(model)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"--limit must be a positive int. Received: {limit}")
    # streamed (tfds data, large array files): the kind reads it once, batch by batch; with
    # labels (log p(x|y)) the batches are (images, labels); only the first `limit` are read
    images = open_split(config, split, likelihood, labels=kind.uses_labels(config), limit=limit)
    result, line = kind.evaluate(model, images, progress_stream=progress_stream, **options)
    result.update(split=split, model=config.model)
    runs.atomic_write_json(Path(run_dir) / f"eval_{split}.json", result)
    return {**result, "line": f"{split}: {line}"}


def _check_options(config, options: dict):
    """The run's kind; its evaluation options that it does not take refused in one line
    (the same way for every kind), and --disentanglement-samples without --disentanglement."""
    kind = kind_of(config)
    for key in options:
        if key not in kind.evaluate_options:
            raise ConfigError(
                f"--{key.replace('_', '-')} does not apply to a {kind.registered_name} run "
                f"(it takes: {', '.join(kind.evaluate_options) or 'no options'})."
            )
    if "disentanglement_samples" in options and not options.get("disentanglement"):
        raise ConfigError("--disentanglement-samples goes with --disentanglement.")
    if options.get("disentanglement") and "importance_samples" in options:
        raise ConfigError("--importance-samples does not apply to --disentanglement.")
    return kind


def evaluate_disentanglement(
    run_dir: str | Path,
    *,
    samples: int = DISENTANGLEMENT_SAMPLES,
    seed: int = 0,
    data_dir: str | Path | None = None,
) -> dict:
    """The disentanglement metrics of a run's code on its data set's factors (what
    `keras-vae evaluate RUN_DIR --disentanglement` prints and writes to
    `RUN_DIR/eval_disentanglement.json`).

    Args:
        run_dir: A run directory of a kind that has a representation (a VAE).
        samples: Codes of uniformly drawn factor combinations for MIG and for training DCI
            and SAP (half as many test them); training points of the beta-VAE and FactorVAE
            scores' classifiers (half as many test them), each from batches of 64 images.
        seed: Seed of the factor draws (the same seed scores the same images).
        data_dir: Where the run's tfds data are now (the metrics render or read the factor
            grid, they do not read a split).

    Returns:
        `keras_vae.metrics.disentanglement.evaluate`'s scores (`mig`, `dci_disentanglement`,
        `sap`, `beta_vae`, `factor_vae`, ...) with `dataset`, `samples`, `seed`, `model`,
        and `line`.
    """
    options = {"disentanglement": True, "disentanglement_samples": samples, "seed": seed}
    return evaluate_run(run_dir, data_dir=data_dir, **options)


def _disentanglement(run_dir, model, config, kind, *, progress_stream=None,
                     disentanglement_samples=None, seed=None):  # fmt: skip
    samples = disentanglement_samples
    samples = DISENTANGLEMENT_SAMPLES if samples is None else samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ConfigError(f"--disentanglement-samples must be an int >= 2. Received: {samples!r}")
    seed = 0 if seed is None else seed
    factors = dataset_factors(config.dataset)  # a one-line error without factor labels
    represent = kind.representation(model, config)
    progress = None if progress_stream is None else (
        lambda line: print(line, file=progress_stream, flush=True))  # fmt: skip
    scores = metrics.evaluate(factors, represent, seed=seed, num_train=samples,
                              num_test=max(1, samples // 2), progress=progress)  # fmt: skip
    result = {**scores, "dataset": config.dataset, "samples": samples, "seed": seed,
              "model": config.model, "precision": model.dtype_policy.name}  # fmt: skip
    runs.atomic_write_json(Path(run_dir) / "eval_disentanglement.json", result)
    line = (
        f"disentanglement of {config.dataset} ({samples:,} samples, seed {seed}): "
        f"MIG {scores['mig']:.3f}, DCI disentanglement {scores['dci_disentanglement']:.3f}, "
        f"SAP {scores['sap']:.3f}, beta-VAE score {scores['beta_vae']:.3f}, FactorVAE score "
        f"{scores['factor_vae']:.3f}"
    )
    return {**result, "line": line}


def run_cli(args) -> int:
    """Runs `keras-vae evaluate`; prints the line (or the JSON) and where it was written."""
    keys = ("importance_samples", "seed", "precision", "disentanglement_samples")
    options = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if args.disentanglement:
        options["disentanglement"] = True
    stream = sys.stderr if args.json else sys.stdout  # beside --json: progress on stderr
    result = evaluate_run(args.run_dir, args.split, limit=args.limit, data_dir=args.data_dir,
                          progress_stream=stream, **options)  # fmt: skip
    line = result.pop("line")
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(line)
        name = "disentanglement" if args.disentanglement else result["split"]
        print(f"wrote {Path(args.run_dir) / f'eval_{name}.json'}")
    return 0


def add_cli_arguments(parser) -> None:
    """Adds the options of `keras-vae evaluate` to `parser`."""
    from keras_vae.workflows.arguments import add_data_dir_argument, add_limit_argument

    parser.add_argument("run_dir", type=Path, help="run directory written by `keras-vae train`")
    parser.add_argument(
        "--split", default=None, metavar="NAME",
        help="split to evaluate, e.g. test or validation (default: the run's eval split)",
    )  # fmt: skip
    parser.add_argument(
        "--importance-samples", type=int, default=None, metavar="K",
        help="VAE: importance samples of the NLL estimate (default: 1000; published NLLs "
        "use 5000)",
    )  # fmt: skip
    add_limit_argument(parser)
    parser.add_argument(
        "--precision", default=None, metavar="POLICY",
        help="vae, hvae: float32, mixed_bfloat16 or mixed_float16: the run's weights with the "
        "matmuls in that policy, every density and sum float32 (default: the run's own)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N",
        help="VAE: seed of the importance samples (default: 0)",
    )  # fmt: skip
    parser.add_argument(
        "--disentanglement", action="store_true",
        help="VAE: MIG, DCI, SAP, beta-VAE and FactorVAE scores of the posterior mean on the "
        "factors of the run's data set (synthetic_dsprites, or an .npz with factors), to "
        "eval_disentanglement.json",
    )  # fmt: skip
    parser.add_argument(
        "--disentanglement-samples", type=int, default=None, metavar="N",
        help=f"codes and classifier points of --disentanglement (default: "
        f"{DISENTANGLEMENT_SAMPLES:,}, disentanglement_lib's; half as many test them)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    add_data_dir_argument(parser)
