"""Fault-injection harness: real `keras-vae` processes, faults as a user meets them, and after
each one a check that the run directory is intact, the message is one clear line and nothing
was lost. Prints a Markdown table (case, tries, survived, nothing lost).

    python benchmarks/fault_injection.py --tries 3 --seed 0
    python benchmarks/fault_injection.py --cases damaged-backup second-writer

Cases:
  kill-train       SIGKILL of `train` at a random moment, then the same command (see
                   benchmarks/kill_resume.py for many more)
  kill-export      SIGKILL of `export --version 2` at a random moment: version 1 must stay
                   byte for byte, version 2 must be absent or complete, the rerun must finish
  kill-evaluate    SIGKILL of `evaluate` at a random moment: the run must still load and its
                   files be unchanged; the rerun must finish
  damaged-backup   the newest backup truncated after a kill: the rerun resumes from the one
                   before, says so, and finishes
  full-disk        the disk fills while training (a tmpfs in a private mount namespace,
                   `unshare -rm`; skipped where not permitted): one line, every committed
                   backup verified intact, the rerun after freeing space finishes
  second-writer    a second `train` into a directory in use: refused at once in one line
                   naming the process; the first finishes intact
  oversized-model  `--latent-dim 2000000000`: one line, nothing written but config.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kill_resume  # noqa: E402  (the training command, the data set, check_run)

CLI = [sys.executable, "-m", "keras_vae.cli"]


def _train(run_dir: Path, dataset: Path, *more: str) -> list[str]:
    return [*kill_resume.TRAIN_COMMAND, "--dataset", str(dataset), "--output", str(run_dir), *more]


def _run(command: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _errors(stderr: str) -> list[str]:
    """The lines of the CLI's own errors, and any traceback."""
    return [line for line in stderr.splitlines() if ": error: " in line or "Traceback" in line]


def _tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every visible file under `root`."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def _kill_at_random(command: list[str], low: float, high: float, rng: random.Random) -> bool:
    """Starts `command`, SIGKILLs it after a random delay; True if it was still running."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(rng.uniform(low, high))
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def _wait_for(predicate, timeout: float, process: subprocess.Popen | None = None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if process is not None and process.poll() is not None:
            return predicate()
        time.sleep(0.1)
    return False


def _committed_backups(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "backup").glob("epoch-*.state.json"))


def _finished_run(work: Path, dataset: Path) -> Path:
    run_dir = work / "finished"
    if not (run_dir / "model.keras").exists():
        result = _run(_train(run_dir, dataset))
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-2000:])
    return run_dir


# ----------------------------------------------------------------------------------- cases
def case_kill_train(work: Path, dataset: Path, rng: random.Random) -> tuple[bool, bool, str]:
    run_dir = work / f"kill-train-{rng.randrange(10**6)}"
    landed = kill_resume.kill_and_resume(
        run_dir, dataset, kills=2, rng=kill_resume.np.random.default_rng(rng.randrange(10**6))
    )
    problem = kill_resume.check_run(run_dir)
    return problem is None, problem is None, problem or f"{landed} kills landed, finished"


def case_kill_export(work: Path, dataset: Path, rng: random.Random) -> tuple[bool, bool, str]:
    run_dir = _finished_run(work, dataset)
    export_dir = work / f"export-{rng.randrange(10**6)}"
    first = _run([*CLI, "export", str(run_dir), "--output", str(export_dir), "--version", "1"])
    if first.returncode != 0:
        return False, False, f"export v1 failed: {_errors(first.stderr)}"
    before, run_before = _tree_digest(export_dir / "encoder" / "1"), _tree_digest(run_dir)
    second = [*CLI, "export", str(run_dir), "--output", str(export_dir), "--version", "2"]
    landed = _kill_at_random(second, 3.0, 25.0, rng)
    kept = _tree_digest(export_dir / "encoder" / "1") == before and _tree_digest(run_dir) == (
        run_before
    )
    versions = [export_dir / part / "2" for part in ("encoder", "decoder", "scorer")]
    partial = [str(v) for v in versions if v.exists() and not (v / "saved_model.pb").exists()]
    rerun = _run([*second, "--overwrite"])
    ok = rerun.returncode == 0 and all(
        (export_dir / p / "2").is_dir() for p in ("encoder", "decoder")
    )
    note = f"{'killed' if landed else 'finished before the kill'}; rerun {'ok' if ok else 'FAILED'}"
    return ok and not partial, kept, note + (f"; partial {partial}" if partial else "")


def case_kill_evaluate(work: Path, dataset: Path, rng: random.Random) -> tuple[bool, bool, str]:
    run_dir = _finished_run(work, dataset)
    before = {k: v for k, v in _tree_digest(run_dir).items() if not k.startswith("eval_")}
    command = [*CLI, "evaluate", str(run_dir), "--importance-samples", "200", "--json"]
    landed = _kill_at_random(command, 2.0, 12.0, rng)
    after = {k: v for k, v in _tree_digest(run_dir).items() if not k.startswith("eval_")}
    result_file = run_dir / "eval_train.json"
    readable = not result_file.exists() or bool(json.loads(result_file.read_text()))
    rerun = _run(command)
    ok = rerun.returncode == 0 and json.loads(rerun.stdout.splitlines()[-1])["split"] == "train"
    note = f"{'killed' if landed else 'finished before the kill'}; rerun {'ok' if ok else 'FAILED'}"
    return ok and readable, after == before, note


def case_damaged_backup(work: Path, dataset: Path, rng: random.Random) -> tuple[bool, bool, str]:
    run_dir = work / f"damaged-{rng.randrange(10**6)}"
    process = subprocess.Popen(_train(run_dir, dataset), stdout=subprocess.DEVNULL)
    enough = _wait_for(lambda: len(_committed_backups(run_dir)) >= 2, 300, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if not enough:
        return False, False, "the run finished before two backups existed"
    newest = json.loads(_committed_backups(run_dir)[-1].read_text())
    weights = run_dir / "backup" / newest["weights"]
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    rerun = _run(_train(run_dir, dataset).copy())
    said = [line for line in rerun.stdout.splitlines() if "resuming" in line]
    clear = bool(said) and f"skipped the backup after epoch {newest['epoch']}" in said[0]
    problem = kill_resume.check_run(run_dir) if rerun.returncode == 0 else rerun.stderr[-300:]
    return clear and problem is None, problem is None, said[0] if said else str(problem)


def case_second_writer(work: Path, dataset: Path, rng: random.Random) -> tuple[bool, bool, str]:
    run_dir = work / f"second-{rng.randrange(10**6)}"
    first = subprocess.Popen(_train(run_dir, dataset), stdout=subprocess.DEVNULL)
    _wait_for(lambda: (run_dir / "config.json").exists(), 120, first)
    start = time.monotonic()
    second = _run(_train(run_dir, dataset, "--seed", "5", "--overwrite"))
    seconds = time.monotonic() - start
    first.wait(timeout=900)
    errors = _errors(second.stderr)
    clear = (
        second.returncode == 1
        and len(errors) == 1
        and f"is in use by process {first.pid} on host" in errors[0]
    )
    problem = kill_resume.check_run(run_dir) if first.returncode == 0 else "first run failed"
    return clear, problem is None, f"refused in {seconds:.1f} s: {errors[0] if errors else '?'}"


def case_oversized_model(work: Path, dataset: Path, rng: random.Random) -> tuple[bool, bool, str]:
    run_dir = work / f"oversized-{rng.randrange(10**6)}"
    result = _run(_train(run_dir, dataset, "--latent-dim", "2000000000"))
    errors = _errors(result.stderr)
    clear = result.returncode == 1 and len(errors) == 1 and "Out of memory" in errors[0]
    left = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    return clear, left == ["config.json"], errors[0] if errors else result.stderr[-300:]


def case_full_disk(work: Path, dataset: Path, rng: random.Random) -> tuple[bool, bool, str]:
    if shutil.which("unshare") is None:
        return False, False, "skipped: no unshare"
    inside = [
        "unshare", "-rm", sys.executable, __file__, "--inside-full-disk", str(work),
        str(dataset), str(rng.randrange(10**6)),
    ]  # fmt: skip
    result = _run(inside, timeout=1200)
    if result.returncode != 0:
        return False, False, f"skipped or failed: {result.stderr.strip().splitlines()[-1:]}"
    clear, kept, note = json.loads(result.stdout.splitlines()[-1])
    return clear, kept, note


def inside_full_disk(work: Path, dataset: Path, seed: int) -> None:
    """Runs in a private mount namespace: a 16 MB tmpfs holds the run; once two backups are
    committed, a filler takes the rest of the disk."""
    disk = work / f"disk-{seed}"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    run_dir = disk / "run"
    process = subprocess.Popen(
        _train(run_dir, dataset), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: len(_committed_backups(run_dir)) >= 2, 300, process)
    with open(disk / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * (1 << 16))
        except OSError:  # ENOSPC: the disk is full
            pass
    _, stderr = process.communicate(timeout=600)
    errors = _errors(stderr)
    clear = process.returncode == 1 and len(errors) == 1 and "full" in errors[0]
    from keras_vae.runs import directory as runs

    states = [json.loads(p.read_text()) for p in _committed_backups(run_dir)]
    intact = bool(states) and all(
        runs.verify_backup(run_dir / "backup", state) is None for state in states
    )
    (disk / "filler").unlink()
    rerun = _run(_train(run_dir, dataset))
    problem = kill_resume.check_run(run_dir) if rerun.returncode == 0 else rerun.stderr[-300:]
    note = errors[0] if errors else stderr[-300:]
    print(json.dumps([clear and problem is None, intact and problem is None, note]))


CASES = {
    "kill-train": case_kill_train,
    "kill-export": case_kill_export,
    "kill-evaluate": case_kill_evaluate,
    "damaged-backup": case_damaged_backup,
    "full-disk": case_full_disk,
    "second-writer": case_second_writer,
    "oversized-model": case_oversized_model,
}


def run_cases(names, tries: int, seed: int, work: Path, say=print) -> list[dict]:
    """Runs each case `tries` times; returns one row per case."""
    rng = random.Random(seed)
    dataset = kill_resume.make_dataset(work / "toy.npz")
    rows = []
    for name in names:
        row = {"case": name, "tries": 0, "survived": 0, "nothing_lost": 0}
        for _ in range(tries if name != "oversized-model" else 1):
            survived, kept, note = CASES[name](work, dataset, rng)
            row["tries"] += 1
            row["survived"] += bool(survived)
            row["nothing_lost"] += bool(kept)
            say(f"{name}: {'ok' if survived and kept else 'FAILED'} ({note})")
        rows.append(row)
    return rows


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--inside-full-disk":
        inside_full_disk(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=3, help="tries of each case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_cases(args.cases, args.tries, args.seed, Path(tmp))
    print("\n| case | tries | survived (intact, clear message) | nothing lost |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['case']} | {row['tries']} | {row['survived']} | {row['nothing_lost']} |")
    failed = sum(r["tries"] - min(r["survived"], r["nothing_lost"]) for r in rows)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
