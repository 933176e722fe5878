"""The callbacks: ImageGridCallback (TensorBoard image summaries and PNG files at the right
epochs) and BestEpochStopping (the weights validation scored best)."""

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_accumulator

import keras_vae
from keras_vae.engine.callbacks import BestEpochStopping, ImageGridCallback, write_image_summary

RNG = np.random.default_rng(11)
SHAPE = (6, 5, 1)


@pytest.fixture(scope="module")
def data():
    return (RNG.uniform(size=(64, *SHAPE)) > 0.5).astype("float32")


def _model():
    keras.utils.set_random_seed(0)
    model = keras_vae.mlp_vae(SHAPE, latent_dim=2, hidden_units=8, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    return model


def _image_summaries(log_dir):
    """{tag: [(step, decoded image array)]} from every event file under `log_dir`."""
    found = {}
    files = sorted(tf.io.gfile.glob(str(log_dir / "events.out.tfevents.*")))
    assert files, f"no event files in {log_dir}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "images":
                    continue
                width, height, *pngs = tf.make_ndarray(value.tensor)
                assert len(pngs) == 1
                image = tf.io.decode_png(pngs[0]).numpy()
                assert image.shape[:2] == (int(height), int(width))
                found.setdefault(value.tag, []).append((event.step, image))
    return found


@pytest.mark.parametrize("channels", [None, 3])
def test_write_image_summary_stores_the_8_bit_image_tensorboard_reads(tmp_path, channels):
    shape = (5, 7) if channels is None else (5, 7, channels)
    image = RNG.uniform(-0.2, 1.2, size=shape).astype("float32")  # clipped to [0, 1]
    expected = np.round(np.clip(image, 0.0, 1.0) * 255).astype("uint8").reshape(5, 7, -1)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        write_image_summary("picture", image, step=4)
    writer.close()
    ((step, decoded),) = _image_summaries(tmp_path)["picture"]  # TF's event reader
    assert step == 4
    np.testing.assert_array_equal(decoded, expected)
    # TensorBoard's own reader, as its image dashboard loads the file
    accumulator = plugin_event_accumulator.EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert list(accumulator.PluginTagToContent("images")) == ["picture"]
    (event,) = accumulator.Tensors("picture")
    width, height, png = tf.make_ndarray(event.tensor_proto)
    assert (event.step, int(width), int(height)) == (4, 7, 5)
    np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), expected)


def test_writes_tensorboard_images_and_pngs_every_n_epochs_and_at_the_end(data, tmp_path):
    log_dir, png_dir = tmp_path / "tb", tmp_path / "png"
    callback = ImageGridCallback(
        data[:8], log_dir=log_dir, png_dir=png_dir, every_n_epochs=2, num_samples=10, seed=3
    )
    _model().fit(data, batch_size=16, epochs=5, verbose=0, callbacks=[callback])

    summaries = _image_summaries(log_dir)
    assert set(summaries) == {"reconstructions", "samples"}
    # after epochs 2 and 4 (every 2) and 5 (the end); steps are 0-based epoch indices
    for tag in summaries:
        assert [step for step, _ in summaries[tag]] == [1, 3, 4]
    # 8 images of 6x5 with 1-pixel gaps in a row, above their reconstructions (2-pixel band)
    reconstructions = summaries["reconstructions"][-1][1]
    assert reconstructions.shape == (6 + 2 + 6, 8 * 6 - 1, 1)
    np.testing.assert_allclose(
        reconstructions[:6, :5, 0] / 255.0, data[0, :, :, 0], atol=1 / 255
    )  # the inputs are the fixed held-out images
    # 10 samples: 4 columns, 3 rows
    assert summaries["samples"][0][1].shape == (3 * 7 - 1, 4 * 6 - 1, 1)

    names = sorted(p.name for p in png_dir.iterdir())
    assert names == [
        f"{tag}_epoch{epoch:03d}.png"
        for tag in ("reconstructions", "samples")
        for epoch in (2, 4, 5)
    ]
    png = matplotlib.image.imread(png_dir / "samples_epoch005.png")  # 8-bit grey: [H, W]
    assert png.shape[:2] == (3 * 7 - 1, 4 * 6 - 1)
    # the PNG and the summary of the same epoch hold the same picture
    np.testing.assert_array_equal(np.round(png * 255), summaries["samples"][-1][1][..., 0])


def test_samples_use_fixed_latents_so_pictures_change_only_with_the_model(data, tmp_path):
    callback = ImageGridCallback(data[:4], png_dir=tmp_path, num_samples=4, seed=1)
    callback.set_model(_model())
    first = callback.render()["samples"]
    np.testing.assert_array_equal(callback.render()["samples"], first)


def test_png_only_and_tensorboard_only(data, tmp_path):
    png_only = ImageGridCallback(data[:4], png_dir=tmp_path / "png", every_n_epochs=3)
    tb_only = ImageGridCallback(data[:4], log_dir=tmp_path / "tb", every_n_epochs=3)
    _model().fit(data, batch_size=32, epochs=3, verbose=0, callbacks=[png_only, tb_only])
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "reconstructions_epoch003.png",
        "samples_epoch003.png",
    ]  # epoch 3 is both an every-3rd epoch and the last: written once
    assert {t: [s for s, _ in v] for t, v in _image_summaries(tmp_path / "tb").items()} == {
        "reconstructions": [2],
        "samples": [2],
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["png", "tb"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "needs somewhere to write"),
        ({"png_dir": "x", "every_n_epochs": 0}, "every_n_epochs must be a positive int"),
        ({"png_dir": "x", "every_n_epochs": 1.5}, "every_n_epochs must be a positive int"),
        ({"png_dir": "x", "every_n_epochs": True}, "every_n_epochs must be a positive int"),
        ({"png_dir": "x", "num_samples": -1}, "num_samples must be a positive int"),
        ({"png_dir": "x", "seed": "0"}, "seed must be an int"),
    ],
)
def test_invalid_arguments_are_refused(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageGridCallback(data[:4], **kwargs)


def test_images_must_match_the_model(tmp_path):
    with pytest.raises(ValueError, match="images must be a non-empty batch"):
        ImageGridCallback(np.zeros((0, 6, 5, 1)), png_dir=tmp_path)
    callback = ImageGridCallback(np.zeros((4, 5, 5, 1)), png_dir=tmp_path)
    with pytest.raises(ValueError, match=r"shape \(5, 5, 1\) per example but the model expects"):
        _model().fit(np.zeros((8, *SHAPE)), epochs=1, verbose=0, callbacks=[callback])


def test_time_budget_stops_after_the_epoch_that_reaches_it_and_logs_seconds():
    import time as _time

    from keras_vae.engine.callbacks import TrainingTimeBudget

    class Slow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            _time.sleep(0.05)

    x = np.random.default_rng(0).random((40, 4, 4, 1)).astype("float32")
    vae = keras_vae.mlp_vae((4, 4, 1), latent_dim=2, hidden_units=4, seed=0)
    vae.compile(optimizer="adam", jit_compile=False, steps_per_execution=1)  # Slow per step
    budget = TrainingTimeBudget(seconds=0.5, spent=0.2)  # 0.3 s left; an epoch takes >= 0.2 s
    history = vae.fit(x, batch_size=10, epochs=20, verbose=0, callbacks=[Slow(), budget])
    seconds = history.history["epoch_seconds"]
    assert 1 <= len(seconds) < 20 and all(s >= 0.2 for s in seconds)
    assert sum(seconds[:-1]) + 0.2 < 0.5 <= sum(seconds) + 0.2 + 1e-6


# --- BestEpochStopping ----------------------------------------------------------------------


def _drifting_regression(seed=3):
    """A linear model trained towards w, validated against w / 2: the held-out loss falls
    until the weights pass w / 2, then rises, so the best epoch is in the middle."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(256, 4)).astype("float32")
    w = rng.normal(size=(4, 1)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].set_weights([np.zeros((4, 1), "float32")])
    optimizer = keras.optimizers.SGD(0.01, use_ema=True, ema_momentum=0.9)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    return model, (x, x @ w), (x, x @ (w / 2))


@pytest.mark.parametrize("patience", [3, 100])
def test_best_epoch_stopping_restores_the_averaged_weights_validation_scored(patience):
    model, train, val = _drifting_regression()
    stopper = BestEpochStopping("val_loss", patience=patience, mode="min")
    history = model.fit(
        *train,
        validation_data=val,
        epochs=30,
        batch_size=32,
        shuffle=False,
        verbose=0,
        callbacks=[stopper, keras.callbacks.SwapEMAWeights()],
    )
    losses = history.history["val_loss"]
    best = int(np.argmin(losses))
    assert 0 < best < len(losses) - 1  # the set-up works: the best epoch is not the last
    assert (len(losses) < 30) == (patience == 3)
    # the restored weights give exactly the best held-out loss, recomputed independently
    kernel = model.layers[0].get_weights()[0]
    loss = float(np.mean((val[0] @ kernel - val[1]) ** 2))
    np.testing.assert_allclose(loss, losses[best], rtol=1e-5)


def test_best_epoch_stopping_without_an_average_is_early_stopping():
    model, train, val = _drifting_regression()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=False)
    stopper = BestEpochStopping("val_loss", patience=3, mode="min")
    history = model.fit(
        *train, validation_data=val, epochs=30, batch_size=32, verbose=0, callbacks=[stopper]
    )
    losses = history.history["val_loss"]
    kernel = model.layers[0].get_weights()[0]
    loss = float(np.mean((val[0] @ kernel - val[1]) ** 2))
    assert len(losses) - 1 - int(np.argmin(losses)) == 3
    np.testing.assert_allclose(loss, min(losses), rtol=1e-5)
