"""`keras-vae` for the VQ-VAE family end to end on a tiny budget: train a VQ-VAE (killed after
an epoch, then resumed), evaluate it, train its code prior, evaluate, plot and export; and the
options of another model refused in one line.

References are independent of the code under test: nearest codes by NumPy argmin over the
codebook, the Bernoulli log-likelihood and the perplexity in NumPy, the prior's code NLL from
a NumPy log-softmax of its logits, and the exported SavedModel's codes against Keras'.
"""

import importlib.util
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, RowCountingArray

from keras_vae import registry
from keras_vae.cli import commands as cli
from keras_vae.data import pipeline as data
from keras_vae.models.vqvae.code_prior import CodePrior
from keras_vae.models.vqvae.model import VQVAE, vqvae
from keras_vae.runs import directory as runs
from keras_vae.runs.config import TrainConfig
from keras_vae.workflows import train as training

VQ_OPTIONS = ["--model", "vqvae", "--codebook-size", "8", "--code-dim", "3", "--conv-filters",
              "4", "6", "--activation", "relu", "--batch-size", "32", "--no-xla", "--quiet",
              "--image-every", "1", "--seed", "1"]  # fmt: skip
PRIOR_OPTIONS = ["--model", "vqvae-prior", "--pixelcnn-channels", "6", "--pixelcnn-layers", "2",
                 "--pixelcnn-hidden-units", "8", "--batch-size", "32", "--epochs", "1",
                 "--no-xla", "--quiet", "--image-every", "1"]  # fmt: skip


class _KilledAtEpoch(keras.callbacks.Callback):
    """Stops the process-like run at the start of epoch `epoch` (0-based), after the backup
    of the epoch before was committed."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _blocks(count: int) -> np.ndarray:
    """`count` 12x12 binary images, each with a 4x4 block somewhere."""
    rng = np.random.default_rng(0)
    x = np.zeros((count, 12, 12), np.float32)
    for image, (row, col) in zip(x, rng.integers(0, 8, size=(count, 2)), strict=True):
        image[row : row + 4, col : col + 4] = 1
    return x


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """A VQ-VAE run (2 epochs: killed after the first, resumed) and its prior run, on 160
    12x12 binary images with blocks (an .npz file: 144 train, 16 validation)."""
    root = tmp_path_factory.mktemp("vq")
    np.savez(root / "blocks.npz", x=_blocks(160))
    argv = ["--dataset", str(root / "blocks.npz"), *VQ_OPTIONS, "--epochs", "2",
            "--output", str(root / "vq")]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        training.train(cli.train_config(argv), output=root / "vq", verbose=0,
                       progress=lambda line: None, callbacks=[_KilledAtEpoch(1)])  # fmt: skip
    assert runs.read_backup_state(root / "vq")["epoch"] == 1
    return root, argv


def test_vqvae_run_resumes_and_writes_its_metrics(runs_dir, capsys):
    root, argv = runs_dir
    assert cli.main(["train", *argv]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "after epoch 1" in out and "perplexity" in out
    assert len((root / "vq" / "history.csv").read_text().splitlines()) == 3  # header + 2
    metrics = json.loads((root / "vq" / "metrics.json").read_text())
    assert metrics["model_kind"] == "vqvae" and metrics["resumed_from_epoch"] == 1
    assert {"validation_reconstruction", "validation_perplexity", "train_usage"} <= set(metrics)
    pictures = sorted(p.name for p in (root / "vq" / "images").iterdir())
    assert pictures == ["reconstructions_epoch001.png", "reconstructions_epoch002.png"]
    config = json.loads((root / "vq" / "config.json").read_text())
    assert (config["model"], config["codebook_size"], config["conv_filters"]) == ("vqvae", 8,
                                                                                [4, 6])  # fmt: skip


def _bernoulli_log_prob(x, logits):
    return np.sum(x * logits - np.logaddexp(0.0, logits), axis=(1, 2, 3))


def test_evaluate_a_vqvae_run_against_numpy(runs_dir, capsys):
    root, _ = runs_dir
    assert cli.main(["evaluate", str(root / "vq"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, config = runs.load_run(root / "vq")
    assert isinstance(model, VQVAE) and result["split"] == config.eval_split == "validation"
    x = training.load_split(config, "validation")
    z_e = model.encode_latents(x).numpy()
    codebook = model.quantizer.codebook.numpy()
    codes = np.argmin(((z_e[..., None, :] - codebook) ** 2).sum(-1), axis=-1)
    np.testing.assert_array_equal(codes, model.encode(x).numpy())
    logits = model.likelihood.parameters(model.decoder(codebook[codes]))["logits"].numpy()
    mean = 1.0 / (1.0 + np.exp(-logits))
    counts = np.bincount(codes.ravel(), minlength=8)
    p = counts[counts > 0] / counts.sum()
    assert result["reconstruction"] == pytest.approx(-_bernoulli_log_prob(x, logits).mean(), 1e-4)
    assert result["mse"] == pytest.approx(np.mean((x - mean) ** 2), rel=1e-4)
    assert result["perplexity"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-4)
    assert result["usage"] == np.mean(counts > 0) and result["num_examples"] == 16
    assert (root / "vq" / "eval_validation.json").is_file()


@pytest.fixture(scope="module")
def vq_run(runs_dir):
    """The finished VQ-VAE run (the resume test finishes it; alone, this does)."""
    root, argv = runs_dir
    if not (root / "vq" / "model.keras").is_file():
        assert cli.main(["train", *argv]) == 0
    return root / "vq"


@pytest.fixture(scope="module")
def prior_run(vq_run):
    root = vq_run.parent
    argv = [*PRIOR_OPTIONS, "--vqvae-run", str(root / "vq"), "--output", str(root / "prior")]
    assert cli.main(["train", *argv]) == 0
    return root / "prior"


def test_prior_run_takes_the_vqvae_data_and_bounds_log_px(prior_run, capsys):
    capsys.readouterr()
    config = TrainConfig.from_file(prior_run / "config.json")
    vq_config = TrainConfig.from_file(prior_run.parent / "vq" / "config.json")
    assert (config.dataset, config.eval_split, config.likelihood) == (
        vq_config.dataset, "validation", "bernoulli")  # fmt: skip
    assert cli.main(["evaluate", str(prior_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    prior, _ = runs.load_run(prior_run)
    assert isinstance(prior, CodePrior)
    x = training.load_split(config, "validation")
    codes = prior.vqvae.encode(x).numpy()
    logits = prior.network(codes).numpy().astype(np.float64)
    log_softmax = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    code_nll = -np.take_along_axis(log_softmax, codes[..., None], -1).sum(axis=(1, 2, 3))
    assert result["code_nll"] == pytest.approx(code_nll.mean(), rel=1e-4)
    assert result["bound"] == pytest.approx(result["code_nll"] + result["reconstruction"], 1e-6)
    assert result["bits_per_dim"] == pytest.approx(result["bound"] / (144 * np.log(2)), 1e-6)
    assert result["uniform_code_nll"] == pytest.approx(9 * np.log(8))
    metrics = json.loads((prior_run / "metrics.json").read_text())
    assert metrics["validation_bits_per_dim"] == pytest.approx(
        metrics["validation_bound"] / (144 * np.log(2)))  # fmt: skip


def test_plots_of_both_runs(prior_run, tmp_path, capsys):
    root = prior_run.parent
    for run, kind in (("vq", "reconstructions"), ("vq", "codebook"), ("prior", "samples")):
        path = tmp_path / f"{run}_{kind}.png"
        assert cli.main(["plot", str(root / run), "--kind", kind, "--num", "4",
                         "--output", str(path)]) == 0  # fmt: skip
        assert path.stat().st_size > 1000
    capsys.readouterr()
    assert cli.main(["plot", str(root / "vq"), "--kind", "samples", "--output",
                     str(tmp_path / "x.png")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--kind samples is not drawn for a vqvae run" in err and len(err.splitlines()) == 1


def test_export_of_a_prior_run_serves_the_keras_codes(prior_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert cli.main(["export", str(prior_run), "--output", str(out)]) == 0
    for part in ("encoder", "decoder", "prior"):
        assert (out / part / "1" / "saved_model.pb").is_file()
        assert (out / f"{part}.tflite").is_file()
    prior, config = runs.load_run(prior_run)
    x = training.load_split(config, "validation")
    served = tf.saved_model.load(str(out / "encoder" / "1")).signatures["serving_default"]
    np.testing.assert_array_equal(served(x=tf.constant(x))["codes"].numpy(),
                                  prior.vqvae.encode(x).numpy())  # fmt: skip
    spec = importlib.util.spec_from_file_location(
        "make_examples", REPO / "export" / "make_examples.py"
    )
    examples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(examples)  # REST bodies of export/client.py, run in-process
    assert examples.is_vq_export(out)
    examples.write_vq_examples(out, x[:1], tmp_path / "examples")

    def read(name):
        return json.loads((tmp_path / "examples" / f"{name}.response.json").read_text())

    codes = prior.vqvae.encode(x[:1]).numpy()
    np.testing.assert_array_equal(read("vq_encode")["predictions"][0]["codes"], codes[0])
    assert read("vq_log_prob")["predictions"][0]["log_prob"] == pytest.approx(
        float(prior.log_prob(codes)[0]), abs=1e-4)  # fmt: skip
    sampled = np.asarray(read("vq_sample")["outputs"]["codes"])
    assert sampled.shape == (1, 3, 3) and 0 <= sampled.min() and sampled.max() < 8
    capsys.readouterr()
    assert cli.main(["export", str(prior_run), "--output", str(out), "--version", "2",
                     "--quantize", "float16"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--quantize float16 does not apply to a vqvae-prior run; it writes none and int8" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "vqvae", "--latent-dim", "3"], "latent_dim=3 applies only to model='vae'"),
        (["--codebook-size", "8"], "codebook_size=8 applies only to model='vqvae', not to "
                                   "model='vae'"),
        (["--model", "vqvae", "--pixelcnn-layers", "2"], "applies only to model='vqvae-prior'"),
        (["--model", "vqvae-prior"], "needs vqvae_run"),
        (["--model", "vqvae", "--codebook-update", "sgd"], "codebook_update must be one of"),
        (["--model", "vqvae", "--restart-threshold", "1"], "restart_threshold must be in [0, 1)"),
        (["--model", "vqvae-prior", "--vqvae-run", "r", "--activation", "relu"],
         "activation='relu' applies only to model='hvae' or 'vae' or 'vqvae', not to "
         "model='vqvae-prior'"),
        (["--model", "vqvae-prior", "--vqvae-run", "/nonexistent"], "not a keras_vae run"),
    ],
)  # fmt: skip
def test_options_of_another_model_are_refused_in_one_line(argv, message, tmp_path, capsys):
    assert cli.main(["train", *argv, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_prior_refuses_other_data_and_a_vae_run(vq_run, tmp_path, capsys):
    argv = [*PRIOR_OPTIONS, "--vqvae-run", str(vq_run), "--dataset", "mnist",
            "--output", str(tmp_path / "p")]  # fmt: skip
    assert cli.main(["train", *argv]) == 2
    assert "differs from the VQ-VAE run's dataset" in capsys.readouterr().err
    fake = tmp_path / "vae"
    fake.mkdir()
    (fake / "model.keras").write_bytes(b"")
    (fake / "config.json").write_text(TrainConfig().to_json())
    argv = [*PRIOR_OPTIONS, "--vqvae-run", str(fake), "--output", str(tmp_path / "q")]
    assert cli.main(["train", *argv]) == 2
    assert "holds a model='vae' run" in capsys.readouterr().err


def test_an_old_config_without_model_is_a_vae():
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "model"}
    assert TrainConfig.from_dict(old).model == "vae"


def test_a_stream_evaluates_like_the_array_of_its_images_a_batch_at_a_time():
    model = vqvae((12, 12, 1), 8, 3, filters=[4, 6], seed=1)  # (the prior reads the same way)
    x = _blocks(1100)[..., None]
    reads: list[int] = []
    stream = data.ArrayStream(RowCountingArray(x, reads), "blocks")
    del reads[:]  # (its first examples, read when it opened)
    kind = registry.get("model", "vqvae")()
    streamed, line = kind.evaluate(model, stream)
    assert max(reads) == 500  # a batch at a time, never the split
    assert (streamed, line) == kind.evaluate(model, x)  # the same numbers from the array
    assert streamed["num_examples"] == 1100
