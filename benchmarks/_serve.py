"""The round protocol between `throughput.py` and a reference loop in another process.

A reference started with `--serve` warms up, prints one JSON line `{"ready": true, ...}`, then
for every line `N` it reads from stdin runs N timed training steps and prints one JSON line
`{"examples_per_s": ..., "cpu_s": ..., "loss": ...}` (`cpu_s`: the process's CPU seconds over
those steps, all threads); it exits at the end of stdin. `throughput.py` thereby
times the references in the same rounds as keras_vae, so load on a shared machine hits all
alike, while each framework keeps its own process (no two runtimes share a thread pool).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable


def serve(run: Callable[[int], tuple[float, float]], meta: dict) -> None:
    """Answers round requests from stdin with `run(steps) -> (examples/s, last loss)`."""
    print(json.dumps({"ready": True, **meta}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        cpu = time.process_time()
        rate, loss = run(int(line))
        cpu = time.process_time() - cpu
        print(json.dumps({"examples_per_s": rate, "cpu_s": cpu, "loss": loss}), flush=True)
