"""keras_vae._internal.aliases: every module path of the flat layout (release 0.2.0) imports
the module that holds its code now, as the same module object."""

import importlib
import sys

import pytest

import keras_vae
from keras_vae._internal import aliases


@pytest.mark.parametrize(("old", "new"), sorted(aliases.MOVED.items()))
def test_an_old_module_path_is_the_new_module(old, new):
    moved = importlib.import_module(old)
    assert moved is importlib.import_module(new)
    assert sys.modules[old] is sys.modules[new]
    assert moved.__name__ == new  # the module keeps its own name and file


def test_old_imports_of_names_and_a_patch_through_the_old_path():
    from keras_vae.model import VAE, mlp_vae
    from keras_vae.vqvae import VQVAE

    assert VAE is keras_vae.VAE and mlp_vae is keras_vae.mlp_vae
    assert VQVAE.__module__ == "keras_vae.models.vqvae.model"
    old = importlib.import_module("keras_vae.training")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(old, "EVAL_BATCH_SIZE", 7)
        assert importlib.import_module("keras_vae.workflows.train").EVAL_BATCH_SIZE == 7
    assert old.EVAL_BATCH_SIZE == 1000


def test_other_names_are_not_answered_and_the_finder_is_installed_once():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("keras_vae.no_such_module")
    aliases.install()
    aliases.install()
    finders = [f for f in sys.meta_path if isinstance(f, aliases._AliasFinder)]
    assert len(finders) == 1
    assert all(old.startswith("keras_vae.") and new.startswith("keras_vae.")
               for old, new in aliases.MOVED.items())  # fmt: skip
