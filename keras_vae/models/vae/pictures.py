"""Matplotlib figures of a trained VAE, and the `keras-vae plot` command.

Every function returns a `matplotlib.figure.Figure` built on the Agg canvas directly (never
through `pyplot`), so plotting needs no display, leaves no global figure state behind and works
the same in scripts, tests, callbacks and notebooks (where `display(fig)` or a cell's last
expression shows it inline). Images are drawn in grey (`cmap="gray"`, values clipped to
[0, 1]) without ticks; a grid of images is tiled into one array (`tile_images`) and drawn with
one `imshow`, which is fast and pixel-exact.

* `reconstruction_grid`: inputs x above their reconstructions E[x|z] at z = E[z|x].
* `sample_grid`: E[x|z] for z ~ p(z).
* `manifold_grid`: the learned 2-D manifold of the AEVB paper's Figure 4: linearly spaced
  points of the unit square mapped through the prior's marginal quantile functions to z
  (the inverse CDF of N(0, 1) for the standard normal prior, quantiles of prior samples for
  learned priors), decoded to E[x|z].
* `latent_scatter`: posterior means E[z|x], coloured by label (first two principal
  components when latent_dim > 2).
* `interpolation_grid`: E[x|z] along the straight line between two posterior means.
* `traversals` and `kl` figures (`make_figure`): `keras_vae.models.vae.traversals`' latent
  traversals (rows ordered by mean KL over `KL_IMAGES` picked images, the first of them
  traversed) and per-latent KL bars.
* `save_figure`: writes a PNG atomically and closes the figure.

Example:
    ```python
    from keras_vae.models.vae import pictures as plotting
    fig = plotting.manifold_grid(model, num_per_axis=20)
    plotting.save_figure(fig, "manifold.png")
    ```

Command line (`add_cli_arguments` / `run_cli`):

    keras-vae plot RUN_DIR --kind {reconstructions,samples,manifold,latents,interpolation,
        traversals,kl} --output FILE.png [--num N] [--split test] [--seed S] [--dpi 100]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from keras_vae._internal.figures import (  # noqa: F401  (part of this module's API)
    _MAX_INCHES,
    _TITLE_INCHES,
    DEFAULT_DPI,
    _grid_inches,
    _new_figure,
    _show,
    close_figure,
    display_shape,
    grid_figure,
    reconstruction_figure,
    save_figure,
    tile_images,
    to_uint8,
    write_png,
)
from keras_vae.data import pipeline as data

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from keras_vae.models.vae.model import VAE

KINDS = ("reconstructions", "samples", "manifold", "latents", "interpolation", "traversals", "kl")
# --num means a different count for each kind; these are its defaults.
DEFAULT_NUM = {
    "reconstructions": 8,  # images
    "samples": 64,  # images
    "manifold": 20,  # points per axis
    "latents": 5000,  # images scattered
    "interpolation": 10,  # steps
    "traversals": 9,  # values per latent
    "kl": 1000,  # images whose KL is averaged
}
KL_IMAGES = 1000  # images whose mean KL orders the rows of a traversal figure
_ENCODE_BATCH = 1000


def _as_batch(model: VAE, images, name: str = "images") -> np.ndarray:
    """`images` as float32 `[N, *model.image_shape]`, or a ValueError naming the shapes."""
    images = np.asarray(images, dtype=np.float32)
    expected = tuple(model.image_shape)
    if images.shape == expected:
        images = images[np.newaxis]
    if images.ndim != len(expected) + 1 or tuple(images.shape[1:]) != expected or not len(images):
        raise ValueError(
            f"{name} must have shape [N, {', '.join(map(str, expected))}] for this model "
            f"(image_shape={expected}). Received: shape={images.shape}"
        )
    return images


def _check_count(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _is_conditional(model) -> bool:
    return hasattr(model, "condition_dim")  # keras_vae.ConditionalVAE


def _conditions(model, labels, count: int) -> list:
    """`[labels]` for a conditional VAE (one per example, required), `[]` for a plain VAE."""
    if not _is_conditional(model):
        return []
    if labels is None or len(labels) != count:
        raise ValueError(
            f"A conditional VAE needs one label per image ({count}). Received: "
            f"{'none' if labels is None else len(labels)}"
        )
    return [np.asarray(labels)]


def posterior_means(
    model: VAE, images: np.ndarray, batch_size: int = _ENCODE_BATCH, labels=None
) -> np.ndarray:
    """E[z|x] (E[z|x, y] given a conditional VAE's `labels`) for every image,
    `[N, latent_dim]` float32, encoded in batches."""
    images = _as_batch(model, images)
    given = _conditions(model, labels, len(images))
    means = []
    for start in range(0, len(images), batch_size):
        part = slice(start, start + batch_size)
        means.append(np.asarray(model.encode(images[part], *(y[part] for y in given)).mean()))
    return np.concatenate(means).astype(np.float32)


def _decode_means(
    model: VAE, z: np.ndarray, batch_size: int = _ENCODE_BATCH, labels=None
) -> np.ndarray:
    z = np.asarray(z, dtype=np.float32)
    given = _conditions(model, labels, len(z))
    means = []
    for start in range(0, len(z), batch_size):
        part = slice(start, start + batch_size)
        means.append(np.asarray(model.decode(z[part], *(y[part] for y in given)).mean()))
    return np.concatenate(means)


def reconstructions(model: VAE, images: np.ndarray, labels=None) -> np.ndarray:
    """E[x|z] at z = E[z|x] for each image (the deterministic reconstruction), numpy; a
    conditional VAE's E[x|z, y] at z = E[z|x, y] given the images' `labels`."""
    return _decode_means(model, posterior_means(model, images, labels=labels), labels=labels)


# ---------------------------------------------------------------------------------- figures
def reconstruction_grid(model: VAE, images: np.ndarray, num: int = 8, labels=None) -> Figure:
    """Inputs in one row and their reconstructions E[x|z] at z = E[z|x] beneath.

    Args:
        model: A trained `keras_vae.VAE`.
        images: `[N, *model.image_shape]`; the first `num` are shown (rows of at most 16).
        num: How many images.
        labels: A conditional VAE's labels of `images` (its E[x|z, y], z = E[z|x, y]).

    Returns:
        The figure.
    """
    num = _check_count("num", num)
    inputs = _as_batch(model, images)[:num]
    labels = None if labels is None else np.asarray(labels)[:num]
    outputs = reconstructions(model, inputs, labels)
    return reconstruction_figure(inputs, outputs, "Reconstructions")


def sample_grid(model: VAE, num: int = 64, seed: int | None = 0) -> Figure:
    """E[x|z] for `num` draws z ~ p(z), in a square-ish grid.

    Args:
        model: A trained `keras_vae.VAE`.
        num: How many samples.
        seed: Seed of the draws (the same seed gives the same z); None: the model's stream.

    Returns:
        The figure.
    """
    num = _check_count("num", num)
    if _is_conditional(model):
        return class_sample_grid(model, -(-num // model.condition_dim), seed=seed)
    images = np.asarray(model.sample(num, seed=seed))
    return grid_figure(tile_images(images), f"Samples E[x|z], z ~ p(z) ({num})")


def class_sample_grid(model, per_class: int = 8, seed: int | None = 0) -> Figure:
    """A conditional VAE's E[x|z, y] for z ~ p(z|y): one row per class y = 0 .. C - 1, of
    `per_class` samples each (what `sample_grid` draws for such a model, num / C per row)."""
    per_class = _check_count("per_class", per_class)
    classes = model.condition_dim
    labels = np.repeat(np.arange(classes), per_class)
    images = np.asarray(model.sample(len(labels), y=labels, seed=seed))
    return grid_figure(
        tile_images(images, num_cols=per_class),
        f"Samples E[x|z, y], z ~ p(z|y): one row per class y = 0 .. {classes - 1}",
    )


def manifold_latents(
    num_per_axis: int = 20,
    low: float = 0.05,
    high: float = 0.95,
    prior_samples: np.ndarray | None = None,
) -> np.ndarray:
    """The z grid of the AEVB paper's Figure 4, `[num_per_axis**2, 2]`, row-major.

    Linearly spaced probabilities u in [low, high] are mapped through the quantile function of
    each latent's marginal under the prior, z_i = F_i^-1(u), so the grid covers the prior's
    mass evenly: F^-1 = Phi^-1, the inverse CDF of N(0, 1), when `prior_samples` is None (the
    standard normal prior), else the empirical quantiles of `prior_samples[:, i]`. Row r of the
    tiled picture has z_2 = F_2^-1(high ... low) (decreasing downwards, like a y axis),
    column c has z_1 = F_1^-1(low ... high).

    Args:
        num_per_axis: Grid points per axis (at least 2).
        low, high: The outermost probabilities, 0 < low < high < 1.
        prior_samples: Draws z ~ p(z), `[n, 2]`, or None for N(0, I).
    """
    num_per_axis = _check_count("num_per_axis", num_per_axis, minimum=2)
    if not 0.0 < low < high < 1.0:
        raise ValueError(
            f"Need 0 < low < high < 1 (quantiles of the prior). Received: low={low}, high={high}"
        )
    probabilities = np.linspace(low, high, num_per_axis)
    if prior_samples is None:
        import scipy.stats

        z1_values = z2_values = scipy.stats.norm.ppf(probabilities)
    else:
        prior_samples = np.asarray(prior_samples, dtype=np.float64)
        if prior_samples.ndim != 2 or prior_samples.shape[1] != 2 or len(prior_samples) < 2:
            raise ValueError(
                "prior_samples must have shape [n, 2] with n >= 2. "
                f"Received: shape={prior_samples.shape}"
            )
        z1_values, z2_values = np.quantile(prior_samples, probabilities, axis=0).T
    z1, z2 = np.meshgrid(z1_values, z2_values[::-1])
    return np.stack([z1.ravel(), z2.ravel()], axis=-1).astype(np.float32)


def _has_standard_normal_prior(model: VAE) -> bool:
    from keras_vae.parts.priors import StandardNormalPrior

    return isinstance(model.prior, StandardNormalPrior)


def _check_two_latents(model: VAE) -> None:
    if model.latent_dim != 2:
        raise ValueError(
            f"manifold needs a 2-latent model; this model has latent_dim={model.latent_dim}; "
            "train with --latent-dim 2"
        )


def prior_manifold_latents(
    model: VAE,
    num_per_axis: int = 20,
    *,
    num_prior_samples: int = 20000,
    seed: int = 0,
    low: float = 0.05,
    high: float = 0.95,
) -> np.ndarray:
    """`manifold_latents` at the quantiles of the model's own prior (2-latent models).

    Exact N(0, 1) quantiles for the standard normal prior; for any other prior the empirical
    quantiles of `num_prior_samples` draws z ~ `model.prior_distribution()` with the
    stateless seed `(seed, 0)` (the same seed gives the same grid); `low`, `high` as there.
    """
    _check_two_latents(model)
    if _has_standard_normal_prior(model):
        return manifold_latents(num_per_axis, low, high)
    num_prior_samples = _check_count("num_prior_samples", num_prior_samples, minimum=2)
    draws = model.prior_distribution().sample(num_prior_samples, seed=(int(seed), 0))
    return manifold_latents(num_per_axis, low, high, prior_samples=np.asarray(draws))


def manifold_grid(
    model: VAE,
    num_per_axis: int = 20,
    *,
    num_prior_samples: int = 20000,
    seed: int = 0,
    low: float = 0.05,
    high: float = 0.95,
) -> Figure:
    """The learned 2-D data manifold (Figure 4 of Kingma & Welling, 2014).

    A `num_per_axis` x `num_per_axis` grid of z (`prior_manifold_latents`: quantiles
    0.05 ... 0.95 of the prior's marginal on each axis; for N(0, I) those of N(0, 1)) decoded
    to E[x|z] and tiled; z_1 grows to the right, z_2 upwards. For a learned prior (mixture,
    VampPrior) the quantiles come from `num_prior_samples` draws with `seed`, so the grid
    covers where that prior puts its mass.

    Args:
        model: A trained `keras_vae.VAE` with `latent_dim == 2`.
        num_per_axis: Grid points per latent axis.
        num_prior_samples: Draws from a learned prior that estimate its quantiles.
        seed: Seed of those draws.
        low, high: The outermost quantiles of the grid. A model whose posteriors spread beyond
            the prior's centre (a large KL) shows more of its manifold with e.g. 0.005, 0.995.

    Returns:
        The figure.

    Raises:
        ValueError: If the model's latent space is not 2-D.
    """
    z = prior_manifold_latents(
        model, num_per_axis, num_prior_samples=num_prior_samples, seed=seed, low=low, high=high
    )
    grid = tile_images(_decode_means(model, z), num_cols=num_per_axis, padding=0)
    quantiles = "$\\Phi^{-1}(u)$" if _has_standard_normal_prior(model) else "$F^{-1}(u)$"
    square = "the unit square" if (low, high) == (0.05, 0.95) else f"[{low:g}, {high:g}]$^2$"
    return grid_figure(
        grid,
        f"Learned manifold: E[x|z] at z = {quantiles} (prior quantiles), "
        f"u on a {num_per_axis}x{num_per_axis} grid of {square}",
    )


def _principal_components(points: np.ndarray, count: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Projections on the first `count` principal components and their variance fractions."""
    centred = points - points.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    variance = singular**2
    fractions = variance[:count] / max(variance.sum(), 1e-30)
    return (centred @ vt[:count].T).astype(np.float32), fractions


def latent_scatter(
    model: VAE,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    max_legend_classes: int = 20,
    label_name: str = "label",
) -> Figure:
    """Posterior means E[z|x] of `images` in the plane, coloured by label when given.

    2-latent models show (z_1, z_2); larger latent spaces show the first two principal
    components of the means (the title says so, with their share of the variance); a 1-latent
    model shows z_1 against a small random jitter.

    Args:
        model: A trained `keras_vae.VAE`.
        images: `[N, *model.image_shape]`.
        labels: Optional `[N]` labels: integer classes get a legend (up to
            `max_legend_classes` of them), anything else a colour bar.
        max_legend_classes: Above this many classes, use a colour bar instead of a legend.
        label_name: Title of the legend or colour bar, e.g. "digit" or "frame".

    Returns:
        The figure.
    """
    means = posterior_means(model, images, labels=labels if _is_conditional(model) else None)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(means),):
            raise ValueError(
                f"labels must have shape [{len(means)}] (one per image). "
                f"Received: shape={labels.shape}"
            )
    latent_dim = means.shape[1]
    if latent_dim == 1:
        jitter = np.random.default_rng(0).uniform(-0.5, 0.5, size=len(means))
        points = np.stack([means[:, 0], jitter], axis=-1)
        title, xlabel, ylabel = "Posterior means E[z|x] (1-d latent)", "z_1", "random jitter"
    elif latent_dim == 2:
        points = means
        title, xlabel, ylabel = "Posterior means E[z|x]", "z_1", "z_2"
    else:
        points, fractions = _principal_components(means)
        title = (
            f"Posterior means E[z|x]: first two principal components of {latent_dim}-d "
            f"(PCA, {100 * fractions.sum():.0f}% of variance)"
        )
        xlabel, ylabel = "PC 1", "PC 2"
    fig = _new_figure(7.0, 6.0)
    ax = fig.add_subplot()
    size = 4.0 if len(points) > 2000 else 10.0
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.6, color="tab:blue", linewidths=0)
    else:
        classes = np.unique(labels)
        discrete = np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_
        if discrete and len(classes) <= max_legend_classes:
            cmap = _class_colours(len(classes))
            for index, value in enumerate(classes):
                chosen = labels == value
                ax.scatter(
                    points[chosen, 0], points[chosen, 1], s=size, alpha=0.7,
                    color=cmap[index], label=str(value), linewidths=0,
                )  # fmt: skip
            ax.legend(
                title=label_name, markerscale=12.0 / size**0.5, loc="center left",
                bbox_to_anchor=(1.01, 0.5), frameon=False,
            )  # fmt: skip
        else:
            drawn = ax.scatter(
                points[:, 0], points[:, 1], c=labels.astype(np.float64), s=size, alpha=0.7,
                cmap="viridis", linewidths=0,
            )  # fmt: skip
            fig.colorbar(drawn, ax=ax, label=label_name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _class_colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def interpolation_grid(
    model: VAE, image_a: np.ndarray, image_b: np.ndarray, steps: int = 10
) -> Figure:
    """E[x|z] along the straight line from E[z|x_a] to E[z|x_b].

    z_t = (1 - t) E[z|x_a] + t E[z|x_b] for `steps` values of t from 0 to 1, shown between
    the two inputs.

    Args:
        model: A trained `keras_vae.VAE`.
        image_a: One example, `image_shape` or `[1, *image_shape]`.
        image_b: Another example.
        steps: Points on the line, including both ends (at least 2).

    Returns:
        The figure.
    """
    steps = _check_count("steps", steps, minimum=2)
    a = _as_batch(model, image_a, "image_a")
    b = _as_batch(model, image_b, "image_b")
    if len(a) != 1 or len(b) != 1:
        raise ValueError("image_a and image_b must each be one example.")
    z_a, z_b = posterior_means(model, np.concatenate([a, b]))
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, np.newaxis]
    path = _decode_means(model, (1.0 - t) * z_a + t * z_b)
    tiles = [tile_images(x) for x in (a, *path[:, np.newaxis], b)]
    height, width = tiles[0].shape[:2]
    panel = min(1.0, (_MAX_INCHES - 0.4) / len(tiles))
    panel_height = panel * height / width
    fig_width = panel * len(tiles) + 0.4
    fig_height = panel_height + 2 * _TITLE_INCHES
    fig = _new_figure(fig_width, fig_height)
    fig.suptitle(
        f"Interpolation between E[z|x_a] and E[z|x_b] ({steps} steps)",
        y=1.0 - 0.1 * _TITLE_INCHES / fig_height, va="top",
    )  # fmt: skip
    for index, tile in enumerate(tiles):
        if index == 0:
            label = "x_a"
        elif index == len(tiles) - 1:
            label = "x_b"
        else:
            label = f"t={float(t[index - 1, 0]):.2g}"
        gap = 0.2 if index == len(tiles) - 1 else (0.0 if index == 0 else 0.1)
        left = (index * panel + gap) / fig_width
        ax = fig.add_axes((left, 0.1 * _TITLE_INCHES / fig_height, panel * 0.95 / fig_width,
                           panel_height / fig_height))  # fmt: skip
        _show(ax, tile, label, fontsize=8)
    return fig


_PLAIN_ONLY = ("manifold", "interpolation", "traversals", "kl")  # no labels to condition on


def _by_latent_figure(model: VAE, kind: str, images, num: int, seed: int) -> Figure:
    """`traversals`: `num` values per latent, rows by the mean KL of `KL_IMAGES` images
    picked with `seed` (`data.pick_rows`), the first of them traversed; `kl`: the mean KL
    per latent of `num` picked images."""
    from keras_vae.models.vae import traversals  # it draws with this module's grids

    rows, _ = data.pick_rows(images, KL_IMAGES if kind == "traversals" else num, seed)
    if kind == "kl":
        return traversals.kl_bar_chart(model, rows)
    return traversals.traversal_figure(model, rows, num_steps=num)


def make_figure(
    model: VAE,
    kind: str,
    *,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    num: int | None = None,
    seed: int = 0,
) -> Figure:
    """The figure of one `--kind` for a model and (where the kind needs them) images.

    `images` is an array or a `keras_vae.data.ImageStream` (read up to the rows it needs).
    Reconstructions use `num` images picked at random with `seed` (`data.pick_rows`);
    interpolation uses two such images; latents use all `images` given; traversals and kl
    pick theirs as `_by_latent_figure` says.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}. Received: kind={kind!r}")
    num = DEFAULT_NUM[kind] if num is None else _check_count("--num", num)
    if kind == "samples":
        return sample_grid(model, num, seed=seed)
    if _is_conditional(model) and kind in _PLAIN_ONLY:
        raise ValueError(
            f"--kind {kind} is drawn for a plain VAE; for a conditional VAE plot samples, "
            "reconstructions or latents."
        )
    if kind == "manifold":
        return manifold_grid(model, num, seed=seed)
    if images is None:
        raise ValueError(f"kind={kind!r} needs images.")
    if kind == "latents":
        return latent_scatter(model, images, labels)
    if kind in ("traversals", "kl"):
        return _by_latent_figure(model, kind, images, num, seed)
    if kind == "reconstructions":
        rows, chosen = data.pick_rows(images, num, seed, labels)
        return reconstruction_grid(model, rows, num=len(rows), labels=chosen)
    if len(images) < 2:
        raise ValueError(f"interpolation needs at least 2 images; the split has {len(images)}.")
    pair = np.random.default_rng(seed).choice(len(images), size=2, replace=False)
    (first, second), _ = data.take_rows(images, pair)
    return interpolation_grid(model, first, second, steps=num)


__all__ = [
    "display_shape",
    "grid_figure",
    "interpolation_grid",
    "latent_scatter",
    "make_figure",
    "manifold_grid",
    "manifold_latents",
    "prior_manifold_latents",
    "posterior_means",
    "reconstruction_figure",
    "reconstruction_grid",
    "reconstructions",
    "sample_grid",
    "class_sample_grid",
    "save_figure",
    "tile_images",
    "to_uint8",
    "write_png",
]
