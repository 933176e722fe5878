"""Loads an export's SavedModels the way TF Serving does and runs every signature.

TF Serving loads a SavedModel in graph mode, in a Session, with the TensorFlow it was built on
(`tensorflow/serving:2.20.0` has TensorFlow 2.20). Run this with that TensorFlow version to see
whether an export written by a newer one (keras_vae pins 2.21) loads and runs there:

    pip install tensorflow-cpu==2.20.0            # in a separate environment
    python export/check_graph_mode.py export/mnist --output outputs-2.20.npz

Only TensorFlow and NumPy are needed. Inputs are seeded random data of each signature's shape
(`num_samples` = 3); with `--output` the outputs are saved, so two TensorFlow versions can be
compared (`--compare`) on the signatures that draw no noise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

# signatures that draw fresh noise on every call: not compared across versions
RANDOM = {
    "encoder/encode_sample", "decoder/sample", "scorer/serving_default", "prior/serving_default",
}  # fmt: skip


def feed_value(name: str, tensor_info, rng: np.random.Generator) -> np.ndarray:
    """Seeded input of the signature's shape (batch 4, unknown sizes 4) and dtype."""
    if name == "num_samples":
        return np.int32(3)
    dims = [d.size if d.size > 0 else 4 for d in tensor_info.tensor_shape.dim]
    if tensor_info.dtype == tf.int32.as_datatype_enum:  # labels y, or VQ-VAE codes
        return rng.integers(0, 2, size=dims).astype(np.int32)
    if name == "x":
        return (rng.random(dims) < 0.3).astype(np.float32)
    return rng.standard_normal(dims).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path, help="an export directory (e.g. export/mnist)")
    parser.add_argument("--version", default="1", help="the version directory to load")
    parser.add_argument("--output", type=Path, help="save the outputs to this .npz")
    parser.add_argument(
        "--compare", type=Path, help="an --output of another TensorFlow version: print the "
        "largest difference of each deterministic output",
    )  # fmt: skip
    args = parser.parse_args(argv)
    tf.compat.v1.disable_eager_execution()
    results = {}
    parts = sorted(p.name for p in args.export_dir.iterdir() if (p / args.version).is_dir())
    for part in parts:
        graph = tf.Graph()
        with tf.compat.v1.Session(graph=graph) as session:
            path = str(args.export_dir / part / args.version)
            meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
            for key, signature in sorted(meta.signature_def.items()):
                if key.startswith("__"):
                    continue
                rng = np.random.default_rng(0)
                feeds = {
                    graph.get_tensor_by_name(info.name): feed_value(name, info, rng)
                    for name, info in sorted(signature.inputs.items())
                }
                outputs = signature.outputs.items()
                fetches = {n: graph.get_tensor_by_name(i.name) for n, i in outputs}
                values = session.run(fetches, feeds)
                results.update({f"{part}/{key}/{n}": v for n, v in values.items()})
                shapes = ", ".join(f"{n} {list(v.shape)}" for n, v in sorted(values.items()))
                print(f"{part}/{args.version} {key}: {shapes}")
    if args.output:
        np.savez(args.output, **results)
    if args.compare:
        other = np.load(args.compare)
        for name in sorted(n for n in results if n.rsplit("/", 1)[0] not in RANDOM):
            difference = float(np.max(np.abs(results[name] - other[name])))
            print(f"{name}: largest difference {difference:.3g}")
    print(f"TensorFlow {tf.__version__}: {len(parts)} SavedModels, {len(results)} outputs, all ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
