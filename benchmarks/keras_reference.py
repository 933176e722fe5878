"""keras_vae's entry for `throughput.py`: the paper's MNIST model trained with `VAE.fit`.

Model: `mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500)` (784-500-20, tanh, Bernoulli
decoder), Adam(1e-3), the real static binarized MNIST through `keras_vae.data.make_dataset`
(shuffled, repeated), compiled as a user compiles it: `vae.compile(optimizer=...)`, i.e. the
package's defaults (XLA and `steps_per_execution=10` with fused steps today), unless `--xla`,
`--steps-per-execution` or `--no-fuse-steps` ask for another setting.

Precision (`--precision float32|mixed_bfloat16|mixed_float16`): passed to the package when it
has the option (a `precision=` argument of `VAE.compile` or of `mlp_vae`, looked up in that
order); otherwise the fallback is Keras' global dtype policy
(`keras.mixed_precision.set_global_policy`) set before the model is built, and the row says so
(`precision_source`). A warm-up `fit` (tracing, XLA compilation) is untimed; a timed `fit`
leaves out its first execution (`ExecutionTimer`).

Usage (a plain run, as a user would time it; prints the CPU and one result line):
    python benchmarks/keras_reference.py --steps 1000 [--batch-size 100]
        [--precision mixed_bfloat16] [--xla on|off] [--steps-per-execution N] [--json]
`throughput.py` starts it with `--serve` (rounds asked on stdin, `_serve.py`) and once with
`--write-data FILE` to get the same images as a uint8 .npy for the other frameworks.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _machine import cpu_info, cpu_line  # noqa: E402
from _serve import serve  # noqa: E402

import keras_vae  # noqa: E402
from keras_vae.data import pipeline as kv_data  # noqa: E402

IMAGE_SHAPE = (28, 28, 1)
INPUT_DIM = 784
HIDDEN_UNITS = 500
LATENT_DIM = 20
BATCH_SIZE = 100
LEARNING_RATE = 1e-3
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def default_data_dir() -> str:
    shared = REPO_ROOT.parent / "shared" / "tensorflow_datasets"
    return os.environ.get("TFDS_DATA_DIR") or str(shared)


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
    """
    layers = [(input_dim, hidden), (hidden, 2 * latent), (latent, hidden), (hidden, input_dim)]
    forward = sum(n_in * n_out for n_in, n_out in layers)
    first_layer = layers[0][0] * layers[0][1]
    backward = forward + (forward - first_layer)  # weight grads + input grads (not layer 1)
    return {"forward_macs": forward, "backward_macs": backward,
            "total_flops": 2 * (forward + backward)}  # fmt: skip


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


def measure_matmul_peak(n: int = 2048, repeats: int = 10, dtype=tf.float32) -> float:
    """Matmul rate in GFLOP/s: the best of `repeats` n x n `tf.matmul`s (TF graph ops, no
    XLA: oneDNN's kernels, AMX for bfloat16 where the CPU has it)."""
    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
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
        self.loss = None

    def on_train_batch_end(self, batch, logs=None):
        self.marks.append((batch + 1, time.perf_counter()))
        self.loss = (logs or {}).get("loss", self.loss)

    def examples_per_s(self, batch_size: int) -> float:
        """Rate between the end of the first and of the last execution of the `fit` call.

        Leaving out the first execution leaves out the start-up of `fit` and of the data
        iterator (filling the shuffle buffer), which happen once per `fit` call.
        """
        (first_steps, first_time), (last_steps, last_time) = self.marks[0], self.marks[-1]
        return (last_steps - first_steps) * batch_size / (last_time - first_time)


def apply_precision(precision: str) -> tuple[dict, dict, str]:
    """How to ask keras_vae for `precision`: (mlp_vae kwargs, compile kwargs, source).

    The package's own option when it has one; otherwise Keras' global dtype policy, set
    here, before any model is built (source `"keras global policy (fallback)"`).
    """
    if precision == "float32":
        return {}, {}, "float32 (the default)"
    if "precision" in inspect.signature(keras_vae.VAE.compile).parameters:
        return {}, {"precision": precision}, "keras_vae: VAE.compile(precision=...)"
    if "precision" in inspect.signature(keras_vae.mlp_vae).parameters:
        return {"precision": precision}, {}, "keras_vae: mlp_vae(precision=...)"
    keras.mixed_precision.set_global_policy(precision)
    print(f"keras_vae {keras_vae.__version__} has no precision option: falling back to "
          f"keras.mixed_precision.set_global_policy({precision!r})"
          + (" (no loss scaling)" if precision == "mixed_float16" else ""),
          file=sys.stderr, flush=True)  # fmt: skip
    return {}, {}, "keras global policy (fallback)"


def compiled_vae(
    jit_compile: bool | None = None,
    steps_per_execution: int | None = None,
    seed: int = 0,
    fuse_steps: bool = True,
    model_kwargs: dict | None = None,
    compile_kwargs: dict | None = None,
) -> keras_vae.VAE:
    """A fresh paper MNIST model compiled for one setting; None keeps the package default."""
    keras.utils.set_random_seed(seed)
    vae = keras_vae.mlp_vae(
        IMAGE_SHAPE, latent_dim=LATENT_DIM, hidden_units=HIDDEN_UNITS, seed=seed,
        **(model_kwargs or {}),
    )  # fmt: skip
    vae.fuse_steps = fuse_steps
    options = dict(compile_kwargs or {})
    if jit_compile is not None:
        options["jit_compile"] = jit_compile
    if steps_per_execution is not None:
        options["steps_per_execution"] = steps_per_execution
    vae.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), **options)
    return vae


def timed_fit(
    vae: keras_vae.VAE, dataset: tf.data.Dataset, steps: int, batch_size: int = BATCH_SIZE
) -> float:
    """Steady-state examples/s of one `vae.fit` of `steps` steps (see `ExecutionTimer`)."""
    return _timed_fit(vae, dataset, steps, batch_size)[0]


def _timed_fit(vae, dataset, steps: int, batch_size: int) -> tuple[float, float | None]:
    timer = ExecutionTimer()
    vae.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=[timer], shuffle=False, verbose=0)
    loss = None if timer.loss is None else float(np.asarray(timer.loss))
    return timer.examples_per_s(batch_size), loss


# the conv rows' model: mlp_vae arguments besides the image shape and likelihood
CONV_MODEL = {
    "latent_dim": LATENT_DIM, "hidden_units": [256], "activation": "relu", "network": "conv",
    "network_options": {"filters": [32, 64], "kernel_size": 3},
}  # fmt: skip


def colour_images(count: int = 5000, seed: int = 0) -> np.ndarray:
    """Random 8-bit colour images k/255, [count, 32, 32, 3] (speed does not depend on them)."""
    levels = np.random.default_rng(seed).integers(0, 256, size=(count, 32, 32, 3))
    return (levels / 255.0).astype(np.float32)


def make_run(args):
    """(run(steps) -> (examples/s, last loss), meta) for the chosen setting, warmed up."""
    model_kwargs, compile_kwargs, source = apply_precision(args.precision)
    jit = {"default": None, "on": True, "off": False}[args.xla]
    if args.conv:  # the conv VAE (no reference frameworks): 28x28x1 Bernoulli or 32x32x3
        mnist = args.conv == "bernoulli"
        images = load_mnist(args.data_dir) if mnist else colour_images()
        keras.utils.set_random_seed(0)
        vae = keras_vae.mlp_vae(images.shape[1:], likelihood=args.conv, seed=0, **CONV_MODEL,
                                **model_kwargs)  # fmt: skip
        options = {**compile_kwargs, **({} if jit is None else {"jit_compile": jit})}
        vae.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                    steps_per_execution=args.steps_per_execution or 10, **options)  # fmt: skip
    else:
        images = load_mnist(args.data_dir)
        vae = compiled_vae(jit, args.steps_per_execution, fuse_steps=args.fuse_steps,
                           model_kwargs=model_kwargs, compile_kwargs=compile_kwargs)  # fmt: skip
    dataset = kv_data.make_dataset(images, batch_size=args.batch_size, shuffle=True, seed=0,
                                   repeat=True, drop_remainder=True)  # fmt: skip
    spe = int(getattr(vae, "steps_per_execution", 1) or 1)
    start = time.perf_counter()
    vae.fit(dataset, epochs=1, steps_per_epoch=max(2 * spe, args.warmup // spe * spe),
            shuffle=False, verbose=0)  # fmt: skip
    warmup_s = time.perf_counter() - start

    def run(steps: int) -> tuple[float, float]:
        steps = max(3 * spe, -(-steps // spe) * spe)  # whole executions
        return _timed_fit(vae, dataset, steps, args.batch_size)

    flops = conv_flops_per_example(vae) if args.conv else flops_per_example()
    meta = {
        "keras_vae_version": keras_vae.__version__, "tf_version": tf.__version__,
        "keras_version": keras.__version__, "precision": args.precision,
        "precision_source": source, "xla": getattr(vae, "xla", None),
        "steps_per_execution": spe, "fuse_steps": vae.fuse_steps,
        "fused": bool(vae._fuses_steps()) if hasattr(vae, "_fuses_steps") else None,
        "dtype_policy": vae.dtype_policy.name, "warmup_s": warmup_s,
        "flops_per_example": flops["total_flops"], "cpu": cpu_info(),
        "keras_vae_file": keras_vae.__file__,
    }  # fmt: skip
    return run, meta


def load_mnist(data_dir: str) -> np.ndarray:
    return kv_data.load_images("binarized_mnist", split="train", data_dir=data_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_data_dir(), help="TFDS data dir")
    parser.add_argument("--steps", type=int, default=1000, help="timed steps")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first (at least "
                        "2 executions)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--xla", choices=["default", "on", "off"], default="default")
    parser.add_argument("--steps-per-execution", type=int, default=None,
                        help="default: the package's")  # fmt: skip
    parser.add_argument("--fuse-steps", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--conv", choices=["bernoulli", "logistic"], default=None,
                        help="the conv VAE (28x28x1 Bernoulli or 32x32x3 logistic)")  # fmt: skip
    parser.add_argument(
        "--matmul-peak",
        action="store_true",
        help="also measure the 2048^2 float32 and bfloat16 tf.matmul rates",
    )
    parser.add_argument("--write-data", metavar="FILE", help="write the binarized training "
                        "images as uint8 [N, 784] .npy and exit")  # fmt: skip
    parser.add_argument("--serve", action="store_true", help="timed rounds asked on stdin")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    if args.write_data:
        images = load_mnist(args.data_dir)
        np.save(args.write_data, (images.reshape(len(images), -1) > 0.5).astype(np.uint8))
        return
    if not args.serve:
        print(cpu_line(), flush=True)
    run, meta = make_run(args)
    if args.matmul_peak:
        meta["matmul_gflops"] = {"float32": measure_matmul_peak(),
                                 "bfloat16": measure_matmul_peak(dtype=tf.bfloat16)}  # fmt: skip
    if args.serve:
        serve(run, meta)
        return
    rate, loss = run(args.steps)
    print(f"keras_vae {keras_vae.__version__} ({meta['precision_source']}, XLA {meta['xla']}, "
          f"steps_per_execution {meta['steps_per_execution']}), batch {args.batch_size}: "
          f"{rate:,.0f} examples/s (last loss {loss:.1f} nats)")  # fmt: skip
    if args.json:
        print(json.dumps({"examples_per_s": rate, "final_loss": loss, **meta}))


if __name__ == "__main__":
    main()
