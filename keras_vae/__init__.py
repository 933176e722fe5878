"""keras_vae: variational autoencoders for Keras 3 and TensorFlow, built from parts.

Public API: the `VAE` model and the `mlp_vae` preset; the parts (posteriors, priors,
likelihoods, objectives, networks), each registered by name in `keras_vae.registry`.
"""

import os as _os

if _os.environ.setdefault("KERAS_BACKEND", "tensorflow") != "tensorflow":
    raise ImportError(
        "keras_vae needs the TensorFlow backend of Keras (it builds on TensorFlow Probability "
        f"and exports SavedModels). Received: KERAS_BACKEND={_os.environ['KERAS_BACKEND']!r}; "
        "unset it or set KERAS_BACKEND=tensorflow."
    )

from keras_vae._internal import aliases as _aliases  # noqa: E402
from keras_vae._internal import quiet as _quiet  # noqa: E402

# first: TensorFlow's C++ start-up log stays hidden; the `keras-vae` command, which uses
# neither Keras' scikit-learn wrappers nor its plotting helpers, skips their imports (1.2 s)
_quiet.import_tensorflow(_quiet.KERAS_EXTRAS if _quiet.command_line() else ())
_aliases.install()  # the module paths of the flat layout (0.2.0) keep working

# the parts, then the model kinds: importing them registers them by name
from keras_vae import models, parts, registry  # noqa: E402, F401
from keras_vae.models import kinds as _kinds  # noqa: E402, F401
from keras_vae.models.vae.conditional import ConditionalVAE  # noqa: E402
from keras_vae.models.vae.model import VAE  # noqa: E402
from keras_vae.models.vae.presets import mlp_vae  # noqa: E402
from keras_vae.parts import objectives  # noqa: E402
from keras_vae.parts.disentangling_objectives import AnnealedCapacity, BetaTC  # noqa: E402
from keras_vae.parts.factor_vae import FactorVAE  # noqa: E402
from keras_vae.parts.likelihoods import (  # noqa: E402
    BernoulliLikelihood,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
)
from keras_vae.parts.networks import MLP  # noqa: E402
from keras_vae.parts.objectives import ELBO, IWAE  # noqa: E402
from keras_vae.parts.posteriors import DiagonalGaussianPosterior, FullCovariancePosterior  # noqa: E402
from keras_vae.parts.priors import MixturePrior, StandardNormalPrior, VampPrior  # noqa: E402

__version__ = "0.3.0"

__all__ = [
    "VAE",
    "ConditionalVAE",
    "MLP",
    "ELBO",
    "IWAE",
    "AnnealedCapacity",
    "BetaTC",
    "FactorVAE",
    "BernoulliLikelihood",
    "DiagonalGaussianPosterior",
    "DiscretizedLogisticLikelihood",
    "FullCovariancePosterior",
    "GaussianLikelihood",
    "MixturePrior",
    "StandardNormalPrior",
    "VampPrior",
    "mlp_vae",
    "objectives",
    "registry",
]
