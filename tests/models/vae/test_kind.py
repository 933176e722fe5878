"""keras_vae.models.vae.kind (VAEKind): what the workflows ask of a VAE run, against the
model it builds: the first line, the metric early stopping watches, the VampPrior's start from
training images (with the seed, as NumPy draws them), the encoded arrays in batches, the
conditional draws, and the data it refuses."""

import numpy as np
import pytest

from keras_vae import registry
from keras_vae.data import pipeline as data
from keras_vae.models.vae.kind import VAEKind
from keras_vae.runs.config import TrainConfig

SHAPE = (6, 5, 1)
X = (np.random.default_rng(8).uniform(size=(40, *SHAPE)) > 0.5).astype("float32")


def _config(**changes):
    values = {"latent_dim": 2, "hidden_units": [8], "seed": 4, "likelihood": "bernoulli"}
    return TrainConfig(**{**values, **changes})


def test_registered_as_vae_and_described_in_one_line():
    kind = registry.get("model", "vae")()
    assert type(kind) is VAEKind
    config = _config(prior="mixture", objective="iwae", samples=3).resolved()
    line = kind.describe(config, X)
    assert line == ("a VAE (mlp 8, latent 2, diagonal posterior, mixture prior, bernoulli "
                    "likelihood, iwae)")  # fmt: skip
    conv = _config(network="conv", conv_filters=[4, 8], conv_kernel_size=5).resolved()
    assert kind.describe(conv, X).startswith("a VAE (conv 4-8 (5x5) + 8, latent 2, ")
    assert kind.monitor(config) == ("val_iwae", "max")
    assert kind.monitor(_config()) == ("val_elbo", "max")


def test_a_vamp_prior_starts_from_training_images_chosen_with_the_seed():
    kind = VAEKind()
    for components in (5, 60):  # fewer and more than the 40 images (then with repeats)
        config = _config(prior="vamp", prior_components=components)
        model = kind.build(config.resolved(), SHAPE)
        model.build((None, *SHAPE))
        kind.initialize(model, X, config)
        rows = np.random.default_rng(4).choice(40, size=components, replace=components > 40)
        np.testing.assert_array_equal(np.asarray(model.prior.pseudo_inputs), X[rows])


def test_encode_gives_the_posterior_in_batches_of_1000():
    kind = VAEKind()
    model = kind.build(_config(posterior="full").resolved(), SHAPE)
    x = np.repeat(X, 26, axis=0)[:1001]  # two batches
    found = kind.encode(model, x)
    assert set(found) == {"mean", "loc", "scale_tril"}
    assert all(len(v) == 1001 for v in found.values())
    np.testing.assert_allclose(found["mean"], model.encode(x).mean(), atol=1e-6)
    np.testing.assert_allclose(found["loc"], found["mean"], atol=0)


def test_a_conditional_vae_samples_the_given_labels_in_turn():
    kind = VAEKind()
    config = _config(conditional=True)
    assert kind.uses_labels(config) and not kind.uses_labels(_config())
    model = kind.build(config.resolved(), SHAPE, condition_dim=3)
    drawn = kind.sample(model, 5, seed=2, labels=[2, 0])
    expected = model.sample(5, seed=2, y=np.array([2, 0, 2, 0, 2]))
    np.testing.assert_allclose(drawn, expected, atol=1e-6)
    line = kind.describe(config.resolved(), data.ArrayStream(X, "x", labels=np.arange(40) % 3))
    assert line.startswith("a conditional VAE (y of size 3; mlp 8, latent 2")


def test_too_many_conv_levels_for_the_images_are_refused():
    config = _config(network="conv", conv_filters=[4, 4, 4, 4]).resolved()
    with pytest.raises(ValueError, match="6x5 images allow at most 3 stride-2 conv levels"):
        VAEKind().check_data(config, X, X)


@pytest.mark.parametrize(
    ("changes", "condition_dim"),
    [({"prior": "vamp", "prior_components": 3, "kl_warmup_epochs": 2}, None),
     ({"conditional": True, "prior": "conditional"}, 3)],
)  # fmt: skip
def test_with_precision_rebuilds_the_run_in_that_policy_with_its_weights(changes, condition_dim):
    kind = VAEKind()
    config = _config(**changes).resolved()
    model = kind.build(config, SHAPE, epoch_steps=5, condition_dim=condition_dim)
    model.build((None, *SHAPE))
    assert kind.with_precision(model, config, "float32") is model  # its own: as it is
    low = kind.with_precision(model, config, "mixed_bfloat16")
    assert low.dtype_policy.name == "mixed_bfloat16" and low.prior.compute_dtype == "float32"
    assert all(layer.compute_dtype == "bfloat16" for layer in low.decoder.dense_layers)
    assert low.objective.get_config() == model.objective.get_config()  # the KL warm-up's steps
    assert len(low.weights) == len(model.weights)
    for copied, weight in zip(low.weights, model.weights, strict=True):
        assert copied.dtype == "float32"
        np.testing.assert_array_equal(copied.numpy(), weight.numpy())
    args = (X[:4],) if condition_dim is None else (X[:4], np.array([0, 1, 2, 0]))
    exact, rounded = model.encode_parameters(*args), low.encode_parameters(*args)
    for name, value in exact.items():  # the same function, its matmuls in bfloat16
        np.testing.assert_allclose(rounded[name], value, rtol=0.05, atol=0.02)


def test_with_precision_refuses_a_model_that_its_config_does_not_build():
    kind = VAEKind()
    model = kind.build(_config().resolved(), SHAPE)
    model.build((None, *SHAPE))
    other = _config(hidden_units=[9]).resolved()  # config.json edited after training
    with pytest.raises(ValueError, match=r"does not match its config.json \(other weights\)"):
        kind.with_precision(model, other, "mixed_bfloat16")
