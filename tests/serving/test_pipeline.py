"""keras_vae.serving.pipeline: the one export pipeline (staging, checks, atomic commit, report,
clean-up), on a part that is no model kind at all: y = w x + b with known weights."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_vae.serving import pipeline
from keras_vae.serving.checks import ExportCheckError
from keras_vae.serving.signatures import function

W, B = 1.5, -0.25
X = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(4, 3)
_ALIVE = []  # concrete functions hold their variables weakly


def _affine_part(name="affine", bound=1e-6, calls=None):
    w, b = tf.Variable(W), tf.Variable(B)
    _ALIVE.append((w, b))
    spec = tf.TensorSpec([None, 3], tf.float32, name="x")
    signatures = {
        "serving_default": function(lambda x: {"y": w * x + b}, spec),
        "noisy": function(lambda x: {"y": w * x + b + tf.random.normal(tf.shape(x))}, spec),
    }

    def check(runners, described, quantization, label):
        if calls is not None:
            calls.append((label, quantization, sorted(described)))
        error = float(np.max(np.abs(runners["serving_default"](x=X)["y"] - (W * X + B))))
        if error >= bound:
            raise ExportCheckError(f"{label}: y is off by {error}")
        return {"errors": {"serving_default/y": error}, "checked": "max abs error",
                "checked_error": error, "bound": bound}  # fmt: skip

    calibration = lambda keys: lambda: iter([(k, {"x": X}) for k in keys])  # noqa: E731
    return pipeline.ExportPart(name, signatures, check, ("none", "dynamic", "int8"), calibration)


def _export(directory, parts=None, **options):
    return pipeline.export_parts(
        parts or [_affine_part()], directory, model={"name": "affine"},
        check_images={"count": len(X), "source": "test"}, progress=None, **options,
    )  # fmt: skip


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_layout_report_and_artefacts_agree_with_the_closed_form(tmp_path):
    calls = []
    report = _export(tmp_path, [_affine_part(calls=calls)], quantize=["none", "dynamic"])
    assert [a["path"] for a in report["artefacts"]] == [
        "affine/1", "affine.tflite", "affine.dynamic.tflite"]  # fmt: skip
    assert [c[:2] for c in calls] == [("affine/1", "none"), ("affine.tflite", "none"),
                                      ("affine.dynamic.tflite", "dynamic")]  # fmt: skip
    on_disk = json.loads((tmp_path / "export_report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert report["versions"] == {"affine": [1]} and report["model"] == {"name": "affine"}
    for artefact in report["artefacts"]:
        assert artefact["checked_error"] < artefact["bound"]
        assert set(artefact["signatures"]) == {"serving_default", "noisy"}
        assert artefact["bytes"] > 0
    loaded = tf.saved_model.load(str(tmp_path / "affine" / "1"))
    y = loaded.signatures["serving_default"](x=tf.constant(X))["y"].numpy()
    np.testing.assert_allclose(y, W * X + B, rtol=1e-6)
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_a_quantization_a_part_does_not_list_is_skipped_for_it(tmp_path):
    plain = _affine_part("plain")
    only_float = pipeline.ExportPart("exact", _affine_part().signatures, plain.check)
    report = _export(tmp_path, [plain, only_float], quantize=["none", "dynamic"])
    assert [a["path"] for a in report["artefacts"]] == [
        "plain/1", "exact/1", "plain.tflite", "exact.tflite", "plain.dynamic.tflite"]  # fmt: skip


def test_existing_version_needs_overwrite_and_a_new_one_adds(tmp_path):
    _export(tmp_path, tflite=False)
    before = {p: (tmp_path / p).read_bytes() for p in _files(tmp_path)}
    with pytest.raises(FileExistsError, match="version 1 already exists"):
        _export(tmp_path, tflite=False)
    assert {p: (tmp_path / p).read_bytes() for p in _files(tmp_path)} == before
    assert _export(tmp_path, version=2, tflite=False)["versions"] == {"affine": [1, 2]}
    assert _export(tmp_path, version=2, tflite=False, overwrite=True)["version"] == 2


@pytest.mark.parametrize("failure", ["check", "interrupt"])
def test_a_failed_or_interrupted_export_leaves_the_previous_one(tmp_path, monkeypatch, failure):
    _export(tmp_path, quantize=["none"])
    before = {p: (tmp_path / p).read_bytes() for p in _files(tmp_path)}
    if failure == "interrupt":

        def interrupt(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(pipeline, "convert_tflite", interrupt)  # after the SavedModel
        with pytest.raises(KeyboardInterrupt):
            _export(tmp_path, version=2)
    else:
        with pytest.raises(ExportCheckError, match="affine/2: y is off"):
            _export(tmp_path, [_affine_part(bound=0.0)], version=2)
    assert {p: (tmp_path / p).read_bytes() for p in _files(tmp_path)} == before
    assert not (tmp_path / "affine" / "2").exists() and not list(tmp_path.rglob(".tmp-*"))


def test_tflite_files_of_an_earlier_export_are_removed(tmp_path):
    _export(tmp_path, quantize=["none", "dynamic"])
    (tmp_path / "other.tflite").write_bytes(b"listed by the earlier report")
    report = json.loads((tmp_path / "export_report.json").read_text())
    report["artefacts"].append({"kind": "tflite", "path": "other.tflite"})
    (tmp_path / "export_report.json").write_text(json.dumps(report))
    (tmp_path / "mine.tflite").write_bytes(b"not ours: kept")
    _export(tmp_path, version=2, quantize=["none"])
    assert sorted(p.name for p in tmp_path.glob("*.tflite")) == ["affine.tflite", "mine.tflite"]


def test_int8_keeps_serving_default_when_all_signatures_fail(tmp_path, monkeypatch):
    convert, calls, lines = pipeline.convert_tflite, [], []

    def refuse_many(saved_model_dir, keys, quantization="none", dataset=None):
        if quantization == "int8" and len(keys) > 1:
            raise RuntimeError("no int8 kernel")
        return convert(saved_model_dir, keys, quantization, dataset)

    monkeypatch.setattr(pipeline, "convert_tflite", refuse_many)
    report = pipeline.export_parts(
        [_affine_part(bound=0.1, calls=calls)], tmp_path, model={}, check_images={},
        quantize=["int8"], progress=lines.append,
    )  # fmt: skip
    assert list(report["artefacts"][-1]["signatures"]) == ["serving_default"]
    assert calls[-1] == ("affine.int8.tflite", "int8", ["serving_default"])
    assert any("keeping serving_default only" in line for line in lines)


def test_a_part_refusal_replaces_the_converter_error(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("op XYZ is neither a TFLite builtin nor custom")

    monkeypatch.setattr(pipeline, "convert_tflite", fail)
    part = _affine_part()
    part = pipeline.ExportPart(part.name, part.signatures, part.check, refusal="no TFLite: pass "
                               "tflite=False")  # fmt: skip
    with pytest.raises(ExportCheckError, match="^no TFLite: pass tflite=False$"):
        _export(tmp_path, [part])
    assert not (tmp_path / "affine" / "1").exists()


@pytest.mark.parametrize(
    "options, match",
    [({"version": 0}, "version must be a positive int"),
     ({"quantize": ["int4"]}, "quantize must be"),
     ({"tflite": False, "quantize": ["dynamic"]}, "needs tflite=True")],
)  # fmt: skip
def test_bad_arguments_are_one_line_errors(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        _export(tmp_path, **options)
    assert not list(tmp_path.iterdir())


def test_report_lines_show_every_artefact_with_its_bound(tmp_path):
    report = _export(tmp_path, quantize=["none"])
    lines = pipeline.report_lines(report)
    assert len(lines) == 3 and "affine.tflite" in lines[2] and "1e-06" in lines[2]
