"""Inference speed of the exported encoder and decoder: Keras vs SavedModel vs TFLite.

For each runtime, encode (x -> loc, scale) and decode (z -> mean and parameters) are timed at
batch 1 (latency: median over `--runs` calls, in ms) and at batch 256 (throughput: 256 / the
median call time, in examples/s):

* `keras`: the Keras model called eagerly, `model.encode(x).mean()`/`.stddev()` and
  `model.decode(z).mean()`, as a Python user calls it;
* `savedmodel`: the `serving_default` signatures loaded with `tf.saved_model.load` (what TF
  Serving runs, minus the server);
* `tflite` (float32), `tflite-dynamic`, `tflite-float16`, `tflite-int8`: the `.tflite` files
  through `ai_edge_litert` signature runners with `num_threads=2`.

The scorer (x -> elbo, log_likelihood with K = 100 importance samples) is timed for the
SavedModel and the float32 `.tflite` at batch 1 and 16 (`score_*` keys, second table).

Weights do not affect speed, so by default the AEVB paper's MNIST model (784-500-20) is built
untrained and exported to a temporary directory; `--run-dir` exports a trained run instead,
`--export-dir` times an existing export (without the Keras row). Sizes are encoder + decoder.
On a shared machine the numbers are indicative only.

`--network conv` builds the convolutional VAE of `throughput.py`'s conv rows instead (stride-2
3x3 convolutions of 32 and 64 channels, a dense layer of 256, relu, latent 20), for
`--image-shape H W C` (default 28 28 1) and `--likelihood` (default bernoulli; `logistic` for
8-bit colour, whose images are then random levels k/255 for the int8 calibration and the
timed calls).

Usage (from the repository root):
    python benchmarks/inference.py                      # about a minute on 2 cores
    python benchmarks/inference.py --run-dir runs/mnist --json
    python benchmarks/inference.py --network conv --image-shape 32 32 3 --likelihood logistic
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

import keras_vae  # noqa: E402
from keras_vae.models.vae import export  # noqa: E402

THROUGHPUT_BATCH = 256
VARIANTS = ("none", "dynamic", "float16", "int8")
# the conv model (`--network conv`): mlp_vae arguments besides the image shape and likelihood
CONV_MODEL = {
    "latent_dim": 20, "hidden_units": [256], "activation": "relu", "network": "conv",
    "network_options": {"filters": [32, 64], "kernel_size": 3},
}  # fmt: skip


def images(count: int, image_shape, likelihood: str, seed: int) -> np.ndarray:
    """Random images the likelihood accepts: binary for Bernoulli, else 8-bit levels k/255."""
    rng = np.random.default_rng(seed)
    if likelihood == "bernoulli":
        return (rng.uniform(size=(count, *image_shape)) > 0.5).astype(np.float32)
    return (rng.integers(0, 256, size=(count, *image_shape)) / 255.0).astype(np.float32)


def median_seconds(fn: Callable[[], object], runs: int, warmup: int = 5) -> float:
    """Median wall time of `fn()` over `runs` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def keras_runtime(model) -> dict[str, Callable]:
    def encode(x):
        q = model.encode(x)
        return q.mean().numpy(), q.stddev().numpy()

    return {"encode": encode, "decode": lambda z: model.decode(z).mean().numpy()}


def saved_model_runtime(export_dir: Path, version: int) -> dict[str, Callable]:
    encoder = tf.saved_model.load(str(export_dir / "encoder" / str(version)))
    decoder = tf.saved_model.load(str(export_dir / "decoder" / str(version)))
    encode, decode = encoder.signatures["serving_default"], decoder.signatures["serving_default"]
    return {
        "encode": lambda x: {k: v.numpy() for k, v in encode(x=tf.constant(x)).items()},
        "decode": lambda z: {k: v.numpy() for k, v in decode(z=tf.constant(z)).items()},
    }


def tflite_runtime(export_dir: Path, variant: str) -> dict[str, Callable]:
    runners = {}
    for part in ("encoder", "decoder"):
        path = export_dir / export.tflite_filename(part, variant)
        interpreter = Interpreter(model_path=str(path), num_threads=2)
        runners[part] = interpreter.get_signature_runner("serving_default")
    return {
        "encode": lambda x: runners["encoder"](x=x),
        "decode": lambda z: runners["decoder"](z=z),
    }


def scorer_runtimes(export_dir: Path, version: int) -> dict[str, Callable]:
    """The scorer's serving_default as a SavedModel and as `scorer.tflite`, where present."""
    runtimes = {}
    path = export_dir / "scorer" / str(version)
    if path.is_dir():
        score = tf.saved_model.load(str(path)).signatures["serving_default"]
        runtimes["savedmodel"] = lambda x: {
            k: v.numpy() for k, v in score(x=tf.constant(x)).items()
        }
    if (export_dir / "scorer.tflite").exists():
        interpreter = Interpreter(model_path=str(export_dir / "scorer.tflite"), num_threads=2)
        runtimes["tflite"] = interpreter.get_signature_runner("serving_default")
    return runtimes


def measure_scorer(
    runtimes: dict[str, Callable], image_shape, runs: int, likelihood: str = "bernoulli"
) -> dict:
    """Latency (ms) at batch 1 and throughput (images/s) at batch 16 of each scorer runtime."""
    result = {}
    for name, fn in runtimes.items():
        row = {}
        for batch in (1, 16):
            x = images(batch, image_shape, likelihood, seed=batch)
            seconds = median_seconds(lambda f=fn, d=x: f(x=d), max(runs // 10, 5))
            row[f"score_b{batch}"] = seconds * 1e3 if batch == 1 else batch / seconds
        result[name] = row
    return result


def sizes(export_dir: Path, version: int) -> dict[str, int]:
    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    result = {
        "savedmodel": sum(size(export_dir / p / str(version)) for p in ("encoder", "decoder"))
    }
    for variant in VARIANTS:
        files = [export_dir / export.tflite_filename(p, variant) for p in ("encoder", "decoder")]
        if all(f.exists() for f in files):
            result[_name(variant)] = sum(f.stat().st_size for f in files)
    return result


def _name(variant: str) -> str:
    return "tflite" if variant == "none" else f"tflite-{variant}"


def measure(
    runtime: dict[str, Callable], image_shape, latent_dim: int, runs: int,
    likelihood: str = "bernoulli",
) -> dict:  # fmt: skip
    rng = np.random.default_rng(0)
    result = {}
    for batch, key in ((1, "latency_ms"), (THROUGHPUT_BATCH, "examples_per_s")):
        x = images(batch, image_shape, likelihood, seed=batch)
        z = rng.standard_normal((batch, latent_dim)).astype(np.float32)
        for op, data in (("encode", x), ("decode", z)):
            seconds = median_seconds(
                lambda fn=runtime[op], d=data: fn(d), runs if batch == 1 else runs // 5
            )
            result[f"{op}_{key}"] = seconds * 1e3 if batch == 1 else batch / seconds
    return result


def prepare(args) -> tuple[object | None, Path, int]:
    """The Keras model (or None) and an export directory with every TFLite variant."""
    if args.export_dir:
        report = json.loads((args.export_dir / "export_report.json").read_text())
        return None, args.export_dir, report["version"]
    if args.run_dir:
        from keras_vae.runs import directory as runs

        model, _ = runs.load_run(args.run_dir)
    elif args.network == "conv":
        shape = tuple(args.image_shape)
        model = keras_vae.mlp_vae(shape, likelihood=args.likelihood, seed=0, **CONV_MODEL)
        model.build((None, *shape))
    else:
        model = keras_vae.mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500, seed=0)
        model.build((None, 28, 28, 1))
    export_dir = Path(tempfile.mkdtemp(prefix="keras-vae-inference-"))
    likelihood = model.likelihood.registered_name
    representative = images(256, model.image_shape, likelihood, seed=1)
    export.export_vae(
        model, export_dir, quantize=VARIANTS, representative_images=representative, progress=None
    )
    return model, export_dir, 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="export this trained run (and time Keras)")
    parser.add_argument("--export-dir", type=Path, help="time an existing export (no Keras row)")
    parser.add_argument("--runs", type=int, default=200, help="timed calls at batch 1")
    parser.add_argument(
        "--network", choices=("mlp", "conv"), default="mlp", help="the untrained model's bodies"
    )
    parser.add_argument(
        "--image-shape", type=int, nargs=3, default=[28, 28, 1], metavar=("H", "W", "C"),
        help="conv: image shape (default 28 28 1)",
    )  # fmt: skip
    parser.add_argument("--likelihood", default="bernoulli", help="conv: the likelihood")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args(argv)
    from _machine import cpu_line

    print(cpu_line())

    model, export_dir, version = prepare(args)
    try:
        run(args, model, export_dir, version)
    finally:
        if not args.export_dir:  # the temporary export of prepare()
            shutil.rmtree(export_dir, ignore_errors=True)


def run(args, model, export_dir: Path, version: int) -> None:
    report = json.loads((export_dir / "export_report.json").read_text())
    image_shape, latent_dim = report["model"]["image_shape"], report["model"]["latent_dim"]
    runtimes = {"keras": (lambda: keras_runtime(model))} if model is not None else {}
    runtimes["savedmodel"] = lambda: saved_model_runtime(export_dir, version)
    for variant in VARIANTS:
        if (export_dir / export.tflite_filename("encoder", variant)).exists():
            runtimes[_name(variant)] = lambda v=variant: tflite_runtime(export_dir, v)
    file_sizes = sizes(export_dir, version)
    likelihood = report["model"]["likelihood"]
    results = {}
    for name, make in runtimes.items():
        results[name] = measure(make(), image_shape, latent_dim, args.runs, likelihood)
        results[name]["bytes"] = file_sizes.get(name)

    network = getattr(getattr(model, "encoder", None), "registered_name", "exported")
    print(
        f"\nInference: {network} VAE, image {tuple(image_shape)}, latent {latent_dim}, "
        f"{report['model']['likelihood']}; {os.cpu_count()} CPUs, TF {tf.__version__}\n"
    )
    print(
        "| runtime | size (MB) | encode b=1 (ms) | decode b=1 (ms) | encode b=256 (ex/s) "
        "| decode b=256 (ex/s) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        size = f"{r['bytes'] / 1e6:.2f}" if r["bytes"] else "-"
        print(
            f"| {name} | {size} | {r['encode_latency_ms']:.3f} | {r['decode_latency_ms']:.3f} "
            f"| {r['encode_examples_per_s']:,.0f} | {r['decode_examples_per_s']:,.0f} |"
        )
    scorer = measure_scorer(
        scorer_runtimes(export_dir, version), image_shape, args.runs, likelihood
    )
    if scorer:
        print("\n| scorer (K = 100) | score b=1 (ms) | score b=16 (images/s) |\n|---|---:|---:|")
        for name, r in scorer.items():
            print(f"| {name} | {r['score_b1']:.2f} | {r['score_b16']:,.0f} |")
    if args.json:
        print(json.dumps({"model": report["model"], "results": results, "scorer": scorer}))


if __name__ == "__main__":
    main()
