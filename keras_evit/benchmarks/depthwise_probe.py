"""One depthwise convolution (forward, input gradient, filter gradient) timed in TensorFlow graph mode
and under XLA on this machine: on CPU, XLA's grouped-convolution lowering is where Keras' XLA training
time went, which is why ``keras_evit.layers.DepthwiseConv`` switches formulation under XLA on CPU.

    python -m keras_evit.benchmarks.depthwise_probe
"""

import sys
import time


def depthwise_probe(shape=(32, 14, 14, 64), kernel=3, iters=50):
    """ms per call of one depthwise conv (forward, input gradient, filter gradient), TF graph vs XLA:
    on CPU, XLA's grouped-convolution lowering is where Keras' XLA training time goes."""
    import tensorflow as tf

    x = tf.random.normal(shape)
    w = tf.Variable(tf.random.normal((kernel, kernel, shape[-1], 1)))
    conv = lambda t: tf.nn.depthwise_conv2d(t, w, [1, 1, 1, 1], "SAME")  # noqa: E731

    def grad_input(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = conv(t)
        return tape.gradient(y, t)

    def grad_filter(t):
        with tf.GradientTape() as tape:
            y = conv(t)
        return tape.gradient(y, w)

    rows = []
    for name, fn in (("forward", conv), ("input gradient", grad_input), ("filter gradient", grad_filter)):
        row = {"op": name, "shape": list(shape), "kernel": kernel}
        for label, jit in (("graph_ms", False), ("xla_ms", True)):
            compiled = tf.function(fn, jit_compile=jit)
            for _ in range(5):
                compiled(x)
            started = time.perf_counter()
            for _ in range(iters):
                out = compiled(x)
            out.numpy()
            row[label] = (time.perf_counter() - started) / iters * 1e3
        rows.append(row)
    return rows


def main(argv=None):
    rows = depthwise_probe()
    print(f"{'depthwise 3x3, (32,14,14,64)':<32} {'TF graph ms':>12} {'XLA ms':>9} {'XLA / graph':>12}")
    for r in rows:
        print(f"{r['op']:<32} {r['graph_ms']:12.2f} {r['xla_ms']:9.2f} {r['xla_ms'] / r['graph_ms']:11.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
