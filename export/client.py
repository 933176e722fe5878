"""A small REST client for the encoder, decoder and scorer served by TF Serving.

Standard library only (urllib, json); numpy is used when installed, so that results come back
as float32 arrays, and otherwise results are nested lists.

    client = VAEServingClient("http://localhost:8501")
    client.encode(images)          # the posterior's parameters: {"loc", "scale"} (diagonal)
                                   # or {"loc", "scale_tril"} (full covariance)
    client.encode_sample(images)   # {"z", **parameters}
    client.decode(z)               # {"mean": [n, *image_shape], **likelihood parameters}
    client.sample(16)              # {"z": [16, latent_dim], "mean": [16, *image_shape]}
    client.score(images)           # {"elbo": [n], "log_likelihood": [n]}, nats

A conditional VAE's export takes each image's (or latent's) class label as one more input:
pass `y=labels` (ints `[n]`) to `encode`, `encode_sample`, `decode` and `score`, and
`sample(y=labels)` for one sample per label. The labels are checked here (non-negative ints,
one per row, below `num_classes` when given), since the served graphs cannot refuse them.

`VQServingClient` does the same for a VQ-VAE export (codes, decoded codes, prior samples and
log-probabilities).

Each call has a `build_*_request` twin that returns `(url, body)` without sending anything.
Batched inputs go in TF Serving's row format (`"instances"`); `sample` takes a scalar, which
only the columnar format (`"inputs"`) can carry. Both response formats are parsed: rows
(`"predictions"`, a list of `{output: value}`) and columns (`"outputs"`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is optional
    np = None


class ServingError(RuntimeError):
    """TF Serving answered with an error (its message is included) or could not be reached."""


def _to_list(values: Any) -> list:
    """A JSON-ready nested list from a numpy array or nested sequences."""
    if hasattr(values, "tolist"):
        return values.tolist()
    if isinstance(values, Sequence) and not isinstance(values, str):
        return [_to_list(v) for v in values]
    return values


def _labels(y: Any, count: int | None, num_classes: int | None) -> list[int]:
    """y as a list of int labels: one per row (`count`), in [0, num_classes)."""
    labels = _to_list(y)
    if not isinstance(labels, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in labels
    ):
        raise ValueError(f"y must be a list of int class labels. Received: {labels!r}"[:200])
    if count is not None and len(labels) != count:
        raise ValueError(f"y must have one label per row ({count}). Received: {len(labels)}")
    high = num_classes if num_classes is not None else float("inf")
    bad = [v for v in labels if not 0 <= v < high]
    if bad or not labels:
        limit = f"[0, {num_classes})" if num_classes is not None else "non-negative"
        raise ValueError(f"y must be {limit} class labels, at least one. Received: {bad[:5]}")
    return labels


def _rows(values: Any, y: Any, name: str, num_classes: int | None) -> list:
    """TF Serving's row format: the bare rows, or `{name: row, "y": label}` with labels."""
    rows = _to_list(values)
    if y is None:
        return rows
    labels = _labels(y, len(rows), num_classes)
    return [{name: row, "y": label} for row, label in zip(rows, labels, strict=True)]


def _as_array(values: Any) -> Any:
    return np.asarray(values, dtype=np.float32) if np is not None else values


def parse_response(response: dict) -> dict[str, Any]:
    """`{output name: batch}` from a TF Serving predict response in either format.

    Args:
        response: The decoded JSON: `{"predictions": [{name: value}, ...]}` (row format, one
            entry per example) or `{"outputs": {name: batch}}` (columnar format).

    Returns:
        Each output as a float32 numpy array (or a nested list without numpy).
    """
    if "error" in response:
        raise ServingError(response["error"])
    if "predictions" in response:
        rows = response["predictions"]
        if rows and not isinstance(rows[0], dict):
            raise ServingError("unnamed single-output predictions; expected named outputs")
        names = rows[0].keys() if rows else ()
        return {name: _as_array([row[name] for row in rows]) for name in names}
    if "outputs" in response:
        outputs = response["outputs"]
        if not isinstance(outputs, dict):
            raise ServingError("unnamed single-output outputs; expected named outputs")
        return {name: _as_array(value) for name, value in outputs.items()}
    raise ServingError(f"not a predict response: keys {sorted(response)}")


class VAEServingClient:
    """Client of the `encoder`, `decoder` and `scorer` models of a TF Serving REST endpoint.

    Args:
        base_url: The REST endpoint, `http://host:8501`.
        encoder_name: Model name of the encoder in `models.config`.
        decoder_name: Model name of the decoder.
        scorer_name: Model name of the scorer.
        version: Pin a model version; None lets the server choose (the latest by default).
        timeout: Seconds per request.
        num_classes: A conditional export's number of classes C (checks the labels `y`).
    """

    def __init__(
        self,
        base_url: str = "http://localhost:8501",
        encoder_name: str = "encoder",
        decoder_name: str = "decoder",
        version: int | None = None,
        timeout: float = 30.0,
        scorer_name: str = "scorer",
        num_classes: int | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.encoder_name = encoder_name
        self.decoder_name = decoder_name
        self.scorer_name = scorer_name
        self.version = version
        self.timeout = timeout
        self.num_classes = num_classes

    # --------------------------------------------------------------------- requests only
    def predict_url(self, model_name: str) -> str:
        """`{base_url}/v1/models/{name}[/versions/{v}]:predict`."""
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.base_url}/v1/models/{model_name}{version}:predict"

    def build_encode_request(self, x: Any, y: Any = None) -> tuple[str, dict]:
        """Request of encoder `serving_default`: images `[n, *image_shape]` in [0, 1] (and
        their labels y `[n]` for a conditional export)."""
        return self.predict_url(self.encoder_name), {
            "signature_name": "serving_default",
            "instances": _rows(x, y, "x", self.num_classes),
        }

    def build_encode_sample_request(self, x: Any, y: Any = None) -> tuple[str, dict]:
        """Request of encoder `encode_sample`: images `[n, *image_shape]` (and labels y)."""
        return self.predict_url(self.encoder_name), {
            "signature_name": "encode_sample",
            "instances": _rows(x, y, "x", self.num_classes),
        }

    def build_decode_request(self, z: Any, y: Any = None) -> tuple[str, dict]:
        """Request of decoder `serving_default`: latents `[n, latent_dim]` (and labels y)."""
        return self.predict_url(self.decoder_name), {
            "signature_name": "serving_default",
            "instances": _rows(z, y, "z", self.num_classes),
        }

    def build_sample_request(self, num_samples: int | None = None, y: Any = None) -> tuple:
        """Request of decoder `sample`: a scalar `num_samples`, so the columnar `inputs`
        format; for a conditional export the labels y `[n]` instead (one sample per label)."""
        if y is not None:
            if num_samples is not None:
                raise ValueError("Give num_samples or the labels y (one sample each), not both.")
            inputs = {"y": _labels(y, None, self.num_classes)}
        elif isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int. Received: {num_samples!r}")
        else:
            inputs = {"num_samples": num_samples}
        return self.predict_url(self.decoder_name), {"signature_name": "sample", "inputs": inputs}

    def build_score_request(self, x: Any, y: Any = None) -> tuple[str, dict]:
        """Request of scorer `serving_default`: images `[n, *image_shape]` (and labels y)."""
        return self.predict_url(self.scorer_name), {
            "signature_name": "serving_default",
            "instances": _rows(x, y, "x", self.num_classes),
        }

    # -------------------------------------------------------------------------- calls
    def post(self, url: str, body: dict) -> dict:
        """POSTs `body` as JSON and returns the decoded JSON response."""
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            raise ServingError(f"{url}: HTTP {error.code}: {detail}") from error
        except urllib.error.URLError as error:
            raise ServingError(f"{url}: {error.reason}") from error

    def _call(self, request: tuple[str, dict]) -> dict[str, Any]:
        return parse_response(self.post(*request))

    def encode(self, x: Any, y: Any = None) -> dict[str, Any]:
        """q(z|x) (q(z|x, y) given labels): the posterior's parameters, e.g. `{"loc",
        "scale"}` `[n, latent_dim]`."""
        return self._call(self.build_encode_request(x, y))

    def encode_sample(self, x: Any, y: Any = None) -> dict[str, Any]:
        """One z ~ q(z|x) (or q(z|x, y)) per image: `{"z", **parameters}`."""
        return self._call(self.build_encode_sample_request(x, y))

    def decode(self, z: Any, y: Any = None) -> dict[str, Any]:
        """p(x|z) (or p(x|z, y)): `{"mean", ...}` and the likelihood's parameters (Bernoulli
        `logits`; Gaussian `loc`, `scale`; discretised logistic `logits`, `loc`, `log_scale`)."""
        return self._call(self.build_decode_request(z, y))

    def sample(self, num_samples: int | None = None, y: Any = None) -> dict[str, Any]:
        """z from the model's prior (p(z|y) per label y), decoded: `{"z": [n, latent_dim],
        "mean": [n, ...]}`."""
        return self._call(self.build_sample_request(num_samples, y))

    def score(self, x: Any, y: Any = None) -> dict[str, Any]:
        """Per image, in nats: `{"elbo": [n], "log_likelihood": [n]}` (of log p(x|y) given
        labels; higher is more typical of the training data; the lowest are the anomalies)."""
        return self._call(self.build_score_request(x, y))


class VQServingClient(VAEServingClient):
    """REST client for a VQ-VAE export (`keras-vae export` of a `--model vqvae` or
    `vqvae-prior` run), served under `models.vqvae.config`'s names.

        client = VQServingClient("http://localhost:8501")
        client.encode(images)        # {"codes": int [n, h, w], "latents": [n, h, w, D]}
        client.decode(codes)         # {"mean": [n, *image_shape], **likelihood parameters}
        client.sample(16)            # {"codes": [16, h, w], "images": [16, *image_shape]}
        client.log_prob(codes)       # {"log_prob": [n]}, nats, log p_prior(codes)

    Args:
        base_url: The REST endpoint.
        encoder_name, decoder_name, prior_name: Model names in the serving config.
        version, timeout: As in `VAEServingClient`.
    """

    def __init__(self, base_url: str = "http://localhost:8501", encoder_name: str = "vq_encoder",
                 decoder_name: str = "vq_decoder", prior_name: str = "vq_prior",
                 version: int | None = None, timeout: float = 30.0):  # fmt: skip
        super().__init__(base_url, encoder_name, decoder_name, version, timeout)
        self.prior_name = prior_name

    def build_decode_request(self, codes: Any) -> tuple[str, dict]:
        """Request of decoder `serving_default`: int codes `[n, h, w]`."""
        return self.predict_url(self.decoder_name), {
            "signature_name": "serving_default",
            "instances": _to_list(codes),
        }

    def build_sample_request(self, num_samples: int) -> tuple[str, dict]:
        """Request of prior `serving_default`: a scalar, so the columnar `inputs` format."""
        url, body = super().build_sample_request(num_samples)
        return self.predict_url(self.prior_name), {**body, "signature_name": "serving_default"}

    def build_log_prob_request(self, codes: Any) -> tuple[str, dict]:
        """Request of prior `log_prob`: int codes `[n, h, w]`."""
        return self.predict_url(self.prior_name), {
            "signature_name": "log_prob",
            "instances": _to_list(codes),
        }

    def sample(self, num_samples: int) -> dict[str, Any]:
        """Codes drawn from the prior by ancestral sampling, and their images E[x|z_q]."""
        return self._call(self.build_sample_request(num_samples))

    def log_prob(self, codes: Any) -> dict[str, Any]:
        """log p_prior(codes) in nats, `{"log_prob": [n]}`."""
        return self._call(self.build_log_prob_request(codes))

    def encode_sample(self, x: Any) -> dict[str, Any]:
        raise ServingError("a VQ-VAE encoder is deterministic: use encode(x)")

    def score(self, x: Any) -> dict[str, Any]:
        raise ServingError("a VQ-VAE export has no scorer: the prior's log_prob(codes) plus the "
                           "decoder's log p(x|codes) bound log p(x)")  # fmt: skip


if __name__ == "__main__":  # python export/client.py [base_url]: sample 2 images
    import sys

    result = VAEServingClient(*sys.argv[1:2]).sample(2)
    print({name: getattr(value, "shape", None) for name, value in result.items()})
