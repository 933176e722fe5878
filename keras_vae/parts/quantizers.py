"""Vector quantisation (van den Oord et al. 2017, VQ-VAE): a codebook of K vectors in R^D.

`VectorQuantizer` maps each encoder output z_e `[..., D]` to its nearest code,

    k(z_e) = argmin_j ||z_e - e_j||^2,    z_q = e_k,

and passes gradients straight through, z_st = z_e + stop_gradient(z_q - z_e): the forward
value is z_q, the gradient with respect to z_e is the gradient with respect to z_q. The
objective adds, per example and summed over positions and dimensions,

    commitment = ||z_e - sg(z_q)||^2         (trains the encoder; weight beta)
    codebook   = ||sg(z_e) - z_q||^2         (trains the codebook, `codebook_update="loss"`)

With `codebook_update="ema"` (the default) the codebook is not trained by gradients but set to
exponential moving averages of the encoder outputs assigned to each code (paper, appendix A.1):

    N_k <- g N_k + (1 - g) n_k,       m_k <- g m_k + (1 - g) sum_{i: k(i) = k} z_e,i
    e_k = m_k / N~_k,   N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j   (Laplace)

n_k the number of the step's encoder outputs assigned to code k in the *global* batch, g the
`decay`. N starts at 1 and m at the initial codebook (so e starts at it). Under a distribution
strategy every replica sums its n_k and its sums with `ReplicaContext.all_reduce`, so each
replica applies the update of one device on the global batch (up to the order of float sums).

Dead codes: a code whose moving count N_k (assignments per step, kept in both modes) falls
below `restart_threshold` is restarted at a random encoder output of the current step's global
batch (the most recent outputs), with N_k = 1 and m_k = that output.

All state (codebook, counts, sums) is held in weights, so it is saved in `.keras` files and
restored on resume; the EMA state is non-trainable with `aggregation="only_first_replica"`: the
replicas compute the same new value and the first replica's is kept.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_vae import registry
from keras_vae._internal.checks import check_positive_int

CODEBOOK_UPDATES = ("ema", "loss")


def _check_unit_interval(name: str, value: object, upper_open: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a float in [0, 1). Received: {name}={value!r}")
    return float(value)


def nearest_codes(z: tf.Tensor, codebook: tf.Tensor) -> tf.Tensor:
    """argmin_k ||z - e_k||^2 for z `[..., D]` and codebook `[K, D]`: int32 `[...]`.

    Uses ||z||^2 - 2 z.e_k + ||e_k||^2 with plain ops (MatMul, ArgMin: TFLite builtins).
    """
    flat = tf.reshape(z, [-1, tf.shape(codebook)[1]])
    distances = (
        tf.reduce_sum(tf.square(flat), axis=1, keepdims=True)
        - 2.0 * tf.matmul(flat, codebook, transpose_b=True)
        + tf.reduce_sum(tf.square(codebook), axis=1)[None, :]
    )
    codes = tf.argmin(distances, axis=1, output_type=tf.int32)
    return tf.reshape(codes, tf.shape(z)[:-1])


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class VectorQuantizer(keras.layers.Layer):
    """Nearest-code quantisation with a straight-through gradient; see the module docstring.

    Args:
        codebook_size: K, the number of codes.
        code_dim: D, the size of each code (the encoder's output channels).
        codebook_update: `"ema"` (moving averages, no gradient) or `"loss"` (a trainable
            codebook, trained by the codebook loss).
        decay: g of the moving averages (the EMA codebook and the usage counts).
        epsilon: Laplace smoothing of the EMA counts.
        restart_threshold: Restart codes whose moving count of assignments per step is below
            this, in [0, 1); 0 turns restarts off.
        seed: Seed of the codebook's initial values.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Example:
        >>> vq = VectorQuantizer(512, 64)
        >>> z_st, codes = vq(z_e)                       # z_e [B, 7, 7, 64]
        >>> commitment, codebook = vq.losses_per_example(z_e, vq.lookup(codes))
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        codebook_update: str = "ema",
        decay: float = 0.99,
        epsilon: float = 1e-5,
        restart_threshold: float = 0.1,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.codebook_size = check_positive_int("codebook_size", codebook_size)
        self.code_dim = check_positive_int("code_dim", code_dim)
        if codebook_update not in CODEBOOK_UPDATES:
            raise ValueError(
                f"codebook_update must be one of {CODEBOOK_UPDATES}. "
                f"Received: codebook_update={codebook_update!r}"
            )
        self.codebook_update = codebook_update
        self.decay = _check_unit_interval("decay", decay)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(f"epsilon must be a positive float. Received: epsilon={epsilon!r}")
        self.epsilon = float(epsilon)
        self.restart_threshold = _check_unit_interval("restart_threshold", restart_threshold)
        self.seed = seed

    @property
    def ema(self) -> bool:
        return self.codebook_update == "ema"

    def build(self, input_shape=None):
        if input_shape is not None and input_shape[-1] not in (None, self.code_dim):
            raise ValueError(
                f"The quantizer's codes have {self.code_dim} dimensions but its inputs "
                f"{input_shape[-1]}; give the encoder code_dim={input_shape[-1]} outputs."
            )
        shape = (self.codebook_size, self.code_dim)
        initializer = keras.initializers.VarianceScaling(
            1.0, mode="fan_out", distribution="uniform", seed=self.seed
        )
        state = {"trainable": False, "aggregation": "only_first_replica"}
        if self.ema:
            self.codebook = self.add_weight(shape=shape, initializer=initializer,
                                            name="codebook", **state)  # fmt: skip
            self.ema_sums = self.add_weight(shape=shape, initializer="zeros",
                                            name="ema_sums", **state)  # fmt: skip
            self.ema_sums.assign(self.codebook.value)  # m_k = N_k e_k with N_k = 1
        else:
            self.codebook = self.add_weight(shape=shape, initializer=initializer,
                                            name="codebook", trainable=True,
                                            aggregation="only_first_replica")  # fmt: skip
        self.ema_counts = self.add_weight(shape=(self.codebook_size,), initializer="ones",
                                          name="ema_counts", **state)  # fmt: skip

    def compute_output_shape(self, input_shape):
        return tuple(input_shape), tuple(input_shape[:-1])

    # ---------------------------------------------------------------------- forward
    def codes(self, z: tf.Tensor) -> tf.Tensor:
        """The nearest code of each vector of z `[..., D]`: int32 `[...]`."""
        return nearest_codes(z, tf.cast(self.codebook.value, z.dtype))

    def lookup(self, codes: tf.Tensor) -> tf.Tensor:
        """The code vectors e_k of int `codes` `[...]`: `[..., D]`."""
        return tf.gather(self.codebook.value, tf.cast(codes, tf.int32))

    def call(self, z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`(z_st, codes)`: the straight-through quantised z (value z_q, gradient to z) and
        the codes."""
        codes = self.codes(z)
        z_q = tf.cast(self.lookup(codes), z.dtype)
        return z + tf.stop_gradient(z_q - z), codes

    @staticmethod
    def losses_per_example(z: tf.Tensor, z_q: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`(commitment, codebook)`, each `[batch]`: ||z - sg(z_q)||^2 and ||sg(z) - z_q||^2
        summed over every axis after the batch axis (equal values, different gradients)."""
        axes = list(range(1, len(z.shape)))
        commitment = tf.reduce_sum(tf.square(z - tf.stop_gradient(z_q)), axis=axes)
        codebook = tf.reduce_sum(tf.square(tf.stop_gradient(z) - z_q), axis=axes)
        return commitment, codebook

    # ---------------------------------------------------------------------- updates
    def statistics(self, z: tf.Tensor, codes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """This replica's `(n, s)`: assignments per code `[K]` and sums of the assigned
        vectors `[K, D]` (one-hot^T z)."""
        flat = tf.reshape(tf.cast(z, tf.float32), [-1, self.code_dim])
        one_hot = tf.one_hot(tf.reshape(codes, [-1]), self.codebook_size, dtype=tf.float32)
        return tf.reduce_sum(one_hot, axis=0), tf.matmul(one_hot, flat, transpose_a=True)

    def restart_candidates(self, z, seed, offset, total) -> tf.Tensor:
        """One encoder output per code `[K, D]`, drawn uniformly from the global batch's
        `total * P` vectors (P per example) with `seed` (the same on every replica); this
        replica fills the draws that fall in its rows (examples `offset..offset+B`), zeros
        elsewhere, so that the replicas' sum is the draw of one device."""
        flat = tf.reshape(tf.cast(z, tf.float32), [-1, self.code_dim])
        per_example = int(np.prod(z.shape[1:-1]))  # positions per example, static
        index = tf.random.stateless_uniform(
            [self.codebook_size], seed, minval=0, maxval=tf.maximum(total * per_example, 1),
            dtype=tf.int32, alg="philox",
        )  # fmt: skip
        rows = tf.shape(flat)[0]
        local = index - offset * per_example
        mine = (local >= 0) & (local < rows)
        # a zero row after this replica's vectors: draws of other replicas (and an empty
        # replica batch) gather it
        padded = tf.concat([flat, tf.zeros([1, self.code_dim], flat.dtype)], axis=0)
        picked = tf.gather(padded, tf.where(mine, local, rows))
        return picked

    def updated_state(self, counts, sums, candidates) -> dict[str, tf.Tensor]:
        """The new codebook and EMA state from the global batch's `counts` `[K]`, `sums`
        `[K, D]` and restart `candidates` `[K, D]` (see the module docstring)."""
        g = self.decay
        new_counts = g * self.ema_counts.value + (1.0 - g) * counts
        dead = new_counts < self.restart_threshold
        state = {"ema_counts": tf.where(dead, tf.ones_like(new_counts), new_counts)}
        if self.ema:
            new_sums = g * self.ema_sums.value + (1.0 - g) * sums
            total = tf.reduce_sum(new_counts)
            smoothed = (new_counts + self.epsilon) / (total + self.codebook_size * self.epsilon)
            codebook = new_sums / (smoothed * total)[:, None]
            state["ema_sums"] = tf.where(dead[:, None], candidates, new_sums)
        else:
            codebook = self.codebook.value
        state["codebook"] = tf.where(dead[:, None], candidates, codebook)
        state["restarted"] = tf.reduce_sum(tf.cast(dead, tf.float32))
        return state

    def update(self, z, codes, seed, offset=0, total=None) -> tf.Tensor:
        """Applies one step's EMA update and restarts; returns the number of restarted codes.

        Call once per training step in the replica context, with this replica's encoder
        outputs z `[B, ..., D]`, their `codes`, a seed shared by the replicas, and the
        replica's place in the global batch (`offset`, `total` examples). The statistics are
        summed over the replicas (`all_reduce`), so every replica computes the same values.
        """
        total = tf.shape(z)[0] if total is None else total
        counts, sums = self.statistics(z, codes)
        candidates = self.restart_candidates(z, seed, offset, total)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            counts, sums, candidates = context.all_reduce("sum", [counts, sums, candidates])
        state = self.updated_state(counts, sums, candidates)
        self.ema_counts.assign(state["ema_counts"])
        self.codebook.assign(state["codebook"])
        if self.ema:
            self.ema_sums.assign(state["ema_sums"])
        return state["restarted"]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "codebook_size": self.codebook_size,
                "code_dim": self.code_dim,
                "codebook_update": self.codebook_update,
                "decay": self.decay,
                "epsilon": self.epsilon,
                "restart_threshold": self.restart_threshold,
                "seed": self.seed,
            }
        )
        return config


def perplexity(counts: np.ndarray | tf.Tensor) -> tf.Tensor:
    """exp(H(p)), p = counts / sum(counts): the effective number of codes in use (1..K)."""
    counts = tf.cast(counts, tf.float32)
    p = counts / tf.maximum(tf.reduce_sum(counts), 1e-12)
    entropy = -tf.reduce_sum(tf.where(p > 0, p * tf.math.log(tf.maximum(p, 1e-30)), 0.0))
    return tf.exp(entropy)


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class CodebookUsage(keras.metrics.Metric):
    """Counts the codes assigned since the last reset; reports `perplexity` = exp(H(p)) of
    their frequencies (effective codes in use) or `usage` = the fraction of the K codes used
    at least once. Summed over replicas (the counts are sum-aggregated).

    Args:
        codebook_size: K.
        statistic: `"perplexity"` or `"usage"`.
        name: The metric's name (defaults to `statistic`).
    """

    def __init__(self, codebook_size: int, statistic: str = "perplexity", name=None, **kwargs):
        if statistic not in ("perplexity", "usage"):
            raise ValueError(
                f"statistic must be 'perplexity' or 'usage'. Received: statistic={statistic!r}"
            )
        super().__init__(name=name or statistic, **kwargs)
        self.codebook_size = check_positive_int("codebook_size", codebook_size)
        self.statistic = statistic
        self.counts = self.add_variable(
            shape=(self.codebook_size,), initializer="zeros", name="counts"
        )

    def update_state(self, codes, sample_weight=None):
        del sample_weight
        codes = tf.reshape(tf.cast(codes, tf.int32), [-1])
        one_hot = tf.one_hot(codes, self.codebook_size, dtype=tf.float32)  # XLA-friendly
        self.counts.assign_add(tf.reduce_sum(one_hot, axis=0))

    def result(self):
        if self.statistic == "usage":
            return tf.reduce_mean(tf.cast(self.counts.value > 0, tf.float32))
        return perplexity(self.counts.value)

    def get_config(self):
        return {"codebook_size": self.codebook_size, "statistic": self.statistic,
                "name": self.name}  # fmt: skip
