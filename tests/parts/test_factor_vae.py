"""FactorVAE: the permutation against its definition, the VAE loss and the discriminator's step
against independent computations (NumPy, Keras' cross-entropy and a separate Adam), the
density-ratio estimate against the closed-form TC of a Gaussian, and training under fit, saved
and resumed with the discriminator's weights and optimizer state. (Under XLA with fused steps:
tests/engine/test_trainer.py; under a MirroredStrategy: tests/engine/test_distribute.py.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae import registry
from keras_vae.parts.factor_vae import FactorVAE, TotalCorrelationDiscriminator, permute_dims

SHAPE = (6, 5, 1)


def _images(count=64, seed=0):
    return (np.random.default_rng(seed).random((count, *SHAPE)) > 0.5).astype("float32")


def _tiny_vae(objective, seed=0):
    vae = keras_vae.mlp_vae(SHAPE, latent_dim=3, hidden_units=8, seed=seed, objective=objective)
    vae.build((None, *SHAPE))
    return vae


def _numpy_logits(discriminator, z, slope=0.2):
    """l(z) with NumPy from the discriminator's weights: leaky-ReLU layers, a linear logit."""
    weights = [np.asarray(w, np.float64) for w in discriminator.get_weights()]
    h = np.asarray(z, np.float64)
    for kernel, bias in zip(weights[0:-2:2], weights[1:-2:2], strict=True):
        a = h @ kernel + bias
        h = np.where(a > 0, a, slope * a)
    return (h @ weights[-2] + weights[-1])[..., 0]


def test_permute_dims_permutes_each_dimension_on_its_own():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2, 500, 1))
    z = np.concatenate([base, base, 2.0 * base], axis=-1)  # three perfectly correlated dims
    permuted = permute_dims(tf.constant(z), tf.constant([3, 4])).numpy()
    # every (sample, dimension) column holds the same values, in another order
    np.testing.assert_array_equal(np.sort(permuted, axis=1), np.sort(z, axis=1))
    assert not np.array_equal(permuted, z)
    # ... each dimension with its own permutation: the correlation is gone
    for j, k in ((0, 1), (0, 2), (1, 2)):
        assert abs(np.corrcoef(permuted[0, :, j], permuted[0, :, k])[0, 1]) < 0.15
    again = permute_dims(tf.constant(z), tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(again, permuted)  # stateless: the seed fixes it


def test_loss_is_the_elbo_plus_gamma_times_the_discriminator_log_odds():
    objective = FactorVAE(num_samples=2, gamma=7.0, discriminator_units=[5, 4])
    vae = _tiny_vae(objective)
    x = _images(6)
    eps = np.random.default_rng(2).normal(size=(2, 6, 3)).astype("float32")
    loss, terms = objective(vae, tf.constant(x), tf.constant(eps), 0)
    params = {k: v.numpy().astype("float64") for k, v in vae.encode_parameters(x).items()}
    z = params["loc"] + params["scale"] * eps
    recon = vae.decode(tf.constant(z, tf.float32)).log_prob(x).numpy().mean(0)  # TFP's own
    kl = 0.5 * np.sum(
        params["loc"] ** 2 + params["scale"] ** 2 - 1 - 2 * np.log(params["scale"]), 1
    )
    tc = _numpy_logits(objective.discriminator, z).mean(0)
    np.testing.assert_allclose(float(loss), np.mean(kl + 7.0 * tc - recon), rtol=1e-4)
    np.testing.assert_allclose(terms["tc"].numpy(), tc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(terms["elbo"].numpy(), recon - kl, rtol=1e-4)  # the true bound


def test_discriminator_step_is_adam_on_the_cross_entropy_of_real_against_permuted():
    discriminator = TotalCorrelationDiscriminator([6], learning_rate=0.05, beta_1=0.5, beta_2=0.9)
    discriminator.build((None, 3))
    z = tf.constant(np.random.default_rng(1).normal(size=(2, 10, 3)).astype("float32"))
    seed = tf.constant([5, 6])
    # the reference: Keras' binary cross-entropy (labels 1 for z, 0 for the permuted z) and a
    # separate Adam with the paper's settings on a copy of the weights
    reference = TotalCorrelationDiscriminator([6])
    reference.build((None, 3))
    reference.set_weights(discriminator.get_weights())
    permuted = permute_dims(z, seed)
    adam = keras.optimizers.Adam(0.05, beta_1=0.5, beta_2=0.9)
    cross_entropy = keras.losses.BinaryCrossentropy(from_logits=True)
    values = [v.value for v in reference.weights]
    with tf.GradientTape() as tape:
        tape.watch(values)
        logits = tf.concat([reference(z), reference(permuted)], axis=0)
        labels = tf.concat([tf.ones_like(reference(z)), tf.zeros_like(reference(z))], axis=0)
        expected_loss = cross_entropy(tf.reshape(labels, [-1]), tf.reshape(logits, [-1]))
    adam.apply(tape.gradient(expected_loss, values), reference.weights)

    terms = discriminator.update(z, seed, (tf.constant(0), tf.constant(10)))
    np.testing.assert_allclose(float(tf.reduce_mean(terms["discriminator_loss"])),
                               float(expected_loss), rtol=1e-5)  # fmt: skip
    hits = np.concatenate([logits.numpy()[:2] > 0, logits.numpy()[2:] < 0])
    np.testing.assert_allclose(float(tf.reduce_mean(terms["discriminator_accuracy"])),
                               hits.mean(), rtol=1e-6)  # fmt: skip
    for got, want in zip(discriminator.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert int(discriminator.optimizer.iterations) == 1


def test_trained_discriminator_estimates_the_total_correlation_of_a_gaussian():
    # z ~ N(0, [[1, rho], [rho, 1]]): TC = KL(q(z) || q(z_1) q(z_2)) = -1/2 log(1 - rho^2)
    rho = 0.9
    expected = -0.5 * np.log(1 - rho**2)
    discriminator = TotalCorrelationDiscriminator([32, 32], learning_rate=3e-3, beta_1=0.5)
    discriminator.build((None, 2))
    cholesky = tf.constant([[1.0, 0.0], [rho, np.sqrt(1 - rho**2)]])
    position = (tf.constant(0), tf.constant(512))

    @tf.function
    def step(seed):
        eps = tf.random.stateless_normal([1, 512, 2], seed=seed)
        return discriminator.update(eps @ tf.transpose(cholesky), seed + 1, position)

    for t in range(400):
        terms = step(tf.constant([t, 0]))
    z = tf.random.stateless_normal([1, 20_000, 2], seed=[9, 9]) @ tf.transpose(cholesky)
    estimate = float(tf.reduce_mean(discriminator(z)))
    assert estimate == pytest.approx(expected, abs=0.15)  # 0.83 nats
    assert float(tf.reduce_mean(terms["discriminator_accuracy"])) > 0.6


def test_trains_in_fit_and_resumes_with_the_discriminator_state(tmp_path):
    objective = FactorVAE(gamma=5.0, discriminator_units=[8, 8], discriminator_learning_rate=0.01)
    vae = _tiny_vae(objective)
    # (without XLA, to keep the test cheap: under XLA, fused and replicated it is in tests/engine)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    discriminator = objective.discriminator
    assert vae.auxiliary_layer is discriminator
    # the model's optimizer never sees the discriminator: it has its own
    mine = {id(v) for v in discriminator.weights}
    assert mine and not mine & {id(v) for v in vae.trainable_variables}
    before = discriminator.get_weights()
    history = vae.fit(_images(), batch_size=16, epochs=2, verbose=0)
    assert set(history.history) == {"loss", *FactorVAE.metric_names}
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert 0 <= min(history.history["discriminator_accuracy"]) <= 1
    assert int(discriminator.optimizer.iterations) == int(vae.optimizer.iterations) == 8
    moved = [np.abs(a - b).max() for a, b in zip(before, discriminator.get_weights(), strict=True)]
    assert max(moved) > 1e-3

    vae.save(tmp_path / "run.keras")
    resumed = keras.saving.load_model(tmp_path / "run.keras", safe_mode=True)
    assert resumed.objective.get_config() == objective.get_config()
    restored = resumed.auxiliary_layer
    assert restored is resumed.objective.discriminator
    for a, b in zip(discriminator.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    # its Adam's moments and step count are restored: the next step is the same step
    saved, loaded = discriminator.optimizer, restored.optimizer
    assert int(loaded.iterations) == 8 and len(loaded.variables) == len(saved.variables)
    z = tf.constant(np.random.default_rng(3).normal(size=(1, 16, 3)).astype("float32"))
    position = (tf.constant(0), tf.constant(16))
    for layer in (discriminator, restored):
        layer.update(z, tf.constant([1, 2]), position)
    for a, b in zip(discriminator.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # the trained model exports like any VAE (its self-checks compare every artefact with
    # Keras); the discriminator is training-only and stays out of the served models
    from keras_vae.models.vae.export import export_vae

    export_vae(resumed, tmp_path / "export", tflite=False, scorer=False, progress=None)
    encoder = tf.saved_model.load(str(tmp_path / "export" / "encoder" / "1"))
    x = _images()[:4]
    got = encoder.signatures["serving_default"](x=tf.constant(x))["loc"].numpy()
    np.testing.assert_allclose(got, resumed.encode(x).mean().numpy(), atol=1e-5)
    for part in ("encoder", "decoder"):  # no tensor of either is a discriminator weight
        prefix = str(tmp_path / "export" / part / "1" / "variables" / "variables")
        reader = tf.train.load_checkpoint(prefix)
        served = [reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)]
        served = [v for v in served if isinstance(v, np.ndarray)]  # (not the object graph)
        assert len(served) >= 4  # the part's kernels and biases
        for weight in restored.get_weights():
            assert not any(v.shape == weight.shape and np.array_equal(v, weight) for v in served)


def test_registered_by_name_and_arguments_checked():
    assert registry.get("objective", "factorvae") is FactorVAE
    assert FactorVAE().discriminator.hidden_units == [1000] * 6  # the paper's
    with pytest.raises(ValueError, match="gamma must be a number >= 0"):
        FactorVAE(gamma=-1.0)
    with pytest.raises(ValueError, match="hidden_units must be a positive int"):
        FactorVAE(discriminator_units=[8, 0])
    with pytest.raises(ValueError, match=r"beta_1 must be in \[0, 1\). Received: beta_1=1.5"):
        FactorVAE(discriminator_beta_1=1.5)
    restored = FactorVAE.from_config(FactorVAE(gamma=3.0, discriminator_units=[4]).get_config())
    assert restored.gamma == 3.0 and restored.discriminator.hidden_units == [4]
