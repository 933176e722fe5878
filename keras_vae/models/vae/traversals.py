"""Latent traversals and the per-latent KL of a VAE: which latents are used, and what each
one changes in the image.

* `mean_kl_per_latent`: the KL of each latent averaged over images,
  KL_j = 1/N sum_n KL(q(z_j|x_n) || p(z_j)), in nats (closed form per latent, for priors
  that give one, such as N(0, I)).
* `traversal_values`: the values each latent is swept over, the prior's marginal quantiles
  `low` ... `high` (exact N(0, 1) quantiles for the standard normal prior, empirical ones of
  prior draws otherwise), as in `plotting.manifold_grid`.
* `latent_traversals`: for a base code z = E[z|x] of one image, row r sets latent
  j_r = `order[r]` to each traversal value and decodes E[x|z]; rows ordered by decreasing
  KL_j, so the informative latents come first (Higgins et al. 2017, Burgess et al. 2018).
* `traversal_figure`, `kl_bar_chart`: the two pictures (matplotlib `Figure`s on the Agg
  canvas, see `keras_vae.workflows.plot`; `plotting.save_figure` writes the PNG).

Example:
    ```python
    from keras_vae.models.vae import pictures as plotting
    from keras_vae.models.vae import traversals
    plotting.save_figure(traversals.traversal_figure(vae, x_test[:1000]), "traversals.png")
    plotting.save_figure(traversals.kl_bar_chart(vae, x_test[:1000]), "kl.png")
    ```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from keras_vae.models.vae import pictures as plotting

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from keras_vae.models.vae.model import VAE

_BATCH = 1000
LABEL_INCHES = 0.9  # left margin of the traversal figure for the row labels


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}. Received: {name}={value!r}")
    return int(value)


def mean_kl_per_latent(model: VAE, images: np.ndarray, batch_size: int = _BATCH) -> np.ndarray:
    """KL_j = 1/N sum_n KL(q(z_j|x_n) || p(z_j)) for each latent j, float64 `[D]`, nats.

    For a diagonal Gaussian q and the N(0, I) prior,
    KL_j = 1/N sum_n 1/2 (mu_nj^2 + sigma_nj^2 - 1 - log sigma_nj^2).

    Raises:
        ValueError: When the prior gives no per-latent KL (`prior.kl_per_dim` is None, e.g. a
            mixture or VampPrior, whose latents do not factorise).
    """
    images = np.asarray(images, np.float32)
    batch_size = _check_int("batch_size", batch_size)
    if not len(images):
        raise ValueError("images must hold at least one image. Received: 0")
    total = np.zeros(model.latent_dim)
    for start in range(0, len(images), batch_size):
        q = model.encode(images[start : start + batch_size])
        per_dim = model.prior.kl_per_dim(q, model)
        if per_dim is None:
            raise _no_kl_per_latent(model)
        total += np.asarray(per_dim, np.float64).sum(axis=0)
    return total / len(images)


def _no_kl_per_latent(model: VAE) -> ValueError:
    return ValueError(
        f"{type(model.prior).__name__} gives no KL per latent for this posterior; traversals "
        "ordered by KL need a factorised prior and posterior (prior='standard', "
        "posterior='diagonal')."
    )


def check_kl_per_latent(model: VAE) -> None:
    """Refuses, before any data is read, a model whose prior gives no KL per latent for its
    posterior (`prior.kl_per_dim` of the posterior of one blank image is None)."""
    blank = np.zeros((1, *model.image_shape), np.float32)
    if model.prior.kl_per_dim(model.encode(blank), model) is None:
        raise _no_kl_per_latent(model)


def kl_order(kl: np.ndarray) -> np.ndarray:
    """Latent indices by decreasing KL (ties keep index order)."""
    return np.argsort(-np.asarray(kl), kind="stable")


def traversal_values(
    model: VAE,
    num_steps: int = 9,
    low: float = 0.05,
    high: float = 0.95,
    num_prior_samples: int = 20_000,
    seed: int = 0,
) -> np.ndarray:
    """The values each latent is swept over, `[num_steps, D]`: the prior marginal's
    quantiles at linspace(low, high, num_steps) (exact for N(0, I); else from
    `num_prior_samples` draws of the prior with the stateless seed `(seed, 0)`)."""
    num_steps = _check_int("num_steps", num_steps, 2)
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"Need 0 < low < high < 1. Received: low={low!r}, high={high!r}")
    levels = np.linspace(low, high, num_steps)
    from keras_vae.parts.priors import StandardNormalPrior

    if isinstance(model.prior, StandardNormalPrior):
        import scipy.stats

        return np.repeat(scipy.stats.norm.ppf(levels)[:, None], model.latent_dim, axis=1)
    draws = model.prior_distribution().sample(num_prior_samples, seed=(int(seed), 0))
    return np.quantile(np.asarray(draws, np.float64), levels, axis=0)


def traversal_latents(base: np.ndarray, values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """z for each cell, `[len(order), num_steps, D]`: row r is `base` with latent `order[r]`
    set to `values[:, order[r]]`, one column per step."""
    base, values = np.asarray(base, np.float64), np.asarray(values, np.float64)
    grid = np.broadcast_to(base, (len(order), len(values), base.shape[-1])).copy()
    for row, latent in enumerate(order):
        grid[row, :, latent] = values[:, latent]
    return grid


def latent_traversals(
    model: VAE,
    images: np.ndarray,
    num_steps: int = 9,
    base_index: int = 0,
    num_latents: int | None = None,
    **value_options,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoded traversals of the latents with the largest mean KL over `images`.

    Args:
        model: A VAE with a factorised prior.
        images: `[N, *image_shape]`; their mean KL orders the rows, and image `base_index`
            gives the base code E[z|x].
        num_steps: Values per latent (columns).
        base_index: Which image is traversed.
        num_latents: Rows (the most informative latents); None: all.
        **value_options: `low`, `high`, `num_prior_samples`, `seed` of `traversal_values`.

    Returns:
        `(decoded [rows, num_steps, *image_shape], order [rows], kl [D])`: E[x|z] of each cell,
        the latent of each row, and every latent's mean KL in nats.
    """
    images = np.asarray(images, np.float32)
    if not 0 <= base_index < len(images):
        raise ValueError(
            f"base_index must index images (0..{len(images) - 1}). Received: {base_index!r}"
        )
    kl = mean_kl_per_latent(model, images)
    rows = model.latent_dim if num_latents is None else _check_int("num_latents", num_latents)
    order = kl_order(kl)[: min(rows, model.latent_dim)]
    base = np.asarray(model.encode(images[base_index : base_index + 1]).mean())[0]
    values = traversal_values(model, num_steps, **value_options)
    latents = traversal_latents(base, values, order).astype(np.float32)
    flat = latents.reshape(-1, model.latent_dim)
    decoded = np.concatenate(
        [np.asarray(model.decode(flat[i : i + _BATCH]).mean()) for i in range(0, len(flat), _BATCH)]
    )
    return decoded.reshape(len(order), num_steps, *decoded.shape[1:]), order, kl


def traversal_figure(
    model: VAE,
    images: np.ndarray,
    num_steps: int = 9,
    base_index: int = 0,
    num_latents: int | None = None,
    **value_options,
) -> Figure:
    """The traversal grid of `latent_traversals`: one row per latent (decreasing mean KL,
    each labelled `z_j  KL nats` in a left margin of `LABEL_INCHES`), one column per value,
    tiled with `plotting.tile_images`."""
    decoded, order, kl = latent_traversals(
        model, images, num_steps, base_index, num_latents, **value_options
    )
    grid = plotting.tile_images(decoded.reshape(-1, *decoded.shape[2:]), num_cols=num_steps)
    fig = plotting.grid_figure(grid, title="latent traversals (rows by mean KL, nats)")
    ax = fig.axes[0]
    width, height_inches = fig.get_size_inches()  # widen the figure for the row labels
    fig.set_size_inches(width + LABEL_INCHES, height_inches)
    box = ax.get_position()
    total = width + LABEL_INCHES
    ax.set_position((LABEL_INCHES / total, box.y0, width / total, box.height))
    height = decoded.shape[2] + 1  # image rows plus the 1-pixel padding of tile_images
    ax.set_yticks(
        [r * height + (height - 1) / 2 for r in range(len(order))],
        [f"z{j}  {kl[j]:.2f}" for j in order],
        fontsize=7,
    )
    ax.tick_params(axis="y", length=0, pad=2)
    return fig


def kl_bar_chart(model: VAE | None = None, images: np.ndarray | None = None, kl=None) -> Figure:
    """A bar per latent of its mean KL in nats (`mean_kl_per_latent(model, images)`, or the
    given `kl`), latents in index order, the total in the title."""
    if kl is None:
        if model is None or images is None:
            raise ValueError("Give model and images, or kl. Received neither.")
        kl = mean_kl_per_latent(model, images)
    kl = np.asarray(kl, np.float64)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 0.35 * len(kl) + 1.5), 3.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(np.arange(len(kl)), kl, color="tab:blue")
    ax.set_xticks(np.arange(len(kl)), [f"z{j}" for j in range(len(kl))], fontsize=7)
    ax.set_ylabel("mean KL (nats)")
    ax.set_title(f"KL per latent, total {kl.sum():.2f} nats", fontsize=10)
    fig.tight_layout()
    return fig
