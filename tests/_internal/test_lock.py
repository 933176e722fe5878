"""One writer per run directory: keras_vae.lock and `keras-vae train` into a busy directory."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from keras_vae._internal import lock
from keras_vae.cli import commands as cli
from keras_vae.runs.config import TrainConfig
from keras_vae.workflows import train as training

_HOLD = """
import sys, time
sys.path.insert(0, sys.argv[2])
import importlib.util
spec = importlib.util.spec_from_file_location("lock", sys.argv[3])
lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)
lock.DirectoryLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    first = lock.DirectoryLock(tmp_path / "run").acquire()
    with pytest.raises(lock.DirectoryInUseError) as caught:
        lock.DirectoryLock(tmp_path / "run").acquire()
    expected = f"run directory {tmp_path / 'run'} is in use by process {os.getpid()} on host "
    assert str(caught.value).startswith(expected + socket.gethostname())
    assert "choose another --output" in str(caught.value)
    first.release()
    with lock.DirectoryLock(tmp_path / "run") as again:
        assert again.held
        owner = json.loads((tmp_path / "run" / lock.LOCK_FILE).read_text())
        assert owner == {"pid": os.getpid(), "host": socket.gethostname()}


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, run_dir, str(Path(lock.__file__).parent), lock.__file__],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(lock.DirectoryInUseError, match=f"by process {holder.pid} on host"):
            lock.DirectoryLock(run_dir).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert lock.DirectoryLock(run_dir).acquire().held  # the kernel dropped the dead one's lock


def test_a_second_train_into_a_busy_run_directory_fails_at_once(tmp_path, capsys):
    data = tmp_path / "toy.npz"
    np.savez(data, x=np.zeros((8, 4, 4), "uint8"))
    run_dir = tmp_path / "run"
    config = TrainConfig(dataset=str(data), eval_split="train", latent_dim=2, hidden_units=[4])
    with lock.DirectoryLock(run_dir):
        (run_dir / "config.json").write_text("the other writer's")
        start = time.perf_counter()
        with pytest.raises(lock.DirectoryInUseError, match="is in use by process"):
            training.train(config, run_dir, overwrite=True)
        argv = ["train", "--dataset", str(data), "--output", str(run_dir), "--overwrite"]
        assert cli.main(argv) == 1
        assert time.perf_counter() - start < 10  # refused before any data or model
        assert (run_dir / "config.json").read_text() == "the other writer's"  # untouched
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("keras-vae train: error: run directory")
