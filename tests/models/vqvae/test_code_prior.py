"""The gated PixelCNN code prior: causality without a blind spot, log p(z) against NumPy,
ancestral sampling against the exact joint, the bound, training and the .keras round trip."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test

from keras_vae.models.vqvae.code_prior import CodePrior, GatedPixelCNN, ancestral_sample, code_prior
from keras_vae.models.vqvae.model import vqvae


def _binary(n, seed=0):
    return (np.random.default_rng(seed).uniform(size=(n, 12, 12, 1)) > 0.5).astype("float32")


def _prior(**options):
    model = vqvae((12, 12, 1), 8, 4, filters=[8, 8], seed=1)
    model.build((None, 12, 12, 1))
    prior = code_prior(model, channels=8, num_layers=3, hidden_units=16, seed=0, **options)
    prior.build()
    return prior


def _log_softmax(logits):
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def test_each_position_depends_on_every_earlier_position_and_no_later_one():
    keras.utils.set_random_seed(0)  # (random weights could make a dependence vanish)
    network = GatedPixelCNN(5, channels=8, num_layers=3, hidden_units=8)
    codes = np.random.default_rng(0).integers(0, 5, size=(1, 3, 4))
    base = network(codes).numpy().reshape(12, 5)
    for t in range(12):
        changed = codes.copy()
        changed.flat[t] = (changed.flat[t] + 1) % 5
        moved = np.abs(network(changed).numpy().reshape(12, 5) - base).max(-1) > 0
        # raster order: positions <= t never see z_t; with 3 layers every later one does
        # (including the upper-right neighbour that a single masked stack misses)
        np.testing.assert_array_equal(moved, np.arange(12) > t, err_msg=f"position {t}")


def test_log_prob_is_the_sum_of_log_softmax_at_the_codes():
    prior = _prior()
    codes = np.random.default_rng(1).integers(0, 8, size=(4, 3, 3))
    logits = prior.network(codes).numpy().astype(np.float64)
    picked = np.take_along_axis(_log_softmax(logits), codes[..., None], axis=-1)
    np.testing.assert_allclose(prior.log_prob(codes).numpy(), picked.sum((1, 2, 3)), rtol=1e-5)


def test_ancestral_sampling_draws_from_the_exact_joint_distribution():
    network = GatedPixelCNN(3, channels=4, num_layers=2, hidden_units=8)
    network.build((None, 1, 2))
    for weight in network.weights:  # sizeable logits, so the test can tell distributions apart
        weight.assign(np.random.default_rng(2).normal(size=weight.shape) * 0.8)
    pairs = np.array(list(itertools.product(range(3), repeat=2))).reshape(9, 1, 2)
    log_p = _log_softmax(network(pairs).numpy().astype(np.float64))
    joint = np.exp(log_p[:, 0, 0, :][np.arange(9), pairs[:, 0, 0]]
                   + log_p[:, 0, 1, :][np.arange(9), pairs[:, 0, 1]])  # fmt: skip
    assert joint.sum() == pytest.approx(1.0, abs=1e-5)
    seed = tf.constant([7, 0])

    def uniform(shape, t):
        s = tf.random.experimental.stateless_fold_in(seed, t)
        return tf.random.stateless_uniform(shape, s, minval=1e-7, maxval=1.0)

    n = 6000
    codes = ancestral_sample(network, n, (1, 2), uniform).numpy().reshape(n, 2)
    observed = np.bincount(codes[:, 0] * 3 + codes[:, 1], minlength=9) / n
    stderr = np.sqrt(joint * (1 - joint) / n)
    assert np.all(np.abs(observed - joint) < 5 * stderr + 1e-3), (observed, joint)


def test_bound_is_reconstruction_plus_code_nll_and_bits_per_dim():
    prior = _prior()
    x = _binary(5)
    terms = prior.bound_terms(tf.constant(x))
    codes = prior.vqvae.encode(x)
    log_px_z = prior.vqvae.decode_codes(codes).log_prob(x).numpy()
    np.testing.assert_allclose(terms["reconstruction"].numpy(), -log_px_z, rtol=1e-6)
    np.testing.assert_allclose(terms["code_nll"].numpy(), -prior.log_prob(codes).numpy())
    np.testing.assert_allclose(terms["bound"].numpy(), -log_px_z - prior.log_prob(codes).numpy(),
                               rtol=1e-6)  # fmt: skip
    result = prior.bits_per_dim(x, batch_size=2)
    assert result["bits_per_dim"] == pytest.approx(
        terms["bound"].numpy().mean() / (144 * np.log(2)), rel=1e-5
    )


def test_training_lowers_the_code_nll_and_leaves_the_vqvae_alone():
    prior = _prior()
    prior.compile(keras.optimizers.Adam(1e-2), jit_compile=False)
    frozen = [w.numpy().copy() for w in prior.vqvae.weights]
    assert prior.trainable_weights and all(
        not any(w is v for v in prior.vqvae.weights) for w in prior.trainable_weights
    )
    x = _binary(64)
    history = prior.fit(x, batch_size=32, epochs=3, verbose=0).history
    assert set(history) == {"loss", "code_nll", "bound"}
    assert history["code_nll"][-1] < history["code_nll"][0]
    for before, after in zip(frozen, prior.vqvae.weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())


def test_sample_is_reproducible_with_a_seed_and_decodes():
    prior = _prior()
    codes = prior.sample(3, seed=5).numpy()
    assert codes.shape == (3, 3, 3) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 8
    np.testing.assert_array_equal(codes, prior.sample(3, seed=5).numpy())
    images, drawn = prior.sample_images(2, seed=1)
    assert images.shape == (2, 12, 12, 1)


def test_keras_round_trip_keeps_the_prior_and_the_frozen_vqvae(tmp_path):
    prior = _prior()
    codes = np.random.default_rng(3).integers(0, 8, size=(2, 3, 3))
    restored = run_saving_test(prior, codes, lambda p, c: p.log_prob(c), directory=tmp_path)
    assert isinstance(restored, CodePrior) and restored.vqvae.trainable is False
    network = [v.path for v in restored.network.trainable_variables]
    assert [v.path for v in restored.trainable_variables] == network  # the VQ-VAE stays frozen


def test_a_prior_over_a_loaded_vqvae_trains_only_its_network(tmp_path):
    model = vqvae((12, 12, 1), 8, 4, filters=[8, 8], seed=1)
    model.build((None, 12, 12, 1))
    model.save(tmp_path / "vqvae.keras")
    loaded = keras.saving.load_model(tmp_path / "vqvae.keras")  # built by the loader
    prior = code_prior(loaded, channels=8, num_layers=2, hidden_units=8)
    prior.build()
    names = [v.path for v in prior.network.trainable_variables]
    assert [v.path for v in prior.trainable_variables] == names


def test_mismatched_codebook_is_refused():
    model = vqvae((12, 12, 1), 8, 4, filters=[8, 8])
    with pytest.raises(ValueError, match="num_classes=8"):
        CodePrior(model, GatedPixelCNN(5))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        GatedPixelCNN(5, kernel_size=4)
