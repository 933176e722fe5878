"""The notebooks run top to bottom with a tiny training budget (on copies; outputs untouched).

Each notebook is executed with nbclient by a `python3` kernel of this very interpreter (a
kernel spec written into a temporary JUPYTER_PATH directory, which comes before the user's and
the system's kernel directories), with the working directory `notebooks/`, as a reader's
Jupyter would run it, so its `../../shared` fallbacks are exercised.
"""

import shutil

import pytest
from helpers import REPO as ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("ipykernel.kernelspec")


NOTEBOOKS = ROOT / "notebooks"
SHARED = ROOT.parent / "shared"
# one epoch on 500 training images (03_deploy calibrates int8 on 500 distinct ones)
BUDGET = {"KERAS_VAE_NOTEBOOK_EPOCHS": "1", "KERAS_VAE_NOTEBOOK_LIMIT": "500"}
# (notebook, offline data it needs, pictures it shows at least)
CASES = [
    ("01_quickstart_mnist.ipynb", SHARED / "tensorflow_datasets" / "binarized_mnist", 5),
    ("02_frey_face.ipynb", SHARED / "data" / "frey_face" / "frey_rawface.mat", 5),
    ("03_deploy.ipynb", SHARED / "tensorflow_datasets" / "binarized_mnist", 2),
    ("04_vqvae.ipynb", SHARED / "tensorflow_datasets" / "binarized_mnist", 3),
    ("05_aevb_figure2.ipynb", SHARED / "data" / "frey_face" / "frey_rawface.mat", 2),
    (
        "06_conditional_conv.ipynb",
        SHARED / "data" / "binarized_mnist" / "binarized_mnist_test.amat",
        3,
    ),
    ("07_disentanglement.ipynb", NOTEBOOKS, 5),  # its data are generated (offline, in a tmp dir)
    ("08_hierarchical_vae.ipynb", SHARED / "tensorflow_datasets" / "binarized_mnist", 5),
]


@pytest.fixture(scope="session")
def jupyter_path(tmp_path_factory):
    """A JUPYTER_PATH whose `python3` kernel is this interpreter."""
    path = tmp_path_factory.mktemp("jupyter")
    kernelspec.write_kernel_spec(path / "kernels" / "python3")
    return path


def _outputs(notebook, output_type=None):
    for cell in notebook.cells:
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if output_type is None or output.output_type == output_type:
                    yield output


@pytest.mark.slow
@pytest.mark.parametrize("name, needs, min_pictures", CASES, ids=[c[0] for c in CASES])
def test_notebook_runs_top_to_bottom_with_a_tiny_budget(
    name, needs, min_pictures, tmp_path, monkeypatch, jupyter_path
):
    if not needs.exists():
        pytest.skip(f"no offline data at {needs}")
    for key, value in BUDGET.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    committed = (NOTEBOOKS / name).read_bytes()
    copy = tmp_path / name
    shutil.copy(NOTEBOOKS / name, copy)
    notebook = nbformat.read(copy, as_version=4)
    assert notebook.metadata.kernelspec.name == "python3"

    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError with the cell and traceback on failure
    nbformat.write(notebook, copy)

    assert not list(_outputs(notebook, "error"))
    pictures = [o for o in _outputs(notebook) if "image/png" in o.get("data", {})]
    assert len(pictures) >= min_pictures
    text = "".join(o.get("text", "") for o in _outputs(notebook, "stream"))
    expected = {"04_vqvae.ipynb": "bits/dim", "07_disentanglement.ipynb": "FactorVAE score"}
    assert expected.get(name, "test ELBO") in text
    assert "Traceback" not in text
    # executed on a copy: the committed notebook and the notebooks/ folder are unchanged
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before
    assert (NOTEBOOKS / name).read_bytes() == committed
