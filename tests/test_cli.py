"""The `keras-vae` command end to end on the real binarized MNIST, and its error messages."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_vae import cli, runs, training
from keras_vae.config import TrainConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TFDS_DIR = SHARED / "tensorflow_datasets"
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
    parser, _ = cli._build_parser()
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


def test_array_file_dataset_trains_from_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "toy.npz", x=(rng.uniform(size=(64, 4, 4)) > 0.5).astype("uint8"))
    run_dir = tmp_path / "run"
    argv = [
        "train", "--dataset", str(tmp_path / "toy.npz"), "--latent-dim", "2",
        "--hidden-units", "8", "--epochs", "1", "--batch-size", "16", "--quiet",
        "--output", str(run_dir), "--eval-split", "train",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    model, config = runs.load_run(run_dir)
    assert model.image_shape == (4, 4, 1) and config.likelihood == "bernoulli"


def test_train_under_mirrored_strategy_equals_one_device(tmp_path):
    # logical devices must be configured before TensorFlow starts: fresh processes
    rng = np.random.default_rng(1)
    np.save(tmp_path / "toy.npy", (rng.uniform(size=(64, 4, 4, 1)) > 0.5).astype("float32"))
    base = [
        "train", "--dataset", str(tmp_path / "toy.npy"), "--latent-dim", "2",
        "--hidden-units", "8", "--epochs", "3", "--batch-size", "21", "--quiet",
        "--eval-split", "train", "--image-every", "0",
    ]  # fmt: skip
    runs_dirs = {}
    for name, options in {
        "mirrored": ["--strategy", "mirrored", "--cpu-replicas", "2"],
        "single": ["--strategy", "default", "--no-xla"],  # reference, see test_distribute
    }.items():
        runs_dirs[name] = tmp_path / name
        command = [*base, *options, "--output", str(runs_dirs[name])]
        completed = subprocess.run(
            [sys.executable, "-m", "keras_vae.cli", *command],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-3000:]
    metrics = json.loads((runs_dirs["mirrored"] / "metrics.json").read_text())
    # XLA under the strategy: the replica's math is compiled (keras_vae.distribute)
    assert metrics["replicas"] == 2 and metrics["xla"] == "replica"
    assert metrics["strategy"] == "MirroredStrategy"
    reference = json.loads((runs_dirs["single"] / "metrics.json").read_text())
    for key in ("train_elbo", "eval_elbo"):  # eval split "train": `eval_` keys
        assert metrics[key] == pytest.approx(reference[key], rel=1e-5), key
    # the same shuffled batches, noise and Adam steps: the same weights
    mirrored, _ = runs.load_run(runs_dirs["mirrored"])
    single, _ = runs.load_run(runs_dirs["single"])
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
