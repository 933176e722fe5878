"""`keras-vae evaluate RUN_DIR`: the run's model kind evaluates it on a split of its data
(`ModelKind.evaluate`: a VAE's importance-sampled NLL, a VQ-VAE's reconstruction and code
usage, a code prior's bound) and the result goes to `RUN_DIR/eval_<split>.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from keras_vae.models.kind import kind_of
from keras_vae.runs import directory as runs
from keras_vae.runs.config import ConfigError
from keras_vae.runs.splits import load_labeled_split, load_split


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
            `importance_samples` and `seed`). One the kind does not take is refused.

    Returns:
        The metrics, with `split` and `line` (what the command prints).
    """
    model, config = runs.load_run(run_dir, data_dir)
    kind = kind_of(config)
    for key in options:
        if key not in kind.evaluate_options:
            raise ConfigError(
                f"--{key.replace('_', '-')} does not apply to a {kind.registered_name} run "
                f"(it takes: {', '.join(kind.evaluate_options) or 'no options'})."
            )
    split = split or config.eval_split
    likelihood = kind.likelihood_name(model)
    labels = None
    if kind.uses_labels(config):  # log p(x|y): the images with their labels
        images, labels = load_labeled_split(config, split, likelihood)
    else:
        images = load_split(config, split, likelihood)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be a positive int. Received: {limit}")
        images, labels = images[:limit], (None if labels is None else labels[:limit])
    result, line = kind.evaluate(model, images, labels, progress_stream=progress_stream, **options)
    result.update(split=split, model=config.model)
    runs.atomic_write_json(Path(run_dir) / f"eval_{split}.json", result)
    return {**result, "line": f"{split}: {line}"}


def run_cli(args) -> int:
    """Runs `keras-vae evaluate`; prints the line (or the JSON) and where it was written."""
    options = {key: getattr(args, key) for key in ("importance_samples", "seed")
               if getattr(args, key) is not None}  # fmt: skip
    stream = sys.stderr if args.json else sys.stdout  # beside --json: progress on stderr
    result = evaluate_run(args.run_dir, args.split, limit=args.limit, data_dir=args.data_dir,
                          progress_stream=stream, **options)  # fmt: skip
    line = result.pop("line")
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(line)
        print(f"wrote {Path(args.run_dir) / ('eval_' + result['split'] + '.json')}")
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
        "--seed", type=int, default=None, metavar="N",
        help="VAE: seed of the importance samples (default: 0)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    add_data_dir_argument(parser)
