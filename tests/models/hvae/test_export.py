"""Export of a hierarchical VAE: every artefact against the Keras model and against an
independent NumPy forward pass of the hierarchy, the signatures as documented, the sampling
signatures' distributions, the kind's own log-likelihood evaluation, and a failed check that
leaves nothing.

One tiny two-layer model (6x5 binary images, latents 3 and 2, one ELU layer per block),
trained a few steps on noisy copies of four patterns, is exported once per module as float32
SavedModels and float32, float16 and int8 `.tflite` files. The CLI export of a trained run is in
test_hvae_kind.py.
"""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from hvae_references import cell_scale
from scipy import special, stats

from keras_vae.models.hvae import checks, export, importance_sampled_log_likelihood, mlp_hvae
from keras_vae.serving.checks import ExportCheckError, saved_model_runners

SHAPE = (6, 5, 1)
D1, D2 = 3, 2
MIN_SCALE = 1e-4


def _patterns(n, seed=0):
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(7).uniform(size=(4, *SHAPE)) > 0.5
    flips = rng.uniform(size=(n, *SHAPE)) < 0.05
    return (prototypes[rng.integers(0, 4, size=n)] ^ flips).astype("float32")


def _model():
    """The tiny model, trained a few steps (no XLA: compiling would cost more than the steps)."""
    keras.utils.set_random_seed(0)
    model = mlp_hvae(SHAPE, latent_dims=(D1, D2), hidden_units=[[16], [8]], seed=3)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)
    model.fit(_patterns(400), epochs=2, batch_size=50, verbose=0)
    return model


class Exported:
    def __init__(self, root):
        self.model = _model()
        self.x = _patterns(64, seed=1)
        self.dir = root / "export"
        self.messages = []
        self.report = export.export_hvae(
            self.model, self.dir, quantize=["none", "float16", "int8"],
            representative_images=_patterns(96), check_images=self.x, scorer_samples=50,
            progress=self.messages.append,
        )  # fmt: skip
        self.saved = {part: saved_model_runners(tf.saved_model.load(str(self.dir / part / "1")))[0]
                      for part in ("encoder", "decoder", "scorer")}  # fmt: skip

    def tflite(self, part, key, quantization="none"):
        name = f"{part}.tflite" if quantization == "none" else f"{part}.{quantization}.tflite"
        interpreter = Interpreter(model_path=str(self.dir / name), num_threads=2)
        return interpreter.get_signature_runner(key)

    def runners(self, part, key):
        """The signature in the SavedModel and in the float32 .tflite file."""
        return {"saved_model": self.saved[part][key], "tflite": self.tflite(part, key)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return Exported(tmp_path_factory.mktemp("hvae_export"))


# ------------------------------------------------------------ an independent NumPy pass
def _dense(layer):
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    return lambda h: h @ kernel + bias


def _elu(v):
    return np.where(v > 0, v, np.expm1(np.minimum(v, 0)))


def _softplus(v):
    return np.logaddexp(0.0, v)


def _numpy_top_down(model, x, eps=None, latents=None):
    """The tiny model's top-down pass in NumPy from its weights: q's and p's parameters per
    layer, z_1, z_2 (the mean path when eps is None, given z's with `latents`) and the
    Bernoulli logits of p(x | z_1, h_1)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    d1 = _elu(_dense(model.bottom_up.blocks[0][0])(flat))
    d2 = _elu(_dense(model.bottom_up.blocks[1][0])(d1))
    top = _dense(model.top_posterior.projection)(d2)
    loc2, scale2 = top[:, :D2], _softplus(top[:, D2:]) + MIN_SCALE
    e1, e2 = (np.zeros(()), np.zeros(())) if eps is None else (eps[..., :D1], eps[..., D1:])
    z2 = loc2 + scale2 * e2 if latents is None else latents[1]
    cell = model.cells[0]
    h1 = _elu(_dense(cell.state_layers[0])(z2))
    prior = _dense(cell.prior_projection)(h1)
    mu, sigma = prior[..., :D1], cell_scale(prior[..., D1:], cell.log_scale_bound)
    d1 = np.broadcast_to(d1, h1.shape[:-1] + d1.shape[-1:])
    offsets = _dense(cell.posterior_projection)(np.concatenate([h1, d1], -1))
    dmu, dsigma = offsets[..., :D1], cell_scale(offsets[..., D1:], cell.log_scale_bound)
    loc1, scale1 = mu + sigma * dmu, sigma * dsigma
    z1 = loc1 + scale1 * e1 if latents is None else latents[0]
    features = _elu(_dense(model.decoder.dense_layers[0])(np.concatenate([z1, h1], -1)))
    logits = _dense(model.likelihood.projection)(features)
    return {"loc_1": loc1, "scale_1": scale1, "loc_2": loc2, "scale_2": scale2, "mu": mu,
            "sigma": sigma, "z_1": z1, "z_2": z2, "logits": logits}  # fmt: skip


def _numpy_scores(model, x, eps):
    """ELBO (closed-form KLs, the textbook formula for two diagonal Gaussians) and the
    importance-weighted log p(x) from eps `[K, B, 5]`, in float64."""
    p = _numpy_top_down(model, x, eps.astype(np.float64))
    flat = x.reshape(len(x), -1)
    log_px_z = np.sum(flat * p["logits"] - _softplus(p["logits"]), axis=-1)
    normal = lambda z, m, s: np.sum(stats.norm.logpdf(z, m, s), axis=-1)  # noqa: E731
    log_w = (log_px_z + normal(p["z_1"], p["mu"], p["sigma"]) + normal(p["z_2"], 0, 1)
             - normal(p["z_1"], p["loc_1"], p["scale_1"])
             - normal(p["z_2"], p["loc_2"], p["scale_2"]))  # fmt: skip
    s1, s = p["scale_1"], p["sigma"]
    kl1 = np.sum(np.log(s / s1) + (s1**2 + (p["loc_1"] - p["mu"]) ** 2) / (2 * s**2) - 0.5, -1)
    kl2 = np.sum(-np.log(p["scale_2"]) + (p["scale_2"] ** 2 + p["loc_2"] ** 2) / 2 - 0.5, -1)
    elbo = np.mean(log_px_z - kl1, axis=0) - kl2
    return {"elbo": elbo, "log_likelihood": special.logsumexp(log_w, 0) - math.log(len(eps))}


# ----------------------------------------------------------------------------- tests
def test_signatures_are_the_documented_ones(exported):
    image, per_example = [-1, *SHAPE], [-1]
    z = {"z_1": [-1, D1], "z_2": [-1, D2]}
    params = {"loc_1": [-1, D1], "scale_1": [-1, D1], "loc_2": [-1, D2], "scale_2": [-1, D2]}
    scores = {"elbo": per_example, "log_likelihood": per_example}
    want = {
        "encoder": {"serving_default": ({"x": image}, params),
                    "encode_sample": ({"x": image}, {**params, **z})},
        "decoder": {"serving_default": (z, {"mean": image, "logits": image}),
                    "sample": ({"num_samples": []}, {"mean": image, **z})},
        "scorer": {"serving_default": ({"x": image}, scores),
                   "score_with_noise": ({"x": image, "eps": [-1, -1, D1 + D2]}, scores)},
    }  # fmt: skip
    paths = [a["path"] for a in exported.report["artefacts"]]
    assert paths == ["encoder/1", "decoder/1", "scorer/1", "encoder.tflite", "decoder.tflite",
                     "scorer.tflite", "encoder.float16.tflite", "decoder.float16.tflite",
                     "decoder.int8.tflite"]  # fmt: skip
    # a quantized encoder loses the lower layers' loc (keras_vae.models.hvae.export): none
    assert any("encoder: no int8 file" in m for m in exported.messages)
    for artefact in exported.report["artefacts"]:
        for key, (inputs, outputs) in want[artefact["part"]].items():
            found = artefact["signatures"][key]
            assert {k: v["shape"] for k, v in found["inputs"].items()} == inputs
            assert {k: v["shape"] for k, v in found["outputs"].items()} == outputs
            dtypes = {v["dtype"] for v in (*found["inputs"].values(), *found["outputs"].values())}
            assert dtypes == ({"int32", "float32"} if key == "sample" else {"float32"})
        if artefact["kind"] == "tflite":
            assert artefact["operators"] and not [o for o in artefact["operators"] if "CUSTOM" in o]
        else:  # TF Serving's graph-mode loader ran it too
            assert max(v for k, v in artefact["errors"].items() if "graph_mode" in k) < 1e-4
        assert artefact["checked_error"] < artefact["bound"]
    assert exported.report["model"]["latent_sizes"] == [D1, D2]


@pytest.mark.parametrize("batch", [1, 64])
def test_encoder_gives_each_layers_posterior_along_the_mean_path(exported, batch):
    x = exported.x[:batch]
    reference = _numpy_top_down(exported.model, x)
    keras_params = checks.keras_encoder(exported.model, x)
    for where, run in exported.runners("encoder", "serving_default").items():
        got = run(x=x)
        assert sorted(got) == ["loc_1", "loc_2", "scale_1", "scale_2"], where
        for name, value in got.items():
            np.testing.assert_allclose(value, reference[name], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(value, keras_params[name], atol=1e-5)


def test_decoder_maps_given_latents_to_the_likelihood(exported):
    rng = np.random.default_rng(3)
    latents = [rng.normal(size=(5, D1)).astype("float32"), rng.normal(size=(5, D2)) * 2]
    latents[1] = latents[1].astype("float32")
    reference = _numpy_top_down(exported.model, np.zeros((5, *SHAPE)), latents=latents)
    keras_mean = exported.model.decode(latents).mean().numpy()
    for where, run in exported.runners("decoder", "serving_default").items():
        got = run(z_1=latents[0], z_2=latents[1])
        logits = reference["logits"].reshape(5, *SHAPE)
        np.testing.assert_allclose(got["logits"], logits, rtol=1e-4, atol=1e-4, err_msg=where)
        np.testing.assert_allclose(got["mean"], special.expit(logits), atol=1e-5, err_msg=where)
        np.testing.assert_allclose(got["mean"], keras_mean, atol=1e-5, err_msg=where)


def test_scorer_with_noise_matches_numpy_and_the_kinds_evaluation(exported):
    model, x = exported.model, exported.x[:6]
    eps = np.random.default_rng(4).standard_normal((7, 6, D1 + D2)).astype("float32")
    want = _numpy_scores(model, x, eps)
    # the kind's evaluation with one chunk of K = 7 samples draws exactly this noise
    seed = tf.constant(np.random.default_rng(0).integers(0, 2**31 - 1, size=2), tf.int32)
    fold = tf.random.experimental.stateless_fold_in(seed, 0)
    their_eps = tf.random.stateless_normal([7, 6, D1 + D2], fold).numpy()
    evaluated = importance_sampled_log_likelihood(model, x, 7, chunk_size=7, seed=0)
    for where, run in exported.runners("scorer", "score_with_noise").items():
        got = run(x=x, eps=eps)
        for name in ("elbo", "log_likelihood"):
            np.testing.assert_allclose(got[name], want[name], rtol=2e-5, err_msg=where)
        got = run(x=x, eps=their_eps)
        np.testing.assert_allclose(got["log_likelihood"], evaluated["log_px"], rtol=2e-5)
        np.testing.assert_allclose(got["elbo"], evaluated["elbo"], rtol=2e-5)


def test_scorer_own_noise_estimates_the_same_bounds(exported):
    statistics = exported.report["artefacts"][2]["statistics"]
    assert statistics["gap"]["mean"] > 0  # the importance-weighted bound is the tighter one
    x = np.repeat(exported.x[:2], 200, axis=0)
    got = exported.tflite("scorer", "serving_default")(x=x)
    want = _numpy_scores(exported.model, exported.x[:2], np.random.default_rng(5)
                         .standard_normal((2000, 2, D1 + D2)))  # fmt: skip
    for b in range(2):
        estimates = got["elbo"][b * 200 : (b + 1) * 200]  # 200 draws of the 50-sample ELBO
        assert abs(estimates.mean() - want["elbo"][b]) < 5 * estimates.std() / math.sqrt(200)


def test_encode_sample_draws_through_the_hierarchy(exported):
    model = exported.model
    x = np.repeat(exported.x[:1], 3000, axis=0)
    for where, run in exported.runners("encoder", "encode_sample").items():
        got = run(x=x)
        # each z_i is drawn from the q whose parameters it returns, given the z_{>i} it drew
        mine = _numpy_top_down(model, x, latents=[got["z_1"], got["z_2"]])
        for name in ("loc_1", "scale_1", "loc_2", "scale_2"):
            np.testing.assert_allclose(got[name], mine[name], rtol=1e-4, atol=1e-5)
        for i in (1, 2):
            u = (got[f"z_{i}"] - got[f"loc_{i}"]) / got[f"scale_{i}"]
            np.testing.assert_allclose(u.mean(0), 0.0, atol=0.1, err_msg=where)
            np.testing.assert_allclose(u.std(0), 1.0, atol=0.06, err_msg=where)
        # the lower layer's parameters move with the z_2 drawn above it
        assert got["loc_1"].std(0).max() > 1e-3


def test_sample_draws_from_the_prior_through_the_hierarchy(exported):
    model = exported.model
    for where, run in exported.runners("decoder", "sample").items():
        got = run(num_samples=np.array(3000, np.int32))
        np.testing.assert_allclose(got["z_2"].mean(0), 0.0, atol=0.1, err_msg=where)
        np.testing.assert_allclose(got["z_2"].std(0), 1.0, atol=0.06, err_msg=where)
        mine = _numpy_top_down(model, np.zeros((3000, *SHAPE)), latents=[got["z_1"], got["z_2"]])
        u = (got["z_1"] - mine["mu"]) / mine["sigma"]  # z_1 ~ p(z_1 | z_2)
        np.testing.assert_allclose(u.mean(0), 0.0, atol=0.1, err_msg=where)
        np.testing.assert_allclose(u.std(0), 1.0, atol=0.06, err_msg=where)
        mean = special.expit(mine["logits"]).reshape(-1, *SHAPE)
        np.testing.assert_allclose(got["mean"], mean, atol=1e-5, err_msg=where)


def test_quantized_files_hold_their_bounds_on_fresh_images(exported):
    x = _patterns(32, seed=9)
    want = checks.keras_encoder(exported.model, x)
    got = exported.tflite("encoder", "serving_default", "float16")(x=x)
    relative = max(
        np.max(np.abs(got[name] - want[name]) / (1 + np.abs(want[name])))
        for name in ("loc_1", "loc_2")
    )
    assert 0 < relative < export.QUANTIZED_BOUNDS["float16"]["encoder"]
    latents = [want["loc_1"], want["loc_2"]]
    keras_mean = exported.model.decode(latents).mean().numpy()
    for quantization in ("float16", "int8"):
        run = exported.tflite("decoder", "serving_default", quantization)
        error = np.abs(run(z_1=latents[0], z_2=latents[1])["mean"] - keras_mean).max()
        assert 0 < error < export.QUANTIZED_BOUNDS[quantization]["decoder"]


# ------------------------------------------------------------------- the self-checks
def _runner(fn):
    def run(**inputs):
        outputs = fn(**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    return run


def _keras_runners(model, part):
    """The signature functions themselves as runners: what a faithful artefact returns."""
    make = export.SIGNATURE_FUNCTIONS[part]
    functions = make(model, 20) if part == "scorer" else make(model)
    return {key: _runner(fn) for key, fn in functions.items()}


@pytest.fixture(scope="module")
def reference(exported):
    return checks.build_reference(exported.model, exported.x[:16], scorer=True)


@pytest.mark.parametrize("part", ["encoder", "decoder", "scorer"])
def test_check_passes_the_models_own_functions_and_fails_shifted_ones(exported, reference,
                                                                      part):  # fmt: skip
    model = exported.model
    runners = _keras_runners(model, part)
    errors, problems = checks.check_runners(model, part, runners, reference)
    assert not problems and max(errors.values()) < export.FLOAT32_BOUND
    shifted_output = {"encoder": "loc_2", "decoder": "mean", "scorer": "log_likelihood"}[part]
    key = checks.DETERMINISTIC[part]

    def shifted(**inputs):
        out = runners[key](**inputs)
        return {**out, shifted_output: out[shifted_output] + 1e-2}  # relative: ~5e-4

    errors, _ = checks.check_runners(model, part, {**runners, key: shifted}, reference)
    assert errors[f"{key}/{shifted_output}"] > export.FLOAT32_BOUND


def test_check_fails_a_sampler_that_ignores_the_layer_above(exported, reference):
    model = exported.model
    runners = _keras_runners(model, "encoder")

    def mean_path_parameters(x):  # z's drawn, but the mean path's parameters returned
        return {**runners["encode_sample"](x=x), **runners["serving_default"](x=x)}

    errors, _ = checks.check_runners(model, "encoder", {**runners,
                                     "encode_sample": mean_path_parameters}, reference)  # fmt: skip
    assert errors["encode_sample/loc_1"] > 1e-3
    assert errors["encode_sample/loc_2"] < 1e-5  # the top layer has nothing above it


def test_check_fails_a_biased_scorer(exported):
    model, x = exported.model, exported.x[:32]
    honest = _keras_runners(model, "scorer")["serving_default"]
    _, problems = checks.scorer_statistics(model, honest, x, 20)
    assert not problems

    def biased(x):
        return {k: v - 0.5 for k, v in honest(x=x).items()}

    _, problems = checks.scorer_statistics(model, biased, x, 20)
    assert problems and "differs from the model's" in problems[0]


def test_failed_self_check_leaves_nothing(tmp_path, monkeypatch, exported):
    monkeypatch.setattr(export, "FLOAT32_BOUND", 0.0)
    with pytest.raises(ExportCheckError, match="encoder/1 failed its self-check"):
        export.export_hvae(exported.model, tmp_path, tflite=False, progress=None)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not list(tmp_path.rglob("1")) and not list(tmp_path.rglob(".tmp*"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"quantize": ["int8"]}, "needs representative_images"),
        ({"scorer_samples": 0}, "scorer_samples must be a positive int"),
        (
            {"check_images": np.zeros((2, 28, 28, 1))},
            r"check_images must have shape \[N, 6, 5, 1\]",
        ),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, exported, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export.export_hvae(exported.model, tmp_path / "out", progress=None, **kwargs)
    assert not (tmp_path / "out").exists()


def test_unbuilt_or_other_models_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        export.export_hvae(mlp_hvae(SHAPE), tmp_path, progress=None)
    with pytest.raises(ValueError, match="must be a keras_vae HierarchicalVAE"):
        export.export_hvae(keras.Sequential(), tmp_path, progress=None)


def test_report_is_json_with_every_artefact(exported):
    report = json.loads((exported.dir / "export_report.json").read_text())
    assert [a["path"] for a in report["artefacts"]] == [
        a["path"] for a in exported.report["artefacts"]
    ]
    assert report["check_images"] == {"count": 64, "source": "check_images"}
