"""The distribution heads, gathered: Keras 3 layers that return TFP distributions.

`tfp.layers` are tf_keras (Keras 2) layers and cannot be used in Keras 3 models, so keras_vae
builds its own heads. Each kind lives in its own module; this module gathers them for
convenience and for code written against keras_vae 0.1:

* `keras_vae.posteriors`: q(z|x) heads (diagonal and full-covariance Gaussian);
* `keras_vae.likelihoods`: p(x|z) heads (Bernoulli, Gaussian, discretised logistic mixture);
* `keras_vae.priors`: p(z) (standard normal, learned mixture, VampPrior).
"""

from keras_vae.parts.likelihoods import (  # noqa: F401
    BernoulliLikelihood,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    Likelihood,
)
from keras_vae.parts.posteriors import (  # noqa: F401
    DiagonalGaussianPosterior,
    FullCovariancePosterior,
    Posterior,
)
from keras_vae.parts.priors import MixturePrior, Prior, StandardNormalPrior, VampPrior  # noqa: F401
