"""Strategy selection, the XLA (`jit_compile`) policy and multi-worker roles.

Keras' `jit_compile="auto"` resolves to False on CPU and under every `tf.distribute` strategy.
keras_vae chooses explicitly instead (`resolve_xla`):

* one device, `"step"`: Keras compiles the whole train step with XLA (measured faster for the
  MLP VAE on CPU, see benchmarks/throughput.py);
* a model computing in bfloat16 (`mixed_bfloat16` policy) on CPUs, `"off"`: XLA's CPU dots
  do not reach the matrix engines (AMX) while TensorFlow's graph-mode MatMuls do through
  oneDNN (benchmarks/README.md, "bfloat16 on an AMX CPU"), so the step runs without XLA, in
  Keras' `steps_per_execution` graph loop, one device or several;
* several replicas (`MirroredStrategy`, `MultiWorkerMirroredStrategy`), `"replica"`: Keras'
  own `jit_compile=True` fails there when a variable lives on another device than the XLA
  cluster ("Trying to access resource ... located in device CPU:1 from device CPU:0", keras
  issue 19005). `VAE.train_step` instead compiles only the replica's loss-and-gradient math,
  as a pure function of the variables' *values* read on the replica's device, so the XLA
  cluster touches no variable at all; the optimizer update and the all-reduce stay outside.
  A one-op probe (`replica_xla_works`) checks that each replica device can run XLA; where it
  cannot, training runs without XLA and says so once.

`steps_per_execution` > 1 (several train steps per compiled call) runs on one device only:
under several replicas Keras 3.15's multi-step loop fails with "You must feed a value for
placeholder tensor 'while/.../Placeholder_1'", so it falls back to 1 with a warning.

Multi-worker training (`"multiworker"`) reads the cluster from `TF_CONFIG`; `is_chief` tells
which worker writes the run files.
"""

from __future__ import annotations

import json
import os
import warnings

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
XLA_MODES = ("off", "step", "replica")

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


def configure_cpu_replicas(num_replicas: int) -> None:
    """Splits the physical CPU into `num_replicas` logical devices.

    This lets multi-device code (MirroredStrategy) run and be tested on a machine without
    GPUs. It must run before TensorFlow initialises its devices, that is before the first op.

    Raises:
        ValueError: `num_replicas` is not a positive int.
        RuntimeError: TensorFlow's devices were already initialised.
    """
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(
            f"cpu_replicas must be a positive int. Received: cpu_replicas={num_replicas!r}"
        )
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == num_replicas:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_replicas)]
        )
    except RuntimeError as error:
        raise RuntimeError(
            f"Cannot split the CPU into {num_replicas} logical devices: TensorFlow is already "
            "initialised. Call configure_cpu_replicas() before any TensorFlow op."
        ) from error


def read_tf_config() -> dict:
    """The cluster description in the `TF_CONFIG` environment variable, checked.

    Raises:
        ValueError: `TF_CONFIG` is missing, not JSON, or lacks `cluster.worker` or a `task`
            whose type and index name one of the cluster's tasks.
    """
    raw = os.environ.get("TF_CONFIG", "")
    fix = f"set TF_CONFIG to JSON such as {TF_CONFIG_EXAMPLE} (README, 'Scaling out')"
    if not raw.strip():
        raise ValueError(f"strategy 'multiworker' needs the cluster in TF_CONFIG: {fix}.")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}); {fix}.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker"):
        raise ValueError(f"TF_CONFIG has no 'cluster' with a 'worker' list; {fix}.")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG has no 'task' with 'type' and 'index'; {fix}.")
    tasks = cluster.get(task["type"])
    if not isinstance(tasks, list) or not (
        isinstance(task["index"], int) and 0 <= task["index"] < len(tasks)
    ):
        raise ValueError(
            f"TF_CONFIG's task {task} is not in its cluster {cluster}; give each process "
            "its own task type and index."
        )
    return config


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Returns the `tf.distribute` strategy for `name`.

    Args:
        name: `"default"`: one device. `"mirrored"`: MirroredStrategy over all GPUs, or over
            all logical CPUs when there is no GPU. `"multiworker"`: MultiWorkerMirroredStrategy
            over the cluster in `TF_CONFIG` (create it before any other TensorFlow op).
            `"auto"`: mirrored when there are several GPUs or logical CPUs, default otherwise.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}. Received: strategy={name!r}")
    if name == "multiworker":
        read_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    if name == "default" or (name == "auto" and len(devices) < 2):
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(devices)


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public class name (MultiWorkerMirroredStrategy is a CollectiveAllReduceStrategy)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy that really spans several workers."""
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        in_multi_worker_mode and in_multi_worker_mode()
    )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the one process that writes run files: a single process, the `chief` task,
    or worker 0 of a cluster without a chief (TensorFlow's convention)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns once every worker has called it (a collective sum); a no-op in one process."""
    if is_multi_worker(strategy):
        ones = strategy.run(lambda: tf.constant(1.0))
        strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)


def worker_name(strategy: tf.distribute.Strategy) -> str:
    """`"worker 1"` style name of this process in a cluster; `""` in one process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None:
        return ""
    return f"{resolver.task_type} {resolver.task_id}"


_PROBED: dict[int, bool] = {}


def replica_xla_works(strategy: tf.distribute.Strategy) -> bool:
    """Whether every replica device of `strategy` runs an XLA-compiled function.

    Runs a tiny jit-compiled matmul on each replica once per strategy (cached).
    """
    key = id(strategy)
    if key not in _PROBED:

        @tf.function(jit_compile=True)
        def square(x):
            return tf.matmul(x, x)

        try:
            with strategy.scope():
                result = strategy.run(lambda: square(tf.eye(2)))
            local = strategy.experimental_local_results(result)
            _PROBED[key] = all(bool(tf.reduce_all(r == tf.eye(2))) for r in local)
        except (tf.errors.OpError, RuntimeError, ValueError):
            _PROBED[key] = False
    return _PROBED[key]


def resolve_xla(
    requested: bool | str | None,
    strategy: tf.distribute.Strategy,
    compute_dtype: str = "float32",
) -> str:
    """How keras_vae compiles training with XLA: one of `XLA_MODES`.

    Args:
        requested: True / False, or None / "auto" for keras_vae's default (XLA on, except
            for bfloat16 on CPUs).
        strategy: The strategy the model is built under.
        compute_dtype: The model's compute dtype (its dtype policy's).

    Returns:
        `"off"` when XLA is not wanted, and by default for a bfloat16 model on CPUs (see the
        module docstring); `"step"` on one replica (Keras' `jit_compile=True`);
        `"replica"` under several replicas whose devices run XLA (the VAE compiles its replica
        math itself, see the module docstring). Where the replica devices cannot run XLA,
        `"off"` with one warning.
    """
    if requested not in (True, False, None, "auto"):
        raise ValueError(
            f"jit_compile must be True, False, None or 'auto'. Received: jit_compile={requested!r}"
        )
    if requested is False:
        return "off"
    if requested is not True and compute_dtype == "bfloat16" and not _has_gpus(strategy):
        return "off"
    if strategy.num_replicas_in_sync == 1:
        return "step"
    if replica_xla_works(strategy):
        return "replica"
    warnings.warn(
        f"XLA is off: the replica devices of {strategy_name(strategy)} cannot run an "
        "XLA-compiled function here; training runs without jit_compile.",
        stacklevel=3,
    )
    return "off"


def _has_gpus(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` computes on GPUs (its worker devices, or the visible ones)."""
    try:
        devices = strategy.extended.worker_devices
    except (RuntimeError, NotImplementedError):  # the default strategy: the visible devices
        return bool(tf.config.list_logical_devices("GPU"))
    return any("GPU" in device.upper() for device in devices)


def resolve_steps_per_execution(requested: int, strategy: tf.distribute.Strategy) -> int:
    """`requested` on one device; 1 (with a warning) under several replicas, see above."""
    if requested > 1 and strategy.num_replicas_in_sync > 1:
        warnings.warn(
            f"steps_per_execution={requested} is not supported under "
            f"{strategy_name(strategy)} by Keras 3.15; using 1.",
            stacklevel=3,
        )
        return 1
    return requested
