"""Disentanglement metrics on codes whose answer is known: the true factors (about 1),
independent noise (about 0, or chance for the classifier scores), a rotation that mixes two
factors (MIG and DCI drop), and hand-computed values of tiny cases; mutual information
against scikit-learn, R^2 against SciPy."""

import math

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from keras_vae.data import factors as factor_data
from keras_vae.metrics import disentanglement as dis

SIZES = (3, 4, 5)


class FactorsAsObservations(factor_data.FactorData):
    """A factor grid whose 'images' are the factor classes themselves, centred and scaled to
    unit variance, so that a representation acts directly on the factors."""

    factor_sizes = SIZES
    factor_names = ("a", "b", "c")

    def observations(self, factors):
        sizes = np.array(self.factor_sizes, np.float64)
        return (factors - (sizes - 1) / 2) / np.sqrt((sizes**2 - 1) / 12)


def identity(x):
    return np.asarray(x, np.float64)


_NOISE = np.random.default_rng(123)


def noise(x):
    """Codes independent of the input."""
    return _NOISE.normal(size=(len(x), 3))


def rotate_first_two(x):
    """The first two standardised factors turned by 45 degrees: each code mixes both."""
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    x = np.asarray(x, np.float64)
    return np.stack([c * x[:, 0] - s * x[:, 1], s * x[:, 0] + c * x[:, 1], x[:, 2]], axis=1)


def _codes(representation, num, seed):
    return dis.sample_codes(
        FactorsAsObservations(), representation, num, np.random.default_rng(seed)
    )


# ------------------------------------------------------------------------- hand-computed cases
def test_mutual_information_matches_hand_value_and_sklearn():
    a, b = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    # p(a, b) = 1/4 at (0, 0) and (0, 1), 1/2 at (1, 1); p(a) = (1/2, 1/2), p(b) = (1/4, 3/4)
    hand = 0.25 * math.log(2) + 0.25 * math.log(2 / 3) + 0.5 * math.log(4 / 3)
    assert dis.mutual_information(a, b) == pytest.approx(hand, rel=1e-12)
    assert dis.mutual_information(a, a) == pytest.approx(math.log(2), rel=1e-12)  # H(a)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.integers(0, 4, 300), rng.integers(0, 6, 300)
        y = np.where(rng.random(300) < 0.5, x, y)  # dependent
        assert dis.mutual_information(x, y) == pytest.approx(
            sklearn.metrics.mutual_info_score(x, y), rel=1e-10
        )


def test_mig_of_a_tiny_table_is_one_half():
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    codes = np.array([[0, 0], [0, 0], [1, 0], [1, 1]], float)  # c0 = v0, c1 = v0 AND v1
    # I(c0; v0) = ln 2, I(c1; v0) = I(c1; v1) = the hand value h above, I(c0; v1) = 0; H = ln 2
    # MIG = 1/2 [(ln 2 - h) / ln 2 + (h - 0) / ln 2] = 1/2
    assert dis.mig(codes, factors)["mig"] == pytest.approx(0.5, rel=1e-12)


def test_histogram_discretisation_keeps_few_distinct_values_apart():
    codes = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [4.0]])
    binned = dis.histogram_discretize(codes, num_bins=20)[:, 0]
    assert len(np.unique(binned)) == 5 and binned[4] == binned[5]
    assert np.all(np.diff(binned[:5]) > 0)
    assert set(dis.histogram_discretize(codes, num_bins=2)[:, 0]) == {1, 2}


def test_dci_scores_of_hand_importance_matrices():
    scores = dis.dci_scores(np.eye(3))
    assert scores["dci_disentanglement"] == pytest.approx(1.0, abs=1e-8)
    assert scores["dci_completeness"] == pytest.approx(1.0, abs=1e-8)
    scores = dis.dci_scores(np.ones((2, 2)))
    assert scores["dci_disentanglement"] == pytest.approx(0.0, abs=1e-8)
    # one code serves two factors equally (D = 1 - H_2(1/2, 1/2) = 0), each factor has one
    # code (C = 1)
    scores = dis.dci_scores(np.array([[1.0, 1.0], [0.0, 0.0]]))
    assert scores["dci_disentanglement"] == pytest.approx(0.0, abs=1e-8)
    assert scores["dci_completeness"] == pytest.approx(1.0, abs=1e-8)
    # a general matrix against the formula written with scipy's entropy in nats / ln base
    r = np.array([[0.6, 0.1], [0.2, 0.4], [0.3, 0.0]])
    p = r / r.sum(axis=1, keepdims=True)
    per_code = 1 - np.array([scipy.stats.entropy(row) for row in p]) / math.log(2)
    q = r / r.sum(axis=0)
    per_factor = 1 - np.array([scipy.stats.entropy(col) for col in q.T]) / math.log(3)
    scores = dis.dci_scores(r)
    assert scores["dci_disentanglement"] == pytest.approx(per_code @ (r.sum(1) / r.sum()), rel=1e-6)
    assert scores["dci_completeness"] == pytest.approx(per_factor @ (r.sum(0) / r.sum()), rel=1e-6)


def test_sap_matrix_is_r_squared_or_accuracy():
    rng = np.random.default_rng(3)
    factors = rng.integers(0, 2, size=(400, 2))
    codes = np.stack([factors[:, 0] + rng.normal(0, 0.3, 400), rng.normal(size=400)], axis=1)
    matrix = dis.sap_matrix(codes, factors, codes, factors, continuous=True)
    for i in range(2):
        for k in range(2):
            r = scipy.stats.pearsonr(codes[:, i], factors[:, k]).statistic
            assert matrix[i, k] == pytest.approx(r**2, rel=1e-9)
    discrete = dis.sap_matrix(codes, factors, codes, factors)
    assert discrete[0, 0] > 0.85 and abs(discrete[1, 0] - 0.5) < 0.1
    expected = np.mean(np.sort(discrete, axis=0)[-1] - np.sort(discrete, axis=0)[-2])
    assert dis.sap(codes, factors, codes, factors)["sap"] == pytest.approx(expected)


# ------------------------------------------------------------------ known answers on samples
@pytest.fixture(scope="module")
def sampled():
    return {
        name: (_codes(fn, 3000, 1), _codes(fn, 1000, 2))
        for name, fn in (("true", identity), ("noise", noise), ("rotated", rotate_first_two))
    }


def test_mig_true_noise_and_rotation(sampled):
    scores = {name: dis.mig(*train)["mig"] for name, (train, _) in sampled.items()}
    assert scores["true"] > 0.95
    assert scores["noise"] < 0.05
    # the rotated factors share two codes; only the third factor keeps its gap
    assert scores["rotated"] < 0.5 * scores["true"]


def test_dci_true_noise_and_rotation(sampled):
    scores = {
        name: dis.dci(*train, *test, n_estimators=30) for name, (train, test) in sampled.items()
    }
    assert scores["true"]["dci_disentanglement"] > 0.95
    assert scores["true"]["dci_completeness"] > 0.95
    assert scores["true"]["dci_informativeness_test"] > 0.99
    assert scores["noise"]["dci_disentanglement"] < 0.05
    assert scores["noise"]["dci_informativeness_test"] < 0.4  # chance: (1/3 + 1/4 + 1/5) / 3
    assert scores["rotated"]["dci_disentanglement"] < 0.7 * scores["true"]["dci_disentanglement"]


def test_sap_true_and_noise(sampled):
    true = dis.sap(*sampled["true"][0], *sampled["true"][1], continuous=True)["sap"]
    random = dis.sap(*sampled["noise"][0], *sampled["noise"][1], continuous=True)["sap"]
    assert true > 0.95 and random < 0.02


def test_beta_vae_score_true_factors_and_noise():
    data = FactorsAsObservations()
    true = dis.beta_vae_score(data, identity, 0, batch_size=16, num_train=300, num_eval=200)
    assert true["beta_vae"] == 1.0  # the fixed factor's |difference| is exactly 0
    random = dis.beta_vae_score(data, noise, 0, batch_size=16, num_train=300, num_eval=300)
    assert abs(random["beta_vae"] - 1 / 3) < 0.1  # chance


def test_factor_vae_score_true_factors_noise_and_collapsed_units():
    data = FactorsAsObservations()
    options = dict(batch_size=16, num_train=300, num_eval=300, num_variance_estimate=1000)
    true = dis.factor_vae_score(data, identity, 0, **options)
    assert true["factor_vae"] == 1.0 and true["factor_vae_active_dims"] == 3
    random = dis.factor_vae_score(data, noise, 0, **options)
    assert random["factor_vae"] < 0.5  # chance is 1/3; a majority vote overfits a little
    collapsed = dis.factor_vae_score(data, lambda x: np.zeros((len(x), 3)), 0, **options)
    assert collapsed == {"factor_vae_train_accuracy": 0.0, "factor_vae": 0.0,
                         "factor_vae_active_dims": 0}  # fmt: skip
    # a collapsed extra unit is pruned, the others still vote correctly
    padded = dis.factor_vae_score(
        data, lambda x: np.concatenate([identity(x), np.zeros((len(x), 1))], 1), 0, **options
    )
    assert padded["factor_vae"] == 1.0 and padded["factor_vae_active_dims"] == 3


def test_evaluate_runs_every_metric_on_rendered_sprites():
    data = factor_data.RenderedSprites(factor_data.synthetic_dsprites.SMALL)

    def centroid(images):  # a hand-made 'representation': pixel centroid and mass
        images = images[..., 0]
        rows, cols = np.indices(images.shape[1:])
        mass = images.sum(axis=(1, 2))
        return np.stack([(images * cols).sum((1, 2)) / mass, (images * rows).sum((1, 2)) / mass,
                         mass], axis=1)  # fmt: skip

    scores = dis.evaluate(data, centroid, seed=0, num_train=300, num_test=200, n_estimators=10)
    assert set(scores) >= {"mig", "dci_disentanglement", "sap", "beta_vae", "factor_vae"}
    assert all(np.isfinite(v) for v in scores.values())
    # the centroid captures x and y position; FactorVAE's vote finds them
    assert scores["factor_vae"] > 0.35
    with pytest.raises(ValueError, match="metrics must be among"):
        dis.evaluate(data, centroid, metrics=["irs"])


def test_representation_function_is_the_posterior_mean():
    import keras_vae

    vae = keras_vae.mlp_vae((4, 4, 1), latent_dim=2, hidden_units=8, seed=0)
    images = np.random.default_rng(0).random((5, 4, 4, 1)).astype("float32")
    represent = dis.representation_function(vae, batch_size=2)
    np.testing.assert_allclose(represent(images), vae.encode(images).mean().numpy(), rtol=1e-6)


def test_bad_arguments_give_one_line_errors():
    with pytest.raises(ValueError, match="codes must be \\[N, D\\] and factors \\[N, K\\]"):
        dis.mig(np.zeros((3, 2)), np.zeros((4, 1), int))
    with pytest.raises(ValueError, match="num_bins must be an int >= 1. Received: num_bins=0"):
        dis.histogram_discretize(np.zeros((3, 2)), 0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 2"):
        dis.beta_vae_score(FactorsAsObservations(), identity, batch_size=1)
