"""How fast can TensorFlow train the 784-500-20 VAE in bfloat16 on this CPU? (issue 29)

Parts (`--part`, default all), each setting in its own fresh process because the
environment (`XLA_FLAGS`, `TF_XLA_FLAGS`, `TF_ENABLE_ONEDNN_OPTS`) is read when TensorFlow
starts:

- `matmul`: 2048x2048 and the VAE's own shapes ([100 or 1000, 784] x [784, 500]), float32
  vs bfloat16, as a TF graph op (oneDNN), under XLA with each candidate flag set
  (`XLA_CONFIGS`), and in PyTorch; `ONEDNN_VERBOSE=1` runs name the kernel that ran
  (e.g. `brg_matmul:avx10_1_512_amx` = AMX tiles, `gemm_api` = oneDNN sgemm, none = XLA's
  own Eigen/codegen dot).
- `steps`: one training step of the VAE at batch 100 and 1000, float32 vs bfloat16:
  (a) keras_vae with Keras' `mixed_bfloat16` policy under XLA and without XLA;
  (b) a hand-written `tf.function` step (`hand_step`) with float32 master weights whose dense
      layers run in bfloat16 (no XLA), Adam as TF's fused `ResourceApplyAdam` ops;
  (c) the same step under XLA with the oneDNN flags;
  (d) the hand-written step with k steps per call in one graph `while_loop` (no XLA).
  Examples/s (wall) and CPU us per example (the process's, all threads; steadier on a shared
  machine), the median of `--repeats` timed runs of about `--seconds` each after a warm-up.
- `startup`: time from the process start to the end of the first training step for the
  package's default (`benchmarks/startup.py`, `keras-vae train`), with TF's persistent XLA
  compilation cache (`TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=DIR`, a first run
  that fills it and a second that reads it), and for the hand-written bfloat16 step (no XLA).

Prototypes for the package (see benchmarks/README.md, "bfloat16 on an AMX CPU"):
`bf16_train_step`, one step with float32 variables, bfloat16 matmuls through oneDNN (no XLA),
float32 islands for the posterior's outputs, the log-likelihood's sum, the KL and Adam; and
`fused_adam_class()`, a `keras.optimizers.Adam` whose update is TF's fused `ResourceApplyAdam`
kernel (what makes a non-XLA step cheap at batch 100).

Usage:
    python benchmarks/bf16_study.py [--part matmul|steps|startup|all] [--batch-sizes 100 1000]
        [--seconds 2] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _machine import cpu_info, cpu_line  # noqa: E402

ONEDNN_DOT = "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot"
XLA_CONFIGS = {
    "default": "",
    "onednn_custom_call": "--xla_cpu_experimental_onednn_custom_call=true",
    "onednn_dot": ONEDNN_DOT,
    "xnn_dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "ynn_dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
}
# TF's auto-clustering limited to the ops XLA can fuse: MatMuls stay TF (oneDNN) ops
AUTO_JIT_FUSIBLE = "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit --tf_xla_ops_to_cluster=FUSIBLE"
INPUT, HIDDEN, LATENT = 784, 500, 20
FLOPS_PER_EXAMPLE = 4_100_000


# ---------------------------------------------------------------- children (import TF)
def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def _best_rate(fn, flops: float, repeats: int = 10) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def child_matmul_tf(shapes) -> dict:
    tf = _tf()
    out = {}
    for m, k, n in shapes:
        for dtype in (tf.float32, tf.bfloat16, tf.float16):
            a = tf.cast(tf.random.normal((m, k)), dtype)
            b = tf.cast(tf.random.normal((k, n)), dtype)
            repeats = 10 if m * k * n > 1e8 else 200
            for mode, jit in (("graph", False), ("xla", True)):
                f = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=jit)

                def call(f=f, a=a, b=b):
                    return f(a, b).numpy()

                out[f"{m}x{k}x{n} {dtype.name} {mode}"] = _best_rate(call, 2 * m * k * n, repeats)
    return out


def child_matmul_torch(shapes) -> dict:
    import torch

    out = {}
    for m, k, n in shapes:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            repeats = 10 if m * k * n > 1e8 else 200
            rate = _best_rate(lambda a=a, b=b: a @ b, 2 * m * k * n, repeats)
            out[f"{m}x{k}x{n} {str(dtype).replace('torch.', '')} eager"] = rate
    return out


def glorot(tf, shape, seed):
    limit = (6.0 / sum(shape)) ** 0.5
    return tf.random.stateless_uniform(shape, [seed, 0], -limit, limit)


class HandVAE:
    """The 784-500-20 VAE as eight float32 variables with Keras' initial values' law."""

    def __init__(self, tf, seed=0):
        shapes = [(INPUT, HIDDEN), (HIDDEN, 2 * LATENT), (LATENT, HIDDEN), (HIDDEN, INPUT)]
        self.variables = []
        for i, shape in enumerate(shapes):
            self.variables.append(tf.Variable(glorot(tf, shape, seed + i), name=f"w{i}"))
            self.variables.append(tf.Variable(tf.zeros(shape[1:]), name=f"b{i}"))


def negative_elbo(tf, variables, x, eps, compute_dtype):
    """-1/B sum_i ELBO_i: dense layers in `compute_dtype` (matmul + bias + tanh, which
    oneDNN's graph rewrite fuses), float32 islands: the posterior head's outputs (mu, sigma,
    z), the logits' log-likelihood and its sum over pixels, the KL and the batch mean."""
    w1, b1, w2, b2, w3, b3, w4, b4 = variables

    def dense(h, w, b):
        return tf.nn.bias_add(tf.matmul(tf.cast(h, compute_dtype), tf.cast(w, compute_dtype)),
                              tf.cast(b, compute_dtype))  # fmt: skip

    head = tf.cast(dense(tf.tanh(dense(x, w1, b1)), w2, b2), tf.float32)
    mu, raw_scale = tf.split(head, 2, axis=-1)
    sigma = tf.nn.softplus(raw_scale) + 1e-4
    z = mu + sigma * eps
    logits = tf.cast(dense(tf.tanh(dense(z, w3, b3)), w4, b4), tf.float32)
    log_likelihood = tf.reduce_sum(x * logits - tf.nn.softplus(logits), axis=-1)
    kl = -0.5 * tf.reduce_sum(1.0 + 2.0 * tf.math.log(sigma) - mu**2 - sigma**2, axis=-1)
    return -tf.reduce_mean(log_likelihood - kl)


def bf16_train_step(tf, variables, slots, x, seed, step, compute_dtype=None, lr=1e-3):
    """THE PROTOTYPE: one Adam step of the VAE with bfloat16 matmuls and float32 state.

    `variables`: float32 `tf.Variable`s (master weights); `slots`: their Adam m and v
    (float32); `x`: a float32 batch [B, 784] (0/1 pixels are exact in bfloat16); `seed`:
    a [2] int32 stateless seed; `step`: the 1-based step count (float32 scalar tensor).
    Run it inside a `tf.function` *without* XLA: TensorFlow's oneDNN graph rewrite then runs
    each bfloat16 MatMul (+BiasAdd+Tanh) on AMX; XLA on CPU has no bfloat16 dot that reaches
    AMX (measured: bf16 under XLA no faster than float32, with or without the oneDNN flags).
    Adam: TF's fused `ResourceApplyAdam` kernel, one op per variable, in float32, the same
    update as `keras.optimizers.Adam(lr, epsilon=1e-7)`.
    """
    compute_dtype = compute_dtype or tf.bfloat16
    eps = tf.random.stateless_normal([tf.shape(x)[0], LATENT], seed, alg="philox")
    with tf.GradientTape() as tape:
        loss = negative_elbo(tf, variables, x, eps, compute_dtype)
    grads = tape.gradient(loss, variables)
    beta1, beta2 = 0.9, 0.999
    for var, (m, v), grad in zip(variables, slots, grads, strict=True):
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=m.handle, v=v.handle, beta1_power=beta1**step,
            beta2_power=beta2**step, lr=lr, beta1=beta1, beta2=beta2, epsilon=1e-7, grad=grad,
        )  # fmt: skip
    return loss


def make_hand_runner(tf, images, batch, dtype_name, jit, steps_per_call, optimizer="fused"):
    """A runner(n_calls) of the hand-written step; each call runs `steps_per_call` steps."""
    compute_dtype = {"float32": tf.float32, "bfloat16": tf.bfloat16}[dtype_name]
    model = HandVAE(tf)
    variables = model.variables
    data = tf.constant(images)
    count = images.shape[0]
    perm = tf.constant(__import__("numpy").random.default_rng(0).permutation(count), tf.int32)
    position = tf.Variable(0, dtype=tf.int32)
    iteration = tf.Variable(0.0)
    if optimizer == "keras":
        import keras

        adam = keras.optimizers.Adam(1e-3, epsilon=1e-7)
        adam.build(variables)
        slots = None
    elif optimizer == "xla":  # Adam of all variables as one XLA computation
        slots = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]

        @tf.function(jit_compile=True)
        def xla_adam(grads, step):
            alpha = 1e-3 * tf.sqrt(1.0 - 0.999**step) / (1.0 - 0.9**step)
            for var, (m, v), grad in zip(variables, slots, grads, strict=True):
                m.assign_add((grad - m) * 0.1)
                v.assign_add((tf.square(grad) - v) * 0.001)
                var.assign_sub(alpha * m / (tf.sqrt(v) + 1e-7))
    else:
        slots = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]

    def one_step(i):
        index = tf.math.floormod(position + i * batch + tf.range(batch), count)
        x = tf.gather(data, tf.gather(perm, index))
        iteration.assign_add(1.0)
        seed = tf.stack([tf.cast(iteration, tf.int32), 7])
        if optimizer == "keras":
            eps = tf.random.stateless_normal([batch, LATENT], seed, alg="philox")
            with tf.GradientTape() as tape:
                loss = negative_elbo(tf, variables, x, eps, compute_dtype)
            adam.apply(tape.gradient(loss, variables), variables)
            return loss
        if optimizer == "xla":
            eps = tf.random.stateless_normal([batch, LATENT], seed, alg="philox")
            with tf.GradientTape() as tape:
                loss = negative_elbo(tf, variables, x, eps, compute_dtype)
            xla_adam(tape.gradient(loss, variables), iteration)
            return loss
        return bf16_train_step(tf, variables, slots, x, seed, iteration, compute_dtype)

    @tf.function(jit_compile=jit)
    def call():
        if steps_per_call == 1:
            loss = one_step(0)
        else:
            loss = tf.while_loop(lambda i, _: i < steps_per_call,
                                 lambda i, _: (i + 1, one_step(i)),
                                 (tf.constant(0), tf.constant(0.0)))[1]  # fmt: skip
        position.assign(tf.math.floormod(position + steps_per_call * batch, count))
        return loss

    def run(calls):
        loss = None
        for _ in range(calls):
            loss = call()
        return float(loss)

    return run, steps_per_call


def fused_adam_class():
    """PROTOTYPE: `keras.optimizers.Adam` whose per-variable update is TF's fused
    `ResourceApplyAdam` kernel (one op per variable instead of Keras' ~10 elementwise ops):
    the same update (float32 m, v and weights), much less per-op overhead without XLA."""
    import keras
    import tensorflow as tf

    def _handle(variable):  # a tf.Variable inside Keras' distributed update, else a Keras one
        return variable.handle if hasattr(variable, "handle") else variable.value.handle

    class FusedAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            index = self._get_variable_index(variable)
            m, v = self._momentums[index], self._velocities[index]
            dtype = variable.dtype
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            tf.raw_ops.ResourceApplyAdam(
                var=_handle(variable), m=_handle(m), v=_handle(v),
                beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
                epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype),
            )  # fmt: skip

    return FusedAdam


def make_keras_runner(images, batch, precision, xla, spe, optimizer="keras"):
    """keras_vae's train function (what `fit` calls once per execution of `spe` steps) on
    one persistent iterator of `keras_vae.data.make_dataset`; run(calls) = calls executions.
    (Calling it directly leaves out `fit`'s per-call start-up, a new iterator whose 50,000-
    image shuffle buffer refills, which a short `fit` per timed run would count; and Keras'
    callback loop, about 4% at steps_per_execution 10, as the hand-written steps have none.)"""
    import keras_reference as kr

    if precision != "float32":
        kr.keras.mixed_precision.set_global_policy(precision)
    vae = kr.compiled_vae(xla, spe)
    if optimizer == "fused":
        vae.compile(optimizer=fused_adam_class()(kr.LEARNING_RATE, epsilon=1e-7),
                    jit_compile=xla, steps_per_execution=spe)  # fmt: skip
    dataset = kr.kv_data.make_dataset(
        images.reshape(-1, 28, 28, 1),
        batch_size=batch,
        shuffle=True,
        seed=0,
        repeat=True,
        drop_remainder=True,
    )
    spe_value = int(vae.steps_per_execution)
    vae.fit(dataset, epochs=1, steps_per_epoch=2 * spe_value, shuffle=False, verbose=0)
    function = vae.make_train_function()
    iterator = iter(dataset)

    def run(calls):
        logs = None
        for _ in range(calls):
            logs = function(iterator)
        return float(logs["loss"])

    return run, spe_value


def child_step(spec: dict, images_path: str) -> dict:
    tf = _tf()
    import numpy as np

    images = np.load(images_path).astype(np.float32)
    if spec.get("remapping") is False:  # keeps MatMul, BiasAdd and Tanh apart (no _FusedMatMul)
        tf.config.optimizer.set_experimental_options({"remapping": False})
    out = {}
    for batch in spec["batch_sizes"]:
        start = time.perf_counter()
        if spec["kind"] == "keras":
            run, per_call = make_keras_runner(
                images,
                batch,
                spec["precision"],
                spec["xla"],
                spec.get("spe", 10),
                spec.get("optimizer", "keras"),
            )
        else:
            run, per_call = make_hand_runner(
                tf,
                images,
                batch,
                spec["precision"],
                spec["xla"],
                spec.get("spe", 1),
                spec.get("optimizer", "fused"),
            )
        loss = run(max(2, 20 // per_call))  # warm-up: tracing, compilation
        first_s = time.perf_counter() - start
        calls = 5
        while True:  # calibrate ~ `seconds` per timed run
            t = time.perf_counter()
            run(calls)
            took = time.perf_counter() - t
            if took > 0.3 * spec["seconds"] or calls > 10**6:
                break
            calls *= 4
        calls = max(1, int(calls * spec["seconds"] / took))
        rates, cpus = [], []
        for _ in range(spec["repeats"]):
            t, c = time.perf_counter(), time.process_time()
            loss = run(calls)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            examples = calls * per_call * batch
            rates.append(examples / wall)
            cpus.append(1e6 * cpu / examples)
        out[str(batch)] = {"examples_per_s": statistics.median(rates), "rounds": rates,
                           "cpu_us_per_example": statistics.median(cpus),
                           "warmup_s": first_s, "loss": loss,
                           "load": os.getloadavg()[0]}  # fmt: skip
    return out


# ------------------------------------------------------------------ the parent (no TF)
def run_child(args: list[str], env_extra: dict, timeout: int = 600) -> dict | None:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TF_XLA_FLAGS")}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(HERE)])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": done.stderr.strip()[-400:]}
    result = json.loads(lines[-1])
    if env_extra.get("ONEDNN_VERBOSE"):
        kernels = {}
        for line in done.stdout.splitlines() + done.stderr.splitlines():
            parts = line.split(",")
            if line.startswith("onednn_verbose") and len(parts) > 8 and parts[3] == "exec":
                kind = parts[5] if parts[2] == "primitive" else f"graph {parts[6]}"
                key = f"{kind} {parts[6] if parts[2] == 'primitive' else ''} {parts[8][:40]}"
                kernels[key.strip()] = kernels.get(key.strip(), 0) + 1
        result["onednn_kernels"] = kernels
    return result


def part_matmul(args) -> dict:
    shapes = [(2048, 2048, 2048), (100, 784, 500), (1000, 784, 500)]
    out = {}
    for name, flags in XLA_CONFIGS.items():
        result = run_child(["--child", "matmul_tf", "--shapes", json.dumps(shapes)],
                           {"XLA_FLAGS": flags} if flags else {})  # fmt: skip
        out[f"tf {name}"] = result
        print(f"  TF, XLA_FLAGS {name} ({flags or 'none'}): " + _fmt(result), flush=True)
    out["tf onednn off"] = run_child(["--child", "matmul_tf", "--shapes", json.dumps(shapes)],
                                     {"TF_ENABLE_ONEDNN_OPTS": "0"})  # fmt: skip
    print("  TF, TF_ENABLE_ONEDNN_OPTS=0: " + _fmt(out["tf onednn off"]), flush=True)
    for name in ("default", "onednn_dot"):  # which kernels ran (2048^2 only)
        env = {"ONEDNN_VERBOSE": "1", **({"XLA_FLAGS": XLA_CONFIGS[name]} if name != "default"
                                         else {})}  # fmt: skip
        result = run_child(["--child", "matmul_tf", "--shapes", json.dumps(shapes[:1])], env)
        out[f"tf {name} kernels"] = (result or {}).get("onednn_kernels")
        print(f"  oneDNN kernels, XLA_FLAGS {name}: {out[f'tf {name} kernels']}", flush=True)
    out["torch"] = run_child(["--child", "matmul_torch", "--shapes", json.dumps(shapes)], {})
    print("  PyTorch: " + _fmt(out["torch"]), flush=True)
    return out


def _fmt(result: dict | None) -> str:
    if not result or "error" in result:
        return f"error {(result or {}).get('error', '')[-200:]}"
    return ", ".join(f"{k} {v:,.0f}" for k, v in result.items() if isinstance(v, float))


STEP_VARIANTS = {
    # (a) Keras' policy on keras_vae as it is today
    "keras_vae float32, XLA (default)": (
        {"kind": "keras", "precision": "float32", "xla": True},
        {},
    ),
    "keras_vae float32, no XLA": ({"kind": "keras", "precision": "float32", "xla": False}, {}),
    "keras_vae mixed_bfloat16, XLA": (
        {"kind": "keras", "precision": "mixed_bfloat16", "xla": True},
        {},
    ),
    "keras_vae mixed_bfloat16, no XLA": (
        {"kind": "keras", "precision": "mixed_bfloat16", "xla": False},
        {},
    ),
    "keras_vae mixed_bfloat16, no XLA, fused Adam": (
        {"kind": "keras", "precision": "mixed_bfloat16", "xla": False, "optimizer": "fused"},
        {},
    ),
    "keras_vae float32, no XLA, fused Adam": (
        {"kind": "keras", "precision": "float32", "xla": False, "optimizer": "fused"},
        {},
    ),
    # (c) XLA with the oneDNN dot flags
    "keras_vae mixed_bfloat16, XLA + oneDNN dot flags": (
        {"kind": "keras", "precision": "mixed_bfloat16", "xla": True},
        {"XLA_FLAGS": ONEDNN_DOT},
    ),
    # (b) the hand-written step, one step per call, no XLA
    "hand step float32, no XLA": ({"kind": "hand", "precision": "float32", "xla": False}, {}),
    "hand step bf16, no XLA": ({"kind": "hand", "precision": "bfloat16", "xla": False}, {}),
    "hand step bf16, no XLA, Keras Adam": (
        {"kind": "hand", "precision": "bfloat16", "xla": False, "optimizer": "keras"},
        {},
    ),
    "hand step bf16, no XLA, oneDNN opts off": (
        {"kind": "hand", "precision": "bfloat16", "xla": False},
        {"TF_ENABLE_ONEDNN_OPTS": "0"},
    ),
    "hand step float32, XLA": ({"kind": "hand", "precision": "float32", "xla": True}, {}),
    "hand step bf16, XLA": ({"kind": "hand", "precision": "bfloat16", "xla": True}, {}),
    "hand step bf16, XLA + oneDNN dot flags": (
        {"kind": "hand", "precision": "bfloat16", "xla": True},
        {"XLA_FLAGS": ONEDNN_DOT},
    ),
    # (b') hybrids: oneDNN bf16 matmuls as TF ops, elementwise work compiled by XLA
    "hand step bf16, no XLA, Adam as one XLA call": (
        {"kind": "hand", "precision": "bfloat16", "xla": False, "optimizer": "xla"},
        {},
    ),
    "hand step bf16, XLA auto-clustering of elementwise ops (FUSIBLE)": (
        {"kind": "hand", "precision": "bfloat16", "xla": False},
        {"TF_XLA_FLAGS": AUTO_JIT_FUSIBLE},
    ),
    "hand step bf16, Adam as one XLA call + auto-clustering (FUSIBLE)": (
        {"kind": "hand", "precision": "bfloat16", "xla": False, "optimizer": "xla"},
        {"TF_XLA_FLAGS": AUTO_JIT_FUSIBLE},
    ),
    # Grappler's remapper fuses MatMul+BiasAdd+Tanh into _FusedMatMul, which oneDNN runs as
    # an inner product on `gemm:jit` (AVX-512, not AMX); unfused, the MatMuls reach AMX
    "hand step bf16, no XLA, remapper off": (
        {"kind": "hand", "precision": "bfloat16", "xla": False, "remapping": False},
        {},
    ),
    "hand step bf16, remapper off + auto-clustering (FUSIBLE)": (
        {"kind": "hand", "precision": "bfloat16", "xla": False, "remapping": False},
        {"TF_XLA_FLAGS": AUTO_JIT_FUSIBLE},
    ),
    "hand step bf16, remapper off + auto-clustering (FUSIBLE), 10 steps per call": (
        {"kind": "hand", "precision": "bfloat16", "xla": False, "remapping": False, "spe": 10},
        {"TF_XLA_FLAGS": AUTO_JIT_FUSIBLE},
    ),
    # (d) k steps per call in one graph while_loop
    "hand step bf16, no XLA, 10 steps per call": (
        {"kind": "hand", "precision": "bfloat16", "xla": False, "spe": 10},
        {},
    ),
    "hand step bf16, auto-clustering (FUSIBLE), 10 steps per call": (
        {"kind": "hand", "precision": "bfloat16", "xla": False, "spe": 10},
        {"TF_XLA_FLAGS": AUTO_JIT_FUSIBLE},
    ),
    "hand step float32, auto-clustering (FUSIBLE)": (
        {"kind": "hand", "precision": "float32", "xla": False},
        {"TF_XLA_FLAGS": AUTO_JIT_FUSIBLE},
    ),
    "hand step float32, XLA, 10 steps per call": (
        {"kind": "hand", "precision": "float32", "xla": True, "spe": 10},
        {},
    ),
    "hand step bf16, XLA, 10 steps per call": (
        {"kind": "hand", "precision": "bfloat16", "xla": True, "spe": 10},
        {},
    ),
}


def part_steps(args, data: Path) -> dict:
    out = {}
    chosen = [v for v in STEP_VARIANTS if not args.variants or any(s in v for s in args.variants)]
    for name in chosen:
        spec, env = STEP_VARIANTS[name]
        spec = {**spec, "batch_sizes": args.batch_sizes, "seconds": args.seconds,
                "repeats": args.repeats}  # fmt: skip
        result = run_child(["--child", "step", "--spec", json.dumps(spec), "--data", str(data)],
                           env)  # fmt: skip
        out[name] = result
        if not result or "error" in result:
            print(f"  {name}: error {(result or {}).get('error', '')[-300:]}", flush=True)
            continue
        text = "; ".join(f"batch {b}: {r['examples_per_s']:,.0f}/s, {r['cpu_us_per_example']:.1f}"
                         f" CPU us/ex (load {r['load']:.1f}"
                         + (f", last loss {r['loss']:.1f})" if r["loss"] is not None else ")")
                         for b, r in result.items())  # fmt: skip
        print(f"  {name}: {text}", flush=True)
    return out


def part_startup(args, data: Path) -> dict:
    out = {}
    startup = [sys.executable, str(HERE / "startup.py"), "--repeats", "1", "--json"]
    with tempfile.TemporaryDirectory() as cache:
        for name, flags in (("no cache", ""),
                            ("persistent cache, first run (fills it)",
                             f"--tf_xla_persistent_cache_directory={cache}"),
                            ("persistent cache, second run (reads it)",
                             f"--tf_xla_persistent_cache_directory={cache}")):  # fmt: skip
            env = {k: v for k, v in os.environ.items() if k != "TF_XLA_FLAGS"}
            env["PYTHONPATH"] = str(REPO_ROOT)
            if flags:
                env["TF_XLA_FLAGS"] = flags
            done = subprocess.run(startup, env=env, capture_output=True, text=True, check=False)
            lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
            result = (
                json.loads(lines[-1])["phase_ends_s"] if lines else {"error": done.stderr[-300:]}
            )
            out[name] = result
            files = sum(len(f) for _, _, f in os.walk(cache))
            print(f"  keras-vae train, {name}: {result} (cache files {files}, load "
                  f"{os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    t0 = repr(time.time())
    result = run_child(["--child", "first_step", "--data", str(data)], {"KV_T0": t0})
    out["hand step bf16 no XLA: process start to first step done"] = result
    print(f"  hand-written bf16 step (no XLA), import + data + first step: {result}")
    return out


def child_first_step(images_path: str) -> dict:
    t0 = float(os.environ["KV_T0"])
    tf = _tf()
    import numpy as np

    imported = time.time() - t0
    images = np.load(images_path).astype(np.float32)
    run, _ = make_hand_runner(tf, images, 100, "bfloat16", False, 10)
    run(1)
    return {"imports_s": imported, "first_10_steps_done_s": time.time() - t0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["matmul", "steps", "startup", "all"], default="all")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seconds", type=float, default=2.0, help="per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="*", help="substrings of step variant names")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("TFDS_DATA_DIR")
        or str(REPO_ROOT.parent / "shared" / "tensorflow_datasets"),
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--shapes", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        shapes = json.loads(args.shapes) if args.shapes else None
        result = {"matmul_tf": lambda: child_matmul_tf(shapes),
                  "matmul_torch": lambda: child_matmul_torch(shapes),
                  "step": lambda: child_step(json.loads(args.spec), args.data),
                  "first_step": lambda: child_first_step(args.data)}[args.child]()  # fmt: skip
        print(json.dumps(result), flush=True)
        return
    print(cpu_line())
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    report = {"cpu": cpu_info(), "loadavg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.npy"
        if args.part in ("steps", "startup", "all"):
            subprocess.run([sys.executable, str(HERE / "keras_reference.py"), "--write-data",
                            str(data), "--data-dir", args.data_dir], check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
        if args.part in ("matmul", "all"):
            print("matmul GFLOP/s (best of 10 or 200 calls):", flush=True)
            report["matmul"] = part_matmul(args)
        if args.part in ("steps", "all"):
            print("training steps:", flush=True)
            report["steps"] = part_steps(args, data)
        if args.part in ("startup", "all"):
            print("start-up:", flush=True)
            report["startup"] = part_startup(args, data)
    report["loadavg_end"] = os.getloadavg()
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
