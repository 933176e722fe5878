"""TrainConfig: types, ranges, unknown keys, files parsed as data only."""

import pytest

from keras_vae.config import ConfigError, TrainConfig, read_config_file


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
