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


@pytest.mark.parametrize("kind", ["vqvae", "vqvae-prior"])
def test_precision_is_refused_in_one_line_by_a_kind_without_it(kind):
    with pytest.raises(ConfigError) as error:
        export.kind_options(registry.get("model", kind)(), {"precision": "mixed_bfloat16"})
    assert str(error.value).startswith(f"--precision does not apply to a {kind} run; its ")
    assert "\n" not in str(error.value)


def test_the_cli_takes_precision_and_a_vae_passes_it_on():
    import argparse

    parser = argparse.ArgumentParser()
    export.add_cli_arguments(parser)
    args = parser.parse_args(["run", "--output", "out", "--precision", "mixed_bfloat16"])
    assert args.precision == "mixed_bfloat16"
    assert parser.parse_args(["run", "--output", "out"]).precision is None
    vae = registry.get("model", "vae")()
    given = {**GIVEN_NOTHING, "precision": args.precision}
    assert export.kind_options(vae, given)["precision"] == "mixed_bfloat16"
    assert export.kind_options(vae, {"quantize": "int8"}) == {"quantize": "int8"}  # (Python)
