"""keras_vae.metrics.latent against hand values."""

import math

import numpy as np

from keras_vae.metrics import latent


def test_bits_per_dim_of_a_uniform_byte_is_eight():
    assert latent.bits_per_dim(784 * 8 * math.log(2.0), 784) == 8.0


def test_active_units_count_the_dimensions_that_vary_with_x():
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(size=500), np.full(500, 0.3), 0.05 * rng.normal(size=500)], 1)
    assert latent.active_units(means) == 1  # variances about 1, 0 and 0.0025
    assert latent.active_units(means, threshold=0.001) == 2
