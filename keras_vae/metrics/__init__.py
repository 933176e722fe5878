"""Metrics of representations, pure functions of codes and factors: the disentanglement
scores of Locatello et al. 2019 (`keras_vae.metrics.disentanglement`)."""
