"""Imports every built-in model kind, which registers it in `keras_vae.registry` (and its
layers with Keras, for `.keras` files), in the order `--model` lists them."""

# isort: skip_file
from keras_vae.models.vae import kind as vae  # noqa: F401
from keras_vae.models.hvae import kind as hvae  # noqa: F401
from keras_vae.models.vqvae import kind as vqvae  # noqa: F401
