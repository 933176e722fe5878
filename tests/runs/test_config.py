"""TrainConfig: types, ranges, unknown keys, files parsed as data only, the model's parts."""

import json

import pytest

from keras_vae import registry
from keras_vae.runs.config import ConfigError, TrainConfig, read_config_file


def test_defaults_are_the_paper_mnist_model():
    config = TrainConfig()
    assert (config.latent_dim, config.hidden_units, config.activation) == (20, [500], "tanh")
    assert config.batch_size == 100


def test_json_round_trip(tmp_path):
    config = TrainConfig(latent_dim=5, hidden_units=[200], likelihood="gaussian", beta=0.5)
    path = tmp_path / "c.json"
    path.write_text(config.to_json())
    assert TrainConfig.from_file(path) == config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"latent_dim": "20"}, "latent_dim must be int. Received: latent_dim='20'"),
        ({"latent_dim": True}, "latent_dim must be int"),
        ({"batch_size": 0}, "batch_size must be a positive int. Received: batch_size=0"),
        ({"hidden_units": [500, "a"]}, "hidden_units must be a list of int"),
        ({"hidden_units": []}, "hidden_units must be a non-empty list"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"likelihood": "poisson"}, "likelihood must be one of"),
        ({"strategy": "tpu"}, "strategy must be one of"),
        ({"latnt_dim": 3}, "unknown keys ['latnt_dim']. Valid keys: dataset,"),
        ({"global_clipnorm": 0.0}, "global_clipnorm must be > 0. Received: global_clipnorm=0.0"),
        ({"clipnorm": 1.0, "global_clipnorm": 2.0}, "clipnorm and global_clipnorm cannot both"),
        ({"model": "hvae", "log_scale_bound": -1.0}, "log_scale_bound must be >= 0"),
        ({"log_scale_bound": 2.0}, "log_scale_bound=2.0 applies only to model='hvae'"),
    ],
)
def test_bad_values_are_refused_with_the_key_and_the_value(values, message):
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict(values)
    assert message in str(error.value)


def test_yaml_is_parsed_as_data_only(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("latent_dim: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="Cannot parse config file"):
        read_config_file(path)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{latent_dim: 3")
    with pytest.raises(ConfigError, match="Cannot parse config file"):
        read_config_file(bad)
    toml = tmp_path / "c.toml"
    toml.write_text("x = 1")
    with pytest.raises(ConfigError, match="must end in .json, .yaml or .yml"):
        read_config_file(toml)


# --- the model's parts ---------------------------------------------------------------------

ELBO_PARTS = dict(
    likelihood="logistic", likelihood_components=3, posterior="full", prior="vamp",
    prior_components=8, objective="elbo", beta=0.5, kl_warmup_epochs=2, kl_cycle_epochs=5,
    free_bits=0.25,
)  # fmt: skip
IWAE_PARTS = dict(prior="mixture", objective="iwae", samples=4, gradient_estimator="dreg")


@pytest.mark.parametrize("parts", [ELBO_PARTS, IWAE_PARTS], ids=["elbo", "iwae"])
def test_every_part_key_round_trips_through_json(parts, tmp_path):
    config = TrainConfig(**parts)
    path = tmp_path / "c.json"
    path.write_text(config.to_json())
    loaded = TrainConfig.from_file(path)
    assert loaded == config
    assert {k: getattr(loaded, k) for k in parts} == parts


def test_config_json_of_an_older_version_loads_with_the_new_keys_at_their_defaults(tmp_path):
    old = TrainConfig(latent_dim=5).to_dict()
    new_keys = {
        "likelihood_components", "posterior", "prior", "prior_components", "objective",
        "gradient_estimator", "kl_warmup_epochs", "kl_cycle_epochs", "free_bits",
    }  # fmt: skip
    for key in new_keys:
        del old[key]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    loaded = TrainConfig.from_file(path)
    assert loaded == TrainConfig(latent_dim=5)
    assert (loaded.objective, loaded.prior, loaded.posterior) == ("elbo", "standard", "diagonal")


@pytest.mark.parametrize("kind", ["likelihood", "posterior", "prior", "objective"])
def test_unknown_part_names_are_refused_with_the_registered_ones(kind):
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict({kind: "nonesuch"})
    message = str(error.value)
    assert f"{kind}={'nonesuch'!r}" in message and "\n" not in message
    for name in registry.names(kind):
        assert repr(name) in message
    assert len(registry.names(kind)) >= 2


def test_gradient_estimator_choices():
    with pytest.raises(ConfigError, match=r"gradient_estimator must be one of \['standard', "):
        TrainConfig(objective="iwae", gradient_estimator="vimco")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"gradient_estimator": "dreg"},
            "gradient_estimator='dreg' applies only to objective='iwae', not to "
            "objective='elbo'; remove it or choose --objective iwae.",
        ),
        (
            {"objective": "iwae", "kl_warmup_epochs": 2, "free_bits": 0.25},
            "kl_warmup_epochs=2, free_bits=0.25 apply only to objective='elbo'",
        ),
        ({"objective": "iwae", "beta": 0.5}, "beta=0.5 applies only to objective='elbo'"),
        ({"kl_cycle_epochs": 4}, "kl_cycle_epochs needs 0 < kl_warmup_epochs < kl_cycle_epochs"),
        (
            {"kl_warmup_epochs": 4, "kl_cycle_epochs": 4},
            "Received: kl_cycle_epochs=4, kl_warmup_epochs=4",
        ),
        ({"kl_warmup_epochs": -1}, "kl_warmup_epochs must be an int >= 0"),
        ({"free_bits": -0.5}, "free_bits must be >= 0. Received: free_bits=-0.5"),
        ({"prior_components": 0}, "prior_components must be a positive int"),
        (
            {"prior_components": 5},
            "prior_components applies to a prior with components (mixture, vamp); "
            "prior='standard' has none.",
        ),
        (
            {"likelihood": "bernoulli", "likelihood_components": 3},
            "likelihood_components applies to a likelihood with components (logistic)",
        ),
        # the disentangling objectives' options: each refused for the other objectives
        (
            {"tc_weight": 3.0},
            "tc_weight=3.0 applies only to objective='betatc' or 'factorvae', not to "
            "objective='elbo'; remove it or choose --objective betatc.",
        ),
        (
            {"objective": "betatc", "capacity": 10.0, "capacity_epochs": 2},
            "capacity=10.0, capacity_epochs=2 apply only to objective='annealed_capacity', "
            "not to objective='betatc'",
        ),
        (
            {"objective": "factorvae", "tc_estimator": "mws"},
            "tc_estimator='mws' applies only to objective='betatc'",
        ),
        (
            {"objective": "annealed_capacity", "discriminator_units": [8]},
            "discriminator_units=[8] applies only to objective='factorvae'",
        ),
        ({"objective": "iwae", "capacity_weight": 5.0}, "capacity_weight=5.0 applies only"),
        ({"objective": "betatc", "tc_estimator": "mss"}, "tc_estimator must be one of ['mws', "),
        ({"objective": "factorvae", "tc_weight": -1.0}, "tc_weight must be >= 0. Received"),
        (
            {"objective": "annealed_capacity", "capacity_epochs": -1},
            "capacity_epochs must be an int >= 0",
        ),
        (
            {"objective": "factorvae", "discriminator_units": [8, 0]},
            "discriminator_units must be a non-empty list of positive ints",
        ),
        (
            {"objective": "factorvae", "discriminator_learning_rate": 0.0},
            "discriminator_learning_rate must be > 0",
        ),
        (
            {"model": "vqvae", "tc_weight": 2.0},
            "tc_weight=2.0 applies only to model='vae'",
        ),
    ],
)
def test_options_that_do_not_fit_the_parts_are_one_line_errors(values, message):
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict(values)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_component_counts_resolve_to_each_parts_own_default():
    assert TrainConfig(prior="mixture").resolved().prior_components == 10
    assert TrainConfig(prior="vamp").resolved().prior_components == 500
    assert TrainConfig(prior="vamp", prior_components=8).resolved().prior_components == 8
    assert TrainConfig().resolved() == TrainConfig()  # no part with components
    resolved = TrainConfig(likelihood="logistic").resolved()
    assert resolved.likelihood_components == 5
    # the likelihood is only known once the data are: components given early are kept
    assert TrainConfig(likelihood_components=3).likelihood_components == 3
