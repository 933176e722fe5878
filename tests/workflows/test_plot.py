"""keras_vae.workflows.plot: `--kind` offers every registered kind's figures, and says which
kind draws which."""

import argparse

from keras_vae import registry
from keras_vae.workflows import plot


def test_figure_choices_are_the_kinds_figures_in_order():
    choices = plot._figure_choices()
    for name in registry.names("model"):
        assert set(registry.get("model", name).figure_kinds) <= set(choices)
    assert len(choices) == len(set(choices))
    parser = argparse.ArgumentParser()
    plot.add_cli_arguments(parser)
    text = parser.format_help()
    assert "vqvae: reconstructions, codebook" in " ".join(text.split())


def test_a_figure_of_picked_images_reads_a_streamed_split(labelled_run, tmp_path, monkeypatch):
    """A split too large for memory stays a stream: the reconstructions are the rows
    `data.pick_rows` draws from it, the same as from the array."""
    import numpy as np

    from keras_vae.cli import commands as cli
    from keras_vae.data import pipeline as data

    monkeypatch.setattr(data, "IN_MEMORY_BYTES", 0)  # every array file is streamed
    picked = []
    original = data.take_rows

    def recording(images, indices, labels=None, batch_size=1000):
        rows, found = original(images, indices, labels, batch_size)
        picked.append((type(images), rows))
        return rows, found

    monkeypatch.setattr(data, "take_rows", recording)
    argv = ["plot", str(labelled_run / "run"), "--kind", "reconstructions", "--num", "5",
            "--seed", "4", "--output", str(tmp_path / "r.png")]  # fmt: skip
    assert cli.main(argv) == 0 and (tmp_path / "r.png").stat().st_size > 0
    [(kind, rows)] = picked
    x = np.load(labelled_run / "toy.npz")["x"]
    expected = np.sort(np.random.default_rng(4).choice(len(x), size=5, replace=False))
    assert issubclass(kind, data.ImageStream)
    np.testing.assert_array_equal(rows, x[expected])
