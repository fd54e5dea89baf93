"""The losses and metrics on Keras' JAX backend, with TensorFlow unimportable (as on the project's
GPU machine): the golden values of SPEC-loss.md, zero loss and gradient at void pixels whatever
their logits, all-void batches, invalid labels (eager ValueError, NaN under jax.jit) and the
metric. One subprocess checks everything and reports numbers; the assertions are here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parents[1]
LN2 = math.log(2.0)

SCRIPT = """
import sys
sys.modules["tensorflow"] = None  # the GPU machine has no TensorFlow: importing it must fail
import json, math
import jax, jax.numpy as jnp, keras, numpy as np
import labelfix.training.model
from labelfix.losses import (
    CombinedLoss, MaskedDiceLoss, MaskedSparseCategoricalCrossentropy,
    masked_binary_crossentropy, masked_dice_loss, masked_sparse_categorical_crossentropy,
    masked_sparse_categorical_focal_crossentropy,
)
from labelfix.metrics import MeanIoU, confusion_matrix

out = {"backend": keras.backend.backend()}
spec_logits = jnp.tile(jnp.float32([math.log(2), 0, 0]), (1, 1, 4, 1))
spec_labels = jnp.array([[[0, 1, 255, 255]]], "int32")
seed_labels = jnp.array([[0, 0, 0, 1, -1]], "int32")
seed_logits = jnp.float32([[-0.5, -0.6, -0.9, 1.2, 0.1]])
losses = {
    "crossentropy": lambda y, x: masked_sparse_categorical_crossentropy(y, x, ignore=255),
    "focal": lambda y, x: masked_sparse_categorical_focal_crossentropy(y, x, ignore=255),
    "focal_gamma0": lambda y, x: masked_sparse_categorical_focal_crossentropy(
        y, x, ignore=255, gamma=0.0),
    "dice": lambda y, x: masked_dice_loss(y, x, ignore=255),
    "dice_all": lambda y, x: masked_dice_loss(y, x, ignore=255, classes="all"),
    "binary": lambda y, x: masked_binary_crossentropy(y, x, ignore=255),  # the seed's case
}


@jax.jit
def values_and_grads(spec_y, spec_x, seed_y, seed_x):
    # Every loss's (value, gradient) in one program, compiled once: the labels are arguments
    # (tracers, as in a training step), never captured constants.
    out = {}
    for name, fn in losses.items():
        y, x = (seed_y, seed_x) if name == "binary" else (spec_y, spec_x)
        out[name] = jax.value_and_grad(lambda x, y: fn(y, x))(x, y)
    return out


def run(spec_y, spec_x, seed_y, seed_x):
    result = values_and_grads(spec_y, spec_x, seed_y, seed_x)
    return {name: (float(v), np.asarray(g)) for name, (v, g) in result.items()}


seed_255 = jnp.where(seed_labels < 0, 255, seed_labels)  # the seed's -1 void, as 255 here
clean = run(spec_labels, spec_logits, seed_255, seed_logits)
out["golden"] = {name: value for name, (value, _) in clean.items() if name != "binary"}
out["crossentropy_grad"] = clean["crossentropy"][1].ravel().tolist()
out["binary_seed"] = clean["binary"][0]
combined = CombinedLoss([(MaskedSparseCategoricalCrossentropy(ignore=255), 1.0),
                         (MaskedDiceLoss(ignore=255), 0.5)])
out["combined"] = float(combined(spec_labels, spec_logits))

# NaN / inf logits at void pixels; then no valid pixel at all.
dirty_spec = np.array(spec_logits)
dirty_spec[0, 0, 2] = np.nan
dirty_spec[0, 0, 3] = [np.inf, -np.inf, np.nan]
dirty_seed = np.array(seed_logits)
dirty_seed[0, 4] = np.nan
dirty = run(spec_labels, jnp.asarray(dirty_spec), seed_255, jnp.asarray(dirty_seed))
every = run(jnp.full_like(spec_labels, 255), jnp.asarray(dirty_spec),
            jnp.full_like(seed_255, 255), jnp.asarray(dirty_seed))
# A label that is neither class nor void (7): NaN under jax.jit, ValueError in eager code.
spec_bad = jnp.array([[[0, 7, 255, 255]]], "int32")
seed_bad = jnp.array([[0, 7, 0, 1, 255]], "int32")
invalid = run(spec_bad, spec_logits, seed_bad, seed_logits)
out["void"], out["invalid"] = {}, {}
for name, fn in losses.items():
    is_binary = name == "binary"
    void = np.asarray(seed_255 if is_binary else spec_labels) == 255
    out["void"][name] = {
        "clean": clean[name][0], "dirty": dirty[name][0],
        "grad_equal": bool(np.array_equal(clean[name][1], dirty[name][1])),
        "void_grad_zero": bool(np.all(dirty[name][1][void] == 0.0)),
        "all_void": every[name][0], "all_void_grad_zero": bool(np.all(every[name][1] == 0.0)),
    }
    try:
        fn(seed_bad, seed_logits) if is_binary else fn(spec_bad, spec_logits)
        message = None
    except ValueError as error:
        message = str(error)
    grad = invalid[name][1]
    out["invalid"][name] = {
        "message": message, "jit": invalid[name][0],
        "pixel_grad_nan": bool(np.isnan(grad[(0, 1) if is_binary else (0, 0, 1)]).all()),
        "void_grad_zero": bool(np.all(grad[void] == 0.0)),
    }

metric = MeanIoU(2, ignore=255, from_logits=False)
metric.update_state(np.array([0, 1, 255, 1]), np.array([0, 0, 1, 1]))
out["mean_iou"] = float(metric.result())
out["confusion"] = np.asarray(jax.jit(lambda a, b: confusion_matrix(
    a, b, num_classes=2, ignore=255))(jnp.array([0, 1, 255, 1, 7]), jnp.array([0, 0, 1, 1, 1]))
).tolist()
try:
    metric.update_state(jnp.array([0, 7]), jnp.array([0, 1]))
    out["metric_invalid"] = None
except ValueError as error:
    out["metric_invalid"] = str(error)
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def jax_results():
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": path, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_golden_values_on_jax(jax_results):
    assert jax_results["backend"] == "jax"
    golden = jax_results["golden"]
    assert golden["crossentropy"] == pytest.approx(1.5 * LN2, abs=1e-6)  # 1.0397208
    assert golden["focal"] == pytest.approx(0.4765387, abs=1e-6)
    assert golden["focal_gamma0"] == pytest.approx(1.0397208, abs=1e-6)
    assert golden["dice"] == pytest.approx(0.5833333, abs=1e-6)
    assert golden["dice_all"] == pytest.approx(0.7222222, abs=1e-6)
    assert jax_results["binary_seed"] == pytest.approx(0.3790003, abs=1e-6)
    assert jax_results["combined"] == pytest.approx(1.5 * LN2 + 0.5 * 0.5833333, abs=1e-6)
    np.testing.assert_allclose(
        jax_results["crossentropy_grad"],
        [-0.25, 0.125, 0.125, 0.25, -0.375, 0.125, 0, 0, 0, 0, 0, 0],
        atol=1e-7,
    )


@pytest.mark.parametrize(
    "name", ["crossentropy", "focal", "focal_gamma0", "dice", "dice_all", "binary"]
)
def test_void_pixels_on_jax(jax_results, name):
    """NaN / inf logits at void pixels change neither loss nor gradient; an all-void batch is
    0.0 with zero gradients (under jax.jit)."""
    case = jax_results["void"][name]
    assert math.isfinite(case["clean"]) and case["dirty"] == case["clean"]
    assert case["grad_equal"] and case["void_grad_zero"]
    assert case["all_void"] == 0.0 and case["all_void_grad_zero"]


@pytest.mark.parametrize(
    "name", ["crossentropy", "focal", "focal_gamma0", "dice", "dice_all", "binary"]
)
def test_invalid_labels_on_jax(jax_results, name):
    case = jax_results["invalid"][name]
    expected, at = ("0..1", "y=0 x=1") if name == "binary" else ("0..2", "image 0, y=0 x=1")
    assert case["message"].startswith(
        f"labels: value 7 is not a class id (expected {expected} or ignore 255): 1 px, "
        f"first at {at}."
    )
    assert math.isnan(case["jit"])
    assert case["pixel_grad_nan"] and case["void_grad_zero"]


def test_metric_on_jax(jax_results):
    assert jax_results["mean_iou"] == pytest.approx(0.5)  # docs/losses.md's metric case
    assert jax_results["confusion"] == [[1, 0], [1, 1]]  # 255 void, 7 dropped
    assert jax_results["metric_invalid"].startswith("labels: value 7 is not a class id")
