"""Training throughput of the AEVB paper's MNIST model: keras_vae next to a JAX + optax jit
loop, PyTorch eager and torch.compile of the same model, measured in the same rounds.

Model: `mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500)` (784-500-20, tanh, Bernoulli
decoder), batch 100 (`--batch-size`), Adam(1e-3), trained with `VAE.fit` (the model's own
`train_step`) on the real static binarized MNIST read through `keras_vae.data`.

Every keras_vae setting (XLA off/on x `steps_per_execution`, and the default setting with
Keras' own step loop, `fuse_steps=False`, for comparison) gets its own model and an untimed
warm-up `fit` (tracing, XLA compilation). The reference loops (`jax_reference.py`,
`torch_reference.py` eager and `--compile`) run in their own processes, warm up there, and
then wait for requests (`_serve.py`). In several rounds, each keras_vae setting runs one timed
`fit` and each reference the same number of steps, one after the other, so that load changes
on a shared machine hit all of them alike. A callback timestamps every execution of the train
function; the first execution of each `fit` (iterator start-up, shuffle-buffer fill) is left
out. The result per row is the median over the rounds (and the best round), with the process's
CPU time per example (all threads; steadier than wall time when other jobs share the cores)
and the ratio to the JAX loop of the same round set.

The table also shows the achieved GFLOP/s (`flops_per_example`, counted by hand) as a fraction
of the machine's float32 matmul peak (`measure_matmul_peak`) and the rate of the input
pipeline alone. A missing reference framework (`pip install -e '.[bench]'`) is reported in
the table, not fatal.

Distributed rows (`benchmarks/strategy_throughput.py`, fresh processes): MirroredStrategy over
2 logical CPU devices with XLA on and off, and 2 local MultiWorkerMirroredStrategy workers on
127.0.0.1, global batch 100, steps_per_execution 1 (the only value Keras 3.15 runs there).
On one 2-core machine these rows measure the strategies' overhead, not a speed-up: the
replicas share the same cores.

Convolutional rows (`--conv`, `--conv-only`): keras_vae's conv VAE (`network="conv"`, stride-2
3x3 convolutions of 32 and 64 channels, a dense layer of 256, relu, latent 20; `CONV_MODEL`)
at 28x28x1 with the Bernoulli likelihood on the same binarized MNIST, and at 32x32x3 with the
discretised logistic mixture (5 components) on random 8-bit colour images (the values do not
change the speed), XLA on and off, `steps_per_execution` 10, `--conv-steps` timed steps per
round, in the same rounds as the other rows. Their FLOPs are counted from the built model
(`conv_flops_per_example`). The JAX and PyTorch loops are the MLP only, so the conv rows'
ratios to them are "n/a".

Usage (from the repository root):
    python benchmarks/throughput.py --json             # full run, several minutes on 2 cores
    python benchmarks/throughput.py --quick            # smoke run
    python benchmarks/throughput.py --batch-size 1000 --no-distributed
    python benchmarks/throughput.py --conv-only --conv-steps 50 --rounds 3   # conv rows
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
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
from keras_vae.data import pipeline as kv_data  # noqa: E402

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


def _halved(size: int, levels: int) -> int:
    return -(-size // 2**levels)  # a stride-2 'same' convolution's output side, ceil(S / 2^L)


def conv_flops_per_example(vae: keras_vae.VAE) -> dict[str, int]:
    """Floating-point operations of one training example of a built conv VAE (multiply-adds
    of its convolutions and dense layers; the rest as in `flops_per_example`).

    Per example, with a layer's kernel of K = k*k*C_in*C_out (convolutions) or in*out weights:

        encoder conv level l    ceil(H/2^l) * ceil(W/2^l) output positions * K
        dense layers            K (encoder dense, posterior head, decoder dense, base map)
        decoder deconv level l  h_0 2^(l-1) * w_0 2^(l-1) input positions * K
        likelihood head         H * W positions * K (a 1x1 projection per pixel)

    Backward: weight gradients (as many MACs as the forward) and input gradients of every
    layer except the encoder's first convolution. FLOPs = 2 * (forward + backward) MACs.
    """
    height, width = vae.image_shape[:2]
    encoder, decoder = vae.encoder, vae.decoder
    convs = [
        _halved(height, level) * _halved(width, level) * int(np.prod(layer.kernel.shape))
        for level, layer in enumerate(encoder.conv_layers, start=1)
    ]
    first, forward = convs[0], sum(convs)
    dense = [*encoder.dense_layers, vae.posterior.projection, *decoder.dense_layers,
             decoder.base_layer]  # fmt: skip
    forward += sum(int(np.prod(layer.kernel.shape)) for layer in dense)
    base_h, base_w = decoder.base_size
    for level, layer in enumerate(decoder.deconv_layers):
        positions = base_h * 2**level * base_w * 2**level
        forward += positions * int(np.prod(layer.kernel.shape))
    forward += height * width * int(np.prod(vae.likelihood.projection.kernel.shape))
    backward = forward + (forward - first)
    return {"forward_macs": forward, "backward_macs": backward,
            "total_flops": 2 * (forward + backward)}  # fmt: skip


def measure_matmul_peak(n: int = 2048, repeats: int = 10, cpu: bool = False) -> float:
    """Single-precision matmul peak in GFLOP/s: the best of `repeats` n x n `tf.matmul`s.

    With `cpu`, GFLOP per CPU-second of the process (all threads) instead of per second of
    wall time: on a machine shared with other jobs this one barely depends on the load.
    """
    clock = time.process_time if cpu else time.perf_counter
    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)
    tf.matmul(a, b).numpy()  # warm-up (thread pool, kernels)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        tf.matmul(a, b).numpy()
        best = min(best, clock() - start)
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


def compiled_vae(
    jit_compile: bool, steps_per_execution: int, seed: int = 0, fuse_steps: bool = True
) -> keras_vae.VAE:
    """A fresh paper MNIST model, compiled for one benchmark setting."""
    keras.utils.set_random_seed(seed)
    vae = keras_vae.mlp_vae(
        IMAGE_SHAPE, latent_dim=LATENT_DIM, hidden_units=HIDDEN_UNITS, seed=seed
    )
    vae.fuse_steps = fuse_steps
    vae.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return vae


def timed_fit(
    vae: keras_vae.VAE, dataset: tf.data.Dataset, steps: int, batch_size: int = BATCH_SIZE
) -> float:
    """Steady-state examples/s of one `vae.fit` of `steps` steps (see `ExecutionTimer`)."""
    timer = ExecutionTimer()
    vae.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=[timer], shuffle=False, verbose=0)
    return timer.examples_per_s(batch_size)


class KerasSetting:
    """One keras_vae row: a warmed-up model; `run(steps)` -> (examples/s, CPU s)."""

    def __init__(self, dataset, batch_size, jit: bool, spe: int, fuse: bool = True):
        loop = "" if fuse or not (jit and spe > 1) else ", Keras' step loop (fuse_steps=False)"
        self.name = f"keras_vae XLA {'on' if jit else 'off'}, steps_per_execution={spe}{loop}"
        self.config = {"jit_compile": jit, "steps_per_execution": spe, "fuse_steps": fuse}
        self.dataset, self.batch_size, self.spe = dataset, batch_size, spe
        self.vae = compiled_vae(jit, spe, fuse_steps=fuse)
        start = time.perf_counter()
        self.vae.fit(dataset, epochs=1, steps_per_epoch=2 * spe, shuffle=False, verbose=0)
        self.warmup_s = time.perf_counter() - start

    def run(self, steps: int) -> tuple[float, float]:
        steps = max(3 * self.spe, -(-steps // self.spe) * self.spe)  # whole executions
        cpu = time.process_time()
        rate = timed_fit(self.vae, self.dataset, steps, self.batch_size)
        return rate, (time.process_time() - cpu) / (steps * self.batch_size)


# the conv rows' model: mlp_vae arguments besides the image shape and likelihood
CONV_MODEL = {
    "latent_dim": LATENT_DIM, "hidden_units": [256], "activation": "relu", "network": "conv",
    "network_options": {"filters": [32, 64], "kernel_size": 3},
}  # fmt: skip
CONV_STEPS_PER_EXECUTION = 10


def colour_images(count: int = 5000, seed: int = 0) -> np.ndarray:
    """Random 8-bit colour images k/255, [count, 32, 32, 3] (speed does not depend on them)."""
    levels = np.random.default_rng(seed).integers(0, 256, size=(count, 32, 32, 3))
    return (levels / 255.0).astype(np.float32)


class ConvSetting:
    """One conv row: a warmed-up conv VAE on its own data; `run(steps)` times `self.steps`
    steps instead (a conv example costs tens of times an MLP one)."""

    def __init__(self, images, likelihood: str, batch_size: int, jit: bool, steps: int):
        shape = "x".join(map(str, images.shape[1:]))
        self.name = (f"keras_vae conv {shape} {likelihood}, XLA {'on' if jit else 'off'}, "
                     f"steps_per_execution={CONV_STEPS_PER_EXECUTION}")  # fmt: skip
        spe = CONV_STEPS_PER_EXECUTION
        self.config = {"network": "conv", "jit_compile": jit, "steps_per_execution": spe}
        self.batch_size, self.spe, self.steps = batch_size, spe, steps
        self.dataset = kv_data.make_dataset(
            images, batch_size=batch_size, shuffle=True, seed=0, repeat=True, drop_remainder=True
        )
        keras.utils.set_random_seed(0)
        self.vae = keras_vae.mlp_vae(images.shape[1:], likelihood=likelihood, seed=0, **CONV_MODEL)
        self.vae.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), jit_compile=jit,
                         steps_per_execution=spe)  # fmt: skip
        start = time.perf_counter()
        self.vae.fit(self.dataset, epochs=1, steps_per_epoch=2 * spe, shuffle=False, verbose=0)
        self.warmup_s = time.perf_counter() - start
        self.flops = conv_flops_per_example(self.vae)
        self.config["flops_per_example"] = self.flops["total_flops"]

    def run(self, steps: int) -> tuple[float, float]:
        del steps  # the conv rows' own count
        steps = max(3 * self.spe, -(-self.steps // self.spe) * self.spe)
        cpu = time.process_time()
        rate = timed_fit(self.vae, self.dataset, steps, self.batch_size)
        return rate, (time.process_time() - cpu) / (steps * self.batch_size)


def conv_rows(mnist: np.ndarray, batch_size: int, steps: int) -> list[ConvSetting]:
    """The conv rows, warmed up: 28x28x1 Bernoulli on `mnist` and 32x32x3 logistic on
    `colour_images()`, each with XLA on and off."""
    rows = []
    data = {"bernoulli": mnist, "logistic": colour_images()}
    for (likelihood, images), jit in itertools.product(data.items(), (True, False)):
        rows.append(ConvSetting(images, likelihood, batch_size, jit, steps))
        print(f"  warm-up {rows[-1].name}: {rows[-1].warmup_s:.1f} s, "
              f"{rows[-1].flops['total_flops'] / 1e6:.1f} MFLOP/example", flush=True)  # fmt: skip
    return rows


class Reference:
    """A reference loop in its own process (`_serve.py`); `run(steps)` -> (examples/s, CPU s).

    `start` launches it (warm-up and compilation run there, overlapping other warm-ups);
    `wait_ready` reads its first line. `error` holds why it is unavailable, if it is.
    """

    def __init__(self, name: str, script: str, extra: list[str], module: str):
        self.name, self.error, self.meta, self.process = name, None, {}, None
        self.batch_size = None
        self._command = [sys.executable, str(Path(__file__).resolve().with_name(script)), *extra]
        self._module = module

    def start(self, data_path: Path, batch_size: int, threads: int) -> None:
        if importlib.util.find_spec(self._module) is None:
            self.error = "not installed (pip install -e '.[bench]')"
            return
        self.batch_size = batch_size
        command = [*self._command, "--serve", "--data", str(data_path),
                   "--batch-size", str(batch_size)]  # fmt: skip
        if self._module == "torch":  # JAX's CPU client uses one thread per core by itself
            command += ["--threads", str(threads)]
        # libgomp threads spin-wait at barriers; on a loaded machine a spinning thread whose
        # partner was descheduled wastes whole time slices (measured: 20x slower with 2
        # threads). PASSIVE makes waiting threads sleep, as TensorFlow's pool does.
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip

    def _answer(self) -> dict | None:
        line = self.process.stdout.readline()
        if line.startswith("{"):
            return json.loads(line)
        self.error = "failed: " + (self.process.stderr.read().strip().splitlines() or ["?"])[-1]
        return None

    def wait_ready(self) -> None:
        if self.process is not None and self.error is None:
            self.meta = self._answer() or {}

    @property
    def available(self) -> bool:
        return self.process is not None and self.error is None

    def run(self, steps: int) -> tuple[float, float] | None:
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        answer = self._answer()
        if answer is None:
            return None
        return answer["examples_per_s"], answer["cpu_s"] / (steps * self.batch_size)

    def close(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


REFERENCES = (
    ("JAX + optax, jax.jit step", "jax_reference.py", [], "jax"),
    ("PyTorch eager", "torch_reference.py", [], "torch"),
    ("PyTorch torch.compile", "torch_reference.py", ["--compile"], "torch"),
)


def measure_rounds(rows: list, steps: int, rounds: int) -> list[float]:
    """Runs every row once per round, in order, `rounds` times; stores `rates` and `cpu`.

    Returns the matmul peak measured after every round (under load a single measurement can
    be far below the machine's; the table uses the best of all).
    """
    peaks = []
    for row in rows:
        row.rates, row.cpu = [], []
    for index in range(rounds):
        for row in rows:
            if isinstance(row, Reference) and not row.available:
                continue
            result = row.run(steps)
            if result is not None:
                row.rates.append(result[0])
                row.cpu.append(result[1])
        summary = ", ".join(f"{r.rates[-1]:,.0f}" for r in rows if r.rates)
        peaks.append(measure_matmul_peak(repeats=5))
        print(f"  round {index + 1}/{rounds} examples/s: {summary} (load "
              f"{os.getloadavg()[0]:.1f}, matmul {peaks[-1]:.0f} GFLOP/s)", flush=True)  # fmt: skip
    return peaks


def time_input_pipeline(dataset: tf.data.Dataset, steps: int, batch_size: int) -> float:
    """Examples/s of iterating the input pipeline alone (no model), after a warm-up."""
    iterator = iter(dataset)
    for _ in range(20):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - start)


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
    from keras_vae.engine import cluster

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


def summarise(row, flops: dict, peak: float, cpu_peak: float) -> dict:
    """The row's median and best rate, CPU time per example, GFLOP/s and share of peak."""
    if not getattr(row, "rates", None):
        return {"setting": row.name, "error": getattr(row, "error", None) or "no result"}
    rate = statistics.median(row.rates)
    flops = getattr(row, "flops", flops)  # a conv row counts its own model's
    gflops = rate * flops["total_flops"] / 1e9
    return {
        "setting": row.name,
        "examples_per_s": rate,
        "best_examples_per_s": max(row.rates),
        "rounds": row.rates,
        "cpu_us_per_example": 1e6 * statistics.median(row.cpu),
        "gflops": gflops,
        "fraction_of_peak": gflops / peak,
        # FLOPs per CPU-second over the matmul's FLOPs per CPU-second: the share of the
        # machine's matmul rate that the step's CPU time achieves, robust to other jobs' load
        "fraction_of_cpu_peak": flops["total_flops"] / statistics.median(row.cpu) / 1e9 / cpu_peak,
        **getattr(row, "config", {}),
        **getattr(row, "meta", {}),
    }


def print_table(results: list[dict], jax_row: dict | None) -> None:
    jax_rate = (jax_row or {}).get("examples_per_s")
    jax_cpu = (jax_row or {}).get("cpu_us_per_example")
    print("| setting | examples/s (median) | best round | vs JAX | CPU us/example | "
          "JAX CPU / this | GFLOP/s | % of matmul peak | % of matmul rate per CPU-s |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in results:
        rate = row.get("examples_per_s")
        if rate is None:
            print(f"| {row['setting']} | {row.get('error', 'failed')} | | | | | | | |")
            continue
        versus = f"{rate / jax_rate:.2f}" if jax_rate else ""
        cpu = row.get("cpu_us_per_example")
        cpu_versus = f"{jax_cpu / cpu:.2f}" if jax_cpu and cpu else ""
        if row.get("network") == "conv":  # the references are the MLP only
            versus = cpu_versus = "n/a"
        cpu_text = f"{cpu:.1f}" if cpu else ""
        share = row.get("fraction_of_cpu_peak")
        cpu_share = f"{100 * share:.0f}" if share else ""
        print(f"| {row['setting']} | {rate:,.0f} | {row['best_examples_per_s']:,.0f} | {versus} | "
              f"{cpu_text} | {cpu_versus} | {row['gflops']:.1f} | "
              f"{100 * row['fraction_of_peak']:.0f} | {cpu_share} |")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_data_dir(), help="TFDS data dir")
    parser.add_argument("--steps", type=int, default=1000, help="timed steps per row")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per row")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        nargs="+",
        metavar="N",
        help="values to try (default 1 10 50; --quick: 10)",
    )
    parser.add_argument("--no-references", action="store_true", help="skip JAX and PyTorch")
    parser.add_argument(
        "--no-distributed",
        action="store_true",
        help="skip the MirroredStrategy / MultiWorkerMirroredStrategy rows",
    )
    parser.add_argument(
        "--conv", action="store_true", help="also the conv VAE rows (28x28x1, 32x32x3)"
    )
    parser.add_argument(
        "--conv-only", action="store_true", help="the conv rows only (no MLP, references)"
    )
    parser.add_argument("--conv-steps", type=int, default=100, help="timed steps per conv row")
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args(argv)
    # Each setting builds a new model, hence new tf.functions; TF then warns about
    # "retracing" although no function is traced twice (checked: repeated fits take no time).
    tf.get_logger().setLevel("ERROR")
    if args.quick:
        args.steps, args.rounds, args.no_distributed = 100, 3, True
    if not args.steps_per_execution:
        args.steps_per_execution = [10] if args.quick else [1, 10, 50]
    if args.conv_only:
        args.conv, args.no_references, args.no_distributed = True, True, True
    batch = args.batch_size

    threads = intra_op_threads()
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, keras_vae "
        f"{keras_vae.__version__}; {threads} intra-op threads, "
        f"{tf.config.threading.get_inter_op_parallelism_threads() or 'default'} inter-op, "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}"
    )
    flops = flops_per_example()
    if args.conv_only:
        print(f"Conv VAE rows only ({CONV_MODEL}), batch {batch}, Adam; no MLP rows, "
              "no references")  # fmt: skip
    else:
        print(
            f"Model 784-500-20 (tanh, Bernoulli), batch {batch}, Adam; "
            f"{flops['total_flops'] / 1e6:.2f} MFLOP per training example "
            f"(forward {flops['forward_macs']:,} + backward {flops['backward_macs']:,} MACs)"
        )
    peak, cpu_peak = measure_matmul_peak(), measure_matmul_peak(cpu=True)
    print(f"float32 matmul peak (2048x2048 tf.matmul): {peak:.1f} GFLOP/s, "
          f"{cpu_peak:.1f} GFLOP per CPU-second")  # fmt: skip

    images = kv_data.load_images("binarized_mnist", split="train", data_dir=args.data_dir)
    dataset = kv_data.make_dataset(
        images, batch_size=batch, shuffle=True, seed=0, repeat=True, drop_remainder=True
    )
    pipeline_rate = time_input_pipeline(dataset, max(args.steps, 200), batch)

    references = [] if args.no_references else [Reference(*r) for r in REFERENCES]
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "train.npy"
        np.save(data_path, (images.reshape(len(images), -1) > 0.5).astype(np.uint8))
        for reference in references:
            reference.start(data_path, batch, threads)
        settings = [(jit, spe, True) for jit in (False, True) for spe in args.steps_per_execution]
        if 10 in args.steps_per_execution:
            settings.append((True, 10, False))  # the default setting before fused steps
        rows = []
        for jit, spe, fuse in [] if args.conv_only else settings:
            rows.append(KerasSetting(dataset, batch, jit, spe, fuse))
            print(f"  warm-up {rows[-1].name}: {rows[-1].warmup_s:.1f} s", flush=True)
        if args.conv:
            rows += conv_rows(images, batch, args.conv_steps)
        for reference in references:
            reference.wait_ready()
        peak = max([peak, *measure_rounds(rows + references, args.steps, args.rounds)])
        for reference in references:
            reference.close()

    distributed = []
    if not args.no_distributed:
        per_round = max(30, args.steps // 3)
        distributed = run_distributed_rows(args.data_dir, per_round, 3)
    results = [summarise(row, flops, peak, cpu_peak) for row in rows]
    reference_results = [summarise(row, flops, peak, cpu_peak) for row in references]
    jax_row = next((r for r in reference_results if r["setting"].startswith("JAX")), None)
    for row in distributed:
        if "examples_per_s" in row:
            row.update(gflops=row["examples_per_s"] * flops["total_flops"] / 1e9)
            row.update(fraction_of_peak=row["gflops"] / peak)
    print()
    print_table(results + reference_results + distributed, jax_row)
    print(f"| input pipeline alone (make_dataset) | {pipeline_rate:,.0f} | | | | | | | |")
    print(f"| float32 matmul peak, 2048x2048 (best of the run) | | | | | | {peak:.1f} | 100 | "
          f"100 ({cpu_peak:.1f} GFLOP per CPU-s) |")  # fmt: skip

    summary = {
        "batch_size": batch,
        "peak_gflops": peak,
        "cpu_peak_gflops_per_cpu_s": cpu_peak,
        "flops_per_example": None if args.conv_only else flops["total_flops"],  # the MLP's
        "input_pipeline_examples_per_s": pipeline_rate,
        "results": results,
        "references": reference_results,
        "distributed": distributed,
        "loadavg": os.getloadavg(),
        "tf_version": tf.__version__,
        "keras_version": keras.__version__,
        "threads": threads,
    }
    mlp_results = [r for r in results if r.get("network") != "conv"]
    if mlp_results:
        summary = {**report_default(mlp_results, reference_results), **summary}
    if args.json:
        print(json.dumps(summary))


def report_default(results: list[dict], reference_results: list[dict]) -> dict:
    """Prints the default MLP setting's rate and its ratios to the references; returns them
    (the first keys of the `--json` summary)."""
    default = next(
        (r for r in results if r.get("jit_compile") and r.get("steps_per_execution") == 10
         and r.get("fuse_steps")), max(results, key=lambda r: r["examples_per_s"]),
    )  # fmt: skip

    def ratio(name: str, key: str = "examples_per_s") -> float | None:
        other = next((r for r in reference_results if r["setting"].startswith(name)), {})
        if other.get(key) is None:
            return None
        if key == "cpu_us_per_example":  # less CPU per example is faster
            return other[key] / default[key]
        return default[key] / other[key]

    ratios = {
        "ratio_vs_jax": ratio("JAX"),
        "ratio_vs_torch_compile": ratio("PyTorch torch.compile"),
        "ratio_vs_torch": ratio("PyTorch eager"),
        "cpu_ratio_vs_jax": ratio("JAX", "cpu_us_per_example"),
        "cpu_ratio_vs_torch_compile": ratio("PyTorch torch.compile", "cpu_us_per_example"),
    }
    print()
    print(f"keras_vae default ({default['setting']}): {default['examples_per_s']:,.0f} examples/s"
          f", {100 * default['fraction_of_peak']:.0f}% of the matmul peak "
          f"({100 * default['fraction_of_cpu_peak']:.0f}% per CPU-second); load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    for key, value in ratios.items():
        if value is not None:
            print(f"  {key}: {value:.2f}")
    keys = ("examples_per_s", "setting", "gflops", "fraction_of_peak", "fraction_of_cpu_peak",
            "cpu_us_per_example")  # fmt: skip
    return {**{key: default[key] for key in keys}, **ratios}


if __name__ == "__main__":
    main()
