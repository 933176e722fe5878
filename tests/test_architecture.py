"""The package's shape: import layers (import-linter's contracts in pyproject.toml) and no
"which kind is this?" branch in the workflows, the callbacks or the CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO as ROOT

PACKAGE = ROOT / "keras_vae"

#: Code that decides by the model's kind instead of asking the kind (keras_vae.models.kind).
KIND_BRANCHES = re.compile(
    r"config\.model\s*[!=]=|\.conditional\b|isinstance\([^)]*"
    r"(VAE|VQVAE|CodePrior|ConditionalVAE)\b|model_kind\s*[!=]="
)
KIND_AGNOSTIC = [
    *sorted((PACKAGE / "workflows").glob("*.py")),
    *sorted((PACKAGE / "cli").glob("*.py")),
    PACKAGE / "engine" / "callbacks.py",
    PACKAGE / "models" / "kind.py",
]


def test_import_layers_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("path", KIND_AGNOSTIC, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_branch_on_the_model_kind(path):
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if KIND_BRANCHES.search(line) and not line.lstrip().startswith("#")
    ]
    assert not found, "\n".join(found)


def test_the_branch_check_can_fail():
    assert KIND_BRANCHES.search('    if config.model != "vae":')
    assert KIND_BRANCHES.search("    if isinstance(model, CodePrior):")
    assert KIND_BRANCHES.search("    labels = config.conditional and stream")


def test_python_presets_and_the_cli_share_their_defaults():
    import keras_vae
    from keras_vae.models.vqvae.model import vqvae
    from keras_vae.runs.config import TrainConfig

    config = TrainConfig(prior="vamp").resolved()
    vae = keras_vae.mlp_vae((28, 28, 1), prior="vamp")
    assert vae.prior.num_components == config.prior_components == 500
    assert vae.latent_dim == config.latent_dim
    vq = vqvae((28, 28, 1))
    assert (vq.codebook_size, vq.code_dim) == (config.codebook_size, config.code_dim)
    assert vq.encoder.activation == config.activation == "tanh"
