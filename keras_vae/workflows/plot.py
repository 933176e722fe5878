"""`keras-vae plot RUN_DIR --kind ...`: the run's model kind draws the figure.

    keras-vae plot RUN_DIR --kind {reconstructions,samples,manifold,latents,interpolation,
        traversals,kl,resample,codebook} --output FILE.png [--num N] [--split test] [--seed S]
        [--dpi 100]

The kinds of figure a run offers are its model kind's (`ModelKind.figure_kinds`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from keras_vae import registry
from keras_vae._internal.figures import DEFAULT_DPI, save_figure
from keras_vae.models.kind import kind_names, kind_of
from keras_vae.models.vae.pictures import *  # noqa: F403  (keras_vae.plotting of 0.2.0)
from keras_vae.models.vae.pictures import DEFAULT_NUM, _check_count
from keras_vae.runs import directory as runs
from keras_vae.runs.splits import open_split
from keras_vae.workflows.arguments import add_data_dir_argument


# ------------------------------------------------------------------------------------ CLI
def _figure_choices() -> tuple[str, ...]:
    """Every figure some registered kind draws, in registration order."""
    found = []
    for name in kind_names():
        found += [f for f in registry.get("model", name).figure_kinds if f not in found]
    return tuple(found)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of `keras-vae plot` to `parser`."""
    parser.add_argument("run_dir", type=Path, help="run directory written by `keras-vae train`")
    parser.add_argument(
        "--kind", required=True, choices=_figure_choices(),
        help="which picture; by model kind: " + "; ".join(
            f"{name}: {', '.join(registry.get('model', name).figure_kinds)}"
            for name in kind_names()),
    )  # fmt: skip
    parser.add_argument("--output", type=Path, required=True, metavar="FILE",
                        help="PNG file to write")  # fmt: skip
    parser.add_argument(
        "--num",
        type=int,
        default=None,
        metavar="N",
        help="reconstructions: images (8); samples: images (64); manifold: points per axis "
        "(20); latents: images scattered (5000); interpolation: steps (10); traversals: "
        "values per latent (9; rows ordered by the mean KL of 1000 picked images); kl: images "
        "averaged (1000)",
    )
    parser.add_argument(
        "--split", default=None, metavar="NAME",
        help="data split for reconstructions, latents, interpolation, traversals, kl (default: "
        "the run's eval split)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N",
        help="seed of the samples, of the prior draws that place a learned prior's manifold, "
        "and of the images picked for reconstructions/interpolation",
    )  # fmt: skip
    parser.add_argument("--dpi", type=float, default=DEFAULT_DPI, metavar="X",
                        help=f"PNG resolution (default: {DEFAULT_DPI:g})")  # fmt: skip
    add_data_dir_argument(parser)


def run_cli(args: argparse.Namespace) -> int:
    """Runs `keras-vae plot`: loads the run (and its data when the figure needs them), asks
    the run's model kind for the figure and writes the PNG."""
    if args.num is not None:
        _check_count("--num", args.num)
    model, config = runs.load_run(args.run_dir, args.data_dir)
    kind = kind_of(config)
    if args.kind not in kind.figure_kinds:
        raise ValueError(
            f"--kind {args.kind} is not drawn for a {kind.registered_name} run; choose one of "
            f"{', '.join(kind.figure_kinds)}."
        )
    kind.check_figure(model, args.kind)  # before loading any data
    images = labels = None
    split = args.split or config.eval_split
    if kind.figure_needs_images(args.kind):
        likelihood = kind.likelihood_name(model)
        if args.kind == "latents":  # all it scatters, coloured by label where there are any
            images, labels = _scattered(config, split, args)
        else:  # streamed: the figure reads the rows it shows (`data.pick_rows`)
            images = open_split(config, split, likelihood, labels=kind.uses_labels(config))
    fig = kind.make_figure(model, args.kind, images=images, labels=labels, num=args.num,
                           seed=args.seed, split=split)  # fmt: skip
    width, height = (int(v) for v in fig.get_size_inches() * args.dpi)  # as Agg truncates
    path = save_figure(fig, args.output, dpi=args.dpi)
    where = "" if not kind.figure_needs_images(args.kind) else f" of {split} images"
    print(f"keras-vae plot: wrote {path} ({args.kind}{where}, {width}x{height} px)")
    return 0


def _scattered(config, split, args):
    """The first `--num` examples of the split with their labels where the data set has them
    (a latents figure reads only the examples it scatters)."""
    from keras_vae.data import pipeline as data

    load = dict(data_dir=config.data_dir, manual_dir=config.manual_dir)
    limit = args.num or DEFAULT_NUM["latents"]
    return data.load_labeled_images(config.dataset, split, limit=limit, **load)
