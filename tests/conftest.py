"""Fixtures shared by the tests; the tests mirror the package (tests/<folder>/test_<module>.py).

This folder is on `sys.path` (`pythonpath` in pyproject.toml), so every test imports the shared
helpers with `from helpers import ...`; test modules are imported by path (`importlib`), so
the mirrored folders may repeat a basename.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED, TFDS_DIR, write_toy_images

# `keras-vae train` (in-process or a subprocess) keeps no XLA compilation cache in the tests:
# nothing written to ~/.cache, every compilation as on a first run
# (tests/_internal/test_xla_cache.py turns it on where it checks it)
os.environ.setdefault("KERAS_VAE_XLA_CACHE", "off")

#: Session fixtures that train something: the test files that use one form one unit of work.
SHARED_RUNS = ("labelled_run",)
#: Tests that take longest on their own: scheduled right after the files of shared fixtures,
#: so that no worker starts one of them while the other runs out of work.
LONG_FIRST = (
    "tests/engine/test_multiworker.py::",
    "tests/test_notebooks.py::",
    "tests/runs/test_directory.py::test_training_survives",
)
_MODULE_FIXTURE = re.compile(r"@pytest\.fixture\([^)]*scope=\"module\"")
#: A module-level random generator that several tests draw from: their draws depend on which
#: tests ran before them in the file, so such a file runs in order, on one worker, as alone.
_MODULE_RNG = re.compile(r"^_?(RNG|rng)\s*=\s*np\.random\.default_rng", re.MULTILINE)


def pytest_xdist_make_scheduler(config, log):
    """`-n 2 --dist load`, the README's test command: every test is a unit of work of its
    own, so the long ones spread over the workers, except that a test file that defines a
    module-scoped fixture (a trained run, an exported model, one process for several mirrored
    cases) is one unit, as are the files that use a `SHARED_RUNS` fixture: one worker computes
    the fixture, once; and a file with a module-level random generator is one unit, its tests
    in the file's order (their random inputs are then those of a plain run of the file).
    The files' units go first (most tests first), then `LONG_FIRST`, then
    the other tests in their order. (pytest-xdist's `--dist loadgroup` would express the
    groups with marks, but it does not group under pytest 9.2: pytest-xdist issue #1386.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    root, units = Path(str(config.rootpath)), {}

    def file_unit(path: str) -> str | None:
        """The unit of the tests of the file at `path`; None: each test its own."""
        if path not in units:
            try:
                text = (root / path).read_text()
            except OSError:
                text = ""
            shared = [name for name in SHARED_RUNS if re.search(rf"\b{name}\b", text)]
            in_order = _MODULE_FIXTURE.search(text) or _MODULE_RNG.search(text)
            units[path] = shared[0] if shared else (path if in_order else None)
        return units[path]

    def rank(workqueue, scope) -> tuple[int, int]:
        tests = len(workqueue[scope])
        if tests > 1 or "::" not in scope:  # a file's or a shared run's tests
            return (0, -tests)
        return (1 if scope.startswith(LONG_FIRST) else 2, 0)

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return file_unit(nodeid.split("::", 1)[0]) or nodeid

        def _assign_work_unit(self, node) -> None:
            if not getattr(self, "_ordered", False):  # once, before the first unit goes out
                for scope in sorted(self.workqueue, key=lambda s: rank(self.workqueue, s)):
                    self.workqueue.move_to_end(scope)  # (a stable sort: else their order)
                self._ordered = True
            super()._assign_work_unit(node)

    return SharedFixtureScheduling(config, log)


@pytest.fixture(scope="session")
def shared_dir():
    """The offline data beside the clone; tests that need it skip where it is absent."""
    if not TFDS_DIR.is_dir():
        pytest.skip(f"no offline data in {SHARED} (see ../shared/DATA.md)")
    return SHARED


@pytest.fixture
def toy_npz(tmp_path):
    """256 random binary 6x6 images in an `.npz` (key `x`), uint8."""
    return write_toy_images(tmp_path / "toy.npz", 256, (6, 6), seed=7)


@pytest.fixture
def toy_npy(tmp_path):
    """96 random binary 4x4x1 images in an `.npy`, float32."""
    return write_toy_images(tmp_path / "toy.npy", 96, (4, 4, 1), seed=1, dtype="float32")


@pytest.fixture(scope="session")
def labelled_run(tmp_path_factory):
    """A finished tiny VAE run (one epoch) on 120 labelled 6x6 binary images, for the
    workflows that read a run (`sample`, `encode`): ROOT/toy.npz (`x`, `y` = index mod 3) and
    ROOT/run. Tests read it and must not change it."""
    from keras_vae.runs.config import TrainConfig
    from keras_vae.workflows import train

    root = tmp_path_factory.mktemp("labelled_run")
    x = (np.random.default_rng(3).uniform(size=(120, 6, 6, 1)) > 0.5).astype("float32")
    np.savez(root / "toy.npz", x=x, y=np.arange(120) % 3)
    config = TrainConfig(dataset=str(root / "toy.npz"), eval_split="train", latent_dim=2,
                         hidden_units=[8], epochs=1, batch_size=40, image_every=0)  # fmt: skip
    train.train(config, root / "run", verbose=0, progress=lambda line: None)
    return root
