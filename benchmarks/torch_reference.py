"""PyTorch eager reference for `throughput.py`: the same MLP VAE, trained with a plain loop.

Model and objective match `keras_vae.mlp_vae((28, 28, 1), latent_dim=20, hidden_units=500)`:
encoder 784 -> 500 (tanh) -> 40 (mu and the raw scale, sigma = softplus(raw) + 1e-4), one
reparameterised sample z = mu + sigma * eps, decoder 20 -> 500 (tanh) -> 784 logits, Bernoulli
log-likelihood as minus BCE-with-logits summed over pixels, analytic KL to N(0, I), loss = the
negative ELBO averaged over the batch, Adam(1e-3, eps=1e-7 as in Keras), batch 100.

Precision (`--precision`): `float32`, or `bfloat16`, PyTorch's own mixed precision as its
users write it: the loss under `torch.autocast("cpu", dtype=torch.bfloat16)` (linear layers in
bfloat16 on oneDNN, the ops on autocast's float32 list in float32), float32 parameters and
Adam state, `backward()` and `optimizer.step()` outside the autocast region. Threads: PyTorch's
own default (one per physical core) unless `--threads` is given.

It imports no TensorFlow. `throughput.py` runs it in a subprocess on the same binarized MNIST
(`--data`, a uint8 .npy of shape [N, 784]); without `--data` it trains on random binary
images, which costs the same.

Usage:
    python benchmarks/torch_reference.py --steps 600 [--compile] [--precision bfloat16]
        [--batch-size 100] [--data train.npy] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch
from _machine import cpu_info, cpu_line
from _serve import serve
from torch import nn
from torch.nn import functional as F


class MLPVAE(nn.Module):
    """784-500-20 VAE with tanh hidden units, diagonal Gaussian q(z|x), Bernoulli p(x|z)."""

    def __init__(self, input_dim: int = 784, hidden: int = 500, latent: int = 20):
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden), nn.Tanh())
        self.posterior = nn.Linear(hidden, 2 * latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh())
        self.likelihood = nn.Linear(hidden, input_dim)

    def negative_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """-1/B sum_i [log p(x_i|z_i) - KL(q(z|x_i) || N(0, I))], in nats."""
        mu, raw_scale = self.posterior(self.encoder(x)).chunk(2, dim=-1)
        sigma = F.softplus(raw_scale) + 1e-4
        z = mu + sigma * torch.randn_like(mu)
        logits = self.likelihood(self.decoder(z))
        log_likelihood = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = -0.5 * (1.0 + 2.0 * torch.log(sigma) - mu.square() - sigma.square()).sum(-1)
        return -(log_likelihood - kl).mean()


def make_loop(
    data: torch.Tensor,
    batch_size: int,
    seed: int = 0,
    compile_model: bool = False,
    precision: str = "float32",
) -> Callable[[int], tuple[float, float]]:
    """A training loop; `run(steps)` trains `steps` more steps and returns (examples/s of
    those steps, last batch loss).

    With `compile_model` the loss (forward and, through AOTAutograd, backward) runs as one
    `torch.compile`d graph (Inductor, C++ kernels) and Adam as its fused CPU kernel; the first
    call compiles (keep it out of the timing: warm up first). With `precision="bfloat16"`
    the loss runs under `torch.autocast("cpu", dtype=torch.bfloat16)`.
    """
    torch.manual_seed(seed)
    model = MLPVAE(input_dim=data.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, fused=compile_model)
    loss_fn = torch.compile(model.negative_elbo) if compile_model else model.negative_elbo
    generator = torch.Generator().manual_seed(seed)
    state = {"order": torch.randperm(len(data), generator=generator), "position": 0}
    autocast = precision == "bfloat16"

    def run(steps: int) -> tuple[float, float]:
        loss = torch.zeros(())
        start = time.perf_counter()
        for _ in range(steps):
            if state["position"] + batch_size > len(data):
                state["order"], state["position"] = (
                    torch.randperm(len(data), generator=generator),
                    0,
                )
            batch = data[state["order"][state["position"] : state["position"] + batch_size]]
            state["position"] += batch_size
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(batch)
            loss.backward()
            optimizer.step()
        return steps * batch_size / (time.perf_counter() - start), float(loss.detach())

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="uint8 .npy [N, 784] of binary images")
    parser.add_argument("--steps", type=int, default=600, help="timed steps")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--compile", action="store_true", help="torch.compile the loss")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--serve", action="store_true", help="timed rounds asked on stdin")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args(argv)
    if not args.serve:
        print(cpu_line(), flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data:
        images = np.load(args.data).astype(np.float32)
    else:
        images = (np.random.default_rng(0).random((50_000, 784)) < 0.13).astype(np.float32)
    data = torch.from_numpy(images.reshape(len(images), -1))
    run = make_loop(data, args.batch_size, compile_model=args.compile, precision=args.precision)
    run(args.warmup)
    mode = "torch.compile" if args.compile else "eager"
    meta = {"torch_version": torch.__version__, "mode": mode, "precision": args.precision,
            "threads": torch.get_num_threads(), "cpu": cpu_info()}  # fmt: skip
    if args.serve:
        serve(run, meta)
        return
    rate, loss = run(args.steps)
    print(
        f"PyTorch {torch.__version__} {mode} {args.precision}, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads: {rate:,.0f} examples/s (final batch loss "
        f"{loss:.1f} nats)"
    )
    if args.json:
        print(json.dumps({"examples_per_s": rate, "final_loss": loss, **meta}))


if __name__ == "__main__":
    main()
