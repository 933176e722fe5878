"""keras_vae.serving.tflite: file names, and the operator list read back from a converted file
(a file with `tf.random.normal` converts to the RANDOM_STANDARD_NORMAL builtin)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vae.serving import tflite


@pytest.mark.parametrize(
    ("quantization", "name"),
    [("none", "decoder.tflite"), ("int8", "decoder.int8.tflite"),
     ("float16", "decoder.float16.tflite")],
)  # fmt: skip
def test_file_names(quantization, name):
    assert tflite.tflite_filename("decoder", quantization) == name


def test_operators_of_a_converted_function_and_its_interpreter(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def noisy(x):
        return {"y": tf.tanh(x) + tf.random.normal(tf.shape(x))}

    content = tf.lite.TFLiteConverter.from_concrete_functions(
        [noisy.get_concrete_function()], noisy
    ).convert()
    operators = tflite.tflite_operators(content)
    assert "TANH" in operators and "RANDOM_STANDARD_NORMAL" in operators
    assert not any(op.startswith("CUSTOM(") for op in operators)
    path = tmp_path / "noisy.tflite"
    path.write_bytes(content)
    interpreter = tflite.tflite_interpreter(path)
    x = np.zeros((2, 3), np.float32)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert y.shape == (2, 3) and np.std(y) > 0.1  # tanh(0) = 0 plus unit noise
