"""One export pipeline for every model kind: staging, self-checks, atomic commit, report.

A kind describes its export as a list of `ExportPart`s, one per served model (a VAE: encoder,
decoder, scorer; a VQ-VAE: encoder, decoder, prior), each with its signature functions and a
check against the Keras model. `export_parts` then writes, for every kind alike:

```
EXPORT_DIR/<part>/<version>/       a SavedModel per part (TF Serving's base path: EXPORT_DIR/<part>)
EXPORT_DIR/<part>[.<q>].tflite     the TFLite files of the requested quantizations q
EXPORT_DIR/export_report.json      what was written: sizes, signatures, operators, checks
```

Every SavedModel is first written under a name that TF Serving ignores
(`<part>/.tmp-<version>-xxxx`: version directories must be integers) and every other file in
a hidden staging directory; each artefact is checked there (`ExportPart.check`, and the
SavedModels also through the graph-mode loader TF Serving uses, `ExportPart.graph_check`).
Only when every artefact passed are they renamed into place together (`atomic.commit`), so a
failed or interrupted export leaves the previous one as it was. An existing version is replaced
only with `overwrite=True`. The `.tflite` files and the report describe the latest export:
each export removes the `.tflite` files of an earlier one that it did not write.

Every artefact of the report has the same fields: `part`, `kind` (saved_model or tflite),
`quantization`, `path` (relative to EXPORT_DIR), `bytes`, `signatures` (their inputs and
outputs), `errors` (every measured difference from the Keras model), `checked` (the measure
that is bounded), `checked_error`, `bound` (a check passes when `checked_error < bound`),
`operators` (a `.tflite` file's builtin ops) and what the part's check adds.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from keras_vae._internal import atomic, quiet
from keras_vae.serving.checks import ExportCheckError, saved_model_runners, tflite_runners
from keras_vae.serving.signatures import tracked_module
from keras_vae.serving.tflite import (
    QUANTIZATIONS,
    convert_tflite,
    tflite_filename,
    tflite_operators,
)

#: `check(runners, described, quantization, label) -> fields`: runs an artefact's signatures
#: (`runners`: callables on NumPy arrays by signature key; `described`: their inputs and
#: outputs) and returns at least `errors`, `checked`, `checked_error` and `bound`; raises
#: `ExportCheckError` when the artefact fails.
Check = Callable[[dict, dict, str, str], dict]


@dataclasses.dataclass(frozen=True)
class ExportPart:
    """One served model of an export.

    Attributes:
        name: The part's name: its SavedModel base path `EXPORT_DIR/<name>` and its
            `<name>.tflite` files.
        signatures: `{signature key: concrete function}`; the first key of a `.tflite` file
            that cannot hold them all is `serving_default`.
        check: Compares an artefact with the Keras model (see `Check`).
        quantizations: The TFLite variants this part is written in (of `QUANTIZATIONS`);
            a requested one that is not listed is skipped for this part.
        calibration: `keys -> representative dataset` (a generator function of
            `(signature key, {input: array})`), needed for int8.
        graph_check: `saved_model_dir -> errors`, a check through TF Serving's graph-mode
            loader (`checks.run_in_session`); raises `ExportCheckError`.
        refusal: The one-line error when the part does not convert to TFLite builtins; None
            lets the converter's error through.
    """

    name: str
    signatures: dict[str, Any]
    check: Check
    quantizations: tuple[str, ...] = ("none",)
    calibration: Callable[[tuple[str, ...]], Callable] | None = None
    graph_check: Callable[[Path], dict] | None = None
    refusal: str | None = None


# --------------------------------------------------------------------------- arguments
def check_export_arguments(version: object, tflite: bool, quantize, progress) -> tuple[str, ...]:
    """The requested quantizations, unique and in order; a one-line error for a bad value."""
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
    return tuple(dict.fromkeys(quantize))


def refuse_existing(export_dir: str | Path, names: Sequence[str], version: int,
                    overwrite: bool) -> None:  # fmt: skip
    """Raises FileExistsError when a part's `version` exists and `overwrite` is False."""
    existing = [Path(export_dir) / name / str(version) for name in names]
    existing = [str(path) for path in existing if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"version {version} already exists ({', '.join(existing)}); "
            "choose another version or pass overwrite=True (--overwrite)"
        )


# ------------------------------------------------------------------------ one artefact
def _artefact(part, kind, quantization, path, size, described, fields, **extra) -> dict:
    return {"part": part, "kind": kind, "quantization": quantization, "path": path,
            "bytes": size, "signatures": described, **fields, **extra}  # fmt: skip


def _check_keys(label: str, described: dict, keys: tuple[str, ...]) -> None:
    if sorted(described) != sorted(keys):
        raise ExportCheckError(f"{label} holds the signatures {sorted(described)}, not the "
                               f"{sorted(keys)} it was written with")  # fmt: skip


def _stage_saved_model(part: ExportPart, export_dir: Path, version: int, staged: list) -> dict:
    """Writes and checks one SavedModel under `<part>/.tmp-<version>-xxxx`."""
    (export_dir / part.name).mkdir(exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir / part.name))
    staged.append(temp)
    temp.chmod(0o755)  # mkdtemp makes it 0700; the server may run as another user
    tf.saved_model.save(tracked_module(part.signatures), str(temp), signatures=part.signatures)
    runners, described = saved_model_runners(tf.saved_model.load(str(temp)))
    label = f"{part.name}/{version}"
    _check_keys(label, described, tuple(part.signatures))
    fields = part.check(runners, described, "none", label)
    if part.graph_check is not None:
        fields["errors"] = {**fields["errors"], **part.graph_check(temp)}
    artefact = _artefact(part.name, "saved_model", "none", label, _size(temp), described, fields)
    return {"artefact": artefact, "staged": temp}


def _convert(part: ExportPart, quantization: str, saved_model_dir: Path, name: str, say):
    """The flatbuffer of one part and the signature keys it holds."""
    keys = tuple(part.signatures)
    dataset = None
    try:
        if quantization == "int8":
            dataset = part.calibration(keys)
        return convert_tflite(saved_model_dir, keys, quantization, dataset), keys
    except Exception as error:  # a converter error names a TF op
        if part.refusal is not None:
            raise ExportCheckError(part.refusal) from error
        if quantization != "int8" or keys == ("serving_default",):
            raise
        # should a converter refuse to calibrate the sampling signatures' random ops, keep the
        # deterministic signature rather than fail the export (reported in its signatures)
        say(f"{name}: int8 conversion of {keys} failed ({type(error).__name__}); "
            "keeping serving_default only")  # fmt: skip
        keys = ("serving_default",)
        return convert_tflite(saved_model_dir, keys, quantization, part.calibration(keys)), keys


def _stage_tflite(part, quantization, saved_model_dir, staging, say) -> dict:
    """Converts one part to `staging/<name>.tflite` and checks it with the LiteRT interpreter."""
    name = tflite_filename(part.name, quantization)
    with quiet.tflite_notes_hidden():  # the converter's and the runtime's notes on stderr
        content, keys = _convert(part, quantization, saved_model_dir, name, say)
        operators = tflite_operators(content)
        custom = [op for op in operators if op.startswith("CUSTOM")]
        if custom:
            raise ExportCheckError(f"{name} needs non-builtin (Flex/custom) ops: {custom}")
        atomic.write_bytes(staging / name, content)
        runners, described = tflite_runners(staging / name)
        _check_keys(name, described, keys)
        fields = part.check(runners, described, quantization, name)
    return _artefact(part.name, "tflite", quantization, name, len(content), described, fields,
                     operators=operators)  # fmt: skip


# ------------------------------------------------------------------------------ export
def export_parts(
    parts: Sequence[ExportPart],
    export_dir: str | Path,
    *,
    model: dict,
    check_images: dict,
    version: int = 1,
    tflite: bool = True,
    quantize: Sequence[str] = ("none",),
    overwrite: bool = False,
    progress: Callable[[str], None] | None = print,
) -> dict:
    """Writes, checks and commits the SavedModels and `.tflite` files of `parts`.

    Args:
        parts: The kind's served models.
        export_dir: The export directory (created if needed).
        model: What the report says of the model (name, shapes, parts).
        check_images: What the report says of the check images (count, source).
        version: TF Serving version number, the name of the version directories.
        tflite: Also write the `.tflite` files.
        quantize: TFLite variants among `QUANTIZATIONS`; each part is written in those of
            them it lists in `ExportPart.quantizations`.
        overwrite: Replace an existing version; without it an existing version is an error.
        progress: Receives one line per step; None is silent.

    Returns:
        The report, also written to `export_dir/export_report.json`.

    Raises:
        ValueError: Invalid arguments. FileExistsError: The version exists.
        ExportCheckError: An artefact disagreed with the model; nothing was written.
    """
    quantize = check_export_arguments(version, tflite, quantize, progress)
    say = progress or (lambda message: None)
    export_dir = Path(export_dir)
    refuse_existing(export_dir, [p.name for p in parts], version, overwrite)
    started = time.perf_counter()
    export_dir.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []  # removed at the end, whatever happens
    try:
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=export_dir))
        staged.append(staging)
        artefacts, moves, saved = [], [], {}
        for part in parts:
            say(f"writing and checking the {part.name} SavedModel ...")
            written = _stage_saved_model(part, export_dir, version, staged)
            artefacts.append(written["artefact"])
            saved[part.name] = written["staged"]
            moves.append((written["staged"], export_dir / part.name / str(version), overwrite))
            say(summary(artefacts[-1]))
        for quantization in quantize if tflite else ():
            for part in parts:
                if quantization not in part.quantizations:
                    continue
                say(f"converting and checking {tflite_filename(part.name, quantization)} ...")
                artefacts.append(_stage_tflite(part, quantization, saved[part.name], staging, say))
                say(summary(artefacts[-1]))
                name = artefacts[-1]["path"]
                moves.append((staging / name, export_dir / name, True))
        moves += _stale_tflite(export_dir, parts, {a["path"] for a in artefacts}, say)
        report = {
            "model": model,
            "version": version,
            "versions": {
                p.name: sorted({*_versions(export_dir / p.name), version}) for p in parts
            },  # fmt: skip
            "check_images": check_images,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.perf_counter() - started, 1),
            "artefacts": artefacts,
        }
        atomic.write_json(staging / "export_report.json", report)
        moves.append((staging / "export_report.json", export_dir / "export_report.json", True))
        atomic.commit(moves)
    finally:
        for path in staged:
            atomic.remove(path)
    say(f"exported version {version} to {export_dir} in {report['seconds']} s")
    return report


def _stale_tflite(export_dir: Path, parts, written: set[str], say) -> list:
    """Moves that delete the `.tflite` files of an earlier export that this one did not write:
    those its report lists and those named after this export's parts."""
    names = {tflite_filename(p.name, q) for p in parts for q in QUANTIZATIONS}
    try:
        earlier = json.loads((export_dir / "export_report.json").read_text())
        names |= {a["path"] for a in earlier["artefacts"] if a.get("kind") == "tflite"}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no earlier report, or not ours
    moves = []
    for name in sorted(names - written):
        if "/" not in name and (export_dir / name).is_file():
            say(f"removing {name} of an earlier export")
            moves.append((None, export_dir / name, True))
    return moves


def _versions(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------ report
def format_size(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def summary(artefact: dict) -> str:
    """One line of progress: path, size, the checked measure and its bound."""
    return (
        f"  {artefact['path']:<26} {format_size(artefact['bytes']):>9}  "
        f"{artefact['checked']} {artefact['checked_error']:.2g} (bound {artefact['bound']:g})"
    )


def report_lines(report: dict) -> list[str]:
    """The table `keras-vae export` prints of a report, the same for every kind."""
    lines = [f"\n{'artefact':<28} {'size':>9}  {'checked':>13}  bound  measure"]
    for artefact in report["artefacts"]:
        lines.append(
            f"{artefact['path']:<28} {format_size(artefact['bytes']):>9}  "
            f"{artefact['checked_error']:>13.2g}  {artefact['bound']:<5g}  {artefact['checked']}"
        )
    return lines
