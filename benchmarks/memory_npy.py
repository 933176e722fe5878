"""Peak anonymous memory (RssAnon) of `keras-vae train` on a user's memory-mapped `.npy` file.

Writes a `.npy` of N random 28x28x1 images per `--examples` value (float32 in [0, 1] or uint8
grey levels; 700,000 float32 images are 2.1 GB) into `--workdir` (default: a temporary
directory; never inside the repository or /work/shared), then trains on each file in a fresh
process, niced:

    nice -n 15 keras-vae train --dataset FILE --epochs 1 --steps-per-epoch 300 --output RUN

(the package's defaults otherwise: the last 10% of the file held out and evaluated, pictures
from it, the whole training part and the held-out part evaluated at the end). While the process
runs, its `RssAnon` (/proc/PID/status: private memory that is not a file's pages, so not the
mapped file that the page cache holds and can drop) is sampled every `--interval` seconds;
the table gives the largest sample. (`VmHWM` would count the mapped file's pages too.) A spike
shorter than the interval can be missed; copies of the data take far longer to fill.

    python benchmarks/memory_npy.py --examples 20000 700000 --json

The table also gives the process's wall and CPU seconds (user + system, from `wait4`) and the
training throughput that metrics.json records (`train_examples_per_s`: wall time, so it moves
with the load of the machine). `--rounds R` runs every file R times, interleaved; `--source
DIR` runs another keras_vae checkout (an export of an older commit, say) for a before/after.
`--timeline` also prints the RssAnon at every line the training printed (and the peak since
the previous line), which places a rise in the run's stages.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = (REPO, Path("/work/shared"))
IMAGE_SHAPE = (28, 28, 1)


def write_npy(path: Path, count: int, dtype: str, seed: int = 0) -> Path:
    """A `.npy` of `count` random images of `IMAGE_SHAPE`, written through a memory map in
    blocks (so that this process never holds the file); kept when it already matches."""
    if path.is_file():
        existing = np.load(path, mmap_mode="r")
        if existing.shape == (count, *IMAGE_SHAPE) and existing.dtype == np.dtype(dtype):
            return path
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(count, *IMAGE_SHAPE))
    rng = np.random.default_rng(seed)
    for start in range(0, count, 20_000):
        shape = (min(20_000, count - start), *IMAGE_SHAPE)
        if dtype == "uint8":
            block = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            block = rng.random(shape, dtype=np.float32)
        out[start : start + shape[0]] = block
        out.flush()
    del out
    return path


def status_kib(pid: int, fields=("RssAnon", "VmRSS")) -> dict[str, int] | None:
    """The given fields of /proc/PID/status in KiB, None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            found = {}
            for line in status:
                key, _, value = line.partition(":")
                if key in fields:
                    found[key] = int(value.split()[0])
            return found
    except (FileNotFoundError, ProcessLookupError):
        return None


def train_once(npy: Path, args: argparse.Namespace, run_dir: Path) -> dict:
    """One `keras-vae train` process on `npy`; its peak RssAnon (sampled), wall time and the
    training throughput that it records in metrics.json."""
    command = [
        "nice", "-n", str(args.nice), sys.executable, "-m", "keras_vae.cli", "train",
        "--dataset", str(npy), "--epochs", "1", "--steps-per-epoch", str(args.steps_per_epoch),
        "--output", str(run_dir), *args.train_args,
    ]  # fmt: skip
    path = [str(args.source), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    process = subprocess.Popen(  # not in this checkout: `-m` puts the working directory first
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=run_dir
    )
    samples: list[tuple[float, int, int]] = []  # (seconds, RssAnon KiB, VmRSS KiB)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in process.stdout:
            lines.append((time.perf_counter() - start, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while True:
        found = status_kib(process.pid)
        if found and "RssAnon" in found:
            samples.append((time.perf_counter() - start, found["RssAnon"], found["VmRSS"]))
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)  # the CPU time it used
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(args.interval)
    reader.join()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        tail = "\n".join(line for _, line in lines[-20:])
        raise RuntimeError(f"keras-vae train on {npy} failed ({process.returncode}):\n{tail}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    first = next(line for _, line in lines if line.startswith("keras-vae: training"))
    return {
        "train_split": "streamed" if ", streamed)" in first else "in memory",
        "peak_rss_anon_mib": round(max(s[1] for s in samples) / 1024, 1),
        "peak_vm_rss_mib": round(max(s[2] for s in samples) / 1024, 1),
        "samples": len(samples),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "train_examples_per_s": metrics.get("train_examples_per_s"),
        "timeline": _timeline(samples, lines),
    }


def _timeline(samples, lines) -> list[dict]:
    """Per printed line: RssAnon when it was printed and the peak since the previous line."""
    rows, previous = [], 0.0
    for at, line in [*lines, (float("inf"), "(exit)")]:
        window = [s[1] for s in samples if previous <= s[0] <= at]
        now = [s[1] for s in samples if s[0] <= at]
        if window and now:
            rows.append({"seconds": round(min(at, samples[-1][0]), 1), "line": line[:100],
                         "rss_anon_mib": round(now[-1] / 1024),
                         "peak_since_previous_mib": round(max(window) / 1024)})  # fmt: skip
        previous = at
    return rows


def _check_workdir(workdir: Path) -> None:
    for forbidden in FORBIDDEN:
        if workdir == forbidden or forbidden in workdir.parents:
            raise SystemExit(f"--workdir {workdir} is inside {forbidden}; choose another place.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, nargs="+", default=[20_000, 700_000])
    parser.add_argument("--dtype", choices=("float32", "uint8"), default="float32")
    parser.add_argument("--workdir", type=Path, help="where the .npy files and runs go")
    parser.add_argument("--steps-per-epoch", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between samples")
    parser.add_argument("--nice", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=1, help="runs per file, interleaved")
    parser.add_argument("--source", type=Path, default=REPO,
                        help="the keras_vae checkout to run (default: this one)")  # fmt: skip
    parser.add_argument("--timeline", action="store_true", help="RssAnon per printed line")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.add_argument("train_args", nargs="*", help="more `keras-vae train` options, after --")
    args = parser.parse_args()
    temporary = None
    if args.workdir is None:
        temporary = tempfile.TemporaryDirectory(prefix="kv_memory_npy_")
        args.workdir = Path(temporary.name)
    args.workdir = args.workdir.expanduser().resolve()
    _check_workdir(args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)
    cpu = cpu_info()["model_name"]
    date = datetime.date.today().isoformat()
    print(f"{date}; CPU: {cpu}; {args.steps_per_epoch} steps, {args.dtype} 28x28x1 .npy files; "
          f"keras_vae from {args.source}")  # fmt: skip
    rows = []
    files = [write_npy(args.workdir / f"images_{n}_{args.dtype}.npy", n, args.dtype)
             for n in args.examples]  # fmt: skip
    for _ in range(args.rounds):
        for count, npy in zip(args.examples, files, strict=True):
            run_dir = Path(tempfile.mkdtemp(prefix=f"run_{count}_", dir=args.workdir))
            result = train_once(npy, args, run_dir)
            shutil.rmtree(run_dir)
            rows.append({"examples": count, "file_mib": round(npy.stat().st_size / 2**20, 1),
                         **result})  # fmt: skip
    print(
        "| file | N | training split | peak RssAnon | peak VmRSS | seconds | CPU seconds "
        "| training examples/s |\n| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
    )
    for row in rows:
        print(f"| {row['file_mib']:,.0f} MiB | {row['examples']:,} | {row['train_split']} | "
              f"{row['peak_rss_anon_mib']:,.0f} MiB | {row['peak_vm_rss_mib']:,.0f} MiB | "
              f"{row['seconds']} | {row['cpu_seconds']} | "
              f"{row['train_examples_per_s']:,} |")  # fmt: skip
    if args.timeline:
        for row in rows:
            print(f"\n{row['examples']:,} images: RssAnon (MiB) at each printed line")
            for step in row["timeline"]:
                print(f"  {step['seconds']:7.1f} s  now {step['rss_anon_mib']:5d}  "
                      f"peak {step['peak_since_previous_mib']:5d}  {step['line']}")  # fmt: skip
    if args.json:
        for row in rows:
            row.pop("timeline") if not args.timeline else None
        print(json.dumps({"date": date, "cpu": cpu, "dtype": args.dtype,
                          "steps_per_epoch": args.steps_per_epoch, "source": str(args.source),
                          "rows": rows}))  # fmt: skip
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
