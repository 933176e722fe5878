"""Export machinery shared by the model kinds: serving signatures, TFLite conversion,
the self-checks of an exported artefact against its Keras model."""
