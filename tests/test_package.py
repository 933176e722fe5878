"""The installed distribution is the package: one version, read from keras_vae.__version__."""

import importlib.metadata

import keras_vae


def test_the_distribution_version_is_the_module_version():
    assert importlib.metadata.version("keras-vae") == keras_vae.__version__
