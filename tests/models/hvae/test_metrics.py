"""keras_vae.models.hvae.metrics: the importance-sampled log p(x) over the whole hierarchy
against a linear-Gaussian hierarchy's closed form (SciPy), the plain VAE's estimate at L = 1,
and the summary that `keras-vae evaluate` reports for a hierarchical run, from an array or
read from a stream a batch at a time."""

import io
import math

import numpy as np
import pytest
from helpers import RowCountingArray
from hvae_references import (
    D1,
    D2,
    DX,
    binary,
    exact_log_px,
    linear_model,
    linear_x,
    numpy_elbo,
    perturbed_maps,
    tanh_model,
    vae_and_one_layer_hvae,
)

from keras_vae.data import pipeline as data
from keras_vae.models.hvae import importance_sampled_log_likelihood
from keras_vae.models.hvae.metrics import evaluate
from keras_vae.models.vae import evaluation
from keras_vae.parts import objectives


def test_the_exact_posterior_gives_the_exact_log_px_and_the_summary_follows():
    x = linear_x()
    model = linear_model()
    exact = exact_log_px(x)
    result = importance_sampled_log_likelihood(model, x, 30, chunk_size=7)
    np.testing.assert_allclose(result["log_px"], exact, atol=2e-4)
    summary = evaluate(model, x, 30, chunk_size=7)
    assert summary["nll"] == pytest.approx(-exact.mean(), abs=2e-4)
    assert summary["nll_stderr"] == pytest.approx(exact.std(ddof=1) / 2, rel=1e-3)  # N = 4
    assert summary["bits_per_dim"] == pytest.approx(summary["nll"] / (DX * np.log(2)))
    assert summary["kl"] == pytest.approx(sum(summary["kl_layers"]))
    assert summary["latent_sizes"] == [D1, D2] and summary["num_examples"] == 4
    # active units: Var_x(E[z_u|x]) > 0.01 per layer, from the model's own posterior means
    means = [q.mean().numpy() for q in model.encode(x)]
    assert summary["active_units"] == [int(np.sum(np.var(m, 0) > 0.01)) for m in means]


def test_a_verbose_evaluation_prints_the_progress_line_ending_at_the_reported_nll():
    x = np.concatenate([linear_x()] * 3)  # 12 examples, batches of 5: three updates
    progress = io.StringIO()
    summary = evaluate(linear_model(), x, 30, batch_size=5, verbose=1, progress_stream=progress)
    lines = progress.getvalue().splitlines()
    assert lines[0].endswith("K=30 samples per example, 12 examples")
    assert lines[-1].startswith("12/12 examples") and lines[-1].endswith(
        f"NLL so far {summary['nll']:.2f} nats")  # fmt: skip
    quiet = io.StringIO()
    evaluate(linear_model(), x, 30, batch_size=5, progress_stream=quiet)
    assert quiet.getvalue() == ""  # verbose=0 by default in Python


def test_importance_sampling_closes_the_gap_of_an_imperfect_posterior():
    x = linear_x(3, seed=5)
    maps = perturbed_maps(seed=0)
    model = linear_model(maps=maps)
    exact = exact_log_px(x)
    elbo = np.array([numpy_elbo(row.astype(np.float64), maps) for row in x])
    # K = 5,000 importance samples of the whole hierarchy close >= 85% of the ELBO's gap
    estimate = importance_sampled_log_likelihood(model, x, 5000, chunk_size=1000, seed=3)
    np.testing.assert_allclose(estimate["log_px"], exact, atol=0.05)
    np.testing.assert_array_less(np.abs(estimate["log_px"] - exact), 0.15 * (exact - elbo))
    np.testing.assert_allclose(estimate["elbo"], elbo, atol=0.1)  # 1/K sums: the ELBO too


def test_one_layer_log_px_equals_the_plain_vae_evaluation():
    vae, hvae = vae_and_one_layer_hvae(objectives.ELBO())
    x = binary(5)
    theirs = evaluation.importance_sampled_log_likelihood(vae, x, 60, chunk_size=25, verbose=0)
    mine = importance_sampled_log_likelihood(hvae, x, 60, chunk_size=25)
    np.testing.assert_allclose(mine["log_px"], theirs["log_px"], rtol=1e-5)
    np.testing.assert_allclose(mine["elbo"], theirs["elbo"], rtol=1e-5)
    np.testing.assert_allclose(mine["posterior_means"][0], theirs["posterior_mean"], rtol=1e-6)


def test_importance_sampling_is_reproducible_and_float64_agrees_with_float32():
    model = tanh_model()
    x = binary(6)
    first = importance_sampled_log_likelihood(model, x, 40, batch_size=4, chunk_size=9, seed=1)
    again = importance_sampled_log_likelihood(model, x, 40, batch_size=4, chunk_size=9, seed=1)
    single = importance_sampled_log_likelihood(model, x, 40, batch_size=4, chunk_size=9, seed=1,
                                               dtype="float32")  # fmt: skip
    np.testing.assert_array_equal(first["log_px"], again["log_px"])
    np.testing.assert_allclose(single["log_px"], first["log_px"], rtol=1e-5)
    assert first["kl_layers"].shape == (6, 2)
    assert np.all(first["log_px"] >= first["elbo"] - 1.0)  # K = 40 bound above the ELBO


@pytest.mark.parametrize(
    ("options", "message"),
    [({"chunk_size": 0}, "chunk_size must be a positive int"),
     ({"batch_size": True}, "batch_size must be a positive int"),
     ({"dtype": "float16"}, "dtype must be 'float64' or 'float32'")],
)  # fmt: skip
def test_bad_options_are_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as error:
        importance_sampled_log_likelihood(tanh_model(), binary(2), 4, **options)
    assert "\n" not in str(error.value)


def test_a_stream_evaluates_as_numpy_summarises_its_images_a_batch_at_a_time():
    model = tanh_model()
    x = binary(30)
    reads: list[int] = []
    stream = data.ArrayStream(RowCountingArray(x, reads), "x")
    del reads[:]  # (its first examples, read when it opened)
    streamed = evaluate(model, stream, 20, batch_size=8, chunk_size=9, seed=4)
    assert max(reads) == 8  # a batch at a time, never the split
    each = importance_sampled_log_likelihood(model, x, 20, batch_size=8, chunk_size=9, seed=4)
    log_px = each["log_px"]
    expected = {
        "nll": -log_px.mean(), "nll_stderr": log_px.std(ddof=1) / math.sqrt(30),
        "elbo": each["elbo"].mean(), "reconstruction": each["reconstruction"].mean(),
        "kl": each["kl"].mean(), "kl_layers": list(each["kl_layers"].mean(0)),
        "active_units": [int(np.sum(np.var(m, 0) > 0.01)) for m in each["posterior_means"]],
        "num_examples": 30,
    }  # fmt: skip
    for key, value in expected.items():
        assert streamed[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert evaluate(model, x, 20, batch_size=8, chunk_size=9, seed=4) == streamed  # the array
