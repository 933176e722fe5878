"""keras_vae: variational autoencoders (AEVB) for Keras 3 and TensorFlow.

Public API: the `VAE` model and the `mlp_vae` preset, the distribution heads, the network
bodies, and the pure objectives in `keras_vae.objectives`.
"""

import os as _os

if _os.environ.setdefault("KERAS_BACKEND", "tensorflow") != "tensorflow":
    raise ImportError(
        "keras_vae needs the TensorFlow backend of Keras (it builds on TensorFlow Probability "
        f"and exports SavedModels). Received: KERAS_BACKEND={_os.environ['KERAS_BACKEND']!r}; "
        "unset it or set KERAS_BACKEND=tensorflow."
    )

from keras_vae import objectives  # noqa: E402
from keras_vae.distributions import (  # noqa: E402
    BernoulliLikelihood,
    DiagonalGaussianPosterior,
    GaussianLikelihood,
    StandardNormalPrior,
)
from keras_vae.model import VAE, mlp_vae  # noqa: E402
from keras_vae.networks import MLP  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "MLP",
    "BernoulliLikelihood",
    "DiagonalGaussianPosterior",
    "GaussianLikelihood",
    "StandardNormalPrior",
    "mlp_vae",
    "objectives",
]
