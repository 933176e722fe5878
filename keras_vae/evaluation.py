"""Held-out metrics the way papers report them.

* ELBO: the evidence lower bound, nats per example.
* NLL: -log p(x) estimated by importance sampling with K samples from q(z|x)
  (Burda et al., 2016; `keras_vae.objectives.iwae_bound`):

      log p(x) ~= log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)

  a lower bound of log p(x) in expectation that tightens as K grows. The K samples are drawn in
  chunks and combined with a running log-sum-exp, so memory stays bounded for K = 5,000; each
  chunk is one XLA-compiled call.
* bits/dim: NLL / (D ln 2), D = number of pixels.
* Active units (Burda et al.): latent u is active when Cov_x(E_q[z_u|x]) > 0.01.
* Per-dimension KL: E_x[KL(q(z_u|x) || p(z_u))], nats, for posteriors whose KL factorises.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import objectives
from keras_vae.model import VAE

tfd = tfp.distributions
ACTIVE_UNIT_THRESHOLD = 0.01


def _log_weights_fn(model: VAE, jit_compile: bool):
    """A compiled f(x, seed, num_samples) -> (log_w [K, B], posterior mean, per-dim KL)."""

    def log_weights(x, seed, num_samples):
        posterior = model.encode(x)
        prior = model.prior.distribution()
        z = posterior.sample(num_samples, seed=seed)
        log_w = objectives.log_importance_weights(model.decode(z).log_prob(x), posterior, prior, z)
        return log_w, posterior.mean(), _per_dimension_kl(posterior, prior)

    return tf.function(log_weights, jit_compile=jit_compile, reduce_retracing=True)


def _per_dimension_kl(posterior, prior) -> tf.Tensor:
    """KL per latent dimension, `[B, latent_dim]`, for Independent posteriors and priors."""
    inner_q = getattr(posterior, "distribution", None)
    inner_p = getattr(prior, "distribution", None)
    if inner_q is not None and inner_p is not None:
        try:
            return tfd.kl_divergence(inner_q, inner_p)
        except NotImplementedError:
            pass
    return tf.fill(tf.shape(posterior.mean()), tf.constant(np.nan, posterior.dtype))


def importance_sampled_log_likelihood(
    model: VAE,
    images: np.ndarray,
    num_samples: int = 5000,
    *,
    batch_size: int = 100,
    chunk_size: int = 500,
    seed: int = 0,
    jit_compile: bool = True,
    verbose: int = 1,
) -> dict[str, np.ndarray]:
    """Per-example importance-sampled log p(x), the ELBO and posterior statistics.

    Args:
        model: A trained VAE.
        images: `[N, *image_shape]` float32.
        num_samples: K, importance samples per example.
        batch_size: Examples per call.
        chunk_size: Samples per call; K is drawn in ceil(K / chunk_size) calls. Memory grows
            with batch_size x chunk_size x pixels.
        seed: Seed of the importance samples.
        jit_compile: Compile each call with XLA.
        verbose: 1 shows a progress bar, 0 is silent.

    Returns:
        A dict of arrays over the N examples: `log_px` (the estimate of log p(x)), `elbo`
        (the mean of the K log weights: an unbiased ELBO estimate with Monte Carlo KL),
        `posterior_mean` `[N, latent_dim]` and `kl_per_dim` `[N, latent_dim]`.
    """
    for name, value in (
        ("num_samples", num_samples), ("batch_size", batch_size), ("chunk_size", chunk_size)
    ):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")
    images = np.asarray(images, dtype=np.float32)
    fn = _log_weights_fn(model, jit_compile)
    rng = np.random.default_rng(seed)
    chunks = [chunk_size] * (num_samples // chunk_size)
    if num_samples % chunk_size:
        chunks.append(num_samples % chunk_size)
    outputs: dict[str, list] = {"log_px": [], "elbo": [], "posterior_mean": [], "kl_per_dim": []}
    progress = keras.utils.Progbar(len(images), unit_name="example") if verbose else None
    for start in range(0, len(images), batch_size):
        x = tf.constant(images[start : start + batch_size])
        log_sum = tf.fill([x.shape[0]], tf.constant(-np.inf, tf.float32))
        weight_sum = tf.zeros([x.shape[0]])
        for size in chunks:
            seed_pair = tf.constant(rng.integers(0, 2**31 - 1, size=2), tf.int32)
            log_w, mean, kl = fn(x, seed_pair, size)
            log_sum = tf.experimental.numpy.logaddexp(log_sum, tf.reduce_logsumexp(log_w, 0))
            weight_sum += tf.reduce_sum(log_w, 0)
        outputs["log_px"].append((log_sum - math.log(num_samples)).numpy())
        outputs["elbo"].append((weight_sum / num_samples).numpy())
        outputs["posterior_mean"].append(mean.numpy())
        outputs["kl_per_dim"].append(kl.numpy())
        if progress is not None:
            progress.add(int(x.shape[0]))
    return {key: np.concatenate(value) for key, value in outputs.items()}


def active_units(posterior_means: np.ndarray, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """How many latent dimensions u have Cov_x(E_q[z_u|x]) > threshold (Burda et al.)."""
    return int(np.sum(np.var(posterior_means, axis=0) > threshold))


def bits_per_dim(nll_nats: float, num_dims: int) -> float:
    """NLL in nats per example converted to bits per pixel: nll / (D ln 2)."""
    return float(nll_nats) / (num_dims * math.log(2.0))


def evaluate(
    model: VAE,
    images: np.ndarray,
    importance_samples: int = 1000,
    *,
    batch_size: int = 100,
    chunk_size: int = 500,
    seed: int = 0,
    verbose: int = 1,
) -> dict[str, Any]:
    """Every held-out metric in one pass; all values in nats unless the key says otherwise.

    Returns:
        A JSON-ready dict: `elbo` (mean ELBO), `nll` (-mean log p(x)), `nll_stderr` (standard
        error of that mean over the examples), `bits_per_dim`, `active_units`, `latent_dim`,
        `kl` (mean total KL), `kl_per_dim` (list), `importance_samples`, `num_examples`.
    """
    result = importance_sampled_log_likelihood(
        model,
        images,
        importance_samples,
        batch_size=batch_size,
        chunk_size=min(chunk_size, importance_samples),
        seed=seed,
        verbose=verbose,
    )
    log_px = result["log_px"].astype(np.float64)
    count = len(log_px)
    kl_per_dim = result["kl_per_dim"].mean(axis=0)
    return {
        "elbo": float(result["elbo"].mean()),
        "nll": float(-log_px.mean()),
        "nll_stderr": float(log_px.std(ddof=1) / math.sqrt(count)) if count > 1 else 0.0,
        "bits_per_dim": bits_per_dim(-log_px.mean(), int(np.prod(images.shape[1:]))),
        "active_units": active_units(result["posterior_mean"]),
        "latent_dim": int(result["posterior_mean"].shape[1]),
        "kl": float(np.sum(kl_per_dim)),
        "kl_per_dim": [float(v) for v in kl_per_dim],
        "importance_samples": int(importance_samples),
        "num_examples": int(count),
        "unit": "nats per example",
    }


__all__ = [
    "active_units",
    "bits_per_dim",
    "evaluate",
    "importance_sampled_log_likelihood",
]
