"""Held-out metrics the way papers report them, for every posterior, prior and likelihood.

* ELBO: the evidence lower bound, nats per example, whatever objective the model trains with
  (beta = 1, no free bits, no warm-up): the `elbo` metric of `fit`,

      ELBO(x) = 1/K sum_k log p(x|z_k) - KL(q(z|x) || p(z)),  z_k ~ q(z|x),

  with the prior's closed-form KL where it has one (`prior.kl`) and otherwise the Monte Carlo
  KL 1/K sum_k [log q(z_k|x) - log p(z_k)] from the same K samples.
* NLL: -log p(x) estimated by importance sampling with K samples from q(z|x)
  (Burda et al., 2016; `keras_vae.objectives.iwae_bound`):

      log p(x) ~= log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)

  a lower bound of log p(x) in expectation that tightens as K grows; p(z) is the model's own
  prior (`model.prior_distribution()`: a mixture, a VampPrior, ...). The K samples are drawn
  in chunks and combined with a running log-sum-exp, so memory stays bounded for K = 5,000;
  each chunk is one XLA-compiled call. For a model trained with the IWAE objective this NLL is
  the metric to compare.
* bits/dim: NLL / (D ln 2), D = number of pixels.
* Active units (Burda et al.): latent u is active when Cov_x(E_q[z_u|x]) > 0.01.
* Per-dimension KL: E_x[KL(q(z_u|x) || p(z_u))], nats, where q and p factorise
  (`prior.kl_per_dim`); None otherwise (full covariance posteriors, mixture priors).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_vae import objectives
from keras_vae.model import VAE

ACTIVE_UNIT_THRESHOLD = 0.01
CLOSED_FORM, MONTE_CARLO = "closed_form", "monte_carlo"


def _chunk_fn(model: VAE, jit_compile: bool):
    """A compiled f(x, seed, num_samples) -> dict of per-example results for one chunk.

    Keys: `log_sum_w` (log sum_k w_k), `sum_log_w` and `sum_log_likelihood` (sums over the
    chunk's samples), `posterior_mean` `[B, latent_dim]`, and, where the prior has them, the
    closed-form `kl` `[B]` and `kl_per_dim` `[B, latent_dim]`.
    """

    def chunk(x, seed, num_samples):
        parameters = model.encode_parameters(x)
        q = model.posterior.distribution(**parameters)
        prior = model.prior_distribution()
        shape = tf.stack([num_samples, tf.shape(x)[0], model.posterior.noise_size])
        z = model.posterior.reparameterize(parameters, tf.random.stateless_normal(shape, seed))
        log_likelihood = model.decode(z).log_prob(x)
        log_w = objectives.log_importance_weights(log_likelihood, q, prior, z)
        outputs = {
            "log_sum_w": tf.reduce_logsumexp(log_w, axis=0),
            "sum_log_w": tf.reduce_sum(log_w, axis=0),
            "sum_log_likelihood": tf.reduce_sum(log_likelihood, axis=0),
            "posterior_mean": q.mean(),
        }
        for name, value in (
            ("kl", model.prior.kl(q, model)), ("kl_per_dim", model.prior.kl_per_dim(q, model))
        ):  # fmt: skip
            if value is not None:
                outputs[name] = value
        return outputs

    return tf.function(chunk, jit_compile=jit_compile, reduce_retracing=True)


def _chunk_sizes(num_samples: int, chunk_size: int) -> list[int]:
    sizes = [chunk_size] * (num_samples // chunk_size)
    return sizes + ([num_samples % chunk_size] if num_samples % chunk_size else [])


def _batch_results(
    fn, x: tf.Tensor, chunks: list[int], rng: np.random.Generator
) -> tuple[dict, bool]:
    """All K samples for one batch, chunk by chunk: (per-example NumPy arrays, whether the KL
    is in closed form)."""
    num_samples = sum(chunks)
    log_sum = tf.fill([x.shape[0]], tf.constant(-np.inf, tf.float32))
    sum_log_w = sum_log_likelihood = tf.zeros([x.shape[0]])
    for size in chunks:
        seed = tf.constant(rng.integers(0, 2**31 - 1, size=2), tf.int32)
        out = fn(x, seed, size)
        log_sum = tf.experimental.numpy.logaddexp(log_sum, out["log_sum_w"])
        sum_log_w += out["sum_log_w"]
        sum_log_likelihood += out["sum_log_likelihood"]
    reconstruction = sum_log_likelihood / num_samples
    # sum_k log w_k = sum_k log p(x|z_k) - sum_k [log q(z_k|x) - log p(z_k)]
    kl = out.get("kl", (sum_log_likelihood - sum_log_w) / num_samples)
    results = {
        "log_px": log_sum - math.log(num_samples),
        "elbo": reconstruction - kl,
        "reconstruction": reconstruction,
        "kl": kl,
        "posterior_mean": out["posterior_mean"],
    }
    if "kl_per_dim" in out:
        results["kl_per_dim"] = out["kl_per_dim"]
    return {key: np.asarray(value) for key, value in results.items()}, "kl" in out


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
) -> dict[str, Any]:
    """Per-example importance-sampled log p(x), the ELBO and posterior statistics.

    Args:
        model: A trained VAE (any posterior, prior, likelihood and objective).
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
        (`reconstruction - kl`, see the module docstring), `reconstruction`
        (1/K sum_k log p(x|z_k)), `kl`, `posterior_mean` `[N, latent_dim]`, `kl_per_dim`
        (`[N, latent_dim]`, or None where the KL does not factorise), and `kl_method`
        (`"closed_form"` or `"monte_carlo"`, how `kl` was computed).
    """
    for name, value in (
        ("num_samples", num_samples), ("batch_size", batch_size), ("chunk_size", chunk_size)
    ):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")
    images = np.asarray(images, dtype=np.float32)
    if not model.built:
        model.build((None, *images.shape[1:]))
    fn = _chunk_fn(model, jit_compile)
    rng = np.random.default_rng(seed)
    chunks = _chunk_sizes(num_samples, chunk_size)
    outputs: dict[str, list] = {}
    closed_form = False
    progress = keras.utils.Progbar(len(images), unit_name="example") if verbose else None
    for start in range(0, len(images), batch_size):
        x = tf.constant(images[start : start + batch_size])
        batch, closed_form = _batch_results(fn, x, chunks, rng)
        for key, value in batch.items():
            outputs.setdefault(key, []).append(value)
        if progress is not None:
            progress.add(int(x.shape[0]))
    result: dict[str, Any] = {key: np.concatenate(value) for key, value in outputs.items()}
    result.setdefault("kl_per_dim", None)
    result["kl_method"] = CLOSED_FORM if closed_form else MONTE_CARLO
    return result


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
        A JSON-ready dict: `elbo` (mean ELBO), `reconstruction` (its expected log-likelihood
        part), `kl` (mean total KL) with `kl_method` (`"closed_form"` or `"monte_carlo"`),
        `kl_per_dim` (list, or None where the KL does not factorise over latents), `nll`
        (-mean log p(x)), `nll_stderr` (standard error of that mean over the examples),
        `bits_per_dim`, `active_units`, `latent_dim`, `importance_samples`, `num_examples`.
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
    kl_per_dim = result["kl_per_dim"]
    return {
        "elbo": float(result["elbo"].mean()),
        "reconstruction": float(result["reconstruction"].mean()),
        "nll": float(-log_px.mean()),
        "nll_stderr": float(log_px.std(ddof=1) / math.sqrt(count)) if count > 1 else 0.0,
        "bits_per_dim": bits_per_dim(-log_px.mean(), int(np.prod(images.shape[1:]))),
        "active_units": active_units(result["posterior_mean"]),
        "latent_dim": int(result["posterior_mean"].shape[1]),
        "kl": float(result["kl"].mean()),
        "kl_method": result["kl_method"],
        "kl_per_dim": None if kl_per_dim is None else [float(v) for v in kl_per_dim.mean(0)],
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
