"""keras_vae.engine.cluster: TF_CONFIG values TensorFlow itself accepts, and worker processes
that are started, awaited and stopped."""

import json
import sys
import time

import pytest
import tensorflow as tf

from keras_vae.engine import cluster, distribute


def test_local_tf_configs_describe_one_cluster_that_tensorflow_resolves(monkeypatch):
    configs = cluster.local_tf_configs(3)
    addresses = json.loads(configs[0])["cluster"]["worker"]
    assert len(set(addresses)) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
    for index, config in enumerate(configs):
        monkeypatch.setenv("TF_CONFIG", config)
        distribute.read_tf_config()  # keras_vae's own check accepts it
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        assert resolver.cluster_spec().as_dict() == {"worker": addresses}
        assert (resolver.task_type, resolver.task_id) == ("worker", index)


def test_local_tf_configs_use_the_given_ports():
    configs = cluster.local_tf_configs(2, ports=[4001, 4002])
    assert json.loads(configs[1])["cluster"]["worker"] == ["127.0.0.1:4001", "127.0.0.1:4002"]


def test_workers_get_their_own_tf_config_and_logs(tmp_path):
    script = "import json, os; print('task', json.loads(os.environ['TF_CONFIG'])['task']['index'])"
    workers = cluster.start_local_workers([sys.executable, "-c", script], 2, tmp_path)
    assert cluster.wait_for_workers(workers, timeout=60) == [0, 0]
    assert [w.log().strip() for w in workers] == ["task 0", "task 1"]


def test_a_failed_worker_brings_down_one_that_would_wait_forever(tmp_path):
    script = (
        "import json, os, sys, time\n"
        "if json.loads(os.environ['TF_CONFIG'])['task']['index'] == 1: sys.exit(3)\n"
        "time.sleep(600)\n"
    )
    workers = cluster.start_local_workers([sys.executable, "-c", script], 2, tmp_path)
    started = time.monotonic()
    codes = cluster.wait_for_workers(workers, timeout=300, grace=1.0)
    assert codes[1] == 3
    assert codes[0] < 0  # killed, not left running
    assert time.monotonic() - started < 60  # by the grace period, not the overall timeout
    assert all(w.process.poll() is not None for w in workers)


def test_one_tf_config_per_worker_is_required(tmp_path):
    with pytest.raises(ValueError, match="one per worker"):
        cluster.start_local_workers(["true"], 3, tmp_path, tf_configs=cluster.local_tf_configs(2))
