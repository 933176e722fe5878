"""Imports every built-in model kind, which registers it in `keras_vae.registry`."""

from keras_vae.models.vae import kind as vae  # noqa: F401
from keras_vae.models.vqvae import kind as vqvae  # noqa: F401
