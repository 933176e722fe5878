"""Strategy selection, the XLA policy, and MirroredStrategy equivalence on 2 logical CPUs."""

import warnings

import pytest
import tensorflow as tf
from helpers import MIRRORED_EQUIVALENCE, run_mirrored_cases

from keras_vae.engine import distribute

DEFAULT_MODEL = {"model": {"num_samples": 2}, "jit_compile": [None, False]}
# a non-default family member: IWAE (K = 3, DReG gradients) with a VampPrior, whose prior runs
# the encoder on its pseudo-inputs inside every replica's step
IWAE_VAMP = {
    "model": {"prior": "vamp", "prior_components": 4},
    "objective": {"name": "iwae", "config": {"num_samples": 3, "gradient": "dreg"}},
    "jit_compile": [False],  # (it also holds with the replica's XLA; 2x slower, left out)
}
# FactorVAE: a discriminator trained with its own Adam in the trainer's after_update hook, on
# permutations of the global batch's latents (all-gathered over the replicas)
FACTOR_VAE = {
    "model": {},
    "objective": {"name": "factorvae", "config": {
        "num_samples": 2, "gamma": 5.0, "discriminator_units": [8, 8],
        "discriminator_learning_rate": 0.01}},
    "jit_compile": [None],  # (it also holds without XLA: after_update runs outside it)
}  # fmt: skip


CASES = {"elbo": DEFAULT_MODEL, "iwae-vamp": IWAE_VAMP, "factorvae": FACTOR_VAE}


@pytest.fixture(scope="module")
def mirrored_results():
    """The cases in one fresh process (its TensorFlow start is the costly part)."""
    return run_mirrored_cases(MIRRORED_EQUIVALENCE, CASES)


@pytest.mark.parametrize("name", CASES)
def test_mirrored_steps_equal_single_device_steps_on_the_same_global_batches(
    name, mirrored_results
):
    case, out = CASES[name], mirrored_results[name]
    assert out["replicas"] == 2
    assert out["xla_single"] == "off" and out["jit_single"] is False
    # XLA under the strategy: the replica math is compiled, Keras' own jit_compile is not
    if None in case["jit_compile"]:
        assert out["mirrored_None"]["xla"] == "replica" and out["mirrored_None"]["jit"] is False
    if False in case["jit_compile"]:
        assert out["mirrored_False"]["xla"] == "off"
    # six SGD steps moved the weights, and moved them identically: each replica's loss is
    # weighted by its share of the global batch (11/21 and 10/21); without the weighting the
    # mirrored step would be twice as large, with 1/replicas slightly off on uneven splits
    assert out["weight_change"] > 1e-3
    if out["auxiliary_change"] is not None:  # the objective's own layer trained too
        assert out["auxiliary_change"] > 1e-3
    for run in (f"mirrored_{jit}" for jit in case["jit_compile"]):
        assert out[run]["warnings"] == []
        assert out[run]["weight_diff"] < 1e-5, run
        for key, value in out["metrics_single"].items():
            assert out[run]["metrics"][key] == pytest.approx(value, rel=1e-5), (run, key)
        for key, value in out["evaluate_single"].items():
            assert out[run]["evaluate"][key] == pytest.approx(value, rel=1e-5), (run, key)


def test_resolve_xla_policy():
    default = tf.distribute.get_strategy()
    assert distribute.resolve_xla(None, default) == "step"
    assert distribute.resolve_xla("auto", default) == "step"
    assert distribute.resolve_xla(True, default) == "step"
    assert distribute.resolve_xla(False, default) == "off"
    # bfloat16 on CPUs: no XLA by default (its CPU dots miss AMX), still when asked for
    assert not tf.config.list_logical_devices("GPU")
    assert distribute.resolve_xla(None, default, "bfloat16") == "off"
    assert distribute.resolve_xla(True, default, "bfloat16") == "step"
    assert distribute.resolve_xla(None, default, "float16") == "step"
    with pytest.raises(ValueError, match="jit_compile must be"):
        distribute.resolve_xla("yes", default)


def test_resolve_xla_falls_back_with_a_warning_where_replicas_cannot_compile(monkeypatch):
    class TwoReplicas:
        num_replicas_in_sync = 2

    monkeypatch.setattr(distribute, "replica_xla_works", lambda strategy: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert distribute.resolve_xla(True, TwoReplicas()) == "off"
    assert len(caught) == 1 and "cannot run an XLA-compiled function" in str(caught[0].message)
    monkeypatch.setattr(distribute, "replica_xla_works", lambda strategy: True)
    assert distribute.resolve_xla(None, TwoReplicas()) == "replica"


@pytest.mark.parametrize(
    ("tf_config", "complaint"),
    [
        (None, "needs the cluster in TF_CONFIG"),
        ("{not json", "not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "no 'cluster' with a 'worker' list"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}}', "no 'task' with 'type' and 'index'"),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
            "is not in its cluster",
        ),
    ],
)
def test_read_tf_config_names_what_is_wrong(monkeypatch, tf_config, complaint):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=complaint):
        distribute.get_strategy("multiworker")


def test_read_tf_config_accepts_a_cluster(monkeypatch):
    config = '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}'
    monkeypatch.setenv("TF_CONFIG", config)
    assert distribute.read_tf_config()["task"] == {"type": "worker", "index": 1}


def test_one_process_is_its_own_chief():
    default = tf.distribute.get_strategy()
    assert distribute.is_chief(default) and not distribute.is_multi_worker(default)
    assert distribute.worker_name(default) == ""


def test_bad_strategy_and_replica_arguments():
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.get_strategy("tpu")
    with pytest.raises(ValueError, match="cpu_replicas must be a positive int"):
        distribute.configure_cpu_replicas(0)
