"""The loss family of SPEC-loss.md ("The loss family"): binary cross-entropy, focal and Dice with
their golden values, Keras parity, and the guarantees every labelfix loss shares (void pixels,
all-void batches, invalid labels, XLA, mixed precision, serialisation), plus the distributed
rule on two replicas in a subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from labelfix.losses import (  # noqa: E402
    CombinedLoss,
    MaskedBinaryCrossentropy,
    MaskedDiceLoss,
    MaskedSparseCategoricalCrossentropy,
    MaskedSparseCategoricalFocalCrossentropy,
    masked_binary_crossentropy,
    masked_dice_loss,
    masked_sparse_categorical_crossentropy,
    masked_sparse_categorical_focal_crossentropy,
)

LN2 = math.log(2.0)
ROOT = Path(__file__).resolve().parents[1]
SPEC_LOGITS = np.tile(np.float32([LN2, 0.0, 0.0]), (1, 1, 4, 1))  # softmax [0.5, 0.25, 0.25]
SPEC_LABELS = np.array([[[0, 1, 255, 255]]], np.int32)
SEED_LABELS = np.array([[0, 0, 0, 1, -1]], np.int32)
SEED_LOGITS = np.array([[-0.5, -0.6, -0.9, 1.2, 0.1]], np.float32)


def value_and_grad(fn, labels, logits):
    x = tf.convert_to_tensor(logits)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = fn(labels, x)
    return loss, tape.gradient(loss, x)


# --------------------------------------------------------------------------- golden values


def test_binary_seed_example():
    """The seed's -1 case: 4 valid pixels; Keras' BinaryCrossentropy counts the void one."""
    loss = masked_binary_crossentropy(SEED_LABELS, SEED_LOGITS)
    expected = sum(math.log1p(math.exp(v)) for v in (-0.5, -0.6, -0.9)) + math.log1p(math.exp(-1.2))
    assert float(loss) == pytest.approx(expected / 4, abs=1e-7)
    assert float(loss) == pytest.approx(0.3790003, abs=1e-7)
    keras_all = keras.losses.BinaryCrossentropy(from_logits=True)(
        SEED_LABELS.astype(np.float32), SEED_LOGITS
    )
    assert float(keras_all) == pytest.approx(0.4720796, abs=1e-7)  # the wrong answer


def test_binary_gradient_and_pos_weight():
    _, grad = value_and_grad(masked_binary_crossentropy, SEED_LABELS, SEED_LOGITS)
    grad = grad.numpy()
    sigmoid = 1 / (1 + np.exp(-SEED_LOGITS[0]))
    np.testing.assert_allclose(grad[0], (sigmoid - [0, 0, 0, 1, sigmoid[4]]) / 4, atol=1e-7)
    assert grad[0, 4] == 0.0
    # pos_weight multiplies the y = 1 term, as tf.nn.weighted_cross_entropy_with_logits does.
    weighted, grad_w = value_and_grad(
        lambda y, x: masked_binary_crossentropy(y, x, pos_weight=3.0), SEED_LABELS, SEED_LOGITS
    )
    reference = tf.nn.weighted_cross_entropy_with_logits(
        SEED_LABELS[:, :4].astype(np.float32), SEED_LOGITS[:, :4], pos_weight=3.0
    )
    assert float(weighted) == pytest.approx(float(tf.reduce_mean(reference)), abs=1e-7)
    assert float(grad_w[0, 3]) == pytest.approx(3 * (sigmoid[3] - 1) / 4, abs=1e-7)


def test_focal_golden_values():
    f = masked_sparse_categorical_focal_crossentropy
    gamma2 = f(SPEC_LABELS, SPEC_LOGITS, ignore=255, gamma=2.0)
    assert float(gamma2) == pytest.approx((0.25 * LN2 + 0.5625 * 2 * LN2) / 2, abs=1e-7)
    assert float(gamma2) == pytest.approx(0.4765387, abs=1e-7)
    gamma0 = f(SPEC_LABELS, SPEC_LOGITS, ignore=255, gamma=0.0)
    assert float(gamma0) == pytest.approx(1.0397208, abs=1e-7)  # exactly the cross-entropy
    alpha = f(SPEC_LABELS, SPEC_LOGITS, ignore=255, gamma=0.0, alpha=[1.0, 3.0, 1.0])
    assert float(alpha) == pytest.approx(3.5 * LN2, abs=1e-6)  # as class_weights


def test_dice_golden_values():
    present = masked_dice_loss(SPEC_LABELS, SPEC_LOGITS, ignore=255)
    assert float(present) == pytest.approx(1 - (0.5 + 1 / 3) / 2, abs=1e-7)  # 0.5833333
    assert abs(float(present) - 0.7083333) > 0.1  # void pixels' p leaking into sum p_c
    every = masked_dice_loss(SPEC_LABELS, SPEC_LOGITS, ignore=255, classes="all")
    assert float(every) == pytest.approx(0.7222222, abs=1e-7)
    smooth = masked_dice_loss(SPEC_LABELS, SPEC_LOGITS, ignore=255, smooth=1.0)
    assert float(smooth) == pytest.approx(1 - (2 / 3 + 1.5 / 2.5) / 2, abs=1e-7)


@pytest.mark.parametrize("classes", ["present", "all"])
def test_dice_without_valid_pixel_is_zero_with_zero_gradient(classes):
    logits = SPEC_LOGITS.copy()
    logits[0, 0, 0] = np.nan
    logits[0, 0, 1] = np.inf
    loss, grad = value_and_grad(
        lambda y, x: masked_dice_loss(y, x, ignore=255, classes=classes),
        np.full((1, 1, 4), 255, np.int32),
        logits,
    )
    assert float(loss) == 0.0
    np.testing.assert_array_equal(grad.numpy(), np.zeros_like(logits))


# --------------------------------------------------------------------------- parity


def categorical_case(seed=0, shape=(2, 6, 7), classes=5, void=0.3, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(*shape, classes)) * scale).astype(np.float32)
    labels = rng.integers(0, classes, size=shape).astype(np.int32)
    labels[rng.random(shape) < void] = -1
    return labels, logits


def binary_case(seed=0, shape=(2, 6, 7), void=0.3):
    labels, logits = categorical_case(seed, shape, classes=2, void=void)
    return labels, logits[..., 0]


def assert_parity(ours, theirs, labels, logits, rtol=1e-6, atol=1e-7):
    x = tf.convert_to_tensor(logits)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a, b = ours(labels, x), theirs(labels, x)
    assert float(a) == pytest.approx(float(b), rel=rtol)
    np.testing.assert_allclose(tape.gradient(a, x), tape.gradient(b, x), atol=atol)


def test_binary_parity_with_keras_without_void():
    labels, logits = binary_case(seed=1, void=0.0)
    keras_bce = keras.losses.BinaryCrossentropy(from_logits=True)
    assert_parity(
        masked_binary_crossentropy, lambda y, x: keras_bce(y.astype(np.float32), x), labels, logits
    )
    probs = 1 / (1 + np.exp(-logits))
    ours = masked_binary_crossentropy(labels[..., None], probs[..., None], from_logits=False)
    theirs = keras.losses.BinaryCrossentropy()(labels.astype(np.float32), probs)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_focal_parity_with_keras_categorical_focal_without_void():
    labels, logits = categorical_case(seed=2, void=0.0, scale=1.0)  # p inside Keras' clip
    keras_focal = keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=2.0, from_logits=True)
    assert_parity(
        lambda y, x: masked_sparse_categorical_focal_crossentropy(y, x, alpha=0.25),
        lambda y, x: keras_focal(np.eye(5, dtype=np.float32)[y], x),
        labels,
        logits,
    )


def test_focal_gamma_zero_is_the_cross_entropy_with_void():
    labels, logits = categorical_case(seed=3)
    assert_parity(
        lambda y, x: masked_sparse_categorical_focal_crossentropy(y, x, gamma=0.0),
        masked_sparse_categorical_crossentropy,
        labels,
        logits,
    )


@pytest.mark.parametrize("name", ["focal", "dice"])
def test_written_out_gradients_match_autodiff_of_the_probability_path(name):
    """The logits paths' custom gradients equal autodiff through softmax + the probs path."""
    labels, logits = categorical_case(seed=4, scale=1.0)
    fn = {
        "focal": masked_sparse_categorical_focal_crossentropy,
        "dice": masked_dice_loss,
    }[name]
    assert_parity(
        fn,
        lambda y, x: fn(y, tf.nn.softmax(x), from_logits=False),
        labels,
        logits,
        rtol=1e-5,
    )


def test_dice_matches_float64_reference():
    labels, logits = categorical_case(seed=5, shape=(3, 16, 16))
    x = logits.astype(np.float64).reshape(-1, 5)
    y = labels.ravel()
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p[y < 0] = 0
    one_hot = np.eye(5)[np.where(y < 0, 0, y)] * (y >= 0)[:, None]
    dice = 2 * (p * one_hot).sum(0) / (p.sum(0) + one_hot.sum(0))
    expected = 1 - dice[one_hot.sum(0) > 0].mean()
    assert float(masked_dice_loss(labels, logits)) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- shared guarantees

LOSSES = {
    "crossentropy": (masked_sparse_categorical_crossentropy, categorical_case),
    "focal": (masked_sparse_categorical_focal_crossentropy, categorical_case),
    "binary": (masked_binary_crossentropy, binary_case),
    "dice": (masked_dice_loss, categorical_case),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_non_finite_logits_at_void_change_nothing(name):
    fn, case = LOSSES[name]
    labels, logits = case(seed=6)
    clean_loss, clean_grad = value_and_grad(fn, labels, logits)
    dirty = logits.copy()
    void = labels == -1
    dirty[void] = np.where(np.random.default_rng(7).random(dirty[void].shape) < 0.5, np.nan, np.inf)
    loss, grad = value_and_grad(fn, labels, dirty)
    assert float(loss) == float(clean_loss)
    np.testing.assert_array_equal(grad.numpy(), clean_grad.numpy())
    assert np.all(grad.numpy()[void] == 0.0) and np.isfinite(grad.numpy()).all()


@pytest.mark.parametrize("name", list(LOSSES))
def test_all_void_batch_is_zero_with_zero_gradient(name):
    fn, case = LOSSES[name]
    labels, logits = case(seed=8, void=1.0)
    logits[0, 0, 0] = np.nan
    loss, grad = value_and_grad(fn, labels, logits)
    assert float(loss) == 0.0
    np.testing.assert_array_equal(grad.numpy(), np.zeros_like(logits))


@pytest.mark.parametrize("name", list(LOSSES))
def test_invalid_labels_raise_eagerly(name):
    fn, case = LOSSES[name]
    labels, logits = case(seed=9)
    labels[0, 1, 2] = 7  # neither a class nor void
    expected = "0..1" if name == "binary" else "0..4"
    message = rf"labels: value 7 is not a class id \(expected {expected} or ignore -1\): 1 px, "
    with pytest.raises(ValueError, match=message + r"first at image 0, y=1 x=2\."):
        fn(labels, logits)


def test_xla_matches_eager_and_gives_nan_for_invalid_labels():
    """One XLA program for focal, binary and Dice (the cross-entropy's is in test_losses.py):
    valid labels give the eager value and gradient; a label that is neither class nor void
    gives NaN (loss and that pixel's gradient) while void pixels' gradient stays exactly 0."""
    names = ["focal", "binary", "dice"]
    cases = {name: LOSSES[name][1](seed=10) for name in names}
    invalid = {name: cases[name][0].copy() for name in names}
    for labels in invalid.values():
        labels[0, 1, 2] = 7

    @tf.function(jit_compile=True)
    def compiled(good, bad, logits):  # labels as arguments: symbolic, as in a training step
        return {
            name: (
                value_and_grad(LOSSES[name][0], good[name], logits[name]),
                value_and_grad(LOSSES[name][0], bad[name], logits[name]),
            )
            for name in names
        }

    results = compiled(
        {name: tf.constant(cases[name][0]) for name in names},
        {name: tf.constant(invalid[name]) for name in names},
        {name: tf.constant(cases[name][1]) for name in names},
    )
    for name in names:
        (loss, grad), (nan_loss, nan_grad) = results[name]
        eager_loss, eager_grad = value_and_grad(LOSSES[name][0], *cases[name])
        assert float(loss) == pytest.approx(float(eager_loss), rel=1e-6), name
        np.testing.assert_allclose(grad, eager_grad, atol=1e-6, err_msg=name)
        nan_grad = nan_grad.numpy()
        assert math.isnan(float(nan_loss)), name
        assert np.isnan(nan_grad[0, 1, 2]).all(), name  # nothing learnt, least of all a clamp
        assert np.all(nan_grad[invalid[name] == -1] == 0.0), name  # void stays exactly 0


@pytest.mark.parametrize("name", list(LOSSES))
def test_mixed_precision_logits_compute_in_float32(name):
    fn, case = LOSSES[name]
    labels, logits = case(seed=12)
    low = tf.cast(logits, "float16")
    loss, grad = value_and_grad(fn, labels, low)
    assert loss.dtype == tf.float32 and grad.dtype == tf.float16
    assert float(loss) == pytest.approx(float(fn(labels, tf.cast(low, tf.float32))), rel=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_shape_mismatch_is_a_value_error(name):
    fn, case = LOSSES[name]
    labels, logits = case(seed=11)
    with pytest.raises(ValueError, match=r"labels of shape \(2, 7, 6\) do not match logits"):
        fn(np.swapaxes(labels, 1, 2), logits)


# --------------------------------------------------------------------------- Loss classes

CLASSES = [
    MaskedSparseCategoricalFocalCrossentropy(ignore=255, gamma=1.5, alpha=[1.0, 2.0, 1.0]),
    MaskedBinaryCrossentropy(ignore=255, pos_weight=2.0, dtype="mixed_bfloat16"),
    MaskedDiceLoss(ignore=255, classes="all", smooth=0.5, name="dice"),
]


@pytest.mark.parametrize("loss", CLASSES, ids=lambda loss: type(loss).__name__)
def test_loss_classes_round_trip_with_dtype(loss):
    for clone in (
        type(loss).from_config(loss.get_config()),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss)),
    ):
        assert type(clone) is type(loss)
        assert clone.get_config() == loss.get_config()
        assert clone._dtype_policy.name == loss._dtype_policy.name
    assert keras.saving.serialize_keras_object(loss)["registered_name"].startswith("labelfix>")


def test_loss_classes_match_their_functions():
    focal = MaskedSparseCategoricalFocalCrossentropy(ignore=255)
    assert float(focal(SPEC_LABELS, SPEC_LOGITS)) == pytest.approx(0.4765387, abs=1e-7)
    assert float(MaskedBinaryCrossentropy()(SEED_LABELS, SEED_LOGITS)) == pytest.approx(
        0.3790003, abs=1e-7
    )
    dice = MaskedDiceLoss(ignore=255, classes="all")
    assert float(dice(SPEC_LABELS, SPEC_LOGITS)) == pytest.approx(0.7222222, abs=1e-7)
    with pytest.raises(ValueError, match="sample_weight"):
        dice(SPEC_LABELS, SPEC_LOGITS, sample_weight=np.ones(1))


def test_combined_loss_keeps_each_part_and_serialises():
    loss = CombinedLoss(
        [(MaskedSparseCategoricalCrossentropy(ignore=255), 1.0), (MaskedDiceLoss(ignore=255), 0.5)]
    )
    assert float(loss(SPEC_LABELS, SPEC_LOGITS)) == pytest.approx(
        1.5 * LN2 + 0.5 * (1 - (0.5 + 1 / 3) / 2), abs=1e-6
    )
    _, grad = value_and_grad(loss, SPEC_LABELS, SPEC_LOGITS)
    np.testing.assert_array_equal(grad.numpy()[0, 0, 2:], 0.0)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(clone) is CombinedLoss
    assert [type(part) for part, _ in clone.losses] == [
        MaskedSparseCategoricalCrossentropy,
        MaskedDiceLoss,
    ]
    assert clone.get_config() == loss.get_config()
    assert float(clone(SPEC_LABELS, SPEC_LOGITS)) == float(loss(SPEC_LABELS, SPEC_LOGITS))
    with pytest.raises(TypeError, match="labelfix losses"):
        CombinedLoss([(keras.losses.SparseCategoricalCrossentropy(), 1.0)])


# --------------------------------------------------------------------------- two replicas

REPLICA_SCRIPT = """
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from labelfix.losses import (
    CombinedLoss, MaskedBinaryCrossentropy, MaskedDiceLoss,
    MaskedSparseCategoricalCrossentropy, MaskedSparseCategoricalFocalCrossentropy,
)
from labelfix.metrics import MeanIoU

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
# Images 0-1 go to replica 0, mostly void; images 2-3 to replica 1, no void: per-replica means
# (or per-replica Dice) would differ from the global batch's value.
labels = rng.integers(0, 3, size=(4, 4, 4)).astype(np.int32)
labels[:2][rng.random((2, 4, 4)) < 0.8] = -1
logits = rng.normal(size=(4, 4, 4, 3)).astype(np.float32)
binary_labels = np.where(labels < 0, -1, labels % 2).astype(np.int32)
cases = {  # name: (loss, takes the binary labels and logits)
    "crossentropy": (MaskedSparseCategoricalCrossentropy(), False),
    "focal": (MaskedSparseCategoricalFocalCrossentropy(), False),
    "binary": (MaskedBinaryCrossentropy(), True),
    "dice": (MaskedDiceLoss(), False),
    "combined": (
        CombinedLoss([(MaskedSparseCategoricalCrossentropy(), 1.0), (MaskedDiceLoss(), 2.0)]),
        False,
    ),
}


def values_and_grads(y, x, y_binary, x_binary):
    # Every case's (loss, d loss / d logits) in one function: one trace for strategy.run.
    out = {}
    for name, (loss, is_binary) in cases.items():
        a, b = (y_binary, x_binary) if is_binary else (y, x)
        with tf.GradientTape() as tape:
            tape.watch(b)
            value = loss(a, b)
        out[name] = (value, tape.gradient(value, b))
    return out


def halves(a):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(a[2 * ctx.replica_id_in_sync_group:][:2]))


inputs = (labels, logits, binary_labels, logits[..., 0])
single = values_and_grads(*map(tf.constant, inputs))
per_half = [values_and_grads(*(tf.constant(a[i:i + 2]) for a in inputs)) for i in (0, 2)]
replicas = strategy.run(values_and_grads, tuple(map(halves, inputs)))  # eager: no slow trace
out = {}
for name in cases:
    value, grad = single[name]
    values = [float(v) for v in strategy.experimental_local_results(replicas[name][0])]
    local = strategy.experimental_local_results(replicas[name][1])
    grads = np.concatenate([g.numpy() for g in local])
    out[name] = {
        "single": float(value), "replicas": values,
        "halves_mean": float(np.mean([float(half[name][0]) for half in per_half])),
        "grad_error": float(np.abs(grads - grad.numpy()).max()),
        "grad_scale": float(np.abs(grad.numpy()).max()),
    }

# Issue 12: the first fit under a strategy (Keras' symbolic build passes float64 labels).
images = rng.normal(size=(4, 4, 4, 3)).astype(np.float32)
loss = CombinedLoss([(MaskedSparseCategoricalCrossentropy(), 1.0), (MaskedDiceLoss(), 1.0)])
with strategy.scope():
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(3, 1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss, metrics=[MeanIoU(3)])
reference = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(3, 1)])
reference.set_weights(model.get_weights())
with tf.GradientTape() as tape:
    predictions = reference(images)
    expected_loss = loss(labels, predictions)
grads = tape.gradient(expected_loss, reference.trainable_variables)
expected_weights = [w - 0.5 * g.numpy() for w, g in zip(reference.get_weights(), grads)]
miou = MeanIoU(3)
miou.update_state(labels, predictions)
history = model.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0).history
out["fit"] = {
    "loss": history["loss"][0], "expected_loss": float(expected_loss),
    "weight_error": max(
        float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), expected_weights)
    ),
    "mean_iou": history["mean_iou"][0], "mean_iou_expected": float(miou.result()),
}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module", autouse=True)
def replica_process(tmp_path_factory):
    """Starts the two-replica script with this module's first test, so it runs while the
    in-process tests do (its own process: the logical-device setup must not leak)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}
    folder = tmp_path_factory.mktemp("replicas")
    with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(REPLICA_SCRIPT)], env=env, stdout=out, stderr=err
        )
    yield proc, folder
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def two_replicas(replica_process):
    proc, folder = replica_process
    returncode = proc.wait(timeout=180)
    lines = [line for line in (folder / "stdout").read_text().splitlines() if "RESULT " in line]
    assert returncode == 0 and lines, (folder / "stderr").read_text()[-3000:]
    return json.loads(lines[-1].split("RESULT ", 1)[1])


@pytest.mark.parametrize("name", ["crossentropy", "focal", "binary", "dice", "combined"])
def test_two_replicas_sum_to_the_single_device_loss_and_gradient(two_replicas, name):
    """Each replica returns its share of the global batch's loss (global valid-pixel count;
    Dice: all-reduced per-class sums), so losses and gradients sum to the single-device ones."""
    case = two_replicas[name]
    assert sum(case["replicas"]) == pytest.approx(case["single"], rel=1e-5)
    assert case["grad_error"] <= 1e-6 * max(1.0, case["grad_scale"])
    # The naive rule, each replica's own loss averaged, is wrong on this batch (replica 0 holds
    # mostly void pixels), so the check above can tell the two apart.
    assert abs(case["halves_mean"] - case["single"]) > 0.01


def test_first_fit_under_mirrored_strategy_works_and_matches_one_device(two_replicas):
    """Regression (issue 12): model.compile(loss=MaskedSparseCategoricalCrossentropy-based,
    metrics=[MeanIoU]) under MirroredStrategy failed in the first fit with "labels must be
    integers ... float64". Now it trains, and one SGD step equals the single-device step."""
    fit = two_replicas["fit"]
    assert fit["loss"] == pytest.approx(fit["expected_loss"], rel=1e-5)
    assert fit["weight_error"] < 1e-6
    assert fit["mean_iou"] == pytest.approx(fit["mean_iou_expected"], abs=1e-6)
