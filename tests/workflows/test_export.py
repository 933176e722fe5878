"""keras_vae.workflows.export: each kind's export options, the same refusal for every kind."""

import pytest

from keras_vae import registry
from keras_vae.runs.config import ConfigError
from keras_vae.workflows import export

GIVEN_NOTHING = {"quantize": None, "scorer": None, "scorer_samples": None}


def test_a_vae_gets_its_defaults_where_nothing_is_given():
    options = export.kind_options(registry.get("model", "vae")(), GIVEN_NOTHING)
    assert options == {"quantize": ["none"], "scorer": True, "scorer_samples": 100}


@pytest.mark.parametrize("kind", ["vqvae", "vqvae-prior"])
def test_a_vq_run_takes_quantize_and_refuses_the_scorer_options(kind):
    chosen = registry.get("model", kind)()
    given = {**GIVEN_NOTHING, "quantize": ["int8"]}
    assert export.kind_options(chosen, given) == {"quantize": ["int8"]}
    for key, flag in (("scorer", "--scorer"), ("scorer_samples", "--importance-samples")):
        with pytest.raises(ConfigError, match=f"{flag} does not apply"):
            export.kind_options(chosen, {**GIVEN_NOTHING, key: 7})
