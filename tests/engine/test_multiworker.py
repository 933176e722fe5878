"""MultiWorkerMirroredStrategy with 2 local worker processes on 127.0.0.1: the same model as
one process, and a killed worker that resumes from the backup. (The CLI's workers run the same
trainer as a user's `fit` in a strategy's scope; that path is tests/engine/test_distribute.py's
under MirroredStrategy.)"""

import json
import sys
import time

import numpy as np
import pytest

from keras_vae.cli import commands as cli
from keras_vae.engine import cluster
from keras_vae.runs import directory as runs

TRAIN = [
    sys.executable, "-m", "keras_vae.cli", "train", "--latent-dim", "2", "--hidden-units", "8",
    "--batch-size", "21", "--eval-split", "train", "--quiet", "--image-every", "0", "--seed", "3",
]  # fmt: skip
# 96 examples in global batches of 21 (the last one 12): every batch splits 11 + 10 or 6 + 6


def _run_workers(command, tmp_path, name, timeout=300, **kwargs):
    log_dir = tmp_path / f"logs-{name}"
    log_dir.mkdir()
    workers = cluster.start_local_workers(command, 2, log_dir, **kwargs)
    codes = cluster.wait_for_workers(workers, timeout=timeout)
    return codes, workers


def _max_weight_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.long
def test_two_local_workers_train_the_same_model_as_one_process(tmp_path, toy_npy):
    base = [*TRAIN, "--dataset", str(toy_npy), "--epochs", "3"]
    single_dir, multi_dir, scratch = tmp_path / "single", tmp_path / "multi", tmp_path / "tmp"
    scratch.mkdir()
    # the reference: one device, without XLA (see test_distribute), in this process
    assert cli.main([*base[3:], "--strategy", "default", "--no-xla", "--output",
                     str(single_dir)]) == 0  # fmt: skip
    command = [*base, "--strategy", "multiworker", "--output", str(multi_dir)]
    codes, workers = _run_workers(command, tmp_path, "multi", env={"TMPDIR": str(scratch)})
    assert codes == [0, 0], workers[0].log()[-3000:] + workers[1].log()[-3000:]

    metrics = json.loads((multi_dir / "metrics.json").read_text())
    assert metrics["strategy"] == "MultiWorkerMirroredStrategy" and metrics["replicas"] == 2
    assert metrics["xla"] == "replica"  # XLA on: the replica math is compiled
    reference = json.loads((single_dir / "metrics.json").read_text())
    # (--eval-split train: the eval results are named eval_*, see training.eval_prefix)
    for key in ("train_elbo", "eval_elbo", "train_kl", "eval_reconstruction"):
        assert metrics[key] == pytest.approx(reference[key], rel=1e-5), key
    multi_model, _ = runs.load_run(multi_dir)
    single_model, _ = runs.load_run(single_dir)
    initial_change = _max_weight_diff(
        single_model.get_weights(),
        [np.zeros_like(w) for w in single_model.get_weights()],
    )
    assert initial_change > 0
    assert _max_weight_diff(multi_model.get_weights(), single_model.get_weights()) < 1e-5
    single_rows = np.loadtxt(single_dir / "history.csv", delimiter=",", skiprows=1)
    multi_rows = np.loadtxt(multi_dir / "history.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(multi_rows, single_rows, rtol=1e-5)

    # the chief wrote the run; worker 1 wrote nothing that stays (its scratch backups are gone)
    assert sorted(p.name for p in multi_dir.iterdir()) == [
        ".keras-vae.lock",
        "config.json",
        "history.csv",
        "metrics.json",
        "model.keras",
        "tensorboard",
    ]  # fmt: skip  (the chief's lock file stays; the OS released its lock)
    assert list(scratch.iterdir()) == []
    assert "the chief worker writes the run files" in workers[1].log()
    assert "wrote " in workers[0].log()


@pytest.mark.long
def test_a_killed_worker_restarted_resumes_from_the_chief_backup(tmp_path, toy_npy):
    """One SIGKILL of worker 1 after the chief's second backup, then a restart of both
    workers (without XLA: the resume is the point; XLA under MultiWorkerMirroredStrategy is
    the test above's)."""
    run_dir = tmp_path / "run"
    epochs = 5
    command = [
        *TRAIN, "--dataset", str(toy_npy), "--epochs", str(epochs), "--strategy", "multiworker",
        "--no-xla", "--output", str(run_dir),
    ]  # fmt: skip
    configs = cluster.local_tf_configs(2)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    workers = cluster.start_local_workers(command, 2, log_dir, tf_configs=configs)

    def backed_up() -> int:  # the newest committed backup's epoch (0: none yet)
        state = runs.read_backup_state(run_dir)
        return state["epoch"] if state else 0

    deadline = time.monotonic() + 240
    while backed_up() < 2:
        if time.monotonic() > deadline or any(w.process.poll() is not None for w in workers):
            pytest.fail("".join(f"--- worker {w.index}\n{w.log()[-3000:]}" for w in workers))
        time.sleep(0.05)
    workers[1].process.kill()  # SIGKILL, mid-training
    codes = cluster.wait_for_workers(workers, timeout=240)
    assert codes[1] == -9
    if codes[0] != 0:  # the chief noticed and stopped with a one-line, actionable error
        assert "another worker of the cluster stopped" in workers[0].log()
        assert "Restart every worker with the same command" in workers[0].log()
    kept = backed_up() or epochs
    assert 2 <= kept

    # the cluster manager's part: restart every worker with the same command
    restarted = cluster.start_local_workers(command, 2, log_dir, tf_configs=configs)
    codes = cluster.wait_for_workers(restarted, timeout=300)
    assert codes == [0, 0], restarted[0].log()[-3000:] + restarted[1].log()[-3000:]
    if kept < epochs:
        for worker in restarted:
            assert f"resuming {run_dir} from its backup after epoch {kept}" in worker.log()
    model, config = runs.load_run(run_dir)
    assert config.strategy == "multiworker"
    assert all(np.isfinite(w).all() for w in model.get_weights())
    rows = (run_dir / runs.HISTORY_FILE).read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == [str(e) for e in range(epochs)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == epochs and metrics["resumed_from_epoch"] == kept
    assert not (run_dir / runs.BACKUP_DIR).exists()
