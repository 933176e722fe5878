"""keras_vae.workflows.arguments: the options several subcommands share, spelled once, and
used by every subcommand that reads a run's data or draws at random."""

import argparse

import pytest

from keras_vae.cli import commands as cli
from keras_vae.workflows import arguments


def test_data_dir_and_seed_options():
    parser = argparse.ArgumentParser()
    arguments.add_data_dir_argument(parser)
    arguments.add_seed_argument(parser, "the draws", default=3)
    assert vars(parser.parse_args([])) == {"data_dir": None, "seed": 3}
    assert vars(parser.parse_args(["--data-dir", "/d", "--seed", "9"])) == {
        "data_dir": "/d",
        "seed": 9,
    }
    text = " ".join(parser.format_help().split())
    assert "--data-dir DIR tfds data directory (default: the one the run was trained with)" in text
    assert "--seed SEED seed of the draws (default: 3)" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--seed", "x"])


def test_no_default_is_not_shown():
    parser = argparse.ArgumentParser()
    arguments.add_seed_argument(parser, "the run", default=None)
    assert parser.parse_args([]).seed is None
    assert "(default" not in parser.format_help()


def test_the_subcommands_share_them():
    _, commands = cli.build_parser()
    for name in ("evaluate", "encode", "plot", "export"):
        options = {a.dest for a in commands[name]._actions}
        assert "data_dir" in options, name
    seed = next(a for a in commands["sample"]._actions if a.dest == "seed")
    assert seed.default == 0 and seed.help == "seed of the draws (default: 0)"
