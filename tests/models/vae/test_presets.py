"""keras_vae.models.vae.presets: `mlp_vae` builds each part from the class the registry holds
under its name, gives the priors their options, makes a conditional VAE of `condition_dim`,
and refuses unknown precisions in one line. (Its defaults equal the CLI's:
tests/test_architecture.py.)"""

import numpy as np
import pytest

from keras_vae import mlp_vae, registry
from keras_vae.models.vae.conditional import ConditionalGaussianPrior, ConditionalVAE
from keras_vae.models.vae.model import VAE
from keras_vae.parts import objectives

SHAPE = (6, 5, 1)


@pytest.mark.parametrize(
    "parts",
    [
        {"posterior": "diagonal", "prior": "standard", "likelihood": "bernoulli", "network": "mlp"},
        {"posterior": "full", "prior": "mixture", "likelihood": "gaussian",
         "network": "gated_mlp"},
        {"posterior": "diagonal", "prior": "vamp", "likelihood": "logistic", "network": "conv"},
    ],
)  # fmt: skip
def test_each_part_is_the_registered_class_of_its_name(parts):
    model = mlp_vae(SHAPE, latent_dim=3, hidden_units=[8], prior_components=2, seed=1, **parts)
    assert type(model) is VAE
    for part in ("posterior", "prior", "likelihood"):
        assert type(getattr(model, part)) is registry.get(part, parts[part]), part
    encoder, decoder = registry.get("network", parts["network"]).pair(SHAPE, [8])
    assert type(model.encoder) is type(encoder) and type(model.decoder) is type(decoder)
    assert model.posterior.latent_dim == 3 and model.likelihood.event_shape == SHAPE
    if parts["prior"] != "standard":
        assert model.prior.num_components == 2
    model.build((None, *SHAPE))
    if parts["prior"] == "vamp":  # pseudo-inputs are images of the model's shape
        assert tuple(model.prior.pseudo_inputs.shape) == (2, *SHAPE)


def test_the_default_objective_takes_num_samples_and_beta():
    model = mlp_vae(SHAPE, latent_dim=2, hidden_units=[4], num_samples=3, beta=0.5)
    assert type(model.objective) is objectives.ELBO
    assert model.objective.get_config()["num_samples"] == 3
    assert model.objective.get_config()["beta"] == 0.5
    given = objectives.IWAE(4)
    assert mlp_vae(SHAPE, latent_dim=2, hidden_units=[4], objective=given).objective is given


def test_conv_options_reach_the_network():
    model = mlp_vae(SHAPE, latent_dim=2, hidden_units=[4], network="conv",
                    network_options={"filters": [3, 5], "kernel_size": 5})  # fmt: skip
    assert model.encoder.filters == (3, 5) and model.decoder.filters == (5, 3)
    model.build((None, *SHAPE))
    assert model.encoder.conv_layers[0].kernel.shape == (5, 5, 1, 3)


def test_condition_dim_makes_a_conditional_vae():
    plain = mlp_vae(SHAPE, latent_dim=2, hidden_units=[4], condition_dim=4, seed=0)
    assert type(plain) is ConditionalVAE and plain.condition_dim == 4
    assert type(plain.prior) is registry.get("prior", "standard")
    learned = mlp_vae(SHAPE, latent_dim=2, hidden_units=[4], condition_dim=4,
                      prior="conditional")  # fmt: skip
    assert type(learned.prior) is ConditionalGaussianPrior
    x, y = np.zeros((2, *SHAPE), np.float32), np.array([0, 3])
    assert learned.encode(x, y).event_shape == (2,)


def test_an_unknown_precision_or_part_is_one_line():
    with pytest.raises(ValueError, match=r"precision must be one of \('float32', ") as error:
        mlp_vae(SHAPE, precision="float16")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="network must be one of"):
        mlp_vae(SHAPE, network="resnet")
    with pytest.raises(ValueError, match="posterior must be one of"):
        mlp_vae(SHAPE, posterior="flow")
