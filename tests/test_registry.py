"""keras_vae.registry: parts and model kinds registered once by name, listed in registration
order, looked up with a one-line error naming the valid choices, saved with Keras, removed
again."""

import keras
import pytest

from keras_vae import registry


@pytest.fixture
def scratch_kind():
    """Registers under a name no built-in part uses, and removes it afterwards (the registry
    is global: the CLI lists its names)."""
    added = []
    yield added
    for kind, name in added:
        registry.unregister(kind, name)


def test_register_get_names_and_unregister(scratch_kind):
    before = registry.names("prior")

    @registry.register("prior", "test_registry_prior")
    class Mine(keras.layers.Layer):
        pass

    scratch_kind.append(("prior", "test_registry_prior"))
    assert registry.get("prior", "test_registry_prior") is Mine
    assert Mine.registered_name == "test_registry_prior"
    assert registry.names("prior") == (*before, "test_registry_prior")  # in registration order
    # one decorator: also a Keras serializable ("keras_vae>Mine")
    assert keras.saving.get_registered_object("keras_vae>Mine") is Mine
    registry.unregister("prior", "test_registry_prior")
    assert registry.names("prior") == before
    registry.unregister("prior", "test_registry_prior")  # twice: nothing to remove, no error


def test_unknown_names_and_kinds_are_one_line_errors():
    with pytest.raises(ValueError) as error:
        registry.get("prior", "gamma")
    assert str(error.value) == (
        f"prior must be one of {list(registry.names('prior'))}. Received: prior='gamma'"
    )
    with pytest.raises(ValueError, match=r"kind must be one of \('posterior', 'prior'"):
        registry.register("layer", "dense")


def test_a_name_taken_by_another_class_is_refused(scratch_kind):
    @registry.register("model", "test_registry_kind")
    class First:
        pass

    scratch_kind.append(("model", "test_registry_kind"))
    assert registry.get("model", "test_registry_kind") is First
    assert not hasattr(First, "get_config")  # model kinds are plain classes, not Keras objects
    with pytest.raises(ValueError, match="A model named 'test_registry_kind' is already"):

        @registry.register("model", "test_registry_kind")
        class Second:
            pass

    # the same class again (a module reloaded, a notebook cell run twice) is fine
    registry.register("model", "test_registry_kind")(First)
    assert registry.get("model", "test_registry_kind") is First


def test_the_built_in_parts_and_kinds_are_registered():
    assert {"standard", "mixture", "vamp"} <= set(registry.names("prior"))
    assert {"diagonal", "full"} <= set(registry.names("posterior"))
    assert {"bernoulli", "gaussian", "logistic"} <= set(registry.names("likelihood"))
    assert {"elbo", "iwae"} <= set(registry.names("objective"))
    assert {"mlp", "gated_mlp", "conv"} <= set(registry.names("network"))
    assert {"vae", "hvae", "vqvae"} <= set(registry.names("model"))
