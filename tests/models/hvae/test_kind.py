"""keras_vae.models.hvae.kind through the CLI: the hierarchical VAE trains, resumes,
evaluates, samples, encodes and plots with no change to the workflows; export is refused in
one line. Values are checked against the run's own model."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_vae.cli import commands as cli
from keras_vae.models.hvae import HierarchicalVAE
from keras_vae.models.hvae.layers import GatedDense
from keras_vae.runs import directory as runs
from keras_vae.runs.config import TrainConfig
from keras_vae.workflows import train

RNG = np.random.default_rng(11)
PROTOTYPES = RNG.uniform(size=(3, 6, 6)) > 0.5
# float32 in {0, 1} (uint8 files are grey levels 0..255, scaled by 1/255)
X = (PROTOTYPES[RNG.integers(0, 3, 120)] ^ (RNG.uniform(size=(120, 6, 6)) < 0.05)).astype("float32")
ARGS = ["--model", "hvae", "--latent-dims", "4", "2", "--hidden-units", "16", "--eval-split",
        "train", "--batch-size", "40", "--image-every", "1", "--activation", "elu"]  # fmt: skip


class _KillInSecondEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hvae")
    np.savez(root / "toy.npz", x=X)
    argv = ["--dataset", str(root / "toy.npz"), *ARGS, "--epochs", "2", "--output",
            str(root / "run")]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 2, after the backup of epoch 1
        train.train(cli.train_config(argv), root / "run", verbose=0,
                    callbacks=[_KillInSecondEpoch()], progress=lambda line: None)  # fmt: skip
    assert cli.main(["train", *argv]) == 0  # the same command resumes
    return root


def test_trains_resumes_and_records_each_layer(run):
    metrics = json.loads((run / "run" / runs.METRICS_FILE).read_text())
    assert (metrics["resumed_from_epoch"], metrics["epochs"]) == (1, 2)
    assert metrics["model_kind"] == "hvae" and metrics["latent_dims"] == [4, 2]
    assert {"train_kl_1", "train_kl_2"} <= set(metrics)
    assert (run / "run" / "images" / "samples_epoch002.png").exists()
    model = runs.load_model(run / "run" / runs.MODEL_FILE)
    assert isinstance(model, HierarchicalVAE) and model.num_layers == 2


def test_evaluate_sample_encode_plot_and_a_refused_export(run, tmp_path, capsys):
    run_dir = str(run / "run")
    assert cli.main(["evaluate", run_dir, "--importance-samples", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_examples"] == 120 and len(result["kl_layers"]) == 2
    assert result["nll"] <= -result["elbo"] + 1e-3  # the importance-sampled bound is tighter
    model = runs.load_model(run / "run" / runs.MODEL_FILE)
    assert cli.main(["sample", run_dir, "--num", "3", "--seed", "1",
                     "--output", str(tmp_path / "s.npy")]) == 0  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), model.sample(3, seed=1), atol=1e-6)
    assert cli.main(["encode", run_dir, str(run / "toy.npz"), "--output",
                     str(tmp_path / "z.npz")]) == 0  # fmt: skip
    found = np.load(tmp_path / "z.npz")
    x = X[..., None].astype("float32")
    for layer, q in enumerate(model.encode(x), 1):
        np.testing.assert_allclose(found[f"mean_{layer}"], q.mean(), atol=1e-5)
    assert cli.main(["plot", run_dir, "--kind", "resample", "--num", "4",
                     "--output", str(tmp_path / "r.png")]) == 0  # fmt: skip
    assert (tmp_path / "r.png").stat().st_size > 0
    capsys.readouterr()
    assert cli.main(["export", run_dir, "--output", str(tmp_path / "ex")]) == 2
    assert "export of a hierarchical VAE run is not available yet" in capsys.readouterr().err


def test_network_gated_mlp_builds_gated_blocks_and_conv_is_refused_in_one_line(
    toy_npz, tmp_path, capsys
):
    config = TrainConfig(model="hvae", latent_dims=[4, 2], hidden_units=[8], network="gated_mlp")
    model = train.build_model(config, (6, 6, 1), "bernoulli")
    blocks = [*model.bottom_up.blocks[0], *model.bottom_up.blocks[1],
              *model.cells[0].state_layers, *model.decoder.dense_layers]  # fmt: skip
    assert len(blocks) == 4 and all(isinstance(layer, GatedDense) for layer in blocks)
    plain = train.build_model(config.replace(network="mlp"), (6, 6, 1), "bernoulli")
    assert not any(isinstance(layer, GatedDense) for layer in plain.decoder.dense_layers)
    argv = ["train", "--model", "hvae", "--network", "conv", "--dataset", str(toy_npz),
            "--output", str(tmp_path / "run")]  # fmt: skip
    assert cli.main(argv) == 2
    # (the toy data's uint8 {0, 1} values get a warning line first)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line or "Traceback" in line]
    assert len(errors) == 1, err
    assert "--network conv is not a hierarchical VAE's" in errors[0]
    assert "--network mlp|gated_mlp" in errors[0]
    assert not (tmp_path / "run" / runs.CONFIG_FILE).exists()
