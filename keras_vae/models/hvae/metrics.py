"""Held-out metrics of a hierarchical VAE, the way the papers report them (nats per example).

* log p(x) by importance sampling over the whole hierarchy (Burda et al. 2016), K samples of
  (z_1..z_L) ~ q drawn top-down, `importance_sampled_log_likelihood`:

      log p(x) ~= log 1/K sum_k p(x|z_k) prod_i p(z_ik|z_{>i,k}) / q(z_ik|z_{>i,k}, x)

* the ELBO and the KL of each layer (the conditional KLs of layers i < L averaged over the
  samples of z_{>i});
* bits/dim: NLL / (D ln 2);
* active units per layer (Burda et al.): unit u of layer i is active when
  Cov_x(E_q[z_iu | z_{>i}, x]) > 0.01, along the posterior's mean path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from keras_vae.data import pipeline as data
from keras_vae.metrics.latent import Moments, active_units, bits_per_dim
from keras_vae.metrics.progress import SamplingProgress
from keras_vae.models.hvae.model import HierarchicalVAE


def _batch_estimates(
    model: HierarchicalVAE,
    images,
    num_samples: int,
    *,
    batch_size: int = 100,
    chunk_size: int = 50,
    seed: int = 0,
    dtype: str = "float64",
    verbose: int = 0,
    progress_stream=None,
):
    """Per-example NumPy results of each batch of `images` in turn (`data.batches`: an array,
    or a stream read once): `log_px`, `reconstruction` and `kl_layers` `[B, L]` (1/K sums),
    and `posterior_means` (per layer `[B, size_i]`). Batch i draws its samples from the i-th
    seed pair of `default_rng(seed)`, so an array and a stream of the same images give the
    same numbers. `verbose=1` prints the progress line (`SamplingProgress`) to
    `progress_stream` (default stdout)."""
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size),
                        ("chunk_size", chunk_size)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32'. Received: dtype={dtype!r}")
    if not model.built:
        model.build((None, *np.shape(images)[1:]))
    run = _batch_fn(model, num_samples, min(chunk_size, num_samples), dtype)
    rng = np.random.default_rng(seed)
    progress = SamplingProgress(len(images), num_samples, progress_stream) if verbose else None
    for x, _ in data.batches(images, batch_size):
        batch_seed = tf.constant(rng.integers(0, 2**31 - 1, size=2), tf.int32)
        (log_sum, log_px_z, kls), means = run(tf.constant(x), batch_seed)
        log_px = log_sum.numpy() - math.log(num_samples)
        if progress is not None:
            progress.update(log_px)
        yield {
            "log_px": log_px,
            "reconstruction": log_px_z.numpy() / num_samples,
            "kl_layers": kls.numpy() / num_samples,
            "posterior_means": [m.numpy() for m in means],
        }


def _batch_fn(model: HierarchicalVAE, num_samples: int, chunk_size: int, dtype: str):
    """A compiled f(x, seed) -> ((log sum_k w_k, sum_k log p(x|z_k), the layers' KL sums
    `[B, L]`), the posterior means along the mean path): the bottom-up pass once, the K
    samples `chunk_size` at a time in a `tf.while_loop` (chunk j from `fold_in(seed, j)`)."""
    full, rest = divmod(num_samples, chunk_size)
    total_size = sum(model.latent_sizes)
    count = model.num_layers

    def chunk(x, features, seed, size, totals):
        noise = tf.random.stateless_normal(tf.stack([size, tf.shape(x)[0], total_size]), seed)
        out = model.sample_pass(x, features, noise)
        log_w = tf.cast(out["log_weights"], dtype)
        log_sum = tf.reduce_logsumexp(tf.stack([totals[0], tf.reduce_logsumexp(log_w, 0)]), 0)
        kls = tf.cast(tf.stack([tf.reduce_sum(k, 0) for k in out["kl"]], -1), dtype)
        log_px_z = tf.cast(tf.reduce_sum(out["log_likelihood"], 0), dtype)
        return log_sum, totals[1] + log_px_z, totals[2] + kls

    @tf.function(reduce_retracing=True)
    def run(x, seed):
        features = model.bottom_up(x)
        batch = tf.shape(x)[0]
        totals = (tf.fill([batch], tf.constant(-np.inf, dtype)), tf.zeros([batch], dtype),
                  tf.zeros([batch, count], dtype))  # fmt: skip
        fold = tf.random.experimental.stateless_fold_in

        def body(i, totals):
            return i + 1, chunk(x, features, fold(seed, i), chunk_size, totals)

        _, totals = tf.while_loop(lambda i, _: i < full, body, (tf.constant(0), totals))
        if rest:
            totals = chunk(x, features, fold(seed, full), rest, totals)
        means = [p["loc"] for p in model.encode_parameters(x)]
        return totals, means

    return run


def importance_sampled_log_likelihood(
    model: HierarchicalVAE,
    images,
    num_samples: int = 5000,
    *,
    batch_size: int = 100,
    chunk_size: int = 50,
    seed: int = 0,
    dtype: str = "float64",
) -> dict[str, Any]:
    """log p(x) by importance sampling over the whole hierarchy, the ELBO and its KL per layer.

        log p(x) ~= log 1/K sum_k p(x|z_k) prod_i p(z_ik|z_{>i,k}) / q(z_ik|z_{>i,k}, x),

    z_k ~ q(z|x) drawn top-down (Burda et al. 2016). The bottom-up pass runs once per batch;
    a `tf.while_loop` draws the K samples `chunk_size` at a time (chunk j from
    `fold_in(seed, j)`) and keeps a running log-sum-exp in `dtype` (float64 by default: the
    sum of K = 5,000 weights loses nothing to float32 rounding).

    Args:
        model: A built `HierarchicalVAE`.
        images: `[N, *image_shape]`, or a `keras_vae.data.ImageStream` of them (read once,
            batch by batch: `keras_vae.data.batches`).
        num_samples: K.
        batch_size: Examples per compiled call.
        chunk_size: Samples per example per loop step (bounds the memory).
        seed: Seed of the samples; the same seed, batch and chunk sizes give the same numbers.
        dtype: `"float64"` or `"float32"`, of the log-sum-exp and the running sums.

    Returns:
        Arrays over the N examples: `log_px`; `elbo` = `reconstruction` - `kl` (1/K sums over
        the K samples, the KLs as in training: closed forms inside, Monte Carlo outside);
        `kl_layers` `[N, L]`; `posterior_means`, per layer `[N, size_i]` along the mean path
        (for active units per layer, `keras_vae.metrics.latent.active_units`).
    """
    options = {"batch_size": batch_size, "chunk_size": chunk_size, "seed": seed, "dtype": dtype}
    parts: dict[str, list] = {"log_px": [], "reconstruction": [], "kl_layers": []}
    means: list[list] = [[] for _ in range(model.num_layers)]
    for batch in _batch_estimates(model, images, num_samples, **options):
        for key, value in parts.items():
            value.append(batch[key])
        for i, m in enumerate(batch["posterior_means"]):
            means[i].append(m)
    result = {key: np.concatenate(value) for key, value in parts.items()}
    result["kl"] = result["kl_layers"].sum(axis=1)
    result["elbo"] = result["reconstruction"] - result["kl"]
    result["posterior_means"] = [np.concatenate(m) for m in means]
    return result


def evaluate(
    model: HierarchicalVAE,
    images,
    importance_samples: int = 1000,
    **options,
) -> dict[str, Any]:
    """Every held-out metric in one pass, JSON-ready (nats per example unless a key says).

    The means are summed batch by batch and the variances (`nll_stderr`, active units) kept
    as running moments (`Moments`): memory does not grow with the number of examples.

    Args:
        model: A built `HierarchicalVAE`.
        images: `[N, *image_shape]`, or a `keras_vae.data.ImageStream` of them.
        importance_samples: K of the log p(x) estimate (5,000 for the papers' tables).
        **options: `batch_size`, `chunk_size`, `seed`, `dtype` of
            `importance_sampled_log_likelihood`; `verbose=1` and `progress_stream` for the
            progress line.

    Returns:
        `nll` (-mean log p(x)) and `nll_stderr` (its standard error over the examples),
        `bits_per_dim`, `elbo`, `reconstruction`, `kl` and `kl_layers` (one per layer, layer 1
        first), `active_units` and `latent_sizes` per layer, `importance_samples`,
        `num_examples`, `unit`, `precision` (the model's dtype policy: `float32`, or the
        mixed policy its matmuls ran in; the log-densities, KLs and sums are float32 in
        every policy, the log-sum-exp and the running sums in `dtype`).
    """
    log_px = Moments()
    means = [Moments() for _ in range(model.num_layers)]
    reconstruction, kl_layers = 0.0, 0.0
    for batch in _batch_estimates(model, images, importance_samples, **options):
        log_px.add(batch["log_px"])
        reconstruction += np.sum(batch["reconstruction"], dtype=np.float64)
        kl_layers = kl_layers + np.sum(batch["kl_layers"], axis=0, dtype=np.float64)
        for moments, m in zip(means, batch["posterior_means"], strict=True):
            moments.add(m)
    count = log_px.count
    if count == 0:
        raise ValueError("No images to evaluate: give at least one.")
    kl = float(np.sum(kl_layers) / count)
    return {
        "nll": float(-log_px.mean),
        "nll_stderr": log_px.stderr(),
        "bits_per_dim": bits_per_dim(-log_px.mean, int(np.prod(np.shape(images)[1:]))),
        "elbo": float(reconstruction / count) - kl,
        "reconstruction": float(reconstruction / count),
        "kl": kl,
        "kl_layers": [float(v / count) for v in kl_layers],
        "active_units": [active_units(m) for m in means],
        "latent_sizes": list(model.latent_sizes),
        "importance_samples": int(importance_samples),
        "num_examples": int(count),
        "unit": "nats per example",
        "precision": model.dtype_policy.name,
    }
