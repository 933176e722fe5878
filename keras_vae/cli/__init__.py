"""The `keras-vae` command (`keras_vae.cli.commands`), thin over the workflows."""

from keras_vae.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
