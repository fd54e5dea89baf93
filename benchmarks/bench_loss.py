"""Benchmark the masked losses, forward + backward under XLA, against the same losses unmasked.

Generates its own logits and labels and prints one ratio table; every ratio compares timings from
this same run (warm-up first, then the median of interleaved repeats). Each masked loss runs on
labels with 10% void pixels, its unmasked counterpart on the same labels without void:

=====================  ===========================================  =============================
masked loss            unmasked counterpart                         target
=====================  ===========================================  =============================
cross-entropy          Keras ``SparseCategoricalCrossentropy``      <= 1.0x (issue 5), and
                                                                    <= 0.8x Keras ``ignore_class``
focal                  Keras ``CategoricalFocalCrossentropy``       <= 1.1x
                       (one-hot made inside the step)
Dice                   the same formula without the void handling   <= 1.1x, and <= 1.1x Keras'
                                                                    plain cross-entropy
binary                 Keras ``BinaryCrossentropy``                 <= 1.1x
=====================  ===========================================  =============================

Two targets are not met on XLA:CPU (2 cores, last run: binary 1.45x, Dice vs Keras' cross-entropy
1.33x). Binary: Keras divides by the static pixel count, the masked loss needs the valid-pixel
count, and XLA:CPU runs every reduction as its own loop, so that count is one more pass over the
labels of an otherwise elementwise loss (one reduction of a stacked [N, 2] tensor, or of a
complex64 (loss, valid) pair, was slower still). Dice: Dice needs the softmax and three per-class
sums in the forward pass and their written-out backward: more passes over the logits than the
fused cross-entropy, whatever the void handling (Dice without it is 2x slower again).

Categorical losses on ``[8, 256, 512, 19]`` logits, the binary one on ``[8, 512, 1024, 1]``
(``--quick``: an eighth and a quarter of those pixels, 5 repeats, for a smoke run). Values are
checked before anything is timed: the cross-entropy's value and gradient against Keras'
``ignore_class`` loss, and every masked loss on void-free labels against its counterpart.

    python benchmarks/bench_loss.py [--quick] [--shape 8 256 512 19] [--binary-shape 8 512 1024]

Runs on the backend Keras is set to: TensorFlow (``tf.function(jit_compile=True)``) or JAX
(``jax.jit``; e.g. ``KERAS_BACKEND=jax`` on a GPU machine without TensorFlow).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from labelfix.losses import (
    masked_binary_crossentropy,
    masked_dice_loss,
    masked_sparse_categorical_crossentropy,
    masked_sparse_categorical_focal_crossentropy,
)

IGNORE = -1
GAMMA = 2.0
ALPHA = 0.25


@dataclass(frozen=True)
class Case:
    """One timed formulation: ``fn(labels, logits)`` on the void (or void-free) inputs."""

    name: str
    fn: Callable
    binary: bool = False  # the [B, H, W] logits of the binary case
    void: bool = True  # labels with void pixels (else the same labels without)


def unmasked_dice(labels, logits):
    """The Dice formula of ``masked_dice_loss`` (present classes) with no void handling."""
    num_classes = logits.shape[-1]
    p = ops.reshape(ops.softmax(ops.cast(logits, "float32"), axis=-1), (-1, num_classes))
    y = ops.one_hot(ops.reshape(labels, (-1,)), num_classes)
    intersection = ops.sum(p * y, axis=0)
    counted = ops.sum(y, axis=0)
    dice = 2.0 * intersection / (ops.sum(p, axis=0) + counted)
    present = ops.cast(counted > 0, "float32")
    return 1.0 - ops.sum(present * dice) / ops.maximum(ops.sum(present), 1.0)


def cases(num_classes: int) -> list[Case]:
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with_ignore = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)
    focal = keras.losses.CategoricalFocalCrossentropy(alpha=ALPHA, gamma=GAMMA, from_logits=True)
    binary = keras.losses.BinaryCrossentropy(from_logits=True)
    return [
        Case("keras ce (no void)", lambda y, x: plain(y, x), void=False),
        Case("keras ce ignore_class", lambda y, x: with_ignore(y, x)),
        Case(
            "labelfix ce",
            lambda y, x: masked_sparse_categorical_crossentropy(y, x, ignore=IGNORE),
        ),
        Case(
            "keras focal (no void)",
            lambda y, x: focal(ops.one_hot(y, num_classes), x),
            void=False,
        ),
        Case(
            "labelfix focal",
            lambda y, x: masked_sparse_categorical_focal_crossentropy(
                y, x, ignore=IGNORE, gamma=GAMMA, alpha=ALPHA
            ),
        ),
        Case("dice unmasked (no void)", unmasked_dice, void=False),
        Case("labelfix dice", lambda y, x: masked_dice_loss(y, x, ignore=IGNORE)),
        Case(
            "keras bce (no void)",
            lambda y, x: binary(ops.cast(y, "float32"), x),
            binary=True,
            void=False,
        ),
        Case(
            "labelfix bce",
            lambda y, x: masked_binary_crossentropy(y, x, ignore=IGNORE),
            binary=True,
        ),
    ]


# (masked, reference, target ratio)
TARGETS = [
    ("labelfix ce", "keras ce (no void)", 1.0),
    ("labelfix ce", "keras ce ignore_class", 0.8),
    ("labelfix focal", "keras focal (no void)", 1.1),
    ("labelfix dice", "dice unmasked (no void)", 1.1),
    ("labelfix dice", "keras ce (no void)", 1.1),
    ("labelfix bce", "keras bce (no void)", 1.1),
]


def compile_value_and_grad(fn):
    """A compiled ``(labels, logits) -> (loss, d loss / d logits)`` on the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # not the retracing notes: one function per case

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


def make_inputs(shape, void_share: float, seed: int):
    """``(labels without void, labels with void, logits)``; ``shape`` includes the classes."""
    rng = np.random.default_rng(seed)
    *pixels, classes = shape
    logits = (rng.normal(size=shape) * 3).astype(np.float32)
    labels = rng.integers(0, max(classes, 2), size=pixels).astype(np.int32)
    void = np.where(rng.random(labels.shape) < void_share, IGNORE, labels).astype(np.int32)
    if classes == 1:
        logits = logits[..., 0]
    return labels, void, logits


def check_values(by_name: dict, outputs: dict, categorical, binary) -> None:
    """Masked losses agree with Keras / their counterpart before anything is timed."""
    ref_loss, ref_grad = outputs["keras ce ignore_class"]
    ours_loss, ours_grad = outputs["labelfix ce"]
    np.testing.assert_allclose(float(ours_loss), float(ref_loss), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ours_grad), np.asarray(ref_grad), atol=1e-7)
    # On void-free labels (one image, eagerly) each masked loss is its counterpart.
    pairs = [
        ("labelfix ce", "keras ce (no void)", categorical),
        ("labelfix focal", "keras focal (no void)", categorical),
        ("labelfix dice", "dice unmasked (no void)", categorical),
        ("labelfix bce", "keras bce (no void)", binary),
    ]
    for masked, reference, (labels, _, logits) in pairs:
        # Keras' focal clips p to [1e-7, 1 - 1e-7]; logits / 3 keep every p_t inside.
        y, x = ops.convert_to_tensor(labels[:1]), ops.convert_to_tensor(logits[:1] / 3)
        np.testing.assert_allclose(
            float(by_name[masked].fn(y, x)),
            float(by_name[reference].fn(y, x)),
            rtol=2e-5,
            err_msg=f"{masked} != {reference}",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=None, help="[B, H, W, C] logits")
    parser.add_argument("--binary-shape", type=int, nargs=3, default=None, help="[B, H, W]")
    parser.add_argument("--void", type=float, default=0.1, help="fraction of void pixels")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="fewer pixels (1/8, 1/4), 5 repeats")
    args = parser.parse_args()
    shape = tuple(args.shape or ((2, 256, 256, 19) if args.quick else (8, 256, 512, 19)))
    binary_shape = tuple(args.binary_shape or ((2, 512, 1024) if args.quick else (8, 512, 1024)))
    repeats = args.repeats or (5 if args.quick else 15)

    categorical = make_inputs(shape, args.void, seed=0)
    binary = make_inputs((*binary_shape, 1), args.void, seed=1)
    all_cases = cases(shape[-1])
    by_name = {case.name: case for case in all_cases}

    steps, inputs, outputs = {}, {}, {}
    for case in all_cases:
        labels, void, logits = binary if case.binary else categorical
        inputs[case.name] = (
            ops.convert_to_tensor(void if case.void else labels),
            ops.convert_to_tensor(logits),
        )
        step, wait = compile_value_and_grad(case.fn)
        steps[case.name] = (step, wait)
        for _ in range(2):  # compile + warm caches
            out = step(*inputs[case.name])
            wait(out)
        outputs[case.name] = out
    check_values(by_name, outputs, categorical, binary)

    times: dict[str, list[float]] = {name: [] for name in steps}
    order = np.random.default_rng(1)
    for _ in range(repeats):  # interleaved, in a fresh order each round: load drift and
        for name in order.permutation(list(steps)):  # position effects hit every one alike
            step, wait = steps[name]
            start = time.perf_counter()
            wait(step(*inputs[name]))
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) * 1e3 for name, t in times.items()}

    print(
        f"\nloss forward+backward, float32, {keras.backend.backend()} + XLA, "
        f"{args.void:.0%} void in the masked runs, median of {repeats}; categorical logits "
        f"{list(shape)}, binary logits {list(binary_shape)}"
    )
    print(f"  {'formulation':26s} {'ms':>8s}")
    for name, ms in median.items():
        print(f"  {name:26s} {ms:8.1f}")
    print(f"\n  {'masked':16s} {'vs':26s} {'ratio':>6s} {'target':>7s}")
    for masked, reference, target in TARGETS:
        ratio = median[masked] / median[reference]
        verdict = "PASS" if ratio <= target else "FAIL"
        print(f"  {masked:16s} {reference:26s} {ratio:6.2f} {target:6.2f}x  {verdict}")
    print("  values: labelfix ce == keras ignore_class (loss, gradients); each masked loss ==")
    print("  its counterpart on void-free labels")


if __name__ == "__main__":
    main()
