"""BatchNorm: Keras' BatchNormalization, trained on conv feature maps by TensorFlow's (or PyTorch's) one-op
batch-norm kernel.

(TensorFlow calls that kernel "fused"; it is unrelated to our builders' ``fused=True``, which folds
BatchNorm into the layer before it for deployment.)
"""

import math

import keras
from keras import ops

from .remat import Rematerializable, assign_or_collect, collecting_updates

register = keras.saving.register_keras_serializable(package="keras_evit")


@register
class BatchNorm(Rematerializable, keras.layers.BatchNormalization):
    """keras ``BatchNormalization`` (same variables, config and statistics) that trains a 4-D channels-last
    map with TensorFlow's one-op kernel (``tf.nn.fused_batch_norm``), as tf.keras 2 did, and on the PyTorch
    backend with PyTorch's (``torch.nn.functional.batch_norm``), as timm's models train.

    Keras 3 writes training-mode BN as moments + normalize: ~20 ops forward and more backward, several
    full passes over the map and broadcasts that TensorFlow materializes. On this CPU that is a third
    of an M0 training step; the one-op kernel is 3x faster (docs/benchmarks.md). On PyTorch, where each
    of those ops is dispatched eagerly, M0 trains ~20% faster with it. Inference, JAX, XLA on CPU,
    masks, synchronized (cross-replica) statistics and renorm take Keras' path.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(inputs, training=training, mask=mask)
        if not (mask is None and self._fusable(inputs)):
            if collecting_updates():
                return self._call_handing_out_statistics(inputs, mask)
            return super().call(inputs, training=training, mask=mask)
        if keras.config.backend() == "torch":
            return self._torch_training_call(inputs)
        import tensorflow as tf

        x = ops.cast(inputs, "float32")  # as Keras does: statistics in float32 under mixed precision
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"), epsilon=self.epsilon,
            data_format="NHWC", is_training=True)
        static = x.shape[:3]
        count = (float(math.prod(static)) if None not in static
                 else ops.cast(ops.prod(ops.shape(x)[:3]), "float32"))
        variance = variance * ((count - 1.0) / ops.maximum(count, 1.0))  # the kernel's is Bessel-corrected
        momentum = self.momentum
        assign_or_collect(self.moving_mean,
                          self.moving_mean * momentum + ops.cast(mean, self.moving_mean.dtype) * (1 - momentum))
        assign_or_collect(self.moving_variance, self.moving_variance * momentum
                          + ops.cast(variance, self.moving_variance.dtype) * (1 - momentum))
        return ops.cast(y, self.compute_dtype)

    def _torch_training_call(self, inputs):
        """PyTorch's one-op kernel, which takes a channels-last map as it is (a permuted view, no copy). It updates
        running statistics itself with Keras' momentum, but from the unbiased batch variance; Keras keeps the
        biased one, recovered here from the same update: new = m * old + (updated - m * old) * (n - 1) / n."""
        import torch

        x = ops.cast(inputs, "float32")  # as Keras does: statistics in float32 under mixed precision
        count = math.prod(x.shape[:3])
        momentum = self.momentum
        with torch.no_grad():  # copies: the kernel writes into them, the variables are assigned below
            old_mean = ops.cast(self.moving_mean, "float32").detach()
            old_variance = ops.cast(self.moving_variance, "float32").detach()
            mean, variance = old_mean.clone(), old_variance.clone()
        y = torch.nn.functional.batch_norm(
            x.permute(0, 3, 1, 2), mean, variance, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"),
            training=True, momentum=1.0 - momentum, eps=self.epsilon)
        with torch.no_grad():
            kept = momentum * old_variance
            variance = kept + (variance - kept) * ((count - 1) / count)
        assign_or_collect(self.moving_mean, ops.cast(mean, self.moving_mean.dtype))
        assign_or_collect(self.moving_variance, ops.cast(variance, self.moving_variance.dtype))
        return ops.cast(y.permute(0, 2, 3, 1), self.compute_dtype)

    def _call_handing_out_statistics(self, inputs, mask):
        """Keras' training path inside a rematerialized call: Keras assigns the new moving statistics, so it runs in a
        scope that records assignments, and they are handed to the call (the one-op path hands them itself)."""
        with keras.StatelessScope(state_mapping=[(v, v) for v in self.variables]) as scope:
            outputs = super().call(inputs, training=True, mask=mask)
        for variable in self.non_trainable_variables:  # the moving statistics (and renorm's, if on)
            assign_or_collect(variable, scope.get_current_value(variable))
        return outputs

    def _fusable(self, inputs):
        if not (len(inputs.shape) == 4 and self.axis in (-1, 3) and self.scale and self.center
                and not self.synchronized and not self.renorm):
            return False
        backend = keras.config.backend()
        if backend == "tensorflow":
            from ..compat import xla_on_cpu

            return not xla_on_cpu()  # XLA:CPU expands both forms; Keras' is 15% faster there
        # PyTorch's kernel refuses a batch of one value per channel, where Keras' variance is 0
        return backend == "torch" and None not in inputs.shape and math.prod(inputs.shape[:3]) > 1
