"""A cluster of local worker processes for MultiWorkerMirroredStrategy: try multi-machine
training on one machine, test it and benchmark it.

    configs = local_tf_configs(2)          # TF_CONFIG values on free 127.0.0.1 ports
    workers = start_local_workers(["keras-vae", "train", "--strategy", "multiworker", ...], 2)
    results = wait_for_workers(workers, timeout=600)

On real machines each worker gets its own TF_CONFIG (README, "Scaling out") instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def local_tf_configs(num_workers: int, ports: Sequence[int] | None = None) -> list[str]:
    """One TF_CONFIG JSON string per worker of a cluster on 127.0.0.1 (worker 0 is chief)."""
    ports = list(ports) if ports is not None else free_ports(num_workers)
    workers = [f"127.0.0.1:{port}" for port in ports]
    return [
        json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        for index in range(num_workers)
    ]


@dataclass
class Worker:
    """A started worker process; its output goes to `log_path`."""

    index: int
    process: subprocess.Popen
    log_path: str

    def log(self) -> str:
        with open(self.log_path, errors="replace") as file:
            return file.read()


def start_local_workers(
    command: Sequence[str],
    num_workers: int,
    log_dir: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    tf_configs: Sequence[str] | None = None,
) -> list[Worker]:
    """Starts `command` once per worker, each with its own TF_CONFIG, output to
    `log_dir/worker-<i>.log`."""
    tf_configs = list(tf_configs) if tf_configs is not None else local_tf_configs(num_workers)
    if len(tf_configs) != num_workers:
        raise ValueError(
            f"{len(tf_configs)} TF_CONFIG values for {num_workers} workers; pass one per worker "
            "(local_tf_configs(num_workers) makes them)."
        )
    workers = []
    for index, tf_config in enumerate(tf_configs):
        log_path = os.path.join(os.fspath(log_dir), f"worker-{index}.log")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {}), "TF_CONFIG": tf_config},
            )
        workers.append(Worker(index, process, log_path))
    return workers


def wait_for_workers(workers: Sequence[Worker], timeout: float, grace: float = 120.0) -> list[int]:
    """Waits for every worker; returns their exit codes (negative: killed by that signal).
    Kills all of them when `timeout` seconds pass first, or once one fails and the others do
    not follow within `grace` seconds (a worker whose peer is gone may otherwise wait for it
    for a long time)."""
    deadline = time.monotonic() + timeout
    failed_at = None
    while time.monotonic() < deadline:
        codes = [worker.process.poll() for worker in workers]
        if all(code is not None for code in codes):
            return codes
        if failed_at is None and any(code not in (None, 0) for code in codes):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > grace:
            break
        time.sleep(0.2)
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
    return [worker.process.wait() for worker in workers]
