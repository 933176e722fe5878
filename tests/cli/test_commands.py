"""The `keras-vae` command end to end on the real binarized MNIST, and its error messages."""

import csv
import gzip
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from helpers import SHARED, TFDS_DIR

from keras_vae.cli import commands as cli
from keras_vae.data import pipeline as data
from keras_vae.runs import directory as runs
from keras_vae.runs.config import TrainConfig
from keras_vae.workflows import train as training

pytestmark = pytest.mark.skipif(not TFDS_DIR.is_dir(), reason=f"no offline data at {TFDS_DIR}")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A short real training: 2 epochs over 10,000 binarized MNIST images."""
    run_dir = tmp_path_factory.mktemp("runs") / "mnist"
    status = cli.main(
        [
            "train", "--dataset", "binarized_mnist", "--data-dir", str(TFDS_DIR),
            "--limit", "10000", "--epochs", "2", "--batch-size", "100", "--latent-dim", "20",
            "--seed", "3", "--quiet", "--output", str(run_dir),
        ]
    )  # fmt: skip
    assert status == 0
    return run_dir


@pytest.mark.slow
def test_short_training_on_real_data_improves_the_test_elbo_by_a_wide_margin(trained_run):
    model, config = runs.load_run(trained_run)
    test_images = training.load_split(config, "test", "bernoulli")
    trained = training.evaluate_elbo(model, test_images)
    untrained = training.build_model(config, (28, 28, 1), "bernoulli")
    before = training.evaluate_elbo(untrained, test_images)
    # an untrained model scores about -545 nats (784 pixels near log 1/2 each, plus KL)
    assert before["elbo"] < -400
    assert trained["elbo"] > -200
    assert trained["elbo"] - before["elbo"] > 200

    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test_elbo"] == pytest.approx(trained["elbo"], abs=1.0)  # noise of L=1
    assert metrics["unit"] == "nats per example"
    with open(trained_run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert float(rows[1]["elbo"]) > float(rows[0]["elbo"])
    assert list((trained_run / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((trained_run / "tensorboard" / "images").glob("events.out.tfevents.*"))
    assert (trained_run / "images" / "samples_epoch002.png").stat().st_size > 0
    saved = json.loads((trained_run / "config.json").read_text())
    assert saved["likelihood"] == "bernoulli" and saved["epochs"] == 2


@pytest.mark.slow
def test_evaluate_prints_json_metrics_and_writes_them(trained_run, capsys):
    argv = ["evaluate", str(trained_run), "--json", "--limit", "500", "--importance-samples", "100"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["split"] == "test" and result["num_examples"] == 500
    assert result["importance_samples"] == 100
    assert -200 < result["elbo"] < -100
    # on a trained model the K=100 estimate of -log p(x) is below the negative ELBO
    assert result["nll"] < -result["elbo"]
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (784 * np.log(2)))
    assert 0 < result["active_units"] <= 20
    assert json.loads((trained_run / "eval_test.json").read_text()) == result


@pytest.mark.slow
def test_existing_run_is_not_overwritten_without_flag(trained_run, capsys):
    before = (trained_run / "model.keras").read_bytes()
    status = cli.main(["train", "--data-dir", str(TFDS_DIR), "--output", str(trained_run)])
    assert status == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (trained_run / "model.keras").read_bytes() == before


def test_unknown_option_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--latent-size", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --latent-size 3" in err and "--latent-dim" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--latent-dim", "0"], "latent_dim must be a positive int"),
        (["train", "--batch-size", "-5"], "batch_size must be a positive int"),
        (["train", "--strategy", "tpu"], "strategy must be one of"),
        (["train", "--dataset", "cifar99"], "Unknown dataset"),
        (["evaluate", "/nonexistent/run"], "not a keras_vae run directory"),
        (["train", "--prior", "gamma"], "prior must be one of ['standard', 'mixture', 'vamp']"),
        (["train", "--gradient-estimator", "dreg"], "applies only to objective='iwae'"),
        (["train", "--objective", "iwae", "--free-bits", "0.5"], "free_bits=0.5 applies only"),
        (["train", "--likelihood", "bernoulli", "--likelihood-components", "3"], "has none"),
        (["train", "--dataset", "a.npz", "--validation-split", "1.5"], "fraction in (0, 1)"),
        (["train", "--eval-data", "b.npz"], "eval_data applies to array-file data sets"),
        (["train", "--dataset", "missing.npy"], "Array file not found: 'missing.npy'"),
        (["train", "--conv-filters", "8", "16"], "conv_filters=[8, 16] applies only to network="),
        (["train", "--network", "conv", "--conv-kernel-size", "0"], "conv_kernel_size must be"),
        (["train", "--network", "conv", "--conv-filters", "8", "0"], "conv_filters must be a"),
        (["train", "--tc-weight", "3"], "tc_weight=3.0 applies only to objective='betatc' or"),
        (
            ["train", "--objective", "betatc", "--discriminator-units", "8"],
            "applies only to objective='factorvae'",
        ),
        (["train", "--objective", "betatc", "--tc-estimator", "mss"], "tc_estimator must be"),
    ],
)
def test_user_errors_are_one_line_without_traceback(argv, message, capsys, tmp_path):
    argv = [*argv, "--output", str(tmp_path / "run")] if argv[0] == "train" else argv
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_config_file_then_command_line_precedence(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"latent_dim": 7, "epochs": 3}))
    parser, _ = cli.build_parser()
    args = parser.parse_args(["train", "--config", str(path), "--epochs", "5"])
    config = cli.config_from_args(args)
    assert (config.latent_dim, config.epochs) == (7, 5)
    assert config.batch_size == TrainConfig().batch_size


def test_config_file_with_unknown_key_is_refused(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("latent_dim: 7\nlatent_size: 3\n")
    assert cli.main(["train", "--config", str(path), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown keys ['latent_size']" in err and "latent_dim" in err


MIRRORED_MLP = [
    "train", "--latent-dim", "2", "--hidden-units", "8", "--epochs", "3", "--batch-size", "21",
    "--quiet", "--eval-split", "train", "--image-every", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    """Both CLI trainings under MirroredStrategy on 2 logical CPUs, in one fresh process (the
    devices must be set up before TensorFlow starts; its start is the costly part): an MLP
    VAE on 64 random 4x4 images (`mlp`), and a conv VAE on Frey Face-sized images (`conv`).
    The two runs share one strategy object: a second MirroredStrategy in the same process
    reuses the first one's collective instance keys, and its steps fail."""
    root = tmp_path_factory.mktemp("mirrored")
    rng = np.random.default_rng(1)
    np.save(root / "toy.npy", (rng.uniform(size=(64, 4, 4, 1)) > 0.5).astype("float32"))
    npz = _noisy_template_npz(root / "frey_sized.npz", (28, 20))
    replicas = ["--strategy", "mirrored", "--cpu-replicas", "2"]
    argvs = {
        "mlp": [*MIRRORED_MLP, "--dataset", str(root / "toy.npy"), *replicas, "--output",
                str(root / "mlp")],
        "conv": _conv_argv(npz, root / "conv", "--likelihood", "gaussian", "--conv-filters",
                           "4", "8", "8", "--conv-kernel-size", "5", *replicas),
    }  # fmt: skip
    script = textwrap.dedent(
        """
        import functools, json, sys
        from keras_vae.cli import commands as cli
        from keras_vae.engine import distribute
        distribute.get_strategy = functools.cache(distribute.get_strategy)
        print("RESULT " + json.dumps([cli.main(argv) for argv in json.loads(sys.argv[1])]))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, json.dumps(list(argvs.values()))],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines and json.loads(lines[-1][7:]) == [0, 0], completed.stderr[-3000:]
    return {"root": root, "mlp": root / "mlp", "conv": root / "conv"}


def test_train_under_mirrored_strategy_equals_one_device(mirrored_runs, tmp_path):
    # the reference: one device without XLA (see test_distribute), in this process
    single_dir = tmp_path / "single"
    argv = [*MIRRORED_MLP, "--dataset", str(mirrored_runs["root"] / "toy.npy"), "--strategy",
            "default", "--no-xla", "--output", str(single_dir)]  # fmt: skip
    assert cli.main(argv) == 0
    metrics = json.loads((mirrored_runs["mlp"] / "metrics.json").read_text())
    # XLA under the strategy: the replica's math is compiled (keras_vae.distribute)
    assert metrics["replicas"] == 2 and metrics["xla"] == "replica"
    assert metrics["strategy"] == "MirroredStrategy"
    reference = json.loads((single_dir / "metrics.json").read_text())
    for key in ("train_elbo", "eval_elbo"):  # eval split "train": `eval_` keys
        assert metrics[key] == pytest.approx(reference[key], rel=1e-5), key
    # the same shuffled batches, noise and Adam steps: the same weights
    mirrored, _ = runs.load_run(mirrored_runs["mlp"])
    single, _ = runs.load_run(single_dir)
    for a, b in zip(mirrored.get_weights(), single.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_multiworker_without_tf_config_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    np.save(tmp_path / "toy.npy", np.zeros((8, 2, 2, 1), "float32"))
    argv = ["train", "--dataset", str(tmp_path / "toy.npy"), "--strategy", "multiworker"]
    assert cli.main([*argv, "--output", str(tmp_path / "run")]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "TF_CONFIG" in message and '"cluster"' in message
    assert not (tmp_path / "run").exists()


# --- the model's parts from the command line, trained and evaluated -----------------------

MNIST_TEST_IMAGES = SHARED / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
BINARIZED_MNIST = ("--dataset", "binarized_mnist", "--data-dir", str(TFDS_DIR))
STEPS = 3  # per epoch


def _train_and_evaluate(run_dir, capsys, *options, data=BINARIZED_MNIST, split="test[:300]"):
    """2 epochs of 3 steps of a tiny model, then `keras-vae evaluate` on 100 examples."""
    argv = [
        "train", *data, "--limit", "500", "--epochs", "2", "--steps-per-epoch", str(STEPS),
        "--batch-size", "50", "--latent-dim", "2", "--hidden-units", "16", "--image-every", "0",
        "--eval-split", split, "--seed", "5", "--quiet", *options, "--output", str(run_dir),
    ]  # fmt: skip
    if "--xla" not in options:
        argv.insert(1, "--no-xla")  # compiling costs more than these few steps
    assert cli.main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["examples_seen"] == 2 * STEPS * 50 and metrics["eval_split"] == split
    for key in ("train_elbo", "eval_elbo", "train_kl", "eval_reconstruction"):
        assert np.isfinite(metrics[key]), key
    capsys.readouterr()
    evaluate = ["evaluate", str(run_dir), "--split", split.split("[")[0], "--limit", "100"]
    assert cli.main([*evaluate, "--importance-samples", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_examples"] == 100 and np.isfinite(result["elbo"])
    # log of the mean of the importance weights >= the mean of their logs (Jensen), up to the
    # noise of the closed-form KL's stand-in
    assert result["nll"] <= -result["elbo"] + 1.0
    model, config = runs.load_run(run_dir)
    return model, config, metrics, result


def test_vamp_prior_from_the_command_line(tmp_path, capsys):
    options = ("--prior", "vamp", "--prior-components", "8")
    model, config, metrics, _ = _train_and_evaluate(tmp_path / "run", capsys, *options)
    assert (config.prior, config.prior_components, metrics["prior"]) == ("vamp", 8, "vamp")
    assert type(model.prior).registered_name == "vamp"
    pseudo_inputs = np.array(model.prior.pseudo_inputs)
    assert pseudo_inputs.shape == (8, 28, 28, 1)
    # started from binarized digits (then a few small steps), not from N(0.05, 0.01) noise
    assert pseudo_inputs.max() > 0.9 and (np.abs(pseudo_inputs) < 0.1).mean() > 0.5


def test_kl_warmup_and_free_bits_from_the_command_line(tmp_path, capsys):
    options = ("--kl-warmup-epochs", "2", "--free-bits", "0.25")
    model, config, _, _ = _train_and_evaluate(tmp_path / "run", capsys, *options)
    assert (config.kl_warmup_epochs, config.free_bits) == (2, 0.25)
    objective = model.objective.get_config()
    assert objective["warmup_steps"] == 2 * STEPS  # epochs converted to optimizer steps
    assert objective["free_bits"] == 0.25 and objective["cycle_steps"] == 0
    # while the KL weight is below 1 the loss is not the negative ELBO
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert float(rows[0]["loss"]) != pytest.approx(-float(rows[0]["elbo"]), abs=1e-3)


@pytest.fixture(scope="module")
def grey_mnist_npz(tmp_path_factory):
    """600 real MNIST test digits as 8-bit grey levels (uint8: read as k/255)."""
    if not MNIST_TEST_IMAGES.is_file():
        pytest.skip(f"{MNIST_TEST_IMAGES} not found")
    with gzip.open(MNIST_TEST_IMAGES) as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    path = tmp_path_factory.mktemp("grey") / "mnist_grey.npz"
    np.savez(path, x=images[:600])
    return path


def test_logistic_likelihood_on_8_bit_grey_digits(tmp_path, capsys, grey_mnist_npz):
    options = ("--likelihood", "logistic", "--likelihood-components", "3")
    data = ("--dataset", str(grey_mnist_npz))
    model, config, metrics, result = _train_and_evaluate(
        tmp_path / "run", capsys, *options, data=data, split="train"
    )
    assert (config.likelihood, config.likelihood_components) == ("logistic", 3)
    assert metrics["likelihood"] == "logistic" and "eval_elbo" in metrics
    assert type(model.likelihood).registered_name == "logistic"
    assert model.likelihood.num_components == 3
    # a code length for 8-bit pixels: below the 8 bits of a uniform guess, above 0
    assert 0 < result["bits_per_dim"] < 8


@pytest.mark.long  # 20 s; in CI: these parts train in tests/parts and tests/models, and the
# options that name them round-trip through the run config in tests/runs/test_config.py
def test_several_parts_at_once_with_xla(tmp_path, capsys):
    options = (
        "--posterior", "full", "--prior", "mixture", "--prior-components", "4", "--objective",
        "iwae", "--samples", "2", "--gradient-estimator", "dreg", "--xla",
    )  # fmt: skip
    model, config, metrics, _ = _train_and_evaluate(tmp_path / "run", capsys, *options)
    assert metrics["xla"] == "step"
    assert [type(getattr(model, part)).registered_name for part in ("posterior", "prior")] == [
        "full",
        "mixture",
    ]
    assert model.prior.num_components == 4
    assert (config.objective, config.samples, config.gradient_estimator) == ("iwae", 2, "dreg")
    assert model.objective.get_config() == {"num_samples": 2, "gradient": "dreg"}
    for prefix in ("train", "eval"):  # the same K samples: the bound is above their ELBO
        assert metrics[f"{prefix}_iwae"] > metrics[f"{prefix}_elbo"] - 0.5
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert "iwae" in history and "val_iwae" in history
    # the posterior's Cholesky factor: lower triangular, with a learned off-diagonal
    images = training.load_split(config, "test", "bernoulli")[:4]
    scale_tril = np.array(model.encode_parameters(images)["scale_tril"])
    assert scale_tril.shape == (4, 2, 2) and np.all(np.abs(scale_tril[:, 1, 0]) > 0)
    np.testing.assert_array_equal(scale_tril[:, 0, 1], 0.0)
    # another command into the finished run is refused, naming what differs
    argv = ["train", *BINARIZED_MNIST, "--prior", "mixture", "--output", str(tmp_path / "run")]
    assert cli.main(argv) == 2
    assert "differs in:" in capsys.readouterr().err


def test_a_batch_failing_the_streamed_checks_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    images = np.random.default_rng(0).random((1200, 2, 2)).astype(np.float32)
    images[1100, 0, 0] = np.inf  # beyond the first examples that a stream checks up front

    def train_on_a_bad_stream(config, **kwargs):
        stream = data.ArrayStream(images, "toy.npy train", checked=False)
        list(stream.dataset(batch_size=100, likelihood="gaussian"))

    monkeypatch.setattr(training, "train", train_on_a_bad_stream)
    assert cli.main(["train", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-vae train: error: a batch of toy.npy train has 1 Inf value(s)")
    assert "\n" not in err and "Traceback" not in err


def test_array_file_with_an_eval_file_and_a_validation_part(tmp_path, capsys):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "train.npy", rng.uniform(size=(60, 3, 3)).astype("float32"))
    np.save(tmp_path / "test.npy", rng.uniform(size=(20, 3, 3)).astype("float32"))
    run_dir = tmp_path / "run"
    argv = [
        "--no-xla", "--dataset", str(tmp_path / "train.npy"), "--eval-data",
        str(tmp_path / "test.npy"), "--validation-split", "0.25", "--eval-split", "validation",
        "--latent-dim", "2", "--hidden-units", "4", "--epochs", "1", "--batch-size", "15",
        "--image-every", "0", "--quiet", "--output", str(run_dir),
    ]  # fmt: skip
    assert cli.main(["train", *argv]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "train.npy train (45 images 3x3x1, in memory), evaluating on validation (15)" in first
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["examples_seen"] == 45 and "validation_elbo" in metrics
    assert cli.main(["evaluate", str(run_dir), "--split", "test", "--importance-samples", "5",
                     "--json"]) == 0  # fmt: skip
    captured = capsys.readouterr()  # the JSON alone on stdout, the progress on stderr
    assert json.loads(captured.out.strip())["num_examples"] == 20
    assert "20/20 examples" in captured.err and "left" in captured.err
    # off a terminal (captured here) evaluate still reports progress and the time left
    assert cli.main(["evaluate", str(run_dir), "--split", "test", "--importance-samples", "5"]) == 0
    out = capsys.readouterr().out
    assert "20/20 examples" in out and "left" in out and "NLL" in out


# --- convolutional networks (--network conv) end to end -----------------------------------


def _noisy_template_npz(path, shape, count=120, seed=0):
    """`count` 8-bit images [count, *shape]: noisy copies of one random template."""
    rng = np.random.default_rng(seed)
    noisy = rng.random(shape) + 0.1 * rng.normal(size=(count, *shape))
    np.savez(path, x=np.round(np.clip(noisy, 0.0, 1.0) * 255).astype("uint8"))
    return path


def _conv_argv(npz, run_dir, *options):
    return [
        "train", "--dataset", str(npz), "--network", "conv", "--hidden-units", "16",
        "--activation", "relu", "--latent-dim", "3", "--epochs", "2", "--steps-per-epoch", "3",
        "--batch-size", "20", "--image-every", "0", "--seed", "4", "--quiet", *options,
        "--output", str(run_dir),
    ]  # fmt: skip


def _evaluate_plot_and_export(run_dir, tmp_path, capsys):
    """`keras-vae evaluate`, `plot` and `export` (float TFLite; a conv VAE's int8 export is
    tests/parts/test_networks.py's) of a conv run; the exported decoder SavedModel against the
    Keras model, loaded with TensorFlow alone."""
    import tensorflow as tf

    capsys.readouterr()
    assert cli.main(["evaluate", str(run_dir), "--limit", "10", "--importance-samples", "10",
                     "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(result["elbo"]) and result["nll"] <= -result["elbo"] + 1.0
    for kind in ("samples", "reconstructions"):
        assert cli.main(["plot", str(run_dir), "--kind", kind, "--output",
                         str(tmp_path / f"{kind}.png")]) == 0  # fmt: skip
        assert (tmp_path / f"{kind}.png").stat().st_size > 0
    output = tmp_path / "export"
    assert cli.main(["export", str(run_dir), "--output", str(output), "--quantize", "none",
                     "--no-scorer"]) == 0  # fmt: skip
    report = json.loads((output / "export_report.json").read_text())
    written = {(a["part"], a["kind"], a["quantization"]) for a in report["artefacts"]}
    for part in ("encoder", "decoder"):
        for kind in ("saved_model", "tflite"):
            assert (part, kind, "none") in written
    for artefact in report["artefacts"]:  # the self-checks ran and passed
        assert artefact["checked_error"] <= artefact["bound"], artefact["path"]
    model, _ = runs.load_run(run_dir)
    z = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
    decoder = tf.saved_model.load(str(output / "decoder" / "1"))
    mean = decoder.signatures["serving_default"](z=tf.constant(z))["mean"].numpy()
    np.testing.assert_allclose(mean, model.decode(z).mean().numpy(), atol=1e-5)
    return model, result


@pytest.mark.long  # 33 s; in CI: the colour logistic conv VAE's export and self-checks
# (tests/parts/test_networks.py), a conv run under the CLI (the mirrored Frey-sized one below)
def test_conv_vae_on_colour_images_resumes_evaluates_plots_and_exports(tmp_path, capsys):
    """16x16x3, the discretised logistic, XLA: a run killed after its first epoch resumes with
    its conv settings, and a rerun with other filters is refused."""
    npz = _noisy_template_npz(tmp_path / "colour.npz", (16, 16, 3))
    run_dir = tmp_path / "run"
    argv = _conv_argv(npz, run_dir, "--likelihood", "logistic", "--conv-filters", "8", "16")

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # after the first epoch's backup, before the second's
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(cli.train_config(argv[1:]), run_dir, verbose=0, callbacks=[Crash()])
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["network"], saved["conv_filters"], saved["conv_kernel_size"]) == (
        "conv", [8, 16], 3,
    )  # fmt: skip
    assert cli.main([*argv[:-2], "--conv-filters", "8", "32", "--output", str(run_dir)]) == 2
    assert "differs in: conv_filters" in capsys.readouterr().err
    assert cli.main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 1 and metrics["epochs"] == 2
    assert metrics["xla"] == "step" and metrics["likelihood"] == "logistic"
    model, _ = _evaluate_plot_and_export(run_dir, tmp_path, capsys)
    assert model.encoder.filters == (8, 16) and model.decoder.filters == (16, 8)
    assert model.decoder.output_size == (16, 16) and model.likelihood.spatial


def test_conv_vae_on_frey_sized_images_under_mirrored_strategy(mirrored_runs, tmp_path, capsys):
    """28x20x1 (Frey Face's size) with the Gaussian likelihood, 3 levels of 5x5 kernels, on 2
    logical CPU replicas with the replica's math under XLA (`mirrored_runs`)."""
    run_dir = mirrored_runs["conv"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["replicas"], metrics["xla"]) == (2, "replica")
    assert np.isfinite(metrics["train_elbo"]) and np.isfinite(metrics["validation_elbo"])
    model, _ = _evaluate_plot_and_export(run_dir, tmp_path, capsys)
    assert model.image_shape == (28, 20, 1) and model.decoder.base_size == (4, 3)
    assert model.encoder.conv_layers[0].kernel.shape == (5, 5, 1, 4)


def test_too_many_conv_levels_for_the_images_is_a_one_line_error(tmp_path, capsys):
    np.save(tmp_path / "small.npy", np.zeros((16, 6, 5), "float32"))
    argv = _conv_argv(tmp_path / "small.npy", tmp_path / "run", "--conv-filters", "4", "4", "4",
                      "4")  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "6x5 images allow at most 3 stride-2 conv levels" in err and "\n" not in err
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [("--early-stopping", "--early-stopping-patience", "early_stopping"),
     ("--prior-layers", "--pixelcnn-layers", "prior_layers")],
)  # fmt: skip
def test_an_old_spelling_still_works_with_a_one_line_note(old, new, key, capsys):
    kind = ["--model", "vqvae-prior", "--vqvae-run", "r"] if key == "prior_layers" else []
    assert getattr(cli.train_config([*kind, new, "3"]), key) == 3
    assert capsys.readouterr().err == ""
    assert getattr(cli.train_config([*kind, old, "3"]), key) == 3
    assert capsys.readouterr().err.strip() == f"keras-vae: note: {old} is now {new}"


def test_train_help_shows_groups_defaults_and_registered_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for group in ("data:", "model kind and parts:", "objective:", "optimisation:", "vqvae:"):
        assert group in text
    assert "--learning-rate X Adam step size (default: 0.001)" in text
    assert "p(z): standard, mixture, vamp (default: standard)" in text
    # the disentangling objectives' options, in the objective group, with their defaults
    objective_group = text.split("objective:", 1)[1].split("network:", 1)[0]
    for option in ("--tc-weight", "--tc-estimator", "--capacity", "--capacity-epochs",
                   "--capacity-weight", "--discriminator-units",
                   "--discriminator-learning-rate"):  # fmt: skip
        assert option in objective_group, option
    assert "mws, importance (mws inflates the reported tc) (default: importance)" in text
    from keras_vae import BetaTC, FactorVAE

    # the help's stated defaults are the classes' own
    weights = f"(default: {BetaTC().beta:g} betatc, {FactorVAE().gamma:g} factorvae)"
    assert weights in text


def test_no_arguments_print_the_overview_and_version(capsys):
    import keras_vae

    assert cli.main([]) == 0
    assert f"version {keras_vae.__version__}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"keras-vae {keras_vae.__version__}"


def test_default_run_directory_of_a_tfds_name_with_its_config():
    from pathlib import Path

    small = TrainConfig(dataset="synthetic_dsprites/small")
    assert cli._default_output(small) == Path("runs") / "synthetic_dsprites_small"
    assert cli._default_output(TrainConfig(dataset="data/faces.npz")) == Path("runs") / "faces"
