"""The `keras-vae` command (`keras_vae.cli.main`), thin over the workflows."""

from keras_vae.cli.main import main

__all__ = ["main"]
