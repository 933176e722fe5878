"""Disentanglement metrics with the definitions of Locatello et al. (2019, disentanglement_lib).

A representation r maps images to codes c = r(x) in R^D (for a VAE, the posterior mean
E[z|x], `representation_function`); the ground truth is K discrete factors v_1..v_K with a
complete grid of images (`keras_vae.factor_data.FactorData`). Codes and factors are arrays
with one row per example: codes `[N, D]`, factors `[N, K]` (int class indices).

Metrics on samples of (codes, factors) drawn with all factors random (`sample_codes`):

* `mig`: Mutual Information Gap (Chen et al. 2018).
* `dci`: disentanglement, completeness and informativeness (Eastwood & Williams 2018) from the
  feature importances of gradient-boosted trees.
* `sap`: Separated Attribute Predictability (Kumar et al. 2018).

Metrics that intervene on the factors (a `FactorData` and a representation function):

* `beta_vae_score` (Higgins et al. 2017).
* `factor_vae_score` (Kim & Mnih 2018).

`evaluate` runs all five with disentanglement_lib's sample sizes. The classifiers and
regressors are scikit-learn's, as in disentanglement_lib, so that the numbers are comparable
with the published ones. Mutual information and entropy are in nats (their ratios, the scores,
are unit-free). Each metric returns a dict of floats.

Example:
    ```python
    from keras_vae.data import factors as factor_data
    from keras_vae.metrics import disentanglement

    data = factor_data.RenderedSprites()
    represent = disentanglement.representation_function(vae)
    scores = disentanglement.evaluate(data, represent, seed=0)   # {"mig": ..., ...}
    ```
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats

from keras_vae.data.factors import FactorData

Representation = Callable[[np.ndarray], np.ndarray]
METRICS = ("beta_vae", "factor_vae", "mig", "dci", "sap")


def _check_count(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _check_pair(codes, factors) -> tuple[np.ndarray, np.ndarray]:
    codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or not len(codes):
        raise ValueError(
            "codes must be [N, D] and factors [N, K] with the same N > 0. Received: codes "
            f"{codes.shape}, factors {factors.shape}"
        )
    return codes, factors


def _rng(seed_or_rng) -> np.random.Generator:
    return np.random.default_rng(seed_or_rng)


# ----------------------------------------------------------------------------------- sampling
def sample_codes(
    data: FactorData,
    representation: Representation,
    num: int,
    rng: np.random.Generator,
    batch_size: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """`num` codes of uniformly drawn factor combinations: `(codes [num, D], factors [num, K])`,
    represented `batch_size` images at a time."""
    num = _check_count("num", num)
    factors = data.sample_factors(num, rng)
    codes = [
        np.asarray(representation(data.observations(factors[i : i + batch_size])))
        for i in range(0, num, batch_size)
    ]
    return np.concatenate(codes).reshape(num, -1), factors


def representation_function(model, batch_size: int = 1000) -> Representation:
    """The representation of disentanglement_lib for a VAE: the posterior mean,
    r(x) = E_q(z|x)[z], computed `batch_size` images at a time (NumPy in, NumPy out)."""
    batch_size = _check_count("batch_size", batch_size)

    def represent(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        means = [
            np.asarray(model.encode(images[i : i + batch_size]).mean())
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(means)

    return represent


# ------------------------------------------------------------------------------------- MIG
def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each code dimension cut into `num_bins` equal-width bins between its minimum and
    maximum (disentanglement_lib's histogram discretizer): int `[N, D]`, bin numbers 1..B."""
    codes = np.asarray(codes, np.float64)
    num_bins = _check_count("num_bins", num_bins)
    out = np.empty(codes.shape, np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, j], bins=num_bins)
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two discrete samples, from their joint histogram:

    I(a; b) = sum_{i,j} p_ij log(p_ij / (p_i p_j)),  p_ij = n_ij / N.
    """
    _, a_index = np.unique(np.asarray(a), return_inverse=True)
    _, b_index = np.unique(np.asarray(b), return_inverse=True)
    joint = np.zeros((a_index.max() + 1, b_index.max() + 1))
    np.add.at(joint, (a_index.ravel(), b_index.ravel()), 1.0)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    present = joint > 0
    return float(np.sum(joint[present] * np.log(joint[present] / outer[present])))


def mutual_information_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(c_i; v_k) in nats for every code i and factor k: `[D, K]`."""
    return np.array(
        [
            [
                mutual_information(discrete_codes[:, i], factors[:, k])
                for k in range(factors.shape[1])
            ]
            for i in range(discrete_codes.shape[1])
        ]
    )


def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> dict[str, float]:
    """The Mutual Information Gap (Chen et al. 2018), with discretised codes:

        MIG = 1/K sum_k [I(c_{i_k}; v_k) - max_{i != i_k} I(c_i; v_k)] / H(v_k),
        i_k = argmax_i I(c_i; v_k),

    where c is `histogram_discretize(codes, num_bins)`, I and H are the plug-in estimates of
    the empirical distribution. 1: each factor is captured by one code alone.

    Args:
        codes: `[N, D]`.
        factors: int `[N, K]`.
        num_bins: Bins per code dimension (disentanglement_lib: 20).

    Returns:
        `{"mig": MIG}`.
    """
    codes, factors = _check_pair(codes, factors)
    if codes.shape[1] < 2:
        raise ValueError(f"MIG needs at least 2 code dimensions. Received: codes {codes.shape}")
    information = mutual_information_matrix(histogram_discretize(codes, num_bins), factors)
    entropy = np.array([mutual_information(f, f) for f in factors.T])  # H(v) = I(v; v)
    top = np.sort(information, axis=0)[::-1]
    gaps = (top[0] - top[1]) / np.where(entropy > 0, entropy, 1.0)
    return {"mig": float(np.mean(np.where(entropy > 0, gaps, 0.0)))}


# ------------------------------------------------------------------------------------- DCI
def dci_scores(importance: np.ndarray) -> dict[str, float]:
    """Disentanglement and completeness from an importance matrix R `[D, K]` (R_ik: how much
    code i serves to predict factor k; Eastwood & Williams 2018):

        D = sum_i rho_i (1 - H_K(P_i.)),  P_ik = R_ik / sum_k R_ik,  rho_i = sum_k R_ik / sum R,
        C = sum_k rho_k (1 - H_D(P~_.k)), P~_ik = R_ik / sum_i R_ik, rho_k = sum_i R_ik / sum R,

    H_K the entropy in base K (so each term lies in [0, 1]). As in disentanglement_lib, 1e-11
    is added before normalising, and an all-zero R weighs codes and factors equally.
    """
    importance = np.abs(np.asarray(importance, np.float64))
    num_codes, num_factors = importance.shape
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=num_factors)
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=num_codes)
    return {
        "dci_disentanglement": float(np.sum(per_code * weights.sum(1) / weights.sum())),
        "dci_completeness": float(np.sum(per_factor * weights.sum(0) / weights.sum())),
    }


def gbt_importance(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    n_estimators: int = 100,
    seed: int | None = 0,
) -> tuple[np.ndarray, float, float]:
    """Feature importances of one gradient-boosted tree classifier per factor
    (`sklearn.ensemble.GradientBoostingClassifier`, disentanglement_lib's defaults with
    100 trees): `(R [D, K], train accuracy, test accuracy)`, accuracies averaged over factors."""
    from sklearn.ensemble import GradientBoostingClassifier

    codes_train, factors_train = _check_pair(codes_train, factors_train)
    codes_test, factors_test = _check_pair(codes_test, factors_test)
    importance = np.zeros((codes_train.shape[1], factors_train.shape[1]))
    train, test = [], []
    for k in range(factors_train.shape[1]):
        model = GradientBoostingClassifier(n_estimators=n_estimators, random_state=seed)
        model.fit(codes_train, factors_train[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train.append(np.mean(model.predict(codes_train) == factors_train[:, k]))
        test.append(np.mean(model.predict(codes_test) == factors_test[:, k]))
    return importance, float(np.mean(train)), float(np.mean(test))


def dci(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    n_estimators: int = 100,
    seed: int | None = 0,
) -> dict[str, float]:
    """DCI (Eastwood & Williams 2018) with gradient-boosted-tree importances (`gbt_importance`,
    `dci_scores`): disentanglement, completeness, and informativeness as the trees' mean
    train and test accuracy."""
    importance, train, test = gbt_importance(
        codes_train, factors_train, codes_test, factors_test, n_estimators, seed
    )
    return {
        **dci_scores(importance),
        "dci_informativeness_train": train,
        "dci_informativeness_test": test,
    }


# ------------------------------------------------------------------------------------- SAP
def sap_matrix(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    continuous: bool = False,
) -> np.ndarray:
    """S `[D, K]`: how well code i alone predicts factor k. Continuous factors: the R^2 of a
    linear fit, S_ik = Cov(c_i, v_k)^2 / (Var c_i Var v_k) (0 for a constant code). Discrete
    factors: the test accuracy of a linear SVM on c_i alone (`LinearSVC(C=0.01,
    class_weight="balanced")`, as disentanglement_lib)."""
    from sklearn.svm import LinearSVC

    codes_train, factors_train = _check_pair(codes_train, factors_train)
    num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
    scores = np.zeros((num_codes, num_factors))
    for i in range(num_codes):
        for k in range(num_factors):
            if continuous:
                cov = np.cov(codes_train[:, i], factors_train[:, k], ddof=1)
                scores[i, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0
            else:
                model = LinearSVC(C=0.01, class_weight="balanced")
                model.fit(codes_train[:, i : i + 1], factors_train[:, k])
                predicted = model.predict(np.asarray(codes_test, np.float64)[:, i : i + 1])
                scores[i, k] = np.mean(predicted == np.asarray(factors_test)[:, k])
    return scores


def sap(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    continuous: bool = False,
) -> dict[str, float]:
    """The SAP score (Kumar et al. 2018): the mean over factors of the gap between the best
    and the second-best single-code predictability,

        SAP = 1/K sum_k [S_(1)k - S_(2)k],   S = `sap_matrix(...)` sorted down each column.
    """
    scores = sap_matrix(codes_train, factors_train, codes_test, factors_test, continuous)
    if scores.shape[0] < 2:
        raise ValueError(f"SAP needs at least 2 code dimensions. Received: {scores.shape[0]}")
    top = np.sort(scores, axis=0)[::-1]
    return {"sap": float(np.mean(top[0] - top[1]))}


# ----------------------------------------------------------------------- intervention metrics
def _represent_batches(data, representation, factors) -> np.ndarray:
    """Codes of factors `[P, B, K]` (P groups of B), `[P, B, D]`, in one representation call."""
    groups, size, num_factors = factors.shape
    codes = np.asarray(representation(data.observations(factors.reshape(-1, num_factors))))
    return codes.reshape(groups, size, -1)


def beta_vae_points(
    data: FactorData,
    representation: Representation,
    num_points: int,
    rng: np.random.Generator,
    batch_size: int = 64,
    chunk: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """The training points of the beta-VAE score: for each point a factor k is drawn, then
    B pairs (v, v') with v'_k = v_k and all else independent; the point is
    z_diff = 1/B sum_b |r(x(v_b)) - r(x(v'_b))| with label k. Returns `([P, D], [P])`."""
    points, labels = [], []
    for start in range(0, num_points, chunk):
        count = min(chunk, num_points - start)
        chosen = rng.integers(0, data.num_factors, size=count)
        first = data.sample_factors(count * batch_size, rng).reshape(count, batch_size, -1)
        second = data.sample_factors(count * batch_size, rng).reshape(count, batch_size, -1)
        second[np.arange(count), :, chosen] = first[np.arange(count), :, chosen]
        both = _represent_batches(data, representation, np.concatenate([first, second]))
        points.append(np.mean(np.abs(both[:count] - both[count:]), axis=1))
        labels.append(chosen)
    return np.concatenate(points), np.concatenate(labels)


def beta_vae_score(
    data: FactorData,
    representation: Representation,
    rng: np.random.Generator | int | None = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
) -> dict[str, float]:
    """The beta-VAE score (Higgins et al. 2017): the accuracy of a linear classifier
    (`sklearn.linear_model.LogisticRegression`) that predicts which factor k was held fixed
    from z_diff (`beta_vae_points`), on `num_eval` fresh points.

    Returns:
        `{"beta_vae_train_accuracy", "beta_vae": eval accuracy}`.
    """
    from sklearn.linear_model import LogisticRegression

    rng = _rng(rng)
    batch_size = _check_count("batch_size", batch_size, 2)
    x_train, y_train = beta_vae_points(
        data, representation, _check_count("num_train", num_train), rng, batch_size
    )
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    x_eval, y_eval = beta_vae_points(
        data, representation, _check_count("num_eval", num_eval), rng, batch_size
    )
    return {
        "beta_vae_train_accuracy": float(model.score(x_train, y_train)),
        "beta_vae": float(model.score(x_eval, y_eval)),
    }


def factor_vae_votes(
    data: FactorData,
    representation: Representation,
    num_points: int,
    rng: np.random.Generator,
    scale: np.ndarray,
    active: np.ndarray,
    batch_size: int = 64,
    chunk: int = 64,
) -> np.ndarray:
    """Votes `[K, D]` of the FactorVAE score: for each vote a factor k is drawn and fixed to
    one random class in a batch of B, the others drawn freely; the vote goes to
    argmin_d Var_batch(c_d) / scale_d over the active dimensions d."""
    votes = np.zeros((data.num_factors, len(scale)), np.int64)
    active_index = np.flatnonzero(active)
    for start in range(0, num_points, chunk):
        count = min(chunk, num_points - start)
        chosen = rng.integers(0, data.num_factors, size=count)
        factors = data.sample_factors(count * batch_size, rng).reshape(count, batch_size, -1)
        fixed = factors[np.arange(count), 0, chosen]
        factors[np.arange(count), :, chosen] = fixed[:, None]
        codes = _represent_batches(data, representation, factors)
        local = np.var(codes[:, :, active_index], axis=1, ddof=1) / scale[active_index]
        np.add.at(votes, (chosen, active_index[np.argmin(local, axis=1)]), 1)
    return votes


def factor_vae_score(
    data: FactorData,
    representation: Representation,
    rng: np.random.Generator | int | None = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    prune_threshold: float = 0.05,
) -> dict[str, float]:
    """The FactorVAE score (Kim & Mnih 2018): a majority-vote classifier from the code
    dimension of least normalised variance to the fixed factor.

        d(k) = argmin_d Var[c_d | v_k fixed] / Var[c_d],   classifier: d -> argmax_k votes[k, d],
        score = sum_d votes_eval[classifier(d), d] / sum votes_eval.

    Var[c_d] is estimated on `num_variance_estimate` free samples; dimensions whose standard
    deviation is below `prune_threshold` (collapsed units) are not candidates
    (disentanglement_lib's study used 0.05). With no active dimension every score is 0.

    Returns:
        `{"factor_vae_train_accuracy", "factor_vae": eval accuracy, "factor_vae_active_dims"}`.
    """
    rng = _rng(rng)
    batch_size = _check_count("batch_size", batch_size, 2)
    codes, _ = sample_codes(
        data, representation, _check_count("num_variance_estimate", num_variance_estimate, 2), rng
    )
    variance = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(variance) >= prune_threshold
    if not active.any():
        return {"factor_vae_train_accuracy": 0.0, "factor_vae": 0.0, "factor_vae_active_dims": 0}
    train = factor_vae_votes(
        data, representation, _check_count("num_train", num_train), rng, variance, active,
        batch_size,
    )  # fmt: skip
    classifier = np.argmax(train, axis=0)
    columns = np.arange(train.shape[1])
    evaluation = factor_vae_votes(
        data, representation, _check_count("num_eval", num_eval), rng, variance, active,
        batch_size,
    )  # fmt: skip
    return {
        "factor_vae_train_accuracy": float(train[classifier, columns].sum() / train.sum()),
        "factor_vae": float(evaluation[classifier, columns].sum() / evaluation.sum()),
        "factor_vae_active_dims": int(active.sum()),
    }


# ------------------------------------------------------------------------------------- all
def evaluate(
    data: FactorData,
    representation: Representation,
    seed: int | None = 0,
    metrics: Sequence[str] = METRICS,
    num_train: int = 10_000,
    num_test: int = 5_000,
    n_estimators: int = 100,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """The chosen `metrics` of `METRICS` with disentanglement_lib's sample sizes (MIG on
    `num_train` codes; DCI and SAP trained on `num_train`, tested on `num_test`; beta-VAE and
    FactorVAE scores with `num_train` / `num_test` points of batches of 64), one dict.
    `progress` gets one line as each stage starts (the scores encode up to 64 x 1.5 x
    `num_train` images each: minutes for 10,000) and one when all are done."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"metrics must be among {METRICS}. Received: {unknown}")
    rng = _rng(seed)
    scores: dict[str, float] = {}
    stage = _Stages(progress)
    if {"mig", "dci", "sap"} & set(metrics):
        stage(f"codes of {num_train:,} + {num_test:,} factor draws (MIG, DCI, SAP)")
        codes, factors = sample_codes(data, representation, num_train, rng)
        if "mig" in metrics:
            scores.update(mig(codes, factors))
        if {"dci", "sap"} & set(metrics):
            codes_test, factors_test = sample_codes(data, representation, num_test, rng)
            if "dci" in metrics:
                scores.update(dci(codes, factors, codes_test, factors_test, n_estimators))
            if "sap" in metrics:
                scores.update(sap(codes, factors, codes_test, factors_test))
    if "beta_vae" in metrics:
        stage(f"beta-VAE score: {num_train + num_test:,} points of 64 image pairs")
        scores.update(beta_vae_score(data, representation, rng, 64, num_train, num_test))
    if "factor_vae" in metrics:
        stage(f"FactorVAE score: {num_train + num_test:,} points of 64 images")
        scores.update(
            factor_vae_score(data, representation, rng, 64, num_train, num_test, num_train)
        )
    stage(None)
    return scores


class _Stages:
    """`progress` lines of `evaluate`: each stage as it starts, with the time the one before
    took, and the total at the end (`stage(None)`)."""

    def __init__(self, progress: Callable[[str], None] | None):
        self.progress, self.start = progress, time.perf_counter()
        self.last = self.start

    def __call__(self, text: str | None) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        took = f" (previous stage {now - self.last:.0f} s)" if self.last != self.start else ""
        self.last = now
        if text is None:
            self.progress(f"disentanglement metrics done in {now - self.start:.0f} s")
        else:
            self.progress(f"disentanglement: {text}...{took}")
