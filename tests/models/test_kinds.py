"""keras_vae.models.kinds: importing keras_vae registers every built-in model kind, in the
order `keras-vae train --model` offers them, each a full ModelKind whose options are
TrainConfig fields."""

import dataclasses
import types

import pytest

from keras_vae import registry
from keras_vae.cli import commands as cli
from keras_vae.models import kinds
from keras_vae.models.kind import ModelKind, kind_of
from keras_vae.runs.config import TrainConfig

BUILT_IN = ("vae", "hvae", "vqvae", "vqvae-prior")


def test_the_built_in_kinds_are_registered_in_the_documented_order():
    assert registry.names("model")[: len(BUILT_IN)] == BUILT_IN
    modules = {kinds.vae.__name__, kinds.hvae.__name__, kinds.vqvae.__name__}
    for name in BUILT_IN:
        kind = registry.get("model", name)
        assert issubclass(kind, ModelKind) and kind.registered_name == name
        assert kind.__module__ in modules
        assert type(kind_of(types.SimpleNamespace(model=name))) is kind


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_kind_declares_its_options_and_figures(name):
    kind = registry.get("model", name)
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    assert set(kind.options) <= fields, set(kind.options) - fields
    evaluate_options = {
        "importance_samples",
        "seed",
        "disentanglement",
        "disentanglement_samples",
        "precision",
    }  # fmt: skip  (keras-vae evaluate's)
    assert set(kind.evaluate_options) <= evaluate_options
    assert kind.figure_kinds and len(set(kind.figure_kinds)) == len(kind.figure_kinds)


def test_the_cli_offers_the_kinds_in_that_order(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the model kind: " + ", ".join(BUILT_IN) in text
    with pytest.raises(ValueError, match=r"model must be one of \['vae', 'hvae', 'vqvae'"):
        kind_of(types.SimpleNamespace(model="gan"))
