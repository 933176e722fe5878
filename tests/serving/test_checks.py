"""keras_vae.serving.checks: the error measures of the export self-checks."""

import numpy as np

from keras_vae.serving import checks


def test_max_error_absolute_and_relative_against_numpy():
    got, want = np.array([1.0, -3.0, 250.0]), np.array([1.5, -3.0, 200.0])
    assert checks.max_error(got, want) == 50.0
    expected = max(0.5 / 2.5, 0.0, 50.0 / 201.0)
    assert abs(checks.max_error(got, want, relative=True) - expected) < 1e-12


def test_worst_keeps_to_the_bounded_output():
    errors = {"serving_default/loc": 0.2, "serving_default/scale": 0.9, "sample/loc": 0.3}
    assert checks.worst(errors, "loc") == ("sample/loc", 0.3)
    assert checks.worst(errors, None) == ("serving_default/scale", 0.9)
