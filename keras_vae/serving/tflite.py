"""TFLite conversion of the exported SavedModels: builtin ops only, optional quantization.

`convert_tflite` converts chosen signatures of a SavedModel into one flatbuffer with
`TFLITE_BUILTINS` only (never Select TF ops); `tflite_operators` lists what a flatbuffer
needs, so that a file with Flex or custom ops is refused before it is written. Integer
quantization is calibrated by a representative dataset that each kind gives (a VAE: the
encoder on real images, the decoder on z ~ q(z|x) of those images and as many z from the
model's learned prior, see `keras_vae.models.vae.export`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

_REPRESENTATIVE_BATCH = 32
#: TFLite variants a kind may write (each kind writes some of them: its `quantizations`)
QUANTIZATIONS = ("none", "dynamic", "float16", "int8")


def tflite_filename(part: str, quantization: str) -> str:
    """`encoder.tflite` for float32, `encoder.int8.tflite` etc. for quantized variants."""
    return f"{part}.tflite" if quantization == "none" else f"{part}.{quantization}.tflite"


def tflite_interpreter(path: Path):
    """A LiteRT interpreter on `path` with 2 threads."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Checking the .tflite files needs the LiteRT runtime: pip install ai-edge-litert "
            "(or export with tflite=False / --no-tflite)."
        ) from error
    return Interpreter(model_path=str(path), num_threads=2)


def tflite_operators(model_content: bytes) -> list[str]:
    """Names of the operators in a `.tflite` flatbuffer; custom ops as `CUSTOM(name)`.

    Flex (TensorFlow) ops are custom ops named `Flex...`; a builtins-only file has none.
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if name.isupper()}
    flatbuffer = schema.Model.GetRootAs(model_content, 0)
    operators = set()
    for i in range(flatbuffer.OperatorCodesLength()):
        code = flatbuffer.OperatorCodes(i)
        if code.CustomCode():
            operators.add(f"CUSTOM({code.CustomCode().decode()})")
        else:
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            operators.add(names.get(builtin, f"BUILTIN_{builtin}"))
    return sorted(operators)


def batches(columns: dict[str, np.ndarray], size: int = _REPRESENTATIVE_BATCH) -> list[dict]:
    """`{name: rows}` batches of `size` rows of the same-length arrays in `columns`."""
    count = len(next(iter(columns.values())))
    return [
        {name: value[start : start + size] for name, value in columns.items()}
        for start in range(0, count, size)
    ]


def convert_tflite(
    saved_model_dir: str | Path,
    signature_keys: Sequence[str],
    quantization: str = "none",
    representative_dataset: Callable | None = None,
) -> bytes:
    """Converts a SavedModel's signatures to one `.tflite` flatbuffer with builtin ops only.

    Args:
        saved_model_dir: The SavedModel.
        signature_keys: Signatures to convert; they keep their names and tensor names.
        quantization: `"none"` (float32), `"dynamic"` (int8 weights, float activations),
            `"float16"` (float16 weights) or `"int8"` (int8 weights and activations, float32
            inputs and outputs; needs `representative_dataset`).
        representative_dataset: Generator function of `(signature_key, {input: array})`.

    Returns:
        The flatbuffer bytes.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=list(signature_keys)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():  # int8 calibration uses the deprecated tf.lite.Interpreter
        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
        return converter.convert()
