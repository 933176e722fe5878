"""Keras callbacks of keras_vae.

* `ImageGridCallback`: pictures of the model while it trains (reconstructions of fixed
  held-out images, samples from fixed latents) to TensorBoard and/or PNG files.
* `TrainingTimeBudget`: stops training once its wall time, summed over resumed runs, reaches
  a budget, and logs each epoch's seconds (`epoch_seconds`) so the sum survives a resume.
* `SampleSchedule`: fewer samples of z per example in the first epochs, a cheap start for a
  many-sample bound.
* `BestEpochStopping`: early stopping that keeps the weights validation scored best, the
  averaged ones when the optimizer keeps an EMA.

Example:
    ```python
    from keras_vae.engine.callbacks import ImageGridCallback
    pictures = ImageGridCallback(
        x_test[:8],
        log_dir="runs/mnist/tensorboard/images",
        png_dir="runs/mnist/images",
        every_n_epochs=5,
    )
    tensorboard = keras.callbacks.TensorBoard("runs/mnist/tensorboard")
    vae.fit(x_train, epochs=30, callbacks=[pictures, tensorboard])
    ```
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_vae._internal import figures

RECONSTRUCTIONS_TAG = "reconstructions"
SAMPLES_TAG = "samples"


def model_pictures(model, images, labels, num_samples: int, seed: int) -> dict:
    """The default `pictures` of `ImageGridCallback`: `model.reconstruct(images)` and
    `model.sample(num_samples, seed=seed)`, each where the model has it."""
    found = {}
    if hasattr(model, "reconstruct"):
        found[RECONSTRUCTIONS_TAG] = np.asarray(model.reconstruct(images))
    if hasattr(model, "sample"):
        found[SAMPLES_TAG] = np.asarray(model.sample(num_samples, seed=seed))
    return found


class ImageGridCallback(keras.callbacks.Callback):
    """Renders reconstructions and samples every `every_n_epochs` epochs and at the end.

    Each time it asks `pictures(model, images, labels, num_samples, seed)` for batches of
    images keyed by tag (a model kind's `training_pictures`; by default `model_pictures`) and
    tiles them, one way for every kind:

    * `reconstructions`: the fixed `images` (top row) above their reconstructions (bottom
      row), for a VAE E[x|z] at z = E[z|x];
    * `samples`: for a VAE E[x|z] for `num_samples` latents z ~ p(z) drawn with `seed`, so
      successive pictures show the same latents as training goes on.

    They go to TensorBoard as image summaries (tags `reconstructions` and `samples`, one tiled
    `[H', W', 1]` image each, written by `tf.summary.image` to a
    `tf.summary.create_file_writer(log_dir)`; see `write_image_summary`) and/or to PNG files
    `png_dir/reconstructions_epoch003.png` and `samples_epoch003.png`.

    Epoch numbering: PNG names count completed epochs from 1, as Keras prints them ("Epoch
    3/10" gives `_epoch003.png`); TensorBoard steps are Keras' 0-based epoch indices (that
    epoch is step 2), the steps of `keras.callbacks.TensorBoard`'s `epoch_*` scalars and of
    `history.csv`, so pictures and curves line up. Pictures are rendered after epochs
    `every_n_epochs`, `2 * every_n_epochs`, ... and after the last epoch of `fit`.

    Args:
        images: Held-out examples `[N, *model.image_shape]` to reconstruct (8 to 16 read best;
            rows hold at most 16 images).
        log_dir: Directory for TensorBoard event files, or None. Use a directory of its own
            (e.g. `RUN_DIR/tensorboard/images`) beside `keras.callbacks.TensorBoard`'s.
        png_dir: Directory for PNG files, or None. At least one of the two is required.
        every_n_epochs: Render after every this many epochs (positive int).
        num_samples: Samples per sample grid (positive int).
        seed: Seed of the sample latents.
        padding: Pixels between images in the tiled pictures.
        labels: The labels of `images`, for a model that takes them (a conditional VAE).
        pictures: `(model, images, labels, num_samples, seed) -> {tag: batch of images}`;
            None: `model_pictures`.

    Raises:
        ValueError: For invalid arguments, or (when training starts) `images` whose shape does
            not match the model.
    """

    def __init__(
        self,
        images: np.ndarray,
        log_dir: str | os.PathLike | None = None,
        png_dir: str | os.PathLike | None = None,
        every_n_epochs: int = 1,
        num_samples: int = 64,
        seed: int = 0,
        padding: int = 1,
        labels: np.ndarray | None = None,
        pictures=None,
    ):
        super().__init__()
        if log_dir is None and png_dir is None:
            raise ValueError(
                "ImageGridCallback needs somewhere to write: give log_dir (TensorBoard), "
                "png_dir (PNG files) or both. Received: log_dir=None, png_dir=None"
            )
        for name, value in (("every_n_epochs", every_n_epochs), ("num_samples", num_samples)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int. Received: seed={seed!r}")
        if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(f"padding must be an int >= 0. Received: padding={padding!r}")
        images = np.asarray(images, dtype=np.float32)
        if images.ndim < 2 or len(images) == 0:
            raise ValueError(
                "images must be a non-empty batch [N, *image_shape]. "
                f"Received: shape={images.shape}"
            )
        figures.display_shape(images.shape[1:])  # drawable at all?
        self.images = images
        self.labels = None if labels is None else np.asarray(labels)[: len(images)]
        self.pictures = pictures or model_pictures
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.png_dir = None if png_dir is None else Path(png_dir)
        self.every_n_epochs = int(every_n_epochs)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.padding = int(padding)
        self._writer = None
        self._last_epoch: int | None = None
        self._last_rendered: int | None = None

    # ------------------------------------------------------------------------ rendering
    def render(self) -> dict[str, np.ndarray]:
        """The current pictures as tiled arrays `[H', W']` in [0, 1], keyed by tag."""
        batches = self.pictures(self.model, self.images, self.labels, self.num_samples, self.seed)
        cols, pad = min(len(self.images), 16), self.padding
        grids = {}
        for tag, batch in batches.items():
            if tag == RECONSTRUCTIONS_TAG:  # the inputs above their reconstructions
                grids[tag] = figures.stack_rows(
                    figures.tile_images(self.images, num_cols=cols, padding=pad),
                    figures.tile_images(batch, num_cols=cols, padding=pad),
                    gap=max(2 * pad, 2),
                )
            else:
                grids[tag] = figures.tile_images(batch, padding=pad)
        return grids

    def write(self, epoch: int) -> dict[str, np.ndarray]:
        """Renders and writes the pictures for 0-based `epoch`; returns the tiled arrays."""
        grids = self.render()
        if self.log_dir is not None:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(self.log_dir))
            with self._writer.as_default():
                for tag, grid in grids.items():
                    write_image_summary(tag, grid, step=epoch)
            self._writer.flush()
        if self.png_dir is not None:
            for tag, grid in grids.items():
                figures.write_png(grid, self.png_dir / f"{tag}_epoch{epoch + 1:03d}.png")
        self._last_rendered = epoch
        return grids

    # ------------------------------------------------------------------------ callback hooks
    def set_model(self, model):
        super().set_model(model)
        expected = tuple(getattr(model, "image_shape", self.images.shape[1:]))
        if tuple(self.images.shape[1:]) != expected:
            raise ValueError(
                f"ImageGridCallback images have shape {tuple(self.images.shape[1:])} per "
                f"example but the model expects {expected}."
            )

    def on_train_begin(self, logs=None):
        self._last_epoch = self._last_rendered = None

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        if (epoch + 1) % self.every_n_epochs == 0:
            self.write(epoch)

    def on_train_end(self, logs=None):
        if self._last_epoch is not None and self._last_rendered != self._last_epoch:
            self.write(self._last_epoch)
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class TrainingTimeBudget(keras.callbacks.Callback):
    """Stops `fit` after the epoch at which the training time reaches `seconds`.

    Each epoch's wall time (training and its validation) is added to the epoch's logs as
    `epoch_seconds`, so it lands in the history and in a resumable backup; a resumed run
    passes the seconds already spent (`sum(history["epoch_seconds"])`) as `spent`.

    Args:
        seconds: The budget, in seconds of wall time.
        spent: Seconds already used by earlier (killed and resumed) runs of this training.
    """

    def __init__(self, seconds: float, spent: float = 0.0):
        super().__init__()
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0. Received: seconds={seconds!r}")
        self.seconds, self.spent = float(seconds), float(spent)
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._start
        self.spent += elapsed
        if logs is not None:
            logs["epoch_seconds"] = elapsed
        if self.spent >= self.seconds:
            self.model.stop_training = True


class SampleSchedule(keras.callbacks.Callback):
    """Trains with `start_samples` samples of z per example in epochs 0 .. `start_epochs` - 1
    and with `samples` from then on: L of the ELBO's Monte Carlo estimate, K of the IWAE
    bound L_K = E[log 1/K sum_k p(x, z_k) / q(z_k|x)]. A step's cost grows with the samples
    (K decoder passes per example), so a K = 50 bound can start from the cheap K = 5 one.

    The samples are a static shape of the compiled step: when they change, at the start of
    an epoch, the train and test functions are rebuilt (one more trace). The epoch alone
    decides, so a resumed run trains with the samples of the epoch it resumes at. Validation
    uses the samples of its epoch too.

    Args:
        start_samples: Samples per example of the first `start_epochs` epochs.
        start_epochs: How many epochs use `start_samples`.
        samples: Samples per example afterwards.
    """

    def __init__(self, start_samples: int, start_epochs: int, samples: int):
        super().__init__()
        self.start_samples, self.start_epochs, self.samples = start_samples, start_epochs, samples

    def on_epoch_begin(self, epoch, logs=None):
        wanted = self.start_samples if epoch < self.start_epochs else self.samples
        if self.model.objective.num_samples != wanted:
            self.model.objective.num_samples = wanted
            self.model.make_train_function(force=True)
            self.model.make_test_function(force=True)


class BestEpochStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping(restore_best_weights=True)` that restores the weights
    validation saw.

    With `keras.callbacks.SwapEMAWeights` the held-out metrics are those of the averaged
    weights, but the stock callback copies the model's weights at the end of the epoch, when
    the raw ones are back, and restores them over the final average. This one copies the
    weights when the validation pass ends (`on_test_end`), so it must come before
    `SwapEMAWeights` in the callback list; without an average the two copies are the same.
    At the end of `fit` the model holds the best epoch's evaluated weights, also when the
    patience never ran out (patience >= epochs: keep the best epoch).

    Args:
        monitor: The held-out metric, e.g. `val_elbo`.
        patience: Epochs without improvement before training stops.
        mode: `max` for a bound, `min` for a loss.
    """

    def __init__(self, monitor: str, patience: int, mode: str):
        super().__init__(monitor=monitor, patience=patience, mode=mode, restore_best_weights=True)
        self._evaluated = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._evaluated = None

    def on_test_end(self, logs=None):
        self._evaluated = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.best_epoch == epoch and self._evaluated is not None:
            self.best_weights = self._evaluated
        self._evaluated = None


def write_image_summary(tag: str, image: np.ndarray, step: int) -> None:
    """Writes one image to the default summary writer with `tf.summary.image`.

    The image goes in as the 8-bit grey levels of `figures.to_uint8`, so the PNG stored in
    the event file has exactly the pixels of the PNG files `write_png` writes.

    Args:
        tag: Summary tag.
        image: `[H, W]` grey or `[H, W, C]` values in [0, 1] (clipped).
        step: Summary step.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., np.newaxis]
    tf.summary.image(tag, figures.to_uint8(image)[np.newaxis], step=step, max_outputs=1)


__all__ = [
    "ImageGridCallback",
    "SampleSchedule",
    "TrainingTimeBudget",
    "model_pictures",
    "write_image_summary",
]
