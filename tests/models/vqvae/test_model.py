"""VQ-VAE: shapes, the objective against its parts, training and resuming, the .keras round
trip (codes reproduced exactly), and MirroredStrategy on 2 CPUs equal to one device (the EMA
codebook and the restarts included)."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test

from keras_vae.models.vqvae.model import VQVAE, GridDecoder, GridEncoder, vqvae


def _binary(n, shape=(12, 12, 1), seed=0):
    return (np.random.default_rng(seed).uniform(size=(n, *shape)) > 0.5).astype("float32")


def _small(update="ema", **options):
    model = vqvae((12, 12, 1), 8, 4, filters=[8, 8], codebook_update=update, seed=1, **options)
    model.build((None, 12, 12, 1))
    return model


@pytest.mark.parametrize(
    ("shape", "likelihood", "grid"),
    [((28, 28, 1), "bernoulli", (7, 7)), ((32, 32, 3), "logistic", (8, 8)),
     ((28, 20, 1), "bernoulli", (7, 5))],
)  # fmt: skip
def test_code_grid_and_shapes(shape, likelihood, grid):
    model = vqvae(shape, 16, 4, filters=[8, 8], likelihood=likelihood, seed=0)
    x = np.random.default_rng(0).integers(0, 256, size=(2, *shape)).astype("float32") / 255
    codes = model.encode(x)
    assert model.code_shape == grid and codes.shape == (2, *grid) and codes.dtype == tf.int32
    assert model.quantized_latents(x).shape == (2, *grid, 4)
    assert model(x).shape == (2, *shape)
    assert model.decode_codes(codes).mean().shape == (2, *shape)


def test_objective_is_reconstruction_plus_weighted_commitment():
    model = _small(commitment_weight=0.5)
    x = _binary(3)
    loss, terms = model.compute_objective(tf.constant(x), None, 0)
    z_e = model.encoder(x).numpy()
    codebook = model.quantizer.codebook.numpy()
    codes = ((z_e[..., None, :] - codebook) ** 2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(terms["codes"].numpy(), codes)
    logits = model.likelihood.parameters(model.decoder(codebook[codes]))["logits"].numpy()
    log_px = (x * logits - np.logaddexp(0, logits)).sum(axis=(1, 2, 3))
    commitment = ((z_e - codebook[codes]) ** 2).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(terms["reconstruction"].numpy(), -log_px, rtol=1e-5)
    np.testing.assert_allclose(terms["commitment"].numpy(), commitment, rtol=1e-5)
    assert float(loss) == pytest.approx(float(np.mean(-log_px + 0.5 * commitment)), rel=1e-5)


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_training_reports_the_metrics_and_moves_the_codebook(update):
    model = _small(update)
    model.compile(keras.optimizers.Adam(3e-3), jit_compile=False)
    codebook = model.quantizer.codebook.numpy()
    history = model.fit(_binary(32), batch_size=16, epochs=2, verbose=0).history
    names = {"loss", "reconstruction", "commitment", "perplexity", "usage"}
    assert set(history) == names | ({"codebook"} if update == "loss" else set())
    assert 1.0 <= history["perplexity"][-1] <= 8 and 0 < history["usage"][-1] <= 1
    assert history["loss"][-1] < history["loss"][0]
    assert np.abs(model.quantizer.codebook.numpy() - codebook).max() > 1e-4


def test_keras_round_trip_reproduces_codes_exactly(tmp_path):
    model = _small()
    model.compile(keras.optimizers.Adam(3e-3), jit_compile=False)
    x = _binary(32)
    model.fit(x, batch_size=16, epochs=1, verbose=0)
    restored = run_saving_test(
        model, x, lambda m, v: {"codes": m.encode(v), "mean": m(v)}, directory=tmp_path
    )
    assert isinstance(restored, VQVAE)
    assert isinstance(restored.encoder, GridEncoder) and isinstance(restored.decoder, GridDecoder)


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    x = _binary(32)

    def trained(epochs):
        keras.utils.set_random_seed(0)
        model = _small(restart_threshold=0.5)  # restarts draw from the model's seed
        model.compile(keras.optimizers.Adam(3e-3), jit_compile=False)
        model.fit(x, batch_size=16, epochs=epochs, verbose=0, shuffle=False)
        return model

    straight = trained(2)
    first = trained(1)
    first.save(tmp_path / "m.keras")
    resumed = keras.saving.load_model(tmp_path / "m.keras")
    resumed.compile(resumed.optimizer, jit_compile=False)
    resumed.fit(x, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(straight.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)


MIRRORED_VQVAE = textwrap.dedent(
    """
    import json
    import numpy as np
    from keras_vae.engine import distribute
    distribute.configure_cpu_replicas(2)
    import keras
    from keras_vae.models.vqvae.model import vqvae

    rng = np.random.default_rng(0)
    # 42 examples in global batches of 21: each splits 11 + 10 over the 2 replicas
    x = (rng.uniform(size=(42, 8, 8, 1)) > 0.5).astype("float32")
    # decay 0.5, threshold 0.9: a code unused in a step is restarted at the next update
    cases = {"ema": ({}, None), "loss": ({"codebook_update": "loss"}, False)}

    def make(strategy, options, jit_compile):
        with strategy.scope():
            model = vqvae((8, 8, 1), 16, 3, filters=[8, 8], seed=1, decay=0.5,
                          restart_threshold=0.9, **options)
            model.build((None, 8, 8, 1))
            model.compile(keras.optimizers.SGD(0.05), jit_compile=jit_compile)
        return model

    out = {}
    strategy = distribute.get_strategy("mirrored")
    for name, (options, jit) in cases.items():
        single = make(distribute.get_strategy("default"), options, False)
        initial = [w.copy() for w in single.get_weights()]
        hs = single.fit(x, batch_size=21, epochs=1, shuffle=False, verbose=0).history
        mirrored = make(strategy, options, jit)
        mirrored.set_weights(initial)
        hm = mirrored.fit(x, batch_size=21, epochs=1, shuffle=False, verbose=0).history
        names = [w.path for w in single.weights]
        out[name] = {
            "replicas": strategy.num_replicas_in_sync, "xla": mirrored.xla,
            "change": {n: float(np.abs(a - b).max())
                       for n, a, b in zip(names, initial, single.get_weights())},
            "diff": {n: float(np.abs(a - b).max()) for n, a, b in
                     zip(names, single.get_weights(), mirrored.get_weights())},
            "metrics_single": {k: v[-1] for k, v in hs.items()},
            "metrics": {k: v[-1] for k, v in hm.items()},
        }
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.long  # 22 s of a fresh 2-replica process; the VAE's and the CLI's stay in CI
def test_mirrored_training_equals_one_device_including_the_codebook():
    """EMA codebook under the replica's XLA, the codebook loss without XLA; restarts in both."""
    completed = subprocess.run([sys.executable, "-c", MIRRORED_VQVAE],
                               capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, completed.stderr[-3000:]
    for name, run in json.loads(lines[-1][len("RESULT ") :]).items():
        assert run["replicas"] == 2
        assert run["xla"] == ("replica" if name == "ema" else "off")
        # the codebook (restarted codes included), its counts and the network moved ...
        for part in ("quantizer/codebook", "quantizer/ema_counts", "encoder/conv_0/kernel"):
            assert max(v for k, v in run["change"].items() if part in k) > 1e-3, (name, part)
        # ... and moved identically
        for weight, diff in run["diff"].items():
            assert diff < 1e-5, (name, weight, diff)
        for key, value in run["metrics_single"].items():
            assert run["metrics"][key] == pytest.approx(value, rel=1e-5), (name, key)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="commitment_weight"):
        vqvae((12, 12, 1), 8, 4, commitment_weight=-1.0)
    with pytest.raises(ValueError, match="images \\[height, width, channels\\]"):
        vqvae((12, 12), 8, 4)
    model = _small()
    with pytest.raises(ValueError, match="expects examples of shape"):
        model.build((None, 10, 10, 1))
