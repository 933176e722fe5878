"""Adam as one fused kernel per variable: `FusedAdam`, and `fused_equivalent` that the trainer
uses to swap it in for Keras' Adam where a step runs without XLA.

Keras' `Adam.update_step` is about ten elementwise ops per variable. Under XLA they fuse into
one loop; without XLA (the bfloat16 step on a CPU, or a replica's update outside its XLA
cluster) each is a TensorFlow op with its own dispatch, about a third of the 784-500-20
model's step at batch 100 (benchmarks/README.md, "bfloat16 on an AMX CPU"). `FusedAdam` runs
the same update as TensorFlow's one-op `ResourceApplyAdam` kernel:

    m <- m + (1 - beta_1) (g - m),   v <- v + (1 - beta_2) (g^2 - v),
    w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon),

t the step count from 1: Keras' `Adam.update_step` (epsilon outside the square root, as
Keras has it). Everything else of Keras' optimizer (gradient clipping, weight decay, EMA,
gradient accumulation, learning-rate schedules, loss scaling) happens in the base class around
`update_step` and is untouched. AMSGrad is not fused (`fused_equivalent` keeps Keras' Adam).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_vae import registry


@keras.saving.register_keras_serializable(package=registry.PACKAGE)
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose per-variable update is TF's fused `ResourceApplyAdam`.

    Same arguments, state (float32 m and v next to float32 weights), config and update as
    Keras' Adam (see the module docstring); TensorFlow backend only. `amsgrad=True` is
    refused: use `keras.optimizers.Adam(amsgrad=True)`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError(
                "FusedAdam does not fuse AMSGrad. Received: amsgrad=True; use "
                "keras.optimizers.Adam(amsgrad=True) instead."
            )

    def update_step(self, gradient, variable, learning_rate):
        """One `ResourceApplyAdam` on `variable` and its m and v (see the module docstring)."""
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,  # a tf.Variable in Keras' (distributed) update, or a Keras one
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype),
        )


def fused_equivalent(optimizer):
    """`optimizer` resolved as Keras does (a name such as `"adam"`, a config or an instance),
    replaced by a `FusedAdam` with its config when it is exactly a `keras.optimizers.Adam`
    that has no state yet and does not use AMSGrad; otherwise returned unchanged (any other
    optimizer, a subclass of Adam, an Adam already built, or one whose config does not
    round-trip)."""
    optimizer = keras.optimizers.get(optimizer)
    if type(optimizer) is not keras.optimizers.Adam or optimizer.built or optimizer.amsgrad:
        return optimizer
    try:
        return FusedAdam.from_config(optimizer.get_config())
    except (TypeError, ValueError):  # e.g. a learning rate that is a plain callable
        return optimizer
