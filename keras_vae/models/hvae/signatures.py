"""A hierarchical VAE's exported graphs: encoder, decoder and scorer signatures.

Layer i = 1..L (1 next to x, L at the top) as in `keras_vae.models.hvae.model`; every tensor
name carries its layer, `loc_1 ... loc_L`:

* encoder `serving_default`: x -> each layer's posterior parameters along the mean path,
  q(z_i | z_{>i}, x) with z_{>i} set to their posterior means while going down: `loc_i`,
  `scale_i` (the top layer: its head's parameters, `loc_L` and `scale_L` or `scale_tril_L`);
  `encode_sample`: x -> z_1..z_L drawn top-down through the hierarchy, z_L ~ q(z_L|x),
  z_i ~ q(z_i | z_{>i}, x), and the parameters of the distributions they were drawn from
  (so `loc_i`, `scale_i` depend on the z_{>i} drawn: only the top layer's equal
  `serving_default`'s);
* decoder `serving_default`: (z_1, ..., z_L) -> `mean` = E[x|z] and the likelihood's
  parameters, the top-down pass run with the given z's (p(x | z_1, h_1), h_1 carrying
  z_{>1}); `sample`: num_samples -> z_L ~ p(z_L) (the top prior's `sample_plain`), z_i ~
  p(z_i | z_{>i}) down to layer 1, and their `mean`;
* scorer `serving_default`: x -> `elbo` and `log_likelihood` from K samples of the whole
  hierarchy (see `score`); `score_with_noise`: (x, eps) -> the same with the noise given,
  deterministic and checkable exactly.

The graphs run the model's own layers (`HierarchicalVAE._top_down`, its cells, heads and
prior) and return plain float32 tensors; randomness is `tf.random.normal` (TFLite builtin
RANDOM_STANDARD_NORMAL) and, for a mixture or VampPrior on top, the prior's Gumbel-max
component choice. Densities that TFP would compute with non-builtin ops go through
`keras_vae.serving.signatures.plain_log_prob`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_vae.models.hvae.model import HierarchicalVAE, _log_normal, _offset_kl, _TopLayer
from keras_vae.serving.signatures import ConcreteFunction, as_float32, function, plain_log_prob

ENCODER_SIGNATURES = ("serving_default", "encode_sample")
DECODER_SIGNATURES = ("serving_default", "sample")
SCORER_SIGNATURES = ("serving_default", "score_with_noise")


def _image_spec(model: HierarchicalVAE) -> tf.TensorSpec:
    return tf.TensorSpec([None, *model.image_shape], tf.float32, name="x")


def latent_specs(model: HierarchicalVAE) -> list[tf.TensorSpec]:
    """`z_1 [None, size_1], ..., z_L [None, size_L]` (a conv layer's map flattened)."""
    return [
        tf.TensorSpec([None, size], tf.float32, name=f"z_{i}")
        for i, size in enumerate(model.latent_sizes, start=1)
    ]


def _named(layers) -> dict[str, tf.Tensor]:
    """`{loc_i, scale_i, ..., <top head's parameters>_L, z_i ...}` of a top-down pass."""
    count = len(layers)
    out = {}
    for i, layer in enumerate(layers, start=1):
        params = dict(layer.q) if i == count else {"loc": layer.q[0], "scale": layer.q[1]}
        out.update({f"{name}_{i}": value for name, value in params.items()})
    return out


def _posterior_pass(model: HierarchicalVAE, x: tf.Tensor, eps) -> list:
    """The top-down pass of q at x `[B, *image_shape]`: per layer the mean (eps None) or
    z = loc + scale * eps; returns the `_Layer`s, layer 1 first."""
    x = tf.ensure_shape(x, [None, *model.image_shape])  # a clear error in TF Serving too
    features = model.bottom_up(tf.cast(x, model.compute_dtype))
    layers, _ = model._top_down(features, eps)
    return layers


# ---------------------------------------------------------------------------- encoder
def encode_parameters(model: HierarchicalVAE, x: tf.Tensor) -> dict[str, tf.Tensor]:
    """Each layer's posterior parameters along the mean path, float32, `{loc_1, scale_1, ...}`."""
    return as_float32(_named(_posterior_pass(model, x, [None] * model.num_layers)))


def encoder_signatures(model: HierarchicalVAE) -> dict[str, ConcreteFunction]:
    """`{"serving_default": x -> params, "encode_sample": x -> {z_i, **params}}`.

    `encode_sample` draws eps_i ~ N(0, I) `[B, size_i]` per layer (`tf.random.normal`), z_L
    = `top_posterior.reparameterize(q_L, eps_L)`, then z_i = loc_i + scale_i * eps_i going
    down, loc_i and scale_i of q(z_i | the z_{>i} drawn, x).
    """

    def serving_default(x):
        return encode_parameters(model, x)

    def encode_sample(x):
        batch = tf.shape(x)[0]
        eps = [tf.random.normal(tf.stack([batch, size])) for size in model.latent_sizes]
        layers = _posterior_pass(model, x, eps)
        latents = {f"z_{i}": layer.z for i, layer in enumerate(layers, start=1)}
        return as_float32({**latents, **_named(layers)})

    return {
        "serving_default": function(serving_default, _image_spec(model)),
        "encode_sample": function(encode_sample, _image_spec(model)),
    }


# ---------------------------------------------------------------------------- decoder
def decode_parameters(model: HierarchicalVAE, latents) -> dict[str, tf.Tensor]:
    """The likelihood's parameters at z_1..z_L (each `[B, size_i]`), float32."""
    latents = [
        tf.cast(tf.ensure_shape(z, [None, size]), model.compute_dtype)
        for z, size in zip(latents, model.latent_sizes, strict=True)
    ]
    _, state = model._top_down(None, None, latents=latents)
    return as_float32(model._likelihood_parameters(latents[0], state))


def _prior_latents(model: HierarchicalVAE, num_samples) -> list[tf.Tensor]:
    """z_L ~ p(z_L) (`prior.sample_plain`), then z_i ~ p(z_i|z_{>i}), layer 1 first."""
    top = model.prior.sample_plain(num_samples, _TopLayer(model))
    eps = [tf.random.normal(tf.stack([num_samples, size])) for size in model.latent_sizes[:-1]]
    latents = [None] * (model.num_layers - 1) + [tf.cast(top, model.compute_dtype)]
    layers, _ = model._top_down(None, [*eps, None], latents, prior_layers=model.num_layers)
    return [tf.cast(layer.z, tf.float32) for layer in layers]


def decoder_signatures(model: HierarchicalVAE) -> dict[str, ConcreteFunction]:
    """`{"serving_default": (z_1..z_L) -> {mean, **params}, "sample": num_samples ->
    {z_1..z_L, mean}}`; mean = E[x|z] = `likelihood.mean(params)`."""
    likelihood = model.likelihood

    def serving_default(*latents):
        params = decode_parameters(model, latents)
        return {"mean": likelihood.mean(params), **params}

    def sample(num_samples):
        latents = _prior_latents(model, num_samples)
        named = {f"z_{i}": z for i, z in enumerate(latents, start=1)}
        return {**named, "mean": likelihood.mean(decode_parameters(model, latents))}

    return {
        "serving_default": function(serving_default, *latent_specs(model)),
        "sample": function(sample, tf.TensorSpec([], tf.int32, name="num_samples")),
    }


# ----------------------------------------------------------------------------- scorer
def _tile(value: tf.Tensor, times: tf.Tensor) -> tf.Tensor:
    """`value` `[B, ...]` repeated `times` times along the first axis: `[times * B, ...]`,
    sample-major (row k * B + b is sample k of example b)."""
    multiples = tf.concat([tf.reshape(times, [1]), tf.ones([value.shape.rank - 1], tf.int32)], 0)
    return tf.tile(value, multiples)


def _top_kl(model: HierarchicalVAE, features_top: tf.Tensor) -> tf.Tensor | None:
    """KL(q(z_L|x) || p(z_L)) `[B]` in closed form where the prior has one, else None."""
    head = model.top_posterior
    q = head.distribution(**head.parameters(features_top))
    return model.prior.kl(q, _TopLayer(model))


def score(model: HierarchicalVAE, x: tf.Tensor, eps: tf.Tensor) -> dict[str, tf.Tensor]:
    """The ELBO and the K-sample importance-weighted log p(x) of the whole hierarchy, in nats,
    as `keras_vae.models.hvae.metrics` computes them (`HierarchicalVAE.sample_pass`):

        z_k = (z_1k, ..., z_Lk) ~ q drawn top-down from eps_k,   k = 1..K
        log w_k = log p(x|z_k) + sum_i [log p(z_ik|z_{>i,k}) - log q(z_ik|z_{>i,k}, x)]
        elbo = 1/K sum_k [log p(x|z_k) - sum_{i<L} KL_i(k)] - KL_L
               KL_i(k) = KL(q(z_i|z_{>i,k}, x) || p(z_i|z_{>i,k})) in closed form (the
               offsets' N(dmu, dsigma^2) against N(0, I)); KL_L the top prior's closed form,
               else 1/K sum_k [log q(z_Lk|x) - log p(z_Lk)]
        log_likelihood = logsumexp_k log w_k - log K   (Burda et al. 2016)

    Everything runs on one batch of K * B rows, sample-major: tensors keep rank <= 5 for
    TFLite and no op broadcasts a `[K, B, ...]` tensor against a `[B, ...]` one (which the
    XNNPack delegate fails to resize).

    Args:
        model: The `HierarchicalVAE`.
        x: Examples `[B, *image_shape]`.
        eps: Standard normal noise `[K, B, sum_i size_i]`, layer 1's first (the trainer's and
            the evaluation's layout).

    Returns:
        `{"elbo": [B], "log_likelihood": [B]}`, float32.
    """
    x = tf.cast(tf.ensure_shape(x, [None, *model.image_shape]), model.compute_dtype)
    num_samples, batch = tf.shape(eps)[0], tf.shape(x)[0]
    features = model.bottom_up(x)
    tiled = [_tile(d, num_samples) for d in features]
    flat = tf.cast(tf.reshape(eps, [-1, sum(model.latent_sizes)]), model.compute_dtype)
    layers, state = model._top_down(tiled, tf.split(flat, model.latent_sizes, axis=-1))
    params = model._likelihood_parameters(layers[0].z, state)
    log_px_z = model.likelihood.log_likelihood(params, _tile(x, num_samples))
    top = layers[-1]
    log_q = plain_log_prob(model.top_posterior.distribution(**top.q), top.z)
    log_p = plain_log_prob(model.prior.distribution(_TopLayer(model)), top.z)
    kl_top = _top_kl(model, features[-1])
    per_sample_kl = tf.zeros_like(log_q) if kl_top is not None else log_q - log_p
    for layer in layers[:-1]:
        log_q += _log_normal(layer.z, *layer.q)
        log_p += _log_normal(layer.z, *layer.p)
        per_sample_kl += tf.reduce_sum(_offset_kl(layer.offsets), axis=-1)
    shape = tf.stack([num_samples, batch])
    log_px_z, log_w, per_sample_kl = (
        tf.reshape(tf.cast(value, tf.float32), shape)
        for value in (log_px_z, log_px_z + log_p - log_q, per_sample_kl)
    )
    elbo = tf.reduce_mean(log_px_z - per_sample_kl, axis=0)
    if kl_top is not None:
        elbo -= tf.cast(kl_top, tf.float32)
    log_k = tf.math.log(tf.cast(num_samples, tf.float32))
    return {"elbo": elbo, "log_likelihood": tf.reduce_logsumexp(log_w, axis=0) - log_k}


def scorer_signatures(model: HierarchicalVAE, num_samples: int = 100):
    """`{"serving_default": x -> {elbo, log_likelihood}, "score_with_noise": (x, eps) -> same}`.

    `serving_default` draws eps `[num_samples, B, sum_i size_i]` with `tf.random.normal`;
    `score_with_noise` takes eps `[K, B, sum_i size_i]` (any K >= 1) instead.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"scorer_samples must be a positive int. Received: {num_samples!r}")
    noise_size = sum(model.latent_sizes)

    def serving_default(x):
        batch = tf.shape(x)[0]
        # K as a tensor the converter cannot fold into the shapes: the XNNPack delegate fails
        # to resize a graph whose [K, B] tensors have a static K and a dynamic B
        samples = tf.minimum(batch, 0) + num_samples
        return score(model, x, tf.random.normal(tf.stack([samples, batch, noise_size])))

    def score_with_noise(x, eps):
        return score(model, x, tf.ensure_shape(eps, [None, None, noise_size]))

    eps_spec = tf.TensorSpec([None, None, noise_size], tf.float32, name="eps")
    return {
        "serving_default": function(serving_default, _image_spec(model)),
        "score_with_noise": function(score_with_noise, _image_spec(model), eps_spec),
    }


SIGNATURE_FUNCTIONS = {
    "encoder": encoder_signatures,
    "decoder": decoder_signatures,
    "scorer": scorer_signatures,
}


# ----------------------------------------------------------------------- description
def _described(tensors: dict[str, tf.Tensor]) -> dict[str, dict]:
    return {
        name: {"dtype": "float32", "shape": [-1, *(int(d) for d in value.shape[1:])]}
        for name, value in tensors.items()
    }


def expected_signatures(model: HierarchicalVAE) -> dict[str, dict[str, dict]]:
    """The signatures of the exported models, as `export_report.json` describes them:
    `{part: {signature: {"inputs": {name: {"dtype", "shape"}}, "outputs": {...}}}}`, -1 for
    the dynamic batch dimension; names and shapes from the model on one dummy example."""
    one = np.zeros((1, *model.image_shape), np.float32)
    posterior = _described(encode_parameters(model, one))
    zeros = [np.zeros((1, size), np.float32) for size in model.latent_sizes]
    likelihood = _described(decode_parameters(model, zeros))
    image = {"dtype": "float32", "shape": [-1, *model.image_shape]}
    latents = {
        f"z_{i}": {"dtype": "float32", "shape": [-1, size]}
        for i, size in enumerate(model.latent_sizes, start=1)
    }
    per_example = {"dtype": "float32", "shape": [-1]}
    noise = {"dtype": "float32", "shape": [-1, -1, sum(model.latent_sizes)]}
    scores = {"elbo": per_example, "log_likelihood": per_example}
    count = {"num_samples": {"dtype": "int32", "shape": []}}
    return {
        "encoder": {
            "serving_default": {"inputs": {"x": image}, "outputs": posterior},
            "encode_sample": {"inputs": {"x": image}, "outputs": {**posterior, **latents}},
        },
        "decoder": {
            "serving_default": {"inputs": latents, "outputs": {"mean": image, **likelihood}},
            "sample": {"inputs": count, "outputs": {"mean": image, **latents}},
        },
        "scorer": {
            "serving_default": {"inputs": {"x": image}, "outputs": scores},
            "score_with_noise": {"inputs": {"x": image, "eps": noise}, "outputs": scores},
        },
    }
