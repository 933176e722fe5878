"""Held-out metrics the way papers report them, for every posterior, prior and likelihood.

* ELBO: the evidence lower bound, nats per example, whatever objective the model trains with
  (beta = 1, no free bits, no warm-up): the `elbo` metric of `fit`,

      ELBO(x) = 1/K sum_k log p(x|z_k) - KL(q(z|x) || p(z)),  z_k ~ q(z|x),

  with the prior's closed-form KL where it has one (`prior.kl`) and otherwise the Monte Carlo
  KL 1/K sum_k [log q(z_k|x) - log p(z_k)] from the same K samples.
* NLL: -log p(x) estimated by importance sampling with K samples from q(z|x)
  (Burda et al., 2016; `keras_vae.parts.objectives.iwae_bound`):

      log p(x) ~= log 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)

  a lower bound of log p(x) in expectation that tightens as K grows; p(z) is the model's own
  prior (`model.prior_distribution()`: a mixture, a VampPrior, ...). The K samples are drawn
  in chunks inside one compiled call per batch (a `tf.while_loop` with a running log-sum-exp),
  so memory stays bounded for K = 5,000; the encoder runs once per batch, the decoder once per
  chunk on all its samples, and the likelihood head's own `log_likelihood` (for Bernoulli a
  direct formula, `bernoulli_log_prob`, not TFP) scores them. Under a mixed policy
  (`keras-vae evaluate --precision mixed_bfloat16`: `VAEKind.with_precision`) the matmuls
  run in bfloat16 or float16 while the heads' outputs, every log-density, the sums over
  pixels and samples, the KL and the log-sum-exp stay float32. For a model trained with the
  IWAE objective this NLL is the metric to compare.
  For a conditional VAE (`keras_vae.models.vae.conditional`) given each image's label y, the same
  estimator with q(z|x, y), p(x|z, y) and p(z|y) gives log p(x|y), and the ELBO is the
  conditional bound.
* bits/dim: NLL / (D ln 2), D = number of pixels.
* Active units (Burda et al.): latent u is active when Cov_x(E_q[z_u|x]) > 0.01.
* Per-dimension KL: E_x[KL(q(z_u|x) || p(z_u))], nats, where q and p factorise
  (`prior.kl_per_dim`); None otherwise (full covariance posteriors, mixture priors).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from keras_vae.data import pipeline as data
from keras_vae.metrics.latent import (  # noqa: F401  (one function each, every kind)
    ACTIVE_UNIT_THRESHOLD,
    Moments,
    active_units,
    bits_per_dim,
)
from keras_vae.metrics.progress import SamplingProgress
from keras_vae.models.vae.model import VAE
from keras_vae.parts import objectives

CLOSED_FORM, MONTE_CARLO = "closed_form", "monte_carlo"
# samples per loop step: 20 x 100 examples = 2,000 decoded rows (interleaved A/B, 100 images,
# K=5000: 20 took 0.8x the CPU time of 50 in float32 and in bfloat16, 100 more than 50)
DEFAULT_CHUNK_SIZE = 20


def _sample_chunk(model: VAE, x, parameters, q, prior, log_likelihood, seed, size: int):
    """log w `[size, B]` and log p(x|z) `[size, B]` for `size` fresh samples z ~ q(z|x) per
    example: the decoder runs once on all `size * B` samples as one `[size * B, latent]` batch.
    """
    batch = tf.shape(x)[0]
    shape = tf.stack([size, batch, model.posterior.noise_size])
    z = model.posterior.reparameterize(parameters, tf.random.stateless_normal(shape, seed))
    features = model.decoder(tf.reshape(z, [-1, model.latent_dim]))
    unflatten = lambda v: tf.reshape(v, tf.concat([[size, batch], tf.shape(v)[1:]], 0))  # noqa: E731
    params = {k: unflatten(v) for k, v in model.likelihood.parameters(features).items()}
    log_px_z = log_likelihood(params, x)
    return objectives.log_importance_weights(log_px_z, q, prior, z), log_px_z


def _batch_fn(model: VAE, num_samples: int, chunk_size: int, jit_compile: bool):
    """A compiled f(x, seed) -> dict of per-example results over all K samples of a batch.

    The encoder (and a VampPrior's pseudo-inputs) run once per batch; a `tf.while_loop` draws
    the K samples `chunk_size` at a time (chunk i from `fold_in(seed, i)`) and keeps a running
    log-sum-exp, so memory is bounded by `chunk_size x B` samples and the host sees one call
    per batch. Keys: `log_sum_w` (log sum_k w_k), `sum_log_w` and `sum_log_likelihood` (sums
    over the K samples), `posterior_mean` `[B, latent_dim]`, and, where the prior has them,
    the closed-form `kl` `[B]` and `kl_per_dim` `[B, latent_dim]`.
    """
    full_chunks, rest = divmod(num_samples, chunk_size)
    log_likelihood = model.likelihood.log_likelihood
    if jit_compile:  # XLA fuses the elementwise log-likelihood; the matmuls stay in TF
        log_likelihood = tf.function(log_likelihood, jit_compile=True)

    def run(x, seed, y=None):
        given = model if y is None else model.given(y)  # a conditional VAE with its labels
        parameters = given.encode_parameters(x)
        q = given.posterior.distribution(**parameters)
        prior = given.prior_distribution()

        def step(index, size, totals):
            log_w, log_px_z = _sample_chunk(
                given, x, parameters, q, prior, log_likelihood,
                tf.random.experimental.stateless_fold_in(seed, index), size,
            )  # fmt: skip
            log_sum = tf.reduce_logsumexp(tf.stack([totals[0], tf.reduce_logsumexp(log_w, 0)]), 0)
            return (
                log_sum,
                totals[1] + tf.reduce_sum(log_w, 0),
                totals[2] + tf.reduce_sum(log_px_z, 0),
            )

        batch = tf.shape(x)[0]
        totals = (tf.fill([batch], -np.inf), tf.zeros([batch]), tf.zeros([batch]))
        _, totals = tf.while_loop(
            lambda i, _: i < full_chunks,
            lambda i, t: (i + 1, step(i, chunk_size, t)),
            (tf.constant(0), totals),
            parallel_iterations=2,  # the next chunk may start while this one finishes
        )
        if rest:
            totals = step(full_chunks, rest, totals)
        outputs = dict(zip(("log_sum_w", "sum_log_w", "sum_log_likelihood"), totals, strict=True))
        outputs["posterior_mean"] = q.mean()
        for name, value in (
            ("kl", given.prior.kl(q, given)), ("kl_per_dim", given.prior.kl_per_dim(q, given))
        ):  # fmt: skip
            if value is not None:
                outputs[name] = value
        return outputs

    return tf.function(run, reduce_retracing=True)


def _batch_results(outputs: dict, num_samples: int) -> tuple[dict, bool]:
    """Per-example NumPy results of one batch and whether its KL is in closed form."""
    sum_log_likelihood = outputs["sum_log_likelihood"]
    reconstruction = sum_log_likelihood / num_samples
    # sum_k log w_k = sum_k log p(x|z_k) - sum_k [log q(z_k|x) - log p(z_k)]
    kl = outputs.get("kl", (sum_log_likelihood - outputs["sum_log_w"]) / num_samples)
    results = {
        "log_px": outputs["log_sum_w"] - math.log(num_samples),
        "elbo": reconstruction - kl,
        "reconstruction": reconstruction,
        "kl": kl,
        "posterior_mean": outputs["posterior_mean"],
    }
    if "kl_per_dim" in outputs:
        results["kl_per_dim"] = outputs["kl_per_dim"]
    return {key: np.asarray(value) for key, value in results.items()}, "kl" in outputs


def _check_sizes(**sizes) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")


def _batch_estimates(
    model: VAE, images, labels, num_samples: int, *, batch_size: int, chunk_size: int,
    seed: int, jit_compile: bool, verbose: int, progress_stream,
):  # fmt: skip
    """`_batch_results` of each batch of `images` in turn (`data.batches`: an array and its
    `labels`, or a stream, read once) and whether its KL is in closed form. Batch i draws its
    samples from the i-th seed pair of `default_rng(seed)`: the same seed, batch and chunk
    sizes give the same numbers from an array or from a stream of the same images."""
    _check_sizes(num_samples=num_samples, batch_size=batch_size, chunk_size=chunk_size)
    if not model.built:
        model.build((None, *np.shape(images)[1:]))
    conditional = hasattr(model, "condition_dim")
    fn = _batch_fn(model, num_samples, min(chunk_size, num_samples), jit_compile)
    rng = np.random.default_rng(seed)
    progress = None
    for x, y in data.batches(images, batch_size, labels):
        if (y is None) == conditional:
            raise ValueError(
                "labels go with a conditional VAE (log p(x|y)) and only with it: give one per "
                f"image for a ConditionalVAE, none for a {type(model).__name__}."
            )
        if verbose and progress is None:  # (its first line once the data are seen to fit)
            progress = SamplingProgress(len(images), num_samples, progress_stream)
        batch_seed = tf.constant(rng.integers(0, 2**31 - 1, size=2), tf.int32)
        conditions = () if y is None else (model.condition(y),)
        batch = _batch_results(fn(tf.constant(x), batch_seed, *conditions), num_samples)
        if progress is not None:
            progress.update(batch[0]["log_px"])
        yield batch


def importance_sampled_log_likelihood(
    model: VAE,
    images,
    num_samples: int = 5000,
    *,
    batch_size: int = 100,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
    jit_compile: bool = False,
    verbose: int = 1,
    labels: np.ndarray | None = None,
    progress_stream=None,
) -> dict[str, Any]:
    """Per-example importance-sampled log p(x) (log p(x|y) given `labels`), the ELBO and
    posterior statistics.

    Args:
        model: A trained VAE (any posterior, prior, likelihood and objective).
        images: `[N, *image_shape]` float32, or a `keras_vae.data.ImageStream` of them (read
            once, batch by batch: `keras_vae.data.batches`; a labelled stream brings the
            labels).
        num_samples: K, importance samples per example.
        batch_size: Examples per compiled call (one progress update each).
        chunk_size: Samples per example drawn in one step of the call's loop; each step
            decodes `chunk_size x batch_size` latents in one batch, which bounds the memory.
        seed: Seed of the importance samples; the same seed, batch and chunk sizes give the
            same numbers.
        jit_compile: Compile the per-sample log-likelihood with XLA (the matmuls run in TF).
            Off by default: a CI run crashed (segmentation fault) inside this XLA function
            nested in the graph's while loop; it is about 15% faster where it works.
        verbose: 1 prints a progress line (examples done, rate, time left), 0 is silent.
        progress_stream: Where the progress goes (default `sys.stdout`).
        labels: A conditional VAE's y for each image of an array (int labels `[N]` or vectors
            `[N, C]`); required for it, refused for a plain VAE.

    Returns:
        A dict of arrays over the N examples: `log_px` (the estimate of log p(x)), `elbo`
        (`reconstruction - kl`, see the module docstring), `reconstruction`
        (1/K sum_k log p(x|z_k)), `kl`, `posterior_mean` `[N, latent_dim]`, `kl_per_dim`
        (`[N, latent_dim]`, or None where the KL does not factorise), and `kl_method`
        (`"closed_form"` or `"monte_carlo"`, how `kl` was computed).
    """
    outputs: dict[str, list] = {}
    closed_form = False
    for batch, closed in _batch_estimates(
        model, images, labels, num_samples, batch_size=batch_size, chunk_size=chunk_size,
        seed=seed, jit_compile=jit_compile, verbose=verbose, progress_stream=progress_stream,
    ):  # fmt: skip
        closed_form = closed
        for key, value in batch.items():
            outputs.setdefault(key, []).append(value)
    result: dict[str, Any] = {key: np.concatenate(value) for key, value in outputs.items()}
    result.setdefault("kl_per_dim", None)
    result["kl_method"] = CLOSED_FORM if closed_form else MONTE_CARLO
    return result


def evaluate(
    model: VAE,
    images,
    importance_samples: int = 1000,
    *,
    batch_size: int = 100,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
    verbose: int = 1,
    labels: np.ndarray | None = None,
    progress_stream=None,
) -> dict[str, Any]:
    """Every held-out metric in one pass; all values in nats unless the key says otherwise.
    With `labels` (a conditional VAE) `nll` is -log p(x|y) and `elbo` the conditional bound.

    `images` is an array or a `keras_vae.data.ImageStream` (see
    `importance_sampled_log_likelihood`): the means are summed batch by batch and the
    variances (`nll_stderr`, active units) kept as running moments (`Moments`), so memory
    does not grow with the number of examples; the same seed gives the same numbers from an
    array and from a stream of the same images.

    Returns:
        A JSON-ready dict: `elbo` (mean ELBO), `reconstruction` (its expected log-likelihood
        part), `kl` (mean total KL) with `kl_method` (`"closed_form"` or `"monte_carlo"`),
        `kl_per_dim` (list, or None where the KL does not factorise over latents), `nll`
        (-mean log p(x)), `nll_stderr` (standard error of that mean over the examples),
        `bits_per_dim`, `active_units`, `latent_dim`, `importance_samples`, `num_examples`,
        `precision` (the model's dtype policy: `float32`, or the mixed policy its matmuls ran
        in; every density, sum and log-sum-exp is float32 in any policy).
    """
    sums: dict[str, Any] = {}
    log_px, means = Moments(), Moments()
    closed_form = False
    for batch, closed in _batch_estimates(
        model, images, labels, importance_samples, batch_size=batch_size,
        chunk_size=chunk_size, seed=seed, jit_compile=False, verbose=verbose,
        progress_stream=progress_stream,
    ):  # fmt: skip
        closed_form = closed
        log_px.add(batch["log_px"])
        means.add(batch["posterior_mean"])
        for key in ("elbo", "reconstruction", "kl", "kl_per_dim"):
            if key in batch:
                sums[key] = sums.get(key, 0.0) + np.sum(batch[key], axis=0, dtype=np.float64)
    count = log_px.count
    if count == 0:
        raise ValueError("No images to evaluate: give at least one.")
    kl_per_dim = sums.get("kl_per_dim")
    return {
        "elbo": float(sums["elbo"] / count),
        "reconstruction": float(sums["reconstruction"] / count),
        "nll": float(-log_px.mean),
        "nll_stderr": log_px.stderr(),
        "bits_per_dim": bits_per_dim(-log_px.mean, int(np.prod(np.shape(images)[1:]))),
        "active_units": active_units(means),
        "latent_dim": int(means.mean.shape[0]),
        "kl": float(sums["kl"] / count),
        "kl_method": CLOSED_FORM if closed_form else MONTE_CARLO,
        "kl_per_dim": None if kl_per_dim is None else [float(v / count) for v in kl_per_dim],
        "importance_samples": int(importance_samples),
        "num_examples": int(count),
        "precision": model.dtype_policy.name,
        "unit": "nats per example",
    }


__all__ = [
    "active_units",
    "bits_per_dim",
    "evaluate",
    "importance_sampled_log_likelihood",
]
