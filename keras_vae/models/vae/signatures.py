"""A VAE's exported graphs: encoder, decoder and scorer signatures, asked from its parts.

The parts decide what is exported:

* encoder `serving_default`: x -> `posterior.parameters(encoder(x))` (diagonal: loc, scale;
  full covariance: loc, scale_tril); `encode_sample`: x -> z = `posterior.reparameterize(
  params, eps)`, eps ~ N(0, I), and the parameters;
* decoder `serving_default`: z -> mean = `likelihood.mean(params)` and the likelihood's
  parameters; `sample`: num_samples -> z = `prior.sample_plain(num_samples, model)` from the
  learned prior, and its mean;
* scorer `serving_default`: x -> `elbo` and `log_likelihood` (see `score`); `score_with_noise`
  the same with the noise given, so that it is deterministic and checkable exactly.

A conditional VAE (`keras_vae.models.vae.conditional.ConditionalVAE`) is exported with its
class label as one more named input, `y` (int32 `[batch]`, in [0, C)), of every signature but
`sample`, which takes the labels *instead of* `num_samples` (one sample per label). Inside the
graph the labels become one-hot conditions (rows of the identity, `GATHER`) and the signatures
run on `model.given(y)`, the model with y fixed: q(z|x, y), p(x|z, y), p(z|y) and log p(x|y). A
label outside [0, C) gives the all-zero condition, a vector the model never saw: the graphs
cannot refuse it (TFLite has no assertion op), so callers check labels (`export/client.py`
does). The kind-agnostic helpers (plain tensors, TFLite-builtin log-densities) are in
`keras_vae.serving.signatures`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_vae.serving.signatures import (  # noqa: F401  (tracked_module: of 0.2.0's module)
    ConcreteFunction,
    as_float32,
    function,
    gaussian_tril_log_prob,
    plain_log_prob,
    tracked_module,
)

ENCODER_SIGNATURES = ("serving_default", "encode_sample")
DECODER_SIGNATURES = ("serving_default", "sample")
SCORER_SIGNATURES = ("serving_default", "score_with_noise")
SIGNATURE_KEYS = {
    "encoder": ENCODER_SIGNATURES,
    "decoder": DECODER_SIGNATURES,
    "scorer": SCORER_SIGNATURES,
}


def _image_spec(model, name: str = "x") -> tf.TensorSpec:
    return tf.TensorSpec([None, *model.image_shape], tf.float32, name=name)


def is_conditional(model) -> bool:
    """Whether the model takes a condition y (a `ConditionalVAE`)."""
    return getattr(model, "condition_dim", None) is not None


def _label_specs(model) -> list[tf.TensorSpec]:
    """`[y spec]` (int32 labels `[batch]`) for a conditional model, else `[]`."""
    return [tf.TensorSpec([None], tf.int32, name="y")] if is_conditional(model) else []


def given(model, y=None):
    """The model with its labels y fixed (`ConditionalVAE.given`), or the model itself."""
    if not is_conditional(model):
        return model
    if y is None:
        raise ValueError("A conditional VAE's signatures need the labels y [batch] (int32).")
    # rows of the identity, not tf.one_hot: the int8 converter keeps ONE_HOT's on/off values
    # in their own scale while giving its output the scale of what it is joined with
    # (measured: 4.5 and -1.1 instead of 1 and 0)
    return model.given(tf.gather(tf.eye(model.condition_dim), tf.cast(y, tf.int32)))


# ---------------------------------------------------------------------------- encoder
def encode_parameters(model, x: tf.Tensor, y=None) -> dict[str, tf.Tensor]:
    """The posterior's parameters at x `[batch, *image_shape]` (and labels y), float32."""
    x = tf.ensure_shape(x, [None, *model.image_shape])  # a clear error in TF Serving too
    x = tf.cast(x, model.encoder.compute_dtype)
    return as_float32(given(model, y).encode_parameters(x))


def encoder_signatures(model) -> dict[str, ConcreteFunction]:
    """`{"serving_default": x -> params, "encode_sample": x -> {z, **params}}`.

    `params` are the posterior head's `parameters(features)`; z = `posterior.reparameterize(
    params, eps)` with eps ~ N(0, I) of shape `[batch, noise_size]` (`tf.random.normal`).
    """
    posterior = model.posterior

    def serving_default(x, y=None):
        return encode_parameters(model, x, y)

    def encode_sample(x, y=None):
        params = encode_parameters(model, x, y)
        eps = tf.random.normal(tf.stack([tf.shape(x)[0], posterior.noise_size]))
        return {"z": posterior.reparameterize(params, eps), **params}

    specs = [_image_spec(model), *_label_specs(model)]
    return {
        "serving_default": function(serving_default, *specs),
        "encode_sample": function(encode_sample, *specs),
    }


# ---------------------------------------------------------------------------- decoder
def decode_parameters(model, z: tf.Tensor, y=None) -> dict[str, tf.Tensor]:
    """The likelihood's parameters at z `[batch, latent_dim]` (and labels y), float32."""
    z = tf.ensure_shape(z, [None, model.latent_dim])  # a clear error in TF Serving too
    features = given(model, y).decoder(tf.cast(z, model.decoder.compute_dtype))
    return as_float32(model.likelihood.parameters(features))


def decoder_signatures(model) -> dict[str, ConcreteFunction]:
    """`{"serving_default": z -> {mean, **params}, "sample": num_samples -> {z, mean}}`.

    mean = E[x|z] = `likelihood.mean(params)`; `sample` draws z with the learned prior's
    `sample_plain(num_samples, model)` (Gumbel-max component choice and `tf.random.normal`).
    A conditional model's signatures also take the labels y: `serving_default` (z, y) ->
    E[x|z, y]; `sample` y -> one z ~ p(z|y) per label, and E[x|z, y].
    """
    likelihood = model.likelihood

    def serving_default(z, y=None):
        params = decode_parameters(model, z, y)
        return {"mean": likelihood.mean(params), **params}

    def sample(num_samples, y=None):
        view = given(model, y)
        z = tf.cast(model.prior.sample_plain(num_samples, view), tf.float32)
        return {"z": z, "mean": likelihood.mean(decode_parameters(model, z, y))}

    def sample_given(y):
        return sample(tf.shape(y)[0], y)

    z_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")
    if is_conditional(model):
        sampler = function(sample_given, *_label_specs(model))
    else:
        sampler = function(sample, tf.TensorSpec([], tf.int32, name="num_samples"))
    return {
        "serving_default": function(serving_default, z_spec, *_label_specs(model)),
        "sample": sampler,
    }


# ----------------------------------------------------------------------------- scorer
def _closed_form_kl(model, q) -> tf.Tensor | None:
    """The prior's closed-form KL(q || p) `[batch]`, or None (then the scorer uses MC)."""
    return model.prior.kl(q, model)


def _tile(value: tf.Tensor, times: tf.Tensor) -> tf.Tensor:
    """`value` `[B, ...]` repeated `times` times along the first axis: `[times * B, ...]`."""
    multiples = tf.concat([tf.reshape(times, [1]), tf.ones([value.shape.rank - 1], tf.int32)], 0)
    return tf.tile(value, multiples)


def score(model, x: tf.Tensor, eps: tf.Tensor, y=None) -> dict[str, tf.Tensor]:
    """The ELBO (first noise sample) and the K-sample importance-weighted log p(x), in nats
    (for a conditional model: of log p(x|y), with q(z|x, y), p(x|z, y) and p(z|y)).

        z_k = posterior.reparameterize(params(x), eps_k),   k = 1..K
        log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)
        elbo = log p(x|z_1) - KL(q(z|x) || p(z))    (closed form where the prior has one,
                                                    else log q(z_1|x) - log p(z_1))
        log_likelihood = logsumexp_k log w_k - log K   (Burda et al. 2016; >= elbo in
                                                    expectation, -> log p(x) as K grows)

    Args:
        model: The `VAE`.
        x: Images `[B, *image_shape]`.
        eps: Standard normal noise `[K, B, posterior.noise_size]`.
        y: Labels `[B]` of a conditional model, else None.

    Returns:
        `{"elbo": [B], "log_likelihood": [B]}`, float32.
    """
    params = encode_parameters(model, x, y)
    q = model.posterior.distribution(**params)
    num_samples, batch = tf.shape(eps)[0], tf.shape(x)[0]
    # Everything on one batch of K * B rows, k-major (row k * B + b is sample k of example
    # b): tensors keep rank <= 5 for TFLite, and no op broadcasts a [K, B, ...] tensor
    # against a [B, ...] one (which the XNNPack delegate fails to resize).
    tiled = {name: _tile(value, num_samples) for name, value in params.items()}
    tiled_y = None if y is None else _tile(y, num_samples)
    z = model.posterior.reparameterize(tiled, tf.reshape(eps, [-1, model.posterior.noise_size]))
    likelihood_params = decode_parameters(model, z, tiled_y)
    log_px_z = model.likelihood.distribution(**likelihood_params).log_prob(_tile(x, num_samples))
    log_pz = plain_log_prob(model.prior.distribution(given(model, tiled_y)), z)
    log_qz = plain_log_prob(model.posterior.distribution(**tiled), z)
    shape = tf.stack([num_samples, batch])
    log_px_z, log_pz, log_qz = (
        tf.reshape(tf.cast(value, tf.float32), shape) for value in (log_px_z, log_pz, log_qz)
    )
    log_w = log_px_z + log_pz - log_qz
    kl = _closed_form_kl(given(model, y), q)
    kl = log_qz[0] - log_pz[0] if kl is None else tf.cast(kl, tf.float32)
    log_k = tf.math.log(tf.cast(num_samples, tf.float32))
    return {
        "elbo": log_px_z[0] - kl,
        "log_likelihood": tf.reduce_logsumexp(log_w, axis=0) - log_k,
    }


def scorer_signatures(model, num_samples: int = 100) -> dict[str, ConcreteFunction]:
    """`{"serving_default": x -> {elbo, log_likelihood}, "score_with_noise": (x, eps) -> same}`.

    `serving_default` draws eps `[num_samples, B, noise_size]` with `tf.random.normal` and
    calls `score`; `score_with_noise` takes eps `[K, B, noise_size]` (any K >= 1) instead.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"scorer_samples must be a positive int. Received: {num_samples!r}")
    noise_size = model.posterior.noise_size

    def serving_default(x, y=None):
        batch = tf.shape(x)[0]
        # K as a tensor the converter cannot fold into the shapes: the XNNPack delegate fails
        # to resize a graph whose [K, B] tensors have a static K and a dynamic B
        samples = tf.minimum(batch, 0) + num_samples
        return score(model, x, tf.random.normal(tf.stack([samples, batch, noise_size])), y)

    def score_with_noise(x, eps, y=None):
        return score(model, x, tf.ensure_shape(eps, [None, None, noise_size]), y)

    eps_spec = tf.TensorSpec([None, None, noise_size], tf.float32, name="eps")
    labels = _label_specs(model)
    return {
        "serving_default": function(serving_default, _image_spec(model), *labels),
        "score_with_noise": function(score_with_noise, _image_spec(model), eps_spec, *labels),
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


def expected_signatures(model) -> dict[str, dict[str, dict]]:
    """The signatures of the exported models, as `export_report.json` describes them.

    Output names and shapes come from the parts, evaluated on one dummy example: the
    posterior's `parameters`, the likelihood's `parameters` (and `mean`).

    Returns:
        `{part: {signature: {"inputs": {name: {"dtype", "shape"}}, "outputs": {...}}}}` for
        `encoder`, `decoder` and `scorer`, with -1 for the dynamic batch dimension; a
        conditional model's signatures have the labels `y` too (`sample`: instead of
        `num_samples`).
    """
    one = np.zeros((1, *model.image_shape), np.float32)
    y = np.zeros([1], np.int32) if is_conditional(model) else None
    posterior = _described(encode_parameters(model, one, y))
    likelihood_params = decode_parameters(model, np.zeros((1, model.latent_dim), np.float32), y)
    likelihood = _described(likelihood_params)
    label = {"y": {"dtype": "int32", "shape": [-1]}} if is_conditional(model) else {}
    count = label or {"num_samples": {"dtype": "int32", "shape": []}}
    image = {"dtype": "float32", "shape": [-1, *model.image_shape]}
    latent = {"dtype": "float32", "shape": [-1, model.latent_dim]}
    per_example = {"dtype": "float32", "shape": [-1]}
    noise = {"dtype": "float32", "shape": [-1, -1, model.posterior.noise_size]}
    scores = {"elbo": per_example, "log_likelihood": per_example}
    images, latents = {"x": image, **label}, {"z": latent, **label}
    return {
        "encoder": {
            "serving_default": {"inputs": images, "outputs": posterior},
            "encode_sample": {"inputs": images, "outputs": {**posterior, "z": latent}},
        },
        "decoder": {
            "serving_default": {"inputs": latents, "outputs": {"mean": image, **likelihood}},
            "sample": {"inputs": count, "outputs": {"mean": image, "z": latent}},
        },
        "scorer": {
            "serving_default": {"inputs": images, "outputs": scores},
            "score_with_noise": {"inputs": {**images, "eps": noise}, "outputs": scores},
        },
    }
