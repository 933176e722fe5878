"""Training throughput of the AEVB paper's MNIST model, with XLA on and off, on one device
and under MirroredStrategy / MultiWorkerMirroredStrategy.

Model: `mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500)` (784-500-20, tanh, Bernoulli
decoder), batch 100, Adam(1e-3), trained with `VAE.fit` (the model's own `train_step`) on the
real static binarized MNIST read through `keras_vae.data`.

Every setting (XLA off/on x `steps_per_execution`) gets its own model and a warm-up `fit`
(tracing, XLA compilation) that is not timed. Then, in several rounds, each setting runs one
timed `fit`; the rounds interleave the settings so that load changes on a shared machine hit
all of them alike. A callback timestamps every execution of the train function; the first
execution of each `fit` (iterator start-up, shuffle-buffer fill) is left out. The result per
setting is the median over the rounds (and the best round).

The table also shows the achieved GFLOP/s (`flops_per_example`, counted by hand) as a fraction
of the machine's float32 matmul peak (`measure_matmul_peak`), the rate of the input pipeline
alone, and a plain PyTorch eager loop of the same model (`benchmarks/torch_reference.py`, run
in a subprocess when torch is importable).

Distributed rows (`benchmarks/strategy_throughput.py`, fresh processes): MirroredStrategy over
2 logical CPU devices with XLA on and off, and 2 local MultiWorkerMirroredStrategy workers on
127.0.0.1, global batch 100, steps_per_execution 1 (the only value Keras 3.15 runs there).
On one 2-core machine these rows measure the strategies' overhead, not a speed-up: the
replicas share the same cores.

Usage (from the repository root):
    python benchmarks/throughput.py                    # full run, a few minutes on 2 cores
    python benchmarks/throughput.py --quick            # smoke run
    python benchmarks/throughput.py --steps 1500 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_vae  # noqa: E402
from keras_vae import data as kv_data  # noqa: E402

IMAGE_SHAPE = (28, 28, 1)
INPUT_DIM = 784
HIDDEN_UNITS = 500
LATENT_DIM = 20
BATCH_SIZE = 100
LEARNING_RATE = 1e-3


def flops_per_example(
    input_dim: int = INPUT_DIM, hidden: int = HIDDEN_UNITS, latent: int = LATENT_DIM
) -> dict[str, int]:
    """Floating-point operations of one training example of the MLP VAE (matmuls only).

    Dense layers (in x out) and their multiply-adds (MACs) per example:

        encoder  input -> hidden       in*h          784*500 = 392,000
        encoder  hidden -> 2*latent    h*2*latent    500*40  =  20,000
        decoder  latent -> hidden      latent*h      20*500  =  10,000
        decoder  hidden -> input       h*in          500*784 = 392,000
                                                     forward   814,000 MACs

    Backward: every layer needs its weight gradient (dW = x^T dy, as many MACs as the
    forward), and every layer except the first needs its input gradient (dx = dy W^T, as
    many MACs again). The encoder's first layer gets no input gradient because the data has
    no parameters; the decoder's first layer does need one, since the gradient flows through
    z = mu + sigma * eps back into the encoder. Backward = 814,000 + (814,000 - 392,000)
    = 1,236,000 MACs.

    Total 2,050,000 MACs = 4.10 MFLOP per example at 2 FLOPs per MAC. Not counted (a few per
    cent): biases, tanh/sigmoid/softplus, the reparameterisation, the log-likelihood and KL,
    and Adam's per-parameter update (about 10 FLOPs x 814k parameters per step, i.e. about
    80 kFLOP per example at batch 100).

    Returns:
        `{"forward_macs", "backward_macs", "total_flops"}` per example.
    """
    layers = [(input_dim, hidden), (hidden, 2 * latent), (latent, hidden), (hidden, input_dim)]
    forward = sum(n_in * n_out for n_in, n_out in layers)
    first_layer = layers[0][0] * layers[0][1]
    backward = forward + (forward - first_layer)  # weight grads + input grads (not layer 1)
    return {
        "forward_macs": forward,
        "backward_macs": backward,
        "total_flops": 2 * (forward + backward),
    }


def measure_matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Single-precision matmul peak in GFLOP/s: the best of `repeats` n x n `tf.matmul`s."""
    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)
    tf.matmul(a, b).numpy()  # warm-up (thread pool, kernels)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


class ExecutionTimer(keras.callbacks.Callback):
    """Records `(steps done, time)` at the end of every execution of the train function.

    With `steps_per_execution=k` Keras calls `on_train_batch_end` once per k steps, with the
    index of the last step of the execution.
    """

    def __init__(self):
        super().__init__()
        self.marks: list[tuple[int, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.marks.append((batch + 1, time.perf_counter()))

    def examples_per_s(self, batch_size: int) -> float:
        """Rate between the end of the first and of the last execution of the `fit` call.

        Leaving out the first execution leaves out the start-up of `fit` and of the data
        iterator (filling the shuffle buffer), which happen once per `fit` call.
        """
        (first_steps, first_time), (last_steps, last_time) = self.marks[0], self.marks[-1]
        return (last_steps - first_steps) * batch_size / (last_time - first_time)


def compiled_vae(jit_compile: bool, steps_per_execution: int, seed: int = 0) -> keras_vae.VAE:
    """A fresh paper MNIST model, compiled for one benchmark setting."""
    keras.utils.set_random_seed(seed)
    vae = keras_vae.mlp_vae(
        IMAGE_SHAPE, latent_dim=LATENT_DIM, hidden_units=HIDDEN_UNITS, seed=seed
    )
    vae.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return vae


def timed_fit(vae: keras_vae.VAE, dataset: tf.data.Dataset, steps: int) -> float:
    """Steady-state examples/s of one `vae.fit` of `steps` steps (see `ExecutionTimer`)."""
    timer = ExecutionTimer()
    vae.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=[timer], shuffle=False, verbose=0)
    return timer.examples_per_s(BATCH_SIZE)


def benchmark_settings(
    dataset: tf.data.Dataset,
    settings: list[tuple[bool, int]],
    steps: int,
    rounds: int,
) -> list[dict]:
    """Examples/s of `VAE.fit` for every `(jit_compile, steps_per_execution)` setting.

    Every setting gets its own model, warmed up by a first `fit` (tracing, XLA compilation).
    Then `rounds` rounds each run one timed `fit` per setting, so that the settings are
    measured interleaved in time and a load change on a shared machine hits them alike. A
    round has about `steps / rounds` steps, a whole number of executions and at least three.
    The result per setting is the median over the rounds (and the best round).
    """
    models, per_round, rates = [], [], []
    for jit, spe in settings:
        vae = compiled_vae(jit, spe)
        n = max(3 * spe, -(-max(1, steps // rounds) // spe) * spe)
        start = time.perf_counter()
        vae.fit(dataset, epochs=1, steps_per_epoch=2 * spe, shuffle=False, verbose=0)
        print(f"  warm-up XLA {'on ' if jit else 'off'} steps_per_execution={spe}: "
              f"{time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip
        models.append(vae)
        per_round.append(n)
        rates.append([])
    for index in range(rounds):
        for vae, n, setting_rates in zip(models, per_round, rates, strict=True):
            setting_rates.append(timed_fit(vae, dataset, n))
        summary = ", ".join(f"{r[-1]:,.0f}" for r in rates)
        print(f"  round {index + 1}/{rounds} examples/s: {summary}", flush=True)
    return [
        {
            "setting": f"keras_vae XLA {'on' if jit else 'off'}, steps_per_execution={spe}",
            "jit_compile": jit,
            "steps_per_execution": spe,
            "examples_per_s": statistics.median(setting_rates),
            "best_examples_per_s": max(setting_rates),
            "rounds": setting_rates,
        }
        for (jit, spe), setting_rates in zip(settings, rates, strict=True)
    ]


def time_input_pipeline(dataset: tf.data.Dataset, steps: int) -> float:
    """Examples/s of iterating the input pipeline alone (no model), after a warm-up."""
    iterator = iter(dataset)
    for _ in range(20):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * BATCH_SIZE / (time.perf_counter() - start)


def run_torch_reference(images: np.ndarray, steps: int, threads: int) -> dict | None:
    """Runs `torch_reference.py` in a subprocess on the same data; None if torch is missing."""
    if importlib.util.find_spec("torch") is None:
        return None
    script = Path(__file__).resolve().with_name("torch_reference.py")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.npy"
        np.save(path, (images.reshape(len(images), -1) > 0.5).astype(np.uint8))
        command = [
            sys.executable, str(script), "--data", str(path), "--steps", str(steps),
            "--threads", str(threads), "--batch-size", str(BATCH_SIZE), "--json",
        ]  # fmt: skip
        # libgomp threads spin-wait at barriers; on a loaded machine a spinning thread whose
        # partner was descheduled wastes whole time slices (measured: 20x slower with 2
        # threads). PASSIVE makes waiting threads sleep, as TensorFlow's pool does.
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        print(f"torch reference failed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return {"error": result.stderr.strip().splitlines()[-1:] or ["unknown"]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def run_distributed_rows(data_dir: str, steps: int, rounds: int) -> list[dict]:
    """Rows for MirroredStrategy on 2 logical CPUs (XLA on and off) and for
    MultiWorkerMirroredStrategy with 2 local worker processes, each measured in fresh
    processes by `strategy_throughput.py` (logical devices and the cluster must be set up
    before TensorFlow starts)."""
    from keras_vae import cluster

    script = str(Path(__file__).resolve().with_name("strategy_throughput.py"))
    common = ["--data-dir", data_dir, "--steps", str(steps), "--rounds", str(rounds)]
    rows = []
    for xla in (True, False):
        name = f"MirroredStrategy, 2 logical CPUs, XLA {'on' if xla else 'off'}"
        command = [sys.executable, script, "--strategy", "mirrored", "--cpu-replicas", "2",
                   "--xla" if xla else "--no-xla", *common]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        result = _last_json_line(done.stdout) if done.returncode == 0 else None
        print(f"  {name}: {result['examples_per_s']:,.0f} examples/s" if result
              else f"  {name}: failed\n{done.stderr[-2000:]}", flush=True)  # fmt: skip
        rows.append({"setting": name, **(result or {"error": done.stderr[-500:]})})
    for xla in (True, False):
        name = f"MultiWorkerMirroredStrategy, 2 local workers, XLA {'on' if xla else 'off'}"
        command = [sys.executable, script, "--strategy", "multiworker",
                   "--xla" if xla else "--no-xla", *common]  # fmt: skip
        with tempfile.TemporaryDirectory() as logs:
            workers = cluster.start_local_workers(command, 2, logs)
            codes = cluster.wait_for_workers(workers, timeout=1800)
            log = workers[0].log()
        result = _last_json_line(log) if codes == [0, 0] else None
        print(f"  {name}: {result['examples_per_s']:,.0f} examples/s" if result
              else f"  {name}: failed\n{log[-2000:]}", flush=True)  # fmt: skip
        rows.append({"setting": name, **(result or {"error": log[-500:]})})
    return rows


def default_data_dir() -> str:
    shared = REPO_ROOT.parent / "shared" / "tensorflow_datasets"
    return os.environ.get("TFDS_DATA_DIR") or str(shared)


def intra_op_threads() -> int:
    """TensorFlow's intra-op thread count (0 in the config means one per available core)."""
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    return configured or len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_data_dir(), help="TFDS data dir")
    parser.add_argument("--steps", type=int, default=1000, help="timed steps per setting")
    parser.add_argument("--rounds", type=int, default=5, help="timed fits per setting")
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        nargs="+",
        metavar="N",
        help="values to try (default 1 10 50; --quick: 1 10)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument(
        "--no-distributed",
        action="store_true",
        help="skip the MirroredStrategy / MultiWorkerMirroredStrategy rows",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args(argv)
    # Each setting builds a new model, hence new tf.functions; TF then warns about
    # "retracing" although no function is traced twice (checked: repeated fits take no time).
    tf.get_logger().setLevel("ERROR")
    if args.quick:
        args.steps, args.rounds = 60, 2
    if not args.steps_per_execution:
        args.steps_per_execution = [1, 10] if args.quick else [1, 10, 50]

    threads = intra_op_threads()
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, keras_vae "
        f"{keras_vae.__version__}; {threads} intra-op threads, "
        f"{tf.config.threading.get_inter_op_parallelism_threads() or 'default'} inter-op, "
        f"{os.cpu_count()} CPUs"
    )
    flops = flops_per_example()
    print(
        f"Model 784-500-20 (tanh, Bernoulli), batch {BATCH_SIZE}, Adam; "
        f"{flops['total_flops'] / 1e6:.2f} MFLOP per training example "
        f"(forward {flops['forward_macs']:,} + backward {flops['backward_macs']:,} MACs)"
    )
    peak = measure_matmul_peak()
    print(f"float32 matmul peak (2048x2048 tf.matmul): {peak:.1f} GFLOP/s")

    images = kv_data.load_images("binarized_mnist", split="train", data_dir=args.data_dir)
    dataset = kv_data.make_dataset(
        images, batch_size=BATCH_SIZE, shuffle=True, seed=0, repeat=True, drop_remainder=True
    )
    pipeline_rate = time_input_pipeline(dataset, steps=max(args.steps, 200))

    settings = [(jit, spe) for jit in (False, True) for spe in args.steps_per_execution]
    rows = benchmark_settings(dataset, settings, args.steps, args.rounds)

    torch_result = None if args.no_torch else run_torch_reference(images, args.steps, threads)
    distributed = []
    if not args.no_distributed:
        per_round = max(30, args.steps // 3)
        distributed = run_distributed_rows(args.data_dir, per_round, 3 if not args.quick else 1)
    best = max(rows, key=lambda r: r["examples_per_s"])
    torch_rate = (torch_result or {}).get("examples_per_s")

    def gflops(rate: float) -> float:
        return rate * flops["total_flops"] / 1e9

    print()
    print("| setting | examples/s (median) | best round | GFLOP/s | % of matmul peak |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        rate = row["examples_per_s"]
        print(f"| {row['setting']} | {rate:,.0f} | {row['best_examples_per_s']:,.0f} | "
              f"{gflops(rate):.1f} | {100 * gflops(rate) / peak:.0f} |")  # fmt: skip
    if torch_rate is not None:
        name = f"PyTorch {torch_result['torch_version']} eager, {torch_result['threads']} threads"
        print(f"| {name} | {torch_rate:,.0f} | | {gflops(torch_rate):.1f} | "
              f"{100 * gflops(torch_rate) / peak:.0f} |")  # fmt: skip
    elif args.no_torch:
        print("| PyTorch eager | skipped | | | |")
    else:
        status = "failed" if torch_result else "not installed"
        print(f"| PyTorch eager | {status} | | | |")
    for row in distributed:
        rate = row.get("examples_per_s")
        if rate is None:
            print(f"| {row['setting']} | failed | | | |")
            continue
        print(f"| {row['setting']} | {rate:,.0f} | {row['best_examples_per_s']:,.0f} | "
              f"{gflops(rate):.1f} | {100 * gflops(rate) / peak:.0f} |")  # fmt: skip
    print(f"| input pipeline alone (make_dataset) | {pipeline_rate:,.0f} | | | |")
    print(f"| float32 matmul peak, 2048x2048 | | | {peak:.1f} | 100 |")
    ratio = best["examples_per_s"] / torch_rate if torch_rate else None
    print()
    print(f"Best keras_vae setting: {best['setting']}, {best['examples_per_s']:,.0f} examples/s")
    if ratio is not None:
        print(f"Ratio keras_vae (best) / PyTorch eager: {ratio:.2f}")

    if args.json:
        summary = {
            "examples_per_s": best["examples_per_s"],
            "setting": best["setting"],
            "gflops": gflops(best["examples_per_s"]),
            "peak_gflops": peak,
            "fraction_of_peak": gflops(best["examples_per_s"]) / peak,
            "flops_per_example": flops["total_flops"],
            "torch_examples_per_s": torch_rate,
            "ratio_vs_torch": ratio,
            "input_pipeline_examples_per_s": pipeline_rate,
            "results": rows,
            "distributed": distributed,
            "tf_version": tf.__version__,
            "keras_version": keras.__version__,
            "threads": threads,
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
