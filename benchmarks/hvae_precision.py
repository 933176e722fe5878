"""CPU time per example of a hierarchical VAE's training step, float32 against a mixed policy.

The model is `keras-vae train --model hvae --network gated_mlp --latent-dims 40 40
--hidden-units 300 300` (784-[300, 300]-40-[300, 300]-40, gated dense layers), built by the
hvae kind from that `TrainConfig` with `--precision`, trained with `fit` as `keras-vae train`
does (Adam 1e-3, the trainer's XLA policy and steps per execution) on random binary 28x28
images (a step's cost does not depend on the pixel values). One warm-up epoch (tracing and
compilation), then `--steps` timed steps; CPU seconds of the process (`time.process_time`,
all threads), so a loaded machine inflates them less than wall time. Run each precision in
its own process:

    PYTHONPATH=. nice -n 15 python benchmarks/hvae_precision.py --precision float32
    PYTHONPATH=. nice -n 15 python benchmarks/hvae_precision.py --precision mixed_bfloat16
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()

    import keras

    from keras_vae.models.hvae.kind import HierarchicalVAEKind
    from keras_vae.runs.config import TrainConfig

    config = TrainConfig(model="hvae", network="gated_mlp", latent_dims=[40, 40],
                         hidden_units=[300, 300], likelihood="bernoulli",
                         precision=args.precision)  # fmt: skip
    model = HierarchicalVAEKind().build(config, (28, 28, 1))
    model.build((None, 28, 28, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(args.batch_size * args.steps, 28, 28, 1)) > 0.5).astype("float32")
    model.fit(x[: args.batch_size * 10], batch_size=args.batch_size, epochs=1, verbose=0)
    wall, cpu = time.perf_counter(), time.process_time()
    history = model.fit(x, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({
        "precision": args.precision, "xla": model.xla,
        "optimizer": type(model.optimizer).__name__, "batch_size": args.batch_size,
        "steps": args.steps, "cpu_us_per_example": round(1e6 * cpu / len(x), 1),
        "wall_us_per_example": round(1e6 * wall / len(x), 1),
        "loss": round(float(history.history["loss"][-1]), 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
