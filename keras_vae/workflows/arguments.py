"""Command-line options that several workflows share, spelled once."""

from __future__ import annotations

import argparse
import sys


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    """`--data-dir`: where the run's tfds data are now (every subcommand that reads data)."""
    parser.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="tfds data directory (default: the one the run was trained with)",
    )  # fmt: skip


def add_seed_argument(parser: argparse.ArgumentParser, what: str, default=0) -> None:
    """`--seed`: the seed of a workflow's random draws."""
    shown = "" if default is None else f" (default: {default})"
    parser.add_argument("--seed", type=int, default=default, metavar="N",
                        help=f"seed of {what}{shown}")  # fmt: skip


def add_limit_argument(parser: argparse.ArgumentParser, what: str = "examples") -> None:
    """`--limit N`: the first N examples of the data only."""
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help=f"first N {what} only (default: all)")  # fmt: skip


class RenamedOption(argparse.Action):
    """An old spelling of an option (`const`: the new one): sets the same value and says the
    new name in one line on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"keras-vae: note: {option_string} is now {self.const}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_renamed_option(parser: argparse.ArgumentParser, old: str, new: str, dest: str,
                       **options) -> None:  # fmt: skip
    """Accepts `old`, hidden from the help, as a spelling of `new` (stored in `dest`)."""
    parser.add_argument(old, dest=dest, action=RenamedOption, const=new, help=argparse.SUPPRESS,
                        **options)  # fmt: skip
