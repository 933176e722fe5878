"""The `keras-vae` command (`keras_vae.cli.commands`), thin over the workflows."""

from keras_vae.cli.commands import main

__all__ = ["main"]
