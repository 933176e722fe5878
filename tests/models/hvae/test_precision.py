"""Mixed precision of the hierarchical VAE (`mlp_hvae(precision=...)`, `conv_hvae`'s,
`keras-vae train --model hvae --precision`): the matmuls of the bottom-up blocks, the cells,
the decoder and the heads run in bfloat16 or float16; the variables, each layer's (loc, scale),
z, the prior and every log-density, KL and bound in float32. Checked against a float64 NumPy
reference computed from the model's own float32 parameters and against the same weights in
float32."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test
from scipy.special import log_expit

from keras_vae.cli import commands as cli
from keras_vae.engine.fused_adam import FusedAdam
from keras_vae.models.hvae import export
from keras_vae.models.hvae.kind import HierarchicalVAEKind
from keras_vae.models.hvae.presets import conv_hvae, mlp_hvae
from keras_vae.runs.config import TrainConfig

RNG = np.random.default_rng(3)
SHAPE = (12, 10, 1)  # 120 pixels
PROTOTYPES = RNG.uniform(size=(4, *SHAPE)) > 0.5
X = (PROTOTYPES[RNG.integers(0, 4, 64)] ^ (RNG.uniform(size=(64, *SHAPE)) < 0.05)).astype("float32")
CONVS = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)
LOW = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def _hvae(precision, latent_dims=(6, 4), **kwargs):
    model = mlp_hvae(SHAPE, latent_dims=latent_dims, hidden_units=[32], posterior_units=[16],
                     gated=True, seed=2, precision=precision, **kwargs)  # fmt: skip
    model.build((None, *SHAPE))
    return model


def _same_weights(model, source):
    for variable, value in zip(model.weights, source.weights, strict=True):
        variable.assign(value)
    return model


def _pass(model, x, seed=0):
    """`sample_pass` of x with one sample of fixed noise."""
    noise = tf.random.stateless_normal((1, len(x), sum(model.latent_sizes)), (seed, 1))
    return model.sample_pass(x, model.bottom_up(x), noise)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_matmuls_compute_low_and_the_islands_are_float32(precision):
    model = _hvae(precision, prior="vamp", prior_components=3)
    dense = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Dense)]
    # bottom-up 2 + cell (state 1, posterior 1, 2 projections) + decoder 1 (gated: 1 Dense
    # each), the top head and the likelihood head
    assert len(dense) == 9 and all(layer.compute_dtype == LOW[precision] for layer in dense)
    assert model.prior.compute_dtype == "float32"
    assert all(v.dtype == "float32" for v in model.weights)
    assert model.bottom_up(X[:4])[0].dtype == LOW[precision]
    out = _pass(model, X[:4])
    floats = [out["log_likelihood"], out["log_weights"], *out["kl"]]
    for layer in out["layers"]:
        q = layer.q.values() if isinstance(layer.q, dict) else layer.q
        floats += [layer.z, *q, *(layer.p or ()), *(layer.offsets or ())]
    assert all(t.dtype == tf.float32 for t in floats)
    noise = tf.random.stateless_normal((2, 4, sum(model.latent_sizes)), (0, 2))
    terms = model.latent_terms(tf.constant(X[:4]), noise)
    assert all(t.dtype == tf.float32 for t in (terms.log_weights, terms.kl, terms.kl_groups))


def _log_normal(z, loc, scale):
    z, loc, scale = (np.asarray(t, np.float64) for t in (z, loc, scale))
    return np.sum(-0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi), -1)


def test_densities_kls_and_sums_are_float32_against_a_float64_reference():
    """The model's log-densities, KLs and pixel sums from its own float32 parameters agree
    with float64 NumPy to float32 rounding (about 1e-7 relative, well below 1e-4 nats for these
    sums of 64 + 32 units and 120 pixels); computed in bfloat16 (8 significant bits, 2^-9 =
    2e-3 relative per rounding) each of them would be off by 1e-2 nats or more."""
    model = _hvae("mixed_bfloat16", latent_dims=(64, 32))
    x = X[:16]
    out = _pass(model, x, seed=4)
    bottom, top = out["layers"]
    # the lower layer: log q - log p and the closed-form offset KL; the top: N(0, I)
    lq1, lp1 = _log_normal(bottom.z, *bottom.q), _log_normal(bottom.z, *bottom.p)
    dmu, dsigma = (np.asarray(t, np.float64) for t in bottom.offsets)
    kl1 = np.sum(0.5 * (dmu**2 + dsigma**2 - 1) - np.log(dsigma), -1)
    lq2 = _log_normal(top.z, top.q["loc"], top.q["scale"])
    lp2 = _log_normal(top.z, 0.0, 1.0)
    loc, scale = (np.asarray(top.q[k], np.float64) for k in ("loc", "scale"))
    kl2 = np.sum(0.5 * (loc**2 + scale**2 - 1) - np.log(scale), -1)
    logits = np.asarray(model.decode([bottom.z, top.z]).distribution.logits_parameter(), np.float64)
    pixels = x.reshape(len(x), -1).astype(np.float64)
    flat = logits.reshape(len(x), -1)
    log_px = np.sum(pixels * log_expit(flat) + (1 - pixels) * log_expit(-flat), -1)
    np.testing.assert_allclose(out["kl"][0][0], kl1, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["kl"][1][0], kl2, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["log_likelihood"][0], log_px, rtol=0, atol=2e-4)
    log_weights = log_px + (lp1 - lq1) + (lp2 - lq2)
    np.testing.assert_allclose(out["log_weights"][0], log_weights, rtol=0, atol=3e-4)
    assert np.abs(log_weights).mean() > 50  # sums large enough for bfloat16 to show


def test_the_elbo_of_the_same_weights_moves_by_bfloat16_rounding_only():
    """The same float32 weights and noise in mixed_bfloat16: only the matmuls' inputs and
    weights are rounded (2^-9 relative each), so the logits move by about 1% at most through
    the 4 matmuls in series between x and them, and log p(x|z) (whose derivative in a logit
    is at most 1) by at most 1% of sum_d |logit_d| (0.07 nats and more here), which the
    bound takes for the whole ELBO (the KLs of 10 units move far less than the 120 pixels'
    sum); measured: at most 0.01 nats of an ELBO of -84."""
    exact = _hvae("float32")
    low = _same_weights(_hvae("mixed_bfloat16"), exact)
    x = X[:32]
    ref, out = _pass(exact, x), _pass(low, x)
    logits = exact.decode([layer.z for layer in ref["layers"]]).distribution.logits_parameter()
    bound = 0.01 * np.abs(np.asarray(logits)).reshape(len(x), -1).sum(-1)
    elbo = lambda o: np.asarray(o["log_likelihood"][0] - sum(k[0] for k in o["kl"]))  # noqa: E731
    difference = np.abs(elbo(out) - elbo(ref))
    assert np.all(difference < bound), (difference.max(), bound.min())
    assert difference.mean() > 0  # the matmuls really ran in bfloat16


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_trains_a_few_steps_with_a_finite_loss(precision):
    keras.utils.set_random_seed(0)
    model = _hvae(precision)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    history = model.fit(X, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(v.dtype == "float32" for v in model.weights)
    if precision == "mixed_float16":  # the model's policy made compile() scale the loss
        optimizer = model.optimizer
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert float(optimizer.scale_loss(tf.constant(1.0))) > 1.0
    else:
        assert model.xla == "off" and type(model.optimizer) is FusedAdam


def test_bfloat16_on_a_cpu_trains_without_xla_by_default():
    model = _hvae("mixed_bfloat16")
    model.compile(optimizer="adam")
    assert model.xla == "off" and type(model.optimizer) is FusedAdam


def test_conv_hvae_takes_a_precision():
    model = conv_hvae((8, 8, 1), latent_channels=(2, 2), downsamples=(1, 1), filters=8,
                      seed=0, precision="mixed_bfloat16")  # fmt: skip
    model.build((None, 8, 8, 1))
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, CONVS)]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    out = _pass(model, X[:4, :8, :8])
    assert all(t.dtype == tf.float32 for t in (out["log_weights"], *out["kl"]))
    assert np.all(np.isfinite(out["log_weights"]))


def test_a_mixed_model_round_trips_through_keras_files():
    model = _hvae("mixed_bfloat16")
    restored = run_saving_test(model, X[:4], outputs=lambda m, x: m.encode_parameters(x))
    assert restored.dtype_policy.name == "mixed_bfloat16"
    assert restored.cells[0].prior_projection.compute_dtype == "bfloat16"
    assert restored.bottom_up.blocks[0][0].dense.compute_dtype == "bfloat16"
    assert restored.prior.compute_dtype == "float32"


def test_the_kind_builds_and_converts_the_configured_precision():
    kind = HierarchicalVAEKind()
    config = TrainConfig(model="hvae", latent_dims=[4, 2], hidden_units=[8],
                         likelihood="bernoulli", precision="mixed_bfloat16")  # fmt: skip
    model = kind.build(config, SHAPE)
    model.build((None, *SHAPE))
    assert model.dtype_policy.name == "mixed_bfloat16"
    exact = kind.with_precision(model, config, "float32")
    assert exact.dtype_policy.name == "float32" and exact.objective is not model.objective
    for a, b in zip(model.weights, exact.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert kind.with_precision(model, config, "mixed_bfloat16") is model
    with pytest.raises(ValueError, match="precision must be one of"):
        kind.with_precision(model, config, "bfloat16")
    parsed = cli.train_config(["--model", "hvae", "--precision", "mixed_float16"])
    assert parsed.precision == "mixed_float16"


def test_export_refuses_a_mixed_model_in_one_line(tmp_path):
    with pytest.raises(ValueError) as error:
        export.export_hvae(_hvae("mixed_bfloat16"), tmp_path / "out", progress=None)
    message = str(error.value)
    assert "computes in mixed_bfloat16" in message and "with_precision" in message
    assert "\n" not in message and not (tmp_path / "out").exists()


def test_unknown_precision_is_one_line():
    with pytest.raises(ValueError, match=r"precision must be one of .*'float8'"):
        mlp_hvae(SHAPE, precision="float8")
    with pytest.raises(ValueError, match=r"precision must be one of .*'float8'"):
        conv_hvae((8, 8, 1), precision="float8")


def test_cli_trains_an_hvae_in_mixed_bfloat16_and_records_it(tmp_path):
    np.savez(tmp_path / "toy.npz", x=X[:40, :6, :6, 0])
    run = tmp_path / "run"
    assert cli.main(["train", "--model", "hvae", "--dataset", str(tmp_path / "toy.npz"),
                     "--eval-split", "train", "--latent-dims", "3", "2", "--hidden-units", "8",
                     "--batch-size", "20", "--epochs", "1", "--image-every", "0",
                     "--precision", "mixed_bfloat16", "--output", str(run)]) == 0  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "mixed_bfloat16" and np.isfinite(metrics["train_elbo"])


def test_export_writes_a_bfloat16_scorer_checked_against_the_float32_model(tmp_path):
    """`export_hvae(scorer_model=...)` (`keras-vae export --precision`): the scorer SavedModel
    computes in bfloat16 (it matches the bfloat16 Keras model, and differs from the float32
    one by more than float32 rounding but by less than 1% of sum |logit|, as above); the
    encoder and decoder stay float32 with their `.tflite` files, the scorer has none."""
    exact = _hvae("float32")
    low = _same_weights(_hvae("mixed_bfloat16"), exact)
    messages = []
    report = export.export_hvae(exact, tmp_path / "out", scorer_model=low, scorer_samples=8,
                                check_images=X[:32], progress=messages.append)  # fmt: skip
    written = {a["path"]: a for a in report["artefacts"]}
    assert sorted(written) == ["decoder.tflite", "decoder/1", "encoder.tflite", "encoder/1",
                               "scorer/1"]  # fmt: skip
    assert any(m.startswith("scorer.tflite is not written: the scorer computes in bfloat16")
               for m in messages)  # fmt: skip
    assert (report["model"]["precision"], report["model"]["scorer_precision"]) == (
        "float32", "mixed_bfloat16")  # fmt: skip
    assert written["scorer/1"]["precision"] == "mixed_bfloat16"
    assert written["scorer/1"]["float32_agreement"]["bound"] >= 0.05
    x = X[:16]
    eps = np.random.default_rng(5).standard_normal((3, 16, 10)).astype(np.float32)
    scorer = tf.saved_model.load(str(tmp_path / "out" / "scorer" / "1"))
    served = scorer.signatures["score_with_noise"](x=tf.constant(x), eps=tf.constant(eps))
    got = {k: np.asarray(v, np.float64) for k, v in served.items()}
    from keras_vae.models.hvae.checks import keras_scores

    low_scores, exact_scores = keras_scores(low, x, eps), keras_scores(exact, x, eps)
    for name in ("elbo", "log_likelihood"):
        relative = np.abs(got[name] - low_scores[name]) / (1 + np.abs(low_scores[name]))
        assert relative.max() < 1e-2, name
        difference = np.abs(got[name] - exact_scores[name])
        assert 1e-4 < difference.max() and difference.mean() < 0.05 * np.abs(
            exact_scores[name]).mean(), name  # fmt: skip
    encoder = tf.saved_model.load(str(tmp_path / "out" / "encoder" / "1"))
    served = encoder.signatures["serving_default"](x=tf.constant(x))
    np.testing.assert_allclose(served["loc_1"], exact.encode(x)[0].mean(), atol=1e-5)


def test_export_refuses_a_scorer_model_without_the_models_weights(tmp_path):
    exact = _hvae("float32")
    other = _same_weights(_hvae("mixed_bfloat16"), exact)
    other.weights[0].assign(other.weights[0] + 1.0)
    with pytest.raises(ValueError, match="scorer_model must hold the model's weights"):
        export.export_hvae(exact, tmp_path / "out", scorer_model=other, progress=None)
    with pytest.raises(ValueError, match="scorer_model must be a keras_vae HierarchicalVAE"):
        export.export_hvae(exact, tmp_path / "out", scorer_model=keras.Sequential(),
                           progress=None)  # fmt: skip
    assert not (tmp_path / "out").exists()
