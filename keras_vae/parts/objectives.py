"""Variational objectives: pure functions of distributions and samples, and the objective
objects that a `VAE` trains with.

The pure functions (`elbo`, `iwae_bound`, `kl_weight`, `free_bits_kl`, ...) hold the math and
no Keras state. An objective (`ELBO`, `IWAE`, registered by name) is a small serializable
object with a config: called with a model, a batch, the trainer's noise and the training step,
it returns the loss to minimise and the per-example terms that `fit` reports as metrics. The
reported `elbo` is always the true bound (weight 1, no floor), whatever is optimised.

A model whose q(z|x) is not one head over one z (a hierarchy with top-down inference, where
q(z_i|z_{>i}, x) depends on the sampled z_{>i}) provides `latent_terms(x, noise, analytic_kl,
dreg)` instead, returning `LatentTerms`: per-sample log p(x|z), log weights and the KL split
into free-bits groups. `ELBO` and `IWAE` use it when the model has it, so the same objective
objects train both kinds.

Notation: x is a batch of B examples, z has shape [L, B, latent_dim] (L Monte Carlo samples per
example, drawn by the caller from q(z|x) with the reparameterisation z = mu + sigma * eps), and
`log_likelihood` is log p(x|z) with shape [L, B]. Every returned term has shape [B] and is in
nats.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import registry
from keras_vae._internal.checks import check_nonnegative_float, check_positive_int
from keras_vae.parts.likelihoods import BernoulliLikelihood

tfd = tfp.distributions


class ElboTerms(NamedTuple):
    """The parts of the evidence lower bound, each `[batch]`, in nats.

    Attributes:
        elbo: reconstruction - kl (always with weight 1: the true bound).
        reconstruction: E_q[log p(x|z)], the Monte Carlo expected log-likelihood.
        kl: KL(q(z|x) || p(z)), analytic or a Monte Carlo estimate.
    """

    elbo: tf.Tensor
    reconstruction: tf.Tensor
    kl: tf.Tensor


class LatentTerms(NamedTuple):
    """What a model with its own sampling of z gives an objective (`model.latent_terms`).

    S samples of the whole latent vector per example (z_s ~ q(z|x), built from the trainer's
    noise), B examples; every term in nats.

    Attributes:
        log_likelihood: log p(x|z_s), `[S, B]`.
        log_weights: log w_s = log p(x, z_s) - log q(z_s|x), `[S, B]`. With `dreg=True` the
            variables inside log q are held constant (stop-gradient) while z_s stays a function
            of them, what `dreg_surrogate` needs.
        kl: The KL estimate per example `[B]`: closed form where a part of q and p allows it,
            else the Monte Carlo mean of log q - log p over the S samples.
        kl_groups: `[B, J]`, `kl` split into J free-bits groups (the columns sum to `kl`).
        group_sizes: `[J]` float, latent units per group: group j gets lambda * size_j free
            nats (lambda per unit, as `ELBO(free_bits=lambda)` documents).
        terms: Extra per-example terms `[B]` reported as metrics (a hierarchy's kl_1, ...).
        latents: With `dreg=True`, all of z_s as one vector `[S, B, D]` (else None).
        score: With `dreg=True`, the partial derivatives d log w_s / d z_s `[S, B, D]`, each
            unit's with the other units held fixed (else None).
    """

    log_likelihood: tf.Tensor
    log_weights: tf.Tensor
    kl: tf.Tensor
    kl_groups: tf.Tensor
    group_sizes: tf.Tensor
    terms: dict
    latents: tf.Tensor | None = None
    score: tf.Tensor | None = None


def gaussian_kl_to_standard_normal(loc: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """KL(N(mu, diag(sigma^2)) || N(0, I)) in closed form (AEVB paper, appendix B).

        KL = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)

    Args:
        loc: mu, `[..., latent_dim]`.
        scale: sigma > 0, `[..., latent_dim]`.

    Returns:
        The divergence summed over the last axis, `[...]`.
    """
    return -0.5 * tf.reduce_sum(
        1.0 + 2.0 * tf.math.log(scale) - tf.square(loc) - tf.square(scale), axis=-1
    )


def diagonal_normal_mixture_log_prob(
    z: tf.Tensor, logits: tf.Tensor, loc: tf.Tensor, scale: tf.Tensor
) -> tf.Tensor:
    """log p(z) of a mixture of K diagonal Gaussians, with the quadratic forms as matmuls:

        log p(z) = logsumexp_k [log pi_k - sum_d log s_kd - D/2 log 2 pi - Q_k(z) / 2],
        Q_k(z) = sum_d (z_d - m_kd)^2 / s_kd^2 = (z^2) . a_k - 2 z . (a_k m_k) + m_k . (a_k m_k),

    a_k = 1 / s_k^2, pi = softmax(logits). The two `[N, D] x [D, K]` products replace the
    `[N, K, D]` broadcast of TFP's `MixtureSameFamily` (for K = 500 components and the 5,000
    samples of a K = 5,000 evaluation, most of its time); Q is formed in float64, so the
    expansion loses nothing to cancellation when |m| >> s.

    Args:
        z: Points `[..., D]`.
        logits: Unnormalised log mixture weights `[K]`.
        loc: Means m `[K, D]`.
        scale: Standard deviations s > 0 `[K, D]`.

    Returns:
        log p(z), `[...]`, in the dtype of `z`.
    """
    dims = tf.shape(z)[-1]
    points = tf.cast(tf.reshape(z, tf.stack([-1, dims])), tf.float64)
    means = tf.cast(loc, tf.float64)
    precision = tf.cast(scale, tf.float64) ** -2
    weighted = precision * means
    quadratic = (
        tf.matmul(tf.square(points), precision, transpose_b=True)
        - 2.0 * tf.matmul(points, weighted, transpose_b=True)
        + tf.reduce_sum(weighted * means, axis=-1)
    )
    log_normaliser = tf.reduce_sum(tf.math.log(scale), axis=-1) + 0.5 * tf.cast(
        dims, scale.dtype
    ) * math.log(2.0 * math.pi)
    log_weights = tf.nn.log_softmax(logits) - log_normaliser
    log_joint = tf.cast(-0.5 * quadratic, z.dtype) + tf.cast(log_weights, z.dtype)
    return tf.reshape(tf.reduce_logsumexp(log_joint, axis=-1), tf.shape(z)[:-1])


def full_gaussian_kl_to_standard_normal(loc: tf.Tensor, scale_tril: tf.Tensor) -> tf.Tensor:
    """KL(N(mu, L L^T) || N(0, I)) in closed form, L lower-triangular with positive diagonal:

        KL = 1/2 [tr(L L^T) + mu^T mu - D - log det(L L^T)]
           = 1/2 [sum_ij L_ij^2 + sum_j mu_j^2 - D] - sum_j log L_jj

    Args:
        loc: mu, `[..., D]`.
        scale_tril: L, `[..., D, D]`.

    Returns:
        `[...]`, nats.
    """
    size = tf.cast(tf.shape(loc)[-1], loc.dtype)
    # the diagonal as a masked sum: MatrixDiagPart is no TFLite builtin (exported scorer)
    eye = tf.eye(scale_tril.shape[-1] or tf.shape(scale_tril)[-1], dtype=scale_tril.dtype)
    log_det = tf.reduce_sum(tf.math.log(tf.reduce_sum(scale_tril * eye, axis=-1)), axis=-1)
    squares = tf.reduce_sum(tf.square(scale_tril), axis=[-2, -1])
    return 0.5 * (squares + tf.reduce_sum(tf.square(loc), axis=-1) - size) - log_det


def has_analytic_kl(posterior: tfd.Distribution, prior: tfd.Distribution) -> bool:
    """Whether TFP has a registered closed form for KL(posterior || prior)."""
    try:
        tfd.kl_divergence(posterior, prior)
    except NotImplementedError:
        return False
    return True


def kl_divergence(
    posterior: tfd.Distribution,
    prior: tfd.Distribution,
    z: tf.Tensor | None = None,
    analytic: bool = True,
) -> tf.Tensor:
    """KL(q(z|x) || p(z)) per example.

    Analytic when `analytic` is True (TFP's registered closed form; for a diagonal Gaussian
    against N(0, I) it equals `gaussian_kl_to_standard_normal`). Otherwise the Monte Carlo
    estimate over the L samples z^(l) ~ q(z|x):

        KL ~= 1/L sum_l [log q(z^(l)|x) - log p(z^(l))]

    Args:
        posterior: q(z|x), batch shape [B], event shape [latent_dim].
        prior: p(z), event shape [latent_dim].
        z: Samples `[L, B, latent_dim]`; required when `analytic` is False.
        analytic: Use the closed form.

    Returns:
        `[B]` tensor in nats.
    """
    if analytic:
        return tfd.kl_divergence(posterior, prior)
    if z is None:
        raise ValueError("kl_divergence(analytic=False) needs the samples z. Received: z=None")
    return tf.reduce_mean(posterior.log_prob(z) - prior.log_prob(z), axis=0)


def elbo(
    log_likelihood: tf.Tensor,
    posterior: tfd.Distribution,
    prior: tfd.Distribution,
    z: tf.Tensor,
    analytic_kl: bool = True,
) -> ElboTerms:
    """The SGVB estimator of the evidence lower bound (AEVB paper, equation 7 and 10).

        L(x) = 1/L sum_l log p(x|z^(l)) - KL(q(z|x) || p(z)),
        z^(l) = mu(x) + sigma(x) * eps^(l),  eps^(l) ~ N(0, I)

    With `analytic_kl=False` the KL term is the Monte Carlo estimate of `kl_divergence`, which
    makes this the paper's first estimator (equation 6, SGVB A).

    Args:
        log_likelihood: log p(x|z^(l)), `[L, B]`.
        posterior: q(z|x), batch shape [B].
        prior: p(z).
        z: The samples the likelihood was evaluated at, `[L, B, latent_dim]`.
        analytic_kl: Use the closed-form KL.

    Returns:
        `ElboTerms(elbo, reconstruction, kl)`, each `[B]`.
    """
    reconstruction = tf.reduce_mean(log_likelihood, axis=0)
    kl = kl_divergence(posterior, prior, z=z, analytic=analytic_kl)
    return ElboTerms(elbo=reconstruction - kl, reconstruction=reconstruction, kl=kl)


def beta_elbo_loss(terms: ElboTerms, beta: float = 1.0) -> tf.Tensor:
    """The training loss: the negative beta-weighted bound, averaged over the batch.

        loss = -1/B sum_i [reconstruction_i - beta * kl_i]

    beta = 1 is the ELBO of the paper; beta != 1 is the beta-VAE objective (Higgins et al.).
    An empty batch (B = 0, e.g. a replica's share of a last batch smaller than the number of
    replicas) gives 0, not NaN.
    """
    per_example = terms.reconstruction - beta * terms.kl
    count = tf.cast(tf.maximum(tf.size(per_example), 1), per_example.dtype)
    return -tf.reduce_sum(per_example) / count


def log_importance_weights(
    log_likelihood: tf.Tensor,
    posterior: tfd.Distribution,
    prior: tfd.Distribution,
    z: tf.Tensor,
) -> tf.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), `[K, B]`, for z_k ~ q(z|x).

    Their mean over k estimates the ELBO (with Monte Carlo KL); their log-mean-exp is the
    importance-weighted bound `iwae_bound`.
    """
    return log_likelihood + prior.log_prob(z) - posterior.log_prob(z)


def iwae_bound(
    log_likelihood: tf.Tensor,
    posterior: tfd.Distribution,
    prior: tfd.Distribution,
    z: tf.Tensor,
) -> tf.Tensor:
    """The importance-weighted bound of Burda et al. (2016) with K = L samples.

        L_K(x) = log 1/K sum_k p(x|z^(k)) p(z^(k)) / q(z^(k)|x),  z^(k) ~ q(z|x)

    L_1 is the ELBO; L_K increases with K and tends to log p(x).

    Args:
        log_likelihood: log p(x|z^(k)), `[K, B]`.
        posterior: q(z|x), batch shape [B].
        prior: p(z).
        z: The samples, `[K, B, latent_dim]`.

    Returns:
        `[B]` tensor in nats.
    """
    log_weights = log_importance_weights(log_likelihood, posterior, prior, z)
    num_samples = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(num_samples)


def kl_weight(step, beta: float = 1.0, warmup_steps: int = 0, cycle_steps: int = 0):
    """The KL weight at training step t (KL warm-up, Bowman et al. 2016; cyclical annealing,
    Fu et al. 2019):

        beta_t = beta * min(1, (t mod C) / W)   (C = cycle_steps, or t itself when C = 0)

    W = 0 gives the constant beta. Returns a float32 scalar tensor.
    """
    step = tf.cast(step, tf.float32)
    if cycle_steps:
        step = tf.math.floormod(step, float(cycle_steps))
    if not warmup_steps:
        return tf.constant(beta, tf.float32)
    return beta * tf.minimum(1.0, step / float(warmup_steps))


def free_bits_kl(kl_per_dim: tf.Tensor, free_bits: float) -> tf.Tensor:
    """The KL term with free bits (Kingma et al. 2016, eq. 15), for the batch:

        KL_fb = sum_j max(lambda, 1/B sum_i KL_ij)

    Each group j (a latent dimension, or the whole z when only the total KL is known) gets
    `lambda` nats for free: its KL is not pushed below that, which keeps units from
    collapsing. `kl_per_dim` is `[B, J]`; `free_bits` a number or one floor per group `[J]`
    (groups of several units get lambda times their size); returns a scalar (0 for an empty
    batch).
    """
    size = tf.shape(kl_per_dim)[0]
    batch_mean = tf.reduce_sum(kl_per_dim, axis=0) / tf.cast(tf.maximum(size, 1), kl_per_dim.dtype)
    floored = tf.reduce_sum(tf.maximum(batch_mean, free_bits))
    return floored * tf.cast(size > 0, floored.dtype)  # no free nats for no examples


def batch_mean(values: tf.Tensor) -> tf.Tensor:
    """Mean over the batch axis; 0 (not NaN) for an empty batch."""
    count = tf.cast(tf.maximum(tf.shape(values)[0], 1), values.dtype)
    return tf.reduce_sum(values) / count


def dreg_surrogate(log_weights: tf.Tensor, z: tf.Tensor, score: tf.Tensor) -> tf.Tensor:
    """Surrogate whose gradient is the doubly-reparameterised IWAE gradient (Tucker et al. 2019).

    With log w_k computed with q(z|x)'s parameters held constant (stop-gradient) and
    w~_k = softmax_k(log w), the DReG estimator is

        model parameters:  sum_k w~_k   grad log w_k
        encoder (via z):   sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi)

    `sum_k sg(w~_k) log w_k` gives the first, but w~_k in place of w~_k^2 on the z path; the
    term `sum_k <sg((w~_k^2 - w~_k) d log w_k / d z_k), z_k>` corrects the path.

    Args:
        log_weights: log w `[K, B]` computed with q's parameters stopped.
        z: The samples `[K, B, D]`, functions of the encoder's output.
        score: d log w_k / d z_k, `[K, B, D]` (each log w_k depends on its own z_k only).

    Returns:
        `[B]`: its value is meaningless, its gradient is DReG's.
    """
    normalized = tf.stop_gradient(tf.nn.softmax(log_weights, axis=0))
    correction = (normalized * normalized - normalized)[..., None] * score
    weighted = tf.reduce_sum(normalized * log_weights, axis=0)
    return weighted + tf.reduce_sum(tf.stop_gradient(correction) * z, axis=[0, 2])


class Objective:
    """Base class: `objective(model, x, noise, step) -> (loss, terms)`.

    `noise` is eps `[num_samples, B, posterior.noise_size]` drawn by the trainer; `step` the
    optimizer's iteration count (for schedules). `loss` is the scalar to minimise (a mean over
    the batch, 0 for an empty batch); `terms` maps each name in `metric_names` to `[B]` nats.
    """

    metric_names: tuple[str, ...] = ("elbo", "reconstruction", "kl")

    #: Whether it also trains a model that samples z itself (`model.latent_terms`: a hierarchy).
    takes_latent_terms = False

    #: A layer that the objective trains itself, with its own optimizer, after each update of
    #: the model (FactorVAE's discriminator), or None. The model tracks it (built with the
    #: model, its weights and optimizer state saved and restored with it) but its variables
    #: are not the model's trainable variables.
    auxiliary_layer = None

    def __init__(self, num_samples: int = 1):
        self.num_samples = check_positive_int("num_samples", num_samples)

    def __call__(self, model, x, noise, step):
        raise NotImplementedError

    def after_update(self, model, terms: dict, seed, position) -> dict | None:
        """The objective's own update after the model's optimizer step (the trainer's
        `after_update` hook: `terms` of the step, its `[2]` seed, this replica's `(offset, B)`
        in the global batch). Returns more per-example terms to report, or None."""
        del model, terms, seed, position
        return None

    def held_out_terms(self, model, terms: dict, seed, position) -> dict | None:
        """`after_update`'s terms without the update, for held-out data (`evaluate`)."""
        del model, terms, seed, position
        return None

    def get_config(self) -> dict:
        return {"num_samples": self.num_samples}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def log_likelihood(model, z: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """log p(x|z), `[L, B]`: `model.decode(z).log_prob(x)`, computed directly for a Bernoulli
    head from its logits l as

        log p(x|z) = sum_d [x_d l_d - softplus(l_d)]
                   = -sum_d [max(l_d, 0) - x_d l_d + log(1 + exp(-|l_d|))],

    the same value as TFP's Bernoulli log_prob, -(1 - x) softplus(l) - x softplus(-l), with
    one exp and one log1p per pixel (`tf.nn.sigmoid_cross_entropy_with_logits`) instead of two
    softplus and two selects (measured: about 3% of a training step of the 784-500-20 model,
    benchmarks/README.md).
    """
    head = model.likelihood
    if type(head) is not BernoulliLikelihood:
        return model.decode(z).log_prob(x)
    logits = head.parameters(model.decoder(z))["logits"]
    labels = tf.broadcast_to(tf.cast(x, logits.dtype), tf.shape(logits))
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    return -tf.reduce_sum(per_pixel, axis=list(range(-len(head.event_shape), 0)))


class PosteriorSample(NamedTuple):
    """One pass of a one-layer VAE that every ELBO-like objective starts from.

    Attributes:
        parameters: The posterior's parameters at x.
        q: q(z|x).
        z: Reparameterised samples `[L, B, latent_dim]` from the trainer's noise.
        prior: p(z).
        reconstruction: E_q[log p(x|z)], the mean over the L samples, `[B]`.
    """

    parameters: dict
    q: object
    z: tf.Tensor
    prior: object
    reconstruction: tf.Tensor


def sample_posterior(model, x, noise) -> PosteriorSample:
    """z = mu + sigma * eps from q(z|x), the prior, and the Monte Carlo reconstruction term."""
    parameters = model.encode_parameters(x)
    q = model.posterior.distribution(**parameters)
    z = model.posterior.reparameterize(parameters, noise)
    reconstruction = tf.reduce_mean(log_likelihood(model, z, x), axis=0)
    return PosteriorSample(parameters, q, z, model.prior_distribution(), reconstruction)


def _kl_terms(model, q, prior, z, analytic: bool | str):
    """(kl [B], kl_per_dim [B, J]): closed form where the prior has one (and `analytic`
    allows), else the Monte Carlo estimate; per dimension when q and p factorise, else J = 1."""
    closed = model.prior.kl(q, model) if analytic else None
    if closed is None:
        if analytic is True:
            raise ValueError(
                f"analytic_kl=True but {type(model.prior).__name__} has no closed "
                f"form KL for {type(q).__name__}; use analytic_kl='auto'."
            )
        kl = tf.reduce_mean(q.log_prob(z) - prior.log_prob(z), axis=0)
        return kl, kl[:, None]
    per_dim = model.prior.kl_per_dim(q, model)
    return closed, (closed[:, None] if per_dim is None else per_dim)


@registry.register("objective", "elbo")
class ELBO(Objective):
    """The SGVB estimate of the ELBO with L samples, a KL weight schedule and free bits:

        loss = -1/B sum_i [1/L sum_l log p(x_i|z_il)] + beta_t * KL_term,
        KL_term = 1/B sum_i KL_i, or `free_bits_kl` when lambda > 0,
        beta_t = `kl_weight(t, beta, warmup_steps, cycle_steps)`.

    Args:
        num_samples: L, samples of z per example.
        beta: KL weight once warmed up (1: the ELBO; other values: the beta-VAE).
        analytic_kl: True, False, or "auto" (closed form where the prior gives one).
        warmup_steps: Steps over which beta grows linearly from 0 (0: no warm-up).
        cycle_steps: Restart the warm-up every this many steps (cyclical annealing; 0: off).
        free_bits: lambda, nats per latent dimension that are free (0: off).
    """

    takes_latent_terms = True

    def __init__(
        self,
        num_samples=1,
        beta=1.0,
        analytic_kl="auto",
        warmup_steps=0,
        cycle_steps=0,
        free_bits=0.0,
    ):
        super().__init__(num_samples)
        self.beta = check_nonnegative_float("beta", beta)
        if analytic_kl not in (True, False, "auto"):
            raise ValueError(
                f"analytic_kl must be True, False or 'auto'. Received: analytic_kl={analytic_kl!r}"
            )
        self.analytic_kl = analytic_kl
        for name, value in (("warmup_steps", warmup_steps), ("cycle_steps", cycle_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0. Received: {name}={value!r}")
        if cycle_steps and not warmup_steps:
            raise ValueError("cycle_steps needs warmup_steps > 0 (the ramp of each cycle).")
        self.warmup_steps, self.cycle_steps = warmup_steps, cycle_steps
        self.free_bits = check_nonnegative_float("free_bits", free_bits)

    def __call__(self, model, x, noise, step):
        if hasattr(model, "latent_terms"):  # the model samples z itself (a hierarchy)
            return self._from_latent_terms(model, x, noise, step)
        parameters, q, z, prior, reconstruction = sample_posterior(model, x, noise)
        kl, kl_per_dim = _kl_terms(model, q, prior, z, self.analytic_kl)
        if self.free_bits:
            # with only the total KL known, all of z is one group with lambda * D free nats
            floor = self.free_bits * (model.latent_dim if kl_per_dim.shape[-1] == 1 else 1)
            kl_term = free_bits_kl(kl_per_dim, floor)
        else:
            kl_term = batch_mean(kl)
        weight = kl_weight(step, self.beta, self.warmup_steps, self.cycle_steps)
        loss = -batch_mean(reconstruction) + tf.cast(weight, kl.dtype) * kl_term
        terms = {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
        return loss, terms

    def _from_latent_terms(self, model, x, noise, step):
        """The same loss from `model.latent_terms`: free bits floor each of its groups."""
        latent = model.latent_terms(x, noise, analytic_kl=self.analytic_kl)
        reconstruction = tf.reduce_mean(latent.log_likelihood, axis=0)
        kl = latent.kl
        if self.free_bits:
            floors = self.free_bits * tf.cast(latent.group_sizes, kl.dtype)
            kl_term = free_bits_kl(latent.kl_groups, floors)
        else:
            kl_term = batch_mean(kl)
        weight = kl_weight(step, self.beta, self.warmup_steps, self.cycle_steps)
        loss = -batch_mean(reconstruction) + tf.cast(weight, kl.dtype) * kl_term
        terms = {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
        return loss, {**terms, **latent.terms}

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "analytic_kl": self.analytic_kl,
            "warmup_steps": self.warmup_steps,
            "cycle_steps": self.cycle_steps,
            "free_bits": self.free_bits,
        }


GRADIENT_ESTIMATORS = ("standard", "dreg")


@registry.register("objective", "iwae")
class IWAE(Objective):
    """The importance-weighted bound with K samples as the training objective (Burda et al.
    2016): loss = -1/B sum_i L_K(x_i), see `iwae_bound`; optionally with DReG gradients.

    Reports `iwae` (L_K), and the true ELBO with its parts from the same K samples
    (reconstruction averaged over them, KL in closed form where the prior has one).

    Args:
        num_samples: K.
        gradient: `"standard"` (the reparameterised gradient of L_K) or `"dreg"` (doubly
            reparameterised, lower-variance encoder gradients, Tucker et al. 2019).
    """

    metric_names = ("iwae", "elbo", "reconstruction", "kl")
    takes_latent_terms = True

    def __init__(self, num_samples: int = 5, gradient: str = "standard"):
        super().__init__(num_samples)
        if gradient not in GRADIENT_ESTIMATORS:
            raise ValueError(
                f"gradient must be one of {GRADIENT_ESTIMATORS}. Received: gradient={gradient!r}"
            )
        self.gradient = gradient

    def __call__(self, model, x, noise, step):
        if hasattr(model, "latent_terms"):  # the model samples z itself (a hierarchy)
            return self._from_latent_terms(model, x, noise)
        parameters = model.encode_parameters(x)
        q = model.posterior.distribution(**parameters)
        prior = model.prior_distribution()
        z = model.posterior.reparameterize(parameters, noise)
        if self.gradient == "dreg":
            frozen = model.posterior.distribution(
                **{k: tf.stop_gradient(v) for k, v in parameters.items()}
            )
            with tf.GradientTape(watch_accessed_variables=False) as inner:
                inner.watch(z)
                log_likelihood = model.decode(z).log_prob(x)
                log_weights = log_likelihood + prior.log_prob(z) - frozen.log_prob(z)
                total = tf.reduce_sum(log_weights)
            surrogate = dreg_surrogate(log_weights, z, inner.gradient(total, z))
        else:
            log_likelihood = model.decode(z).log_prob(x)
            log_weights = log_importance_weights(log_likelihood, q, prior, z)
        bound = tf.reduce_logsumexp(log_weights, axis=0) - math.log(self.num_samples)
        if self.gradient == "dreg":  # the value of the bound, the gradient of DReG
            objective = tf.stop_gradient(bound) + surrogate - tf.stop_gradient(surrogate)
        else:
            objective = bound
        reconstruction = tf.reduce_mean(log_likelihood, axis=0)
        kl, _ = _kl_terms(model, q, prior, z, "auto")
        terms = {
            "iwae": bound,
            "elbo": reconstruction - kl,
            "reconstruction": reconstruction,
            "kl": kl,
        }
        return -batch_mean(objective), terms

    def _from_latent_terms(self, model, x, noise):
        """The same bound from `model.latent_terms` (DReG from its latents and score)."""
        dreg = self.gradient == "dreg"
        latent = model.latent_terms(x, noise, analytic_kl="auto", dreg=dreg)
        bound = tf.reduce_logsumexp(latent.log_weights, axis=0) - math.log(self.num_samples)
        objective = bound
        if dreg:  # the value of the bound, the gradient of DReG
            surrogate = dreg_surrogate(latent.log_weights, latent.latents, latent.score)
            objective = tf.stop_gradient(bound) + surrogate - tf.stop_gradient(surrogate)
        reconstruction = tf.reduce_mean(latent.log_likelihood, axis=0)
        terms = {
            "iwae": bound,
            "elbo": reconstruction - latent.kl,
            "reconstruction": reconstruction,
            "kl": latent.kl,
        }
        return -batch_mean(objective), {**terms, **latent.terms}

    def get_config(self):
        return {**super().get_config(), "gradient": self.gradient}
