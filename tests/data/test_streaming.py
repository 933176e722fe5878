"""Streamed input (keras_vae.data.ImageStream), memory-mapped array files, held-out parts of
array files, and a quiet start of the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers import REPO, TFDS_DIR, RowCountingArray

from keras_vae.data import pipeline as data
from keras_vae.runs.config import ConfigError, TrainConfig
from keras_vae.workflows import train as training

needs_binarized_mnist = pytest.mark.skipif(
    not (TFDS_DIR / "binarized_mnist").is_dir(), reason=f"no prepared binarized_mnist in {TFDS_DIR}"
)


def _epoch(ds: tf.data.Dataset) -> np.ndarray:
    return np.concatenate(list(ds.as_numpy_iterator()))


def _positions(rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Index in `reference` of each row of `rows` (rows are unique random images)."""
    keys = {r.tobytes(): i for i, r in enumerate(reference)}
    return np.array([keys[r.tobytes()] for r in rows])


# --- tfds streams ---------------------------------------------------------------------------


def test_mocked_tfds_stream_equals_the_loaded_split_and_shuffles_reproducibly() -> None:
    with tfds.testing.mock_data(num_examples=300):
        whole = data.load_images("mnist", "train")
        stream = data.open_stream("mnist", "train", shuffle_buffer=1000)
        assert len(stream) == 300 and stream.shape == (300, 28, 28, 1) and stream.cached
        np.testing.assert_array_equal(stream.head, whole)
        in_order = _epoch(stream.dataset(batch_size=64, shuffle=False))
        assert in_order.dtype == np.float32
        np.testing.assert_array_equal(in_order, whole)

        ds = stream.dataset(batch_size=64, seed=7, likelihood="bernoulli")
        first, second = _epoch(ds), _epoch(ds)
        again = stream.dataset(batch_size=64, seed=7, likelihood="bernoulli")
        order = _positions(first, whole)
        assert sorted(order) == list(range(300))  # a permutation of the split
        assert not np.array_equal(order, _positions(second, whole))  # reshuffled each epoch
        np.testing.assert_array_equal(_epoch(again), first)  # the seed reproduces the epochs
        np.testing.assert_array_equal(_epoch(again), second)


def test_shuffle_buffer_moves_an_example_at_most_buffer_places_ahead() -> None:
    buffer = 40
    with tfds.testing.mock_data(num_examples=400):
        whole = data.load_images("mnist", "train")
        stream = data.open_stream("mnist", "train", shuffle_buffer=buffer)
        assert not stream.cached
        order = _positions(_epoch(stream.dataset(batch_size=50, seed=1)), whole)
    assert sorted(order) == list(range(400))
    # output i is drawn from the buffer of inputs [0, i + buffer): a weaker shuffle
    assert np.all(order < np.arange(400) + buffer)
    assert np.abs(order - np.arange(400)).mean() > buffer / 4  # but it does shuffle


@needs_binarized_mnist
def test_tfds_slices_and_limit_of_the_real_data() -> None:
    stream = data.open_stream("binarized_mnist", "validation[:10%]", data_dir=str(TFDS_DIR))
    reference = data.load_images("binarized_mnist", "validation", data_dir=str(TFDS_DIR))
    assert len(stream) == 1000
    np.testing.assert_array_equal(_epoch(stream.dataset(batch_size=300, shuffle=False)),
                                  reference[:1000])  # fmt: skip
    limited = data.open_stream("binarized_mnist", "test", data_dir=str(TFDS_DIR), limit=250)
    assert len(limited) == 250 and limited.head.shape == (250, 28, 28, 1)
    binary = _epoch(limited.dataset(batch_size=100, seed=0, dynamic_binarization=True))
    assert binary.shape == (250, 28, 28, 1) and set(np.unique(binary)) <= {0.0, 1.0}


# --- checks in the pipeline -------------------------------------------------------------------


def test_synthetic_dsprites_is_generated_offline_and_streamed_from_all_its_files(
    tmp_path: Path, monkeypatch
) -> None:
    from keras_vae.data.builders import synthetic_dsprites as sprites
    from keras_vae.runs.splits import resolve_data

    def no_network(*args, **kwargs):
        raise AssertionError("generating synthetic_dsprites must not touch the network")

    monkeypatch.setattr(data.socket, "create_connection", no_network)
    # a small shuffle buffer: the 2,304 sprites are streamed, not cached
    stream = data.open_stream("synthetic_dsprites/small", data_dir=str(tmp_path),
                              shuffle_buffer=500)  # fmt: skip
    assert stream.shape == (2304, 32, 32, 1) and not stream.cached
    files = sorted((tmp_path / "synthetic_dsprites" / "small").glob("*/*.tfrecord*"))
    assert len(files) == data.SORTED_SHARDS  # prepared in the data dir given, in parts
    grid = sprites.render(sprites.factor_grid(sprites.SMALL), sprites.SMALL)[..., None]
    got = _epoch(stream.dataset(batch_size=256, shuffle=False))
    # each sprite once, the files read in turn: the first 128 are each file's first example
    # (dSprites' order: part k starts at example 18 k), not the first 128 of the grid
    assert got.shape == grid.shape and set(np.unique(got)) == {0.0, 1.0}
    np.testing.assert_array_equal(got[:128], grid[::18].astype("float32"))
    assert sorted(r.tobytes() for r in got.astype("uint8")) == sorted(
        r.tobytes() for r in grid.astype("uint8")
    )
    # an evaluation's one pass (`batches`) reads the files in turn: the grid's order, which
    # `load_images` reads; with a limit, the first examples of that order
    in_order = np.concatenate([x for x, _ in stream.batches(1000)])
    np.testing.assert_array_equal(in_order, grid.astype("float32"))
    first = data.open_stream("synthetic_dsprites/small", data_dir=str(tmp_path), limit=300,
                             shuffle_buffer=100)  # fmt: skip
    np.testing.assert_array_equal(np.concatenate([x for x, _ in first.batches(128)]),
                                  grid[:300].astype("float32"))  # fmt: skip
    # prepared by tfds itself (one file): streamed with a warning that says how to fix it
    other = tmp_path / "by_tfds"
    tfds.builder("synthetic_dsprites/small", data_dir=str(other)).download_and_prepare()
    with pytest.warns(UserWarning, match="stored sorted in 1 file.* prepare it again in 128"):
        data.open_stream("synthetic_dsprites/small", data_dir=str(other), shuffle_buffer=500)
    # one split: a run evaluates on it (as disentanglement_lib scores the whole grid)
    config = TrainConfig(dataset="synthetic_dsprites/small", data_dir=str(tmp_path))
    assert resolve_data(config).eval_split == "train"
    assert data.default_likelihood("synthetic_dsprites") == "bernoulli"


def test_a_bad_batch_beyond_the_first_examples_stops_the_pipeline_in_one_line() -> None:
    images = np.random.default_rng(0).random((data.HEAD_SIZE + 500, 3, 3)).astype(np.float32)
    images[data.HEAD_SIZE + 200, 1, 1] = np.nan
    stream = data.ArrayStream(images, "toy", checked=False)
    assert np.isfinite(stream.head).all()  # the up-front look cannot see it
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        _epoch(stream.dataset(batch_size=100, shuffle=False, likelihood="bernoulli"))
    message = data.data_check_message(err.value)
    assert message.startswith("a batch of toy has 1 NaN value(s)"), message
    assert "repair those images" in message and "\n" not in message
    images[data.HEAD_SIZE + 200, 1, 1] = 3.0  # out of [0, 1]: refused by binarization
    grey = data.ArrayStream(images, "grey", checked=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        _epoch(grey.dataset(batch_size=100, dynamic_binarization=True, likelihood="gaussian"))
    assert "Bernoulli likelihood needs [0, 1]" in data.data_check_message(err.value)
    assert data.data_check_message(ValueError("something else")) is None


def test_batches_read_a_split_once_in_order_a_batch_at_a_time() -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (data.HEAD_SIZE + 250, 3, 2), dtype=np.uint8)
    y = rng.integers(0, 3, len(x))
    reads: list[int] = []
    stream = data.ArrayStream(RowCountingArray(x, reads), "toy", labels=y)
    del reads[:]  # (the first examples, read when it opened)
    got = list(data.batches(stream, 100))
    # the whole split in its order, as the array would be sliced, and never more rows read at
    # once than a batch
    expected = list(data.batches(x[..., None] / np.float32(255), 100, labels=y))
    assert [len(b) for b, _ in got] == [100] * 12 + [50] and max(reads) == 100
    for (images, labels), (want, want_labels) in zip(got, expected, strict=True):
        np.testing.assert_allclose(images, want, rtol=1e-6)
        np.testing.assert_array_equal(labels, want_labels)
    with pytest.raises(ValueError, match="A stream's labels come with its images"):
        next(data.batches(stream, 100, labels=y))
    with pytest.raises(ValueError, match="Give one label per image: 3 labels, 1250 images"):
        next(data.batches(x, 100, labels=y[:3]))
    with tfds.testing.mock_data(num_examples=120):  # a tfds split with its labels
        whole, classes = data.load_labeled_images("mnist", "test")
        labeled = data.open_stream("mnist", "test", labels=True)
        pairs = list(data.batches(labeled, 50))
    np.testing.assert_array_equal(np.concatenate([b for b, _ in pairs]), whole)
    np.testing.assert_array_equal(np.concatenate([c for _, c in pairs]), classes)


def test_take_rows_keeps_only_the_wanted_rows_of_a_stream_in_their_order() -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (data.HEAD_SIZE + 250, 3, 2), dtype=np.uint8)
    y = rng.integers(0, 3, len(x))
    reads: list[int] = []
    stream = data.ArrayStream(RowCountingArray(x, reads), "toy", labels=y)
    del reads[:]
    wanted = np.array([317, 3, 317, 0, 150])  # any order, a repeat
    rows, labels = data.take_rows(stream, wanted, batch_size=100)
    # the same rows as indexing the array (scaled to [0, 1] as the stream gives them)
    np.testing.assert_allclose(rows, x[wanted][..., None] / np.float32(255), rtol=1e-6)
    np.testing.assert_array_equal(labels, y[wanted])
    # a batch at a time, and the stream is left soon after row 317 (tf.data reads ahead)
    assert max(reads) == 100 and sum(reads) < len(x)
    array_rows, array_labels = data.take_rows(x, wanted, y)
    np.testing.assert_array_equal(array_rows, x[wanted].astype(np.float32))
    np.testing.assert_array_equal(array_labels, y[wanted])
    with pytest.raises(ValueError, match=r"Row indices must lie in \[0, 1250\)"):
        data.take_rows(stream, [1250])


def test_pick_rows_draws_the_same_rows_from_an_array_and_from_its_stream() -> None:
    rng = np.random.default_rng(6)
    x = rng.random((data.HEAD_SIZE + 130, 3, 2, 1)).astype(np.float32)
    y = rng.integers(0, 3, len(x))
    # the reference: numpy's draw without replacement from the same seed, sorted
    expected = np.sort(np.random.default_rng(11).choice(len(x), size=9, replace=False))
    from_stream, stream_labels = data.pick_rows(data.ArrayStream(x, "toy", labels=y), 9, seed=11)
    from_array, array_labels = data.pick_rows(x, 9, seed=11, labels=y)
    np.testing.assert_array_equal(from_stream, x[expected])
    np.testing.assert_array_equal(from_array, x[expected])
    np.testing.assert_array_equal(stream_labels, y[expected])
    np.testing.assert_array_equal(array_labels, y[expected])
    few, _ = data.pick_rows(x[:4], 9, seed=0)  # more wanted than there are: all of them
    np.testing.assert_array_equal(few, x[:4])


def test_a_bad_batch_of_an_evaluation_pass_is_a_one_line_error() -> None:
    images = np.random.default_rng(0).random((data.HEAD_SIZE + 300, 4)).astype(np.float32)
    images[data.HEAD_SIZE + 120, 2] = np.inf
    stream = data.ArrayStream(images, "toy", checked=False)
    assert [len(b) for b, _ in stream.batches(500)] == [500, 500, 300]  # nothing to check for
    stream.likelihood = "gaussian"  # as `open_split` records it
    with pytest.raises(data.DataCheckError, match=r"^a batch of toy has 1 Inf value\(s\), the "
                       r"first at index \(120, 2\)"):  # fmt: skip
        list(stream.batches(500))


# --- array files: memory maps, held-out part, value ranges ----------------------------------


def test_npy_and_uncompressed_npz_are_memory_mapped(tmp_path: Path) -> None:
    x = np.random.default_rng(1).integers(0, 256, (50, 6, 5), dtype=np.uint8)
    labels = np.arange(50)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", x=x, y=labels)
    np.savez_compressed(tmp_path / "c.npz", x=x)
    for name in ("a.npy", "b.npz"):
        stored, _ = data.open_array_file(tmp_path / name)
        assert isinstance(stored, np.memmap), name
        np.testing.assert_array_equal(stored, x)
    fortran = np.asfortranarray(x)
    np.savez(tmp_path / "f.npz", x=fortran)
    np.testing.assert_array_equal(data.open_array_file(tmp_path / "f.npz")[0], x)
    compressed, _ = data.open_array_file(tmp_path / "c.npz")
    assert not isinstance(compressed, np.memmap)  # a compressed member cannot be mapped
    np.testing.assert_array_equal(compressed, x)
    np.testing.assert_array_equal(data.open_array_file(tmp_path / "b.npz")[1], labels)


def test_large_array_file_is_streamed_from_the_map_by_permuted_indices(tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((1000, 4, 4, 2)).astype(np.float32)
    np.save(tmp_path / "big.npy", x)
    small = data.open_array(tmp_path / "big.npy", "train", validation_split=0.1)
    assert isinstance(small, np.ndarray) and small.shape == (900, 4, 4, 2)
    stream = data.open_array(
        tmp_path / "big.npy", "train", validation_split=0.1, max_in_memory_bytes=1000
    )
    assert isinstance(stream, data.ArrayStream) and isinstance(stream.array, np.memmap)
    assert stream.shape == (900, 4, 4, 2)
    np.testing.assert_array_equal(_epoch(stream.dataset(batch_size=128, shuffle=False)), x[:900])
    order = _positions(_epoch(stream.dataset(batch_size=128, seed=3)), x)
    assert sorted(order) == list(range(900))  # a full permutation of the training part
    held_out = data.open_array(tmp_path / "big.npy", "validation", validation_split=0.1,
                               max_in_memory_bytes=1000)  # fmt: skip
    np.testing.assert_array_equal(_epoch(held_out.dataset(batch_size=64, shuffle=False)), x[900:])
    with pytest.raises(data.DataValidationError, match="leaves 0 for training"):
        data.split_array(x[:1], "train", 0.5, name="one.npy")


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (np.array([[0, 16]], np.uint8), "uint8 with maximum 16"),
        (np.array([[0, 1]], np.uint8), "e.g. 0/1 binary images"),
        (np.array([[0, 200]], np.int64), "int64 with values in [0, 200], used as they are"),
        (np.array([[0.0, 255.0]], np.float32), "only uint8 is divided by 255"),
        (np.array([[0, 255]], np.uint8), None),
        (np.array([[0.0, 1.0]], np.float32), None),
        (np.array([[-3.0, 7.5]], np.float64), None),
    ],
)
def test_range_warning(stored: np.ndarray, expected: str | None) -> None:
    message = data.range_warning(stored, name="d.npz")
    if expected is None:
        assert message is None
    else:
        assert expected in message and message.startswith("d.npz is ")


def test_array_file_metrics_use_a_held_out_part_or_the_eval_file(tmp_path: Path) -> None:
    x = np.random.default_rng(3).random((100, 5, 5)).astype(np.float32)
    other = np.random.default_rng(4).random((30, 5, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "other.npy", other)
    config, train, held_out = training.load_training_data(
        TrainConfig(dataset=str(tmp_path / "x.npy"))
    )
    assert (config.eval_split, config.validation_split) == ("validation", 0.1)
    np.testing.assert_array_equal(train[..., 0], x[:90])  # Keras' rule: the last 10% held out
    np.testing.assert_array_equal(held_out[..., 0], x[90:])
    config, train, test = training.load_training_data(
        TrainConfig(dataset=str(tmp_path / "x.npy"), eval_data=str(tmp_path / "other.npy"))
    )
    assert (config.eval_split, config.validation_split) == ("test", None)
    assert len(train) == 100
    np.testing.assert_array_equal(test[..., 0], other)
    config, train, _ = training.load_training_data(
        TrainConfig(dataset=str(tmp_path / "x.npy"), eval_split="train")
    )
    assert config.validation_split is None and len(train) == 100  # asked for: no hold-out
    validation = training.load_split(config.replace(validation_split=0.2), "validation")
    np.testing.assert_array_equal(validation[..., 0], x[80:])
    with pytest.raises(data.DataValidationError, match="has no split 'test'"):
        training.load_split(TrainConfig(dataset=str(tmp_path / "x.npy")), "test")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dataset": "a.npz", "validation_split": 1.0}, "fraction in (0, 1)"),
        ({"validation_split": 0.1}, "applies to array-file data sets"),
        ({"eval_data": "b.npz"}, "dataset='binarized_mnist', which has its own splits"),
        ({"dataset": "a.npz", "eval_data": "b.csv"}, "eval_data must be a .npz or .npy"),
        ({"shuffle_buffer": 0}, "shuffle_buffer must be a positive int"),
    ],
)
def test_data_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig(**options)
    assert message in str(err.value)


# --- training on a stream ----------------------------------------------------------------------


def test_train_streams_a_tfds_data_set_with_a_vamp_prior() -> None:
    lines = []
    config = TrainConfig(
        dataset="mnist", epochs=1, batch_size=50, latent_dim=2, hidden_units=[8],
        prior="vamp", prior_components=4, jit_compile=False, image_every=0, seed=1,
        dynamic_binarization=True,
    )  # fmt: skip
    with tfds.testing.mock_data(num_examples=120):
        head = data.load_images("mnist", "train")
        result = training.train(config, progress=lines.append, verbose=0)
    assert lines[0].startswith("keras-vae: training a VAE (mlp 8, latent 2, diagonal posterior")
    assert "on mnist train (120 images 28x28x1, streamed), evaluating on test (120)" in lines[0]
    assert result["examples_seen"] == 120 and np.isfinite(result["train_elbo"])
    assert np.isfinite(result["test_elbo"])
    # pseudo-inputs start from training images (the stream's first examples), then one epoch
    pseudo = np.array(result["model"].prior.pseudo_inputs)
    distance = np.abs(pseudo[:, None] - head[None]).mean(axis=(2, 3, 4)).min(axis=1)
    assert np.all(distance < 0.05)


# --- memory: streaming versus loading a large tfds split --------------------------------------

# few, large images: a split as large as 200,000 MNIST digits, prepared in seconds
NUM_LARGE, LARGE_SHAPE = 1_600, (160, 160, 3)  # 123 MB as stored, 492 MB as float32


class SyntheticImages(tfds.core.GeneratorBasedBuilder):
    """A tfds builder of random uint8 colour images, to measure memory on a large split."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        image = tfds.features.Tensor(
            shape=LARGE_SHAPE, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
        )
        features = tfds.features.FeaturesDict({"image": image})
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(NUM_LARGE)}

    def _generate_examples(self, count: int):
        rng = np.random.default_rng(0)
        for start in range(0, count, 100):
            for i, image in enumerate(rng.integers(0, 256, (100, *LARGE_SHAPE), np.uint8)):
                yield start + i, {"image": image}


SYNTHETIC_SPEC = data.DatasetSpec(
    name="synthetic_images", image_shape=LARGE_SHAPE, likelihood="gaussian", splits=("train",),
    scale=1 / 255, raw_files=(), source_url="",
)  # fmt: skip

_MEASURE = """
import json, sys
sys.path[:0] = [{tests!r}, {helpers!r}]
from keras_vae.data import pipeline as data
from test_streaming import SYNTHETIC_SPEC

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):  # the peak resident set size
            return int(line.split()[1]) / 1024  # MiB

data.DATASET_SPECS[SYNTHETIC_SPEC.name] = SYNTHETIC_SPEC
options = {{"data_dir": {data_dir!r}, "shuffle_buffer": 100}}
warm = data.open_stream("synthetic_images", "train", limit=200, **options)
sum(len(b) for b in warm.dataset(batch_size=20, seed=0, likelihood="gaussian"))
measured = {{"base": peak()}}
stream = data.open_stream("synthetic_images", "train", **options)
measured["streamed"] = sum(
    len(b) for b in stream.dataset(batch_size=20, seed=0, likelihood="gaussian")
)
measured["after_stream"] = peak()
measured["loaded"] = len(data.load_images("synthetic_images", "train", data_dir={data_dir!r}))
measured["after_load"] = peak()
print(json.dumps(measured))
"""


@pytest.mark.slow
def test_streaming_memory_stays_bounded_where_loading_grows_with_the_split(tmp_path) -> None:
    SyntheticImages(data_dir=str(tmp_path)).download_and_prepare()
    script = _MEASURE.format(
        tests=str(Path(__file__).parent), helpers=str(REPO / "tests"), data_dir=str(tmp_path)
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["streamed"] == measured["loaded"] == NUM_LARGE
    float32_mib = NUM_LARGE * np.prod(LARGE_SHAPE) * 4 / 2**20  # 469 MiB
    # the peak (VmHWM) while streaming one shuffled epoch: a 100-image buffer (7 MiB as
    # stored) and a few 20-image batches, not the split
    assert measured["after_stream"] - measured["base"] < 0.25 * float32_mib, measured
    # loading the split whole raises the peak by at least its float32 size
    assert measured["after_load"] - measured["after_stream"] > float32_mib, measured


# --- memory: a large array file is read a bounded number of rows at a time ---------------------


def test_training_on_a_large_array_file_reads_a_bounded_number_of_rows_at_a_time(
    tmp_path: Path, monkeypatch
) -> None:
    # 4,000 images, half held out; a file too large for memory, each half small enough
    count, shape = 4_000, (4, 4)
    x = np.random.default_rng(6).random((count, *shape)).astype(np.float32)
    np.save(tmp_path / "large.npy", x)
    file_bytes = x.nbytes  # 256,000
    monkeypatch.setattr(data, "IN_MEMORY_BYTES", file_bytes - 1)
    monkeypatch.setattr(data, "CHECK_BYTES", 250 * 16 * 4)  # the checks: 250 images at a time
    reads: list[int] = []
    opened = data.open_array_file

    def counted(path):
        stored, labels = opened(path)
        return RowCountingArray(stored, reads), labels

    monkeypatch.setattr(data, "open_array_file", counted)
    config = TrainConfig(
        dataset=str(tmp_path / "large.npy"), validation_split=0.5, epochs=1, steps_per_epoch=3,
        batch_size=50, latent_dim=2, hidden_units=[8], jit_compile=False, image_every=0, seed=0,
    )  # fmt: skip
    lines = []
    result = training.train(config, progress=lines.append, verbose=0)
    assert "large.npy train (2,000 images 4x4x1, streamed), evaluating on validation (2,000)" in (
        lines[0])  # fmt: skip
    assert np.isfinite(result["validation_elbo"])
    # every image was checked and evaluated, never more rows at once than the first examples
    # (HEAD_SIZE, also the pictures' images), a batch of the final evaluation (1,000) or a
    # chunk of the checks (250)
    assert sum(reads) > 2 * count and max(reads) <= 1_000, sorted(reads)[-5:]


def test_shuffling_a_large_array_stream_permutes_indices_not_a_buffer_of_them() -> None:
    # 3,000,000 one-pixel images: 3 MB, but a tf.data shuffle buffer of their indices (one
    # tensor each, ~170 bytes) would hold 500 MB; a permutation is 24 MB
    stream = data.ArrayStream(np.zeros((3_000_000, 1), np.uint8), "pixels", checked=True)
    before = _rss_anon_mib()
    batches = iter(stream.dataset(batch_size=100, seed=0, repeat=True))
    first = next(batches)
    assert first.shape == (100, 1)
    assert _rss_anon_mib() - before < 150


def test_an_in_memory_array_is_held_once_more_by_its_pipeline_not_three_times() -> None:
    # 256 MiB of images: the tensor of the pipeline is one more copy; a shuffle buffer of
    # images and tf.data's graph rewrite (which serializes the array as a constant) were two more
    x = np.ones((85_600, 28, 28, 1), np.float32)
    mib, before = x.nbytes / 2**20, _rss_anon_mib()
    batches = iter(data.make_dataset(x, batch_size=100, seed=0))
    assert next(batches).shape == (100, 28, 28, 1)
    rise = _rss_anon_mib() - before
    assert rise < 1.5 * mib, f"{rise:.0f} MiB more for {mib:.0f} MiB of images"


def _rss_anon_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no RssAnon in /proc/self/status (Linux only)")


# --- a quiet, clear start ------------------------------------------------------------------------


def test_cli_starts_quietly_and_first_says_what_trains_on_what(tmp_path: Path) -> None:
    x = (np.random.default_rng(5).random((80, 4, 4)) > 0.5).astype(np.uint8)  # 0/1 as uint8
    np.savez(tmp_path / "masks.npz", x=x)
    argv = [
        "train", "--dataset", str(tmp_path / "masks.npz"), "--latent-dim", "2",
        "--hidden-units", "8", "--epochs", "1", "--batch-size", "16", "--no-xla",
        "--image-every", "0", "--output", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {
        k: v for k, v in os.environ.items() if k not in ("KERAS_VAE_DEBUG", "TF_CPP_MIN_LOG_LEVEL")
    }
    done = subprocess.run(
        [sys.executable, "-m", "keras_vae.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        env=env,
    )  # fmt: skip  (one stream: the order the user sees)
    assert done.returncode == 0, done.stdout[-3000:]
    lines = done.stdout.splitlines()
    logged = [line for line in lines if line[:1] in "IWEF" and line[1:5] == "0000"]
    assert not logged and "absl::InitializeLog" not in done.stdout, logged or done.stdout
    assert lines[0].startswith(
        "keras-vae: training a VAE (mlp 8, latent 2, diagonal posterior, standard prior, "
        "bernoulli likelihood, elbo) on "
    ), lines[:3]
    assert "masks.npz train (72 images 4x4x1, in memory), evaluating on validation (8)" in lines[0]
    # the data warning comes second, once, in one line
    assert lines[1].startswith("keras-vae train: warning: masks.npz is uint8 with maximum 1")
    assert sum("warning" in line for line in lines) == 1
    assert any(line.startswith("train ELBO") and "validation ELBO" in line for line in lines)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["eval_split"] == "validation" and "validation_elbo" in metrics
