"""Custom tensorflow-datasets builders; importing this package registers them with tfds.

* `frey_face` (`FreyFace`): see `keras_vae.data.builders.frey_face`.
* `synthetic_dsprites` (`SyntheticDsprites`): dSprites' factor grid, generated offline; see
  `keras_vae.data.builders.synthetic_dsprites`.
"""

from keras_vae.data.builders.frey_face import FreyFace
from keras_vae.data.builders.synthetic_dsprites import SyntheticDsprites

__all__ = ["FreyFace", "SyntheticDsprites"]
