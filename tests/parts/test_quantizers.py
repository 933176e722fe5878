"""VectorQuantizer against NumPy: nearest codes, the straight-through gradient, the EMA
formula with Laplace smoothing, dead-code restarts, the codebook loss, the usage metrics."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test

from keras_vae.parts.quantizers import CodebookUsage, VectorQuantizer, nearest_codes


def _quantizer(k=6, d=3, **options):
    vq = VectorQuantizer(k, d, seed=0, **options)
    vq.build((None, 2, 2, d))
    return vq


def test_nearest_code_is_numpy_argmin_of_distances():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 3, 5, 8)).astype("float32")
    codebook = rng.normal(size=(11, 8)).astype("float32")
    distances = ((z[..., None, :] - codebook) ** 2).sum(-1)  # [4, 3, 5, 11]
    codes = nearest_codes(tf.constant(z), tf.constant(codebook)).numpy()
    assert codes.dtype == np.int32 and codes.shape == (4, 3, 5)
    np.testing.assert_array_equal(codes, distances.argmin(-1))


def test_call_returns_the_nearest_code_vectors_and_losses_match_numpy():
    vq = _quantizer()
    z = np.random.default_rng(1).normal(size=(2, 2, 2, 3)).astype("float32")
    z_st, codes = vq(z)
    codebook = vq.codebook.numpy()
    want = ((z[..., None, :] - codebook) ** 2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(codes.numpy(), want)
    np.testing.assert_allclose(z_st.numpy(), codebook[want], atol=1e-6)
    commitment, codebook_loss = vq.losses_per_example(tf.constant(z), vq.lookup(codes))
    expected = ((z - codebook[want]) ** 2).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(commitment.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(codebook_loss.numpy(), expected, rtol=1e-5)


def test_straight_through_gradient_is_the_gradient_at_the_decoder_input():
    vq = _quantizer()
    z = tf.constant(np.random.default_rng(2).normal(size=(2, 2, 2, 3)), tf.float32)
    weights = tf.constant(np.random.default_rng(3).normal(size=(3, 4)), tf.float32)

    def decoder_loss(v):  # any nonlinear function of the decoder's input
        return tf.reduce_sum(tf.tanh(tf.einsum("bhwd,de->bhwe", v, weights)) ** 2)

    with tf.GradientTape() as tape:
        tape.watch(z)
        z_st, codes = vq(z)
        loss = decoder_loss(z_st)
    through = tape.gradient(loss, z)
    z_q = tf.constant(vq.lookup(codes))
    with tf.GradientTape() as tape:
        tape.watch(z_q)
        loss_q = decoder_loss(z_q)
    at_decoder = tape.gradient(loss_q, z_q)
    np.testing.assert_allclose(through.numpy(), at_decoder.numpy(), rtol=1e-6)
    assert np.abs(at_decoder.numpy()).max() > 0


def test_ema_update_follows_the_laplace_smoothed_formula():
    k, d, decay, eps = 5, 3, 0.9, 1e-3
    vq = _quantizer(k, d, decay=decay, epsilon=eps, restart_threshold=0.0)
    rng = np.random.default_rng(4)
    counts0 = rng.uniform(0.5, 3.0, size=k).astype("float32")
    sums0 = rng.normal(size=(k, d)).astype("float32")
    vq.ema_counts.assign(counts0)
    vq.ema_sums.assign(sums0)
    z = rng.normal(size=(4, 2, 2, d)).astype("float32")
    codes = rng.integers(0, k, size=(4, 2, 2)).astype("int32")
    vq.update(tf.constant(z), tf.constant(codes), tf.constant([1, 2]))
    flat, flat_codes = z.reshape(-1, d), codes.reshape(-1)
    n = np.array([(flat_codes == j).sum() for j in range(k)], np.float64)
    s = np.stack([flat[flat_codes == j].sum(0) for j in range(k)])
    counts = decay * counts0 + (1 - decay) * n
    sums = decay * sums0 + (1 - decay) * s
    total = counts.sum()
    smoothed = (counts + eps) / (total + k * eps) * total
    np.testing.assert_allclose(vq.ema_counts.numpy(), counts, rtol=1e-5)
    np.testing.assert_allclose(vq.ema_sums.numpy(), sums, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vq.codebook.numpy(), sums / smoothed[:, None], rtol=1e-4)


def test_initial_ema_state_reproduces_the_initial_codebook():
    vq = _quantizer()
    np.testing.assert_array_equal(vq.ema_sums.numpy(), vq.codebook.numpy())
    np.testing.assert_array_equal(vq.ema_counts.numpy(), np.ones(6))
    assert not vq.codebook.trainable and vq.trainable_weights == []


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_dead_codes_restart_at_encoder_outputs_of_the_batch(update):
    vq = _quantizer(6, 3, codebook_update=update, decay=0.5, restart_threshold=0.3)
    z = np.random.default_rng(5).normal(size=(3, 2, 2, 3)).astype("float32")
    codes = np.zeros((3, 2, 2), np.int32)  # every vector to code 0: codes 1..5 decay to 0.5
    vq.ema_counts.assign(np.array([1, 1, 0.4, 0.4, 1, 1], np.float32))  # 2, 3 fall to 0.2
    before = vq.codebook.numpy()
    restarted = vq.update(tf.constant(z), tf.constant(codes), tf.constant([3, 4]))
    assert float(restarted) == 2
    after, vectors = vq.codebook.numpy(), z.reshape(-1, 3)
    for j in (2, 3):  # restarted at one of the batch's encoder outputs, count 1
        assert np.abs(vectors - after[j]).sum(1).min() < 1e-6
        assert vq.ema_counts.numpy()[j] == 1.0
    if update == "loss":  # the other codes are the optimizer's business
        np.testing.assert_array_equal(after[[0, 1, 4, 5]], before[[0, 1, 4, 5]])
    else:
        np.testing.assert_allclose(vq.ema_sums.numpy()[[2, 3]], after[[2, 3]])


def test_codebook_loss_variant_trains_the_codebook_by_its_gradient():
    vq = _quantizer(4, 2, codebook_update="loss")
    assert [w.name for w in vq.trainable_weights] == ["codebook"]
    assert not hasattr(vq, "ema_sums")
    z = tf.constant(np.random.default_rng(6).normal(size=(2, 2, 2, 2)), tf.float32)
    with tf.GradientTape() as tape:
        _, codes = vq(z)
        _, codebook_loss = vq.losses_per_example(z, vq.lookup(codes))
        total = tf.reduce_sum(codebook_loss)
    gradient = tf.convert_to_tensor(tape.gradient(total, vq.codebook.value))
    flat, flat_codes, e = z.numpy().reshape(-1, 2), codes.numpy().reshape(-1), vq.codebook.numpy()
    want = np.stack([2 * (e[j] - flat[flat_codes == j]).sum(0) for j in range(4)])
    np.testing.assert_allclose(gradient.numpy(), want, rtol=1e-5, atol=1e-6)


def test_usage_metrics_match_numpy():
    codes = np.array([[0, 0, 1], [2, 0, 1]])
    perplexity, usage = CodebookUsage(5, "perplexity"), CodebookUsage(5, "usage")
    for metric in (perplexity, usage):
        metric.update_state(codes[:1])
        metric.update_state(codes[1:])
    p = np.array([3, 2, 1]) / 6
    assert float(perplexity.result()) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert float(usage.result()) == pytest.approx(3 / 5)


def test_keras_round_trip_keeps_codebook_and_state(tmp_path):
    vq = _quantizer(7, 3, decay=0.8)
    z = np.random.default_rng(7).normal(size=(2, 2, 2, 3)).astype("float32")
    vq.update(tf.constant(z), vq.codes(z), tf.constant([0, 1]))
    model = keras.Sequential([keras.Input((2, 2, 3)), vq])
    run_saving_test(model, z, lambda m, x: m.layers[0].codes(x), directory=tmp_path)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"codebook_size": 0}, "codebook_size"), ({"codebook_update": "adam"}, "codebook_update"),
     ({"decay": 1.0}, "decay"), ({"restart_threshold": -0.1}, "restart_threshold"),
     ({"epsilon": 0}, "epsilon")],
)  # fmt: skip
def test_bad_arguments_are_named(options, message):
    arguments = {"codebook_size": 4, "code_dim": 2, **options}
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(**arguments)
