"""keras_vae.serving.precision: a part exported from the same weights in a mixed policy."""

import keras
import numpy as np
import pytest

from keras_vae.serving import precision


def _dense(policy: str, seed: int = 0, units: int = 3) -> keras.layers.Dense:
    keras.utils.set_random_seed(seed)
    layer = keras.layers.Dense(units, dtype=policy)
    layer.build((None, 2))
    return layer


def test_bounds_and_tflite_refusal_follow_the_compute_dtype():
    """(The SavedModels of a trained 2-unit bfloat16 toy VAE measured 1.5e-3 on the decoder's
    mean against the Keras model, above the float32 bound; TFLite has no bfloat16 MatMul.)"""
    float32, bfloat16 = _dense("float32"), _dense("mixed_bfloat16")
    assert not precision.computes_low(float32) and precision.computes_low(bfloat16)
    assert precision.unquantized_bound(float32, 1e-4) == 1e-4
    assert precision.unquantized_bound(bfloat16, 1e-4) == 1e-2
    assert precision.unquantized_bound(_dense("mixed_float16"), 1e-4) == 1e-3
    assert precision.tflite_refusal(float32, "encoder") is None
    refusal = precision.tflite_refusal(bfloat16, "decoder")
    assert refusal.startswith("decoder.tflite: the model computes in bfloat16 (mixed_bfloat16)")
    assert "--no-tflite" in refusal and "\n" not in refusal


def test_check_same_weights_accepts_the_weights_in_another_policy_and_nothing_else():
    model = _dense("float32")
    assert precision.check_same_weights(None, model, "hint") is model
    same = _dense("mixed_bfloat16", seed=1)
    same.set_weights(model.get_weights())
    assert precision.check_same_weights(same, model, "hint") is same
    with pytest.raises(ValueError, match=r"must hold the model's weights \(build it so\)"):
        precision.check_same_weights(_dense("mixed_bfloat16", seed=1), model, "build it so")
    with pytest.raises(ValueError, match="must hold the model's weights"):
        precision.check_same_weights(_dense("float32", units=4), model, "hint")
    with pytest.raises(ValueError, match="must hold the model's weights"):
        precision.check_same_weights(keras.layers.Dense(3), model, "hint")


def test_float32_agreement_fails_a_scorer_off_by_a_tenth_of_a_nat():
    want = {"elbo": np.full(32, -101.0), "log_likelihood": np.full(32, -100.0)}
    reference = {"inputs": {"x": None}, "float32_outputs": want}

    def off_by(shift):
        return lambda **_: {name: value + shift for name, value in want.items()}

    assert precision.scorer_bound(want["log_likelihood"]) == 0.05
    stats, problems = precision.float32_agreement(off_by(0.02), reference)
    assert problems == [] and stats["elbo"]["mean_difference"] == pytest.approx(0.02)
    problems = precision.float32_agreement(off_by(-0.1), reference)[1]
    assert len(problems) == 2 and "differs from the float32 model's by -0.1" in problems[1]
    assert precision.scorer_bound(np.full(4, -3000.0)) == 1.5  # 5e-4 relative
    nan = lambda **_: {"elbo": np.full(32, np.nan), "log_likelihood": want["log_likelihood"]}  # noqa: E731
    assert "elbo" in precision.float32_agreement(nan, reference)[1][0]
