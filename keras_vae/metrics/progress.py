"""The progress line of a long importance-sampled evaluation (every model kind's).

`keras-vae evaluate` with K = 5,000 samples per image runs for minutes; `SamplingProgress`
prints what is done, the rate, the time left and the NLL so far, one line per update
interval (or one line redrawn in place on a terminal).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np


class SamplingProgress:
    """One progress line: examples done, rate, time left, running NLL.

    The rate leaves out the first batch (it includes tracing); on a terminal the line is
    redrawn in place, otherwise a new line is printed at most every `interval` seconds.
    """

    def __init__(self, total: int, num_samples: int, stream=None, interval: float = 30.0):
        self.total, self.done, self.stream = total, 0, stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.0 if self.tty else interval
        self.start = self.first = time.perf_counter()
        self.first_count = 0
        self.last_print = -math.inf
        self.sum_log_px = 0.0
        print(f"importance sampling log p(x) with K={num_samples} samples per example, "
              f"{total} examples", file=self.stream, flush=True)  # fmt: skip

    def update(self, log_px: np.ndarray) -> None:
        now = time.perf_counter()
        if self.done == 0:
            self.first, self.first_count = now, len(log_px)
        self.done += len(log_px)
        self.sum_log_px += float(np.sum(log_px, dtype=np.float64))
        finished = self.done >= self.total
        if not finished and now - self.last_print < self.interval:
            return
        self.last_print = now
        timed = self.done - self.first_count
        rate = timed / (now - self.first) if timed and now > self.first else self.done / (
            now - self.start)  # fmt: skip
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        text = (f"{self.done}/{self.total} examples, {rate:.1f} examples/s, "
                f"{_clock(now - self.start)} elapsed, {_clock(left)} left, "
                f"NLL so far {-self.sum_log_px / self.done:.2f} nats")  # fmt: skip
        end = "\n" if finished or not self.tty else ""
        print(("\r" if self.tty else "") + text, end=end, file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else (
        f"{minutes}:{seconds:02d}")  # fmt: skip
