"""Training throughput of the AEVB paper's MNIST model: keras_vae against JAX + optax `jit`,
PyTorch eager and `torch.compile`, in float32 and in each framework's mixed bfloat16, each
framework in its own fresh process with its own default environment, rounds interleaved.

Model (the same for all): 784-500-20 VAE, tanh MLPs, Gaussian q(z|x) with one
reparameterised sample, Bernoulli p(x|z), analytic KL, Adam(1e-3), the static binarized MNIST
training images, batch 100 and 1000 (`--batch-size`). One row per framework and precision:

    keras_vae            benchmarks/keras_reference.py  `vae.fit` with the package's defaults;
                         mixed_bfloat16 through the package's precision option, or Keras'
                         global dtype policy where the package has none (the row says which)
    JAX + optax jit      benchmarks/jax_reference.py    float32; bfloat16 compute, f32 params
    PyTorch eager        benchmarks/torch_reference.py  float32; torch.autocast bfloat16
    torch.compile        torch_reference.py --compile   float32; torch.autocast bfloat16

How it keeps the comparison fair:

- every row is a separate process started from this one with the environment this script was
  started with, less the variables that change a framework's threading (`THREADING_VARIABLES`,
  e.g. `OMP_WAIT_POLICY`, `OMP_NUM_THREADS`, `XLA_FLAGS`; each removal is printed), and with no
  thread count imposed: each framework uses its own default. This process imports none of
  TensorFlow, JAX or PyTorch (it idles while a row runs);
- each process warms up (tracing, compilation, `--warmup` steps) before the first round; the
  warm-up is not timed; the rows' warm-ups overlap, the timed runs never do;
- `--rounds` rounds: in each, every row runs the same number of examples (`--examples`, as
  whole steps) once, one row at a time, the order rotated by one each round, so load changes
  on a shared machine hit all rows alike. A row's figure is the median over the rounds (the
  best round and all rounds are in the JSON) with the process's CPU time per example;
- then every row is run *alone*: a plain invocation of its script (`python
  benchmarks/torch_reference.py --compile --precision bfloat16 --steps N --json ...`) with
  nothing else of this harness alive but this idle process. A row whose alone figure differs
  from its harness median by more than 10% gets a printed WARNING and `"agree": false`;
- ratios: keras_vae over the fastest peer of the same precision (and over the fastest of JAX
  jit and torch.compile, the issue's target), and keras_vae mixed_bfloat16 over its float32.

`--json` prints one JSON document (the last line) with every figure, the ratios, the load
averages, the versions and the CPU (`lscpu` model name, `amx_bf16`/`avx512_bf16`).
`--keras-variants` adds keras_vae rows with XLA off, `steps_per_execution` 50, and Keras' own
step loop; `--conv` adds the conv VAE rows (keras_vae only); `--distributed` the
MirroredStrategy / MultiWorkerMirroredStrategy rows (`strategy_throughput.py`).

Usage (from the repository root):
    python benchmarks/throughput.py --json                      # the full comparison
    python benchmarks/throughput.py --quick                     # smoke run, about 5 minutes
    python benchmarks/throughput.py --batch-size 1000 --rounds 3
    python benchmarks/throughput.py --frameworks keras_vae torch.compile --precisions bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _machine import cpu_info, cpu_line

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
# variables that change how a framework threads or compiles; a peer runs without them
THREADING_VARIABLES = (
    "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME", "KMP_AFFINITY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS",
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS",
    "TF_XLA_FLAGS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_VERBOSE",
)  # fmt: skip
FRAMEWORKS = ("keras_vae", "jax", "torch", "torch.compile")
PRECISIONS = ("float32", "bfloat16")
AGREEMENT = 0.10  # alone vs harness: warn beyond this relative difference
FLOPS_PER_EXAMPLE = 4_100_000  # keras_reference.flops_per_example(): 784-500-20, matmuls


@dataclass
class Row:
    """One framework x precision x setting: its command and its measurements."""

    name: str
    framework: str
    precision: str  # "float32" or "bfloat16" (keras_vae: mixed_bfloat16)
    script: str
    args: list[str]
    module: str  # the Python package it needs
    extra_env: dict = field(default_factory=dict)
    variant: str = "default"
    rates: list = field(default_factory=list)
    cpu: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    alone: list = field(default_factory=list)
    error: str | None = None
    process: subprocess.Popen | None = None
    steps: int = 0  # per round (conv rows: their own)

    def command(self, batch: int, data: Path, data_dir: str) -> list[str]:
        source = (
            ["--data-dir", data_dir] if self.framework == "keras_vae" else ["--data", str(data)]
        )
        return [sys.executable, str(HERE / self.script), *self.args, "--batch-size", str(batch),
                *source]  # fmt: skip


def default_rows(frameworks, precisions, keras_variants: bool, conv: bool) -> list[Row]:
    rows = []
    for precision in precisions:
        keras_precision = "mixed_bfloat16" if precision == "bfloat16" else "float32"
        if "keras_vae" in frameworks:
            rows.append(
                Row(
                    f"keras_vae default, {keras_precision}",
                    "keras_vae",
                    precision,
                    "keras_reference.py",
                    ["--precision", keras_precision],
                    "tensorflow",
                )
            )
            if keras_variants:
                for variant, extra in (
                    ("XLA off", ["--xla", "off"]),
                    ("XLA, steps_per_execution=50", ["--xla", "on", "--steps-per-execution", "50"]),
                    (
                        "XLA, Keras' step loop",
                        ["--xla", "on", "--steps-per-execution", "10", "--no-fuse-steps"],
                    ),
                    ("XLA, steps_per_execution=1", ["--xla", "on", "--steps-per-execution", "1"]),
                ):
                    rows.append(Row(f"keras_vae {variant}, {keras_precision}", "keras_vae",
                                    precision, "keras_reference.py",
                                    ["--precision", keras_precision, *extra], "tensorflow",
                                    variant=variant))  # fmt: skip
        peer_precision = ["--precision", precision]
        if "jax" in frameworks:
            rows.append(
                Row(
                    f"JAX + optax jit, {precision}",
                    "jax",
                    precision,
                    "jax_reference.py",
                    peer_precision,
                    "jax",
                )
            )
        if "torch" in frameworks:
            rows.append(
                Row(
                    f"PyTorch eager, {precision}",
                    "torch",
                    precision,
                    "torch_reference.py",
                    peer_precision,
                    "torch",
                )
            )
        if "torch.compile" in frameworks:
            rows.append(
                Row(
                    f"PyTorch torch.compile, {precision}",
                    "torch.compile",
                    precision,
                    "torch_reference.py",
                    ["--compile", *peer_precision],
                    "torch",
                )
            )
    if conv:
        for likelihood in ("bernoulli", "logistic"):
            for xla in ("on", "off"):
                rows.append(Row(f"keras_vae conv {likelihood}, XLA {xla}, float32", "keras_vae",
                                "float32", "keras_reference.py",
                                ["--conv", likelihood, "--xla", xla], "tensorflow",
                                variant=f"conv {likelihood} XLA {xla}"))  # fmt: skip
    return rows


def peer_environment() -> tuple[dict, list[str]]:
    """This process's environment less THREADING_VARIABLES, and the names removed."""
    removed = [name for name in THREADING_VARIABLES if name in os.environ]
    env = {k: v for k, v in os.environ.items() if k not in THREADING_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return env, removed


def installed(module: str, env: dict) -> bool:
    check = [sys.executable, "-c", f"import importlib.util, sys; "
             f"sys.exit(importlib.util.find_spec({module!r}) is None)"]  # fmt: skip
    return subprocess.run(check, env=env, check=False).returncode == 0


def write_data(path: Path, data_dir: str, env: dict) -> None:
    """The binarized MNIST training images as uint8 [N, 784], written by keras_reference.py
    (the peers read this file; keras_vae reads the same images through tensorflow-datasets)."""
    command = [sys.executable, str(HERE / "keras_reference.py"), "--write-data", str(path),
               "--data-dir", data_dir]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"could not write the training data:\n{done.stderr[-2000:]}")


def _answer(row: Row) -> dict | None:
    line = row.process.stdout.readline()
    if line.startswith("{"):
        return json.loads(line)
    row.process.wait(timeout=60)
    lines = row.process.stderr.read().strip().splitlines() or ["exited"]
    row.error = "failed: " + lines[-1]
    return None


def start(row: Row, batch: int, data: Path, data_dir: str, env: dict, warmup: int) -> None:
    command = [*row.command(batch, data, data_dir), "--serve", "--warmup", str(warmup)]
    row.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,
                                   env={**env, **row.extra_env})  # fmt: skip


def run_round(row: Row, steps: int, batch: int) -> None:
    row.process.stdin.write(f"{steps}\n")
    row.process.stdin.flush()
    answer = _answer(row)
    if answer is not None:
        row.rates.append(answer["examples_per_s"])
        row.cpu.append(answer["cpu_s"] / (steps * batch))
        row.losses.append(answer["loss"])


def close(row: Row) -> None:
    if row.process is not None:
        if row.process.stdin:
            row.process.stdin.close()
        try:
            row.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            row.process.kill()
        row.process = None


def run_alone(row: Row, steps: int, batch: int, data: Path, data_dir: str, env: dict,
              warmup: int) -> float | None:  # fmt: skip
    """One plain invocation of the row's script (its own warm-up, then `steps` timed)."""
    command = [*row.command(batch, data, data_dir), "--steps", str(steps), "--warmup",
               str(warmup), "--json"]  # fmt: skip
    done = subprocess.run(command, env={**env, **row.extra_env}, capture_output=True, text=True,
                          check=False)  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"    alone run of {row.name} failed: {done.stderr.strip()[-300:]}", flush=True)
        return None
    return json.loads(lines[-1])["examples_per_s"]


def measure_batch(rows: list[Row], batch: int, args, env: dict, data: Path) -> None:
    """Warm-up, interleaved rounds, then the alone runs, for one batch size."""
    for row in rows:
        row.steps = max(1, round(args.examples / batch))
        if row.variant.startswith("conv"):
            row.steps = max(1, round(args.conv_examples / batch))
    start_time = time.perf_counter()
    for row in rows:  # warm-ups overlap: none of them is timed
        if row.error is None:
            start(row, batch, data, args.data_dir, env, args.warmup)
    for row in rows:
        if row.error is None:
            row.meta = _answer(row) or {}
    print(f"  batch {batch}: {sum(r.error is None for r in rows)} rows warmed up in "
          f"{time.perf_counter() - start_time:.0f} s (load {os.getloadavg()[0]:.1f})",
          flush=True)  # fmt: skip
    live = [row for row in rows if row.error is None]
    for index in range(args.rounds):
        shift = index % len(live) if live else 0
        for row in live[shift:] + live[:shift]:
            if row.error is None:
                run_round(row, row.steps, batch)
        summary = ", ".join(f"{r.name} {r.rates[-1]:,.0f}" for r in live if r.rates)
        print(f"  round {index + 1}/{args.rounds} (load {os.getloadavg()[0]:.1f}): {summary}",
              flush=True)  # fmt: skip
    for row in rows:
        close(row)
    if args.alone_runs:
        for row in rows:
            if row.error is not None:
                continue
            for _ in range(args.alone_runs):
                rate = run_alone(row, row.steps, batch, data, args.data_dir, env, args.warmup)
                if rate is not None:
                    row.alone.append(rate)
            if row.alone:
                print(f"  alone: {row.name} {statistics.median(row.alone):,.0f} examples/s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip


def summarise(row: Row, batch: int) -> dict:
    result = {"setting": row.name, "framework": row.framework, "precision": row.precision,
              "variant": row.variant, "batch_size": batch}  # fmt: skip
    if not row.rates:
        return {**result, "error": row.error or "no result"}
    rate = statistics.median(row.rates)
    flops = row.meta.get("flops_per_example", FLOPS_PER_EXAMPLE)
    result.update(
        examples_per_s=rate, best_examples_per_s=max(row.rates), rounds=row.rates,
        cpu_us_per_example=1e6 * statistics.median(row.cpu), gflops=rate * flops / 1e9,
        final_loss=row.losses[-1] if row.losses else None,
        meta={k: v for k, v in row.meta.items() if k not in ("ready", "cpu")},
    )  # fmt: skip
    if row.alone:
        alone = statistics.median(row.alone)
        difference = (alone - rate) / rate
        result.update(
            alone_examples_per_s=alone,
            alone_runs=row.alone,
            alone_vs_harness=difference,
            agree=abs(difference) <= AGREEMENT,
        )
    if row.error:
        result["error"] = row.error
    return result


def ratios(results: list[dict]) -> dict:
    """Per precision: keras_vae default over the fastest peer and over the fastest of JAX jit
    and torch.compile (harness medians), and over the fastest peer counting each peer's
    better figure of harness and alone (the conservative ratio); keras_vae mixed_bfloat16
    over float32."""

    def rate(r):
        return r.get("examples_per_s")

    out = {}
    keras_rows = {}
    for precision in PRECISIONS:
        rows = [r for r in results if r["precision"] == precision and rate(r)]
        keras = next((r for r in rows if r["framework"] == "keras_vae"
                      and r["variant"] == "default"), None)  # fmt: skip
        peers = [r for r in rows if r["framework"] != "keras_vae"]
        compiled = [r for r in peers if r["framework"] in ("jax", "torch.compile")]
        entry = {"keras_vae": rate(keras) if keras else None}
        for key, group in (("fastest_peer", peers), ("fastest_compiled_peer", compiled)):
            if group:
                best = max(group, key=rate)
                entry[key] = best["setting"]
                entry[f"{key}_examples_per_s"] = rate(best)
                entry[f"ratio_vs_{key}"] = rate(keras) / rate(best) if keras else None
        if peers and keras:  # against each peer's better figure, harness or alone
            strongest = max(max(rate(r), r.get("alone_examples_per_s") or 0) for r in peers)
            entry["ratio_vs_fastest_peer_harness_or_alone"] = rate(keras) / strongest
        out[precision] = entry
        keras_rows[precision] = keras
    if keras_rows.get("float32") and keras_rows.get("bfloat16"):
        out["keras_vae_bfloat16_over_float32"] = rate(keras_rows["bfloat16"]) / rate(
            keras_rows["float32"]
        )
    return out


def print_table(results: list[dict], batch: int) -> None:
    print(f"\nBatch {batch} (median of the rounds; alone: a plain run of the script)")
    print("| setting | examples/s | best round | CPU us/example | GFLOP/s | alone | alone vs "
          "harness | last loss |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        if "examples_per_s" not in r:
            print(f"| {r['setting']} | {r.get('error', 'failed')} | | | | | | |")
            continue
        alone = f"{r['alone_examples_per_s']:,.0f}" if "alone_examples_per_s" in r else ""
        versus = ""
        if "alone_vs_harness" in r:
            versus = f"{100 * r['alone_vs_harness']:+.0f}%" + ("" if r["agree"] else " (!)")
        loss = f"{r['final_loss']:.1f}" if r.get("final_loss") is not None else ""
        print(f"| {r['setting']} | {r['examples_per_s']:,.0f} | {r['best_examples_per_s']:,.0f} "
              f"| {r['cpu_us_per_example']:.1f} | {r['gflops']:.0f} | {alone} | {versus} | "
              f"{loss} |")  # fmt: skip


def run_distributed_rows(data_dir: str, steps: int, rounds: int, env: dict) -> list[dict]:
    """MirroredStrategy on 2 logical CPUs and 2 local MultiWorkerMirroredStrategy workers,
    XLA on and off, each in fresh processes (`strategy_throughput.py`), float32."""
    sys.path.insert(0, str(REPO_ROOT))
    from keras_vae.engine import cluster  # imports TensorFlow; only for these rows

    script = str(HERE / "strategy_throughput.py")
    common = ["--data-dir", data_dir, "--steps", str(steps), "--rounds", str(rounds)]
    rows = []
    for xla in (True, False):
        name = f"MirroredStrategy, 2 logical CPUs, XLA {'on' if xla else 'off'}"
        command = [sys.executable, script, "--strategy", "mirrored", "--cpu-replicas", "2",
                   "--xla" if xla else "--no-xla", *common]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
        result = json.loads(lines[-1]) if done.returncode == 0 and lines else None
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
        lines = [x for x in log.splitlines() if x.startswith("{")]
        result = json.loads(lines[-1]) if codes == [0, 0] and lines else None
        print(f"  {name}: {result['examples_per_s']:,.0f} examples/s" if result
              else f"  {name}: failed\n{log[-2000:]}", flush=True)  # fmt: skip
        rows.append({"setting": name, **(result or {"error": log[-500:]})})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = REPO_ROOT.parent / "shared" / "tensorflow_datasets"
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR") or str(shared))
    parser.add_argument("--batch-size", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--examples",
        type=int,
        default=None,
        help="timed examples per row and round (whole steps); default 100,000",
    )
    parser.add_argument("--rounds", type=int, default=None, help="default 5")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps per process")
    parser.add_argument(
        "--alone-runs",
        type=int,
        default=1,
        help="plain runs of each row's script after the rounds (0: none)",
    )
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--keras-variants", action="store_true",
                        help="also keras_vae with XLA off, steps_per_execution 50 and 1, and "
                        "Keras' step loop")  # fmt: skip
    parser.add_argument("--conv", action="store_true", help="also the conv VAE rows (keras_vae)")
    parser.add_argument("--conv-examples", type=int, default=10_000,
                        help="timed examples per conv row and round")  # fmt: skip
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="also the MirroredStrategy / MultiWorkerMirroredStrategy rows",
    )
    parser.add_argument("--no-distributed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20,000 examples x 2 rounds, batch 100 (unless given)",
    )
    parser.add_argument("--json", action="store_true", help="last line: one JSON document")
    args = parser.parse_args(argv)
    quick = args.quick
    args.examples = args.examples or (20_000 if quick else 100_000)
    args.rounds = args.rounds or (2 if quick else 5)
    if quick and "--batch-size" not in (argv if argv is not None else sys.argv):
        args.batch_size = [100]
    machine = cpu_info()
    env, removed = peer_environment()
    started = os.getloadavg()
    print(cpu_line(machine))
    print(f"Model 784-500-20 (tanh, Bernoulli), Adam(1e-3); batch {args.batch_size}; "
          f"{args.rounds} rounds of {args.examples:,} examples per row; load average "
          f"{started[0]:.1f}")  # fmt: skip
    if removed:
        print(f"Removed from the frameworks' environment: {', '.join(removed)}")
    rows_by_batch, results, missing = {}, {}, {}
    for module in {row.module for row in default_rows(FRAMEWORKS, PRECISIONS, False, False)}:
        missing[module] = not installed(module, env)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.npy"
        write_data(data, args.data_dir, env)
        for batch in args.batch_size:
            rows = default_rows(args.frameworks, args.precisions, args.keras_variants,
                                args.conv and batch == args.batch_size[0])  # fmt: skip
            for row in rows:
                if missing.get(row.module):
                    row.error = f"not installed (pip install -e '.[bench]': {row.module})"
            measure_batch(rows, batch, args, env, data)
            results[batch] = [summarise(row, batch) for row in rows]
            rows_by_batch[batch] = rows
    distributed = []
    if args.distributed:
        distributed = run_distributed_rows(args.data_dir, max(30, 300), 3, env)

    warnings = []
    summary_ratios = {}
    for batch, batch_results in results.items():
        print_table(batch_results, batch)
        summary_ratios[batch] = ratios(batch_results)
        for r in batch_results:
            if r.get("agree") is False:
                alone = r["alone_examples_per_s"]
                warnings.append(f"batch {batch}, {r['setting']}: alone {alone:,.0f}"
                                f" vs harness {r['examples_per_s']:,.0f} examples/s "
                                f"({100 * r['alone_vs_harness']:+.0f}%, more than "
                                f"{100 * AGREEMENT:.0f}%)")  # fmt: skip
            source = r.get("meta", {}).get("precision_source", "")
            if "fallback" in source:
                warnings.append(f"batch {batch}, {r['setting']}: {source}: keras_vae has no "
                                "precision option yet")  # fmt: skip
        for precision, entry in summary_ratios[batch].items():
            if isinstance(entry, dict) and entry.get("ratio_vs_fastest_peer") is not None:
                print(f"  {precision}: keras_vae {entry['keras_vae']:,.0f} = "
                      f"{entry['ratio_vs_fastest_peer']:.2f}x the fastest peer "
                      f"({entry['fastest_peer']}, {entry['fastest_peer_examples_per_s']:,.0f})"
                      + (f", {entry['ratio_vs_fastest_compiled_peer']:.2f}x "
                         f"{entry['fastest_compiled_peer']}"
                         if entry.get("ratio_vs_fastest_compiled_peer") else ""))  # fmt: skip
        if "keras_vae_bfloat16_over_float32" in summary_ratios[batch]:
            print(
                f"  keras_vae mixed_bfloat16 / float32: "
                f"{summary_ratios[batch]['keras_vae_bfloat16_over_float32']:.2f}x"
            )
    for warning in warnings:
        print(f"WARNING: {warning}")
    print(f"load average at the start {started[0]:.1f}, at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        versions = {}
        for rows in rows_by_batch.values():
            for row in rows:
                versions.update({k: v for k, v in row.meta.items() if k.endswith("_version")})
        print(json.dumps({
            "cpu": machine,
            "loadavg_start": started,
            "loadavg_end": os.getloadavg(),
            "removed_environment": removed,
            "versions": versions,
            "settings": {"examples_per_round": args.examples, "rounds": args.rounds,
                         "warmup_steps": args.warmup, "alone_runs": args.alone_runs,
                         "agreement": AGREEMENT, "flops_per_example": FLOPS_PER_EXAMPLE},
            "results": {str(b): r for b, r in results.items()},
            "ratios": {str(b): r for b, r in summary_ratios.items()},
            "distributed": distributed,
            "warnings": warnings,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
