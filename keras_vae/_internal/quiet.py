"""Importing TensorFlow without its C++ start-up log (the library and the CLI start quietly).

TensorFlow writes to file descriptor 2 while its shared libraries load ("WARNING: All log
messages before absl::InitializeLog() ...", `I0000 ... oneDNN custom operations are on`, the
CPU-feature note), before any Python logging exists, and later logs C++ messages such as
`E0000 ... failed call to cuInit` on machines without a GPU. `import_tensorflow()` therefore

* sets `TF_CPP_MIN_LOG_LEVEL=3` (C++ errors and below hidden; Python exceptions still carry
  TensorFlow's error messages) unless the user set it, and
* imports TensorFlow with descriptor 2 captured in a temporary file, then writes back every
  captured line except those start-up messages (so a real error while loading still shows).

TensorFlow Lite writes notes there too, bypassing the log level: its converter prints
`fully_quantize: 0, inference_type: 6, ...` for every int8 file and its runtime
`INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` on the first run of a model.
`tflite_notes_hidden()` holds those back around a conversion or a check (`keras_vae.serving`).

`KERAS_VAE_DEBUG=1` (any non-empty value) turns all of it off and shows everything.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

# a glog/absl line (`I0000 00:00:...`), the absl pre-init note, the CPU-feature guard's 2nd line
_START_UP_LINE = re.compile(
    rb"^([IW]\d{4} \d\d:\d\d:\S+ +\d+ \S+:\d+\]|WARNING: All log messages before absl::"
    rb"|To enable the following instructions:)"
)
# TensorFlow Lite's notes: the int8 converter's settings, the runtime's default delegate
_TFLITE_NOTE = re.compile(
    rb"^(fully_quantize: \d+, inference_type: |INFO: Created TensorFlow Lite XNNPACK delegate)"
)


def debug() -> bool:
    """Whether KERAS_VAE_DEBUG asks for TensorFlow's own log (and tracebacks)."""
    return bool(os.environ.get("KERAS_VAE_DEBUG"))


#: What Keras imports at its own import (inside `import tensorflow`) only for its scikit-learn
#: wrappers (`keras.wrappers`) and its plotting helpers (`keras.visualization`), each in a
#: `try: import ... except ImportError`: 0.77 s and 0.45 s of `import keras_vae` here
#: (`python -X importtime`, 2026-12-05), a tenth of the `keras-vae train` start-up.
KERAS_EXTRAS = ("sklearn", "matplotlib.pyplot")


def command_line() -> bool:
    """Whether this process is the `keras-vae` console script (`sys.argv[0]`)."""
    return os.path.basename(sys.argv[0]) == "keras-vae"


def import_tensorflow(without: tuple[str, ...] = ()):
    """Imports and returns `tensorflow`, without its start-up log unless `debug()`.

    `without`: modules that TensorFlow's import (Keras') must not import (the `keras-vae`
    command passes `KERAS_EXTRAS`: Keras' wrappers and plotting helpers are then unavailable
    in that process); they can be imported afterwards as usual.
    """
    with _not_importable(() if "tensorflow" in sys.modules else without):
        if debug() or "tensorflow" in sys.modules:
            import tensorflow

            return tensorflow
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with _lines_held_back(_START_UP_LINE):
            import tensorflow
    _quiet_python_loggers()
    return tensorflow


@contextlib.contextmanager
def _not_importable(names: tuple[str, ...]):
    """Inside the block, `import name` raises ImportError for each of `names` not imported
    yet (a None in `sys.modules`); after it they import normally."""
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


@contextlib.contextmanager
def tflite_notes_hidden():
    """Inside the block, TensorFlow Lite's notes on descriptor 2 are held back (not with
    `debug()`); every other line written there gets through when the block ends."""
    if debug():
        yield
        return
    with _lines_held_back(_TFLITE_NOTE):
        yield


@contextlib.contextmanager
def _lines_held_back(pattern: re.Pattern):
    """Captures descriptor 2 in a temporary file inside the block, then writes back every
    captured line that `pattern` does not match (so a real error still shows)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (e.g. some embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured if not pattern.match(line)]
            if kept:
                os.write(2, b"".join(kept))


def _quiet_python_loggers() -> None:
    """TensorFlow's and absl's Python loggers: warnings and errors only (no INFO lines)."""
    import logging

    for name in ("tensorflow", "absl"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
