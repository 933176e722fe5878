"""`keras-vae evaluate RUN` on a tiny run trained from the command line on the offline
`synthetic_dsprites/small`: the split streamed a batch at a time, to the numbers of the split
loaded whole; and `--disentanglement` (and `evaluate_disentanglement`): the scores against the
metric computed here from the run's model and the rendered grid, an `.npz` with factors giving
the same scores as the grid it holds, and the one-line refusals."""

import functools
import io
import json
import shutil

import numpy as np
import pytest

from keras_vae import registry
from keras_vae.cli import commands as cli
from keras_vae.data import factors as factor_data
from keras_vae.data import pipeline as data
from keras_vae.data.builders import synthetic_dsprites as sprites
from keras_vae.metrics import disentanglement as dis
from keras_vae.models.kind import ModelKind
from keras_vae.models.vae.kind import VAEKind
from keras_vae.runs import directory as runs
from keras_vae.runs.config import ConfigError, TrainConfig
from keras_vae.runs.splits import load_split
from keras_vae.workflows import evaluate

SAMPLES = 60  # codes (and classifier points) of the metrics: enough to compute, cheap


@pytest.fixture(autouse=True)
def fewer_trees(monkeypatch):
    """DCI's gradient-boosted trees with 10 stages instead of 100 (most of the time here)."""
    monkeypatch.setattr(dis, "evaluate", functools.partial(dis.evaluate, n_estimators=10))


@pytest.fixture(scope="module")
def sprites_run(tmp_path_factory):
    """A VAE trained for 3 steps of beta-TCVAE on the small sprites, generated into a temporary
    data dir (never the shared one)."""
    root = tmp_path_factory.mktemp("sprites")
    run_dir = root / "run"
    status = cli.main([
        "train", "--dataset", "synthetic_dsprites/small", "--data-dir", str(root / "tfds"),
        "--objective", "betatc", "--tc-weight", "4", "--tc-estimator", "mws",
        "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "64", "--latent-dim", "3",
        "--hidden-units", "16", "--no-xla", "--image-every", "0", "--quiet",
        "--output", str(run_dir),
    ])  # fmt: skip
    assert status == 0
    return run_dir


def test_the_run_trained_with_the_objective_options_on_the_offline_sprites(sprites_run):
    model, config = runs.load_run(sprites_run)
    assert (config.dataset, config.eval_split) == ("synthetic_dsprites/small", "train")
    objective = model.objective.get_config()
    assert (objective["beta"], objective["estimator"]) == (4.0, "mws")
    assert objective["dataset_size"] == 3 * 64  # N: the examples of one epoch
    assert model.image_shape == (32, 32, 1)


def test_the_split_is_streamed_a_batch_at_a_time_to_the_numbers_of_the_loaded_split(
    sprites_run, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    shutil.copytree(sprites_run, run)
    config = json.loads((run / "config.json").read_text())
    # a shuffle buffer smaller than the 2,304 sorted sprites: training streams them from all
    # the files at once; the evaluation must read them in their stored order, as loaded
    (run / "config.json").write_text(json.dumps({**config, "shuffle_buffer": 100}))
    seen, batches = [], data.batches

    def no_loading(*args, **kwargs):
        raise AssertionError("the evaluation loaded the split whole")

    def counted(images, batch_size, labels=None):
        seen.append(type(images))
        for x, y in batches(images, batch_size, labels):
            seen.append(len(x))
            yield x, y

    with monkeypatch.context() as patched:
        for name in ("load_images", "load_labeled_images"):
            patched.setattr(data, name, no_loading)
        patched.setattr(data, "batches", counted)
        progress = io.StringIO()
        result = evaluate.evaluate_run(run, limit=250, importance_samples=8, seed=2,
                                       progress_stream=progress)  # fmt: skip
    assert seen == [data.TfdsStream, 100, 100, 50]  # read a batch at a time, not the split
    assert "250/250 examples" in progress.getvalue()
    model, config = runs.load_run(run)
    images = load_split(config, "train", limit=250)  # the first 250 of the grid, in memory
    expected, line = VAEKind().evaluate(model, images, importance_samples=8, seed=2,
                                        progress_stream=io.StringIO())  # fmt: skip
    assert result.pop("line") == f"train: {line}"
    assert result == {**expected, "split": "train", "model": "vae"}
    assert json.loads((run / "eval_train.json").read_text()) == result


def _split_progress(lines: list[str]) -> tuple[list[str], list[str]]:
    """(the progress lines of the disentanglement metrics, the other lines)."""
    progress = [line for line in lines if line.startswith("disentanglement:")
                or line.startswith("disentanglement metrics done")]  # fmt: skip
    return progress, [line for line in lines if line not in progress]


def test_disentanglement_scores_of_the_posterior_mean_on_the_rendered_grid(sprites_run, capsys):
    argv = ["evaluate", str(sprites_run), "--disentanglement",
            "--disentanglement-samples", str(SAMPLES), "--seed", "5"]  # fmt: skip
    assert cli.main(argv) == 0
    stages, out = _split_progress(capsys.readouterr().out.splitlines())
    # the progress: each stage as it starts (the time of the one before), then the total
    assert [line.split("...")[0] for line in stages[:-1]] == [
        "disentanglement: codes of 60 + 30 factor draws (MIG, DCI, SAP)",
        "disentanglement: beta-VAE score: 90 points of 64 image pairs",
        "disentanglement: FactorVAE score: 90 points of 64 images",
    ]
    assert "(previous stage" in stages[1] and stages[-1].startswith("disentanglement metrics done")
    assert out[0].startswith("disentanglement of synthetic_dsprites/small (60 samples, seed 5)")
    for name in ("MIG", "DCI disentanglement", "SAP", "beta-VAE score", "FactorVAE score"):
        assert name in out[0]
    assert out[1] == f"wrote {sprites_run / 'eval_disentanglement.json'}"
    written = json.loads((sprites_run / "eval_disentanglement.json").read_text())
    for name in ("mig", "dci_disentanglement", "sap", "beta_vae", "factor_vae"):
        assert 0.0 <= written[name] <= 1.0, name
    assert (written["samples"], written["seed"], written["model"]) == (SAMPLES, 5, "vae")

    # MIG computed here: the codes are E[z|x] of the rendered images of the factors that the
    # seed draws first (disentanglement_lib's order: MIG's codes, then DCI/SAP's test codes)
    model, _ = runs.load_run(sprites_run)
    rng = np.random.default_rng(5)
    factors = factor_data.sample_factors(sprites.SMALL.factor_sizes, SAMPLES, rng)
    images = sprites.render(factors, sprites.SMALL)[..., None].astype("float32")
    codes = np.asarray(model.encode(images).mean())
    assert written["mig"] == pytest.approx(dis.mig(codes, factors)["mig"], abs=1e-6)

    # the Python function: the same scores for the same seed
    again = evaluate.evaluate_disentanglement(sprites_run, samples=SAMPLES, seed=5)
    assert again.pop("line") == out[0]
    assert again == written


def test_an_npz_with_factors_scores_like_the_grid_it_holds(sprites_run, tmp_path):
    grid = sprites.factor_grid(sprites.SMALL)
    images = sprites.render(grid, sprites.SMALL)  # [N, 32, 32] in {0, 1}: float32 as stored
    path = tmp_path / "grid.npz"
    order = np.random.default_rng(0).permutation(len(grid))  # any order: looked up by factor
    np.savez(path, x=images[order].astype("float32"), factors=grid[order])
    run = tmp_path / "run"
    shutil.copytree(sprites_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "dataset": str(path)}))
    from_npz = evaluate.evaluate_disentanglement(run, samples=SAMPLES, seed=5)
    rendered = evaluate.evaluate_disentanglement(sprites_run, samples=SAMPLES, seed=5)
    for name in ("mig", "dci_disentanglement", "sap", "beta_vae", "factor_vae"):
        assert from_npz[name] == pytest.approx(rendered[name], abs=1e-9), name


def test_dataset_factors_of_npz_files_and_data_sets_without_factors(tmp_path):
    rng = np.random.default_rng(1)
    factors = np.stack(np.meshgrid(np.arange(2), np.arange(3), indexing="ij"), -1).reshape(-1, 2)
    images = rng.integers(0, 256, size=(6, 4, 5), dtype=np.uint8)
    np.savez(tmp_path / "grey.npz", x=images, factors=factors)
    data = factor_data.dataset_factors(str(tmp_path / "grey.npz"))
    assert data.factor_sizes == (2, 3)
    got = data.observations(np.array([[1, 2], [0, 0]]))
    # as the pipeline reads the file: uint8 grey levels / 255, a channel axis added
    np.testing.assert_allclose(got, images[[5, 0], ..., None] / 255.0, rtol=1e-6)
    np.savez(tmp_path / "gappy.npz", x=images[:5], factors=factors[:5])
    with pytest.raises(ValueError, match=r"its factors have 5 of the 6 combinations of \(2, 3\)"):
        factor_data.dataset_factors(str(tmp_path / "gappy.npz"))
    np.savez(tmp_path / "plain.npz", x=images)
    for name in (str(tmp_path / "plain.npz"), "binarized_mnist"):
        with pytest.raises(ValueError, match="has no factor labels, which the disentanglement"):
            factor_data.dataset_factors(name)


def test_a_run_without_factor_labels_is_a_one_line_error(sprites_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(sprites_run, run)
    config = json.loads((run / "config.json").read_text())
    np.savez(tmp_path / "plain.npz", x=np.zeros((4, 32, 32, 1), np.uint8))
    (run / "config.json").write_text(json.dumps({**config, "dataset": str(tmp_path / "plain.npz")}))
    assert cli.main(["evaluate", str(run), "--disentanglement"]) == 2
    err = capsys.readouterr().err
    assert "plain.npz has no factor labels" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--disentanglement", "--split", "train"], "--split and --limit do not apply to"),
        (["--disentanglement", "--limit", "10"], "--split and --limit do not apply to"),
        (["--disentanglement-samples", "50"], "--disentanglement-samples goes with"),
        (["--disentanglement", "--importance-samples", "5"], "--importance-samples does not"),
        (["--disentanglement", "--disentanglement-samples", "1"], "must be an int >= 2"),
    ],
)
def test_options_that_do_not_go_together_are_one_line_errors(sprites_run, argv, message, capsys):
    assert cli.main(["evaluate", str(sprites_run), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name", registry.names("model"))
def test_every_kind_without_a_representation_refuses_it_the_same_way(name):
    kind = registry.get("model", name)()
    config = TrainConfig(model=name, vqvae_run="elsewhere" if name == "vqvae-prior" else None)
    if "disentanglement" in kind.evaluate_options:
        assert callable(kind.representation)
        return
    with pytest.raises(ConfigError) as error:
        evaluate._check_options(config, {"disentanglement": True})
    assert str(error.value) == (
        f"--disentanglement does not apply to a {name} run (it takes: "
        f"{', '.join(kind.evaluate_options) or 'no options'})."
    )


def test_precision_evaluates_the_run_in_that_policy_and_records_it(sprites_run, capsys):
    argv = ["evaluate", str(sprites_run), "--limit", "20", "--importance-samples", "4"]
    assert cli.main([*argv, "--precision", "mixed_bfloat16", "--json"]) == 0
    low = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert low["precision"] == "mixed_bfloat16" and low["num_examples"] == 20
    assert json.loads((sprites_run / "eval_train.json").read_text()) == low
    own = evaluate.evaluate_run(sprites_run, limit=20, importance_samples=4,
                                progress_stream=io.StringIO())  # fmt: skip
    assert own["precision"] == "float32"  # the run's own (it trained in float32)
    assert own.pop("line").endswith("20 examples, precision float32")
    # the same weights and samples: the bound and the estimate move by bfloat16 rounding only
    assert low["nll"] == pytest.approx(own["nll"], abs=0.05)
    assert cli.main([*argv, "--precision", "bfloat16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "precision must be one of" in err and "'bfloat16'" in err and "\n" not in err


@pytest.mark.parametrize("name", registry.names("model"))
def test_every_kind_without_precision_refuses_it_the_same_way(name):
    kind = registry.get("model", name)()
    config = TrainConfig(model=name, vqvae_run="elsewhere" if name == "vqvae-prior" else None)
    if "precision" in kind.evaluate_options:
        assert type(kind).with_precision is not ModelKind.with_precision
        return
    with pytest.raises(ConfigError) as error:
        evaluate._check_options(config, {"precision": "mixed_bfloat16"})
    assert str(error.value) == (
        f"--precision does not apply to a {name} run (it takes: "
        f"{', '.join(kind.evaluate_options) or 'no options'})."
    )
