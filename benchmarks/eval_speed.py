"""Speed of `keras-vae evaluate`: importance-sampled log p(x) with K samples, old vs new path.

Times `keras_vae.evaluation.importance_sampled_log_likelihood` and the implementation it
replaced (`reference_importance_sampled_log_likelihood` below, one XLA call per chunk of 500
samples with the TFP Bernoulli log_prob, the encoder re-run per chunk) on the same N images of
the binarized MNIST test split, extrapolates to 10,000 images, and checks that the two
estimates of mean log p(x) agree within their standard errors. FLOPs count the decoder's
matmuls only: 2 (latent x hidden + hidden x 784) per sample (784-500-20: 804,000 per sample,
40.2 TFLOP for 10,000 images x 5,000 samples). The machine may be shared: the load average is
printed, CPU seconds are reported beside wall seconds, and the ratio is the number to trust.

    python benchmarks/eval_speed.py --examples 500 --samples 5000
    python benchmarks/eval_speed.py --run-dir runs/mnist --examples 1000

`--run-dir RUN --precisions float32 mixed_bfloat16` times instead the run's model in each
policy (`VAEKind.with_precision`, what `keras-vae evaluate --precision` runs: the same
weights, the matmuls in that policy) on the same images and seed, and reports each
policy's images/s and CPU time, the speed ratio to the first, and the paired difference of
the per-image estimates (mean +- s.e., mean and max |difference|):

    python benchmarks/eval_speed.py --run-dir RUN --examples 500 --precisions float32 mixed_bfloat16

`--prior vamp` times a VampPrior model (gated 784-300-300-40, 500 pseudo-inputs; or the
`--run-dir` one) instead: the current path, whose prior log-density is
`objectives.diagonal_normal_mixture_log_prob` (two matmuls), against the same path with
TFP's `MixtureSameFamily.log_prob` (a `[samples, 500, 40]` broadcast) patched back in.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import keras_vae
from keras_vae.models.vae import evaluation
from keras_vae.parts import objectives, priors


# ------------------------------------------------------------ the previous implementation
def _reference_chunk_fn(model, jit_compile: bool):
    def chunk(x, seed, num_samples):
        parameters = model.encode_parameters(x)
        q = model.posterior.distribution(**parameters)
        prior = model.prior_distribution()
        shape = tf.stack([num_samples, tf.shape(x)[0], model.posterior.noise_size])
        z = model.posterior.reparameterize(parameters, tf.random.stateless_normal(shape, seed))
        log_likelihood = model.decode(z).log_prob(x)
        log_w = objectives.log_importance_weights(log_likelihood, q, prior, z)
        return {
            "log_sum_w": tf.reduce_logsumexp(log_w, axis=0),
            "sum_log_w": tf.reduce_sum(log_w, axis=0),
            "sum_log_likelihood": tf.reduce_sum(log_likelihood, axis=0),
        }

    return tf.function(chunk, jit_compile=jit_compile, reduce_retracing=True)


def reference_importance_sampled_log_likelihood(
    model, images, num_samples=5000, *, batch_size=100, chunk_size=500, seed=0, jit_compile=True
) -> np.ndarray:
    """log p(x) per example as `keras_vae.evaluation` computed it before (commit 3290819):
    a Python loop over batches and chunks of samples, one XLA call per chunk."""
    fn = _reference_chunk_fn(model, jit_compile)
    rng = np.random.default_rng(seed)
    chunks = [chunk_size] * (num_samples // chunk_size)
    chunks += [num_samples % chunk_size] if num_samples % chunk_size else []
    results = []
    for start in range(0, len(images), batch_size):
        x = tf.constant(images[start : start + batch_size])
        log_sum = tf.fill([x.shape[0]], tf.constant(-np.inf, tf.float32))
        for size in chunks:
            seed_pair = tf.constant(rng.integers(0, 2**31 - 1, size=2), tf.int32)
            log_sum = tf.experimental.numpy.logaddexp(log_sum, fn(x, seed_pair, size)["log_sum_w"])
        results.append(np.asarray(log_sum) - math.log(num_samples))
    return np.concatenate(results)


# ------------------------------------------------------------------------- measuring
def measure_matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of the best of `repeats` float32 `tf.matmul`s of size x size."""
    a, b = tf.random.normal([size, size]), tf.random.normal([size, size])
    tf.matmul(a, b).numpy()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def decoder_flops_per_sample(model) -> int:
    """2 x the multiply-adds of the decoder's Dense layers and the likelihood projection."""
    kernels = [layer.kernel for layer in model.decoder.dense_layers]
    kernels.append(model.likelihood.projection.kernel)
    return 2 * sum(int(np.prod(k.shape)) for k in kernels)


def timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def load_test_images(data_dir: str, count: int) -> np.ndarray:
    import tensorflow_datasets as tfds

    data = tfds.as_numpy(
        tfds.load("binarized_mnist", split="test", data_dir=data_dir, batch_size=-1)
    )
    return data["image"][:count].astype("float32")


@contextlib.contextmanager
def tfp_mixture_log_prob():
    """Within this context the priors' mixtures use TFP's own `MixtureSameFamily.log_prob`."""
    own = priors.DiagonalNormalMixture._log_prob
    priors.DiagonalNormalMixture._log_prob = tfp.distributions.MixtureSameFamily._log_prob
    try:
        yield
    finally:
        priors.DiagonalNormalMixture._log_prob = own


def build_model(args, data_dir: str):
    if args.run_dir:
        from keras_vae.runs import directory as runs

        return runs.load_run(args.run_dir)[0], f"loaded from {args.run_dir}"
    if args.prior == "vamp":
        name = "gated 784-300-300-40, VampPrior (500)"
        model = keras_vae.mlp_vae((28, 28, 1), latent_dim=40, hidden_units=[300, 300],
                                  activation="linear", network="gated_mlp", prior="vamp",
                                  prior_components=500, seed=0)  # fmt: skip
    else:
        name = "784-500-20"
        model = keras_vae.mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500, seed=0)
    model.build((None, 28, 28, 1))
    if not args.train_examples:
        return model, f"{name}, random initial weights"
    import keras
    import tensorflow_datasets as tfds

    train = tfds.as_numpy(tfds.load("binarized_mnist", split="train", data_dir=data_dir,
                                    batch_size=-1))["image"][: args.train_examples]  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(train.astype("float32"), epochs=args.train_epochs, batch_size=100, verbose=0)
    return model, f"{name}, trained {args.train_epochs} epochs on {len(train)} images"


def compare_precisions(args, images) -> None:
    """Each of `args.precisions` on the same images and seed (see the module docstring)."""
    from keras_vae.models.kind import kind_of
    from keras_vae.runs import directory as runs

    model, config = runs.load_run(args.run_dir)
    kind, k, n = kind_of(config), args.samples, len(images)
    rows = {}
    for precision in args.precisions:
        vae = kind.with_precision(model, config, precision)
        evaluation.importance_sampled_log_likelihood(vae, images[:100], k, verbose=0)  # compile
        log_px, wall, cpu = timed(lambda vae=vae: evaluation.importance_sampled_log_likelihood(
            vae, images, k, verbose=0)["log_px"])  # fmt: skip
        rows[precision] = (log_px, wall, cpu)
        print(f"  {precision}: {wall:.1f} s, load average {os.getloadavg()[0]:.1f}", flush=True)
    print("\n| precision | images/s | s per 1,000 images | CPU s per 1,000 | min for 10,000 "
          "| speed-up (wall, CPU) | mean log p(x) +- s.e. |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    first = rows[args.precisions[0]]
    for precision, (log_px, wall, cpu) in rows.items():
        stderr = log_px.std(ddof=1) / math.sqrt(n)
        print(f"| {precision} | {n / wall:.1f} | {1000 * wall / n:.1f} | {1000 * cpu / n:.1f} | "
              f"{10000 * wall / n / 60:.1f} | {first[1] / wall:.2f}x, {first[2] / cpu:.2f}x | "
              f"{log_px.mean():.3f} +- {stderr:.3f} |")  # fmt: skip
    for precision, (log_px, _, _) in list(rows.items())[1:]:
        difference = log_px - first[0]  # the same images and samples: paired
        stderr = difference.std(ddof=1) / math.sqrt(n)
        print(f"{precision} - {args.precisions[0]}: mean {difference.mean():+.4f} +- "
              f"{stderr:.4f} nats (paired s.e.), mean |difference| "
              f"{np.abs(difference).mean():.4f}, max {np.abs(difference).max():.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=500, help="test images timed")
    parser.add_argument("--samples", type=int, default=5000, help="K importance samples")
    parser.add_argument("--run-dir", type=Path, help="evaluate this run's model")
    parser.add_argument(
        "--train-examples", type=int, default=0,
        help="train briefly on this many training images first (0: random weights)",
    )  # fmt: skip
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--skip-reference", action="store_true", help="time the new path only")
    parser.add_argument("--prior", choices=("standard", "vamp"), default="standard",
                        help="vamp: the mixture log-density against TFP's (see above)")  # fmt: skip
    parser.add_argument("--precisions", nargs="+", metavar="POLICY",
                        help="with --run-dir: time the run's model in each of these policies "
                        "(float32, mixed_bfloat16, mixed_float16)")  # fmt: skip
    default_data = os.environ.get("TFDS_DATA_DIR", "../shared/tensorflow_datasets")
    parser.add_argument("--data-dir", default=default_data)
    args = parser.parse_args()
    from _machine import cpu_line

    print(cpu_line())
    if args.precisions:
        if not args.run_dir:
            parser.error("--precisions needs --run-dir (the run's config rebuilds the model)")
        images = load_test_images(args.data_dir, args.examples)
        print(f"{args.run_dir}: {len(images)} test images, K={args.samples}; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
        compare_precisions(args, images)
        return

    model, description = build_model(args, args.data_dir)
    images = load_test_images(args.data_dir, args.examples)
    k, n = args.samples, len(images)
    peak = measure_matmul_peak()
    flop_per_image = decoder_flops_per_sample(model) * k
    print(f"model: {description}; {n} test images, K={k}; matmul peak {peak:.1f} GFLOP/s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip

    def current(images):
        return evaluation.importance_sampled_log_likelihood(model, images, k, verbose=0)["log_px"]

    def tfp_mixture(images):  # a fresh call traces its own function, under the patch
        with tfp_mixture_log_prob():
            return current(images)

    paths = {"new": current}
    if not args.skip_reference:
        paths["reference"] = (
            tfp_mixture
            if args.prior == "vamp"
            else lambda images: reference_importance_sampled_log_likelihood(model, images, k)
        )
    for fn in paths.values():  # tracing and compilation, not timed
        fn(images[:100])
    rows = {}
    for name, fn in paths.items():
        log_px, wall, cpu = timed(lambda fn=fn: fn(images))
        rows[name] = (log_px, wall, cpu)

    print(
        "\n| path | s per 1,000 images | CPU s per 1,000 | min for 10,000 | GFLOP/s "
        "| % of peak | mean log p(x) +- s.e. |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (log_px, wall, cpu) in rows.items():
        gflops = flop_per_image * n / wall / 1e9
        stderr = log_px.std(ddof=1) / math.sqrt(n)
        print(f"| {name} | {1000 * wall / n:.1f} | {1000 * cpu / n:.1f} | "
              f"{10000 * wall / n / 60:.1f} | {gflops:.1f} | {100 * gflops / peak:.0f}% | "
              f"{log_px.mean():.3f} +- {stderr:.3f} |")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if "reference" in rows:
        (new, wall_new, cpu_new), (old, wall_old, cpu_old) = rows["new"], rows["reference"]
        difference = new - old  # the same images: the paired difference's standard error
        stderr = difference.std(ddof=1) / math.sqrt(n)
        agree = abs(difference.mean()) <= 3 * stderr + 1e-3
        print(f"speed-up: {wall_old / wall_new:.2f}x wall, {cpu_old / cpu_new:.2f}x CPU time; "
              f"mean difference {difference.mean():+.4f} nats, paired s.e. {stderr:.4f}: "
              f"{'agree' if agree else 'DISAGREE'} (within 3 s.e.)")  # fmt: skip


if __name__ == "__main__":
    main()
