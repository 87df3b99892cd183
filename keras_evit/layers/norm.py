"""BatchNorm: Keras' BatchNormalization, trained on conv feature maps by TensorFlow's one-op batch-norm kernel.

(TensorFlow calls that kernel "fused"; it is unrelated to our builders' ``fused=True``, which folds
BatchNorm into the layer before it for deployment.)
"""

import keras
import numpy as np
from keras import ops

from .remat import Rematerializable, assign_or_collect, collecting_updates

register = keras.saving.register_keras_serializable(package="keras_evit")


@register
class BatchNorm(Rematerializable, keras.layers.BatchNormalization):
    """keras ``BatchNormalization`` (same variables, config and statistics) that trains a 4-D channels-last
    map with TensorFlow's one-op kernel (``tf.nn.fused_batch_norm``), as tf.keras 2 did.

    Keras 3 writes training-mode BN as moments + normalize: ~20 ops forward and more backward, several
    full passes over the map and broadcasts that TensorFlow materializes. On this CPU that is a third
    of an M0 training step; the one-op kernel is 3x faster (docs/benchmarks.md). Inference, other
    backends, XLA on CPU, masks, synchronized (cross-replica) statistics and renorm take Keras' path.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(inputs, training=training, mask=mask)
        if not (mask is None and self._fusable(inputs)):
            if collecting_updates():
                return self._call_handing_out_statistics(inputs, mask)
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = ops.cast(inputs, "float32")  # as Keras does: statistics in float32 under mixed precision
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"), epsilon=self.epsilon,
            data_format="NHWC", is_training=True)
        static = x.shape[:3]
        count = (float(np.prod(static)) if None not in static
                 else ops.cast(ops.prod(ops.shape(x)[:3]), "float32"))
        variance = variance * ((count - 1.0) / ops.maximum(count, 1.0))  # the kernel's is Bessel-corrected
        momentum = self.momentum
        assign_or_collect(self.moving_mean,
                          self.moving_mean * momentum + ops.cast(mean, self.moving_mean.dtype) * (1 - momentum))
        assign_or_collect(self.moving_variance, self.moving_variance * momentum
                          + ops.cast(variance, self.moving_variance.dtype) * (1 - momentum))
        return ops.cast(y, self.compute_dtype)

    def _call_handing_out_statistics(self, inputs, mask):
        """Keras' training path inside a rematerialized call: Keras assigns the new moving statistics, so it runs in a
        scope that records assignments, and they are handed to the call (the one-op path hands them itself)."""
        with keras.StatelessScope(state_mapping=[(v, v) for v in self.variables]) as scope:
            outputs = super().call(inputs, training=True, mask=mask)
        for variable in self.non_trainable_variables:  # the moving statistics (and renorm's, if on)
            assign_or_collect(variable, scope.get_current_value(variable))
        return outputs

    def _fusable(self, inputs):
        from ..compat import xla_on_cpu

        return (keras.config.backend() == "tensorflow" and len(inputs.shape) == 4
                and self.axis in (-1, 3) and self.scale and self.center
                and not self.synchronized and not self.renorm
                and not xla_on_cpu())  # XLA:CPU expands both forms; Keras' is 15% faster there
