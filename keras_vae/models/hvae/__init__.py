"""The hierarchical VAE kind: L stochastic layers with top-down inference.

`HierarchicalVAE` (model.py) with its layers (layers.py) and the presets `mlp_hvae` and
`conv_hvae` (presets.py); `importance_sampled_log_likelihood` and `evaluate` (metrics.py)
estimate log p(x) over the whole hierarchy, the KL and active units of each layer.
"""

from keras_vae.models.hvae import layers  # noqa: F401  (registers the layers for .keras files)
from keras_vae.models.hvae.metrics import evaluate, importance_sampled_log_likelihood
from keras_vae.models.hvae.model import HierarchicalVAE
from keras_vae.models.hvae.presets import conv_hvae, mlp_hvae

__all__ = [
    "HierarchicalVAE",
    "conv_hvae",
    "evaluate",
    "importance_sampled_log_likelihood",
    "mlp_hvae",
]
