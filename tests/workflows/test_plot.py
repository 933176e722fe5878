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
