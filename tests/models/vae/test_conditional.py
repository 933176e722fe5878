"""The conditional VAE (keras_vae.conditional) against independent references.

* The bodies see concat(flatten(x), y) and concat(z, y): recomputed in NumPy from the weights.
* A linear-Gaussian conditional model, p(z|y) = N(m_y, diag(s_y^2)) and
  p(x|z, y) = N(W z + V y + b, s^2 I), has p(x|y) = N(W m_y + V y + b, W S_y W^T + s^2 I):
  the importance-sampled log p(x|y) must reach it.
* 2 CPU replicas (MirroredStrategy, uneven 11 + 10 splits) train to the same weights as one
  device, and fused XLA steps to the same weights as Keras' loop: the labels follow x.
* `.keras` round trips, the data streams keep each label with its image, and the CLI runs
  train -> evaluate -> plot -> export on a tiny labelled .npz (conv bodies) and on the
  labelled binarized MNIST test split (offline, MLP bodies), the labels an input of
  the SavedModels, with one-line errors for data without labels. The export itself is tested
  in test_export_conditional.py.
"""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import SHARED, run_saving_test
from scipy import stats

from keras_vae import mlp_vae
from keras_vae.cli import commands as cli
from keras_vae.data import pipeline as data
from keras_vae.data.builders import labeled_binarized_mnist
from keras_vae.models.vae import evaluation
from keras_vae.models.vae.conditional import (
    ConditionalGaussianPrior,
    ConditionalVAE,
    concat_condition,
)
from keras_vae.parts.likelihoods import GaussianLikelihood
from keras_vae.parts.posteriors import DiagonalGaussianPosterior
from keras_vae.runs import directory as runs
from keras_vae.workflows import train as training

RNG = np.random.default_rng(7)
SHAPE, C = (6, 5, 1), 3


def _data(n=63, seed=0):
    """Binary images whose pixel rate depends on the class, and the int labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, size=n)
    x = (rng.uniform(size=(n, *SHAPE)) < (0.15 + 0.35 * y)[:, None, None, None]).astype("f4")
    return x, y


def _model(network="mlp", **kwargs):
    options = {"filters": [4, 8]} if network == "conv" else {}
    return mlp_vae(
        SHAPE, latent_dim=2, hidden_units=[8], seed=1, condition_dim=C, network=network,
        network_options=options, **kwargs,
    )  # fmt: skip


# ------------------------------------------------------------------------------- the bodies
def test_bodies_see_x_and_z_joined_with_one_hot_y():
    x, y = _data(5)
    model = _model()
    model.build((None, *SHAPE))
    one_hot = np.eye(C)[y]
    w1, b1 = model.encoder.dense_layers[0].get_weights()
    w2, b2 = model.decoder.dense_layers[0].get_weights()
    expected_h = np.tanh(np.concatenate([x.reshape(5, -1), one_hot], 1) @ w1 + b1)
    head_w, head_b = model.posterior.projection.get_weights()
    loc = (expected_h @ head_w + head_b)[:, :2]
    np.testing.assert_allclose(model.encode(x, y).mean(), loc, rtol=1e-5, atol=1e-6)
    z = RNG.normal(size=(4, 5, 2)).astype("f4")  # [L, B, D] samples, as the objectives give
    expected = np.tanh(np.concatenate([z, np.broadcast_to(one_hot, (4, 5, C))], -1) @ w2 + b2)
    np.testing.assert_allclose(model.given(y).decoder(z), expected, rtol=1e-5, atol=1e-6)
    # [L * B, D] flattened sample-major (the evaluation's decoding) pairs row s*B+b with y_b
    flat = np.asarray(concat_condition(z.reshape(20, 2), one_hot))
    np.testing.assert_array_equal(flat[7, 2:], one_hot[7 % 5])
    assert concat_condition(np.zeros((0, 2), "f4"), np.zeros((0, C), "f4")).shape == (0, 2 + C)


@pytest.mark.parametrize("network", ["mlp", "gated_mlp", "conv"])
def test_samples_of_different_classes_differ_for_every_network(network):
    model = _model(network)
    z = RNG.normal(size=(6, 2)).astype("f4")
    means = [np.asarray(model.decode(z, np.full(6, c)).mean()) for c in range(C)]
    for a in range(C):
        for b in range(a + 1, C):
            assert np.abs(means[a] - means[b]).max() > 1e-3, (network, a, b)
    # the same z and y decode the same way whichever form y takes
    np.testing.assert_allclose(model.decode(z, np.eye(C)[np.full(6, 2)]).mean(), means[2])
    images = model.sample(6, y=np.arange(6) % C, seed=0)
    assert images.shape == (6, *SHAPE)
    with pytest.raises(ValueError, match="Class labels must be in"):
        model.sample(2, y=[0, C])
    with pytest.raises(ValueError, match="one condition per sample"):
        model.sample(3, y=[0, 1])


def test_fit_needs_labels_and_vamp_is_refused():
    x, _ = _data(20)
    model = _model()
    model.compile(keras.optimizers.Adam(1e-2))
    with pytest.raises(ValueError, match="needs a condition y with every example"):
        model.fit(x, batch_size=10, verbose=0)
    with pytest.raises(ValueError, match="cannot use a VampPrior"):
        _model(prior="vamp")


# ------------------------------------------------------------------- exact log p(x|y)
D, LATENT, NOISE = 4, 2, 0.5
W = np.array([[1.2, 0.9], [0.3, -0.8], [0.5, 1.1], [-0.4, 0.2]])
V = RNG.normal(size=(D, C))
B = RNG.normal(size=D)
PRIOR_LOC = RNG.normal(size=(C, LATENT))
PRIOR_SCALE = np.exp(RNG.normal(scale=0.3, size=(C, LATENT)))


def _linear_gaussian_cvae(learned_prior: bool) -> ConditionalVAE:
    """p(x|z, y) = N(W z + V y + b, s^2 I); q(z|x, y) = N(G x + H y + c, diag) with G the
    N(0, I) posterior gain (not exact: the importance weights are not constant)."""
    prior = None
    if learned_prior:
        prior = ConditionalGaussianPrior(LATENT, C)
    model = ConditionalVAE(
        encoder=keras.layers.Flatten(),
        posterior=DiagonalGaussianPosterior(LATENT, min_scale=1e-4),
        decoder=keras.layers.Identity(),
        likelihood=GaussianLikelihood((D,), fixed_scale=NOISE, mean_activation="linear"),
        condition_dim=C,
        prior=prior,
    )
    model.build((None, D))
    assert model.encoder_conditioning == "features"
    cov = np.linalg.inv(np.eye(LATENT) + W.T @ W / NOISE**2)
    gain = cov @ W.T / NOISE**2
    kernel = np.zeros((D + C, 2 * LATENT))
    kernel[:D, :LATENT], kernel[D:, :LATENT] = gain.T, (-gain @ V).T
    bias = np.concatenate([-gain @ B, np.log(np.expm1(1.3 * np.sqrt(np.diag(cov))))])
    model.posterior.projection.set_weights([kernel, bias])
    model.likelihood.projection.set_weights([np.concatenate([W.T, V.T]), B])
    if learned_prior:
        model.prior.loc_layer.set_weights([PRIOR_LOC, np.zeros(LATENT)])
        raw = np.log(np.expm1(PRIOR_SCALE - 1e-4))
        model.prior.scale_layer.set_weights([raw, np.zeros(LATENT)])
    return model


@pytest.mark.parametrize("learned_prior", [False, True])
def test_importance_sampled_log_p_x_given_y_reaches_the_exact_value(learned_prior):
    model = _linear_gaussian_cvae(learned_prior)
    y = RNG.integers(0, C, size=60)
    loc = PRIOR_LOC[y] if learned_prior else np.zeros((60, LATENT))
    scale = PRIOR_SCALE[y] if learned_prior else np.ones((60, LATENT))
    z = loc + scale * RNG.normal(size=(60, LATENT))
    x = (z @ W.T + np.eye(C)[y] @ V.T + B + NOISE * RNG.normal(size=(60, D))).astype("f4")
    exact = np.array([
        stats.multivariate_normal(
            W @ loc[i] + V[:, y[i]] + B, W @ np.diag(scale[i] ** 2) @ W.T + NOISE**2 * np.eye(D)
        ).logpdf(x[i])
        for i in range(60)
    ])  # fmt: skip
    estimate = evaluation.importance_sampled_log_likelihood(
        model, x, num_samples=2000, chunk_size=500, verbose=0, labels=y
    )
    error = estimate["log_px"] - exact  # Monte Carlo noise of K = 2000, no bias
    assert np.abs(error).mean() < 0.03 and np.abs(error).max() < 0.15 and abs(error.mean()) < 0.01
    wrong = evaluation.importance_sampled_log_likelihood(
        model, x, num_samples=200, verbose=0, labels=(y + 1) % C
    )
    assert wrong["log_px"].mean() < exact.mean() - 0.5
    # the ELBO in closed form: q(z|x, y) = N(m, diag(v)) as set in the encoder's head,
    # E_q[log p(x|z, y)] = -D/2 log(2 pi s^2) - (|x - W m - V y - b|^2 + sum_j |W_j|^2 v_j)
    # / (2 s^2), and KL(q || N(loc, diag(scale^2))) per dimension
    cov = np.linalg.inv(np.eye(LATENT) + W.T @ W / NOISE**2)
    m = (x - B - np.eye(C)[y] @ V.T) @ (cov @ W.T / NOISE**2).T
    v = (1.3 * np.sqrt(np.diag(cov)) + 1e-4) ** 2
    residual = x - m @ W.T - np.eye(C)[y] @ V.T - B
    reconstruction = -0.5 * D * np.log(2 * np.pi * NOISE**2) - (
        np.sum(residual**2, 1) + np.sum(W**2 * v, axis=(0, 1))
    ) / (2 * NOISE**2)
    kl = np.sum(np.log(scale / np.sqrt(v)) + (v + (m - loc) ** 2) / (2 * scale**2) - 0.5, 1)
    np.testing.assert_allclose(estimate["kl"], kl, rtol=1e-3, atol=1e-3)
    terms = model.elbo_terms(x, y, num_samples=2000, seed=1)
    for elbo in (estimate["elbo"], np.asarray(terms.elbo)):  # Monte Carlo reconstructions
        assert np.all(elbo < exact)
        assert abs(np.mean(elbo - (reconstruction - kl))) < 0.05
        assert np.abs(elbo - (reconstruction - kl)).max() < 0.5
    with pytest.raises(ValueError, match="labels go with a conditional VAE"):
        evaluation.importance_sampled_log_likelihood(model, x, num_samples=2, verbose=0)


def test_a_labelled_stream_evaluates_like_the_arrays_of_its_images_and_labels():
    model = _linear_gaussian_cvae(learned_prior=True)
    y = RNG.integers(0, C, size=130)
    x = (RNG.normal(size=(130, LATENT)) @ W.T + np.eye(C)[y] @ V.T + B).astype("f4")
    stream = data.ArrayStream(x, "x", labels=y)  # (images, labels) batches
    options = {"importance_samples": 40, "seed": 2, "batch_size": 50, "verbose": 0}
    streamed = evaluation.evaluate(model, stream, **options)
    in_memory = evaluation.evaluate(model, x, labels=y, **options)
    assert streamed["num_examples"] == 130
    assert json.dumps(streamed, sort_keys=True) == json.dumps(in_memory, sort_keys=True)
    other = evaluation.evaluate(model, x, labels=(y + 1) % C, **options)  # the labels count
    assert other["nll"] > streamed["nll"] + 0.5
    with pytest.raises(ValueError, match="labels go with a conditional VAE"):
        evaluation.evaluate(model, data.ArrayStream(x, "x"), **options)


# ------------------------------------------------------------------ the trainer, exactly
SPLIT_INVARIANCE = textwrap.dedent(
    """
    import json
    import numpy as np
    from keras_vae.engine import distribute
    distribute.configure_cpu_replicas(2)
    import keras
    from keras_vae import mlp_vae

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=63)  # 3 global batches of 21: 11 + 10 per replica
    x = (rng.uniform(size=(63, 6, 5, 1)) < (0.15 + 0.35 * y)[:, None, None, None]).astype("f4")

    def train(strategy, jit_compile):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = mlp_vae((6, 5, 1), latent_dim=3, hidden_units=[16], seed=1, num_samples=2,
                            condition_dim=3, prior="conditional")
            model.build((None, 6, 5, 1))
            model.compile(keras.optimizers.SGD(0.05), jit_compile=jit_compile)
        initial = [w.copy() for w in model.get_weights()]
        history = model.fit(x, y, batch_size=21, epochs=2, shuffle=False, verbose=0).history
        return model, initial, history

    single, initial, h1 = train(distribute.get_strategy("default"), False)
    out = {"change": max(float(np.abs(a - b).max())
                         for a, b in zip(initial, single.get_weights()))}
    for jit in (False, None):
        mirrored, _, h2 = train(distribute.get_strategy("mirrored"), jit)
        out[str(jit)] = {
            "xla": mirrored.xla, "replicas": mirrored.distribute_strategy.num_replicas_in_sync,
            "diff": max(float(np.abs(a - b).max())
                        for a, b in zip(single.get_weights(), mirrored.get_weights())),
            "elbo": [h1["elbo"][-1], h2["elbo"][-1]],
        }
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.long  # 16 s of a fresh 2-replica process; in CI the mirrored equivalence of three
# objectives (tests/engine/test_distribute.py) and of a CLI run (tests/cli) check the strategy
def test_two_cpu_replicas_train_the_same_weights_as_one_device():
    completed = subprocess.run(
        [sys.executable, "-c", SPLIT_INVARIANCE], capture_output=True, text=True, timeout=900
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["change"] > 1e-3
    for jit, xla in (("False", "off"), ("None", "replica")):
        assert out[jit]["replicas"] == 2 and out[jit]["xla"] == xla
        assert out[jit]["diff"] < 1e-5, jit
        assert out[jit]["elbo"][1] == pytest.approx(out[jit]["elbo"][0], rel=1e-5)


def test_fused_xla_steps_train_like_keras_loop_on_arrays_and_datasets_of_pairs():
    x, y = _data(230)

    def train(fuse):
        keras.utils.set_random_seed(0)
        model = _model()
        model.fuse_steps = fuse
        model.compile(keras.optimizers.Adam(1e-2), steps_per_execution=4)
        if fuse:  # int labels from arrays
            model.fit(x, y, batch_size=50, epochs=2, shuffle=False, verbose=0)
        else:  # one-hot pairs from tf.data: the same batches
            pairs = tf.data.Dataset.from_tensor_slices((x, np.eye(C, dtype="f4")[y])).batch(50)
            model.fit(pairs, epochs=2, verbose=0)
        return model

    fused, plain = train(True), train(False)
    assert fused._fuses_steps() and not plain._fuses_steps()
    assert int(fused.optimizer.iterations) == int(plain.optimizer.iterations) == 10
    for a, b in zip(fused.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------ serialization
@pytest.mark.parametrize(("network", "prior"), [("mlp", "conditional"), ("conv", "mixture")])
def test_keras_round_trip_reproduces_encode_and_decode(tmp_path, network, prior):
    x, y = _data(4)
    model = _model(network, prior=prior)
    model.build((None, *SHAPE))
    z = RNG.normal(size=(4, 2)).astype("f4")

    def outputs(m, inputs):
        images, labels = inputs
        return (
            m.encode_parameters(images, labels),
            m.decode(z, labels).mean(),
            m.prior_distribution(labels).log_prob(z),
        )

    restored = run_saving_test(model, (x, y), outputs, directory=tmp_path)
    assert (
        restored.condition_dim == C and restored.encoder_conditioning == model.encoder_conditioning
    )


# --------------------------------------------------------------------------------- data
def test_streams_keep_each_label_with_its_image(tmp_path):
    y = np.arange(40) % 4
    x = np.broadcast_to((np.arange(40) * 6)[:, None, None], (40, 3, 2)).astype(np.uint8)
    path = tmp_path / "labelled.npz"
    np.savez(path, x=x, y=y)
    train = data.open_array(path, "train", validation_split=0.25, labels=True)
    held_out = data.open_array(path, "validation", validation_split=0.25, labels=True)
    assert (len(train), len(held_out), train.condition_dim) == (30, 10, 4)
    for stream, first in ((train, 0), (held_out, 30)):
        seen = []
        for images, labels in stream.dataset(batch_size=7, seed=3):
            index = np.rint(images.numpy()[:, 0, 0, 0] * 255 / 6).astype(int)
            np.testing.assert_array_equal(labels.numpy(), index % 4)
            seen += list(index)
        assert sorted(seen) == list(range(first, first + len(stream)))
    pairs = data.make_dataset(x[..., None] / 255.0, batch_size=8, seed=1, labels=y)
    for images, labels in pairs:
        index = np.rint(images.numpy()[:, 0, 0, 0] * 255 / 6).astype(int)
        np.testing.assert_array_equal(labels.numpy(), index % 4)
    np.savez(tmp_path / "unlabelled.npz", x=x)
    with pytest.raises(data.DataValidationError, match="has no labels"):
        data.open_array(tmp_path / "unlabelled.npz", labels=True)


# ---------------------------------------------------------------------------------- CLI
def _cli(*argv) -> int:
    return cli.main([str(a) for a in argv])


def test_cli_trains_evaluates_plots_and_exports_a_conditional_conv_run(tmp_path, capsys):
    x, y = _data(90)
    np.savez(tmp_path / "tiny.npz", x=x, y=y)
    run = tmp_path / "run"
    # without XLA: compiling the convolutions costs more than these 6 steps
    train = ["train", "--conditional", "--network", "conv", "--conv-filters", "4", "8",
             "--dataset", tmp_path / "tiny.npz", "--epochs", "2", "--batch-size", "30",
             "--hidden-units", "8", "--latent-dim", "2", "--quiet", "--image-every", "2",
             "--no-xla", "--output", run]  # fmt: skip

    class StopAfterOneEpoch(keras.callbacks.Callback):  # a kill after epoch 1's backup
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(cli.train_config([str(a) for a in train[1:]]), output=run, verbose=0,
                       callbacks=[StopAfterOneEpoch()])  # fmt: skip
    assert json.loads((run / "config.json").read_text())["conditional"] is True
    capsys.readouterr()
    assert _cli(*train) == 0  # resumes the conditional model from its backup
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("keras-vae: training a conditional VAE (y of size 3;"), first
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 1 and metrics["epochs"] == 2
    assert metrics["conditional"] is True
    assert (run / "images" / "samples_epoch002.png").is_file()
    assert _cli(*train[:-2], "--no-conditional", "--output", run) == 2  # not this run
    assert "differs in: conditional" in capsys.readouterr().err
    assert _cli("evaluate", run, "--importance-samples", "50", "--json") == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_examples"] == 9 and np.isfinite(result["nll"])
    assert result["nll"] <= -result["elbo"] + 1e-3  # log p(x|y) >= the ELBO (K = 50)
    for kind in ("samples", "reconstructions", "latents"):
        assert _cli("plot", run, "--kind", kind, "--num", "6", "--output", run / f"{kind}.png") == 0
        assert (run / f"{kind}.png").stat().st_size > 0
    assert _cli("plot", run, "--kind", "manifold", "--output", run / "m.png") == 2
    assert "for a conditional VAE plot samples" in capsys.readouterr().err
    assert _cli("export", run, "--output", tmp_path / "export", "--no-scorer", "--no-tflite") == 0
    decoder = tf.saved_model.load(str(tmp_path / "export" / "decoder" / "1"))
    z, labels = np.zeros((3, 2), np.float32), np.arange(3, dtype=np.int32)
    mean = decoder.signatures["serving_default"](z=tf.constant(z), y=tf.constant(labels))["mean"]
    model, _ = runs.load_run(run)
    np.testing.assert_allclose(mean, model.decode(z, labels).mean(), atol=1e-5)


def test_class_rows_of_the_samples_figure():
    from keras_vae.models.vae import pictures as plotting

    model = _model()
    conditions = model.sample_conditions(7)
    np.testing.assert_array_equal(np.argmax(conditions, 1), [0, 1, 2, 0, 1, 2, 0])
    fig = plotting.sample_grid(model, 6, seed=0)  # 6 samples over 3 classes: rows of 2
    by_class = model.sample(6, y=[0, 0, 1, 1, 2, 2], seed=0)
    drawn = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(drawn, plotting.tile_images(np.asarray(by_class), num_cols=2))
    plotting.close_figure(fig)


def test_conditional_without_labels_is_one_clear_line(tmp_path, capsys):
    x, _ = _data(30)
    np.savez(tmp_path / "plain.npz", x=x)
    assert _cli("train", "--conditional", "--dataset", tmp_path / "plain.npz",
                "--output", tmp_path / "run") == 2  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "has no labels" in error[0] and "--conditional" in error[0]
    assert _cli("train", "--prior", "conditional", "--output", tmp_path / "r2") == 2
    assert "add --conditional" in capsys.readouterr().err
    tfds_dir = SHARED / "tensorflow_datasets"
    if tfds_dir.is_dir():
        assert _cli("train", "--conditional", "--dataset", "binarized_mnist", "--data-dir",
                    tfds_dir, "--output", tmp_path / "r3") == 2  # fmt: skip
        assert "binarized_mnist has no labels" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="no offline data")
def test_cli_on_the_offline_labelled_binarized_mnist(tmp_path, capsys):
    path = labeled_binarized_mnist.write_npz(SHARED / "data", tmp_path / "bm.npz")
    run = tmp_path / "bm"
    assert _cli("train", "--conditional", "--prior", "conditional", "--dataset", path,
                "--limit", "600", "--validation-split", "0.1", "--epochs", "1",
                "--hidden-units", "64", "--latent-dim", "4", "--image-every", "0",
                "--quiet", "--output", run) == 0  # fmt: skip
    assert "conditional VAE (y of size 10;" in capsys.readouterr().out
    assert _cli("evaluate", run, "--importance-samples", "20", "--limit", "50", "--json") == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_examples"] == 50 and 0 < result["nll"] < 544  # below log 2 * 784
    assert _cli("plot", run, "--kind", "samples", "--output", run / "s.png") == 0
    # export with the labels as inputs, checked on the run's own labelled training images
    # (TFLite and int8 of a conditional export: test_export_conditional.py)
    assert _cli("export", run, "--output", tmp_path / "export", "--no-tflite") == 0
    report = json.loads((tmp_path / "export" / "export_report.json").read_text())
    assert report["model"]["condition_dim"] == 10
    encoder = tf.saved_model.load(str(tmp_path / "export" / "encoder" / "1"))
    x, y = np.load(path)["x"][:5], np.arange(5, dtype=np.int32)  # float32 {0, 1} images
    got = encoder.signatures["serving_default"](x=tf.constant(x), y=tf.constant(y))["loc"]
    model, _ = runs.load_run(run)
    np.testing.assert_allclose(got, model.encode(x, y).mean(), atol=1e-4)
