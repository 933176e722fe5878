"""Custom tensorflow-datasets builders; importing this package registers them with tfds.

* `frey_face` (`FreyFace`): see `keras_vae.datasets.frey_face`.
"""

from keras_vae.data.builders.frey_face import FreyFace

__all__ = ["FreyFace"]
