"""A new model kind defined in this one file trains, resumes, evaluates, plots and exports
through the CLI and from Python, with no change to keras_vae: the model-kind protocol holds.

The kind is a deterministic autoencoder with a Bernoulli decoder (no latent noise): its loss
is -log p(x | z = f(x)), the reconstruction term alone.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import FIXTURES, RowCountingArray

from keras_vae import registry
from keras_vae.cli import commands as cli
from keras_vae.data import pipeline as data
from keras_vae.engine.trainer import ExactReplicaTrainer
from keras_vae.models.kind import ModelKind
from keras_vae.runs import directory as runs
from keras_vae.runs.config import TrainConfig
from keras_vae.serving import pipeline
from keras_vae.serving.checks import ExportCheckError
from keras_vae.serving.signatures import function
from keras_vae.workflows import evaluate, export, train


@keras.saving.register_keras_serializable(package="keras_vae_tests")
class Autoencoder(ExactReplicaTrainer):
    """x -> z = f(x) -> Bernoulli logits g(z)."""

    def __init__(self, image_shape=(28, 28, 1), latent_dim=2, seed=None, **kwargs):
        super().__init__(metric_names=("reconstruction",), seed=seed, **kwargs)
        self._image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.encoder = keras.layers.Dense(latent_dim, name="encoder")
        self.decoder = keras.layers.Dense(int(np.prod(image_shape)), name="decoder")

    @property
    def image_shape(self):
        return self._image_shape

    def build(self, input_shape):
        self.encoder.build((None, int(np.prod(self._image_shape))))
        self.decoder.build((None, self.latent_dim))
        self.built = True

    def encode(self, x):
        return self.encoder(tf.reshape(x, [tf.shape(x)[0], -1]))

    def decode_logits(self, z):
        return tf.reshape(self.decoder(z), [-1, *self._image_shape])

    def reconstruct(self, x):
        return tf.sigmoid(self.decode_logits(self.encode(x)))

    def call(self, x):
        return self.reconstruct(x)

    def noise_shape(self):
        return (1, 1)  # no noise

    def compute_objective(self, x, noise, step):
        logits = self.decode_logits(self.encode(x))
        nll = tf.reduce_sum(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=[1, 2, 3]
        )
        return tf.reduce_mean(nll), {"reconstruction": -nll}

    def get_config(self):
        config = super().get_config()
        config.update(image_shape=list(self._image_shape), latent_dim=self.latent_dim)
        return config


class AutoencoderKind(ModelKind):
    options = ("latent_dim",)
    figure_kinds = ("reconstructions",)

    def build(self, config, image_shape, epoch_steps=None, condition_dim=None):
        return Autoencoder(image_shape, config.latent_dim, seed=config.seed)

    def likelihood_name(self, model):
        return "bernoulli"

    def monitor(self, config):
        return "val_reconstruction", "max"

    def summary_line(self, metrics):
        return f"test-ae: train reconstruction {metrics['train_reconstruction']:.2f}"

    def evaluate(self, model, images, labels=None, **options):
        total, count = 0.0, 0
        for x, _ in data.batches(images, 100):  # an array or a stream, a batch at a time
            p = np.clip(np.asarray(model.reconstruct(x)), 1e-7, 1 - 1e-7)
            total -= float(np.sum(x * np.log(p) + (1 - x) * np.log1p(-p)))
            count += len(x)
        return {"nll": total / count, "num_examples": count}, f"NLL {total / count:.2f}"

    def make_figure(self, model, figure, *, images=None, labels=None, num=None, seed=0,
                    split="test"):  # fmt: skip
        from keras_vae._internal.figures import reconstruction_figure

        x, _ = data.take_rows(images, np.arange(num or 4))  # an array or a stream
        return reconstruction_figure(x, np.asarray(model.reconstruct(x)), "AE", "E[x|f(x)]")

    export_options = ("quantize",)
    quantizations = ("none", "float16")

    def export(self, model, config, output, *, images, labels=None, **options):
        """One part, `autoencoder/` (x -> mean), through the pipeline every kind uses."""
        chosen = self.export_images(images)  # the check images, or the calibration ones
        x = chosen["representative"] if chosen["check"] is None else chosen["check"]
        want = np.asarray(model.reconstruct(x))

        def check(runners, described, quantization, label):
            error = float(np.max(np.abs(runners["serving_default"](x=x)["mean"] - want)))
            bound = 1e-5 if quantization == "none" else 1e-2
            if error >= bound:
                raise ExportCheckError(f"{label}: mean differs by {error}")
            return {"errors": {"serving_default/mean": error}, "checked": "max abs error",
                    "checked_error": error, "bound": bound}  # fmt: skip

        spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="x")
        part = pipeline.ExportPart(
            "autoencoder", {"serving_default": function(lambda x: {"mean": model.reconstruct(x)},
                                                        spec)},
            check, quantizations=self.quantizations,
        )  # fmt: skip
        return pipeline.export_parts([part], output, model={"name": model.name},
                                     check_images={"count": len(x), "source": "train"},
                                     progress=None, **options)  # fmt: skip


class _KillInSecondEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def registered():
    """The kind registered for this module's tests only (others must not see it)."""
    registry.register("model", "test-ae")(AutoencoderKind)
    yield "test-ae"
    registry.unregister("model", "test-ae")


ARGS = ["--dataset", "binarized_mnist", "--limit", "200", "--latent-dim", "3",
        "--image-every", "1", "--batch-size", "50"]  # fmt: skip


def test_a_kind_of_one_file_trains_resumes_evaluates_plots_and_exports_from_the_cli(
    registered, tmp_path, capsys
):
    run = tmp_path / "run"
    argv = ["--model", registered, *ARGS, "--epochs", "2", "--output", str(run)]
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 2, after the backup of epoch 1
        train.train(cli.train_config(argv), run, verbose=0, callbacks=[_KillInSecondEpoch()])
    assert cli.main(["train", *argv]) == 0  # the same command resumes
    assert "test-ae: train reconstruction" in capsys.readouterr().out
    assert (run / "images" / "reconstructions_epoch002.png").exists()  # the generic pictures
    metrics = json.loads((run / runs.METRICS_FILE).read_text())
    assert metrics["model_kind"] == registered
    assert (metrics["resumed_from_epoch"], metrics["epochs"]) == (1, 2)
    assert cli.main(["evaluate", str(run), "--limit", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_examples"] == 50 and result["nll"] > 0
    assert cli.main(["plot", str(run), "--kind", "reconstructions",
                     "--output", str(tmp_path / "r.png")]) == 0  # fmt: skip
    assert (tmp_path / "r.png").stat().st_size > 0
    # options of other kinds are refused the same way as for the built-in kinds
    assert cli.main(["plot", str(run), "--kind", "manifold", "--output", "m.png"]) == 2
    assert cli.main(["evaluate", str(run), "--importance-samples", "5"]) == 2
    assert cli.main(["export", str(run), "--output", str(tmp_path / "ex"),
                     "--importance-samples", "5"]) == 2  # fmt: skip
    assert "does not apply to a test-ae run" in capsys.readouterr().err
    assert cli.main(["export", str(run), "--output", str(tmp_path / "ex"),
                     "--quantize", "none", "float16"]) == 0  # fmt: skip
    assert "autoencoder.float16.tflite" in capsys.readouterr().out  # the one report table
    report = json.loads((tmp_path / "ex" / "export_report.json").read_text())
    assert [a["path"] for a in report["artefacts"]] == [
        "autoencoder/1", "autoencoder.tflite", "autoencoder.float16.tflite"]  # fmt: skip
    model = runs.load_model(run / runs.MODEL_FILE)
    x = np.load(FIXTURES / "v0_2_0" / "inputs.npy")
    served = tf.saved_model.load(str(tmp_path / "ex" / "autoencoder" / "1"))
    np.testing.assert_allclose(
        served.signatures["serving_default"](x=tf.constant(x))["mean"],
        model.reconstruct(x), atol=1e-6,
    )  # fmt: skip


def test_the_same_kind_from_python(registered, tmp_path):
    config = TrainConfig(model=registered, dataset="binarized_mnist", limit=200, epochs=1,
                         latent_dim=3, image_every=0, batch_size=50)  # fmt: skip
    result = train.train(config, tmp_path / "run", verbose=0, progress=lambda line: None)
    assert isinstance(result["model"], Autoencoder)
    assert evaluate.evaluate_run(tmp_path / "run", limit=20)["num_examples"] == 20
    assert export.export_run(tmp_path / "run", tmp_path / "ex")["artefacts"]


def test_the_default_evaluation_is_keras_evaluate_over_a_stream_read_a_batch_at_a_time():
    model = Autoencoder((4, 4, 1), 2, seed=0)
    model.build((None, 4, 4, 1))
    model.compile(optimizer="adam")
    x = (np.random.default_rng(0).random((250, 4, 4, 1)) > 0.5).astype("float32")
    reads: list[int] = []
    stream = data.ArrayStream(RowCountingArray(x, reads), "x")
    del reads[:]  # (its first examples, read when it opened)
    result, line = ModelKind().evaluate(model, stream)
    assert max(reads) == 100  # a batch at a time, never the split
    expected = model.evaluate(x, batch_size=100, verbose=0, return_dict=True)
    assert result == pytest.approx({**expected, "num_examples": 250}, rel=1e-6)
    assert line.startswith(f"loss {expected['loss']:.4f}, reconstruction ")


def test_options_of_another_kind_are_refused(registered):
    with pytest.raises(ValueError, match="codebook_size=8 applies only to model='vqvae'"):
        TrainConfig(model=registered, codebook_size=8)
