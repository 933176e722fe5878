"""JAX + optax reference for `throughput.py`: the same MLP VAE, one `jax.jit` step per batch.

Model and objective match `keras_vae.mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500)`
and `torch_reference.py`: encoder 784 -> 500 (tanh) -> 40 (mu and the raw scale,
sigma = softplus(raw) + 1e-4), one reparameterised z = mu + sigma * eps, decoder
20 -> 500 (tanh) -> 784 logits, Bernoulli log-likelihood, analytic KL to N(0, I), loss = the
negative ELBO averaged over the batch, `optax.adam(1e-3, eps=1e-7)` (Keras' epsilon), batch 100.

Precision (`--precision`): `float32`, or `bfloat16`, mixed precision as JAX users write it
(the jmp / Flax `dtype=bfloat16, param_dtype=float32` recipe): float32 parameters and Adam
state, each dense layer casts its input, kernel and bias to bfloat16 and computes in bfloat16
(matmuls, tanh), the posterior's outputs and the logits are cast back to float32, so the
softplus, the sums of log-probabilities over pixels and the KL run in float32; the gradients
reach the float32 parameters through the casts.

Written the way the JAX documentation trains a model: parameters and optimizer state are
pytrees; one `jax.jit`-compiled function takes (params, opt_state, key, batch) and returns
the updated ones (their buffers donated, so XLA updates them in place); a Python loop feeds
NumPy batches from a shuffled index. It imports no TensorFlow; `throughput.py` runs it in a
subprocess on the same binarized MNIST (`--data`, a uint8 .npy of shape [N, 784]).

Usage:
    python benchmarks/jax_reference.py --steps 600 [--precision bfloat16] [--batch-size 100]
        [--data train.npy] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _machine import cpu_info, cpu_line
from _serve import serve

HIDDEN = 500
LATENT = 20


def init_params(key: jax.Array, input_dim: int) -> dict:
    """Glorot-uniform weights and zero biases, as Keras' `Dense` starts."""
    sizes = {
        "enc": (input_dim, HIDDEN),
        "post": (HIDDEN, 2 * LATENT),
        "dec": (LATENT, HIDDEN),
        "lik": (HIDDEN, input_dim),
    }
    params = {}
    for (name, (n_in, n_out)), k in zip(sizes.items(), jax.random.split(key, 4), strict=True):
        limit = np.sqrt(6.0 / (n_in + n_out))
        params[name] = {
            "w": jax.random.uniform(k, (n_in, n_out), jnp.float32, -limit, limit),
            "b": jnp.zeros((n_out,), jnp.float32),
        }
    return params


def negative_elbo(
    params: dict, x: jax.Array, eps: jax.Array, compute_dtype=jnp.float32
) -> jax.Array:
    """-1/B sum_i [log p(x_i|z_i) - KL(q(z|x_i) || N(0, I))], in nats; the dense layers
    compute in `compute_dtype`, the loss terms in float32."""

    def dense(name, h):
        w, b = params[name]["w"].astype(compute_dtype), params[name]["b"].astype(compute_dtype)
        return h.astype(compute_dtype) @ w + b

    head = dense("post", jnp.tanh(dense("enc", x))).astype(jnp.float32)
    mu, raw_scale = jnp.split(head, 2, axis=-1)
    sigma = jax.nn.softplus(raw_scale) + 1e-4
    z = mu + sigma * eps
    logits = dense("lik", jnp.tanh(dense("dec", z))).astype(jnp.float32)
    # log Bernoulli(x; sigmoid(l)) = x l - softplus(l)
    log_likelihood = jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)
    kl = -0.5 * jnp.sum(1.0 + 2.0 * jnp.log(sigma) - mu**2 - sigma**2, axis=-1)
    return -jnp.mean(log_likelihood - kl)


def make_step(optimizer: optax.GradientTransformation, compute_dtype=jnp.float32):
    """One training step, jit-compiled, params/opt_state/key donated."""

    def step(params, opt_state, key, x):
        key, noise_key = jax.random.split(key)
        eps = jax.random.normal(noise_key, (x.shape[0], LATENT), jnp.float32)
        loss, grads = jax.value_and_grad(negative_elbo)(params, x, eps, compute_dtype)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, loss

    return jax.jit(step, donate_argnums=(0, 1, 2))


def make_loop(images: np.ndarray, batch_size: int, seed: int = 0, precision: str = "float32"):
    """A training loop; `run(steps)` trains `steps` more steps and returns (examples/s of
    those steps, last batch loss). The first call compiles: warm up first."""
    key, init_key = jax.random.split(jax.random.PRNGKey(seed))
    optimizer = optax.adam(1e-3, eps=1e-7)
    params = init_params(init_key, images.shape[1])
    state = {"params": params, "opt_state": optimizer.init(params), "key": key}
    step = make_step(optimizer, jnp.bfloat16 if precision == "bfloat16" else jnp.float32)
    rng = np.random.default_rng(seed)
    order = {"indices": rng.permutation(len(images)), "position": 0}

    def run(steps: int) -> tuple[float, float]:
        params, opt_state, key, loss = state["params"], state["opt_state"], state["key"], None
        start = time.perf_counter()
        for _ in range(steps):
            if order["position"] + batch_size > len(images):
                order["indices"], order["position"] = rng.permutation(len(images)), 0
            batch = images[order["indices"][order["position"] : order["position"] + batch_size]]
            order["position"] += batch_size
            params, opt_state, key, loss = step(params, opt_state, key, batch)
        jax.block_until_ready(params)
        elapsed = time.perf_counter() - start
        state.update(params=params, opt_state=opt_state, key=key)
        return steps * batch_size / elapsed, float(loss)

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="uint8 .npy [N, 784] of binary images")
    parser.add_argument("--steps", type=int, default=600, help="timed steps")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--serve", action="store_true", help="timed rounds asked on stdin")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args(argv)
    if not args.serve:
        print(cpu_line(), flush=True)
    if args.data:
        images = np.load(args.data).astype(np.float32)
    else:
        images = (np.random.default_rng(0).random((50_000, 784)) < 0.13).astype(np.float32)
    images = images.reshape(len(images), -1)
    run = make_loop(images, args.batch_size, precision=args.precision)
    run(args.warmup)
    meta = {"jax_version": jax.__version__, "optax_version": optax.__version__,
            "precision": args.precision, "cpu": cpu_info()}  # fmt: skip
    if args.serve:
        serve(run, meta)
        return
    rate, loss = run(args.steps)
    print(
        f"JAX {jax.__version__} + optax {optax.__version__}, jit step, {args.precision}, batch "
        f"{args.batch_size}: {rate:,.0f} examples/s (final batch loss {loss:.1f} nats)"
    )
    if args.json:
        print(json.dumps({"examples_per_s": rate, "final_loss": loss, **meta}))


if __name__ == "__main__":
    main()
