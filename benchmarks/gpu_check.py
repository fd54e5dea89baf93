"""GPU check of labelfix's loss and a whole train step, under Keras' JAX backend (no TensorFlow).

Written for the lent GPU machine of /work/shared/GPU.md (JAX, Keras from wheels, no TensorFlow):

    KERAS_BACKEND=jax python benchmarks/gpu_check.py            # the real shapes, on the GPU
    KERAS_BACKEND=jax python benchmarks/gpu_check.py --tiny     # tiny shapes, any CPU (the test)

What it times (median of ``--reps`` runs after ``--warmup``, each run blocked until ready; data
made once and kept on the device), in float32 and bfloat16:

* **loss**: forward + backward (``jax.jit(jax.value_and_grad)``) on logits ``[16, 512, 1024, 19]``
  of labelfix's ``masked_sparse_categorical_crossentropy`` (labels with 10% void, -1), Keras'
  plain ``SparseCategoricalCrossentropy(from_logits=True)`` (the same labels, void replaced by
  classes: the cost to match) and Keras with ``ignore_class=-1`` (the void labels);
* **step**: a whole train step (forward, backward, Adam) of a small conv net, batch 16, 256x512,
  with the labelfix loss (void labels) against the plain Keras loss (void-free labels).

Before timing, every loss value is checked against a NumPy (float64) reference on the same
logits (for the step: its first loss, against the reference on the model's initial logits);
a mismatch is a failure, as zeros or NaN would otherwise time well.

Targets, PASS/FAIL per dtype: loss <= 1.0x Keras plain; loss >= 20% faster than Keras
``ignore_class`` (<= 0.8x its time); train step <= 1.05x the plain step. Prints a table last,
writes ``gpu_check.json`` into ``$OUT`` (or ``--out``) when set. Exit 1 when a value check fails,
or (not ``--tiny``) a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import keras
import numpy as np

from labelfix.losses import masked_sparse_categorical_crossentropy

IGNORE = -1
VOID_SHARE = 0.1
FULL = dict(loss_shape=(16, 512, 1024, 19), step_shape=(16, 256, 512), classes=19)
TINY = dict(loss_shape=(2, 16, 24, 5), step_shape=(2, 16, 24), classes=5)
#: Targets: (what, numerator, denominator, highest ratio allowed).
TARGETS = (
    ("loss <= 1.0x Keras plain", "loss labelfix", "loss keras plain", 1.0),
    ("loss >= 20% faster than ignore_class", "loss labelfix", "loss keras ignore_class", 0.8),
    ("train step <= 1.05x plain", "step labelfix", "step plain", 1.05),
)


@dataclass(frozen=True)
class Timing:
    case: str
    dtype: str
    median_ms: float
    value: float
    reference: float
    value_ok: bool


def median_ms(fn: Callable[[], Any], *, warmup: int, reps: int) -> float:
    """Median wall time of ``fn()`` in ms, each call blocked until its results are ready."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def reference_loss(labels: np.ndarray, logits: Any) -> float:
    """Masked cross-entropy in float64 NumPy: mean over pixels whose label is not ``IGNORE``
    (image by image, so the full shape fits in memory)."""
    total, count = 0.0, 0
    for i in range(labels.shape[0]):
        x = np.asarray(jax.device_get(logits[i]), np.float64)
        y = labels[i]
        valid = y != IGNORE
        top = x.max(axis=-1, keepdims=True)
        lse = np.log(np.exp(x - top).sum(axis=-1)) + top[..., 0]
        picked = np.take_along_axis(x, np.where(valid, y, 0)[..., None], axis=-1)[..., 0]
        total += float(np.where(valid, lse - picked, 0.0).sum())
        count += int(valid.sum())
    return total / max(count, 1)


def make_labels(shape: tuple[int, ...], classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels with VOID_SHARE void pixels, the same labels with void replaced by classes)``."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, classes, size=shape).astype(np.int32)
    void = np.where(rng.random(shape) < VOID_SHARE, IGNORE, clean).astype(np.int32)
    return void, clean


def check(case: str, dtype: str, value: float, reference: float, ms: float) -> Timing:
    tolerance = 2e-2 if dtype == "bfloat16" else 1e-4
    ok = bool(np.isfinite(value)) and abs(value - reference) <= tolerance * max(abs(reference), 1)
    return Timing(case, dtype, ms, value, reference, ok)


def loss_cases(shape: tuple[int, ...], dtype: str, *, warmup: int, reps: int) -> list[Timing]:
    """Forward + backward of the three losses on one set of logits."""
    void, clean = make_labels(shape[:-1], shape[-1], seed=0)
    rng = np.random.default_rng(1)
    logits = jax.device_put(rng.normal(size=shape).astype(np.float32)).astype(dtype)
    void_d, clean_d = jax.device_put(void), jax.device_put(clean)
    keras_plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras_ignore = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)
    cases = {
        "loss labelfix": (lambda y, x: masked_sparse_categorical_crossentropy(y, x), void_d, void),
        "loss keras plain": (lambda y, x: keras_plain(y, x), clean_d, clean),
        "loss keras ignore_class": (lambda y, x: keras_ignore(y, x), void_d, void),
    }
    results = []
    for name, (loss, labels, host_labels) in cases.items():
        step = jax.jit(jax.value_and_grad(lambda x, y, loss=loss: loss(y, x)))
        value = float(step(logits, labels)[0])
        ms = median_ms(lambda step=step, labels=labels: step(logits, labels), warmup=warmup,
                       reps=reps)  # fmt: skip
        results.append(check(name, dtype, value, reference_loss(host_labels, logits), ms))
    return results


def small_net(shape: tuple[int, ...], classes: int, dtype: str) -> keras.Model:
    """A small conv net: two stride-2 stages, a 3x3 conv, 1x1 classifier, x4 bilinear up.

    Weights are He-normal draws from NumPy (seed 0), set after building with zeros: the same
    start for every case and dtype, and no per-shape compile of JAX's random initialisers
    (seconds on a CPU).
    """
    policy = "float32" if dtype == "float32" else "mixed_bfloat16"
    layers = keras.layers
    conv = dict(padding="same", dtype=policy, kernel_initializer="zeros")
    inputs = keras.Input(shape=(*shape[1:], 3))
    x = layers.Conv2D(32, 3, strides=2, activation="relu", **conv)(inputs)
    x = layers.Conv2D(64, 3, strides=2, activation="relu", **conv)(x)
    x = layers.Conv2D(64, 3, activation="relu", **conv)(x)
    x = layers.Conv2D(classes, 1, **conv)(x)
    logits = layers.UpSampling2D(4, interpolation="bilinear", dtype=policy)(x)
    model = keras.Model(inputs, logits)
    rng = np.random.default_rng(0)
    model.set_weights(
        [
            rng.normal(0.0, np.sqrt(2.0 / np.prod(w.shape[:-1])), w.shape).astype(np.float32)
            if w.ndim > 1
            else np.zeros(w.shape, np.float32)
            for w in model.get_weights()
        ]
    )
    return model


def step_cases(shape: tuple[int, ...], classes: int, dtype: str, *, warmup: int, reps: int):
    """A whole train step (forward, backward, Adam) with each loss, from the same initial
    weights; data on the device."""
    void, clean = make_labels(shape, classes, seed=2)
    rng = np.random.default_rng(3)
    images = jax.device_put(rng.uniform(0, 1, size=(*shape, 3)).astype(np.float32))
    model = small_net(shape, classes, dtype)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    initial = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    logits, _ = jax.jit(model.stateless_call)(initial[0], initial[1], images)
    keras_plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    cases = {
        "step labelfix": (lambda y, x: masked_sparse_categorical_crossentropy(y, x), void),
        "step plain": (lambda y, x: keras_plain(y, x), clean),
    }
    results = []
    for name, (loss, host_labels) in cases.items():
        train_step = make_train_step(model, optimizer, loss)
        labels = jax.device_put(host_labels)
        holder = {"state": jax.tree_util.tree_map(jax.numpy.copy, initial)}  # steps donate it
        value, holder["state"] = train_step(holder["state"], images, labels)

        def run(holder=holder, train_step=train_step, labels=labels):
            loss_value, holder["state"] = train_step(holder["state"], images, labels)
            return loss_value

        ms = median_ms(run, warmup=warmup, reps=reps)
        results.append(check(name, dtype, float(value), reference_loss(host_labels, logits), ms))
    return results


def make_train_step(model: keras.Model, optimizer: Any, loss: Callable) -> Callable:
    """Keras 3's stateless JAX training step, jitted, state donated."""

    def compute(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss(y, logits), non_trainable

    grad_fn = jax.value_and_grad(compute, has_aux=True)

    def step(state, x, y):
        trainable, non_trainable, opt_vars = state
        (value, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return value, (trainable, non_trainable, opt_vars)

    return jax.jit(step, donate_argnums=0)


def verdicts(timings: list[Timing], dtypes: list[str]) -> list[dict]:
    """One PASS/FAIL per target and dtype."""
    by = {(t.case, t.dtype): t.median_ms for t in timings}
    rows = []
    for dtype in dtypes:
        for what, num, den, limit in TARGETS:
            if (num, dtype) not in by or (den, dtype) not in by:
                continue
            ratio = by[(num, dtype)] / by[(den, dtype)]
            rows.append(dict(target=what, dtype=dtype, ratio=ratio, limit=limit, ok=ratio <= limit))
    return rows


def table(timings: list[Timing], rows: list[dict], dtypes: list[str]) -> str:
    cases = list(dict.fromkeys(t.case for t in timings))
    by = {(t.case, t.dtype): t for t in timings}
    lines = [f"{'case':26}" + "".join(f"{d + ' ms':>14}" for d in dtypes) + "  value check"]
    for case in cases:
        cells, checks = "", []
        for dtype in dtypes:
            t = by.get((case, dtype))
            cells += f"{t.median_ms:14.3f}" if t else f"{'-':>14}"
            if t:
                checks.append(f"{t.value:.6f} vs {t.reference:.6f} {'ok' if t.value_ok else 'BAD'}")
        lines.append(f"{case:26}{cells}  {'; '.join(checks)}")
    lines.append("")
    for row in rows:
        verdict = "PASS" if row["ok"] else "FAIL"
        lines.append(
            f"{verdict}  {row['target']} ({row['dtype']}): {row['ratio']:.3f}x "
            f"(limit {row['limit']}x)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, for any CPU")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--only", choices=["loss", "step"], help="run one part")
    parser.add_argument("--warmup", type=int, default=None, help="default 5 (tiny: 1)")
    parser.add_argument("--reps", type=int, default=None, help="default 30 (tiny: 3)")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="directory for JSON")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "jax":
        parser.error(f"needs KERAS_BACKEND=jax, got {keras.backend.backend()}")
    shapes = TINY if args.tiny else FULL
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    reps = args.reps if args.reps is not None else (3 if args.tiny else 30)
    devices = [str(d) for d in jax.devices()]
    print(f"gpu_check: JAX {jax.__version__}, Keras {keras.__version__}, devices {devices}",
          file=sys.stderr)  # fmt: skip
    timings: list[Timing] = []
    for dtype in args.dtypes:
        if args.only in (None, "loss"):
            timings += loss_cases(shapes["loss_shape"], dtype, warmup=warmup, reps=reps)
        if args.only in (None, "step"):
            timings += step_cases(shapes["step_shape"], shapes["classes"], dtype, warmup=warmup,
                                  reps=reps)  # fmt: skip
    rows = verdicts(timings, args.dtypes)
    values_ok = all(t.value_ok for t in timings)
    print(table(timings, rows, args.dtypes))
    print(f"values: {'all match the NumPy reference' if values_ok else 'MISMATCH'}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        document = dict(
            tiny=args.tiny,
            devices=devices,
            jax=jax.__version__,
            keras=keras.__version__,
            shapes={k: list(v) if isinstance(v, tuple) else v for k, v in shapes.items()},
            timings=[asdict(t) for t in timings],
            targets=rows,
            values_ok=values_ok,
        )
        with open(os.path.join(args.out, "gpu_check.json"), "w") as fh:
            json.dump(document, fh, indent=2)
    targets_ok = all(r["ok"] for r in rows)
    return 0 if values_ok and (args.tiny or targets_ok) else 1


if __name__ == "__main__":
    sys.exit(main())
