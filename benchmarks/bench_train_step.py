"""Benchmark a whole training step with the masked loss against the same step with Keras' losses.

The reference step of ``labelfix.training`` (XLA forward + backward, Adam update, confusion matrix)
on the reference DeepLabV3+; only the loss differs. Labels have no void pixel, so every loss
computes the same value (checked on the first step from identical weights). Target (issue 5):
the masked step costs at most 5% more than the step with Keras' plain loss. Prints one table;
ratios compare timings from this run (warm-up, then the median of interleaved repeats).

    python benchmarks/bench_train_step.py [--batch 4] [--size 128 256] [--classes 19] [--width 16]

TensorFlow only (the step uses tf.distribute); float32 on CPU, the auto precision on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from labelfix.training.devices import describe_devices, make_strategy, resolve_precision
from labelfix.training.model import build_model
from labelfix.training.steps import make_train_step, masked_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256))
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    height, width = args.size

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(args.batch, height, width, 3)).astype(np.float32)
    labels = rng.integers(0, args.classes, size=(args.batch, height, width)).astype(np.int32)

    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with_ignore = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    losses = {
        "keras plain": lambda y, logits, count: plain(y, logits),
        "keras ignore_class": lambda y, logits, count: with_ignore(y, logits),
        "labelfix masked": masked_loss(ignore=-1),
    }

    precision = resolve_precision("auto")
    strategy = make_strategy()
    keras.utils.set_random_seed(0)
    dtype = None if precision == "float32" else precision
    initial = build_model(num_classes=args.classes, width=args.width, dtype=dtype).get_weights()
    batches = tf.data.Dataset.from_tensors((images, labels)).repeat()
    steps, first_loss = {}, {}
    for name, loss_fn in losses.items():
        with strategy.scope():
            model = build_model(num_classes=args.classes, width=args.width, dtype=dtype)
            model.set_weights(initial)
            optimizer = keras.optimizers.Adam(1e-4)
            if precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
        step = make_train_step(
            model=model,
            optimizer=optimizer,
            strategy=strategy,
            num_classes=args.classes,
            loss_fn=loss_fn,
        )
        batch = next(iter(strategy.experimental_distribute_dataset(batches)))
        first_loss[name] = float(step(batch)[0])  # compiles; identical weights -> same value
        float(step(batch)[0])
        steps[name] = (step, batch)

    reference = first_loss["keras plain"]
    for name, value in first_loss.items():
        np.testing.assert_allclose(value, reference, rtol=1e-4, err_msg=name)

    times: dict[str, list[float]] = {name: [] for name in steps}
    order = np.random.default_rng(1)
    for _ in range(args.repeats):  # interleaved, in a fresh order each round: load drift and
        for name in order.permutation(list(steps)):  # position effects hit every loss alike
            step, batch = steps[name]
            start = time.perf_counter()
            float(step(batch)[0])  # waits for the step (the update runs before the result)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) * 1e3 for name, t in times.items()}

    base = median["keras plain"]
    print(
        f"\ntraining step, batch {args.batch} x {height}x{width}, {args.classes} classes, "
        f"width {args.width}, {precision}, {', '.join(describe_devices(strategy))}, "
        f"median of {args.repeats}, labels without void"
    )
    print(f"  {'loss':22s} {'ms/step':>9s} {'vs plain':>9s}")
    for name, ms in median.items():
        print(f"  {name:22s} {ms:9.1f} {ms / base:9.3f}")
    print(f"  values: first-step loss {reference:.6f} for all three")
    ok = median["labelfix masked"] <= 1.05 * base
    print(f"  {'PASS' if ok else 'FAIL'}  masked step <= 1.05 x plain step")


if __name__ == "__main__":
    main()
