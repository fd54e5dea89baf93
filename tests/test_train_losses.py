"""``labelfix train --loss ce|focal|dice|ce+dice`` and ``--binary`` (issue 16): the step's loss
(hand-checked values), Dice's per-class sums all-reduced over replicas, and a binary model
trained, evaluated and used for prediction end to end, scored as a 2-class model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402
from train_fixtures import (  # noqa: E402
    LOSS_REPLICA_SCRIPT,
    run_replica_script,
    shapes,
    write_split,
)

from labelfix.errors import UsageError  # noqa: E402
from labelfix.losses import masked_binary_crossentropy  # noqa: E402
from labelfix.training import LOSSES  # noqa: E402
from labelfix.training.inference import predicted_classes, scored_classes  # noqa: E402
from labelfix.training.loop import train  # noqa: E402
from labelfix.training.steps import TrainingLoss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LN2 = math.log(2.0)


def run_cli(*args):
    from labelfix.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


# --------------------------------------------------------------------------- the step's loss


def spec_case():
    """SPEC-loss.md's hand-checkable input: logits [ln 2, 0, 0] everywhere, labels
    [0, 1, 255, 255]."""
    logits = np.tile(np.float32([LN2, 0, 0]), (1, 1, 4, 1))
    return np.array([[[0, 1, 255, 255]]], "int32"), logits


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("ce", 1.5 * LN2),
        ("focal", (0.25 * LN2 + 0.5625 * 2 * LN2) / 2),
        ("dice", 1 - (0.5 + 1 / 3) / 2),
        ("ce+dice", 1.5 * LN2 + 1 - (0.5 + 1 / 3) / 2),
    ],
)
def test_each_loss_gives_the_spec_value(kind, expected):
    labels, logits = spec_case()
    loss = TrainingLoss(kind=kind, ignore=255)
    assert float(loss(labels, logits, 2.0)) == pytest.approx(expected, rel=1e-6)


def test_binary_cross_entropy_is_the_seed_value_by_either_path():
    """The seed's example (0.3790003): the sigmoid loss, and the two-class logits [0, x] that
    class weights (1, 1) and focal with gamma 0 take, agree."""
    labels = np.array([[0, 0, 0, 1, -1]], "int32")[..., np.newaxis]
    logits = np.array([[-0.5, -0.6, -0.9, 1.2, 0.1]], "float32")[..., np.newaxis]
    direct = TrainingLoss(kind="ce", binary=True)
    via_two = TrainingLoss(kind="ce", binary=True, class_weights=(1.0, 1.0))
    focal0 = TrainingLoss(kind="focal", binary=True, gamma=0.0)
    for loss in (direct, via_two, focal0):
        assert float(loss(labels, logits, 4.0)) == pytest.approx(0.3790003, abs=1e-6)


def test_binary_class_weights_and_dice_by_hand():
    """Labels [0, 1, void], logits [0, ln 3, 5]: sigmoid 0.5 and 0.75.
    Weighted CE (1, 3): (ln 2 + 3 ln(4/3)) / 2. Dice over background and foreground:
    D0 = 2 * 0.5 / (0.75 + 1) = 4/7, D1 = 2 * 0.75 / (1.25 + 1) = 2/3, loss 1 - 13/21."""
    labels = np.array([[[0, 1, -1]]], "int32")
    logits = np.array([[[[0.0], [math.log(3.0)], [5.0]]]], "float32")
    weighted = TrainingLoss(kind="ce", binary=True, class_weights=(1.0, 3.0))
    expected = (LN2 + 3 * math.log(4 / 3)) / 2
    assert float(weighted(labels, logits, 2.0)) == pytest.approx(expected, rel=1e-6)
    dice = TrainingLoss(kind="dice", binary=True)
    assert float(dice(labels, logits, 2.0)) == pytest.approx(8 / 21, rel=1e-6)
    # The void pixel's logit changes nothing, even NaN.
    logits[0, 0, 2, 0] = np.nan
    assert float(dice(labels, logits, 2.0)) == pytest.approx(8 / 21, rel=1e-6)


def test_unknown_loss_and_wrong_binary_weights_are_refused():
    with pytest.raises(UsageError, match="loss must be one of ce, focal, dice, ce\\+dice"):
        TrainingLoss(kind="bce")
    with pytest.raises(UsageError, match="2 class weights"):
        TrainingLoss(kind="ce", binary=True, class_weights=(1.0, 2.0, 3.0))


def test_predictions_of_one_sigmoid_channel_and_the_classes_it_scores():
    logits = tf.constant([[[[-2.0], [0.0], [0.1]]]])
    assert predicted_classes(logits).numpy().tolist() == [[[0, 0, 1]]]
    one = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(1, 1)])
    assert scored_classes(one) == 2


@pytest.mark.slow
def test_dice_on_two_replicas_sums_to_the_single_device_loss_and_gradients():
    """Dice, CE + Dice and binary CE + Dice through the XLA train step on two logical CPU
    devices, replica 0 holding few valid pixels of one class: the loss and the summed
    gradients equal one device's (the per-class sums are all-reduced), while the mean of the
    replicas' own Dice losses would be another number."""
    cases = run_replica_script(LOSS_REPLICA_SCRIPT)
    assert set(cases) == {"dice", "ce+dice", "ce+dice-binary"}
    for name, case in cases.items():
        ref, two = case["loss"]
        assert two == pytest.approx(ref, rel=1e-5), name
        assert case["grad_scale"] > 1e-3, name
        assert case["grad_diff"] <= 1e-4 * case["grad_scale"], name
        assert case["cm_total"] == case["valid"], name
    assert abs(cases["dice"]["naive"] - cases["dice"]["loss"][0]) > 0.05


# --------------------------------------------------------------------------- train --binary


def _binary(masks):
    """Foreground = any class; void stays void."""
    return np.where(masks < 0, masks, (masks > 0).astype(masks.dtype))


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_and_learns_binary_masks(loss):
    """Each loss trains a one-channel model on binary masks (no XLA: the loop is the subject)
    and its training loss goes down; history reports two classes."""
    images, masks = shapes(8, seed=0, size=16)
    dataset = tf.data.Dataset.from_tensor_slices((images, _binary(masks)))
    result = train(
        num_classes=2,
        epochs=3,
        batch_size=4,
        steps_per_epoch=6,
        dataset=dataset,
        crop_size=(16, 16),
        scale_range=None,
        width=4,
        learning_rate=1e-2,
        loss=loss,
        binary=True,
        jit_compile=False,
    )
    assert result.model.output_shape[-1] == 1
    assert (result.loss, result.binary) == (loss, True)
    first, last = result.history[0], result.history[-1]
    assert len(last.iou_per_class) == 2
    assert last.loss < first.loss
    assert 0.0 <= last.mean_iou <= 1.0


def test_binary_needs_two_classes_and_the_cli_says_so(tmp_path):
    images, masks = shapes(4, seed=0, size=16)
    with pytest.raises(UsageError, match="num_classes must be 2, got 4"):
        train(
            num_classes=4,
            epochs=1,
            batch_size=4,
            dataset=tf.data.Dataset.from_tensor_slices((images, masks)),
            crop_size=(16, 16),
            binary=True,
        )
    result = run_cli("train", tmp_path, "-n", 4, "-e", 1, "-b", 4, "--binary", "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "--binary trains masks of 2 classes" in result.stderr  # the CLI's names (regression)
    assert "--num-classes must be 2, got 4" in result.stderr
    assert "Traceback" not in result.output
    result = run_cli("train", tmp_path, "-n", 2, "-e", 1, "-b", 4, "--loss", "bce")
    assert result.exit_code == 2
    assert "'bce' is not one of 'ce', 'focal', 'dice', 'ce+dice'" in result.output


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    """Binary records (class 0 background, 1 foreground, void 255 -> -1, mixed sizes) and one
    ``labelfix train --binary --loss ce+dice --val-split val --json`` run on them."""
    root = tmp_path_factory.mktemp("binary")
    write_split(root, "train", [(32, 48), (48, 32), (40, 40), (36, 20)], seed=0, num_classes=2)
    records = write_split(root, "val", [(36, 52), (52, 36)], seed=1, num_classes=2)
    out = root / "model"
    result = run_cli(
        "train", records, "-n", 2, "-e", 1, "-b", 4, "--steps-per-epoch", 3, "--crop-size", 16,
        "--width", 4, "--binary", "--loss", "ce+dice", "--val-split", "val", "-o", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return root, records, out, json.loads(result.stdout)


def test_a_fresh_run_into_an_earlier_runs_output_is_refused(binary_run):
    """Regression (a hostile-user pass): training without --resume into an earlier run's
    output replaced its model.keras and mixed the two runs' checkpoints; resuming with another
    --loss relabelled the earlier epochs. Both are usage errors now, the run untouched."""
    _, records, out, _ = binary_run
    before = (out / "model.keras").read_bytes()
    common = ["-n", 2, "-e", 2, "-b", 4, "--crop-size", 16, "--width", 4, "--binary", "-o", out]
    result = run_cli("train", records, *common)
    assert result.exit_code == 2
    assert f"{out} holds an earlier run (model.keras, checkpoints, history.json)" in result.stderr
    result = run_cli("train", records, *common, "--resume", "--loss", "dice")
    assert result.exit_code == 1
    assert "cannot resume with loss dice (the checkpoint has ce+dice)" in result.stderr
    assert (out / "model.keras").read_bytes() == before


def test_cli_binary_run_reports_two_classes_and_keeps_its_settings(binary_run):
    _, _, out, document = binary_run
    assert (document["loss"], document["binary"]) == ("ce+dice", True)
    epoch = document["history"][0]
    assert len(epoch["iou_per_class"]) == 2 and epoch["val_mean_iou"] is not None
    history = json.loads((out / "history.json").read_text())
    assert (history["loss"], history["binary"], history["num_classes"]) == ("ce+dice", True, 2)
    assert list(history["epochs"][0]["iou_per_class"]) == ["background", "red"]
    model = keras.models.load_model(out / "model.keras")
    assert model.output_shape[-1] == 1


def test_evaluate_and_predict_a_binary_model(binary_run):
    """evaluate scores the one-channel model as 2 classes (its confusion matrix counts every
    valid pixel), predict writes masks of 0 and 1: logit > 0, at each image's size."""
    root, records, out, _ = binary_run
    result = run_cli(
        "evaluate", out / "model.keras", records, "--split", "val", "-o", root / "ev", "--json"
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    matrix = np.array(document["confusion_matrix"])
    manifest = json.loads((records / "val.labelfix.json").read_text())
    assert matrix.shape == (2, 2)
    assert matrix.sum() == sum(manifest["class_pixel_counts"])
    result = run_cli("predict", out / "model.keras", root / "val" / "images", "-o", root / "pred")
    assert result.exit_code == 0, result.output
    model = keras.models.load_model(out / "model.keras")
    for name in ("0000.png", "0001.png"):
        with Image.open(root / "pred" / name) as im:
            mask = np.asarray(im)
        image = np.asarray(Image.open(root / "val" / "images" / name), np.float32)
        h, w = image.shape[:2]
        padded = np.pad(image, [(0, -h % 16), (0, -w % 16), (0, 0)])[np.newaxis]
        expected = (model(padded, training=False).numpy()[0, :h, :w, 0] > 0).astype(np.uint8)
        assert mask.shape == (h, w)
        np.testing.assert_array_equal(mask, expected)


def test_binary_loss_equals_keras_binary_crossentropy_without_void():
    """Parity with Keras on a batch without void (float32 rounding)."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, (2, 8, 8, 1)).astype("int32")
    logits = rng.normal(size=(2, 8, 8, 1)).astype("float32")
    keras_value = keras.losses.BinaryCrossentropy(from_logits=True)(labels, logits)
    ours = TrainingLoss(kind="ce", binary=True)(labels, logits, float(labels.size))
    assert float(ours) == pytest.approx(float(keras_value), rel=1e-5)
    assert float(ours) == pytest.approx(float(masked_binary_crossentropy(labels, logits)))
