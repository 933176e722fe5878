"""Encoder, decoder and scorer as SavedModels (TF Serving) and TFLite files (phones).

`export_vae` writes, under an export directory:

```
EXPORT_DIR/encoder/<version>/   SavedModel: serving_default (x -> the posterior's parameters),
                                encode_sample (x -> z and the parameters)
EXPORT_DIR/decoder/<version>/   SavedModel: serving_default (z -> mean and the likelihood's
                                parameters), sample (num_samples -> z from the learned prior,
                                mean)
EXPORT_DIR/scorer/<version>/    SavedModel: serving_default (x -> elbo, log_likelihood in nats),
                                score_with_noise (x, eps -> the same, deterministic)
EXPORT_DIR/{encoder,decoder,scorer}.tflite     float32, same signatures and tensor names
EXPORT_DIR/{encoder,decoder}.{dynamic,float16,int8}.tflite   quantized variants, on request
EXPORT_DIR/export_report.json   sizes, signatures and the self-check errors
```

What each signature outputs is asked from the model's parts (`keras_vae.export_signatures`):
the posterior's and likelihood's `parameters`, the likelihood's `mean`, the prior's
`sample_plain` and closed-form `kl`. The graphs hold only core TF ops and load with TensorFlow
alone; the `.tflite` files hold TFLite builtin ops only (`keras_vae.export_tflite`).

Writes are atomic (`keras_vae.atomic`). Every version directory and file is first written under
a temporary name that TF Serving ignores (`encoder/.tmp-1-xxxx`: version directories must be
integers), checked there (`keras_vae.export_checks`), and renamed into place only when every
artefact passed its check. An existing version is replaced only with `overwrite=True`. An error
or KeyboardInterrupt removes every temporary path; a SIGKILL can leave a `.tmp-*` directory
behind, which TF Serving ignores and which may be deleted. The `.tflite` files and
`export_report.json` describe the most recent export: each export replaces them and removes
the TFLite files it did not produce.

Self-check bounds, against the Keras model over the check images:

* float32 SavedModels and `.tflite` files: every output of every deterministic signature
  < `FLOAT32_BOUND` in max abs error (the scorer's: in relative error |a - b| / (1 + |b|)),
  the SavedModels also in graph mode, as TF Serving runs them; the scorer's own-noise
  `serving_default` within 5 standard errors of the model's estimates.
* quantized `.tflite` files: `QUANTIZED_BOUNDS`, on the encoder's loc (in prior standard
  deviations) and the decoder's mean (pixels in [0, 1]); the other outputs are reported only.
  The bounds are about 2.5x the largest errors measured on trained MNIST and Frey Face models
  (export/README.md): they catch a broken conversion, not a small loss of accuracy. The scorer
  is written as float32 only: its log-densities sum hundreds of per-pixel terms.

A conditional VAE (`keras_vae.conditional.ConditionalVAE`) is exported the same way with one
more named input, its class labels `y` (int32 `[batch]`), in every signature (`sample` takes
the labels instead of `num_samples`); the self-checks and the int8 calibration use the images'
labels (`representative_labels`, `check_labels`; `export_run` reads the run's own).

Integer quantization (`int8`) quantizes weights and activations, calibrated on
`representative_images` (the decoder on z ~ q(z|x) of those images and as many z ~ p(z));
inputs and outputs stay float32, so every file has the same signatures. The sampling
signatures' random ops stay float inside the int8 graph; should a converter refuse them, the
int8 file keeps `serving_default` only (reported in its signatures).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vae._internal import atomic
from keras_vae.models.vae.model import VAE
from keras_vae.serving.checks import (
    DETERMINISTIC,
    RELATIVE_PARTS,
    ExportCheckError,
    build_reference,
    check_artefact,
    max_error,
    run_in_session,
    saved_model_runners,
    scorer_statistics,
    tflite_runners,
    worst,
)
from keras_vae.serving.signatures import (
    DECODER_SIGNATURES,
    ENCODER_SIGNATURES,
    SCORER_SIGNATURES,
    SIGNATURE_FUNCTIONS,
    SIGNATURE_KEYS,
    decoder_signatures,
    encoder_signatures,
    expected_signatures,
    is_conditional,
    scorer_signatures,
    tracked_module,
)
from keras_vae.serving.tflite import (
    QUANTIZATIONS,
    convert_tflite,
    representative_dataset,
    tflite_filename,
    tflite_operators,
)

__all__ = [
    "DECODER_SIGNATURES",
    "ENCODER_SIGNATURES",
    "FLOAT32_BOUND",
    "QUANTIZATIONS",
    "QUANTIZED_BOUNDS",
    "SCORER_SIGNATURES",
    "ExportCheckError",
    "convert_tflite",
    "decoder_signatures",
    "encoder_signatures",
    "expected_signatures",
    "export_vae",
    "scorer_signatures",
    "tflite_filename",
    "tflite_operators",
]

PARTS = ("encoder", "decoder", "scorer")
DEFAULT_SCORER_SAMPLES = 100
#: Max error of float32 artefacts against the Keras model (abs; relative for the scorer).
FLOAT32_BOUND = 1e-4
#: Max abs error of the quantized `.tflite` files on the encoder's loc (in prior standard
#: deviations) and the decoder's mean (pixels in [0, 1]). About 2.5x the largest error measured
#: on trained tanh MNIST (784-500-20) and Frey Face (560-200-10) models; the int8 encoder bound
#: is 0.6 because a ReLU 784-500-20 model measured 0.37 (notebooks/03_deploy); see
#: export/README.md.
QUANTIZED_BOUNDS = {
    "dynamic": {"encoder": 0.1, "decoder": 0.05},
    "float16": {"encoder": 0.01, "decoder": 0.01},
    "int8": {"encoder": 0.6, "decoder": 0.15},
}
#: Outputs whose error is bounded for quantized files (the others are reported only).
_BOUNDED_OUTPUTS = {"encoder": "loc", "decoder": "mean"}
_SYNTHETIC_CHECK_SIZE = 16


# ------------------------------------------------------------------------ one artefact
def _artefact(part, kind, quantization, path, size, errors, bound, bounded, signatures, **extra):
    return {
        "part": part,
        "kind": kind,
        "quantization": quantization,
        "path": path,
        "bytes": size,
        "error": "relative" if part in RELATIVE_PARTS else "absolute",
        "max_abs_error": errors,
        "checked_error": worst(errors, bounded)[1],
        "bound": bound,
        "bounded_outputs": bounded or "all",
        "signatures": signatures,
        **extra,
    }


def _summary(artefact: dict) -> str:
    return (
        f"  {artefact['path']:<26} {_format_size(artefact['bytes']):>9}  max "
        f"{artefact['error']} error {artefact['checked_error']:.2g} on "
        f"{artefact['bounded_outputs']} outputs (bound {artefact['bound']:g})"
    )


def _signatures(model: VAE, part: str, scorer_samples: int) -> dict:
    make = SIGNATURE_FUNCTIONS[part]
    return make(model, scorer_samples) if part == "scorer" else make(model)


def _scorer_statistics(model, part, runners, reference, scorer_samples, label) -> dict:
    """The scorer's own-noise check (see `export_checks.scorer_statistics`); {} otherwise."""
    if part != "scorer":
        return {}
    x, y = reference["scorer"]["inputs"]["x"], reference["scorer"]["inputs"].get("y")
    stats, problems = scorer_statistics(model, runners["serving_default"], x, scorer_samples, y)
    if problems:
        raise ExportCheckError(f"{label} failed its self-check: " + "; ".join(problems))
    return {"scorer_samples": scorer_samples, "statistics": stats}


def _save_and_check(
    model: VAE, part: str, path: Path, reference: dict, label: str, scorer_samples: int
) -> dict:
    """Writes one SavedModel to `path` and checks it in eager and in graph mode."""
    signatures = _signatures(model, part, scorer_samples)
    tf.saved_model.save(tracked_module(signatures), str(path), signatures=signatures)
    runners, described = saved_model_runners(tf.saved_model.load(str(path)))
    keys = SIGNATURE_KEYS[part]
    errors = check_artefact(
        model, part, label, runners, described, reference, FLOAT32_BOUND, None, keys
    )
    # The graph-mode loader that TF Serving uses, on the deterministic signature.
    outputs = run_in_session(path, DETERMINISTIC[part], reference[part]["inputs"])
    for name, value in reference[part]["outputs"].items():
        errors[f"graph_mode/{name}"] = max_error(outputs[name], value, part in RELATIVE_PARTS)
    if max(errors.values()) >= FLOAT32_BOUND:
        raise ExportCheckError(f"{label} disagrees with the model in graph mode: {errors}")
    extra = _scorer_statistics(model, part, runners, reference, scorer_samples, label)
    return _artefact(
        part, "saved_model", "none", label, _size(path), errors, FLOAT32_BOUND, None, described,
        **extra,
    )  # fmt: skip


def _combination(model: VAE) -> str:
    return "/".join(_part_name(model, name) for name in ("posterior", "prior", "likelihood"))


def _part_name(model: VAE, name: str) -> str:
    part = getattr(model, name)
    return getattr(type(part), "registered_name", type(part).__name__)


def _convert(
    model, part, quantization, saved_model_dir, calibration, say, name
) -> tuple[bytes, tuple]:
    """The flatbuffer of one part and the signatures it holds (`calibration`: the
    representative images and their labels, for int8)."""
    keys = SIGNATURE_KEYS[part]
    if quantization != "int8":
        try:
            return convert_tflite(saved_model_dir, keys, quantization), keys
        except Exception as error:  # a converter error names a TF op
            if part != "scorer":
                raise
            raise ExportCheckError(
                f"{name}: the scorer of the {_combination(model)} combination does not convert "
                f"to TFLite builtins ({type(error).__name__}); export with scorer=False "
                "(--no-scorer) or tflite=False (--no-tflite)."
            ) from error
    images, labels = (None if value is None else value[:1000] for value in calibration)
    try:
        dataset = representative_dataset(model, part, images, keys, labels)
        return convert_tflite(saved_model_dir, keys, quantization, dataset), keys
    except Exception as error:  # any converter failure: retried below
        # TF 2.21 quantizes around the random ops (kept float); should another version
        # refuse, keep the deterministic signature rather than fail the export.
        say(f"{name}: int8 conversion of {keys} failed ({type(error).__name__}); "
            "keeping serving_default only")  # fmt: skip
        keys = ("serving_default",)
        dataset = representative_dataset(model, part, images, keys, labels)
        return convert_tflite(saved_model_dir, keys, quantization, dataset), keys


def _convert_and_check(
    model, part, quantization, saved_model_dir, path, reference, calibration, say, scorer_samples
) -> dict:
    """Converts one SavedModel to `path` (.tflite) and checks it with the LiteRT interpreter."""
    content, keys = _convert(
        model, part, quantization, saved_model_dir, calibration, say, path.name
    )
    operators = tflite_operators(content)
    custom = [op for op in operators if op.startswith("CUSTOM")]
    if custom:
        raise ExportCheckError(f"{path.name} needs non-builtin (Flex/custom) ops: {custom}")
    atomic.write_bytes(path, content)
    runners, described = tflite_runners(path)
    bound = QUANTIZED_BOUNDS[quantization][part] if quantization != "none" else FLOAT32_BOUND
    bounded = None if quantization == "none" else _BOUNDED_OUTPUTS[part]
    errors = check_artefact(
        model, part, path.name, runners, described, reference, bound, bounded, keys
    )
    extra = _scorer_statistics(model, part, runners, reference, scorer_samples, path.name)
    return _artefact(
        part, "tflite", quantization, path.name, len(content), errors, bound, bounded, described,
        operators=operators, **extra,
    )  # fmt: skip


# ---------------------------------------------------------------------------- writing
def _versions(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _format_size(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


# -------------------------------------------------------------------------- arguments
def _check_images(name: str, images: np.ndarray | None, model: VAE) -> np.ndarray | None:
    if images is None:
        return None
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != len(model.image_shape) + 1 or array.shape[1:] != model.image_shape:
        raise ValueError(
            f"{name} must have shape [N, {', '.join(map(str, model.image_shape))}] (the model's "
            f"image shape). Received: {name}.shape={np.shape(images)}"
        )
    if len(array) == 0 or not np.isfinite(array).all():
        raise ValueError(f"{name} must hold at least one image and only finite values.")
    return array


def _check_arguments(
    model: object, version: object, tflite: bool, quantize: Sequence[str] | str, progress
) -> tuple[str, ...]:
    if not isinstance(model, VAE):
        raise ValueError(f"model must be a keras_vae.VAE. Received: {type(model).__name__}")
    if not model.built:
        raise ValueError(
            "model is not built, so it has no weights to export: train it, load it, or call "
            f"model.build((None, *{model.image_shape})) first."
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive int. Received: version={version!r}")
    quantize = (quantize,) if isinstance(quantize, str) else tuple(quantize)
    unknown = [q for q in quantize if q not in QUANTIZATIONS]
    if unknown or not quantize:
        raise ValueError(
            f"quantize must be a non-empty list of {QUANTIZATIONS}. Received: quantize={quantize!r}"
        )
    if not tflite and quantize != ("none",):
        raise ValueError(f"quantize={quantize!r} needs tflite=True (--tflite).")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a callable or None. Received: {progress!r}")
    return tuple(dict.fromkeys(quantize))  # unique, in order


def _check_labels(name: str, labels, images: np.ndarray | None, model: VAE, say) -> np.ndarray:
    """The int32 labels `[N]` of `images` for a conditional model (None: the classes in
    turn, 0, 1, ..., C - 1, 0, ...); None for an unconditional one, which refuses labels."""
    if not is_conditional(model):
        if labels is not None:
            raise ValueError(f"{name} are for a conditional VAE; this {type(model).__name__} "
                             "takes no labels.")  # fmt: skip
        return None
    size = model.condition_dim
    if images is None:
        if labels is not None:
            raise ValueError(f"{name} need their images.")
        return None
    if labels is None:
        say(f"no {name} given: the images are labelled with the classes in turn, 0..{size - 1}")
        return (np.arange(len(images)) % size).astype(np.int32)
    array = np.asarray(labels)
    if array.shape != (len(images),) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{name} must be int class labels [N], one per image ({len(images)}). "
            f"Received: shape {array.shape}, dtype {array.dtype}"
        )
    if array.min() < 0 or array.max() >= size:
        raise ValueError(f"{name} must be in [0, {size}) (the model's condition_dim). "
                         f"Received: labels in [{array.min()}, {array.max()}]")  # fmt: skip
    return array.astype(np.int32)


def _check_scorer_samples(scorer_samples: object) -> int:
    value = scorer_samples
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"scorer_samples must be a positive int. Received: scorer_samples={value!r}"
        )
    return value


def _choose_check_images(model, check, representative, say) -> tuple:
    """(images, labels, source): `check` (images, labels), else `representative`, else uniform
    noise (labelled with the classes in turn for a conditional model)."""
    if check[0] is not None:
        return (*check, "check_images")
    if representative[0] is not None:
        return (*representative, "representative_images")
    say("no check_images given: the self-check uses uniform random images")
    shape = (_SYNTHETIC_CHECK_SIZE, *model.image_shape)
    images = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    return images, _check_labels("labels", None, images, model, lambda _: None), "synthetic"


# ------------------------------------------------------------------------------ export
def _stage_saved_models(model, parts, export_dir, version, reference, staged, options, say):
    """Writes and checks each part's SavedModel under a temporary name.

    Returns:
        `(artefacts, moves, saved_model_dirs)`; every temporary path is appended to `staged`.
    """
    artefacts, moves, saved_model_dirs = [], [], {}
    for part in parts:
        say(f"writing and checking the {part} SavedModel ...")
        (export_dir / part).mkdir(exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir / part))
        staged.append(temp)
        temp.chmod(0o755)  # mkdtemp makes it 0700; the server may run as another user
        saved_model_dirs[part] = temp
        label = f"{part}/{version}"
        artefacts.append(
            _save_and_check(model, part, temp, reference, label, options["scorer_samples"])
        )
        say(_summary(artefacts[-1]))
        moves.append((temp, export_dir / part / str(version), options["overwrite"]))
    return artefacts, moves, saved_model_dirs


def _stage_tflite(model, quantize, saved_model_dirs, staging, reference, options, say):
    """Converts and checks every requested `.tflite` file into `staging`.

    The scorer is converted to float32 only (`quantize` containing "none").

    Returns:
        `(artefacts, moves, written file names)`.
    """
    artefacts, moves, written = [], [], set()
    for quantization in quantize:
        for part, saved_model_dir in saved_model_dirs.items():
            if part == "scorer" and quantization != "none":
                continue
            name = tflite_filename(part, quantization)
            say(f"converting and checking {name} ...")
            artefact = _convert_and_check(
                model, part, quantization, saved_model_dir, staging / name, reference,
                (options["representative_images"], options["representative_labels"]), say,
                options["scorer_samples"],
            )  # fmt: skip
            artefacts.append(artefact)
            say(_summary(artefact))
            moves.append((staging / name, staging.parent / name, True))
            written.add(name)
    return artefacts, moves, written


def _stale_tflite(export_dir: Path, written: set[str], say) -> list:
    """Moves that delete the `.tflite` files of an earlier export that this one did not write."""
    moves = []
    for part in PARTS:
        for quantization in QUANTIZATIONS:
            name = tflite_filename(part, quantization)
            if name not in written and (export_dir / name).exists():
                say(f"removing {name} of an earlier export")
                moves.append((None, export_dir / name, True))
    return moves


def _report(model, version, parts, export_dir, check, started, artefacts) -> dict:
    return {
        "model": {
            "name": model.name,
            "image_shape": list(model.image_shape),
            "latent_dim": model.latent_dim,
            "posterior": _part_name(model, "posterior"),
            "prior": _part_name(model, "prior"),
            "likelihood": _part_name(model, "likelihood"),
            "condition_dim": getattr(model, "condition_dim", None),
        },
        "version": version,
        "versions": {part: sorted({*_versions(export_dir / part), version}) for part in parts},
        "check_images": check,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - started, 1),
        "artefacts": artefacts,
    }


def _refuse_existing(export_dir: Path, parts, version: int, overwrite: bool) -> None:
    existing = [str(export_dir / p / str(version)) for p in parts]
    existing = [path for path in existing if Path(path).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"version {version} already exists ({', '.join(existing)}); "
            "choose another version or pass overwrite=True (--overwrite)"
        )


def export_vae(
    model: VAE,
    export_dir: str | Path,
    *,
    version: int = 1,
    tflite: bool = True,
    quantize: Sequence[str] = ("none",),
    scorer: bool = True,
    scorer_samples: int = DEFAULT_SCORER_SAMPLES,
    representative_images: np.ndarray | None = None,
    check_images: np.ndarray | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = print,
    representative_labels: np.ndarray | None = None,
    check_labels: np.ndarray | None = None,
) -> dict:
    """Writes the encoder, decoder and scorer as SavedModels and `.tflite` files, checked
    and atomic.

    Every artefact is written under a temporary name, checked against the Keras model there,
    and renamed into place only when all of them passed, so a failed export leaves nothing.

    Args:
        model: A built (trained) `VAE`, any combination of posterior, prior and likelihood.
        export_dir: Directory of the export (created if needed). TF Serving's model base
            paths are `export_dir/encoder`, `export_dir/decoder` and `export_dir/scorer`.
        version: TF Serving version number, the name of the version directories.
        tflite: Also write `encoder.tflite`, `decoder.tflite` (and `scorer.tflite`).
        quantize: TFLite variants among `"none"` (float32), `"dynamic"`, `"float16"`,
            `"int8"`; the scorer is written as float32 only.
        scorer: Also export the scorer (x -> elbo, log_likelihood).
        scorer_samples: K, importance samples of the scorer's `log_likelihood`.
        representative_images: `[N, *image_shape]` calibration images, required for `"int8"`
            (at most 1,000 are used).
        check_images: `[N, *image_shape]` real inputs for the self-check (at most 256 are
            used, 32 for the scorer); defaults to `representative_images`, else 16 uniform
            random images.
        overwrite: Replace an existing version. Without it an existing version is an error.
        progress: Receives one line per step; None is silent.
        representative_labels, check_labels: A conditional VAE's int class labels `[N]` of
            those images (default: the classes in turn, 0, 1, ..., C - 1, 0, ...).

    Returns:
        The report, also written to `export_dir/export_report.json`: versions, paths (relative
        to `export_dir`), sizes in bytes, signatures, the operators of the `.tflite` files,
        the errors against the Keras model and the scorer's statistics.

    Raises:
        ValueError: Invalid arguments.
        FileExistsError: The version exists and `overwrite` is False.
        ExportCheckError: An artefact disagreed with the model, or the scorer of this
            combination of parts does not convert to TFLite builtins; nothing was written.

    Example:
        >>> report = export_vae(vae, "export/mnist", quantize=["none", "int8"],
        ...                     representative_images=train_images[:500])
        >>> [a["path"] for a in report["artefacts"]][:4]
        ['encoder/1', 'decoder/1', 'scorer/1', 'encoder.tflite']
    """
    quantize = _check_arguments(model, version, tflite, quantize, progress)
    options = {"scorer_samples": _check_scorer_samples(scorer_samples), "overwrite": overwrite}
    say = progress or (lambda message: None)
    options["representative_images"] = _check_images(
        "representative_images", representative_images, model
    )
    options["representative_labels"] = _check_labels(
        "representative_labels", representative_labels, options["representative_images"], model,
        say,
    )  # fmt: skip
    check_images = _check_images("check_images", check_images, model)
    check_labels = _check_labels("check_labels", check_labels, check_images, model, say)
    if "int8" in quantize and options["representative_images"] is None:
        raise ValueError("quantize='int8' needs representative_images (calibration data).")
    export_dir, parts = Path(export_dir), PARTS if scorer else PARTS[:2]
    _refuse_existing(export_dir, parts, version, overwrite)
    representative = (options["representative_images"], options["representative_labels"])
    check_images, check_labels, source = _choose_check_images(
        model, (check_images, check_labels), representative, say
    )
    labels = None if check_labels is None else check_labels[:256]
    reference = build_reference(model, check_images[:256], scorer, labels)
    check = {"count": len(reference["encoder"]["inputs"]["x"]), "source": source}

    started = time.perf_counter()
    export_dir.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []  # removed at the end, whatever happens
    try:
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=export_dir))
        staged.append(staging)
        artefacts, moves, saved_model_dirs = _stage_saved_models(
            model, parts, export_dir, version, reference, staged, options, say
        )
        more, more_moves, written = _stage_tflite(
            model, quantize if tflite else (), saved_model_dirs, staging, reference, options, say
        )
        artefacts, moves = artefacts + more, moves + more_moves
        moves += _stale_tflite(export_dir, written, say)
        report = _report(model, version, parts, export_dir, check, started, artefacts)
        atomic.write_json(staging / "export_report.json", report)
        moves.append((staging / "export_report.json", export_dir / "export_report.json", True))
        atomic.commit(moves)
    finally:
        for path in staged:
            atomic.remove(path)
    say(f"exported version {version} to {export_dir} in {report['seconds']} s")
    return report
