"""keras_vae.serving.checks: the error measures of the export self-checks."""

import numpy as np
import pytest

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


def test_output_comparison_keeps_the_largest_error_per_output_and_names_wrong_shapes():
    compare = checks.OutputComparison(relative=True)
    want = {"loc": np.array([[0.0, 4.0]]), "scale": np.ones((1, 2))}
    compare("sig", {"loc": np.array([[0.5, 4.0]]), "scale": np.ones((2, 1))}, want)
    compare("sig", {"loc": np.array([[0.0, 9.0]]), "scale": np.ones((1, 2))}, want)
    assert compare.errors == {"sig/loc": 1.0, "sig/scale": 0.0}  # max(0.5 / 1, 5 / 5)
    assert compare.problems == ["sig output 'scale' has shape (2, 1), expected (1, 2)"]


def test_compare_deterministic_runs_one_row_and_the_batch_with_eps_batched_on_axis_1():
    calls = []

    def runner(x, eps):
        calls.append((x.shape, eps.shape))
        return {"y": x.sum(axis=1) + eps.sum(axis=(0, 2))}

    x, eps = np.arange(6.0).reshape(3, 2), np.ones((4, 3, 1))
    compare = checks.OutputComparison()
    expected = {"y": np.array([5.0, 9.0, 13.0])}
    checks.compare_deterministic(runner, "k", {"x": x, "eps": eps}, expected, compare)
    assert calls == [((1, 2), (4, 1, 1)), ((3, 2), (4, 3, 1))]
    assert compare.errors == {"k/y": 0.0} and not compare.problems


def test_graph_mode_check_passes_the_saved_function_and_refuses_a_wrong_reference(tmp_path):
    tf = pytest.importorskip("tensorflow")
    module = tf.Module()
    module.double = tf.function(
        lambda x: {"y": 2.0 * x}, input_signature=[tf.TensorSpec([None, 2], tf.float32)]
    )
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.double})
    x = np.array([[1.0, 2.0]], np.float32)
    good = {"part": {"inputs": {"x": x}, "outputs": {"y": 2.0 * x}}}
    check = checks.graph_mode_check("part", "serving_default", good, bound=1e-6)
    assert check(tmp_path) == {"graph_mode/y": 0.0}
    bad = {"part": {"inputs": {"x": x}, "outputs": {"y": 3.0 * x}}}
    with pytest.raises(checks.ExportCheckError, match="part/ disagrees .* graph mode"):
        checks.graph_mode_check("part", "serving_default", bad, bound=1e-6)(tmp_path)
