"""Strategy selection, the XLA policy, and MirroredStrategy equivalence on 2 logical CPUs."""

import subprocess
import sys
import textwrap
import warnings

import pytest
import tensorflow as tf

from keras_vae import distribute

MIRRORED_EQUIVALENCE = textwrap.dedent(
    """
    import json, warnings
    import numpy as np
    import tensorflow as tf
    from keras_vae import distribute
    distribute.configure_cpu_replicas(2)
    import keras
    from keras_vae import mlp_vae

    class FixedNoiseVAE(type(mlp_vae((2,), 1, 2))):
        # noise as a deterministic function of each example, so that a replica that sees
        # part of the batch draws exactly the noise a single device draws for those examples
        def posterior_samples(self, posterior, num_samples, seed=None):
            loc = posterior.distribution.loc
            scale = posterior.distribution.scale
            steps = tf.range(num_samples, dtype=loc.dtype)[:, None, None]
            eps = tf.sin(7.0 * tf.stop_gradient(loc)[None] + steps)  # smooth: no chaos
            return loc[None] + scale[None] * eps

    rng = np.random.default_rng(0)
    # 63 examples in global batches of 21: every batch splits 11 + 10 over the 2 replicas
    x = (rng.uniform(size=(63, 6, 5, 1)) > 0.5).astype("float32")

    def make(strategy, jit_compile=None):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            base = mlp_vae((6, 5, 1), latent_dim=3, hidden_units=[16], num_samples=2, seed=1)
            model = FixedNoiseVAE.from_config(base.get_config())
            model.build((None, 6, 5, 1))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.compile(keras.optimizers.SGD(0.05), jit_compile=jit_compile)
        return model, [str(w.message) for w in caught]

    single, _ = make(distribute.get_strategy("default"))
    initial = [w.copy() for w in single.get_weights()]
    hs = single.fit(x, batch_size=21, epochs=2, shuffle=False, verbose=0).history
    out = {"xla_single": single.xla, "jit_single": bool(single.jit_compile),
           "weight_change": max(float(np.abs(a - b).max())
                                for a, b in zip(initial, single.get_weights())),
           "metrics_single": {k: v[-1] for k, v in hs.items()}}
    strategy = distribute.get_strategy("mirrored")
    out["replicas"] = strategy.num_replicas_in_sync
    for jit in (None, False):
        mirrored, caught = make(strategy, jit)
        mirrored.set_weights(initial)
        hm = mirrored.fit(x, batch_size=21, epochs=2, shuffle=False, verbose=0).history
        out[f"mirrored_{jit}"] = {
            "xla": mirrored.xla, "jit": bool(mirrored.jit_compile), "warnings": caught,
            "weight_diff": max(float(np.abs(a - b).max())
                               for a, b in zip(single.get_weights(), mirrored.get_weights())),
            "metrics": {k: v[-1] for k, v in hm.items()},
            "evaluate": mirrored.evaluate(x, batch_size=21, verbose=0, return_dict=True),
        }
    out["evaluate_single"] = single.evaluate(x, batch_size=21, verbose=0, return_dict=True)
    print("RESULT " + json.dumps(out))
    """
)


def test_mirrored_steps_equal_single_device_steps_on_the_same_global_batches():
    completed = subprocess.run(
        [sys.executable, "-c", MIRRORED_EQUIVALENCE], capture_output=True, text=True, timeout=300
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, completed.stderr[-3000:]
    import json

    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["replicas"] == 2
    assert out["xla_single"] == "step" and out["jit_single"] is True
    # XLA under the strategy: the replica math is compiled, Keras' own jit_compile is not
    assert out["mirrored_None"]["xla"] == "replica" and out["mirrored_None"]["jit"] is False
    assert out["mirrored_False"]["xla"] == "off"
    # six SGD steps moved the weights, and moved them identically: each replica's loss is
    # weighted by its share of the global batch (11/21 and 10/21); without the weighting the
    # mirrored step would be twice as large, with 1/replicas slightly off on uneven splits
    assert out["weight_change"] > 1e-3
    for run in ("mirrored_None", "mirrored_False"):
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


def test_bad_strategy_and_replica_arguments():
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.get_strategy("tpu")
    with pytest.raises(ValueError, match="cpu_replicas must be a positive int"):
        distribute.configure_cpu_replicas(0)
