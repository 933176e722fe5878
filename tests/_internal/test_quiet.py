"""keras_vae._internal.quiet: TensorFlow's C++ start-up lines are held back, any other line
written while it loads gets through, TF_CPP_MIN_LOG_LEVEL=3 unless the user set it, and the
Python loggers drop to warnings; TensorFlow Lite's notes are held back around a conversion;
KERAS_VAE_DEBUG shows everything.

TensorFlow is already imported in the test process, so a stand-in `tensorflow` module (found
first on `sys.meta_path`) writes TensorFlow's real start-up lines to descriptor 2 as it loads.
"""

import importlib.abc
import importlib.util
import logging
import os
import sys

import pytest

from keras_vae._internal import quiet

# lines as TensorFlow 2.x writes them while its shared libraries load
START_UP = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1733390000.123456   4242 cpu_feature_guard.cc:210] This TensorFlow binary "
    b"is optimized to use available CPU instructions in performance-critical operations.\n"
    b"To enable the following instructions: AVX512F AVX512_VNNI, in other operations, rebuild "
    b"TensorFlow with the appropriate compiler flags.\n"
    b"W0000 00:00:1733390000.200000   4242 gpu_device.cc:2344] Cannot dlopen some GPU libraries.\n"
)
REAL_ERROR = b"ImportError: libfoo.so.1: cannot open shared object file\n"


class _StandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname == "tensorflow" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        os.write(2, START_UP + REAL_ERROR)
        module.stand_in = True


@pytest.fixture
def stand_in_tensorflow(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow")  # restored (the real one) afterwards
    monkeypatch.setattr(sys, "meta_path", [_StandIn(), *sys.meta_path])
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("KERAS_VAE_DEBUG", raising=False)
    for name in ("tensorflow", "absl"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.INFO)


def test_start_up_lines_are_held_back_and_other_lines_kept(stand_in_tensorflow, capfd):
    module = quiet.import_tensorflow()
    assert module.stand_in is True
    assert capfd.readouterr().err.encode() == REAL_ERROR
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    for name in ("tensorflow", "absl"):
        assert logging.getLogger(name).level == logging.WARNING


def test_the_users_log_level_is_kept(stand_in_tensorflow, monkeypatch, capfd):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    quiet.import_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    assert capfd.readouterr().err.encode() == REAL_ERROR


def test_keras_vae_debug_shows_everything(stand_in_tensorflow, monkeypatch, capfd):
    monkeypatch.setenv("KERAS_VAE_DEBUG", "1")
    assert quiet.debug()
    quiet.import_tensorflow()
    assert capfd.readouterr().err.encode() == START_UP + REAL_ERROR
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert logging.getLogger("tensorflow").level == logging.INFO


def test_an_imported_tensorflow_is_returned_as_it_is():
    import tensorflow

    assert quiet.import_tensorflow() is tensorflow


# notes as TensorFlow Lite 2.21's converter (int8) and runtime write them to descriptor 2
TFLITE_NOTES = (
    b"fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, "
    b"output_inference_type: FLOAT32\n"
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
)


@pytest.mark.parametrize("debug", ["", "1"])
def test_tflite_notes_are_held_back_and_other_lines_kept(debug, monkeypatch, capfd):
    monkeypatch.setenv("KERAS_VAE_DEBUG", debug)
    other = b"INFO: Initialized TensorFlow Lite runtime.\n"  # not one of the two notes
    with quiet.tflite_notes_hidden():
        os.write(2, other + TFLITE_NOTES + REAL_ERROR)
    expected = other + (TFLITE_NOTES if debug else b"") + REAL_ERROR
    assert capfd.readouterr().err.encode() == expected


def test_lines_written_before_an_error_in_the_block_still_show(monkeypatch, capfd):
    monkeypatch.delenv("KERAS_VAE_DEBUG", raising=False)
    with pytest.raises(RuntimeError, match="conversion failed"):
        with quiet.tflite_notes_hidden():
            os.write(2, TFLITE_NOTES + REAL_ERROR)
            raise RuntimeError("conversion failed")
    assert capfd.readouterr().err.encode() == REAL_ERROR


def test_modules_kept_out_of_the_import_are_importable_after_it(stand_in_tensorflow, tmp_path,
                                                                monkeypatch):  # fmt: skip
    (tmp_path / "kv_extra.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []

    class Importing(_StandIn):  # a TensorFlow whose import tries an optional extra, as Keras'
        def exec_module(self, module):
            try:
                import kv_extra  # noqa: F401
            except ImportError:
                seen.append("skipped")

    monkeypatch.setattr(sys, "meta_path", [Importing(), *sys.meta_path[1:]])
    quiet.import_tensorflow(("kv_extra",))
    assert seen == ["skipped"] and "kv_extra" not in sys.modules
    import kv_extra

    assert kv_extra.VALUE == 1


def test_the_keras_vae_command_starts_without_keras_extras():
    """Keras imports scikit-learn and matplotlib.pyplot only for its wrappers and plotting
    helpers, and skips them when they cannot be imported; the console script (argv[0]
    `keras-vae`) keeps them out of TensorFlow's import, and they import normally after."""
    import subprocess

    from helpers import REPO

    script = (
        "import sys; sys.argv[0] = '/usr/bin/keras-vae'\n"
        "import keras_vae, keras\n"
        "print(sorted(set(keras_vae._quiet.KERAS_EXTRAS) & set(sys.modules)))\n"
        "import sklearn.linear_model, matplotlib.pyplot\n"
        "print('imported')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "imported"]
