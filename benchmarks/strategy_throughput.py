"""Training throughput of the paper's MNIST model under one tf.distribute strategy.

One process of `benchmarks/throughput.py`'s distributed rows: MirroredStrategy over N logical
CPU devices (`--strategy mirrored --cpu-replicas N`), or one worker of a
MultiWorkerMirroredStrategy cluster (`--strategy multiworker`, TF_CONFIG set; the chief
prints the result). The model, batch (100, global), optimizer and timing are those of
`keras_reference.py`: a warm-up `fit`, then timed `fit`s whose first execution is left out.

    python benchmarks/strategy_throughput.py --strategy mirrored --cpu-replicas 2 --xla
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keras_vae.engine import distribute  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", choices=["mirrored", "multiworker"], required=True)
    parser.add_argument("--cpu-replicas", type=int, default=None)
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    if args.cpu_replicas:
        distribute.configure_cpu_replicas(args.cpu_replicas)
    strategy = distribute.get_strategy(args.strategy)  # before any other TensorFlow op

    import statistics
    import warnings

    import keras
    import keras_reference as throughput  # the same model, data and timer as one device
    import tensorflow as tf
    from _machine import cpu_line

    tf.get_logger().setLevel("ERROR")
    if distribute.is_chief(strategy):
        print(cpu_line(), flush=True)
    images = throughput.kv_data.load_images(
        "binarized_mnist", split="train", data_dir=args.data_dir
    )
    dataset = throughput.kv_data.make_dataset(
        images, batch_size=throughput.BATCH_SIZE, shuffle=True, seed=0, repeat=True,
        drop_remainder=True,
    )  # fmt: skip
    with strategy.scope(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # steps_per_execution falls back to 1 (documented)
        vae = throughput.compiled_vae(args.xla, steps_per_execution=1)
    vae.fit(dataset, epochs=1, steps_per_epoch=20, verbose=0)  # warm-up: tracing, XLA
    rates = [throughput.timed_fit(vae, dataset, args.steps) for _ in range(args.rounds)]
    if distribute.is_chief(strategy):
        print(json.dumps({
            "strategy": distribute.strategy_name(strategy),
            "replicas": strategy.num_replicas_in_sync,
            "xla": vae.xla,
            "examples_per_s": statistics.median(rates),
            "best_examples_per_s": max(rates),
            "rounds": rates,
            "keras_version": keras.__version__,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
