"""Data in: tensorflow-datasets builders and `.npz`/`.npy` arrays, validated, batched and
streamed into `model.fit` (`keras_vae.data.pipeline`); our own tfds builders live in
`keras_vae.data.builders`.

`from keras_vae import data; data.load_images("binarized_mnist", "test")` is the public
entry point: every public name of the pipeline is available here.
"""

from keras_vae.data import pipeline as _pipeline

globals().update(
    {name: value for name, value in vars(_pipeline).items()
     if not name.startswith("_") and getattr(value, "__module__", _pipeline.__name__)
     == _pipeline.__name__ and not isinstance(value, type(_pipeline))}
)  # fmt: skip
