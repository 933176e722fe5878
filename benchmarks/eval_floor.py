"""The floor under K = 5,000 evaluation of 10,000 images: what its parts cost per decoded row.

Issue 29 asks for the importance-sampled log p(x) of the 10,000 binarized MNIST test images
with K = 5,000 (784-500-20 VAE) in at most 60 s. That is 5e7 decoded rows. This script
times, in CPU seconds (`time.process_time`, all threads: a loaded machine inflates them less
than wall time), one evaluation chunk of 2,000 rows (`evaluation.DEFAULT_CHUNK_SIZE` samples
x 100 images) in bfloat16 compute, the fastest precision on an AMX CPU:

1. `matmul`: the output layer's matmul alone, [2000, 500] x [500, 784] in bfloat16 with a
   float32 sum of its result (oneDNN's AMX kernel);
2. `head`: the likelihood head as the evaluation runs it: that matmul cast to float32, the
   float32 bias, and the package's `bernoulli_log_prob` (sums over 784 pixels);
3. `evaluation`: the package's whole `importance_sampled_log_likelihood` of a
   `mixed_bfloat16` model (noise, decoder hidden layer, head, log-densities, log-sum-exp),
   per decoded row.

Each is extrapolated to 5e7 rows and divided by the CPUs: the wall time the part alone
would need with every core busy. Run it on a quiet machine:

    PYTHONPATH=. python benchmarks/eval_floor.py
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _machine import cpu_info, cpu_line

ROWS = 10_000 * 5_000  # decoded rows of the evaluation


def _cpu_ms(function, repeats: int, rounds: int) -> float:
    """Median over `rounds` of the CPU milliseconds per call of `function`."""
    function()
    times = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(repeats):
            function()
        times.append((time.process_time() - start) / repeats * 1e3)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args()
    info = cpu_info()
    print(cpu_line(info), flush=True)

    import keras
    import tensorflow as tf

    import keras_vae
    from keras_vae.models.vae import evaluation
    from keras_vae.parts.likelihoods import bernoulli_log_prob

    rng = np.random.default_rng(0)
    samples, batch, hidden, pixels = evaluation.DEFAULT_CHUNK_SIZE, 100, 500, 784
    rows = samples * batch
    h = tf.constant(rng.normal(size=(samples, batch, hidden)), tf.bfloat16)
    kernel = tf.constant(rng.normal(size=(hidden, pixels)) * 0.05, tf.bfloat16)
    bias = tf.constant(rng.normal(size=pixels), tf.float32)
    x = tf.constant(rng.uniform(size=(batch, pixels)) > 0.5, tf.float32)

    @tf.function
    def matmul():
        return tf.reduce_sum(tf.cast(tf.matmul(h, kernel), tf.float32))

    @tf.function
    def head():
        logits = tf.cast(tf.matmul(h, kernel), tf.float32) + bias
        return tf.reduce_sum(bernoulli_log_prob(x, logits, 1))

    keras.utils.set_random_seed(0)
    model = keras_vae.mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500,
                              precision="mixed_bfloat16", seed=0)  # fmt: skip
    images = (rng.uniform(size=(batch, 28, 28, 1)) > 0.5).astype(np.float32)
    k = 1000

    def whole():
        evaluation.importance_sampled_log_likelihood(model, images, k, verbose=0)

    measured = {
        "matmul": _cpu_ms(lambda: matmul().numpy(), 20, args.rounds),
        "head": _cpu_ms(lambda: head().numpy(), 20, args.rounds),
        "evaluation": _cpu_ms(whole, 1, args.rounds) * rows / (batch * k),
    }
    cpus = info["cpus"]
    report = {"cpu": info, "rows_per_chunk": rows, "cpu_ms_per_chunk": measured,
              "floor_wall_s": {}}  # fmt: skip
    print(f"CPU ms per chunk of {rows:,} decoded rows, and the wall time of 5e7 rows on "
          f"{cpus} busy CPUs:")  # fmt: skip
    for name, ms in measured.items():
        wall = ms / 1e3 * ROWS / rows / cpus
        report["floor_wall_s"][name] = wall
        print(f"  {name:10s} {ms:7.2f} ms  ->  {wall:6.1f} s")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
