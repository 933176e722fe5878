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
    """

    def __init__(
        self,
        base_url: str = "http://localhost:8501",
        encoder_name: str = "encoder",
        decoder_name: str = "decoder",
        version: int | None = None,
        timeout: float = 30.0,
        scorer_name: str = "scorer",
    ):
        self.base_url = base_url.rstrip("/")
        self.encoder_name = encoder_name
        self.decoder_name = decoder_name
        self.scorer_name = scorer_name
        self.version = version
        self.timeout = timeout

    # --------------------------------------------------------------------- requests only
    def predict_url(self, model_name: str) -> str:
        """`{base_url}/v1/models/{name}[/versions/{v}]:predict`."""
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.base_url}/v1/models/{model_name}{version}:predict"

    def build_encode_request(self, x: Any) -> tuple[str, dict]:
        """Request of encoder `serving_default`: images `[n, *image_shape]` in [0, 1]."""
        return self.predict_url(self.encoder_name), {
            "signature_name": "serving_default",
            "instances": _to_list(x),
        }

    def build_encode_sample_request(self, x: Any) -> tuple[str, dict]:
        """Request of encoder `encode_sample`: images `[n, *image_shape]`."""
        return self.predict_url(self.encoder_name), {
            "signature_name": "encode_sample",
            "instances": _to_list(x),
        }

    def build_decode_request(self, z: Any) -> tuple[str, dict]:
        """Request of decoder `serving_default`: latents `[n, latent_dim]`."""
        return self.predict_url(self.decoder_name), {
            "signature_name": "serving_default",
            "instances": _to_list(z),
        }

    def build_sample_request(self, num_samples: int) -> tuple[str, dict]:
        """Request of decoder `sample`: a scalar, so the columnar `inputs` format."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int. Received: {num_samples!r}")
        return self.predict_url(self.decoder_name), {
            "signature_name": "sample",
            "inputs": {"num_samples": num_samples},
        }

    def build_score_request(self, x: Any) -> tuple[str, dict]:
        """Request of scorer `serving_default`: images `[n, *image_shape]`."""
        return self.predict_url(self.scorer_name), {
            "signature_name": "serving_default",
            "instances": _to_list(x),
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

    def encode(self, x: Any) -> dict[str, Any]:
        """q(z|x): the posterior's parameters, e.g. `{"loc", "scale"}` `[n, latent_dim]`."""
        return self._call(self.build_encode_request(x))

    def encode_sample(self, x: Any) -> dict[str, Any]:
        """One z ~ q(z|x) per image: `{"z", **parameters}`."""
        return self._call(self.build_encode_sample_request(x))

    def decode(self, z: Any) -> dict[str, Any]:
        """p(x|z): `{"mean", ...}` and the likelihood's parameters (Bernoulli `logits`;
        Gaussian `loc`, `scale`; discretised logistic `logits`, `loc`, `log_scale`)."""
        return self._call(self.build_decode_request(z))

    def sample(self, num_samples: int) -> dict[str, Any]:
        """z from the model's prior, decoded: `{"z": [n, latent_dim], "mean": [n, ...]}`."""
        return self._call(self.build_sample_request(num_samples))

    def score(self, x: Any) -> dict[str, Any]:
        """Per image, in nats: `{"elbo": [n], "log_likelihood": [n]}` (higher is more
        typical of the training data; the lowest are the anomalies)."""
        return self._call(self.build_score_request(x))


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
