"""keras_vae.models.hvae.presets: `mlp_hvae` lays its blocks out as documented (one list for
every layer or one per layer, reversed on the way down, gated or not) and `conv_hvae` puts
each layer's latents on the grid its downsamples give, for any image shape."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vae.models.hvae import conv_hvae, mlp_hvae
from keras_vae.models.hvae.layers import GatedDense
from keras_vae.parts.disentangling_objectives import BetaTC
from keras_vae.parts.factor_vae import FactorVAE

SHAPE = (6, 5, 1)
RNG = np.random.default_rng(32)


def _dense_layers(model):
    """Every hidden dense layer of the hierarchy (not the heads' projections)."""
    layers = [layer for block in model.bottom_up.blocks for layer in block]
    for cell in model.cells:
        layers += [*cell.state_layers, *cell.posterior_layers]
    return layers + list(model.decoder.dense_layers)


def test_mlp_blocks_run_up_in_order_and_down_reversed():
    model = mlp_hvae(SHAPE, (4, 3, 2), [[8, 7], [6], [5]], posterior_units=[3], seed=1)
    assert model.bottom_up.hidden_units == [[8, 7], [6], [5]]
    # cell i (z_{i+1} -> h_i) runs block i + 1 backwards; the decoder runs block 1 backwards
    assert [cell.hidden_units for cell in model.cells] == [[6], [5]]
    assert [cell.posterior_units for cell in model.cells] == [[3], [3]]
    assert model.decoder.hidden_units == [7, 8]
    assert model.latent_sizes == [4, 3, 2] and model.num_layers == 3
    same = mlp_hvae(SHAPE, (4, 3), 16, seed=1)  # an int: one layer of 16 in every block
    assert same.bottom_up.hidden_units == [[16], [16]] and same.decoder.hidden_units == [16]


def test_state_units_and_skip_reach_the_cells_and_the_decoder_sees_z_2():
    model = mlp_hvae(SHAPE, (4, 3), [[8], []], state_units=[[6, 5]], skip=True, seed=1)
    assert model.bottom_up.hidden_units == [[8], []]
    assert [cell.hidden_units for cell in model.cells] == [[6, 5]]
    assert [cell.skip for cell in model.cells] == [True]
    model.build((None, *SHAPE))
    # h_1 = [T_1(z_2), z_2]: the decoder's first layer reads z_1 (4), T_1's output (5), z_2 (3)
    assert model.decoder.dense_layers[0].get_weights()[0].shape == (4 + 5 + 3, 8)
    # q(z_2|x) reads d_2 = d_1, the one layer of block 1
    assert model.top_posterior.get_weights()[0].shape[0] == 8
    with pytest.raises(ValueError, match=r"state_units needs one list per top-down cell \(1"):
        mlp_hvae(SHAPE, (4, 3), [8], state_units=[[6], [5]])


@pytest.mark.parametrize("gated", [False, True])
def test_gated_puts_gated_dense_layers_everywhere(gated):
    model = mlp_hvae(SHAPE, (4, 2), [8], posterior_units=[5], gated=gated, seed=1)
    model.build((None, *SHAPE))
    layers = _dense_layers(model)
    assert len(layers) == 5  # bottom-up 2; the cell's state 1 and posterior 1; the decoder 1
    expected = GatedDense if gated else keras.layers.Dense
    assert all(type(layer) is expected for layer in layers), [type(x) for x in layers]


def test_the_top_prior_gets_its_options():
    vamp = mlp_hvae(SHAPE, (4, 2), [8], prior="vamp", prior_components=3, seed=1)
    vamp.build((None, *SHAPE))
    assert vamp.prior.num_components == 3 and vamp.prior.latent_dim == 2
    assert tuple(vamp.prior.pseudo_inputs.shape) == (3, *SHAPE)
    mixture = mlp_hvae(SHAPE, (4, 2), [8], prior="mixture", prior_components=5, seed=1)
    assert mixture.prior.num_components == 5


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"latent_dims": (3, 0)}, r"latent_dims must be a non-empty list of positive ints"),
        ({"hidden_units": [[4], [4], [4]]}, r"hidden_units needs one list per stochastic layer"),
        ({"free_bits_groups": 2}, r"free_bits_groups must be None .* dividing its 3 channels"),
        ({"free_bits_groups": [1]}, r"free_bits_groups needs one entry per stochastic layer"),
        ({"prior": "laplace"}, r"prior must be one of"),
        (
            {"objective": FactorVAE()},
            r"objective='factorvae' trains a one-layer VAE \(--model vae\); a hierarchical",
        ),
        ({"objective": BetaTC()}, r"objective='betatc' trains a one-layer VAE"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern) as error:
        mlp_hvae(SHAPE, **{"latent_dims": (3, 2), "hidden_units": [4], **kwargs})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("shape", "likelihood", "downsamples"),
    [
        ((28, 20, 1), "bernoulli", (2, 1)),
        ((9, 9, 3), "logistic", (1, 0)),
        ((5, 7, 2), "gaussian", (0, 2)),
    ],
)
def test_conv_hvae_takes_any_image_shape(shape, likelihood, downsamples):
    model = conv_hvae(shape, (2, 3), downsamples, filters=4, likelihood=likelihood, seed=1)
    model.build((None, *shape))
    # layer i's grid: the image's side halved (rounding up) once per level so far
    grids = [[math.ceil(side / 2 ** sum(downsamples[: i + 1])) for side in shape[:2]]
             for i in range(2)]  # fmt: skip
    assert model.latent_sizes == [grids[0][0] * grids[0][1] * 2, grids[1][0] * grids[1][1] * 3]
    x = (RNG.integers(0, 256, size=(3, *shape)) / 255).astype("float32")
    loss, terms = model.objective(
        model, tf.constant(x), tf.zeros((1, 3, sum(model.latent_sizes))), 0
    )
    assert np.isfinite(float(loss)) and terms["kl_2"].shape == (3,)
    assert model.sample(2, seed=1).shape == (2, *shape)
    assert model.resample_from_layer(x, 1, seed=1).shape == (3, *shape)
    assert [q.event_shape[0] for q in model.encode(x)] == model.latent_sizes


def test_conv_hvae_needs_one_downsample_per_layer():
    with pytest.raises(ValueError, match=r"downsamples needs one int per stochastic layer \(2\)"):
        conv_hvae((8, 8, 1), (2, 3), (1,))
    with pytest.raises(ValueError, match="image_shape must be 3 positive ints"):
        conv_hvae((8, 8), (2, 3), (1, 1))
