"""Writes export/examples/*.json: a REST request and its response for every served signature.

    python export/make_examples.py export/mnist --dataset binarized_mnist \
        --data-dir ../shared/tensorflow_datasets
    python export/make_examples.py export/vq ...    # a VQ-VAE export: the vq_*.json files
    python export/make_examples.py export/cvae --images x.npy --label 7 \
        --output export/examples/conditional     # a conditional VAE's export: labels y too

The request bodies are built by `export/client.py`, exactly as the client sends them. Each is
then executed here, in-process, against the exported SavedModel: the JSON inputs are turned
into tensors as TF Serving does (row format `instances` or columnar `inputs`), checked against
the signature's input specs, run through the loaded signature, and the outputs written in TF
Serving's response format (`predictions` for row requests, `outputs` for columnar ones). The
response values are rounded to 5 decimals to keep the files small.

Only TensorFlow is needed to run the signatures; `keras_vae.data` is imported only to read the
images of `--dataset` (use `--images file.npy` to do without it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent


def request_inputs(body: dict, specs: dict[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    """The input arrays of a predict request, decoded as TF Serving decodes them.

    Args:
        body: `{"signature_name", "instances": [...]}` (row format: one entry per example, a
            bare value when the signature has one input, else `{input: value}`) or
            `{"signature_name", "inputs": ...}` (columnar: a bare value or `{input: batch}`).
        specs: The signature's input specs (`structured_input_signature[1]`).

    Returns:
        `{input name: array of the spec's dtype}`.
    """
    names = list(specs)
    if "instances" in body:
        rows = body["instances"]
        if isinstance(rows[0], dict):
            values = {name: [row[name] for row in rows] for name in names}
        elif len(names) == 1:
            values = {names[0]: rows}
        else:
            raise ValueError(f"instances need named inputs for a signature with inputs {names}")
    else:
        columns = body["inputs"]
        values = columns if isinstance(columns, dict) else {names[0]: columns}
    if set(values) != set(names):
        raise ValueError(f"request inputs {sorted(values)} differ from the signature's {names}")
    return {name: np.asarray(values[name], specs[name].dtype.as_numpy_dtype) for name in names}


def predict_in_process(loaded, body: dict) -> dict:
    """Runs a REST predict request body against a loaded SavedModel; returns the response."""
    signature = loaded.signatures[body.get("signature_name", "serving_default")]
    specs = signature.structured_input_signature[1]
    inputs = request_inputs(body, specs)
    for name, spec in specs.items():
        if not spec.is_compatible_with(tf.constant(inputs[name])):
            raise ValueError(f"input {name!r} of shape {inputs[name].shape} does not fit {spec}")
    outputs = {name: value.numpy() for name, value in signature(**inputs).items()}
    if "instances" in body:
        batch = len(next(iter(outputs.values())))
        return {
            "predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(batch)]
        }
    return {"outputs": {name: value.tolist() for name, value in outputs.items()}}


def _rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _load_client():
    spec = importlib.util.spec_from_file_location("client", HERE / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_examples(
    export_dir: Path, images: np.ndarray, output: Path, label: int | None = None
) -> list[Path]:
    """Writes `<name>.request.json` and `.response.json` for the served signatures
    (encode, encode_sample, decode, sample, and score when the export has a scorer); a
    conditional VAE's requests carry the class `label` (default 0) as `y`."""
    num_classes = condition_dim(export_dir)
    client = _load_client().VAEServingClient(num_classes=num_classes)
    y = None if num_classes is None else [label or 0]
    encoder = tf.saved_model.load(str(_latest(export_dir / "encoder")))
    decoder = tf.saved_model.load(str(_latest(export_dir / "decoder")))
    x = images[:1]
    encoded = predict_in_process(encoder, client.build_encode_request(x, y)[1])
    z = np.asarray([encoded["predictions"][0]["loc"]], np.float32)
    requests = {
        "encode": (encoder, client.build_encode_request(x, y)),
        "encode_sample": (encoder, client.build_encode_sample_request(x, y)),
        "decode": (decoder, client.build_decode_request(z, y)),
        "sample": (decoder, client.build_sample_request(None if y else 1, y)),
    }
    if (export_dir / "scorer").is_dir():
        scorer = tf.saved_model.load(str(_latest(export_dir / "scorer")))
        requests["score"] = (scorer, client.build_score_request(x, y))
    return _write(requests, client, output)


def write_vq_examples(export_dir: Path, images: np.ndarray, output: Path) -> list[Path]:
    """Writes `vq_<name>.request.json` and `.response.json` for a VQ-VAE export: vq_encode
    (x -> codes, latents), vq_decode (codes -> mean), and with a prior vq_sample
    (num_samples -> codes, images) and vq_log_prob (codes -> log p_prior)."""
    client = _load_client().VQServingClient()
    encoder = tf.saved_model.load(str(_latest(export_dir / "encoder")))
    decoder = tf.saved_model.load(str(_latest(export_dir / "decoder")))
    x = images[:1]
    codes = np.asarray(predict_in_process(encoder, client.build_encode_request(x)[1])
                       ["predictions"][0]["codes"], np.int32)[None]  # fmt: skip
    requests = {
        "vq_encode": (encoder, client.build_encode_request(x)),
        "vq_decode": (decoder, client.build_decode_request(codes)),
    }
    if (export_dir / "prior").is_dir():
        prior = tf.saved_model.load(str(_latest(export_dir / "prior")))
        requests["vq_sample"] = (prior, client.build_sample_request(1))
        requests["vq_log_prob"] = (prior, client.build_log_prob_request(codes))
    return _write(requests, client, output)


def _write(requests: dict, client, output: Path) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (loaded, (url, body)) in requests.items():
        response = predict_in_process(loaded, body)
        for kind, data in (("request", body), ("response", _rounded(response))):
            path = output / f"{name}.{kind}.json"
            path.write_text(json.dumps(data) + "\n")
            written.append(path)
        print(f"{name:<14} POST {url.replace(client.base_url, '')}")
    return written


def condition_dim(export_dir: Path) -> int | None:
    """The number of classes of a conditional VAE's export (its report), else None."""
    report = export_dir / "export_report.json"
    if not report.is_file():
        return None
    return json.loads(report.read_text())["model"].get("condition_dim")


def is_vq_export(export_dir: Path) -> bool:
    """Whether `export_dir` holds a VQ-VAE export (its report names a codebook)."""
    report = export_dir / "export_report.json"
    return report.is_file() and "codebook_size" in json.loads(report.read_text())["model"]


def _latest(base: Path) -> Path:
    versions = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit())
    if not versions:
        raise FileNotFoundError(f"no version directory in {base}")
    return base / str(versions[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export_dir", type=Path, help="directory written by `keras-vae export`")
    parser.add_argument("--images", type=Path, help=".npy file of images [N, H, W, C]")
    parser.add_argument("--dataset", default="binarized_mnist", help="keras_vae dataset name")
    parser.add_argument("--data-dir", help="tfds data directory")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output", type=Path, default=HERE / "examples")
    parser.add_argument("--label", type=int, default=0, help="a conditional export's class y")
    args = parser.parse_args()
    if args.images:
        images = np.load(args.images).astype(np.float32)
    else:
        from keras_vae.data.pipeline import load_images

        images = load_images(args.dataset, args.split, data_dir=args.data_dir, limit=1)
    if is_vq_export(args.export_dir):
        written = write_vq_examples(args.export_dir, images, args.output)
    else:
        written = write_examples(args.export_dir, images, args.output, args.label)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1e3:.1f} kB)")


if __name__ == "__main__":
    main()
