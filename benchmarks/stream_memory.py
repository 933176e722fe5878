"""Peak memory of streaming a large tfds split (keras_vae.data.open_stream) versus loading it.

Prepares a tfds data set of random uint8 images (default: 200,000 of 28x28x1, 157 MB as
stored, 627 MB as float32) once into --data-dir, then runs each way of reading one shuffled
epoch in a fresh process and reports the rise of its peak resident set size (VmHWM) over the
peak after TensorFlow's start and a warm-up read of 1,000 images:

    python benchmarks/stream_memory.py --data-dir /tmp/kv_stream_bench

`stream`: `open_stream(...).dataset(batch_size=100, seed=0)` with --shuffle-buffer examples;
`load`: `load_images(...)`, the whole split as float32, then `make_dataset` over it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import tensorflow_datasets as tfds

from keras_vae.data import pipeline as data


def builder_class(count: int, shape: tuple[int, ...]):
    """A tfds builder of `count` random uint8 images of `shape` (seeded)."""

    class StreamBenchImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            image = tfds.features.Tensor(
                shape=shape, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
            )
            features = tfds.features.FeaturesDict({"image": image})
            return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            rng = np.random.default_rng(0)
            for start in range(0, count, 1000):
                block = rng.integers(0, 256, (min(1000, count - start), *shape), np.uint8)
                for i, image in enumerate(block):
                    yield start + i, {"image": image}

    return StreamBenchImages


def _peak_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure(args: argparse.Namespace) -> dict:
    """One way of reading one epoch, in this process; the peak's rise in MiB."""
    builder_class(args.examples, tuple(args.shape))  # registers the name with tfds
    data.DATASET_SPECS["stream_bench_images"] = data.DatasetSpec(
        "stream_bench_images", tuple(args.shape), "gaussian", ("train",), 1 / 255, (), ""
    )
    options = {"data_dir": args.data_dir}
    warm = data.open_stream("stream_bench_images", "train", limit=1000, **options)
    sum(len(b) for b in warm.dataset(batch_size=100, seed=0))
    base, start = _peak_mib(), time.perf_counter()
    if args.measure == "stream":
        stream = data.open_stream(
            "stream_bench_images", "train", shuffle_buffer=args.shuffle_buffer, **options
        )
        count = sum(len(b) for b in stream.dataset(batch_size=100, seed=0))
    else:
        images = data.load_images("stream_bench_images", "train", **options)
        count = sum(len(b) for b in data.make_dataset(images, batch_size=100, seed=0))
    return {
        "way": args.measure,
        "examples": count,
        "peak_rise_mib": round(_peak_mib() - base, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="where the data set is prepared")
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--shape", type=int, nargs="+", default=[28, 28, 1])
    parser.add_argument("--shuffle-buffer", type=int, default=10_000)
    parser.add_argument("--measure", choices=("stream", "load"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args)))
        return
    builder_class(args.examples, tuple(args.shape))(data_dir=args.data_dir).download_and_prepare()
    float32_mib = args.examples * np.prod(args.shape) * 4 / 2**20
    print(f"{args.examples:,} images {'x'.join(map(str, args.shape))}: "
          f"{float32_mib:,.0f} MiB as float32, shuffle buffer {args.shuffle_buffer:,}")  # fmt: skip
    print("| way | examples | peak RSS rise (MiB) | seconds |\n| --- | ---: | ---: | ---: |")
    for way in ("stream", "load"):
        command = [sys.executable, __file__, *sys.argv[1:], "--measure", way]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {way} | {result['examples']:,} | {result['peak_rise_mib']:,} | "
              f"{result['seconds']} |")  # fmt: skip


if __name__ == "__main__":
    main()
