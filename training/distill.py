"""Knowledge distillation from any Keras teacher (DeiT-style soft or hard targets)."""

import keras
from keras import ops


def load_teacher(path):
    """A saved ``.keras`` teacher giving logits: a final softmax (an ``Activation``, a ``Softmax`` layer,
    or a head with ``activation="softmax"``, as a saved ``EfficientViTM5(weights="imagenet")`` ends) is
    removed, since the distillation losses take logits."""
    from keras_evit.weights.artifacts import is_softmax_output, load_keras_file, without_softmax

    teacher = load_keras_file(path)
    if is_softmax_output(teacher):
        print(f"distillation teacher {path} outputs probabilities: using the logits before its softmax")
    return without_softmax(teacher)


class Distiller(keras.Model):
    """Wraps a student; the loss mixes the labels' loss with the teacher's targets:
    ``(1 - alpha) * CE(labels) + alpha * D``, D = tau^2 * KL(teacher/tau || student/tau) (soft)
    or CE(argmax teacher) (hard). Saving/exporting uses ``student`` itself."""

    def __init__(self, student, teacher, kind="soft", alpha=0.5, tau=1.0, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("soft", "hard"):
            raise ValueError(f"distillation type must be soft or hard, got {kind!r}")
        self.student, self.teacher = student, teacher
        self.teacher.trainable = False
        self.kind, self.alpha, self.tau = kind, float(alpha), float(tau)

    def call(self, x, training=None):
        return self.student(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        base = super().compute_loss(x, y, y_pred, sample_weight, training)
        teacher_logits = ops.stop_gradient(ops.cast(self.teacher(x, training=False), "float32"))
        student_logits = ops.cast(y_pred, "float32")
        if self.kind == "soft":
            t = ops.softmax(teacher_logits / self.tau, axis=-1)
            log_s = ops.log_softmax(student_logits / self.tau, axis=-1)
            log_t = ops.log_softmax(teacher_logits / self.tau, axis=-1)
            distill = ops.mean(ops.sum(t * (log_t - log_s), axis=-1)) * self.tau ** 2
        else:
            hard = ops.argmax(teacher_logits, axis=-1)
            distill = ops.mean(keras.losses.sparse_categorical_crossentropy(hard, student_logits, from_logits=True))
        return (1.0 - self.alpha) * base + self.alpha * distill
