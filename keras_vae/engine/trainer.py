"""The training machinery shared by keras_vae's models, apart from any one model.

`ExactReplicaTrainer` is a `keras.Model` base class whose `train_step` / `test_step` make one
device, N replicas (`MirroredStrategy`) and N workers (`MultiWorkerMirroredStrategy`) train
exactly the same model, with XLA where it can run. A model built on it implements two hooks:

* `noise_shape() -> (num_samples, noise_size)`: the standard normal noise one example needs;
* `compute_objective(x, noise, step) -> (loss, terms)`: the scalar batch-mean loss and the
  per-example terms (`[batch]` each, named by `metric_names`) that `fit` reports.

and optionally `after_update(terms, seed, position)`, run after the optimizer's update of each
train step (a VQ-VAE's codebook, a FactorVAE's discriminator with its own optimizer), with
`held_out_terms` its no-update counterpart in `test_step`; both may return more terms to report.

What the trainer does around them:

* Split-invariant noise: every replica draws the *global* batch's eps `[L, B, noise_size]`
  from one Philox seed and keeps its own rows (`standard_noise`), so an example gets the same
  eps whatever the replica layout.
* Batch shares: each replica's mean loss is weighted by b_r / B, its share of the global
  batch, so the optimizer's sum of the replicas' gradients is the global mean's gradient, also
  for uneven splits and empty replica batches.
* XLA (`keras_vae.distribute.resolve_xla`): `"step"` lets Keras compile the whole step on one
  device; `"replica"` compiles the replica's loss and gradients as a pure function of the
  variables' values (`keras.StatelessScope`), because Keras' own `jit_compile` fails under
  strategies (keras issue 19005); the all-reduce and the optimizer stay outside. A bfloat16
  model on CPUs trains without XLA (`"off"`: only graph-mode MatMuls reach AMX), with Adam
  as one fused kernel per variable wherever the update runs outside XLA (`FusedAdam`).
* Keras 3.15 work-arounds: the model built before the first trace, and no extra dataset
  iterator before a distributed `fit` (`_maybe_symbolic_build`); `[1]`-shaped logs under
  multi-worker training (keras 20585).
* Metrics: a `Mean` per reported term, weighted per example, plus `loss`.
* Fused steps: with `"step"` XLA and `steps_per_execution` k > 1, one XLA computation runs
  the k steps as a loop over k stacked batches (`make_train_function`), instead of Keras'
  graph loop that launches one XLA computation per step. Same steps, same noise; measured
  about 10% less CPU time per example on the 784-500-20 model (benchmarks/README.md).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_vae.engine import distribute, fused_adam

#: `compile()`'s steps per execution on one device: `model.fit` in Python then runs the fast
#: path of `keras-vae train` (Keras' default of 1 cost 1.3x its CPU time per example on the
#: 784-500-20 model: 108.9 against 83.7 us; benchmarks/README.md).
DEFAULT_STEPS_PER_EXECUTION = 10


class ExactReplicaTrainer(keras.Model):
    """Base class of keras_vae's models; see the module docstring for the two hooks.

    Args:
        metric_names: Names of the per-example terms `compute_objective` returns.
        seed: Seed of the model's own noise; None draws a random seed.
        **kwargs: Standard `keras.Model` arguments.
    """

    #: Names of the attributes holding the model's nested layers: `get_config` serializes
    #: them (with `seed`) and `from_config` deserializes them before calling the constructor.
    _PARTS: tuple[str, ...] = ()

    def __init__(self, metric_names=("elbo",), seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="noise_seed")
        self.trackers = [keras.metrics.Mean(name=n) for n in ("loss", *metric_names)]
        self.xla = "off"  # set by compile()
        self._compiled_replica_step = None
        self.fuse_steps = True  # see make_train_function; False: Keras' own loop

    # ------------------------------------------------------------------------ the hooks
    def noise_shape(self) -> tuple[int, int]:
        raise NotImplementedError

    def compute_objective(self, x, noise, step):
        raise NotImplementedError

    # ------------------------------------------------------------------------- compiling
    def compile(
        self,
        optimizer="adam",
        jit_compile: bool | str | None = None,
        steps_per_execution: int | None = None,
        **kwargs,
    ):
        """Configures training; `jit_compile=None` means keras_vae's XLA policy.

        `self.xla` records the result: `"step"` on one device, `"replica"` under several
        replicas, `"off"` when not wanted or not possible, and by default for a model whose
        policy computes in bfloat16 on CPUs (`distribute.resolve_xla`). Where the optimizer's
        update runs outside XLA (`"replica"`, `"off"`), a plain `keras.optimizers.Adam` (or
        `"adam"`) without state is replaced by `FusedAdam` with the same config: the same
        update in one TF kernel per variable (`keras_vae.engine.fused_adam`); pass another
        optimizer (any subclass of Adam) to keep it. `steps_per_execution=None` means
        `DEFAULT_STEPS_PER_EXECUTION` on one device (with XLA, fused steps) and 1 under
        several replicas, as `keras-vae train` runs; give 1 for Keras' own default. `loss`
        must not be given: the model's objective is its loss.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                f"{type(self).__name__}.compile() takes no `loss`: the model minimises its "
                f"objective. Received: loss={kwargs['loss']!r}"
            )
        self.xla = distribute.resolve_xla(
            jit_compile, self.distribute_strategy, self.dtype_policy.compute_dtype
        )
        if self.xla != "step":  # the update runs as TF ops, not fused by XLA
            optimizer = fused_adam.fused_equivalent(optimizer)
        self._compiled_replica_step = None  # made on first use
        if steps_per_execution is None:
            one_device = self.distribute_strategy.num_replicas_in_sync == 1
            steps_per_execution = DEFAULT_STEPS_PER_EXECUTION if one_device else 1
        super().compile(
            optimizer=optimizer,
            jit_compile=self.xla == "step",
            steps_per_execution=steps_per_execution,
            **kwargs,
        )

    # ------------------------------------------------------------------- serialization
    def get_config(self):
        config = super().get_config()
        for name in self._PARTS:
            config[name] = keras.saving.serialize_keras_object(getattr(self, name))
        config["seed"] = self.seed
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in cls._PARTS:
            if name in config:
                config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)

    def get_compile_config(self):
        if not self.compiled:
            return {}
        return {"optimizer": keras.saving.serialize_keras_object(self.optimizer)}

    def compile_from_config(self, config):
        """Restores the optimizer of a saved model so that `fit` can continue."""
        self.compile(optimizer=keras.saving.deserialize_keras_object(config["optimizer"]))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------------------ noise
    def _stateless_seed(self, seed=None, fold_in_replica: bool = True) -> tf.Tensor:
        """A `[2]` int32 seed: from `seed` if given, else the next state of the model's
        `SeedGenerator`, with the replica id folded in unless `fold_in_replica` is False."""
        if seed is not None:
            return tf.constant([seed, 0], dtype=tf.int32)
        state = tf.cast(self.seed_generator.next() % (2**31 - 1), tf.int32)
        return self._fold_in_replica(state) if fold_in_replica else state

    @staticmethod
    def _fold_in_replica(seed: tf.Tensor) -> tf.Tensor:
        """`seed` made distinct per replica (unchanged outside a multi-replica context)."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return seed
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        return seed + tf.stack([tf.constant(0, tf.int32), replica + 1])

    @staticmethod
    def _batch_position(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(offset, B): where this replica's examples start in the global batch, and its
        size. A strategy splits a global batch into consecutive parts in replica order."""
        local = tf.shape(x)[0]
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return tf.zeros_like(local), local
        sizes = context.all_gather(local[None], axis=0)  # [replicas], in replica order
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        before = tf.range(tf.shape(sizes)[0]) < replica
        return tf.reduce_sum(tf.where(before, sizes, 0)), tf.reduce_sum(sizes)

    def standard_noise(self, x, seed, num_samples=None, position=None) -> tf.Tensor:
        """eps ~ N(0, I), `[L, batch, noise_size]`, the same for each example whatever the
        replica layout: every replica draws the global batch's noise from the same seed with
        the Philox algorithm and keeps its own rows. (Inside an XLA-compiled step XLA's Philox
        kernel draws other numbers from the same seed; with `xla="replica"` the noise is drawn
        outside the compiled function.) `position`: `_batch_position(x)` when known."""
        default_samples, size = self.noise_shape()
        num_samples = num_samples or default_samples
        offset, total = position if position is not None else self._batch_position(x)
        eps = tf.random.stateless_normal(
            tf.stack([num_samples, total, size]), seed=seed, alg="philox"
        )
        return eps[:, offset : offset + tf.shape(x)[0]]

    # ---------------------------------------------------------------------------- steps
    @staticmethod
    def _unpack(data):
        """The model's inputs in a batch of `fit`: x of x, (x,), (x, y) or (x, y,
        sample_weight); y is ignored. (A conditional model returns (x, y): its inputs.)"""
        return data[0] if isinstance(data, (tuple, list)) else data

    @staticmethod
    def _examples(inputs) -> tf.Tensor:
        """The examples x among the inputs (their first tensor): the batch size, the noise
        and the build follow x; any other input (a condition) only rides along."""
        return tf.nest.flatten(inputs)[0]

    def _training_step_count(self):
        return self.optimizer.iterations if self.optimizer is not None else tf.constant(0)

    def _update_metrics(self, loss, terms: dict) -> dict:
        # every metric is a mean over examples: the batch-mean loss counts once per example,
        # so that replicas with uneven shares and a short last batch are weighted exactly
        loss_tracker, *term_trackers = self.trackers
        batch_size = tf.cast(tf.shape(terms[term_trackers[0].name])[0], loss.dtype)
        loss_tracker.update_state(loss, sample_weight=batch_size)
        for tracker in term_trackers:
            tracker.update_state(terms[tracker.name])
        return {m.name: m.result() for m in self.metrics}

    def _loss_and_gradients(self, x, share, noise, step, values=None):
        """The replica's loss, terms and the gradients of `share * loss`.

        With `values` (one tensor per trainable variable) the model runs statelessly on them
        and the gradients are taken with respect to them: a pure function for XLA.
        """
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            if values is None:
                loss, terms = self.compute_objective(x, noise, step)
                sources, extra_losses = variables, self.losses
            else:
                tape.watch(values)
                mapping = list(zip(variables, values, strict=True))
                with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                    loss, terms = self.compute_objective(x, noise, step)
                    extra_losses = self.losses + scope.losses
                sources = values
            if extra_losses:
                loss = loss + tf.add_n(extra_losses)
            scaled_loss = loss * tf.cast(share, loss.dtype)
            if self.optimizer is not None:  # a LossScaleOptimizer (mixed_float16) scales it up
                scaled_loss = self.optimizer.scale_loss(scaled_loss)  # and its apply() down
        return loss, terms, tape.gradient(scaled_loss, sources)

    def _replica_loss_and_gradients(self, x, share, noise, step):
        """`_loss_and_gradients` XLA-compiled on the variables' values (xla="replica")."""
        if self._compiled_replica_step is None:

            def pure_step(values, x, share, noise, step):
                return self._loss_and_gradients(x, share, noise, step, values=values)

            self._compiled_replica_step = tf.function(pure_step, jit_compile=True)
        values = [tf.convert_to_tensor(v.value) for v in self.trainable_variables]
        return self._compiled_replica_step(values, x, share, noise, step)

    def train_step(self, data):
        inputs = self._unpack(data)
        x = self._examples(inputs)
        if not self.built:  # fit() without a prior call: build here so build_config is saved
            self.build(x.shape)
        seed = self._stateless_seed(fold_in_replica=False)  # the same on every replica
        position = self._batch_position(x)
        noise = self.standard_noise(x, seed, position=position)
        # b_r / B: the optimizer sums the replicas' gradients of share * (mean loss)
        share = tf.cast(tf.shape(x)[0], tf.float32) / tf.cast(position[1], tf.float32)
        step = tf.convert_to_tensor(self._training_step_count())
        if self.xla == "replica":
            loss, terms, gradients = self._replica_loss_and_gradients(inputs, share, noise, step)
        else:
            loss, terms, gradients = self._loss_and_gradients(inputs, share, noise, step)
        self.optimizer.apply(gradients, self.trainable_variables)
        terms = _with_extra_terms(terms, self.after_update(terms, seed, position))
        return self._step_outputs(self._update_metrics(loss, terms))

    def after_update(self, terms: dict, seed: tf.Tensor, position) -> dict | None:
        """Hook run after the optimizer's update in each train step (nothing by default):
        a model's own updates of state that its loss does not train (a VQ-VAE's codebook, a
        FactorVAE's discriminator with its own optimizer).

        Args:
            terms: The step's terms from `compute_objective`.
            seed: The step's `[2]` seed, the same on every replica.
            position: `(offset, B)` of this replica's examples in the global batch.

        Returns:
            None, or more per-example terms `[B]` to report (metrics named in
            `metric_names` that `compute_objective` does not give).
        """
        del terms, seed, position  # (a body of code: AutoGraph cannot convert a bare docstring)
        return None

    def held_out_terms(self, terms: dict, seed: tf.Tensor, position) -> dict | None:
        """`test_step`'s counterpart of `after_update`: the same extra terms, without any
        update (None by default). Arguments as for `after_update`."""
        del terms, seed, position
        return None

    # ------------------------------------------------------------------- fused steps
    def _fuses_steps(self) -> bool:
        """Whether `fit` runs each execution's k steps as one XLA computation.

        Not for models with convolutions: XLA's CPU backend runs a convolution inside a while
        loop far slower than the same convolution at the top level of a computation (measured
        here: a conv VAE's 20 steps took 82 s fused against 5.2 s one step per launch; the
        known XLA problem of jax-ml/jax#12868), so those keep one XLA launch per step.
        """
        return (
            self.fuse_steps
            and self.xla == "step"
            and self.steps_per_execution > 1
            and not self.run_eagerly
            and self.distribute_strategy.num_replicas_in_sync == 1
            and not _has_convolutions(self)
        )

    def make_train_function(self, force=False):
        """Keras' train function, or with `_fuses_steps()` one that runs k steps per call in
        one XLA computation.

        The fused function takes k batches from the iterator (a small graph of its own); when
        all k exist and have one shape it stacks them and runs `train_step` on each in an XLA
        while loop (the steps, their order and their noise are those of Keras' loop).
        Otherwise (the end of the data, a short last batch) it runs the batches it got one
        XLA-compiled step at a time. Each of the two step functions is traced when first
        needed: a data set of fewer than k batches per epoch never traces the loop, a run
        whose batches all fill k steps never traces the single step (tracing both up front
        cost a 2-epoch run on 256 tiny images 0.5 s of its 5.9). Other inputs than a dataset
        iterator (`train_on_batch`) go to Keras' function.

        These functions are traced without AutoGraph: the train step's control flow is
        Python's on Python values, or explicit (`tf.cond`, `tf.while_loop`), as XLA needs
        anyway; converting the step's ~100 functions to AutoGraph's form cost 1.5 s of the
        start-up (a `tf.Tensor` used as a Python bool would now fail loudly at the trace).
        """
        if self.train_function is not None and not force:
            return self.train_function
        self._build_optimizer()
        super().make_train_function(force=force)
        if self._fuses_steps():
            self.train_function = self._fused_train_function(self.train_function)
        return self.train_function

    def _build_optimizer(self) -> None:
        """Creates the optimizer's slots (Adam's moments) of a built model before the train
        function is first traced. On one device Keras 3.15 builds them inside that trace, and a
        `tf.function` whose first trace creates variables is traced a second time: the whole
        train step (and the fused loop around it) twice, 1.7 s of a 13 s start-up here."""
        optimizer = self.optimizer
        if optimizer is None or optimizer.built or not self.built:
            return
        with self.distribute_strategy.scope():
            optimizer.build(self.trainable_variables)

    def _initial_logs(self) -> dict:
        return self._step_outputs({m.name: tf.zeros_like(m.result()) for m in self.metrics})

    def _fused_train_function(self, keras_function):
        steps = self.steps_per_execution

        def one_step(data):
            return self.distribute_strategy.run(self.train_step, args=(data,))

        def fused_steps(batches):
            stacked = tf.nest.map_structure(lambda *t: tf.stack(t), *batches)

            def body(index, logs):
                del logs
                return index + 1, one_step(tf.nest.map_structure(lambda t: t[index], stacked))

            initial = (tf.constant(0), self._initial_logs())
            return tf.while_loop(lambda index, _: index < steps, body, initial)[1]

        @tf.function(reduce_retracing=True, autograph=False)
        def next_batches(iterator):
            optionals = [iterator.get_next_as_optional() for _ in range(steps)]
            return _same_shapes(optionals), optionals

        compiled = {}  # each traced when first needed: a small data set never fills k steps

        def compiled_once(name, step_function):
            if name not in compiled:
                compiled[name] = tf.function(
                    step_function, jit_compile=True, reduce_retracing=True, autograph=False
                )
            return compiled[name]

        def function(iterator):
            if not isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
                return keras_function(iterator)
            full, optionals = next_batches(iterator)
            if full:
                batches = [optional.get_value() for optional in optionals]
                return compiled_once("fused", fused_steps)(batches)
            logs = None  # the end of the data or a short batch: one step at a time
            for optional in optionals:
                if optional.has_value():
                    logs = compiled_once("single", one_step)(optional.get_value())
            if logs is None:
                raise StopIteration
            return logs

        return function

    def test_step(self, data):
        inputs = self._unpack(data)
        seed = self._stateless_seed(fold_in_replica=False)
        position = self._batch_position(self._examples(inputs))
        noise = self.standard_noise(self._examples(inputs), seed, position=position)
        loss, terms = self.compute_objective(inputs, noise, self._training_step_count())
        terms = _with_extra_terms(terms, self.held_out_terms(terms, seed, position))
        return self._step_outputs(self._update_metrics(loss, terms))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds the model before `fit`, `evaluate` and `predict` trace, without reading data.

        Keras 3.15 builds an unbuilt model inside the first trace of the train function when
        no strategy was set, and a `tf.function` whose first trace creates variables is traced
        a second time, the train step with it (the first one-epoch `fit` of a 1200-1200 MLP
        VAE on 500 images took 5.8-6.7 s that way, 4.5 s built first).
        Under a strategy it takes a sample batch from a new iterator over the distributed
        dataset and averages it over the replicas; the extra iterator advances a reshuffling
        dataset by one epoch (a strategy would train on other batches than one device), and
        the average fails on uneven splits. The model knows its input shape (`image_shape`),
        so a zero batch of that shape serves in both cases. The model's own `build` runs
        first, outside Keras' stateless symbolic pass: a part may create an optimizer there
        (the FactorVAE discriminator's Adam).
        """
        del iterator, data_batch
        batch = self._zero_batch()
        with self.distribute_strategy.scope():
            if not self.built:
                inputs = keras.utils.unpack_x_y_sample_weight(batch)[0]
                self.build(tf.nest.map_structure(lambda t: (None, *t.shape[1:]), inputs))
            self._symbolic_build(data_batch=batch)

    def _zero_batch(self):
        """A batch of one zero example as `fit` would give it (what `_maybe_symbolic_build`
        builds from)."""
        return tf.zeros((1, *self.image_shape), dtype=self.compute_dtype)

    def _step_outputs(self, logs: dict) -> dict:
        """Per-step logs, shaped `[1]` under multi-worker training: Keras 3.15 reduces them
        with `strategy.reduce(MEAN, axis=0)`, which fails on scalars (keras issue 20585)."""
        if distribute.is_multi_worker(self.distribute_strategy):
            return {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    @property
    def metrics(self):
        return list(self.trackers)


_CONVOLUTIONS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)


def _with_extra_terms(terms: dict, extra: dict | None) -> dict:
    """The step's terms with a hook's extra terms added (the hook's win)."""
    return terms if not extra else {**terms, **extra}


def _has_convolutions(model: keras.Model) -> bool:
    """Whether any layer of the model, nested ones included, is a Keras convolution."""
    return any(isinstance(layer, _CONVOLUTIONS) for layer in model._flatten_layers())


def _same_shapes(optionals) -> tf.Tensor:
    """True when every optional holds a value and all values have the first one's shapes."""
    has_all = tf.reduce_all([o.has_value() for o in optionals])

    def shapes_agree():
        flat = [tf.nest.flatten(o.get_value()) for o in optionals]
        same = [
            tf.reduce_all(tf.equal(tf.shape(t), tf.shape(first)))
            for values in flat[1:]
            for t, first in zip(values, flat[0], strict=True)
        ]
        return tf.reduce_all(same) if same else tf.constant(True)

    return tf.cond(has_all, shapes_agree, lambda: tf.constant(False))
