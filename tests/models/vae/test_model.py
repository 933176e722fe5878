"""The VAE model: inference API, train/test steps, gradients and the .keras round trip."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_saving_test

import keras_vae
from keras_vae import VAE, mlp_vae
from keras_vae.parts import objectives

RNG = np.random.default_rng(2)
SHAPE = (6, 5, 1)


def _binary_images(n=32, shape=SHAPE):
    return (RNG.uniform(size=(n, *shape)) > 0.5).astype("float32")


def _tiny(likelihood="bernoulli", **kwargs):
    model = mlp_vae(SHAPE, latent_dim=3, hidden_units=[16], likelihood=likelihood, **kwargs)
    model.build((None, *SHAPE))
    return model


def test_encode_decode_sample_reconstruct_shapes():
    model = _tiny(seed=3)
    x = _binary_images(4)
    q = model.encode(x)
    assert q.batch_shape == (4,) and q.event_shape == (3,)
    p = model.decode(q.sample(seed=(1, 2)))
    assert p.batch_shape == (4,) and p.event_shape == SHAPE
    assert model.sample(7).shape == (7, *SHAPE)
    images, z = model.sample(2, seed=5, return_latents=True)
    assert z.shape == (2, 3)
    np.testing.assert_array_equal(model.sample(2, seed=5).numpy(), images.numpy())
    assert model.reconstruct(x).shape == (4, *SHAPE)
    assert model.reconstruct(x, sample_latent=True, seed=1).shape == (4, *SHAPE)
    np.testing.assert_allclose(model(x).numpy(), model.reconstruct(x).numpy())


def test_elbo_terms_use_l_samples_and_analytic_kl():
    model = _tiny(seed=4, num_samples=5)
    x = _binary_images(8)
    terms = model.elbo_terms(x)
    assert terms.elbo.shape == (8,)
    q = model.encode(x)
    loc, scale = q.mean().numpy(), q.stddev().numpy()
    closed_form = 0.5 * np.sum(loc**2 + scale**2 - 1 - np.log(scale**2), axis=-1)
    np.testing.assert_allclose(terms.kl.numpy(), closed_form, rtol=1e-5)
    np.testing.assert_allclose(terms.elbo.numpy(), (terms.reconstruction - terms.kl).numpy())


def test_elbo_terms_with_an_int_seed_are_reproducible():
    model = _tiny(seed=4)
    x = _binary_images(8)
    first, again, other = (model.elbo_terms(x, seed=s).elbo.numpy() for s in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_gradients_reach_the_encoder_through_the_reparameterised_sample():
    model = _tiny(seed=5)
    x = _binary_images(8)
    with tf.GradientTape() as tape:
        reconstruction = tf.reduce_mean(model.elbo_terms(x).reconstruction)
    encoder_weights = model.encoder.trainable_variables + model.posterior.trainable_variables
    grads = tape.gradient(reconstruction, encoder_weights)
    # The reconstruction term depends on the encoder only through z = mu + sigma * eps.
    assert all(g is not None for g in grads)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_same_seed_same_noise_different_seed_different_noise():
    a, b, c = _tiny(seed=7), _tiny(seed=7), _tiny(seed=8)
    b.set_weights(a.get_weights())
    c.set_weights(a.get_weights())
    x = _binary_images(8)
    ea, eb, ec = (m.elbo_terms(x).reconstruction.numpy() for m in (a, b, c))
    np.testing.assert_array_equal(ea, eb)
    assert not np.allclose(ea, ec)


def test_fit_reports_all_metrics_in_nats_and_beta_only_changes_the_loss():
    x = _binary_images(64)
    model = _tiny(seed=1, beta=0.5)
    model.compile(keras.optimizers.Adam(1e-2))
    assert model.jit_compile is True  # keras_vae's XLA policy on one device
    history = model.fit(x, batch_size=16, epochs=3, verbose=0, validation_data=(x,))
    assert {"loss", "elbo", "reconstruction", "kl", "val_elbo"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        result["loss"], -(result["reconstruction"] - 0.5 * result["kl"]), rtol=1e-5
    )
    np.testing.assert_allclose(result["elbo"], result["reconstruction"] - result["kl"], rtol=1e-5)


def test_xla_can_be_turned_off():
    # (XLA and the plain kernels pick different stateless RNG algorithms, so the two runs draw
    # different noise; equality of the steps is not expected.)
    x = _binary_images(64)
    model = _tiny(seed=1)
    model.compile(keras.optimizers.SGD(0.01), jit_compile=False)
    assert model.jit_compile is False
    history = model.fit(x, batch_size=32, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_keras_file_round_trip_reproduces_outputs_exactly(tmp_path, likelihood):
    x = _binary_images(16)
    model = _tiny(likelihood, seed=11, num_samples=2, beta=0.7)
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "vae.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(restored, VAE)
    as_json = lambda config: json.loads(json.dumps(config))  # noqa: E731 - tuples vs lists
    assert as_json(restored.get_config()) == as_json(model.get_config())
    np.testing.assert_array_equal(restored(x).numpy(), model(x).numpy())
    np.testing.assert_array_equal(
        restored.encode(x).stddev().numpy(), model.encode(x).stddev().numpy()
    )
    np.testing.assert_array_equal(restored.sample(3, seed=2).numpy(), model.sample(3, seed=2))
    # the optimizer comes back too, so training can continue
    assert restored.optimizer is not None
    restored.fit(x, batch_size=8, epochs=1, verbose=0)


def test_wrong_image_shape_is_refused_with_the_expected_shape():
    model = mlp_vae(SHAPE, latent_dim=2, hidden_units=8)
    with pytest.raises(ValueError, match=r"expects examples of shape \(6, 5, 1\)"):
        model.build((None, 28, 28, 1))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"latent_dim": 0}, "latent_dim must be a positive int. Received: latent_dim=0"),
        ({"hidden_units": []}, "hidden_units must be"),
        ({"likelihood": "poisson"}, "likelihood must be one of"),
        ({"num_samples": 0}, "num_samples must be a positive int"),
        ({"beta": -1.0}, "beta must be a number >= 0"),
    ],
)
def test_bad_model_arguments_are_refused(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        mlp_vae(SHAPE, **{"latent_dim": 2, "hidden_units": 8, **kwargs})


def test_compile_refuses_a_loss():
    with pytest.raises(ValueError, match="takes no `loss`"):
        _tiny().compile(optimizer="adam", loss="mse")


def test_custom_parts_compose_into_a_vae():
    model = VAE(
        encoder=keras_vae.MLP([8, 8], activation="relu", flatten=True),
        posterior=keras_vae.DiagonalGaussianPosterior(2),
        decoder=keras_vae.MLP([8]),
        likelihood=keras_vae.GaussianLikelihood(SHAPE, mean_activation="linear"),
        analytic_kl=False,
        num_samples=3,
    )
    terms = model.elbo_terms(_binary_images(4))
    assert terms.kl.shape == (4,)
    assert np.isfinite(terms.elbo.numpy()).all()


def _vae_outputs(noise, step=3):
    """Everything a VAE computes, for `run_saving_test`: the reconstruction, the objective's
    loss and terms on fixed noise at a training step, and seeded samples from the prior."""

    def outputs(model, x):
        loss, terms = model.objective(model, x, tf.constant(noise), step)
        return {"call": model(x), "loss": loss, "terms": terms, "sample": model.sample(3, seed=2)}

    return outputs


@pytest.mark.parametrize(
    ("parts", "objective"),
    [
        ({}, objectives.ELBO(2, beta=0.5, warmup_steps=4, cycle_steps=8, free_bits=0.1)),
        ({}, objectives.ELBO(2, analytic_kl=False)),
        ({"posterior": "full", "prior": "mixture"}, objectives.IWAE(2)),
        ({"prior": "vamp", "likelihood": "logistic"}, objectives.IWAE(2, gradient="dreg")),
        ({"posterior": "full", "likelihood": "gaussian"}, objectives.ELBO(2, free_bits=0.2)),
    ],
)
def test_vae_with_each_objective_and_part_survives_keras_file_round_trip(parts, objective):
    model = mlp_vae(
        SHAPE, latent_dim=3, hidden_units=[8], seed=4, prior_components=3, objective=objective,
        **parts,
    )  # fmt: skip
    model.build((None, *SHAPE))
    x = (RNG.integers(0, 256, size=(4, *SHAPE)) / 255).astype("float32")
    noise = RNG.normal(size=(2, 4, model.posterior.noise_size)).astype("float32")
    restored = run_saving_test(model, x, _vae_outputs(noise))
    assert restored.objective.get_config() == objective.get_config()


class _BatchLogs(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(v) for k, v in logs.items()})


def test_fit_passes_the_training_step_to_the_kl_warmup():
    # beta_t = 0.5 min(1, t / 10) at steps t = 0..3; Keras logs running means over the epoch,
    # so step t's own values are (t + 1) m_t - t m_(t-1) (equal batches)
    x = _binary_images(64)
    model = _tiny(seed=1, objective=objectives.ELBO(beta=0.5, warmup_steps=10))
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=False, steps_per_execution=1)
    logs = _BatchLogs()  # per-step logs: one step per execution
    model.fit(x, batch_size=16, epochs=1, verbose=0, callbacks=[logs])
    assert int(model.optimizer.iterations) == 4
    running = {k: np.array([log[k] for log in logs.logs]) for k in ("loss", "reconstruction", "kl")}
    steps = np.arange(4)
    own = {k: (steps + 1) * v - steps * np.concatenate([[0.0], v[:-1]]) for k, v in running.items()}
    expected = -(own["reconstruction"] - 0.5 * steps / 10 * own["kl"])
    np.testing.assert_allclose(own["loss"], expected, rtol=1e-4)
    # evaluate after 4 steps: the KL weighted by 0.4 * beta
    result = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    expected = -(result["reconstruction"] - 0.4 * 0.5 * result["kl"])
    np.testing.assert_allclose(result["loss"], expected, rtol=1e-5)


def test_vae_refuses_objective_shortcuts_next_to_an_objective():
    with pytest.raises(ValueError, match=r"Give \['num_samples'\] to the objective") as error:
        VAE(
            encoder=keras_vae.MLP([8], flatten=True),
            posterior=keras_vae.DiagonalGaussianPosterior(2),
            decoder=keras_vae.MLP([8]),
            likelihood=keras_vae.BernoulliLikelihood(SHAPE),
            objective=objectives.IWAE(3),
            num_samples=3,
        )
    assert "\n" not in str(error.value)


def test_compile_defaults_to_the_fast_steps_per_execution_on_one_device():
    from keras_vae.engine import trainer

    model = _tiny(seed=1)
    model.compile(keras.optimizers.Adam(1e-3))
    assert model.steps_per_execution == trainer.DEFAULT_STEPS_PER_EXECUTION == 10
    assert model._fuses_steps()  # XLA on one device: the fused k-step loop, as keras-vae train
    model.compile(keras.optimizers.Adam(1e-3), steps_per_execution=1)
    assert model.steps_per_execution == 1 and not model._fuses_steps()
    x = _binary_images(64)
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(x, batch_size=16, epochs=2, verbose=0)  # 4 steps per epoch, fewer than k
    assert int(model.optimizer.iterations) == 8
