"""Summaries of a latent-variable model's evaluation that every kind reports the same way."""

from __future__ import annotations

import math

import numpy as np

ACTIVE_UNIT_THRESHOLD = 0.01


def bits_per_dim(nats: float, num_dims: int) -> float:
    """nats per example -> bits per dimension: nats / (D ln 2), D = pixels x channels."""
    return float(nats) / (num_dims * math.log(2.0))


def active_units(posterior_means: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """How many latent dimensions u have Cov_x(E_q[z_u|x]) > threshold (Burda et al. 2016)."""
    return int(np.sum(np.var(np.asarray(posterior_means), axis=0) > threshold))
