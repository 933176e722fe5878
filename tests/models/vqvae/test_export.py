"""VQ-VAE export: the SavedModels (TF Serving layout) and .tflite files (float32, int8) give
the Keras model's codes, latents, decoded images and prior log-probabilities; the prior's
sample signature draws from the prior (first position against its softmax)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vae.models.vqvae.code_prior import code_prior
from keras_vae.models.vqvae.export import export_vqvae
from keras_vae.models.vqvae.model import vqvae
from keras_vae.serving.checks import tflite_runners


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    x = (np.random.default_rng(0).uniform(size=(64, 12, 12, 1)) > 0.5).astype("float32")
    model = vqvae((12, 12, 1), 8, 4, filters=[8, 8], seed=1)
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=False)
    model.fit(x, batch_size=32, epochs=1, verbose=0)
    prior = code_prior(model, channels=8, num_layers=2, hidden_units=16, seed=0)
    prior.compile(keras.optimizers.Adam(1e-2), jit_compile=False)
    prior.fit(x, batch_size=32, epochs=1, verbose=0)
    directory = tmp_path_factory.mktemp("export")
    report = export_vqvae(
        model, directory, prior=prior, quantize=["none", "int8"],
        representative_images=x[:32], check_images=x[32:], progress=None,
    )  # fmt: skip
    return model, prior, x, directory, report


def test_layout_and_report(exported):
    _, _, _, directory, report = exported
    for part in ("encoder", "decoder", "prior"):
        assert (directory / part / "1" / "saved_model.pb").is_file()
        for name in (f"{part}.tflite", f"{part}.int8.tflite"):
            assert (directory / name).is_file()
    assert not [p for p in directory.iterdir() if p.name.startswith(".tmp")]
    on_disk = json.loads((directory / "export_report.json").read_text())
    assert on_disk["model"]["code_shape"] == [3, 3] and len(on_disk["artefacts"]) == 9
    for artefact in on_disk["artefacts"]:
        assert not [op for op in artefact.get("operators", []) if op.startswith("CUSTOM")]


def test_saved_model_and_tflite_give_the_keras_codes(exported):
    model, _, x, directory, _ = exported
    codes = model.encode(x).numpy()
    served = tf.saved_model.load(str(directory / "encoder" / "1")).signatures["serving_default"]
    out = served(x=tf.constant(x))
    np.testing.assert_array_equal(out["codes"].numpy(), codes)
    np.testing.assert_allclose(out["latents"].numpy(), model.quantized_latents(x).numpy(),
                               atol=1e-6)  # fmt: skip
    runners, _ = tflite_runners(directory / "encoder.tflite")
    lite = runners["serving_default"](x=x)
    assert lite["codes"].dtype == np.int32
    np.testing.assert_array_equal(lite["codes"], codes)
    int8 = tflite_runners(directory / "encoder.int8.tflite")[0]["serving_default"](x=x)
    assert np.mean(int8["codes"] == codes) > 0.2


def test_decoder_and_prior_log_prob_match_keras(exported):
    model, prior, x, directory, _ = exported
    codes = model.encode(x).numpy()
    runners, _ = tflite_runners(directory / "decoder.tflite")
    mean = runners["serving_default"](codes=codes)["mean"]
    np.testing.assert_allclose(mean, model.decode_codes(codes).mean().numpy(), atol=1e-5)
    served = tf.saved_model.load(str(directory / "prior" / "1")).signatures["log_prob"]
    np.testing.assert_allclose(served(codes=tf.constant(codes))["log_prob"].numpy(),
                               prior.log_prob(codes).numpy(), rtol=1e-5)  # fmt: skip


def test_tflite_prior_samples_from_the_prior(exported):
    model, prior, _, directory, _ = exported
    sample = tflite_runners(directory / "prior.tflite")[0]["serving_default"]
    drawn = sample(num_samples=np.array(600, np.int32))
    codes = drawn["codes"]
    assert codes.shape == (600, 3, 3) and codes.min() >= 0 and codes.max() < 8
    np.testing.assert_allclose(drawn["images"][:8], model.decode_codes(codes[:8]).mean().numpy(),
                               atol=1e-5)  # fmt: skip
    # the first position has no context: its draws follow softmax of its logits
    logits = prior.network(np.zeros((1, 3, 3), np.int32)).numpy()[0, 0, 0].astype(np.float64)
    p = np.exp(logits - np.logaddexp.reduce(logits))
    observed = np.bincount(codes[:, 0, 0], minlength=8) / len(codes)
    assert np.all(np.abs(observed - p) < 5 * np.sqrt(p * (1 - p) / len(codes)) + 1e-3)


def test_existing_version_and_int8_without_calibration_are_refused(exported):
    model, prior, _, directory, _ = exported
    with pytest.raises(FileExistsError, match="already exists"):
        export_vqvae(model, directory, prior=prior, progress=None)
    with pytest.raises(ValueError, match="representative_images"):
        export_vqvae(model, directory, quantize=["int8"], version=2, progress=None)
