"""keras_vae.metrics.latent against hand values and NumPy's whole-array statistics."""

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


def test_moments_of_batches_are_numpys_of_the_whole_array():
    rng = np.random.default_rng(1)
    rows = rng.normal(loc=[3.0, -200.0, 0.0], scale=[1.0, 0.01, 5.0], size=(1003, 3))
    moments = latent.Moments()
    for start, size in ((0, 1), (1, 100), (101, 2), (103, 0), (103, 900)):  # uneven batches
        moments.add(rows[start : start + size])
    assert moments.count == 1003
    np.testing.assert_allclose(moments.mean, rows.mean(0), rtol=1e-12)
    np.testing.assert_allclose(moments.variance(), rows.var(0), rtol=1e-10)
    np.testing.assert_allclose(moments.variance(ddof=1), rows.var(0, ddof=1), rtol=1e-10)
    column = latent.Moments()
    column.add(rows[:10, 0])
    column.add(rows[10:, 0])
    assert math.isclose(column.stderr(), rows[:, 0].std(ddof=1) / math.sqrt(1003), rel_tol=1e-10)
    single = latent.Moments()
    single.add(rows[:1, 0])
    assert single.stderr() == 0.0
    assert latent.active_units(moments) == latent.active_units(rows) == 2  # variances 1, 1e-4, 25
