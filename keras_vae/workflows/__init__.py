"""The workflows on a run: train, evaluate, sample, encode, plot, export. They look the model
kind up in the registry (`keras_vae.models.kind.ModelKind`) and never branch on it."""
