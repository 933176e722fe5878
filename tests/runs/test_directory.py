"""Run directories: atomic files, resume after a kill, NaN safety, refusals, safe loading."""

import importlib.util
import json
import tempfile
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import REPO

import keras_vae
from keras_vae.cli import commands as cli
from keras_vae.data import pipeline as data
from keras_vae.runs import directory as runs
from keras_vae.runs.config import TrainConfig
from keras_vae.workflows import train as training

RNG = np.random.default_rng(4)


def _config(toy_npz, **changes):
    values = dict(
        dataset=str(toy_npz), eval_split="train", latent_dim=2, hidden_units=[16], epochs=3,
        batch_size=32, seed=1,
    )  # fmt: skip
    return TrainConfig(**{**values, **changes})


class _FailAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch, action):
        super().__init__()
        self.epoch, self.action = epoch, action

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.action(self.model)


def _crash(model):
    raise KeyboardInterrupt  # what a Ctrl-C between epochs looks like to the caller


def test_rerun_after_a_crash_resumes_from_the_last_completed_epoch(toy_npz, tmp_path):
    # without XLA (compiling costs more than the steps; a resume with XLA: tests/cli)
    run_dir, config, messages = tmp_path / "run", _config(toy_npz, epochs=4, jit_compile=False), []
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run_dir, verbose=0, callbacks=[_FailAfterEpoch(1, _crash)])
    assert not (run_dir / "model.keras").exists()
    # the crash came at the end of epoch 2, before its backup: epoch 1's is the last one
    assert runs.read_backup_state(run_dir)["epoch"] == 1
    # a write the crash cut short left its temporary file; it does not block the rerun
    (run_dir / ".history.csv.k3x9q.tmp").write_text("epoch,lo")
    metrics = training.train(config, run_dir, verbose=0, progress=messages.append)
    assert any("resuming" in m and "after epoch 1" in m for m in messages)
    assert metrics["resumed_from_epoch"] == 1
    history = (run_dir / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1", "2", "3"]
    assert not (run_dir / "backup").exists()  # removed once the run finished
    runs.load_run(run_dir)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_backup(toy_npz, tmp_path):
    run_dir = tmp_path / "run"

    def poison(model):  # a weight turns NaN at the end of epoch 2: epoch 3's first step fails
        kernel = model.decoder.dense_layers[0].kernel
        kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    with pytest.raises(training.NonFiniteLossError) as error:
        training.train(_config(toy_npz), run_dir, verbose=0, callbacks=[_FailAfterEpoch(1, poison)])
    message = str(error.value)
    assert "at epoch 3, step 1" in message and "--clipnorm" in message
    assert "backup after epoch 1" in message  # epoch 2 ended with NaN weights: not saved
    state = runs.read_backup_state(run_dir)
    assert state["epoch"] == 1 and len(state["history"]["loss"]) == 1
    model = training.build_model(_config(toy_npz), (6, 6, 1), "bernoulli")
    runs.RunBackup(run_dir).restore(model)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_same_seed_gives_identical_weights_and_metrics(toy_npz):
    a = training.train(_config(toy_npz, epochs=2), verbose=0)
    b = training.train(_config(toy_npz, epochs=2), verbose=0)
    for wa, wb in zip(a["model"].get_weights(), b["model"].get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert a["history"] == b["history"] and a["eval_elbo"] == b["eval_elbo"]
    c = training.train(_config(toy_npz, epochs=2, seed=2), verbose=0)
    assert c["history"] != a["history"]


def test_run_directory_refusals(toy_npz, tmp_path):
    run_dir = tmp_path / "run"
    assert runs.prepare_run_dir(run_dir, _config(toy_npz)) is False
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 3
    with pytest.raises(runs.RunStateError, match=r"other settings \(differs in: epochs, seed\)"):
        runs.prepare_run_dir(run_dir, _config(toy_npz, epochs=5, seed=9))
    (run_dir / "model.keras").write_bytes(b"finished")
    with pytest.raises(runs.RunStateError, match="already holds a finished run"):
        runs.prepare_run_dir(run_dir, _config(toy_npz))
    assert runs.prepare_run_dir(run_dir, _config(toy_npz, epochs=5), overwrite=True) is False
    assert not (run_dir / "model.keras").exists()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"")
    with pytest.raises(runs.RunStateError, match="not a keras_vae run directory"):
        runs.prepare_run_dir(other, _config(toy_npz))
    with pytest.raises(runs.RunDirectoryError, match="missing model.keras"):
        runs.load_run(other)


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "metrics.json"
    runs.atomic_write_json(path, {"elbo": -90.0})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        runs.atomic_write_json(path, {"elbo": Unserialisable()})
    assert json.loads(path.read_text()) == {"elbo": -90.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_damaged_model_files_get_one_line_errors(tmp_path):
    model = training.build_model(
        TrainConfig(latent_dim=2, hidden_units=[4]), (4, 4, 1), "bernoulli"
    )
    good = tmp_path / "good.keras"
    runs.save_model(model, good)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip at all")
    for path in (truncated, garbage):
        with pytest.raises(runs.RunDirectoryError, match="not a valid .keras file"):
            runs.load_model(path)
    emptied = tmp_path / "emptied.keras"
    with zipfile.ZipFile(emptied, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(runs.RunDirectoryError, match="Cannot load"):
        runs.load_model(emptied)


def test_model_files_with_code_are_refused(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(runs.RunDirectoryError, match="Cannot load"):
        runs.load_model(path)  # safe_mode=True: no arbitrary code from a model file


def _load_kill_harness():
    """benchmarks/kill_resume.py, which runs the same harness with many more kills."""
    path = REPO / "benchmarks" / "kill_resume.py"
    spec = importlib.util.spec_from_file_location("kill_resume", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.long
def test_training_survives_a_random_sigkill(tmp_path):
    """One SIGKILL of a real `keras-vae train` at a random moment, then the same command
    finishes the run. benchmarks/kill_resume.py runs this harness with many kills
    (`--kills 20`)."""
    harness = _load_kill_harness()
    dataset = harness.make_dataset(tmp_path / "toy.npz")
    run_dir = tmp_path / "run"
    # not the default parts: a learned prior whose weights the backup must carry
    parts = ["--prior", "mixture", "--prior-components", "3", "--posterior", "full"]
    rng = np.random.default_rng(7)
    landed = harness.kill_and_resume(run_dir, dataset, kills=1, rng=rng, options=parts)
    assert landed == 1
    model, config = runs.load_run(run_dir)
    assert model.image_shape == (8, 8, 1) and config.epochs == harness.EPOCHS
    assert (config.prior, config.prior_components, config.posterior) == ("mixture", 3, "full")
    assert harness.check_run(run_dir, parts) is None
    assert "prior_components" in harness.check_run(run_dir, ["--prior", "mixture"])
    epochs = [row.split(",")[0] for row in (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [str(e) for e in range(harness.EPOCHS)]  # every epoch exactly once
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["eval_elbo"]) and metrics["eval_split"] == "train"
    assert not list(run_dir.glob(".*tmp*")) and not (run_dir / "backup").exists()


def test_early_stopping_keeps_the_best_epoch(toy_npz):
    # with a negligible step size the held-out ELBO only fluctuates: it soon stops improving
    config = _config(toy_npz, epochs=40, early_stopping=2, learning_rate=1e-9, jit_compile=False)
    result = training.train(config, verbose=0)
    val = result["history"]["val_elbo"]
    assert len(val) < 40 and result["epochs"] == len(val)
    assert len(val) - 1 - int(np.argmax(val)) == 2  # stopped two epochs after the best one
    # metrics.json says which epoch the model's weights are from, and that epoch's bound
    assert result["kept_epoch"] == int(np.argmax(val)) + 1 and result["kept_for"] == "val_elbo"
    assert result["kept_value"] == pytest.approx(max(val), abs=1e-4)


class _EvaluatedWeights(keras.callbacks.Callback):
    """The weights each validation pass scored (the average's, with EMA), by epoch."""

    def __init__(self):
        super().__init__()
        self.by_epoch, self._epoch = [], 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_test_end(self, logs=None):
        self.by_epoch.append(self.model.get_weights())
        assert len(self.by_epoch) == self._epoch + 1


def test_early_stopping_with_ema_keeps_the_averaged_weights_of_the_best_epoch(toy_npz):
    # patience > epochs: training runs to the end and keeps the best epoch; with a negligible
    # step size the held-out ELBO only fluctuates, so the best epoch is rarely the last
    config = _config(toy_npz, epochs=8, early_stopping=20, ema_momentum=0.9, learning_rate=1e-9)
    seen = _EvaluatedWeights()
    result = training.train(config, verbose=0, callbacks=[seen])
    val = result["history"]["val_elbo"]
    best = int(np.argmax(val))
    assert len(val) == 8 and best < 7  # the best epoch is not the last one
    assert result["kept_epoch"] == best + 1
    final = result["model"].get_weights()
    for kept, scored in zip(final, seen.by_epoch[best], strict=True):
        np.testing.assert_array_equal(kept, scored)
    last = seen.by_epoch[-1]  # and not those of the last epoch
    assert any(not np.array_equal(a, b) for a, b in zip(final, last, strict=True))


# --- the model's parts survive a crash; metrics; clean-up -----------------------------------


class _Snapshot(keras.callbacks.Callback):
    """Records the prior's and the optimizer's state when training begins and after epoch 1."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def _record(self, when):
        self.seen[when] = {
            "pseudo_inputs": np.array(self.model.prior.pseudo_inputs),
            "iterations": int(self.model.optimizer.iterations),
        }

    def on_train_begin(self, logs=None):
        self._record("begin")

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self._record("epoch 1")


def test_a_crashed_run_with_other_parts_resumes_them_and_refuses_other_settings(toy_npz, tmp_path):
    parts = dict(
        prior="vamp", prior_components=300, posterior="full", kl_warmup_epochs=2, epochs=3,
        learning_rate=0.05, jit_compile=False,
    )  # fmt: skip
    config, run_dir = _config(toy_npz, **parts), tmp_path / "run"
    first, second = _Snapshot(), _Snapshot()
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run_dir, verbose=0, callbacks=[first, _FailAfterEpoch(1, _crash)])
    # a fresh run starts the 300 pseudo-inputs from the 256 training images (with repeats)
    images = data.load_images(str(toy_npz))
    start = first.seen["begin"]["pseudo_inputs"]
    assert start.shape == (300, 6, 6, 1)
    assert all((np.abs(images - u).max(axis=(1, 2, 3)) == 0).any() for u in start)
    saved = json.loads((run_dir / "config.json").read_text())
    assert {k: saved[k] for k in parts} == parts
    with pytest.raises(runs.RunStateError, match=r"differs in: prior_components\)"):
        training.train(_config(toy_npz, **{**parts, "prior_components": 8}), run_dir, verbose=0)
    with pytest.raises(runs.RunStateError, match=r"in: kl_warmup_epochs, objective, samples\)"):
        other = {k: v for k, v in parts.items() if k != "kl_warmup_epochs"}
        training.train(_config(toy_npz, **other, objective="iwae", samples=2), run_dir)
    result = training.train(config, run_dir, verbose=0, callbacks=[second])
    assert result["resumed_from_epoch"] == 1
    # the resumed run continues from epoch 1's pseudo-inputs and step count (the KL warm-up
    # goes on where it was), not from a new start from the data
    after_epoch_1 = first.seen["epoch 1"]
    resumed = second.seen["begin"]
    np.testing.assert_array_equal(resumed["pseudo_inputs"], after_epoch_1["pseudo_inputs"])
    assert not np.array_equal(after_epoch_1["pseudo_inputs"], start)  # they did learn
    assert resumed["iterations"] == after_epoch_1["iterations"] == 8
    model, loaded = runs.load_run(run_dir)
    assert type(model.prior).registered_name == "vamp" and model.prior.num_components == 300
    assert type(model.posterior).registered_name == "full"
    assert model.objective.get_config()["warmup_steps"] == 2 * 8  # 2 epochs of 256 / 32 steps
    assert loaded == config.replace(likelihood="bernoulli")


@pytest.mark.parametrize(
    ("changes", "examples_per_epoch"),
    [({"batch_size": 30}, 256), ({"batch_size": 30, "steps_per_epoch": 3}, 90)],
)
def test_examples_seen_counts_the_short_last_batch_as_it_is(toy_npz, changes, examples_per_epoch):
    # 256 examples in batches of 30: eight full batches and one of 16 per pass
    result = training.train(_config(toy_npz, epochs=2, jit_compile=False, **changes), verbose=0)
    assert result["examples_seen"] == 2 * examples_per_epoch


def test_metrics_are_named_by_the_eval_split_and_hold_the_objectives_terms(toy_npz, tmp_path):
    config = _config(toy_npz, epochs=1, objective="iwae", samples=3, jit_compile=False)
    result = training.train(config, tmp_path / "run", verbose=0)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["eval_split"] == "train" and "test_elbo" not in metrics
    for prefix in ("train", "eval"):
        for term in ("elbo", "reconstruction", "kl", "iwae"):
            assert np.isfinite(metrics[f"{prefix}_{term}"]), (prefix, term)
        # Jensen: the K-sample bound is above the ELBO of the same samples, in expectation
        assert metrics[f"{prefix}_iwae"] > metrics[f"{prefix}_elbo"] - 0.5
    assert {k: result[k] for k in metrics} == metrics
    assert training.eval_prefix("test") == "test"
    assert training.eval_prefix("validation") == "validation"
    assert training.eval_prefix("test[:50%]") == "eval"


def test_a_failing_worker_removes_its_scratch_directory(toy_npz, tmp_path, monkeypatch):
    made = []

    class Recording(tempfile.TemporaryDirectory):
        def __init__(self, **kwargs):
            super().__init__(dir=tmp_path, **kwargs)
            made.append(Path(self.name))

    monkeypatch.setattr(training.distribute, "is_chief", lambda strategy: False)
    monkeypatch.setattr(training.tempfile, "TemporaryDirectory", Recording)

    class Fail(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise RuntimeError("the worker failed")

    with pytest.raises(RuntimeError, match="the worker failed"):
        training.train(_config(toy_npz, jit_compile=False), tmp_path / "run", callbacks=[Fail()])
    assert len(made) == 1 and not made[0].exists()


# --- verified backups, full disks, memory -----------------------------------------------------


def _digest(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_backups_are_kept_verified_and_pruned_after_their_successor(toy_npz, tmp_path):
    model = training.build_model(_config(toy_npz), (6, 6, 1), "bernoulli")
    backup = runs.RunBackup(tmp_path / "run", keep=2, progress=lambda m: None)
    backup.set_model(model)
    seen = []
    for epoch in range(3):
        backup.on_epoch_end(epoch, {"loss": 10.0 - epoch})
        seen.append(sorted(p.name for p in (tmp_path / "run" / "backup").iterdir()))
    assert seen[1] == [  # two kept; the oldest goes once the third is committed
        "epoch-00001.state.json", "epoch-00001.weights.h5",
        "epoch-00002.state.json", "epoch-00002.weights.h5",
    ]  # fmt: skip
    assert [name[:11] for name in seen[2]] == ["epoch-00002"] * 2 + ["epoch-00003"] * 2
    for epoch in (2, 3):
        state = json.loads((tmp_path / "run" / f"backup/epoch-{epoch:05d}.state.json").read_text())
        weights = tmp_path / "run" / "backup" / state["weights"]
        assert state["sha256"] == _digest(weights)  # against hashlib, not the code's helper
        assert state["bytes"] == weights.stat().st_size and state["epoch"] == epoch
        assert state["history"]["loss"] == [10.0, 9.0, 8.0][:epoch]
    # damage both: one flipped byte (same size), one missing file: nothing to resume from
    newest = tmp_path / "run" / "backup" / "epoch-00003.weights.h5"
    content = bytearray(newest.read_bytes())
    content[len(content) // 2] ^= 0xFF
    newest.write_bytes(bytes(content))
    (tmp_path / "run" / "backup" / "epoch-00002.weights.h5").unlink()
    fresh = training.build_model(_config(toy_npz), (6, 6, 1), "bernoulli")
    with pytest.raises(runs.RunStateError) as error:
        runs.RunBackup(tmp_path / "run").restore(fresh)
    assert str(error.value).count("\n") == 0
    assert "after epoch 3: epoch-00003.weights.h5 does not match its SHA-256" in str(error.value)
    assert "after epoch 2: its weights file epoch-00002.weights.h5 is missing" in str(error.value)
    assert "--overwrite" in str(error.value)


def test_a_truncated_newest_backup_resumes_from_the_one_before(toy_npz, tmp_path):
    config = _config(toy_npz, epochs=3, keep_backups=2, jit_compile=False, image_every=0)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # at the end of epoch 3, before its backup
        training.train(config, run_dir, verbose=0, callbacks=[_FailAfterEpoch(2, _crash)])
    names = sorted(p.name for p in (run_dir / "backup").glob("*.weights.h5"))
    assert names == ["epoch-00001.weights.h5", "epoch-00002.weights.h5"]
    newest = run_dir / "backup" / "epoch-00002.weights.h5"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a power loss
    messages = []
    metrics = training.train(config, run_dir, verbose=0, progress=messages.append)
    resumed = [m for m in messages if "resuming" in m]
    assert len(resumed) == 1 and "after epoch 1 (verified)" in resumed[0]
    assert "skipped the backup after epoch 2: epoch-00002.weights.h5 has" in resumed[0]
    assert "(truncated)" in resumed[0]
    assert metrics["resumed_from_epoch"] == 1 and metrics["epochs"] == 3
    history = (run_dir / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1", "2"]
    runs.load_run(run_dir)


def _error_lines(stderr: str) -> list[str]:
    """The error lines of the CLI's stderr (warnings about the data may come first)."""
    return [line for line in stderr.splitlines() if ": error: " in line or "Traceback" in line]


def _full_disk_at(call):
    """A `save_weights` that fails at its `call`-th use as on a full disk: part of the file
    is written, then ENOSPC."""
    real, calls = keras_vae.VAE.save_weights, []

    def save_weights(model, path, *args, **kwargs):
        calls.append(path)
        if len(calls) != call:
            return real(model, path, *args, **kwargs)
        Path(path).write_bytes(b"\x89HDF\r\n" + b"\0" * 100)
        raise OSError(28, "No space left on device")

    return save_weights


def test_a_full_disk_at_a_backup_is_one_line_and_loses_nothing(toy_npz, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = [
        "train", "--dataset", str(toy_npz), "--eval-split", "train", "--latent-dim", "2",
        "--hidden-units", "16", "--epochs", "4", "--batch-size", "32", "--seed", "1",
        "--output", str(run_dir), "--quiet", "--image-every", "0", "--no-xla",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras_vae.VAE, "save_weights", _full_disk_at(3))
        assert cli.main(argv) == 1
    error = _error_lines(capsys.readouterr().err)
    assert len(error) == 1, error
    assert error[0].startswith(f"keras-vae train: error: The disk of {run_dir / 'backup'} is full")
    assert "the backup after epoch 3 needs about" in error[0] and " free; " in error[0]
    assert "the backup after epoch 2 is intact" in error[0]
    backups = sorted(p.name for p in (run_dir / "backup").iterdir())
    assert backups == [f"epoch-0000{e}.{k}" for e in (1, 2) for k in ("state.json", "weights.h5")]
    for e in (1, 2):
        state = json.loads((run_dir / "backup" / f"epoch-0000{e}.state.json").read_text())
        assert state["sha256"] == _digest(run_dir / "backup" / state["weights"])
    assert cli.main(argv) == 0  # space freed: the same command continues from epoch 2
    assert "resuming" in capsys.readouterr().out
    assert json.loads((run_dir / "metrics.json").read_text())["eval_split"] == "train"


def test_an_oversized_model_is_one_line(toy_npz, tmp_path, capsys):
    argv = [
        "train", "--dataset", str(toy_npz), "--eval-split", "train", "--latent-dim",
        "2000000000", "--epochs", "1", "--output", str(tmp_path / "run"), "--quiet",
    ]  # fmt: skip
    assert cli.main(argv) == 1
    error = _error_lines(capsys.readouterr().err)
    assert len(error) == 1, error
    # the encoder's last layer: 500 hidden units to 2 x 2e9 outputs (loc and scale), float32
    expected = "could not allocate a [500, 4000000000] float tensor (7.3 TB; "
    assert error[0].startswith("keras-vae train: error: Out of memory: " + expected)
    assert "lower --latent-dim (2000000000), --hidden-units (500) or --batch-size" in error[0]
    left = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert left == [".keras-vae.lock", "config.json"]  # no backup, no model: nothing trained
