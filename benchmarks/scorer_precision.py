"""The exported scorer in float32 and in mixed bfloat16 (`keras-vae export --precision`).

Exports a trained VAE run once per precision (`export_run(..., precision=P, tflite=False)`,
SavedModels only, with the export's own self-checks), loads each `scorer/1` with
`tf.saved_model.load` and times its `serving_default` (x -> elbo, log_likelihood with K
importance samples drawn inside the graph) on the first `--examples` test images in batches
of `--batch`: rounds interleave the precisions (one pass of each per round); per precision
the median round's images/s and CPU seconds per 1,000 images (process CPU time, all
threads). Then the two scorers' `score_with_noise` on the same images and the same noise:
the paired mean difference of log_likelihood (bfloat16 - float32) with its standard error,
and the export's own recorded float32 agreement.

Usage (from the repository root):
    python benchmarks/scorer_precision.py --run-dir runs/mnist3 --examples 500 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_vae.runs import directory as runs  # noqa: E402
from keras_vae.runs.splits import load_split  # noqa: E402
from keras_vae.workflows.export import export_run  # noqa: E402


def _pass(scorer, images: np.ndarray, batch: int) -> tuple[float, float]:
    """Wall and CPU seconds of one pass of `serving_default` over `images`."""
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(images), batch):
        scorer.signatures["serving_default"](x=tf.constant(images[start : start + batch]))
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained VAE run")
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--examples", type=int, default=500, help="test images timed")
    parser.add_argument("--batch", type=int, default=100, help="images per scorer call")
    parser.add_argument("--samples", type=int, default=100, help="K of the scorer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args(argv)
    from _machine import cpu_line

    print(cpu_line())
    _, config = runs.load_run(args.run_dir)
    images = load_split(config, "test", config.likelihood)[: args.examples]
    images = np.asarray(images, np.float32)
    root = Path(tempfile.mkdtemp(prefix="scorer_precision_"))
    scorers, reports = {}, {}
    for precision in args.precisions:
        reports[precision] = export_run(
            args.run_dir, root / precision, tflite=False, precision=precision,
            scorer_samples=args.samples, progress=None,
        )  # fmt: skip
        scorers[precision] = tf.saved_model.load(str(root / precision / "scorer" / "1"))
        _pass(scorers[precision], images[: args.batch], args.batch)  # warm-up
    timings = {p: [] for p in args.precisions}
    for _ in range(args.rounds):
        for precision in args.precisions:
            timings[precision].append(_pass(scorers[precision], images, args.batch))
    rows = {}
    for precision, passes in timings.items():
        wall = statistics.median(w for w, _ in passes)
        cpu = statistics.median(c for _, c in passes)
        rows[precision] = {"images_per_s": len(images) / wall,
                           "cpu_s_per_1000": 1000 * cpu / len(images)}  # fmt: skip
    base = args.precisions[0]
    eps = np.random.default_rng(0).standard_normal((args.samples, len(images), config.latent_dim))
    scores = {}
    for precision, scorer in scorers.items():
        parts = []
        for start in range(0, len(images), args.batch):
            rows_ = slice(start, start + args.batch)
            out = scorer.signatures["score_with_noise"](
                x=tf.constant(images[rows_]), eps=tf.constant(eps[:, rows_], tf.float32)
            )
            parts.append(out["log_likelihood"].numpy().astype(np.float64))
        scores[precision] = np.concatenate(parts)
    print(f"\n{len(images)} test images, batch {args.batch}, K = {args.samples}, "
          f"{args.rounds} interleaved rounds, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| scorer | images/s | CPU s per 1,000 images | speed-up (wall, CPU) | "
          "log_likelihood - float32's (same noise) | export's check |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for precision, row in rows.items():
        difference = scores[precision] - scores[base]
        stderr = difference.std(ddof=1) / np.sqrt(len(difference))
        row.update(mean_difference=float(difference.mean()), stderr=float(stderr),
                   max_abs_difference=float(np.abs(difference).max()))  # fmt: skip
        scorer = next(a for a in reports[precision]["artefacts"] if a["path"] == "scorer/1")
        check = scorer.get("float32_agreement", {}).get("log_likelihood", {})
        row["export_check"] = check.get("mean_difference")
        wall_up = row["images_per_s"] / rows[base]["images_per_s"]
        cpu_up = rows[base]["cpu_s_per_1000"] / row["cpu_s_per_1000"]
        check = "" if row["export_check"] is None else format(row["export_check"], "+.4f")
        print(
            f"| {precision} | {row['images_per_s']:.0f} | {row['cpu_s_per_1000']:.2f} | "
            f"{wall_up:.2f}x, {cpu_up:.2f}x | {row['mean_difference']:+.4f} +- {stderr:.4f} "
            f"(max {row['max_abs_difference']:.3f}) | {check} |"
        )
    if args.json:
        print(json.dumps({"rows": rows, "loadavg": os.getloadavg()}))


if __name__ == "__main__":
    main()
