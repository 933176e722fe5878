"""Model kinds, a folder each: the model, its presets, its metrics, pictures and export.

Importing this package registers every built-in kind in `keras_vae.registry` under
`"model"`; the workflows look a kind up there (`keras_vae.models.kind.ModelKind`).
"""
