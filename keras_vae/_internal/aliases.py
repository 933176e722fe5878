"""Old module paths of the flat layout (release 0.2.0) as aliases of the modules that moved.

`import keras_vae.model` or `from keras_vae.vqvae import VQVAE` keep working: a meta path
finder answers an old name with the module that now holds its code, so the old name and the
new one are the same module object (monkeypatching either patches both).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: old module -> the module that holds its code now
MOVED = {
    "keras_vae._checks": "keras_vae._internal.checks",
    "keras_vae._quiet": "keras_vae._internal.quiet",
    "keras_vae.atomic": "keras_vae._internal.atomic",
    "keras_vae.lock": "keras_vae._internal.lock",
    **{f"keras_vae.{name}": f"keras_vae.parts.{name}" for name in (
        "likelihoods", "posteriors", "priors", "objectives", "networks", "quantizers",
        "distributions")},
    "keras_vae.datasets": "keras_vae.data.builders",
    "keras_vae.datasets.frey_face": "keras_vae.data.builders.frey_face",
    "keras_vae.datasets.labeled_binarized_mnist": "keras_vae.data.builders.labeled_binarized_mnist",
    **{f"keras_vae.{name}": f"keras_vae.engine.{name}" for name in (
        "trainer", "distribute", "cluster", "callbacks")},
    "keras_vae.config": "keras_vae.runs.config",
    "keras_vae.export_tflite": "keras_vae.serving.tflite",
    "keras_vae.export_checks": "keras_vae.models.vae.checks",
    "keras_vae.export_signatures": "keras_vae.models.vae.signatures",
    "keras_vae.model": "keras_vae.models.vae.presets",  # VAE and mlp_vae
    "keras_vae.conditional": "keras_vae.models.vae.conditional",
    "keras_vae.evaluation": "keras_vae.models.vae.evaluation",
    "keras_vae.plotting": "keras_vae.workflows.plot",
    "keras_vae.export": "keras_vae.workflows.export",
    "keras_vae.vqvae": "keras_vae.models.vqvae.model",
    "keras_vae.code_prior": "keras_vae.models.vqvae.code_prior",
    "keras_vae.export_vqvae": "keras_vae.models.vqvae.export",
    "keras_vae.vq_training": "keras_vae.models.vqvae.kind",
    "keras_vae.training": "keras_vae.workflows.train",
}  # fmt: skip


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass  # the target module ran when it was imported


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        module = importlib.import_module(MOVED[fullname])
        return importlib.util.spec_from_loader(
            fullname, _AliasLoader(MOVED[fullname]), origin=module.__spec__.origin
        )


def install() -> None:
    """Puts the finder on `sys.meta_path` (once)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
