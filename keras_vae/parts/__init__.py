"""The parts a model is made of, each registered by name in `keras_vae.registry`:
posteriors q(z|x), priors p(z), likelihoods p(x|z), objectives, networks, quantizers.

Importing this package registers every built-in part.
"""

from keras_vae.parts import (  # noqa: F401
    disentangling_objectives,
    factor_vae,
    likelihoods,
    networks,
    objectives,
    posteriors,
    priors,
    quantizers,
)
