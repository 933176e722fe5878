"""keras_vae.models.hvae.kind through the CLI: the hierarchical VAE trains, resumes,
evaluates, samples, encodes, plots and exports with no change to the workflows. Values are
checked against the run's own model."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

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


def test_evaluate_sample_encode_and_plot(run, tmp_path, capsys):
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


def test_evaluate_precision_uses_the_run_weights_in_that_policy(run, capsys):
    run_dir = str(run / "run")
    argv = ["evaluate", run_dir, "--importance-samples", "8", "--limit", "40"]
    assert cli.main([*argv, "--json"]) == 0  # the run's own precision
    own = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cli.main([*argv, "--precision", "mixed_bfloat16"]) == 0
    assert "40 examples, precision mixed_bfloat16" in capsys.readouterr().out
    low = json.loads((run / "run" / "eval_train.json").read_text())
    assert (low["precision"], own["precision"]) == ("mixed_bfloat16", "float32")
    # the same weights and samples: the bounds move by bfloat16 rounding only (the ELBO of
    # 36 pixels and 6 latent units, about 20 nats; a rounding of 2^-9 of it is 0.04)
    assert low["elbo"] == pytest.approx(own["elbo"], abs=0.05)
    assert low["nll"] == pytest.approx(own["nll"], abs=0.05)
    assert low["kl_layers"] == pytest.approx(own["kl_layers"], abs=0.05)


def test_export_writes_checked_encoder_decoder_and_scorer(run, tmp_path, capsys):
    run_dir, output = str(run / "run"), tmp_path / "ex"
    # (the .tflite files are tested in test_export.py; here the kind's wiring)
    assert cli.main(["export", run_dir, "--output", str(output), "--importance-samples", "5",
                     "--no-tflite"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "scorer/1" in printed and "export_report.json" in printed
    report = json.loads((output / "export_report.json").read_text())
    assert [a["path"] for a in report["artefacts"]] == ["encoder/1", "decoder/1", "scorer/1"]
    assert report["artefacts"][2]["scorer_samples"] == 5
    assert report["check_images"]["count"] == 120  # the training split: all 120, no 256 more
    model = runs.load_model(run / "run" / runs.MODEL_FILE)
    x = X[:5, ..., None]
    encoder = tf.saved_model.load(str(output / "encoder" / "1")).signatures["serving_default"]
    served = encoder(x=tf.constant(x))
    for layer, q in enumerate(model.encode(x), 1):
        np.testing.assert_allclose(served[f"loc_{layer}"], q.mean(), atol=1e-5)
        np.testing.assert_allclose(served[f"scale_{layer}"], q.stddev(), atol=1e-5)
    decoder = tf.saved_model.load(str(output / "decoder" / "1")).signatures["serving_default"]
    latents = [served["loc_1"], served["loc_2"]]
    np.testing.assert_allclose(decoder(z_1=latents[0], z_2=latents[1])["mean"],
                               model.decode(latents).mean(), atol=1e-5)  # fmt: skip
    # an existing version is refused in one line and left as it was
    before = (output / "export_report.json").read_bytes()
    assert cli.main(["export", run_dir, "--output", str(output), "--no-tflite"]) != 0
    assert "version 1 already exists" in capsys.readouterr().err
    assert (output / "export_report.json").read_bytes() == before


def test_export_precision_writes_the_scorer_from_the_run_weights_in_that_policy(run, tmp_path):
    output = tmp_path / "ex"
    argv = ["export", str(run / "run"), "--importance-samples", "5", "--no-tflite"]
    assert cli.main([*argv, "--output", str(output), "--precision", "mixed_bfloat16"]) == 0
    report = json.loads((output / "export_report.json").read_text())
    assert report["model"]["scorer_precision"] == "mixed_bfloat16"
    assert report["artefacts"][2]["precision"] == "mixed_bfloat16"
    model = runs.load_model(run / "run" / runs.MODEL_FILE)
    scorer = tf.saved_model.load(str(output / "scorer" / "1")).signatures["score_with_noise"]
    x, eps = X[:8, ..., None], np.random.default_rng(0).standard_normal((4, 8, 6))
    got = scorer(x=tf.constant(x), eps=tf.constant(eps, tf.float32))
    from keras_vae.models.hvae.checks import keras_scores

    want = keras_scores(model, x, eps.astype(np.float32))  # the run's float32 model
    assert np.abs(np.asarray(got["elbo"]) - want["elbo"]).mean() < 0.05
    assert cli.main([*argv, "--output", str(tmp_path / "bad"), "--precision", "bfloat16"]) != 0
    assert not (tmp_path / "bad").exists()


def test_network_gated_mlp_builds_gated_blocks():
    config = TrainConfig(model="hvae", latent_dims=[4, 2], hidden_units=[8], network="gated_mlp")
    model = train.build_model(config, (6, 6, 1), "bernoulli")
    blocks = [*model.bottom_up.blocks[0], *model.bottom_up.blocks[1],
              *model.cells[0].state_layers, *model.decoder.dense_layers]  # fmt: skip
    assert len(blocks) == 4 and all(isinstance(layer, GatedDense) for layer in blocks)
    plain = train.build_model(config.replace(network="mlp"), (6, 6, 1), "bernoulli")
    assert not any(isinstance(layer, GatedDense) for layer in plain.decoder.dense_layers)


def test_network_conv_trains_evaluates_and_plots_colour_images_from_the_cli(tmp_path, capsys):
    colour = (RNG.uniform(size=(60, 8, 8, 3)) < 0.3).astype("float32")
    np.savez(tmp_path / "colour.npz", x=colour)
    run_dir = str(tmp_path / "run")
    argv = ["train", "--model", "hvae", "--network", "conv", "--dataset",
            str(tmp_path / "colour.npz"), "--latent-dims", "2", "3", "--conv-filters", "8",
            "--eval-split", "train", "--batch-size", "20", "--epochs", "1",
            "--image-every", "0", "--no-xla", "--output", run_dir]  # fmt: skip
    assert cli.main(argv) == 0  # (XLA on conv cells: test_model.py; export: test_export.py)
    assert "conv residual cells, 8 filters, 3x3 kernels" in capsys.readouterr().out
    model = runs.load_model(tmp_path / "run" / runs.MODEL_FILE)
    # z_1 two stride-2 levels below the 8x8 images, z_2 one more, with the asked channels
    assert [c.latent_shape for c in model.cells] == [(2, 2, 2)]
    assert [tuple(q.mean().shape[1:]) for q in model.encode(colour[:2])] == [(8,), (3,)]  # flat
    assert cli.main(["evaluate", run_dir, "--importance-samples", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["latent_sizes"] == [8, 3] and result["nll"] <= -result["elbo"] + 1e-3
    assert cli.main(["plot", run_dir, "--kind", "resample", "--num", "3",
                     "--output", str(tmp_path / "r.png")]) == 0  # fmt: skip
    assert (tmp_path / "r.png").stat().st_size > 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--network", "conv", "--top-down-skip"], "--top-down-skip belong to the MLP hierarchy"),
        (["--network", "conv", "--conv-filters", "8", "16"], "takes one --conv-filters value"),
        (["--conv-filters", "8"], "conv_filters=[8] applies only to network='conv'"),
        (["--network", "nonsense"], "network"),
    ],
)
def test_conv_options_are_refused_in_one_line_where_they_do_not_apply(
    toy_npz, tmp_path, capsys, extra, message
):
    argv = ["train", "--model", "hvae", "--dataset", str(toy_npz), *extra,
            "--output", str(tmp_path / "run")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after the toy data's warning)
    assert err.startswith("keras-vae train: error:") and message in err
    assert not (tmp_path / "run" / runs.CONFIG_FILE).exists()


def test_log_scale_bound_and_global_clipnorm_round_trip_from_the_cli_to_the_model(tmp_path):
    argv = ["--model", "hvae", "--latent-dims", "4", "2", "--hidden-units", "8",
            "--log-scale-bound", "2.5", "--global-clipnorm", "100"]  # fmt: skip
    config = cli.train_config(argv)
    (tmp_path / "config.json").write_text(config.to_json())
    assert TrainConfig.from_file(tmp_path / "config.json") == config
    assert (config.log_scale_bound, config.global_clipnorm) == (2.5, 100.0)
    model = train.build_model(config, (6, 6, 1), "bernoulli")
    assert model.cells[0].log_scale_bound == 2.5 and model.optimizer.global_clipnorm == 100.0
    saved = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert saved.cells[0].log_scale_bound == 2.5
    softplus = train.build_model(config.replace(log_scale_bound=0.0), (6, 6, 1), "bernoulli")
    assert softplus.cells[0].log_scale_bound is None  # 0: the softplus scales
    assert TrainConfig(model="hvae").log_scale_bound == 5.0  # NVAE's bound by default


def test_the_vampprior_topology_options_go_from_the_cli_to_the_model(tmp_path, capsys):
    argv = ["--model", "hvae", "--latent-dims", "4", "3", "2", "--hidden-units", "8", "7",
            "--shared-bottom-up", "--top-down-skip", "--top-down-units", "6",
            "--posterior-units", "5"]  # fmt: skip
    config = cli.train_config(argv)
    (tmp_path / "config.json").write_text(config.to_json())
    assert TrainConfig.from_file(tmp_path / "config.json") == config
    model = train.build_model(config, (6, 6, 1), "bernoulli")
    assert model.bottom_up.hidden_units == [[8, 7], [], []]
    assert [(c.hidden_units, c.posterior_units, c.skip) for c in model.cells] == [
        ([6], [5], True), ([6], [5], True)]  # fmt: skip
    default = train.build_model(cli.train_config(argv[:9]), (6, 6, 1), "bernoulli")
    assert default.bottom_up.hidden_units == [[8, 7]] * 3
    assert [(c.hidden_units, c.skip) for c in default.cells] == [([7, 8], False)] * 2
    assert cli.main(["train", "--top-down-skip", "--output", str(tmp_path / "vae")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "top_down_skip=True applies only to model='hvae'" in err


def test_free_bits_groups_go_from_the_cli_to_the_model_and_bad_ones_are_one_line(tmp_path, capsys):
    argv = ["--model", "hvae", "--latent-dims", "4", "2", "--hidden-units", "8",
            "--free-bits", "0.5", "--free-bits-groups", "1", "2"]  # fmt: skip
    config = cli.train_config(argv)
    (tmp_path / "config.json").write_text(config.to_json())
    assert TrainConfig.from_file(tmp_path / "config.json").free_bits_groups == [1, 2]
    model = train.build_model(config, (6, 6, 1), "bernoulli")
    x = tf.constant(X[:5, :, :, None])
    eps = tf.random.stateless_normal((1, 5, 6), seed=(1, 2))
    latent = model.latent_terms(x, eps)
    assert latent.kl_groups.shape == (5, 3)  # z_1 one group, z_2 two groups of one unit
    np.testing.assert_array_equal(latent.group_sizes, [4, 1, 1])
    np.testing.assert_allclose(latent.kl_groups[:, 0], latent.terms["kl_1"], rtol=1e-5)
    np.testing.assert_allclose(np.sum(latent.kl_groups[:, 1:], -1), latent.terms["kl_2"], rtol=1e-5)
    loss, terms = model.objective(model, x, eps[0:1], 0)  # lambda 0.5 nats per unit
    floors = np.maximum(np.mean(latent.kl_groups, 0), [0.5 * 4, 0.5, 0.5])
    want = -np.mean(terms["reconstruction"]) + floors.sum()
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    bad = {
        ("--free-bits-groups", "3", "1"): "each dividing the layer's size",
        ("--free-bits-groups", "1"): "one int per stochastic layer of latent_dims [4, 2]",
    }
    for extra, message in bad.items():
        assert cli.main(["train", *argv[:-3], *extra, "--output", str(tmp_path / "r")]) == 2
        assert message in capsys.readouterr().err
    no_floor = [*argv[:7], "--free-bits-groups", "1", "1"]
    assert cli.main(["train", *no_floor, "--output", str(tmp_path / "r")]) == 2
    assert "add --free-bits (e.g. 0.125)" in capsys.readouterr().err
    iwae = [*argv, "--objective", "iwae", "--samples", "2", "--output", str(tmp_path / "r")]
    assert cli.main(["train", *iwae]) == 2
    assert "only to objective='elbo'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
