"""Command-line options that several workflows share, spelled once."""

from __future__ import annotations

import argparse


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    """`--data-dir`: where the run's tfds data are now (every subcommand that reads data)."""
    parser.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="tfds data directory (default: the one the run was trained with)",
    )  # fmt: skip


def add_seed_argument(parser: argparse.ArgumentParser, what: str, default=0) -> None:
    """`--seed`: the seed of a workflow's random draws."""
    shown = "" if default is None else f" (default: {default})"
    parser.add_argument("--seed", type=int, default=default, help=f"seed of {what}{shown}")
