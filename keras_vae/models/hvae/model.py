"""The hierarchical VAE: L stochastic layers with top-down inference, as a `keras.Model`.

Generative model (layer 1 next to x, layer L at the top; h_i a deterministic top-down state):

    p(x, z) = p(x | z_1, h_1) prod_{i=1}^{L-1} p(z_i | z_{>i}) p(z_L)
    p(z_L)             a registered prior (standard, mixture, vamp), `keras_vae.priors`
    h_{L-1} = T_{L-1}(z_L),  h_i = T_i(z_{i+1}, h_{i+1})     the shared top-down state
    p(z_i | z_{>i}) = N(z_i; mu_i, diag sigma_i^2),  (mu_i, sigma_i) = P_i(h_i)
    p(x | z_1, h_1)    a registered likelihood head on D(z_1, h_1), `keras_vae.likelihoods`

Inference is top-down (Ladder VAE, Sonderby et al. 2016; IAF-VAE, Kingma et al. 2016; NVAE,
Vahdat & Kautz 2020): a deterministic bottom-up pass d_1 = B_1(x), d_i = B_i(d_{i-1}), then the
top-down pass above, which at every layer forms the prior from h_i and the posterior from h_i
and d_i:

    q(z_L | x) = N(mu(d_L), diag sigma(d_L)^2)               a registered posterior head
    q(z_i | z_{>i}, x) = N(z_i; mu_i + sigma_i * dmu_i, diag (sigma_i * dsigma_i)^2),
    (dmu_i, dsigma_i) = Q_i(h_i, d_i)
    z_i = mu_i + sigma_i * (dmu_i + dsigma_i * eps_i),  eps_i ~ N(0, I)

**The choice: NVAE's residual parameterisation relative to the prior**, in the prior's own
coordinates u = (z_i - mu_i) / sigma_i. Since the KL is invariant under an affine map applied
to both arguments, each layer's KL is the plain VAE's closed form in u:

    KL(q(z_i|z_{>i},x) || p(z_i|z_{>i})) = KL(N(dmu_i, dsigma_i^2) || N(0, I))
                                         = 1/2 sum_j (dmu_ij^2 + dsigma_ij^2 - 1) - log dsigma_ij

The Ladder VAE's precision-weighted alternative combines a bottom-up estimate (m, s) of d_i
alone with the prior: sigma_q^-2 = s^-2 + sigma_i^-2, mu_q = sigma_q^2 (m s^-2 + mu_i sigma_i^-2).
Why the residual form:
1. The per-layer KL depends on (dmu, dsigma) only: per-unit and per-group free bits and the
   `kl_i` metrics use the same closed form as the plain VAE, no division by sigma_i enters the
   loss, and zero offsets (dmu = 0, dsigma = 1, where the networks start) give q_i = p_i.
2. q can be wider than its prior in a unit (dsigma > 1); precision weighting forces
   sigma_q <= min(s, sigma_i) everywhere, which is exact for linear-Gaussian layers only.
3. q(z_i|.) sees z_{>i} through the shared state h_i itself (the IAF-VAE/NVAE/BIVA design),
   not only through (mu_i, sigma_i) as in the Ladder VAE, whose bottom-up (m, s) ignore z_{>i}.
4. It is per unit, so the same cell serves MLP latents and conv latent maps.
(NVAE writes mu_q = mu_i + dmu_i; the offset here is scaled by sigma_i so that the KL above is
exactly free of the prior's parameters. Both forms, like the Ladder VAE's, contain the exact
posterior of a linear-Gaussian hierarchy, which the tests use.)

Training reuses `keras_vae.trainer.ExactReplicaTrainer` (noise split-invariant across replicas,
batch shares, XLA, fused steps) and the registered objectives through `latent_terms`
(`keras_vae.objectives.LatentTerms`): the trainer's eps `[S, B, sum_i size_i]` is split per
layer (layer 1 first), and an objective receives per sample log p(x|z), the log importance
weights log p(x, z) - log q(z|x) of the whole hierarchy, and the KL per layer and per
free-bits group. Per-layer KLs are reported as `kl_1` ... `kl_L` (nats).

Mixed precision (`mlp_hvae(precision="mixed_bfloat16")`, `keras-vae train --precision`): the
model's policy is its parts' (not the prior's, always float32). The matmuls of the bottom-up
blocks, the cells' T_i and Q'_i, the decoder and the heads run in the compute dtype; the cells
return (mu_i, sigma_i) and (dmu_i, dsigma_i) in float32 (`layers.float32_pair`: bias and scale
map in float32), the top head q(z_L|x)'s parameters and the likelihood's are float32, so z,
`_log_normal`, `_offset_kl`, the prior's log-densities, the KLs and log w are float32 in
every policy. `mixed_float16` makes `compile` scale the loss (`LossScaleOptimizer`); a
bfloat16 model trains without XLA on CPUs (`keras_vae.engine.distribute.resolve_xla`).

For i < L the KL is E_{q(z_{>i}|x)}[KL(q_i || p_i)], the closed form inside, the Monte Carlo
mean over the S samples of z_{>i} outside; for the top layer the prior's closed form where it
has one (N(0, I)), else log q - log p of the samples (`analytic_kl=False`: Monte Carlo for
every layer).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import keras
import tensorflow as tf

from keras_vae import registry
from keras_vae.engine.trainer import ExactReplicaTrainer
from keras_vae.parts import objectives
from keras_vae.parts.posteriors import DiagonalGaussianPosterior
from keras_vae.parts.priors import StandardNormalPrior

HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


class _Layer(NamedTuple):
    """One stochastic layer of a top-down pass, every tensor `[N, size]`: z; q's parameters
    (a dict for the top head, (loc, scale) below, None when not formed); the prior's
    (loc, scale) (None at the top); the offsets (dmu, dsigma) (None at the top)."""

    z: tf.Tensor
    q: Any
    p: tuple | None
    offsets: tuple | None


class _TopLayer:
    """q(z_L|x) seen as a one-layer VAE (`encoder`, `posterior`): what the priors ask of the
    model they belong to (the VampPrior runs it on its pseudo-inputs)."""

    def __init__(self, model: HierarchicalVAE):
        self.posterior = model.top_posterior
        self.encoder = lambda x: model.bottom_up(x)[-1]


def _log_normal(z, loc, scale):
    """log N(z; loc, diag scale^2), summed over the last axis."""
    u = (z - loc) / scale
    return -tf.reduce_sum(0.5 * tf.square(u) + tf.math.log(scale) + HALF_LOG_TWO_PI, axis=-1)


def _offset_kl(offsets):
    """Per-unit KL(N(dmu, dsigma^2) || N(0, 1)) `[N, size]` (the layer KL, module docstring)."""
    loc, scale = offsets
    return 0.5 * (tf.square(loc) + tf.square(scale) - 1.0) - tf.math.log(scale)


def _tile(tensor, times):
    """`[B, ...]` -> `[times * B, ...]`, sample-major (row s * B + b is example b)."""
    multiples = tf.concat([[times], tf.ones([tf.rank(tensor) - 1], tf.int32)], axis=0)
    return tf.tile(tensor, multiples)


def _check_groups(value, shapes) -> list:
    """`free_bits_groups` as one entry per layer (None: one group per unit)."""
    entries = list(value) if isinstance(value, (list, tuple)) else [value] * len(shapes)
    if len(entries) != len(shapes):
        raise ValueError(
            f"free_bits_groups needs one entry per stochastic layer ({len(shapes)}). "
            f"Received: free_bits_groups={value!r}"
        )
    for entry, shape in zip(entries, shapes, strict=True):
        if entry is None:
            continue
        if isinstance(entry, bool) or not isinstance(entry, int) or entry < 1 or shape[-1] % entry:
            raise ValueError(
                "free_bits_groups must be None (one group per latent unit) or, per layer, an int "
                f"dividing its {shape[-1]} channels. Received: free_bits_groups={value!r}"
            )
    return entries


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class HierarchicalVAE(ExactReplicaTrainer):
    """A VAE with L >= 1 stochastic layers and top-down inference, trained with `fit`.

    See the module docstring for the model and the posterior's parameterisation. L = 1 is the
    plain `keras_vae.VAE` (same parts, same weights, same bounds).

    Args:
        bottom_up: Body mapping x `[B, *image_shape]` to the list [d_1, ..., d_L].
        cells: L - 1 top-down cells, layer 1's first (`MLPTopDownCell`, `ConvTopDownCell`):
            `cell(z_above, state)` -> h_i, `prior_parameters(h_i)`, `posterior_offsets(h_i, d_i)`,
            and `latent_shape`.
        top_posterior: Head on d_L giving q(z_L|x) (`keras_vae.posteriors`, or
            `SpatialGaussianPosterior` for a latent map).
        decoder: Body `decoder(z_1, state=h_1)` -> features for the likelihood head.
        likelihood: Head giving p(x|z) (`keras_vae.likelihoods`).
        prior: p(z_L) (`keras_vae.priors`); defaults to N(0, I).
        objective: `keras_vae.objectives.ELBO` (default) or `IWAE`; its terms must include
            `kl_1`..`kl_L`, which both pass on from `latent_terms`.
        free_bits_groups: How `ELBO(free_bits=lambda)` groups the latent units: None, one
            group per unit (lambda nats each); an int g, g groups of channels per layer (each
            gets lambda times its units; 1 is per-layer free bits); or one entry per layer.
            A layer whose KL is Monte Carlo (a mixture or VampPrior on top, or
            `analytic_kl=False`) is one group whatever is asked.
        seed: Seed of the model's own noise; None draws a random seed.
        **kwargs: Standard `keras.Model` arguments (`name`).

    Example:
        >>> hvae = keras_vae.models.hvae.mlp_hvae((28, 28, 1), latent_dims=(64, 32))
        >>> hvae.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> hvae.fit(train_images, epochs=10, batch_size=100)   # elbo, kl, kl_1, kl_2 ...
        >>> q1, q2 = hvae.encode(x)          # each layer's q along the mean path
        >>> images = hvae.sample(16)         # E[x|z], z_2 ~ p(z_2), z_1 ~ p(z_1|z_2)
        >>> pictures = hvae.resample_from_layer(x, 1)   # keep z_2 of x, redraw z_1
    """

    _PARTS = ("bottom_up", "cells", "top_posterior", "decoder", "likelihood", "prior",
              "objective")  # fmt: skip

    def __init__(
        self,
        bottom_up: keras.layers.Layer,
        cells: Sequence[keras.layers.Layer],
        top_posterior: keras.layers.Layer,
        decoder: keras.layers.Layer,
        likelihood: keras.layers.Layer,
        prior: keras.layers.Layer | None = None,
        objective: objectives.Objective | None = None,
        free_bits_groups: int | Sequence[int | None] | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        objective = objectives.ELBO() if objective is None else objective
        if not isinstance(objective, objectives.Objective):
            raise ValueError(
                "objective must be a keras_vae.objectives.Objective such as ELBO() or IWAE(5). "
                f"Received: objective={objective!r}"
            )
        if not objective.takes_latent_terms:  # e.g. beta-TCVAE: one q(z|x) over one z
            name = getattr(type(objective), "registered_name", type(objective).__name__)
            raise ValueError(
                f"objective={name!r} trains a one-layer VAE (--model vae); a hierarchical VAE "
                "trains with elbo or iwae (objectives with takes_latent_terms)."
            )
        top_dim = getattr(top_posterior, "latent_dim", None)
        if top_dim is None:
            raise ValueError(
                "top_posterior must be a head with a `latent_dim` attribute, such as "
                f"DiagonalGaussianPosterior. Received: top_posterior={top_posterior!r}"
            )
        cells = list(cells)
        for cell in cells:
            if not hasattr(cell, "latent_shape") or not hasattr(cell, "posterior_offsets"):
                raise ValueError(
                    "cells must be top-down cells with `latent_shape`, `prior_parameters` and "
                    f"`posterior_offsets`, such as MLPTopDownCell. Received: {cell!r}"
                )
        shapes = [tuple(c.latent_shape) for c in cells]
        shapes.append(tuple(getattr(top_posterior, "latent_shape", (top_dim,))))
        groups = _check_groups(free_bits_groups, shapes)
        kl_names = tuple(f"kl_{i}" for i in range(1, len(shapes) + 1))
        super().__init__(metric_names=objective.metric_names + kl_names, seed=seed, **kwargs)
        self.bottom_up = bottom_up
        self.cells = cells
        self.top_posterior = top_posterior
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior = prior if prior is not None else StandardNormalPrior(top_dim, name="prior")
        if self.prior.latent_dim != top_dim:
            raise ValueError(
                f"The prior is over {self.prior.latent_dim} latents but the top layer has "
                f"{top_dim}; give both the same size."
            )
        self.objective = objective
        self.free_bits_groups = free_bits_groups
        self._groups = groups
        self.latent_shapes = shapes
        self.latent_sizes = [math.prod(s) for s in shapes]

    @property
    def num_layers(self) -> int:
        """L, the number of stochastic layers."""
        return len(self.latent_shapes)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one example, from the likelihood head."""
        return tuple(self.likelihood.event_shape)

    def get_config(self):
        config = super().get_config()
        config["free_bits_groups"] = self.free_bits_groups
        return config

    def build(self, input_shape):
        """Checks the example shape and creates every weight by one pass over a zero batch
        (the cells' input sizes come from their neighbours)."""
        input_shape = tuple(input_shape)
        if tuple(input_shape[1:]) != self.image_shape:
            raise ValueError(
                f"The model expects examples of shape {self.image_shape} (its likelihood's "
                f"event_shape). Received: input_shape={input_shape}"
            )
        x = tf.zeros((1, *self.image_shape))
        features = self.bottom_up(x)
        if len(features) != self.num_layers:
            raise ValueError(
                f"bottom_up gives {len(features)} feature maps for {self.num_layers} stochastic "
                "layers; give it one block per layer."
            )
        layers, state = self._top_down(features, [None] * self.num_layers)
        self.likelihood.parameters(self.decoder(layers[0].z, state=state))
        if not self.prior.built:
            self.prior.build(None)
        self.built = True
        self.prior_distribution()  # the VampPrior's pseudo-inputs through the built encoder

    # ---------------------------------------------------------------------- the top-down pass
    def prior_distribution(self):
        """p(z_L), the top layer's registered prior, as a distribution."""
        return self.prior.distribution(_TopLayer(self))

    def _top_down(self, features, eps, latents=None, prior_layers: int = 0):
        """One top-down pass over `[N, ...]` tensors; returns ([_Layer] layer 1 first, h_1).

        Args:
            features: [d_1..d_L] (None: q is not formed, only given latents or the priors).
            eps: Per layer the noise `[N, size_i]`, or None for the mean of the distribution
                the layer is drawn from.
            latents: Per layer a given z_i (teacher forcing) or None to draw it.
            prior_layers: Layers 1..prior_layers are drawn from p(z_i|z_{>i}), not from q
                (the top one, if included, must be given in `latents`).
        """
        count = self.num_layers
        latents = latents if latents is not None else [None] * count
        q = None if features is None else self.top_posterior.parameters(features[-1])
        z = latents[-1]
        if z is None:
            if q is None or prior_layers >= count:
                raise ValueError("The top layer's z must be given when q(z_L|x) is not formed.")
            z = q["loc"] if eps[-1] is None else self.top_posterior.reparameterize(q, eps[-1])
        layers = [None] * count
        layers[-1] = _Layer(z, q, None, None)
        state = None
        for i in reversed(range(count - 1)):
            cell = self.cells[i]
            state = cell(z, state=state)
            p = cell.prior_parameters(state)
            q = offsets = None
            if features is not None and i >= prior_layers:
                offsets = cell.posterior_offsets(state, features[i])
                q = (p[0] + p[1] * offsets[0], p[1] * offsets[1])
            z = latents[i]
            if z is None:
                loc, scale = p if i < prior_layers else q
                z = loc if eps[i] is None else loc + scale * tf.cast(eps[i], loc.dtype)
            layers[i] = _Layer(z, q, p, offsets)
        return layers, state

    def _split_noise(self, noise):
        """eps `[S, B, sum_i size_i]` -> per layer `[S * B, size_i]` (layer 1 first)."""
        flat = tf.reshape(noise, [-1, sum(self.latent_sizes)])
        return tf.split(flat, self.latent_sizes, axis=-1)

    def _likelihood_parameters(self, z_1, state, leading=None):
        """p(x|z)'s parameters from z_1 and h_1 `[N, ...]`, reshaped to `leading + [...]`."""
        params = self.likelihood.parameters(self.decoder(z_1, state=state))
        if leading is None:
            return params
        return {k: tf.reshape(v, tf.concat([leading, tf.shape(v)[1:]], 0)) for k, v in
                params.items()}  # fmt: skip

    def _log_densities(self, layers, prior):
        """Per layer (log q(z_i|.), log p(z_i|.)), each `[N]`."""
        top = layers[-1]
        pairs = [(self.top_posterior.distribution(**top.q).log_prob(top.z), prior.log_prob(top.z))]
        for layer in reversed(layers[:-1]):
            pairs.append((_log_normal(layer.z, *layer.q), _log_normal(layer.z, *layer.p)))
        return pairs[::-1]

    def sample_pass(self, x, features, noise, analytic_kl="auto"):
        """S samples of the whole hierarchy per example from eps `[S, B, D]`, given the
        bottom-up features [d_1..d_L] of x (what training and evaluation share).

        Returns a dict: `log_likelihood` and `log_weights` `[S, B]`; `kl` per layer `[S, B]`
        and `kl_units` per layer (`[S, B, size_i]`, or None where the KL is Monte Carlo); the
        `layers` of the pass (`[S * B, ...]`).
        """
        samples, batch = tf.shape(noise)[0], tf.shape(x)[0]
        leading = tf.stack([samples, batch])
        per_sample = lambda t: tf.reshape(t, tf.concat([leading, tf.shape(t)[1:]], 0))  # noqa: E731
        tiled = [_tile(d, samples) for d in features]
        layers, state = self._top_down(tiled, self._split_noise(noise))
        params = self._likelihood_parameters(layers[0].z, state, leading)
        log_likelihood = self.likelihood.log_likelihood(params, x)
        prior = self.prior_distribution()
        densities = self._log_densities(layers, prior)
        log_weights = log_likelihood + per_sample(sum(lp - lq for lq, lp in densities))
        kls, units = [], []
        for i, (layer, (lq, lp)) in enumerate(zip(layers, densities, strict=True)):
            unit = None
            if i < self.num_layers - 1 and analytic_kl is not False:
                unit = per_sample(_offset_kl(layer.offsets))
                kl = tf.reduce_sum(unit, axis=-1)
            elif i == self.num_layers - 1 and analytic_kl is not False:
                kl, unit = self._top_kl(features[-1], leading, analytic_kl)
            else:
                kl = None
            kls.append(per_sample(lq - lp) if kl is None else kl)
            units.append(unit)
        return {"log_likelihood": log_likelihood, "log_weights": log_weights, "kl": kls,
                "kl_units": units, "layers": layers}  # fmt: skip

    def _top_kl(self, top_features, leading, analytic_kl):
        """The top layer's closed-form KL broadcast to `[S, B]` (and per unit, or None), or
        (None, None) where the prior has none."""
        view = _TopLayer(self)
        q = self.top_posterior.distribution(**self.top_posterior.parameters(top_features))
        closed = self.prior.kl(q, view)
        if closed is None:
            if analytic_kl is True:
                raise ValueError(
                    f"analytic_kl=True but {type(self.prior).__name__} has no closed form KL "
                    "for the top layer; use analytic_kl='auto'."
                )
            return None, None
        per_unit = self.prior.kl_per_dim(q, view)
        broadcast = lambda t: tf.broadcast_to(t, tf.concat([leading, tf.shape(t)[1:]], 0))  # noqa: E731
        return broadcast(closed), None if per_unit is None else broadcast(per_unit)

    def _kl_groups(self, units, kls):
        """(kl_groups `[B, J]`, group_sizes `[J]`) from the per-layer KLs averaged over S."""
        columns, sizes = [], []
        for unit, kl, shape, groups in zip(units, kls, self.latent_shapes, self._groups,
                                           strict=True):  # fmt: skip
            size = math.prod(shape)
            if unit is None:  # only the layer's total is known: one group
                columns.append(kl[:, None])
                sizes.append(float(size))
            elif groups is None:
                columns.append(unit)
                sizes.extend([1.0] * size)
            else:
                channels = shape[-1]
                split = tf.reshape(unit, [-1, size // channels, groups, channels // groups])
                columns.append(tf.reduce_sum(split, axis=[1, 3]))
                sizes.extend([float(size // groups)] * groups)
        return tf.concat(columns, axis=-1), tf.constant(sizes)

    # ----------------------------------------------------------------- the objective's hook
    def latent_terms(self, x, noise, analytic_kl="auto", dreg: bool = False):
        """What `keras_vae.objectives.ELBO`/`IWAE` need, from eps `[S, B, sum_i size_i]`.

        log w_s = log p(x|z_s) + sum_i [log p(z_is|z_{>i,s}) - log q(z_is|z_{>i,s}, x)].
        With `dreg` the log weights are recomputed at the sampled z with q's own variables held
        constant inside log q (p's, the prior's (mu_i, sigma_i) that q shares among them, stay
        live: `_dreg_weights`), in a pass that takes the z_i as inputs, so that `score` holds
        the partial derivatives d log w / d z_i (Tucker et al. 2019, for a reparameterised q
        over all layers jointly).

        Returns:
            `keras_vae.objectives.LatentTerms`, with `kl_i` per layer in `terms`.
        """
        features = self.bottom_up(x)
        out = self.sample_pass(x, features, noise, analytic_kl)
        kls = [tf.reduce_mean(k, axis=0) for k in out["kl"]]
        units = [None if u is None else tf.reduce_mean(u, axis=0) for u in out["kl_units"]]
        kl_groups, group_sizes = self._kl_groups(units, kls)
        latents = score = None
        log_weights = out["log_weights"]
        if dreg:
            log_weights, latents, score = self._dreg_weights(x, features, out["layers"], noise)
        return objectives.LatentTerms(
            log_likelihood=out["log_likelihood"],
            log_weights=log_weights,
            kl=tf.add_n(kls),
            kl_groups=kl_groups,
            group_sizes=group_sizes,
            terms={f"kl_{i}": kl for i, kl in enumerate(kls, start=1)},
            latents=latents,
            score=score,
        )

    @contextlib.contextmanager
    def _frozen_variables(self, variables=None):
        """`variables` (default: every trainable one) read as stop-gradient constants of their
        current values. The others are mapped to their current values too: a scope does not
        fall back on an enclosing one (the trainer's stateless XLA step maps every variable)."""
        frozen = {id(v) for v in (self.trainable_variables if variables is None else variables)}
        mapping = []
        for v in self.trainable_variables:
            value = tf.convert_to_tensor(v.value)
            mapping.append((v, tf.stop_gradient(value) if id(v) in frozen else value))
        with keras.StatelessScope(state_mapping=mapping):
            yield

    def _posterior_only_variables(self) -> list | None:
        """q's own variables: the bottom-up pass, the top head and the cells' offset networks
        (None if a cell does not name its `posterior_variables`)."""
        if not all(hasattr(cell, "posterior_variables") for cell in self.cells):
            return None
        found = self.bottom_up.trainable_variables + self.top_posterior.trainable_variables
        for cell in self.cells:
            found += cell.posterior_variables
        return found

    def _dreg_weights(self, x, features, layers, noise):
        """(log w `[S, B]` with q's own variables stopped, the z `[S, B, D]` of DReG's path
        correction, d log w / d z).

        q(z_i|z_{>i}, x) = N(mu_i + sigma_i dmu_i, (sigma_i dsigma_i)^2) shares the prior's
        (mu_i, sigma_i). Only q's own variables (`_posterior_only_variables`: the offsets,
        the top head, the bottom-up pass) are held constant in log q; the prior's stay live
        in log q as in log p, so that sigma_i cancels between them as in the standard
        gradient. Holding them constant too (DReG over every variable, as before issue 30)
        leaves a zero-mean term eps / (sigma_i dsigma_i) per unit in the prior's gradient,
        whose variance grows like 1 / sigma_i^2 where training shrinks an unused unit's
        prior scale. The prior's variables thus get the standard IWAE gradient: the path
        correction (w~^2 - w~) of DReG flows into q's own variables only, through z's
        recomputed with the prior's variables stopped.
        """
        samples, batch = tf.shape(noise)[0], tf.shape(x)[0]
        leading = tf.stack([samples, batch])
        zs = [layer.z for layer in layers]
        own = self._posterior_only_variables()
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(zs)
            given, state = self._top_down(None, None, latents=zs)  # p(z_i|z_{>i}), live
            params = self._likelihood_parameters(zs[0], state, leading)
            log_p = self.likelihood.log_likelihood(params, x)
            log_p += tf.reshape(self.prior_distribution().log_prob(zs[-1]), leading)
            for layer in given[:-1]:
                log_p += tf.reshape(_log_normal(layer.z, *layer.p), leading)
            stopped = [_tile(tf.stop_gradient(d), samples) for d in features]
            with self._frozen_variables(own):
                frozen, _ = self._top_down(stopped, None, latents=zs)
                top = frozen[-1]
                log_q = self.top_posterior.distribution(**top.q).log_prob(top.z)
                for layer in frozen[:-1]:
                    log_q += _log_normal(layer.z, *layer.q)
            log_weights = log_p - tf.reshape(log_q, leading)
            total = tf.reduce_sum(log_weights)
        score = tape.gradient(total, zs)
        path = zs
        if own is not None and len(self.cells):  # the prior's variables stopped in z
            owned = {id(v) for v in own}
            others = [v for v in self.trainable_variables if id(v) not in owned]
            with self._frozen_variables(others):
                tiled = [_tile(d, samples) for d in features]
                path = [layer.z for layer in self._top_down(tiled, self._split_noise(noise))[0]]
        joined = lambda ts: tf.reshape(tf.concat(ts, -1), tf.concat([leading, [-1]], 0))  # noqa: E731
        return log_weights, joined(path), joined(score)

    # ------------------------------------------------------------------------ the trainer's
    def noise_shape(self) -> tuple[int, int]:
        return self.objective.num_samples, sum(self.latent_sizes)

    def compute_objective(self, x, noise, step):
        if not self.built:  # fit() without a prior call: build here so build_config is saved
            self.build(x.shape)
        return self.objective(self, x, noise, step)

    def predict_step(self, data):
        return self(self._unpack(data), training=False)

    # ------------------------------------------------------------------------- the model
    def encode_parameters(self, x) -> list[dict[str, tf.Tensor]]:
        """Each layer's posterior parameters along the mean path (z_j = E[z_j|.] for j > i),
        layer 1 first: the top head's dict, and `loc`, `scale` (of q) with `prior_loc`,
        `prior_scale` (of p(z_i|z_{>i})) below it; each `[B, size_i]`."""
        layers, _ = self._top_down(self.bottom_up(x), [None] * self.num_layers)
        below = [{"loc": layer.q[0], "scale": layer.q[1], "prior_loc": layer.p[0],
                  "prior_scale": layer.p[1]} for layer in layers[:-1]]  # fmt: skip
        return [*below, dict(layers[-1].q)]

    def encode(self, x) -> list:
        """q(z_i | z_{>i}, x) of each layer along the mean path, layer 1 first: distributions
        with batch shape [B] and event shape [size_i]."""
        parameters = self.encode_parameters(x)
        below = [DiagonalGaussianPosterior.distribution(p["loc"], p["scale"])
                 for p in parameters[:-1]]  # fmt: skip
        return [*below, self.top_posterior.distribution(**parameters[-1])]

    def decode(self, latents: Sequence[tf.Tensor]):
        """p(x|z) for all layers' z (layer 1 first, each `[..., size_i]`): a distribution with
        batch shape `z_1.shape[:-1]` and event shape `image_shape`."""
        leading = tf.shape(latents[0])[:-1]
        flat = [tf.reshape(z, [-1, size]) for z, size in zip(latents, self.latent_sizes,
                                                             strict=True)]  # fmt: skip
        _, state = self._top_down(None, None, latents=flat)
        return self.likelihood.distribution(**self._likelihood_parameters(flat[0], state, leading))

    def _noise(self, count, seed):
        eps = tf.random.stateless_normal(tf.stack([1, count, sum(self.latent_sizes)]), seed)
        return self._split_noise(eps)

    def _images(self, layers, state):
        return self.likelihood.mean(self._likelihood_parameters(layers[0].z, state))

    def call(self, inputs, training=None):
        """E[x|z] along the posterior's mean path (`[B, *image_shape]`)."""
        return self.reconstruct(inputs)

    def reconstruct(self, x, sample_latent: bool = False, seed=None):
        """E[x|z] for z along the mean path, or one z ~ q(z|x) of the whole hierarchy."""
        eps = [None] * self.num_layers
        if sample_latent:
            eps = self._noise(tf.shape(x)[0], self._stateless_seed(seed))
        return self._images(*self._top_down(self.bottom_up(x), eps))

    def sample(self, num_samples: int, seed=None, return_latents: bool = False):
        """z_L ~ p(z_L), then z_i ~ p(z_i|z_{>i}) down to layer 1; returns E[x|z]
        `[num_samples, *image_shape]` (and the list of z_i, layer 1 first)."""
        seeds = tf.random.experimental.stateless_split(self._stateless_seed(seed), 2)
        top = self.prior_distribution().sample(num_samples, seed=seeds[0])
        latents = [None] * (self.num_layers - 1) + [top]
        layers, state = self._top_down(None, self._noise(num_samples, seeds[1]), latents,
                                       prior_layers=self.num_layers)  # fmt: skip
        images = self._images(layers, state)
        return (images, [layer.z for layer in layers]) if return_latents else images

    def resample_from_layer(self, x, layer: int, seed=None):
        """Keeps z_{>layer} of each image's posterior (its mean path) and redraws z_layer..z_1
        from the conditional priors p(z_i|z_{>i}): E[x|z] `[B, *image_shape]`. `layer = L`
        draws everything from the prior; small layers show what the lowest layers encode.
        """
        valid = isinstance(layer, int) and not isinstance(layer, bool)
        if not valid or not 1 <= layer <= self.num_layers:
            raise ValueError(
                f"layer must be an int from 1 to {self.num_layers}. Received: layer={layer!r}"
            )
        batch = tf.shape(x)[0]
        seeds = tf.random.experimental.stateless_split(self._stateless_seed(seed), 2)
        noise = self._noise(batch, seeds[1])
        eps = [e if i < layer else None for i, e in enumerate(noise)]
        latents = [None] * self.num_layers
        if layer == self.num_layers:
            latents[-1] = self.prior_distribution().sample(batch, seed=seeds[0])
        features = self.bottom_up(x)
        return self._images(*self._top_down(features, eps, latents, prior_layers=layer))
