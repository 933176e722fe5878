"""keras_vae.models.vae.checks: the VAE's self-checks pass an artefact that computes what the
model computes and refuse one that does not, on runners that stand in for an export."""

import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae.models.vae import checks, signatures


@pytest.fixture(scope="module")
def model():
    vae = keras_vae.mlp_vae((3, 2, 1), latent_dim=2, hidden_units=4, seed=0)
    vae.build((None, 3, 2, 1))
    return vae


X = (np.arange(5 * 6).reshape(5, 3, 2, 1) % 4 == 0).astype(np.float32)


def _runners(model, part, shift=0.0):
    functions = signatures.SIGNATURE_FUNCTIONS[part]
    functions = functions(model, 10) if part == "scorer" else functions(model)

    def runner(fn):
        def run(**inputs):
            outputs = fn(**{name: tf.constant(value) for name, value in inputs.items()})
            return {name: value.numpy() + shift for name, value in outputs.items()}

        return run

    return {key: runner(fn) for key, fn in functions.items()}


@pytest.mark.parametrize("part", ["encoder", "decoder", "scorer"])
def test_the_model_own_functions_pass_and_shifted_ones_fail(model, part):
    reference = checks.build_reference(model, X, scorer=True)
    described = signatures.expected_signatures(model)[part]
    keys = tuple(described)
    errors = checks.check_artefact(model, part, part, _runners(model, part), described,
                                   reference, 1e-4, None, keys)  # fmt: skip
    assert max(errors.values()) < 1e-4
    with pytest.raises(checks.ExportCheckError, match=f"{part} failed its self-check"):
        checks.check_artefact(model, part, part, _runners(model, part, shift=0.01), described,
                              reference, 1e-4, None, keys)  # fmt: skip


def test_other_signatures_than_expected_are_refused(model):
    reference = checks.build_reference(model, X, scorer=False)
    described = signatures.expected_signatures(model)["encoder"]
    wrong = {**described, "serving_default": {"inputs": {}, "outputs": {}}}
    with pytest.raises(checks.ExportCheckError, match="differ from the expected"):
        checks.check_artefact(model, "encoder", "encoder", _runners(model, "encoder"), wrong,
                              reference, 1e-4, None, tuple(described))  # fmt: skip


def test_scorer_statistics_flag_a_biased_scorer(model):
    fn = signatures.scorer_signatures(model, 50)["serving_default"]
    honest = lambda **inputs: {k: v.numpy() for k, v in fn(x=tf.constant(inputs["x"])).items()}  # noqa: E501, E731
    biased = lambda **inputs: {k: v - 5.0 for k, v in honest(**inputs).items()}  # noqa: E731
    tf.random.set_seed(0)
    _, problems = checks.scorer_statistics(model, honest, X, 50)
    assert problems == []
    _, problems = checks.scorer_statistics(model, biased, X, 50)
    assert any("differs from the model's" in p for p in problems)
