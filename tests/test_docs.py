"""The documentation site builds with `mkdocs build --strict`: no warning, no broken link or
anchor, every API object found at its public import path, and the CLI reference generated from
the current parser (docs/gen_pages.py)."""

import os
import shutil
import subprocess
import sys

import pytest
from helpers import REPO as ROOT


def _mkdocs_missing() -> str | None:
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_gen_files"):
        try:
            __import__(module)
        except ImportError:
            return module
    return None


@pytest.mark.skipif(
    _mkdocs_missing() is not None,
    reason=f"mkdocs is not installed ({_mkdocs_missing()} missing): "
    'pip install -e ".[docs]" to build the documentation site',
)
def test_mkdocs_build_strict(tmp_path):
    env = {
        **os.environ,
        # the package must import from this checkout (mkdocstrings and docs/gen_pages.py)
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "DISABLE_MKDOCS_2_WARNING": "true",  # a plugin's banner, not a build warning
        "NO_MKDOCS_2_WARNING": "1",
    }
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    cli_page = (site / "reference" / "cli" / "index.html").read_text()
    for command in ("train", "evaluate", "export", "plot"):
        assert f"keras-vae {command}" in cli_page
    assert "--importance-samples" in cli_page  # the generated help, not a stub
    api_page = (site / "reference" / "api" / "index.html").read_text()
    for name in ("keras_vae.VAE", "keras_vae.mlp_vae", "keras_vae.data.load_images"):
        assert name in api_page, f"{name} is missing from the API reference"
    assert (site / "deployment" / "index.html").is_file()
    shutil.rmtree(site)
