"""Export of a conditional VAE: the class label y is a named int32 input of every signature.

One tiny conditional VAE (784-32-4, a learned p(z|y)) is trained for a few epochs on real
MNIST test digits with their labels (../shared), its prior's class means are then moved apart
(so that a sample's class shows in z), and it is exported once with float32 and int8 TFLite
files. The tests read the export back as TF Serving, TFLite and the REST client would, and
compare with the Keras model and with NumPy/SciPy densities.
"""

import gzip
import importlib.util
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from helpers import REPO
from scipy import special, stats

import keras_vae
from keras_vae.models.vae import export
from keras_vae.serving import checks as export_checks

MNIST = REPO.parent / "shared" / "data" / "mnist"
CLASSES, LATENT = 10, 4

pytestmark = pytest.mark.skipif(not MNIST.is_dir(), reason="no offline MNIST in ../shared")


def _digits(n=1300):
    """Binarized MNIST test digits `[n, 28, 28, 1]` and their labels `[n]`, shuffled."""
    with gzip.open(MNIST / "t10k-images-idx3-ubyte.gz") as handle:
        pixels = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8).astype(np.int32)
    order = np.random.default_rng(0).permutation(len(labels))[:n]
    return (pixels[order] > 127).astype(np.float32), labels[order]


class ConditionalExport:
    def __init__(self, root: Path):
        x, y = _digits()
        keras.utils.set_random_seed(0)
        model = keras_vae.mlp_vae((28, 28, 1), latent_dim=LATENT, hidden_units=32,
                                  condition_dim=CLASSES, prior="conditional", seed=0)  # fmt: skip
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        model.fit(x[:1000], y[:1000], epochs=3, batch_size=100, verbose=0)
        # p(z|y) with class means 2 (c - 4.5) / 4.5 apart in every dimension
        kernel = np.repeat(np.linspace(-2, 2, CLASSES)[:, None], LATENT, axis=1)
        model.prior.loc_layer.set_weights([kernel.astype(np.float32), np.zeros(LATENT, "f4")])
        self.model, self.x, self.y = model, x[1000:1064], y[1000:1064]
        self.dir = root / "export"
        self.report = export.export_vae(
            model, self.dir, quantize=["none", "int8"], representative_images=x[:300],
            representative_labels=y[:300], check_images=self.x, check_labels=self.y,
            progress=None,
        )  # fmt: skip

    def saved_model(self, part):
        return tf.saved_model.load(str(self.dir / part / "1"))

    def tflite(self, part, variant="none"):
        path = self.dir / export.tflite_filename(part, variant)
        return Interpreter(model_path=str(path), num_threads=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return ConditionalExport(tmp_path_factory.mktemp("conditional"))


def _run(signature, **inputs):
    return {k: np.asarray(v) for k, v in signature(**{k: tf.constant(v) for k, v in
                                                      inputs.items()}).items()}  # fmt: skip


def test_every_signature_takes_the_labels_as_int32_y(exported):
    label = {"dtype": "int32", "shape": [-1]}
    by_path = {a["path"]: a["signatures"] for a in exported.report["artefacts"]}
    assert exported.report["model"]["condition_dim"] == CLASSES
    for path in ("encoder/1", "encoder.tflite", "encoder.int8.tflite", "decoder/1",
                 "decoder.tflite", "decoder.int8.tflite", "scorer/1", "scorer.tflite"):  # fmt: skip
        for key, signature in by_path[path].items():
            assert signature["inputs"]["y"] == label, (path, key)
            assert ("num_samples" in signature["inputs"]) is False
    assert set(by_path["decoder/1"]["sample"]["inputs"]) == {"y"}
    runner = exported.tflite("encoder").get_signature_runner("serving_default")
    assert runner.get_input_details()["y"]["dtype"] == np.int32


def test_encoder_and_decoder_artefacts_match_keras_and_use_the_label(exported):
    model, x, y = exported.model, exported.x, exported.y
    want = {k: v.numpy() for k, v in model.encode_parameters(x, y).items()}
    encoder = exported.saved_model("encoder").signatures["serving_default"]
    lite = exported.tflite("encoder").get_signature_runner("serving_default")
    for got in (_run(encoder, x=x, y=y), lite(x=x, y=y)):
        for name in ("loc", "scale"):
            np.testing.assert_allclose(got[name], want[name], atol=1e-4)
    other = (y + 1) % CLASSES  # another label moves q(z|x, y)
    assert np.abs(lite(x=x, y=other)["loc"] - want["loc"]).max() > 1e-2

    z = want["loc"]
    mean = model.decode(z, y).mean().numpy()
    decoder = exported.saved_model("decoder").signatures["serving_default"]
    lite = exported.tflite("decoder").get_signature_runner("serving_default")
    for got in (_run(decoder, z=z, y=y), lite(z=z, y=y)):
        np.testing.assert_allclose(got["mean"], mean, atol=1e-4)
    assert np.abs(lite(z=z, y=other)["mean"] - mean).max() > 1e-2
    # int8: the labels' one-hot rows keep their values (with tf.one_hot the int8 converter
    # turned them into 4.5 and -1.1: a mean error of 0.2 where this model measures 0.005)
    int8 = exported.tflite("decoder", "int8").get_signature_runner("serving_default")
    assert np.abs(int8(z=z, y=y)["mean"] - mean).max() < 0.05


def test_tf_serving_graph_mode_loader_runs_the_labelled_encoder(exported):
    outputs = export_checks.run_in_session(
        exported.dir / "encoder" / "1", "serving_default", {"x": exported.x, "y": exported.y}
    )
    want = exported.model.encode(exported.x, exported.y).mean().numpy()
    np.testing.assert_allclose(outputs["loc"], want, atol=1e-4)


@pytest.mark.parametrize("runtime", ["saved_model", "tflite"])
def test_sample_draws_z_from_p_z_given_each_label(exported, runtime):
    n, model = 400, exported.model
    labels = np.repeat(np.array([0, 9], np.int32), n)
    if runtime == "saved_model":
        sampled = _run(exported.saved_model("decoder").signatures["sample"], y=labels)
    else:
        sampled = exported.tflite("decoder").get_signature_runner("sample")(y=labels)
    z = sampled["z"]
    assert z.shape == (2 * n, LATENT)
    prior = model.prior_distribution(np.array([0, 9]))
    loc, scale = prior.mean().numpy(), prior.stddev().numpy()
    for i, rows in enumerate((slice(0, n), slice(n, None))):  # N(loc_c, scale_c^2) per class
        stderr = scale[i] / math.sqrt(n)
        assert np.all(np.abs(z[rows].mean(0) - loc[i]) < 5 * stderr), (z[rows].mean(0), loc[i])
        assert np.all(np.abs(z[rows].std(0) / scale[i] - 1) < 0.2)
    np.testing.assert_allclose(sampled["mean"], model.decode(z, labels).mean().numpy(), atol=1e-4)


def test_scorer_with_noise_equals_numpy_log_p_x_given_y(exported):
    model, x, y = exported.model, exported.x[:8], exported.y[:8]
    eps = np.random.default_rng(3).standard_normal((5, 8, LATENT)).astype(np.float32)
    got = _run(exported.saved_model("scorer").signatures["score_with_noise"], x=x, y=y, eps=eps)
    lite = exported.tflite("scorer").get_signature_runner("score_with_noise")(x=x, y=y, eps=eps)

    q = model.encode(x, y)  # the densities' parameters from Keras, the densities from SciPy
    mu, sigma = q.mean().numpy(), q.stddev().numpy()
    prior = model.prior_distribution(y)
    prior_loc, prior_scale = prior.mean().numpy(), prior.stddev().numpy()
    z = mu + sigma * eps
    flat_x = x.reshape(8, -1)
    log_w = []
    for k in range(5):
        logits = model.decode(z[k], y).distribution.logits_parameter().numpy().reshape(8, -1)
        log_px = (flat_x * logits - np.logaddexp(0, logits)).sum(1)
        log_pz = stats.norm.logpdf(z[k], prior_loc, prior_scale).sum(1)
        log_qz = stats.norm.logpdf(z[k], mu, sigma).sum(1)
        log_w.append(log_px + log_pz - log_qz)
        if k == 0:
            kl = (np.log(prior_scale / sigma) + (sigma**2 + (mu - prior_loc) ** 2)
                  / (2 * prior_scale**2) - 0.5).sum(1)  # fmt: skip
            elbo = log_px - kl
    log_likelihood = special.logsumexp(np.stack(log_w), axis=0) - math.log(5)
    for result in (got, lite):
        np.testing.assert_allclose(result["elbo"], elbo, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(result["log_likelihood"], log_likelihood, rtol=1e-4, atol=1e-3)


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "export" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rest_requests_carry_the_label_and_give_the_keras_outputs(exported, tmp_path):
    make_examples = _load("make_examples")
    written = make_examples.write_examples(exported.dir, exported.x, tmp_path, label=7)
    assert {p.name.split(".")[0] for p in written} == {
        "encode", "encode_sample", "decode", "sample", "score"}  # fmt: skip
    import json

    request = json.loads((tmp_path / "encode.request.json").read_text())
    assert request["instances"][0]["y"] == 7 and len(request["instances"][0]["x"]) == 28
    response = json.loads((tmp_path / "encode.response.json").read_text())
    want = exported.model.encode(exported.x[:1], [7]).mean().numpy()[0]
    np.testing.assert_allclose(response["predictions"][0]["loc"], want, atol=1e-4)
    sample = json.loads((tmp_path / "sample.request.json").read_text())
    assert sample == {"signature_name": "sample", "inputs": {"y": [7]}}

    client = _load("client").VAEServingClient(num_classes=CLASSES)
    for bad in ([10], [-1], [1.5]):
        with pytest.raises(ValueError, match="class labels"):
            client.build_encode_request(exported.x[:1], bad)
    with pytest.raises(ValueError, match="one label per row"):
        client.build_decode_request(np.zeros((2, LATENT)), [1])
    with pytest.raises(ValueError, match="not both"):
        client.build_sample_request(3, [1, 2, 3])


def test_bad_labels_are_refused_in_one_line_before_anything_is_written(exported, tmp_path):
    model, x = exported.model, exported.x
    cases = [
        ({"check_images": x, "check_labels": np.full(len(x), 10)}, r"in \[0, 10\)"),
        ({"check_images": x, "check_labels": np.zeros(3, int)}, "one per image"),
        ({"check_images": x, "check_labels": np.zeros(len(x))}, "int class labels"),
        ({"check_labels": np.zeros(len(x), int)}, "need their images"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            export.export_vae(model, tmp_path / "bad", progress=None, **kwargs)
        assert "\n" not in str(error.value)
    plain = keras_vae.mlp_vae((28, 28, 1), latent_dim=2, hidden_units=8)
    plain.build((None, 28, 28, 1))
    with pytest.raises(ValueError, match="takes no labels"):
        export.export_vae(plain, tmp_path / "bad", check_images=x,
                          check_labels=np.zeros(len(x), int), progress=None)  # fmt: skip
    assert not (tmp_path / "bad").exists()
