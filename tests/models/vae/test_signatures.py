"""keras_vae.models.vae.signatures: the VAE's encoder, decoder and scorer functions, run in
TensorFlow (no export), against NumPy computations of the same densities."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats  # the references

import keras_vae
from keras_vae.models.vae import signatures


@pytest.fixture(scope="module")
def model():
    vae = keras_vae.mlp_vae((3, 2, 1), latent_dim=2, hidden_units=4, seed=0)
    vae.build((None, 3, 2, 1))
    return vae


X = (np.arange(4 * 6).reshape(4, 3, 2, 1) % 3 == 0).astype(np.float32)


def test_encoder_and_decoder_signatures_give_the_parts_parameters(model):
    enc = signatures.encoder_signatures(model)["serving_default"](x=tf.constant(X))
    q = model.encode(X)
    # float32 round-off only: the signature's graph fuses MatMul and BiasAdd (Grappler), which
    # rounds differently from the eager ops (a 7e-8 difference on a loc of 0.02 was seen)
    close = {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(enc["loc"], q.mean(), **close)
    np.testing.assert_allclose(enc["scale"], q.stddev(), **close)
    dec = signatures.decoder_signatures(model)["serving_default"](z=enc["loc"])
    np.testing.assert_allclose(dec["mean"], model.decode(q.mean()).mean(), **close)
    drawn = signatures.decoder_signatures(model)["sample"](num_samples=tf.constant(5))
    assert drawn["z"].shape == (5, 2) and drawn["mean"].shape == (5, 3, 2, 1)


def test_score_against_numpy_densities(model):
    eps = np.random.default_rng(0).standard_normal((7, 4, 2)).astype(np.float32)
    got = signatures.score(model, tf.constant(X), tf.constant(eps))
    q = model.encode(X)
    loc, scale = q.mean().numpy(), q.stddev().numpy()
    z = loc + scale * eps  # [K, B, D]
    p = np.stack([model.decode(zk).mean().numpy().reshape(4, -1) for zk in z]).astype(float)
    x = X.reshape(4, -1)
    log_px_z = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), -1)
    log_pz = stats.norm.logpdf(z).sum(-1)
    log_qz = stats.norm.logpdf(z, loc, scale).sum(-1)
    kl = np.sum(-np.log(scale) + (scale**2 + loc**2 - 1) / 2, axis=-1)
    np.testing.assert_allclose(got["elbo"], log_px_z[0] - kl, rtol=1e-4)
    want = special.logsumexp(log_px_z + log_pz - log_qz, axis=0) - np.log(7)
    np.testing.assert_allclose(got["log_likelihood"], want, rtol=1e-4)


def test_expected_signatures_name_the_parts_outputs(model):
    expected = signatures.expected_signatures(model)
    assert set(expected["encoder"]["serving_default"]["outputs"]) == {"loc", "scale"}
    assert expected["decoder"]["sample"]["inputs"] == {"num_samples": {"dtype": "int32",
                                                                        "shape": []}}  # fmt: skip
    assert expected["scorer"]["score_with_noise"]["inputs"]["eps"]["shape"] == [-1, -1, 2]
