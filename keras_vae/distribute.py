"""Strategy selection and the XLA (`jit_compile`) policy.

Keras' `jit_compile="auto"` resolves to False on CPU and under every `tf.distribute` strategy.
keras_vae chooses explicitly instead:

* one device: XLA on (measured faster for the MLP VAE on CPU, see benchmarks/throughput.py);
* several replicas (`MirroredStrategy`): XLA off with a one-line warning, because compiling the
  replica step with XLA fails when the variables live on other devices
  ("Trying to access resource ... located in device CPU:1 from device CPU:0",
  keras issue 19005).

`steps_per_execution` > 1 (several train steps per compiled call) likewise runs on one device
only: under MirroredStrategy Keras 3.15's multi-step loop fails with "You must feed a value for
placeholder tensor 'while/.../Placeholder_1'", so it falls back to 1 with a warning.
"""

from __future__ import annotations

import warnings

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored")


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


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Returns the `tf.distribute` strategy for `name`.

    Args:
        name: `"default"`: one device. `"mirrored"`: MirroredStrategy over all GPUs, or over
            all logical CPUs when there is no GPU. `"auto"`: mirrored when there are several
            GPUs or logical CPUs, default otherwise.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}. Received: strategy={name!r}")
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    if name == "default" or (name == "auto" and len(devices) < 2):
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(devices)


def resolve_jit_compile(requested: bool | str | None, strategy: tf.distribute.Strategy) -> bool:
    """The `jit_compile` value keras_vae passes to `Model.compile`.

    Args:
        requested: True / False, or None / "auto" for keras_vae's default (XLA on).
        strategy: The strategy the model is built under.

    Returns:
        True when XLA is wanted and can run under `strategy`; otherwise False. Falling back
        from a wanted XLA under several replicas warns once.
    """
    if requested not in (True, False, None, "auto"):
        raise ValueError(
            f"jit_compile must be True, False, None or 'auto'. Received: jit_compile={requested!r}"
        )
    wanted = requested in (True, None, "auto")
    if wanted and strategy.num_replicas_in_sync > 1:
        warnings.warn(
            f"XLA is off under {type(strategy).__name__} with "
            f"{strategy.num_replicas_in_sync} replicas (keras issue 19005); training runs "
            "without jit_compile.",
            stacklevel=3,
        )
        return False
    return wanted


def resolve_steps_per_execution(requested: int, strategy: tf.distribute.Strategy) -> int:
    """`requested` on one device; 1 (with a warning) under several replicas, see above."""
    if requested > 1 and strategy.num_replicas_in_sync > 1:
        warnings.warn(
            f"steps_per_execution={requested} is not supported under "
            f"{type(strategy).__name__} by Keras 3.15; using 1.",
            stacklevel=3,
        )
        return 1
    return requested
