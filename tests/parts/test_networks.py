"""Network bodies against NumPy, their .keras round trip, and conv VAEs that train (XLA and
MirroredStrategy) and export."""

import keras
import numpy as np
import pytest
from helpers import MIRRORED_EQUIVALENCE, run_mirrored_cases, run_saving_test

from keras_vae import mlp_vae
from keras_vae.parts.networks import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    GatedMLP,
    check_levels,
    max_levels,
)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_mlp_matches_numpy_and_keeps_leading_axes():
    body = MLP([6, 4], activation="tanh", flatten=False)
    z = np.random.default_rng(0).normal(size=(3, 5, 2)).astype("float32")
    out = body(z).numpy()
    h = z
    for layer in body.dense_layers:
        kernel, bias = layer.get_weights()
        h = np.tanh(h @ kernel + bias)
    assert out.shape == (3, 5, 4)
    np.testing.assert_allclose(out, h, atol=1e-5)


def test_gated_mlp_matches_numpy():
    body = GatedMLP([7, 5], activation="relu", flatten=True)
    x = np.random.default_rng(1).random((3, 4, 4, 1)).astype("float32")
    out = body(x).numpy()
    h = x.reshape(3, -1)
    for layer, units in zip(body.dense_layers, (7, 5), strict=True):
        kernel, bias = layer.get_weights()
        pre = h @ kernel + bias
        h = np.maximum(pre[:, :units], 0.0) * _sigmoid(pre[:, units:])
    np.testing.assert_allclose(out, h, atol=1e-5)


@pytest.mark.parametrize("body", [MLP([5], flatten=True), GatedMLP([5, 3], flatten=True)])
def test_bodies_survive_keras_round_trip(body, tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 1)), body])
    x = np.random.default_rng(2).random((2, 4, 4, 1)).astype("float32")
    model.save(tmp_path / "body.keras")
    loaded = keras.saving.load_model(tmp_path / "body.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_bad_hidden_units_are_refused():
    with pytest.raises(ValueError, match="hidden_units must be"):
        GatedMLP([0])


# ------------------------------------------------------------------- convolutional bodies
def _same_padding(size, kernel):
    """TensorFlow's 'same' padding before the first row of a stride-2 convolution."""
    out = -(-size // 2)
    return max((out - 1) * 2 + kernel - size, 0) // 2


def _numpy_conv(x, kernel, bias):
    """Stride-2 'same' convolution [N, H, W, C] -> [N, ceil(H/2), ceil(W/2), F], in loops."""
    n, height, width, _ = x.shape
    k = kernel.shape[0]
    top, left = _same_padding(height, k), _same_padding(width, k)
    out = np.zeros((n, -(-height // 2), -(-width // 2), kernel.shape[-1])) + bias
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            for a in range(k):
                for b in range(k):
                    r, c = 2 * i + a - top, 2 * j + b - left
                    if 0 <= r < height and 0 <= c < width:
                        out[:, i, j] += x[:, r, c] @ kernel[a, b]
    return out


def _numpy_conv_transpose(x, kernel, bias):
    """Stride-2 'same' transposed convolution [N, h, w, C] -> [N, 2h, 2w, F]: each input
    position adds its kernel-weighted values around (2i, 2j), shifted by the 'same' padding of
    the convolution it transposes. Keras' kernel is [k, k, F, C]."""
    n, height, width, _ = x.shape
    k = kernel.shape[0]
    top, left = _same_padding(2 * height, k), _same_padding(2 * width, k)
    out = np.zeros((n, 2 * height, 2 * width, kernel.shape[2])) + bias
    for i in range(height):
        for j in range(width):
            for a in range(k):
                for b in range(k):
                    r, c = 2 * i + a - top, 2 * j + b - left
                    if 0 <= r < 2 * height and 0 <= c < 2 * width:
                        out[:, r, c] += x[:, i, j] @ kernel[a, b].T
    return out


def test_conv_encoder_matches_numpy_on_an_odd_image_size():
    encoder = ConvEncoder([3, 4], hidden_units=[5], kernel_size=3, activation="tanh")
    x = np.random.default_rng(3).random((2, 7, 5, 2)).astype("float32")
    out = encoder(x).numpy()
    h = x.astype("float64")
    for layer in encoder.conv_layers:
        h = np.tanh(_numpy_conv(h, *layer.get_weights()))
    assert h.shape == (2, 2, 2, 4)  # 7 x 5 -> 4 x 3 -> 2 x 2
    kernel, bias = encoder.dense_layers[0].get_weights()
    np.testing.assert_allclose(out, np.tanh(h.reshape(2, -1) @ kernel + bias), atol=1e-5)


def test_conv_decoder_matches_numpy_and_crops_to_the_image_size():
    decoder = ConvDecoder((7, 5), filters=[4, 3], hidden_units=[6], kernel_size=4,
                          activation="tanh")  # fmt: skip
    z = np.random.default_rng(4).normal(size=(2, 3)).astype("float32")
    out = decoder(z).numpy()
    g = z.astype("float64")
    for layer in [*decoder.dense_layers, decoder.base_layer]:
        kernel, bias = layer.get_weights()
        g = np.tanh(g @ kernel + bias)
    h = g.reshape(2, 2, 2, 4)  # base map ceil(7 / 4) x ceil(5 / 4)
    for layer in decoder.deconv_layers:
        h = np.tanh(_numpy_conv_transpose(h, *layer.get_weights()))
    assert h.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(out, h[:, :7, :5], atol=1e-5)


@pytest.mark.parametrize("image_shape", [(28, 28, 1), (28, 20, 1), (32, 32, 3), (27, 19, 2)])
def test_conv_bodies_shapes_with_leading_sample_axes(image_shape):
    encoder, decoder = ConvEncoder.pair(image_shape, hidden_units=[], filters=[4, 8])
    levels = np.ceil(np.asarray(image_shape[:2]) / 4).astype(int)
    x = np.random.default_rng(5).random((3, 2, *image_shape)).astype("float32")
    features = encoder(x)
    assert features.shape == (3, 2, levels.prod() * 8)
    assert encoder.compute_output_shape((None, *image_shape)) == (None, levels.prod() * 8)
    z = np.random.default_rng(6).normal(size=(4, 3, 5)).astype("float32")  # [L, B, D]
    out = decoder(z).numpy()
    assert out.shape == (4, 3, *image_shape[:2], 4)
    assert decoder.compute_output_shape((4, 3, 5)) == out.shape
    np.testing.assert_allclose(decoder(z[1]).numpy(), out[1], atol=1e-6)  # row by row


def test_kernel_size_and_depth_reach_both_bodies():
    encoder, decoder = ConvEncoder.pair((27, 19, 2), filters=[3, 4, 5], kernel_size=5)
    encoder.build((None, 27, 19, 2))
    decoder.build((None, 6))
    assert [layer.kernel.shape for layer in encoder.conv_layers] == [
        (5, 5, 2, 3), (5, 5, 3, 4), (5, 5, 4, 5),
    ]  # fmt: skip
    # Conv2DTranspose kernels are [k, k, out, in]; the decoder mirrors the levels
    assert [layer.kernel.shape for layer in decoder.deconv_layers] == [
        (5, 5, 5, 5), (5, 5, 4, 5), (5, 5, 3, 4),
    ]  # fmt: skip
    assert decoder.base_size == (4, 3)  # ceil(27 / 8), ceil(19 / 8)


def _levels_by_halving(height, width):
    """Stride-2 'same' levels applied while the longer side still has 2 pixels or more."""
    levels = 0
    while max(height, width) > 1:
        height, width, levels = -(-height // 2), -(-width // 2), levels + 1
    return levels


def test_max_levels_is_the_halvings_down_to_one_pixel():
    for height in range(1, 70):
        for width in (1, 3, height, 2 * height + 1):
            assert max_levels((height, width, 1)) == _levels_by_halving(height, width)
    check_levels((28, 20, 1), 5)  # 28 -> 14 -> 7 -> 4 -> 2 -> 1
    with pytest.raises(ValueError, match="28x20 images allow at most 5 stride-2") as error:
        ConvEncoder.pair((28, 20, 1), filters=[8] * 6)
    assert "\n" not in str(error.value) and "Received: 6 levels" in str(error.value)


def test_conv_decoder_output_depends_on_z():
    decoder = ConvDecoder((6, 5), filters=[4, 3])
    z = np.random.default_rng(7).normal(size=(2, 3)).astype("float32")
    out = decoder(z).numpy()
    assert np.abs(out[0] - out[1]).max() > 1e-3
    assert np.abs(decoder(z + 1.0).numpy() - out).max() > 1e-3


def test_conv_bodies_survive_keras_round_trip():
    encoder, decoder = ConvEncoder.pair((7, 5, 2), hidden_units=[6], filters=[3, 4])
    x = np.random.default_rng(8).random((2, 7, 5, 2)).astype("float32")
    z = np.random.default_rng(9).normal(size=(2, 6)).astype("float32")
    encoder.build(x.shape)
    decoder.build(z.shape)
    run_saving_test(encoder, x)
    restored = run_saving_test(decoder, z)
    assert restored.output_size == (7, 5) and restored.filters == (4, 3)


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: ConvEncoder(filters=[]), "filters"),
        (lambda: ConvEncoder(filters=[32, 0]), "filters"),
        (lambda: ConvEncoder(hidden_units=[-1]), "hidden_units"),
        (lambda: ConvEncoder(kernel_size=0), "kernel_size"),
        (lambda: ConvEncoder(activation="nope"), "activation"),
        (lambda: ConvDecoder((28,)), "output_size"),
        (lambda: ConvDecoder((28, 0)), "output_size"),
        (lambda: ConvEncoder.pair((784,)), "image_shape"),
    ],
)
def test_bad_conv_arguments_give_one_line_errors_naming_them(make, argument):
    with pytest.raises(ValueError, match=rf"Received: {argument}=") as error:
        make()
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------ conv VAE models
def _images(image_shape, likelihood, count=64, seed=10):
    """A tiny learnable data set: noisy copies of one random template (8-bit grey levels, or
    binary for the Bernoulli likelihood)."""
    rng = np.random.default_rng(seed)
    template = rng.random(image_shape)
    if likelihood == "bernoulli":
        return (rng.random((count, *image_shape)) < template).astype("float32")
    noisy = np.clip(template + 0.05 * rng.normal(size=(count, *image_shape)), 0.0, 1.0)
    return (np.round(noisy * 255) / 255).astype("float32")


def _conv_vae(image_shape, likelihood="bernoulli", **options):
    return mlp_vae(image_shape, latent_dim=3, hidden_units=[16], likelihood=likelihood,
                   activation="relu", seed=0, network="conv",
                   network_options={"filters": [4, 8]}, **options)  # fmt: skip


@pytest.mark.parametrize(
    ("image_shape", "likelihood", "options"),
    [
        ((8, 6, 1), "bernoulli", {}),
        # with `-m long` (10-14 s each); in CI the colour logistic conv VAE exports and passes
        # its self-checks below, and the conv bodies' shapes on odd image sizes are checked above
        pytest.param(
            (8, 6, 1),
            "gaussian",
            {"likelihood_options": {"fixed_scale": 0.1}},
            marks=pytest.mark.long,
        ),
        pytest.param(
            (8, 8, 3), "logistic", {"prior": "vamp", "prior_components": 3}, marks=pytest.mark.long
        ),
        pytest.param((11, 7, 2), "gaussian", {}, marks=pytest.mark.long),
    ],
    ids=["bernoulli", "gaussian-fixed", "logistic-colour-vamp", "gaussian-odd-2-channels"],
)
def test_conv_vae_trains_with_xla_and_the_loss_drops(image_shape, likelihood, options):
    keras.utils.set_random_seed(0)  # the initial weights (4 epochs from some drop < 5%)
    vae = _conv_vae(image_shape, likelihood, **options)
    vae.compile(keras.optimizers.Adam(1e-2), jit_compile=True)
    x = _images(image_shape, likelihood)
    assert vae.likelihood.check_values(x) is None
    history = vae.fit(x, batch_size=16, epochs=6, shuffle=False, verbose=0).history
    assert vae.xla == "step" and vae.likelihood.spatial is True
    losses = history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.05 * abs(losses[0])
    z = np.random.default_rng(11).normal(size=(2, 5, 3)).astype("float32")  # [L, B, D]
    assert vae.decode(z).mean().shape == (2, 5, *image_shape)


def test_conv_vae_with_full_posterior_and_vamp_prior_survives_keras_round_trip():
    vae = _conv_vae((7, 5, 3), "logistic", posterior="full", prior="vamp", prior_components=2)
    x = _images((7, 5, 3), "logistic", count=4)
    vae.build(x.shape)
    outputs = lambda model, x: {  # noqa: E731
        "reconstruction": model(x),
        "likelihood": model.likelihood.parameters(model.decoder(model.encode(x).mean())),
        "prior_log_prob": model.prior_distribution().log_prob(model.encode(x).mean()),
    }
    restored = run_saving_test(vae, x, outputs)
    assert isinstance(restored.decoder, ConvDecoder) and restored.likelihood.spatial is True


@pytest.mark.long  # 18 s; in CI a conv VAE trains under the strategy from the CLI
# (tests/cli/test_commands.py), and three MLP cases equal one device
# (tests/engine/test_distribute.py): the batch-share weighting that makes them equal does not
# depend on the network
def test_mirrored_conv_vae_steps_equal_single_device_steps():
    """The MirroredStrategy equivalence of tests/engine/test_distribute.py, on a conv VAE: 2 logical
    CPU replicas and one device make the same SGD steps on the same global batches."""
    case = {"model": {"network": "conv", "network_options": {"filters": [4, 8]},
                      "activation": "relu"}, "jit_compile": [False]}  # fmt: skip
    out = run_mirrored_cases(MIRRORED_EQUIVALENCE, {"conv": case})["conv"]
    assert out["replicas"] == 2 and out["mirrored_False"]["warnings"] == []
    assert out["weight_change"] > 1e-3
    assert out["mirrored_False"]["weight_diff"] < 1e-5
    for key, value in out["evaluate_single"].items():
        assert out["mirrored_False"]["evaluate"][key] == pytest.approx(value, rel=1e-5), key


def test_conv_network_needs_image_shaped_inputs():
    with pytest.raises(ValueError, match="needs images of shape"):
        _conv_vae((48,))


def test_conv_vae_with_colour_logistic_exports_and_passes_the_self_checks(tmp_path):
    """SavedModels, float and int8 TFLite of a conv VAE; export_vae compares every artefact
    with the Keras model (and raises if one disagrees), the report says by how much."""
    from keras_vae.models.vae.export import export_vae

    vae = _conv_vae((8, 8, 3), "logistic")
    x = _images((8, 8, 3), "logistic")
    vae.build(x.shape)
    report = export_vae(vae, tmp_path, quantize=["none", "int8"], representative_images=x,
                        progress=None)  # fmt: skip
    written = {(a["part"], a["kind"], a["quantization"]) for a in report["artefacts"]}
    for part in ("encoder", "decoder"):
        assert {(part, "saved_model", "none"), (part, "tflite", "none")} <= written
        assert (part, "tflite", "int8") in written
    for artefact in report["artefacts"]:
        assert artefact["checked_error"] <= artefact["bound"], artefact["path"]
    assert "TRANSPOSE_CONV" in next(
        a["operators"] for a in report["artefacts"] if a["path"] == "decoder.tflite"
    )
