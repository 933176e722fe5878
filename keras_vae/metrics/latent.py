"""Summaries of a latent-variable model's evaluation that every kind reports the same way."""

from __future__ import annotations

import math

import numpy as np

ACTIVE_UNIT_THRESHOLD = 0.01


def bits_per_dim(nats: float, num_dims: int) -> float:
    """nats per example -> bits per dimension: nats / (D ln 2), D = pixels x channels."""
    return float(nats) / (num_dims * math.log(2.0))


class Moments:
    """Count, mean and variance along the first axis of batches added one at a time, in
    float64, so that a summary over a split holds one value per column, not the examples.

    A batch of n_b rows with mean m_b and sum of squared deviations S_b joins the n_a rows
    seen so far (Chan, Golub & LeVeque 1979):

        n = n_a + n_b,  m = m_a + (m_b - m_a) n_b / n,  S = S_a + S_b + (m_b - m_a)^2 n_a n_b / n

    and the variance is S / (n - ddof).
    """

    def __init__(self):
        self.count, self.mean, self.sum_squares = 0, 0.0, 0.0

    def add(self, batch) -> None:
        """Adds the rows of `batch` (`[n, ...]`)."""
        batch = np.asarray(batch, np.float64)
        size = len(batch)
        if size == 0:
            return
        mean = batch.mean(axis=0)
        total = self.count + size
        delta = mean - self.mean
        self.sum_squares = (self.sum_squares + np.sum(np.square(batch - mean), axis=0)
                            + np.square(delta) * (self.count * size / total))  # fmt: skip
        self.mean = self.mean + delta * (size / total)
        self.count = total

    def variance(self, ddof: int = 0):
        """The variance of every column over the rows added (ddof=1: the unbiased one)."""
        return self.sum_squares / (self.count - ddof)

    def stderr(self) -> float:
        """The standard error of the mean of one column, sqrt(var_{ddof=1} / n) (0 for n = 1)."""
        return float(np.sqrt(self.variance(ddof=1) / self.count)) if self.count > 1 else 0.0


def active_units(
    posterior_means: np.ndarray | Moments, threshold: float = ACTIVE_UNIT_THRESHOLD
) -> int:
    """How many latent dimensions u have Cov_x(E_q[z_u|x]) > threshold (Burda et al. 2016),
    from the posterior means `[N, D]` or their `Moments` (an evaluation's, batch by batch)."""
    if isinstance(posterior_means, Moments):
        return int(np.sum(posterior_means.variance() > threshold))
    return int(np.sum(np.var(np.asarray(posterior_means), axis=0) > threshold))
