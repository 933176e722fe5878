"""Independent references of the hierarchical VAE's tests (tests/models/hvae/): a
linear-Gaussian hierarchy whose exact posterior lies inside the model's family, with a
closed-form log p(x) (SciPy) and ELBO (NumPy), the HVAE whose weights make it that hierarchy,
a randomised two-layer tanh HVAE, and a plain VAE with the weights of a one-layer HVAE."""

import numpy as np
from scipy import stats

from keras_vae import mlp_vae
from keras_vae.models.hvae import mlp_hvae

RNG = np.random.default_rng(30)
SHAPE = (6, 5, 1)
MIN_SCALE = 1e-4


def binary(n=8, shape=SHAPE):
    return (RNG.uniform(size=(n, *shape)) > 0.5).astype("float32")


def softplus(v):
    return np.logaddexp(0.0, v)


def inverse_softplus(v):
    return np.log(np.expm1(v))


def cell_scale(raw, bound):
    """A top-down cell's scale from its pre-activation, in NumPy: exp(b tanh(raw / b)) (NVAE's
    soft clamp of log sigma), or softplus(raw + log(e - 1)) + 1e-4 when `bound` is None."""
    if bound is None:
        return softplus(raw + np.log(np.e - 1.0)) + MIN_SCALE
    return np.exp(bound * np.tanh(raw / bound))


def inverse_cell_scale(scale, bound):
    """The pre-activation giving `scale` (the inverse of `cell_scale`)."""
    if bound is None:
        return inverse_softplus(scale - MIN_SCALE) - np.log(np.e - 1.0)
    return bound * np.arctanh(np.log(scale) / bound)


# ------------------------------------------------------------ a linear-Gaussian hierarchy
# z2 ~ N(0, I_2), z1 | z2 ~ N(A z2 + a, s1^2 I_3), x | z1 ~ N(B z1 + b, s2^2 I_6), with
# A = V diag(alpha), B = beta U (V, U orthonormal columns), so that the exact posterior
# p(z2|x) p(z1|z2, x) has diagonal covariances and lies inside the model's family.
DX, D1, D2 = 6, 3, 2
S1, S2 = 0.7, 0.4
U = np.linalg.qr(RNG.normal(size=(DX, D1)))[0]
V = np.linalg.qr(RNG.normal(size=(D1, D2)))[0]
A = V @ np.diag([1.5, 0.8])
B = 1.3 * U
a = RNG.normal(size=D1)
b = RNG.normal(size=DX)


def exact_log_px(x):
    cov = B @ (A @ A.T + S1**2 * np.eye(D1)) @ B.T + S2**2 * np.eye(DX)
    return stats.multivariate_normal(B @ a + b, cov).logpdf(x)


def exact_posterior_maps():
    """The exact posterior as affine maps: q(z2|x) = N(M2 x + m2, diag v2) and
    q(z1|z2, x) = N(Gz z2 + Gx x + g, diag v1)."""
    sigma = S1**2 * B @ B.T + S2**2 * np.eye(DX)
    inv = np.linalg.inv(sigma)
    cov2 = np.linalg.inv(np.eye(D2) + A.T @ B.T @ inv @ B @ A)
    precision1 = np.eye(D1) / S1**2 + B.T @ B / S2**2
    cov1 = np.linalg.inv(precision1)
    for cov in (cov2, cov1):
        np.testing.assert_allclose(cov, np.diag(np.diag(cov)), atol=1e-12)  # diagonal
    m2_x = cov2 @ A.T @ B.T @ inv
    return {
        "M2": m2_x, "m2": -m2_x @ (B @ a + b), "v2": np.diag(cov2),
        "Gz": cov1 @ A / S1**2, "Gx": cov1 @ B.T / S2**2,
        "g": cov1 @ (a / S1**2 - B.T @ b / S2**2), "v1": np.diag(cov1),
    }  # fmt: skip


def linear_model(objective=None, maps=None):
    """An HVAE whose weights make it the linear-Gaussian hierarchy, with q given by `maps`."""
    model = mlp_hvae(
        (DX,), latent_dims=(D1, D2), hidden_units=[[DX], [DX]], likelihood="gaussian",
        activation="linear", likelihood_options={"mean_activation": "linear", "fixed_scale": S2},
        objective=objective, seed=1,
    )  # fmt: skip
    model.build((None, DX))
    maps = maps or exact_posterior_maps()
    eye = np.eye(DX)
    for dense in (model.bottom_up.blocks[0][0], model.bottom_up.blocks[1][0]):
        dense.set_weights([eye, np.zeros(DX)])  # d_1 = d_2 = x
    # q(z2|x): [loc, raw] = d_2 K + k, sigma = softplus(raw) + min_scale
    raw2 = inverse_softplus(np.sqrt(maps["v2"]) - MIN_SCALE)
    model.top_posterior.projection.set_weights(
        [
            np.concatenate([maps["M2"].T, np.zeros((DX, D2))], 1),
            np.concatenate([maps["m2"], raw2]),
        ]  # fmt: skip
    )
    cell = model.cells[0]
    # h_1 = [z2, 0, 0, 0, 0]
    cell.state_layers[0].set_weights([np.eye(D2, DX), np.zeros(DX)])
    # p(z1|z2): mu = A z2 + a, sigma = s1 = g(raw), the cell's scale map
    bound = cell.log_scale_bound
    raw_p = inverse_cell_scale(S1, bound)
    kernel = np.zeros((DX, 2 * D1))
    kernel[:D2, :D1] = A.T
    cell.prior_projection.set_weights([kernel, np.concatenate([a, np.full(D1, raw_p)])])
    # q(z1|z2, x) = N(mu + s1 dmu, (s1 dsigma)^2): dmu = (mean - A z2 - a) / s1 from [h_1, d_1]
    kernel = np.zeros((2 * DX, 2 * D1))
    kernel[:D2, :D1] = ((maps["Gz"] - A) / S1).T
    kernel[DX:, :D1] = (maps["Gx"] / S1).T
    raw_q = inverse_cell_scale(np.sqrt(maps["v1"]) / S1, bound)
    bias = np.concatenate([(maps["g"] - a) / S1, raw_q])
    cell.posterior_projection.set_weights([kernel, bias])
    # p(x|z1): loc = B z1 + b from the decoder's [z1, h_1] -> [z1, 0, 0, 0]
    model.decoder.dense_layers[0].set_weights([np.eye(D1 + DX, DX), np.zeros(DX)])
    model.likelihood.projection.set_weights([np.eye(DX, D1) @ B.T, b])
    return model


def perturbed_maps(scale=0.04, seed=0):
    rng = np.random.default_rng(seed)
    maps = exact_posterior_maps()
    noisy = {k: v + scale * rng.normal(size=np.shape(v)) for k, v in maps.items()}
    noisy["v2"], noisy["v1"] = maps["v2"] * 1.4, maps["v1"] * 0.8
    return noisy


def numpy_elbo(x, maps):
    """E_q[log p(x, z1, z2) - log q(z1, z2 | x)] in closed form for affine-Gaussian q."""
    m2, c2 = maps["M2"] @ x + maps["m2"], np.diag(maps["v2"])
    g = maps["Gx"] @ x + maps["g"]
    m1 = maps["Gz"] @ m2 + g
    c1 = maps["Gz"] @ c2 @ maps["Gz"].T + np.diag(maps["v1"])
    residual = x - B @ m1 - b
    log_px_z = -0.5 * (residual @ residual + np.trace(B @ c1 @ B.T)) / S2**2 - DX / 2 * np.log(
        2 * np.pi * S2**2
    )
    gap = maps["Gz"] - A
    mean_gap = gap @ m2 + g - a
    cov_gap = gap @ c2 @ gap.T + np.diag(maps["v1"])
    log_pz1 = -0.5 * (mean_gap @ mean_gap + np.trace(cov_gap)) / S1**2 - D1 / 2 * np.log(
        2 * np.pi * S1**2
    )
    log_pz2 = -0.5 * (m2 @ m2 + np.trace(c2)) - D2 / 2 * np.log(2 * np.pi)
    entropy = 0.5 * np.sum(np.log(2 * np.pi * np.e * maps["v2"])) + 0.5 * np.sum(
        np.log(2 * np.pi * np.e * maps["v1"])
    )
    return log_px_z + log_pz1 + log_pz2 + entropy


def linear_x(n=4, seed=1):
    """n draws of x from the hierarchy."""
    rng = np.random.default_rng(seed)
    z2 = rng.normal(size=(n, D2))
    z1 = z2 @ A.T + a + S1 * rng.normal(size=(n, D1))
    return (z1 @ B.T + b + S2 * rng.normal(size=(n, DX))).astype("float32")


def tanh_model(**kwargs):
    model = mlp_hvae(
        SHAPE, latent_dims=(D1, D2), hidden_units=[[7], [5]], activation="tanh", seed=3, **kwargs
    )
    model.build((None, *SHAPE))
    for v in model.trainable_variables:  # non-trivial biases and scales everywhere
        v.assign(v + 0.3 * RNG.normal(size=v.shape))
    return model


def vae_and_one_layer_hvae(objective):
    vae = mlp_vae(SHAPE, latent_dim=3, hidden_units=[8], objective=objective, seed=5)
    hvae = mlp_hvae(
        SHAPE, latent_dims=(3,), hidden_units=[8], activation="tanh", objective=objective, seed=5
    )
    for model in (vae, hvae):
        model.build((None, *SHAPE))
    pairs = [
        (vae.encoder.dense_layers[0], hvae.bottom_up.blocks[0][0]),
        (vae.posterior.projection, hvae.top_posterior.projection),
        (vae.decoder.dense_layers[0], hvae.decoder.dense_layers[0]),
        (vae.likelihood.projection, hvae.likelihood.projection),
    ]
    for theirs, mine in pairs:
        mine.set_weights([w + 0.2 * RNG.normal(size=w.shape) for w in theirs.get_weights()])
        theirs.set_weights(mine.get_weights())
    return vae, hvae
