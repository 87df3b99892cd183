"""AdamW with adaptive gradient clipping (AGC), as the paper trains; registered on ``import keras_evit``
so that a training run's ``model.keras`` (whose compile config names it) loads anywhere."""

import keras
from keras import ops

from .compat import optimizer_trainable_variables


def _unit_axes(shape):
    """The axes a unit's L2 norm sums over (timm AGC). Keras kernels keep output units on the last axis,
    except depthwise kernels (kh, kw, C, 1), whose units are the channels (axis 2); vectors are one unit."""
    if len(shape) <= 1:
        return tuple(range(len(shape)))
    if len(shape) == 4 and shape[-1] == 1:
        return (0, 1, 3)
    return tuple(range(len(shape) - 1))


def adaptive_clip(grads, variables, clip, eps=1e-3):
    """Each gradient unit scaled down to at most ``clip`` times its weight unit's norm (floored at ``eps``).

    Weights of one shape are clipped together, stacked: a dozen ops per shape instead of per weight (M0 has
    354 weights in 43 shapes), which takes seconds off tracing the training step."""
    out = list(grads)
    groups = {}
    for i, g in enumerate(grads):
        if g is not None:
            groups.setdefault((tuple(g.shape), str(g.dtype)), []).append(i)
    for (shape, _), members in groups.items():
        axes = tuple(a + 1 for a in _unit_axes(shape))  # axis 0: the stacked weights
        g = ops.stack([grads[i] for i in members])
        v = ops.stack([ops.cast(variables[i], g.dtype) for i in members])
        p_norm = ops.maximum(ops.sqrt(ops.sum(ops.square(v), axis=axes, keepdims=True)), eps)
        g_norm = ops.sqrt(ops.sum(ops.square(g), axis=axes, keepdims=True))
        max_norm = p_norm * clip
        scale = ops.where(g_norm > max_norm, max_norm / ops.maximum(g_norm, 1e-6), ops.ones_like(g_norm))
        for i, clipped in zip(members, ops.unstack(g * scale)):
            out[i] = clipped
    return out


@keras.saving.register_keras_serializable(package="keras_evit")
class AGCAdamW(keras.optimizers.AdamW):
    """AdamW whose gradients are adaptively clipped per unit before the update (clip 0.02 in the paper).

    Without clipping its updates are Keras' AdamW's. On TensorFlow it builds each step's shared values
    (learning rate, bias corrections, decay) once instead of once per weight (per weight under a
    distribution strategy, as Keras does), and updates each weight with TensorFlow's Adam kernel (the
    kernel tf.keras 2's Adam ran): its part of M0's traced training step holds a fifth of the ops of Keras'
    AdamW, faster to trace and run, lighter in memory. The kernel computes Keras' expressions in Keras'
    order; it rounds 1 - beta in float32 where Keras rounds it from Python's double, so with the default
    betas the updates differ in the last bits (identical bits where 1 - beta is exact in float32, e.g.
    beta_1=0.875). On PyTorch it updates all weights at once as Keras' own AdamW does there (same bits)."""

    def __init__(self, agc_clip=None, **kwargs):
        super().__init__(**kwargs)
        self.agc_clip = agc_clip
        self._step_learning_rate = None
        self._step_scalars = None

    @property
    def learning_rate(self):
        """The step's learning rate. Within one update it is computed once: AdamW's weight decay asks for it
        once per decayed weight, which with a schedule (warm-up, cosine) built the schedule's ops 118 times
        into M0's training step (3 s of its trace); the value is the same."""
        if self._step_learning_rate is not None:
            return self._step_learning_rate
        return keras.optimizers.AdamW.learning_rate.fget(self)

    @learning_rate.setter
    def learning_rate(self, value):
        keras.optimizers.AdamW.learning_rate.fset(self, value)

    def apply(self, grads, trainable_variables=None):
        if self.agc_clip:
            variables = trainable_variables if trainable_variables is not None else \
                optimizer_trainable_variables(self)
            grads = adaptive_clip(list(grads), list(variables), self.agc_clip)
        self._step_learning_rate = self.learning_rate  # read before the step counter moves, as AdamW does
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._step_learning_rate = None

    def _kernel_updates(self):
        """Whether each weight is updated by TensorFlow's Adam kernel (not for AMSGrad, which it lacks)."""
        return keras.backend.backend() == "tensorflow" and not self.amsgrad

    def _hoisted(self, variables):
        """Whether this step's shared values are computed once for all weights: outside a distribution
        strategy (there Keras updates each weight in a cross-replica context of its own), for weights of one
        dtype."""
        if not self._kernel_updates():
            return False
        import tensorflow as tf

        return not tf.distribute.has_strategy() and len({keras.backend.standardize_dtype(v.dtype)
                                                         for v in variables}) == 1

    def _adam_scalars(self, learning_rate, dtype):
        """The Adam kernel's scalar inputs, with Keras' own expressions."""
        local_step = ops.cast(self.iterations + 1, dtype)
        return (ops.cast(learning_rate, dtype),
                ops.power(ops.cast(self.beta_1, dtype), local_step),
                ops.power(ops.cast(self.beta_2, dtype), local_step),
                *(ops.convert_to_tensor(c, dtype) for c in (self.beta_1, self.beta_2, self.epsilon)))

    def _apply_weight_decay(self, variables):
        if not self._hoisted(variables):  # else update_step decays each weight just before its update
            super()._apply_weight_decay(variables)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        """Computes the step's scalars once (Keras' AdamW builds them again for every weight)."""
        if keras.backend.backend() == "torch":
            return self._torch_update_step(grads, trainable_variables, learning_rate)
        if not self._hoisted(trainable_variables):
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        dtype = trainable_variables[0].dtype
        decay = None if self.weight_decay is None else ops.cast(self.weight_decay, dtype)
        self._step_scalars = (self._adam_scalars(learning_rate, dtype), decay)
        try:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._step_scalars = None

    def _torch_update_step(self, grads, variables, learning_rate):
        """Every weight in a few multi-tensor passes (``torch._foreach_*``), with the expressions of Keras' own
        AdamW on PyTorch. Keras switches to that implementation only for its own class, so a subclass would update
        weight by weight, a dozen eagerly dispatched ops each (M0: 354 weights). The weight decay before it is
        already Keras' multi-tensor one."""
        import torch

        with torch.no_grad():
            values = [v.value for v in variables]
            dtype = values[0].dtype
            lr = ops.cast(learning_rate, dtype)
            local_step = ops.cast(self.iterations + 1, dtype)
            beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
            beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
            alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            m = [self._momentums[self._get_variable_index(v)].value for v in variables]
            v = [self._velocities[self._get_variable_index(w)].value for w in variables]
            torch._foreach_mul_(m, self.beta_1)
            torch._foreach_add_(m, grads, alpha=1 - self.beta_1)
            torch._foreach_mul_(v, self.beta_2)
            torch._foreach_add_(v, torch._foreach_mul(grads, grads), alpha=1 - self.beta_2)
            if self.amsgrad:
                v_hat = [self._velocity_hats[self._get_variable_index(w)].value for w in variables]
                torch._foreach_maximum_(v_hat, v)
                v = v_hat
            torch._foreach_add_(values, torch._foreach_div(torch._foreach_mul(m, alpha),
                                                           torch._foreach_add(torch._foreach_sqrt(v), self.epsilon)),
                                alpha=-1)

    def update_step(self, gradient, variable, learning_rate):
        if not self._kernel_updates():
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        if self._step_scalars is None:  # under a strategy: Keras has decayed the weight already
            scalars = self._adam_scalars(learning_rate, variable.dtype)
        else:
            scalars, decay = self._step_scalars
            if decay is not None and self._use_weight_decay(variable):  # Keras' decoupled decay, same expression
                variable.assign(variable - variable * decay * scalars[0])
        lr, beta_1_power, beta_2_power, beta_1, beta_2, epsilon = scalars
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        # one pass over the weight instead of a dozen graph ops, each with a weight-sized temporary (under a
        # strategy, inside Keras' per-device update, the handles are that device's copies)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power, beta2_power=beta_2_power,
            lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
            grad=tf.cast(tf.convert_to_tensor(gradient), variable.dtype))

    def get_config(self):
        return {**super().get_config(), "agc_clip": self.agc_clip}
