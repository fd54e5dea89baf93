"""Benchmark the masked loss, forward + backward under XLA, against Keras' own losses.

Generates its own logits and labels and prints one table; every ratio compares timings from this
same run (warm-up first, then the median of interleaved repeats). Targets (issue 5), on
``[8, 256, 512, 19]`` logits: no slower than Keras' plain ``SparseCategoricalCrossentropy`` (no
ignore), and at least 20% faster than Keras with ``ignore_class``. Values and gradients are
checked against Keras before anything is timed.

    python benchmarks/bench_loss.py [--shape 8 256 512 19] [--repeats 15]

Runs on the backend Keras is set to: TensorFlow (``tf.function(jit_compile=True)``) or JAX
(``jax.jit``; e.g. ``KERAS_BACKEND=jax`` on a GPU machine without TensorFlow).
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
from keras import ops

from labelfix.losses import masked_sparse_categorical_crossentropy

IGNORE = -1


def formulations(num_classes: int) -> dict:
    """name -> loss(labels, logits). ``keras_plain`` gets labels without void (see main)."""
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with_ignore = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)

    def where_autodiff(labels, logits):
        """The textbook masked loss (sanitising where on the logits, autodiff backward)."""
        valid = ops.not_equal(labels, IGNORE)
        safe = ops.where(valid, labels, 0)
        x = ops.where(ops.expand_dims(valid, -1), ops.cast(logits, "float32"), 0.0)
        ce = ops.logsumexp(x, axis=-1) - ops.sum(ops.one_hot(safe, num_classes) * x, axis=-1)
        count = ops.sum(ops.cast(valid, "float32"))
        return ops.sum(ops.where(valid, ce, 0.0)) / ops.maximum(count, 1.0)

    return {
        "keras_plain (no void)": lambda labels, logits: plain(labels, logits),
        "keras ignore_class": lambda labels, logits: with_ignore(labels, logits),
        "where + autodiff": where_autodiff,
        "labelfix masked": lambda labels, logits: masked_sparse_categorical_crossentropy(
            labels, logits, ignore=IGNORE
        ),
    }


def compile_value_and_grad(fn):
    """A compiled ``(labels, logits) -> (loss, d loss / d logits)`` on the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True, autograph=False)
        def step(labels, logits):
            with tf.GradientTape() as tape:
                tape.watch(logits)
                loss = fn(labels, logits)
            return loss, tape.gradient(loss, logits)

        # The compiled function is one op: its scalar output is ready only when the gradient is.
        return step, lambda out: float(out[0])
    if backend == "jax":
        import jax

        step = jax.jit(jax.value_and_grad(lambda logits, labels: fn(labels, logits)))
        return (lambda labels, logits: step(logits, labels)), lambda out: out[1].block_until_ready()
    raise SystemExit(f"bench_loss supports the tensorflow and jax backends, not {backend}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=(8, 256, 512, 19))
    parser.add_argument("--void", type=float, default=0.1, help="fraction of void pixels")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    batch, height, width, classes = args.shape

    rng = np.random.default_rng(0)
    logits_np = (rng.normal(size=(batch, height, width, classes)) * 3).astype(np.float32)
    labels_np = rng.integers(0, classes, size=(batch, height, width)).astype(np.int32)
    void = rng.random(labels_np.shape) < args.void
    labels_void = np.where(void, IGNORE, labels_np).astype(np.int32)
    logits = ops.convert_to_tensor(logits_np)
    inputs = {
        name: (ops.convert_to_tensor(labels_np if "plain" in name else labels_void), logits)
        for name in formulations(classes)
    }

    steps, outputs = {}, {}
    for name, fn in formulations(classes).items():
        step, wait = compile_value_and_grad(fn)
        steps[name] = (step, wait)
        for _ in range(2):  # compile + warm caches
            out = step(*inputs[name])
            wait(out)
        outputs[name] = out

    # Check the values before timing: ours equals Keras' ignore_class loss, value and gradient.
    ref_loss, ref_grad = outputs["keras ignore_class"]
    ours_loss, ours_grad = outputs["labelfix masked"]
    np.testing.assert_allclose(float(ours_loss), float(ref_loss), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ours_grad), np.asarray(ref_grad), atol=1e-7)
    plain_check = masked_sparse_categorical_crossentropy(
        inputs["keras_plain (no void)"][0], logits, ignore=IGNORE
    )
    np.testing.assert_allclose(
        float(plain_check), float(outputs["keras_plain (no void)"][0]), rtol=1e-5
    )

    times: dict[str, list[float]] = {name: [] for name in steps}
    order = np.random.default_rng(1)
    for _ in range(args.repeats):  # interleaved, in a fresh order each round: load drift and
        for name in order.permutation(list(steps)):  # position effects hit every one alike
            step, wait = steps[name]
            start = time.perf_counter()
            wait(step(*inputs[name]))
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) * 1e3 for name, t in times.items()}

    plain = median["keras_plain (no void)"]
    ignore = median["keras ignore_class"]
    print(
        f"\nloss forward+backward, logits {list(args.shape)} float32, "
        f"{keras.backend.backend()} + XLA, {args.void:.0%} void, median of {args.repeats}"
    )
    print(f"  {'formulation':24s} {'ms':>8s} {'vs plain':>9s} {'vs ignore_class':>16s}")
    for name, ms in median.items():
        print(f"  {name:24s} {ms:8.1f} {ms / plain:9.2f} {ms / ignore:16.2f}")
    ours = median["labelfix masked"]
    print(f"  values: labelfix == keras ignore_class (loss {float(ours_loss):.6f}, gradients)")
    verdicts = [
        ("no slower than keras plain", ours <= plain),
        (">= 20% faster than keras ignore_class", ours <= 0.8 * ignore),
    ]
    for what, ok in verdicts:
        print(f"  {'PASS' if ok else 'FAIL'}  {what}")


if __name__ == "__main__":
    main()
