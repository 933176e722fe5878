"""Export: SavedModels for TF Serving, .tflite files, self-checks, atomic writes, REST client.

Two tiny models, trained for a few steps on real data from ../shared (a Bernoulli model on
28x28 MNIST digits and a Gaussian one on 28x20 Frey faces), are exported once per module with
every TFLite variant; the tests then read the export back the way its users would.
"""

import gzip
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from helpers import REPO

import keras_vae
from keras_vae.models.vae import export

SHARED = REPO.parent / "shared" / "data"
LATENT = 4
SHAPES = {"bernoulli": (28, 28, 1), "gaussian": (28, 20, 1)}
VARIANTS = ("none", "dynamic", "float16", "int8")


def _load_module(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "export" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _images(likelihood, n=1200):
    """Real images in [0, 1]: binarized MNIST test digits, or Frey Face frames."""
    rng = np.random.default_rng(0)
    if likelihood == "bernoulli":
        with gzip.open(SHARED / "mnist" / "t10k-images-idx3-ubyte.gz") as handle:
            pixels = np.frombuffer(handle.read(), np.uint8, offset=16)
        images = (pixels.reshape(-1, 28, 28, 1)[:n] > 127).astype(np.float32)
    else:
        from scipy.io import loadmat

        frames = loadmat(SHARED / "frey_face" / "frey_rawface.mat")["ff"].T
        images = frames.reshape(-1, 28, 20, 1).astype(np.float32) / 255.0
    return images[rng.permutation(len(images))[:n]]


def _tiny_model(likelihood="bernoulli", images=None):
    keras.utils.set_random_seed(0)
    model = keras_vae.mlp_vae(
        SHAPES[likelihood], latent_dim=LATENT, hidden_units=32, likelihood=likelihood, seed=0
    )
    model.build((None, *SHAPES[likelihood]))
    if images is not None:
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        model.fit(images, epochs=3, batch_size=100, verbose=0)
    return model


class Export:
    def __init__(self, likelihood, root):
        images = _images(likelihood)
        self.likelihood = likelihood
        self.model = _tiny_model(likelihood, images[:1000])
        self.representative, self.check = images[:300], images[1000:1064]
        self.dir = root / "export"
        self.report = export.export_vae(
            self.model,
            self.dir,
            quantize=VARIANTS,
            representative_images=self.representative,
            check_images=self.check,
            progress=None,
        )
        self.encoder = tf.saved_model.load(str(self.dir / "encoder" / "1"))
        self.decoder = tf.saved_model.load(str(self.dir / "decoder" / "1"))
        self.scorer = tf.saved_model.load(str(self.dir / "scorer" / "1"))

    def reference(self, x):
        """Encoder and decoder outputs computed independently, through the Keras/TFP path."""
        q = self.model.encode(x)
        loc = q.mean().numpy()
        p = self.model.decode(loc)
        decoder = {"mean": p.mean().numpy()}
        if self.likelihood == "bernoulli":
            decoder["logits"] = p.distribution.logits_parameter().numpy()
        else:
            decoder.update(loc=p.distribution.loc.numpy(), scale=p.stddev().numpy())
        return {"loc": loc, "scale": q.stddev().numpy()}, decoder

    def tflite(self, part, variant="none"):
        path = self.dir / export.tflite_filename(part, variant)
        return Interpreter(model_path=str(path), num_threads=2)


_EXPORTS = {}


def _export(likelihood, tmp_path_factory):
    if likelihood not in _EXPORTS:
        _EXPORTS[likelihood] = Export(likelihood, tmp_path_factory.mktemp(likelihood))
    return _EXPORTS[likelihood]


@pytest.fixture(scope="module", params=["bernoulli", "gaussian"])
def exported(request, tmp_path_factory):
    return _export(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def bernoulli(tmp_path_factory):
    return _export("bernoulli", tmp_path_factory)


@pytest.fixture(scope="module")
def gaussian(tmp_path_factory):
    return _export("gaussian", tmp_path_factory)


def _expected_signatures(likelihood, shape, latent_dim=LATENT):
    image, latent = ["float32", [-1, *shape]], ["float32", [-1, latent_dim]]
    params = {"logits": image} if likelihood == "bernoulli" else {"loc": image, "scale": image}
    scores = {"elbo": ["float32", [-1]], "log_likelihood": ["float32", [-1]]}
    return {
        "encoder": {
            "serving_default": ({"x": image}, {"loc": latent, "scale": latent}),
            "encode_sample": ({"x": image}, {"z": latent, "loc": latent, "scale": latent}),
        },
        "decoder": {
            "serving_default": ({"z": latent}, {"mean": image, **params}),
            "sample": ({"num_samples": ["int32", []]}, {"z": latent, "mean": image}),
        },
        "scorer": {
            "serving_default": ({"x": image}, scores),
            "score_with_noise": ({"x": image, "eps": ["float32", [-1, -1, latent_dim]]}, scores),
        },
    }


_TF_ONLY = """
import json, sys
import numpy as np
import tensorflow as tf
result = {}

def spec(s):
    return [s.dtype.name, [-1 if d is None else d for d in s.shape.as_list()]]

for root in sys.argv[1:]:
    found, shapes = {}, {}
    for part in ("encoder", "decoder", "scorer"):
        loaded = tf.saved_model.load(f"{root}/{part}/1")
        found[part] = {}
        for key, fn in loaded.signatures.items():
            inputs = {n: spec(s) for n, s in fn.structured_input_signature[1].items()}
            outputs = {n: spec(s) for n, s in fn.structured_outputs.items()}
            found[part][key] = [inputs, outputs]
            feed = {
                n: tf.constant(3 if not s[1] else np.full([5 if d < 0 else d for d in s[1]], 0.5),
                               s[0])
                for n, s in inputs.items()
            }
            out = fn(**feed)
            shapes[f"{part}/{key}"] = {n: v.shape.as_list() for n, v in out.items()}
            assert all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in out.values())
    result[root] = {"signatures": found, "shapes": shapes}
assert "keras_vae" not in sys.modules
print(json.dumps(result))
"""


def test_saved_models_load_and_run_with_tensorflow_alone(bernoulli, gaussian):
    """Both exports in one process that imports TensorFlow and never keras_vae."""
    exports = (bernoulli, gaussian)
    result = subprocess.run(
        [sys.executable, "-c", _TF_ONLY, *(str(e.dir) for e in exports)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found_all = json.loads(result.stdout.strip().splitlines()[-1])
    for exported in exports:
        shape = SHAPES[exported.likelihood]
        expected = _expected_signatures(exported.likelihood, shape)
        found = found_all[str(exported.dir)]
        assert found["signatures"] == json.loads(json.dumps(expected))
        assert found["shapes"]["encoder/serving_default"] == {"loc": [5, 4], "scale": [5, 4]}
        assert found["shapes"]["decoder/sample"] == {"z": [3, 4], "mean": [3, *shape]}
        assert found["shapes"]["decoder/serving_default"]["mean"] == [5, *shape]
        assert found["shapes"]["scorer/serving_default"] == {"elbo": [5], "log_likelihood": [5]}


def test_saved_model_cli_runs_the_decoder_in_graph_mode(bernoulli, tmp_path):
    cli = Path(sys.executable).with_name("saved_model_cli")
    # `saved_model_cli run` loads in graph mode with a Session, as TF Serving does.
    z = tmp_path / "z.npy"
    np.save(z, bernoulli.reference(bernoulli.check[:3])[0]["loc"])
    ran = subprocess.run(
        [
            cli,
            "run",
            "--dir",
            bernoulli.dir / "decoder" / "1",
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"z={z}",
            "--outdir",
            tmp_path,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    mean = np.load(tmp_path / "mean.npy")
    np.testing.assert_allclose(mean, bernoulli.reference(bernoulli.check[:3])[1]["mean"], atol=1e-5)


@pytest.mark.parametrize("batch", [1, 64])
def test_float32_tflite_matches_the_keras_model(exported, batch):
    x = exported.check[:batch]
    want_encoder, want_decoder = exported.reference(x)
    encoder = exported.tflite("encoder")
    assert set(encoder.get_signature_list()) == {"serving_default", "encode_sample"}
    got = encoder.get_signature_runner("serving_default")(x=x)
    for name in ("loc", "scale"):
        assert np.abs(got[name] - want_encoder[name]).max() < 1e-4
    decoder = exported.tflite("decoder")
    assert set(decoder.get_signature_list()) == {"serving_default", "sample"}
    got = decoder.get_signature_runner("serving_default")(z=want_encoder["loc"])
    assert set(got) == set(want_decoder)
    for name, want in want_decoder.items():
        assert got[name].shape == (batch, *SHAPES[exported.likelihood])
        assert np.abs(got[name] - want).max() < 1e-4, name


def test_tflite_files_have_builtin_ops_only(exported):
    for part in ("encoder", "decoder"):
        for variant in VARIANTS:
            content = (exported.dir / export.tflite_filename(part, variant)).read_bytes()
            operators = export.tflite_operators(content)
            assert "FULLY_CONNECTED" in operators
            assert not [op for op in operators if op.startswith("CUSTOM")], operators
            assert b"Flex" not in content
    content = (exported.dir / "scorer.tflite").read_bytes()
    assert not [op for op in export.tflite_operators(content) if op.startswith("CUSTOM")]
    assert b"Flex" not in content
    assert "RANDOM_STANDARD_NORMAL" in export.tflite_operators(
        (exported.dir / "decoder.tflite").read_bytes()
    )


def test_quantized_tflite_within_documented_bounds(exported):
    x = exported.check
    want_encoder, want_decoder = exported.reference(x)
    for variant in ("dynamic", "float16", "int8"):
        bounds = export.QUANTIZED_BOUNDS[variant]
        encoder = exported.tflite("encoder", variant).get_signature_runner("serving_default")
        loc = encoder(x=x)["loc"]
        assert np.abs(loc - want_encoder["loc"]).max() < bounds["encoder"], variant
        decoder = exported.tflite("decoder", variant).get_signature_runner("serving_default")
        mean = decoder(z=want_encoder["loc"])["mean"]
        assert np.abs(mean - want_decoder["mean"]).max() < bounds["decoder"], variant
    for part in ("encoder", "decoder"):
        size = {
            v: (exported.dir / export.tflite_filename(part, v)).stat().st_size for v in VARIANTS
        }
        # (int8 is not smaller than float16 here: its per-channel scales weigh more than the
        # weights of a 32-unit model.)
        assert max(size["dynamic"], size["float16"], size["int8"]) < size["none"]


def test_sampling_signatures_give_finite_images_of_the_right_shape(exported):
    shape = SHAPES[exported.likelihood]
    sample = exported.decoder.signatures["sample"]
    runners = [lambda n: {k: v.numpy() for k, v in sample(num_samples=tf.constant(n)).items()}]
    for variant in VARIANTS:
        runner = exported.tflite("decoder", variant).get_signature_runner("sample")
        runners.append(lambda n, runner=runner: runner(num_samples=np.array(n, np.int32)))
    for run in runners:
        for n in (1, 300):
            out = run(n)
            assert out["z"].shape == (n, LATENT) and out["mean"].shape == (n, *shape)
            assert np.isfinite(out["z"]).all() and np.isfinite(out["mean"]).all()
            if exported.likelihood == "bernoulli":
                assert out["mean"].min() >= 0 and out["mean"].max() <= 1
        assert 0.8 < out["z"].std() < 1.2  # z ~ N(0, I), 1,200 draws
    x = exported.check[:16]
    encode_sample = exported.tflite("encoder").get_signature_runner("encode_sample")
    out = encode_sample(x=x)
    assert out["z"].shape == (16, LATENT) and np.isfinite(out["z"]).all()
    assert not np.allclose(out["z"], out["loc"])


def test_report_lists_every_file_with_its_size_and_errors(exported):
    on_disk = json.loads((exported.dir / "export_report.json").read_text())
    assert on_disk == json.loads(json.dumps(exported.report))
    paths = [a["path"] for a in on_disk["artefacts"]]
    assert paths[:3] == ["encoder/1", "decoder/1", "scorer/1"]
    assert {p for p in paths if p.endswith(".tflite")} == {
        export.tflite_filename(part, v) for part in ("encoder", "decoder") for v in VARIANTS
    } | {"scorer.tflite"}  # the scorer is float32 only
    for artefact in on_disk["artefacts"]:
        path = exported.dir / artefact["path"]
        if path.is_file():
            assert artefact["bytes"] == path.stat().st_size
        assert artefact["checked_error"] < artefact["bound"]
    assert on_disk["versions"] == {"encoder": [1], "decoder": [1], "scorer": [1]}
    leftovers = [p for p in exported.dir.rglob(".*")]
    assert leftovers == []


def test_wrong_input_shape_is_a_clear_error(bernoulli):
    errors = (TypeError, ValueError, tf.errors.InvalidArgumentError)
    with pytest.raises(errors, match=r"\(None, 28, 28, 1\)|\[\?,28,28,1\]"):
        bernoulli.encoder.signatures["serving_default"](x=tf.zeros([2, 28, 27, 1]))
    with pytest.raises(errors, match=r"\(None, 4\)|\[\?,4\]"):
        bernoulli.decoder.signatures["serving_default"](z=tf.zeros([2, 5]))
    with pytest.raises(errors, match=r"\(None, 4\)|\[\?,4\]"):
        bernoulli.decoder.signatures["serving_default"](z=tf.zeros([2, 3]))


def test_rest_client_requests_match_the_signatures(exported):
    client_module = _load_module("client")
    examples = _load_module("make_examples")
    client = client_module.VAEServingClient("http://serving:8501/")
    x = exported.check[:2]
    z = exported.reference(x)[0]["loc"]
    requests = {
        "encode": (client.build_encode_request(x), "encoder"),
        "encode_sample": (client.build_encode_sample_request(x), "encoder"),
        "decode": (client.build_decode_request(z), "decoder"),
        "sample": (client.build_sample_request(2), "decoder"),
        "score": (client.build_score_request(x), "scorer"),
    }
    for (url, body), part in requests.values():
        assert url == f"http://serving:8501/v1/models/{part}:predict"
        body = json.loads(json.dumps(body))  # what goes over the wire
        loaded = getattr(exported, part)
        signature = loaded.signatures[body["signature_name"]]
        specs = signature.structured_input_signature[1]
        inputs = examples.request_inputs(body, specs)
        assert set(inputs) == set(specs)
        for name, spec in specs.items():
            assert spec.is_compatible_with(tf.constant(inputs[name], spec.dtype)), name
        response = json.loads(json.dumps(examples.predict_in_process(loaded, body)))
        parsed = client_module.parse_response(response)
        direct = signature(**{n: tf.constant(v, specs[n].dtype) for n, v in inputs.items()})
        assert set(parsed) == set(direct)
        for name, value in parsed.items():
            assert value.shape == tuple(direct[name].shape)
            if body["signature_name"] == "serving_default" and part != "scorer":  # random
                np.testing.assert_allclose(value, direct[name].numpy(), atol=1e-5)
    columnar = {"outputs": {"loc": [[0.0] * 4], "scale": [[1.0] * 4]}}
    assert client_module.parse_response(columnar)["scale"].shape == (1, 4)


def test_committed_examples_fit_the_mnist_signatures():
    examples = REPO / "export" / "examples"
    # generated from the paper's MNIST model, latent_dim 20
    expected = _expected_signatures("bernoulli", (28, 28, 1), latent_dim=20)
    names = {
        "encode": "encoder",
        "encode_sample": "encoder",
        "decode": "decoder",
        "sample": "decoder",
        "score": "scorer",
    }
    for name, part in names.items():
        request = json.loads((examples / f"{name}.request.json").read_text())
        response = json.loads((examples / f"{name}.response.json").read_text())
        inputs, outputs = expected[part][request["signature_name"]]
        if "instances" in request:
            shape = np.shape(request["instances"])[1:]
            ((_, (_, input_shape)),) = inputs.items()
            assert list(shape) == input_shape[1:]
            assert set(response["predictions"][0]) == set(outputs)
        else:
            assert set(request["inputs"]) == set(inputs)
            assert set(response["outputs"]) == set(outputs)


def test_models_config_serves_the_three_models():
    lines = [line.strip() for line in (REPO / "export" / "models.config").read_text().splitlines()]
    names = [line.split('"')[1] for line in lines if line.startswith("name:")]
    paths = [line.split('"')[1] for line in lines if line.startswith("base_path:")]
    assert names == ["encoder", "decoder", "scorer"]
    assert paths == ["/models/encoder", "/models/decoder", "/models/scorer"]


# ------------------------------------------------------------------ atomicity and arguments
def _tiny_untrained():
    return _tiny_model("bernoulli")


_EXPORT_SCRIPT = """
import sys
import keras_vae
from keras_vae.models.vae.export import export_vae
model = keras_vae.mlp_vae((28, 28, 1), latent_dim=4, hidden_units=32)
model.build((None, 28, 28, 1))
export_vae(model, sys.argv[1], quantize=["none", "dynamic"], progress=None)
"""


def test_killed_export_leaves_no_partial_version(tmp_path):
    """SIGKILL while a SavedModel is being staged (the pipeline's other failures, interrupts,
    overwrites and stale files are tested once, in tests/serving/test_pipeline.py)."""
    kill_when = "encoder/.tmp-*"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen([sys.executable, "-c", _EXPORT_SCRIPT, str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(kill_when)):
            assert process.poll() is None, "the export ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    for part in ("encoder", "decoder"):
        version = tmp_path / part / "1"
        if version.exists():  # then it is complete
            loaded = tf.saved_model.load(str(version))
            assert "serving_default" in loaded.signatures
    # Leftover temporaries are not versions and do not block the next export.
    export.export_vae(_tiny_untrained(), tmp_path, tflite=False, overwrite=True, progress=None)
    assert sorted(p.name for p in (tmp_path / "encoder").iterdir() if p.name.isdigit()) == ["1"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"version": 0}, "version must be a positive int"),
        ({"quantize": ["int4"]}, "quantize must be"),
        ({"quantize": ["int8"]}, "needs representative_images"),
        ({"tflite": False, "quantize": ["float16"]}, "needs tflite=True"),
        ({"scorer_samples": 0}, "scorer_samples must be a positive int"),
        (
            {"check_images": np.zeros((2, 28, 20, 1))},
            r"check_images must have shape \[N, 28, 28, 1\]",
        ),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export.export_vae(_tiny_untrained(), tmp_path / "out", progress=None, **kwargs)
    assert not (tmp_path / "out").exists()


def test_unbuilt_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        export.export_vae(keras_vae.mlp_vae((28, 28, 1)), tmp_path, progress=None)


def test_cli_exports_a_run_directory(tmp_path, capsys):
    from keras_vae.cli import commands as cli
    from keras_vae.runs.config import TrainConfig

    images = tmp_path / "images.npz"
    np.savez(images, x=_images("bernoulli", 300))
    run_dir = tmp_path / "run"  # what `keras-vae train` writes, less the history
    run_dir.mkdir()
    _tiny_untrained().save(run_dir / "model.keras")
    (run_dir / "config.json").write_text(TrainConfig(dataset=str(images)).to_json())
    output = tmp_path / "export"
    assert cli.main(["export", str(run_dir), "--output", str(output), "--no-tflite"]) == 0
    assert "encoder/1" in capsys.readouterr().out
    assert sorted(p.name for p in (output / "decoder").iterdir() if p.name.isdigit()) == ["1"]
    assert cli.main(["export", str(tmp_path), "--output", str(output)]) != 0
    assert "not a keras_vae run directory" in capsys.readouterr().err


def test_cli_arguments():
    import argparse

    from keras_vae.models.vae.kind import VAEKind
    from keras_vae.workflows import export as export_workflow

    parser = argparse.ArgumentParser()
    export_workflow.add_cli_arguments(parser)
    args = parser.parse_args(["runs/mnist", "--output", "export/mnist"])
    assert (args.version, args.tflite, args.overwrite) == (1, True, False)
    given = {"quantize": args.quantize, "scorer": args.scorer,
             "scorer_samples": args.scorer_samples}  # fmt: skip
    assert export_workflow.kind_options(VAEKind(), given) == {
        "quantize": ["none"],
        "scorer": True,
        "scorer_samples": 100,
    }  # a VAE's defaults, applied where not given
    args = parser.parse_args(["r", "--output", "o", "--no-scorer", "--importance-samples", "7"])
    assert (args.scorer, args.scorer_samples) == (False, 7)
    args = parser.parse_args(["r", "--output", "o", "--scorer-samples", "9"])  # old spelling
    assert args.scorer_samples == 9
    args = parser.parse_args(
        [
            "r",
            "--output",
            "o",
            "--version",
            "3",
            "--no-tflite",
            "--quantize",
            "int8",
            "float16",
            "--overwrite",
        ]
    )
    assert (args.version, args.tflite, args.quantize, args.overwrite) == (
        3,
        False,
        ["int8", "float16"],
        True,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["r", "--output", "o", "--quantize", "int4"])


# ------------------------------------------------------------ every combination of parts
def _family_model(image_shape=(28, 28, 1), **parts):
    keras.utils.set_random_seed(0)
    model = keras_vae.mlp_vae(
        image_shape, latent_dim=LATENT, hidden_units=32, seed=0, prior_components=5, **parts
    )
    model.build((None, *image_shape))
    return model


def _round_trip(model, root, check_images, **kwargs):
    """Exports `model` (with its self-check) and loads every artefact back, as a user would:
    the SavedModels with TensorFlow and the float32 `.tflite` files with LiteRT. Checks that
    both carry the signatures the parts define. Reused by every combination's test."""
    kwargs.setdefault("scorer_samples", 10)  # K = 100 is checked on the module's exports
    report = export.export_vae(model, root, check_images=check_images, progress=None, **kwargs)
    expected = export.expected_signatures(model)
    saved, lite = {}, {}
    for part in report["versions"]:
        saved[part] = tf.saved_model.load(str(root / part / "1"))
        lite[part] = Interpreter(model_path=str(root / f"{part}.tflite"), num_threads=2)
        assert set(saved[part].signatures) == set(expected[part]), part
        assert set(lite[part].get_signature_list()) == set(expected[part]), part
    for artefact in report["artefacts"]:
        assert artefact["signatures"] == expected[artefact["part"]], artefact["path"]
        assert artefact["checked_error"] < artefact["bound"], artefact["path"]
    return SimpleNamespace(report=report, saved=saved, tflite=lite)


def _run(handle, part, signature, **inputs):
    """Outputs of one signature as numpy arrays: `handle` a loaded SavedModel or LiteRT."""
    if isinstance(handle, Interpreter):
        return handle.get_signature_runner(signature)(**inputs)
    outputs = handle.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}


@pytest.fixture(scope="module")
def full_vamp(tmp_path_factory):
    """A full-covariance posterior with a VampPrior (pseudo-inputs: 5 digits), exported."""
    images = _images("bernoulli", 32)
    model = _family_model(posterior="full", prior="vamp")
    model.prior.set_pseudo_inputs(images[:5])
    trip = _round_trip(model, tmp_path_factory.mktemp("full_vamp"), images)
    return SimpleNamespace(model=model, images=images, **vars(trip))


@pytest.fixture(scope="module")
def logistic_mixture(tmp_path_factory):
    """A discretised logistic decoder of Frey Face-sized images with a mixture prior whose
    centres lie far from N(0, I) with unequal weights, exported."""
    images = _images("gaussian", 32)  # Frey Face: 8-bit grey levels k/255
    model = _family_model((28, 20, 1), likelihood="logistic", prior="mixture")
    model.prior.means.assign(3.0 * np.random.default_rng(1).standard_normal((5, LATENT)))
    model.prior.logits.assign(np.linspace(-1.0, 1.0, 5))
    trip = _round_trip(model, tmp_path_factory.mktemp("logistic_mixture"), images)
    return SimpleNamespace(model=model, images=images, **vars(trip))


def test_full_covariance_posterior_exports_its_cholesky_factor(full_vamp):
    images, model, trip = full_vamp.images, full_vamp.model, full_vamp
    q = model.encode(images[:8])  # tfd.MultivariateNormalTriL
    for handle in (trip.saved["encoder"], trip.tflite["encoder"]):
        got = _run(handle, "encoder", "serving_default", x=images[:8])
        assert set(got) == {"loc", "scale_tril"}
        np.testing.assert_allclose(got["loc"], q.mean().numpy(), atol=1e-4)
        np.testing.assert_allclose(got["scale_tril"], q.scale.to_dense().numpy(), atol=1e-4)
        assert np.all(np.triu(got["scale_tril"], 1) == 0)
    # z = loc + L eps: over many draws of one image, covariance L L^T
    x = np.repeat(images[:1], 4000, axis=0)
    z = _run(trip.tflite["encoder"], "encoder", "encode_sample", x=x)["z"]
    tril = q.scale.to_dense().numpy()[0]
    np.testing.assert_allclose(np.cov(z.T), tril @ tril.T, atol=0.1 * np.abs(tril @ tril.T).max())


def test_int8_full_covariance_encoder_keeps_loc_outside_the_range_of_l(tmp_path):
    """Regression: in the int8 encoder the slices, gather and tf.where that build L from the
    projection shared one scale with loc, the scale of L's narrower range, so loc was clipped
    (a max error of 6.7 for loc in [-2.7, 7.6] and L in [-0.9, 0.9])."""
    images = _images("bernoulli", 400)
    representative, check = images[:300], images[300:]
    model = _family_model(posterior="full")
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(representative, epochs=1, batch_size=100, verbose=0)
    # Trained models put posterior means several prior deviations out, with L entries below 1.
    bias = model.posterior.projection.bias
    bias.assign(bias.numpy() + np.where(np.arange(bias.shape[0]) < LATENT, 4.0, 0.0))
    q = model.encode(check)
    loc, tril = q.mean().numpy(), q.scale.to_dense().numpy()
    assert loc.max() > tril.max() + 1.0  # one scale, of L's range, would clip loc by > 1
    report = export.export_vae(
        model, tmp_path, quantize=["int8"], scorer=False, representative_images=representative,
        check_images=check, progress=None,
    )  # fmt: skip
    (encoder,) = [a for a in report["artefacts"] if a["path"] == "encoder.int8.tflite"]
    assert set(encoder["signatures"]) == {"serving_default", "encode_sample"}
    lite = Interpreter(str(tmp_path / "encoder.int8.tflite"), num_threads=2)
    got = lite.get_signature_runner("serving_default")(x=check)
    # int8 steps of the calibrated ranges, a few of them accumulated; not a clipped range
    np.testing.assert_allclose(got["loc"], loc, atol=0.03 * np.ptp(loc))
    np.testing.assert_allclose(got["scale_tril"], tril, atol=0.1 * np.ptp(tril))
    assert np.all(np.triu(got["scale_tril"], 1) == 0)


def _moments(model):
    prior = model.prior_distribution()  # TFP's own moments of the learned prior
    return prior.mean().numpy(), prior.variance().numpy()


@pytest.mark.parametrize("exported_family", ["logistic_mixture", "full_vamp"])
def test_sample_signature_draws_from_the_learned_prior(exported_family, request):
    trip = request.getfixturevalue(exported_family)
    mean, variance = _moments(trip.model)
    n = 20000
    for handle in (trip.saved["decoder"], trip.tflite["decoder"]):
        z = _run(handle, "decoder", "sample", num_samples=np.array(n, np.int32))["z"]
        assert z.shape == (n, LATENT)
        np.testing.assert_allclose(z.mean(0), mean, atol=5 * np.sqrt(variance.max() / n) + 0.02)
        np.testing.assert_allclose(z.var(0), variance, rtol=0.1, atol=0.01)


def test_discretised_logistic_decoder_exports_its_mixture(logistic_mixture):
    model, trip = logistic_mixture.model, logistic_mixture
    z = np.random.default_rng(0).standard_normal((8, LATENT)).astype(np.float32)
    params = model.likelihood.parameters(model.decoder(z))
    mixtures = model.likelihood.num_components
    for handle in (trip.saved["decoder"], trip.tflite["decoder"]):
        got = _run(handle, "decoder", "serving_default", z=z)
        assert set(got) == {"mean", "logits", "loc", "log_scale"}
        assert got["mean"].shape == (8, 28, 20, 1)
        assert 0.0 <= got["mean"].min() and got["mean"].max() <= 1.0
        np.testing.assert_allclose(got["mean"], model.decode(z).mean().numpy(), atol=1e-4)
        for name in ("logits", "loc", "log_scale"):
            assert got[name].shape == (8, 28, 20, 1, mixtures), name
            np.testing.assert_allclose(got[name], params[name].numpy(), atol=1e-4)
        sampled = _run(handle, "decoder", "sample", num_samples=np.array(16, np.int32))
        assert 0.0 <= sampled["mean"].min() and sampled["mean"].max() <= 1.0


# ------------------------------------------------------------------------------ scorer
def _numpy_scores(model, likelihood, x, eps):
    """The scorer's outputs in NumPy/SciPy, from the Keras model's layers only: diagonal
    Gaussian q, N(0, I) prior, closed-form KL, Bernoulli or Gaussian log p(x|z)."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    q = model.encode(x)
    loc, scale = q.mean().numpy().astype(np.float64), q.stddev().numpy().astype(np.float64)
    z = loc + scale * eps  # [K, B, D]
    p = model.decode(z.astype(np.float32))
    axes = tuple(range(2, 2 + len(x.shape) - 1))
    if likelihood == "bernoulli":
        logits = p.distribution.logits_parameter().numpy().astype(np.float64)
        log_px = np.sum(x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits), axes)
    else:
        d = p.distribution
        log_px = np.sum(norm.logpdf(x, d.loc.numpy(), d.scale.numpy()), axes)
    log_pz = norm.logpdf(z).sum(-1)
    log_qz = norm.logpdf(z, loc, scale).sum(-1)
    kl = 0.5 * np.sum(loc**2 + scale**2 - 1 - 2 * np.log(scale), -1)
    log_w = log_px + log_pz - log_qz
    return {
        "elbo": log_px[0] - kl,
        "log_likelihood": logsumexp(log_w, axis=0) - np.log(len(eps)),
    }


def test_scorer_agrees_with_an_independent_numpy_computation(exported):
    scorer = [exported.scorer, Interpreter(str(exported.dir / "scorer.tflite"), num_threads=2)]
    x = exported.check[:16]
    eps = np.random.default_rng(5).standard_normal((7, 16, LATENT)).astype(np.float32)
    want = _numpy_scores(exported.model, exported.likelihood, x, eps)
    for handle in scorer:
        got = _run(handle, "scorer", "score_with_noise", x=x, eps=eps)
        for name in ("elbo", "log_likelihood"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-3)
    # serving_default draws K = 100 samples itself: its means agree with fresh NumPy ones
    x = exported.check
    eps = np.random.default_rng(6).standard_normal((100, len(x), LATENT))
    want = _numpy_scores(exported.model, exported.likelihood, x, eps)
    for handle in scorer:
        got = _run(handle, "scorer", "serving_default", x=x)
        for name in ("elbo", "log_likelihood"):
            diff = got[name] - want[name]
            assert abs(diff.mean()) < 5 * diff.std(ddof=1) / np.sqrt(len(x)) + 1e-3, name
        gap = got["log_likelihood"] - got["elbo"]  # log p(x) >= L_K >= ELBO on average
        assert gap.mean() > 0
    statistics = [a for a in exported.report["artefacts"] if a["part"] == "scorer"]
    assert [a["path"] for a in statistics] == ["scorer/1", "scorer.tflite"]
    assert all(a["statistics"]["gap"]["mean"] > 0 for a in statistics)


def test_scorer_ranks_noise_below_real_digits(bernoulli):
    from keras_vae.data import pipeline as data

    digits = data.load_images(
        "binarized_mnist", "test", data_dir=str(REPO.parent / "shared" / "tensorflow_datasets"),
        limit=300,
    )  # fmt: skip
    noise = (np.random.default_rng(0).uniform(size=(20, 28, 28, 1)) > 0.5).astype(np.float32)
    tflite = Interpreter(str(bernoulli.dir / "scorer.tflite"), num_threads=2)
    for handle in (bernoulli.scorer, tflite):
        real = _run(handle, "scorer", "serving_default", x=digits)
        fake = _run(handle, "scorer", "serving_default", x=noise)
        for name in ("elbo", "log_likelihood"):
            assert fake[name].max() < real[name].min(), name


# ------------------------------------------------------------ the scorer in bfloat16
def test_bfloat16_scorer_agrees_with_the_float32_model_on_the_same_noise(tmp_path):
    """`keras-vae export --precision mixed_bfloat16` (`VAEKind.export(precision=...)`): the
    scorer SavedModel computes its matmuls in bfloat16, and its log p(x) on the same images
    and noise stays within issue 29's 0.05 nats of the float32 model's in the mean over the
    images (the float32 scores in NumPy from the float32 model's layers); it is not the
    float32 graph (the differences are not float32 rounding). The encoder and decoder stay
    float32 with their `.tflite` files; the scorer has none (no bfloat16 TFLite builtins)."""
    from keras_vae.models.vae.kind import VAEKind
    from keras_vae.runs.config import TrainConfig

    config = TrainConfig(latent_dim=LATENT, hidden_units=[32], seed=0, likelihood="bernoulli")
    images = _images("bernoulli", 300)
    keras.utils.set_random_seed(0)
    model = VAEKind().build(config, SHAPES["bernoulli"])
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(images, epochs=2, batch_size=100, verbose=0)
    report = VAEKind().export(model, config, tmp_path, images=images, scorer_samples=10,
                              precision="mixed_bfloat16", progress=None)  # fmt: skip
    x, eps = images[:64], np.random.default_rng(3).standard_normal((20, 64, LATENT))
    scorer = tf.saved_model.load(str(tmp_path / "scorer" / "1"))
    got = _run(scorer, "scorer", "score_with_noise", x=x, eps=eps.astype(np.float32))
    want = _numpy_scores(model, "bernoulli", x, eps)
    difference = got["log_likelihood"] - want["log_likelihood"]
    assert abs(difference.mean()) < 0.05
    assert np.abs(difference).max() > 1e-3  # bfloat16 matmuls, not float32's 1e-5
    float32 = _run(tf.saved_model.load(str(tmp_path / "encoder" / "1")), "encoder",
                   "serving_default", x=x)  # fmt: skip
    np.testing.assert_allclose(float32["loc"], model.encode(x).mean().numpy(), atol=1e-5)
    written = {a["path"]: a for a in report["artefacts"]}
    assert sorted(written) == ["decoder.tflite", "decoder/1", "encoder.tflite", "encoder/1",
                               "scorer/1"]  # fmt: skip
    assert written["scorer/1"]["precision"] == "mixed_bfloat16"
    agreement = written["scorer/1"]["float32_agreement"]
    assert abs(agreement["log_likelihood"]["mean_difference"]) < agreement["bound"] <= 0.3
    assert report["model"]["precision"] == "float32"
    assert report["model"]["scorer_precision"] == "mixed_bfloat16"


def test_scorer_model_must_hold_the_models_weights(tmp_path):
    other = keras_vae.mlp_vae(SHAPES["bernoulli"], latent_dim=LATENT, hidden_units=32, seed=1)
    other.build((None, *SHAPES["bernoulli"]))
    with pytest.raises(ValueError, match="scorer_model must hold the model's weights"):
        export.export_vae(_tiny_untrained(), tmp_path, scorer_model=other, progress=None)
    assert not tmp_path.joinpath("encoder").exists()
