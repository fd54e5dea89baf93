"""Mean IoU and pixel accuracy with void excluded: the spec's metric case and its traps."""

from __future__ import annotations

import keras
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from labelfix.losses import MaskedSparseCategoricalCrossentropy  # noqa: E402
from labelfix.metrics import (  # noqa: E402
    MeanIoU,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)

Y_TRUE = np.array([0, 1, 255, 1])
Y_PRED = np.array([0, 0, 1, 1])


def test_spec_case_keras_metric():
    metric = MeanIoU(2, ignore=255, from_logits=False)
    metric.update_state(Y_TRUE, Y_PRED)
    assert float(metric.result()) == pytest.approx(0.5)
    assert float(metric.pixel_accuracy()) == pytest.approx(2 / 3)


def test_spec_case_confusion_matrix_route():
    cm = np.asarray(confusion_matrix(Y_TRUE, Y_PRED, num_classes=2, ignore=255))
    assert cm.tolist() == [[1, 0], [1, 1]]
    assert mean_iou(cm) == pytest.approx(0.5)
    assert pixel_accuracy(cm) == pytest.approx(2 / 3)


def test_counting_the_ignored_pixel_would_give_one_third():
    """The wrong answer the spec names: the void pixel counted (as class 0) gives 0.3333."""
    counted = np.asarray(confusion_matrix(np.array([0, 1, 0, 1]), Y_PRED, num_classes=2, ignore=-1))
    assert mean_iou(counted) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("ignore", "dtype"), [(-1, np.int32), (255, np.uint8), (255, np.int64), (65535, np.uint16)]
)
def test_ignore_values_and_dtypes(ignore, dtype):
    y_true = np.array([0, 1, ignore, 1], dtype=dtype)
    metric = MeanIoU(2, ignore=ignore, from_logits=False)
    metric.update_state(y_true, Y_PRED)
    assert float(metric.result()) == pytest.approx(0.5)
    cm = confusion_matrix(y_true, Y_PRED, num_classes=2, ignore=ignore)
    assert mean_iou(cm) == pytest.approx(0.5)


def test_from_logits_takes_argmax():
    logits = np.eye(2, dtype=np.float32)[Y_PRED][None] * 5.0  # [1, 4, 2]
    metric = MeanIoU(2, ignore=255)
    metric.update_state(Y_TRUE[None], logits)
    assert float(metric.result()) == pytest.approx(0.5)


def test_absent_classes_are_left_out_of_the_mean():
    cm = np.array([[3, 0, 0], [0, 1, 0], [0, 0, 0]])  # class 2 never occurs
    np.testing.assert_equal(iou_per_class(cm), [1.0, 1.0, np.nan])
    assert mean_iou(cm) == 1.0
    assert mean_iou(np.zeros((3, 3))) == 0.0
    assert pixel_accuracy(np.zeros((3, 3))) == 0.0


def test_confusion_matrix_under_xla_matches_numpy():
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 5, size=(3, 17, 19)).astype(np.int32)
    preds = rng.integers(0, 5, size=(3, 17, 19)).astype(np.int32)
    compiled = tf.function(
        lambda a, b: confusion_matrix(a, b, num_classes=5, ignore=-1), jit_compile=True
    )
    cm = compiled(labels, preds).numpy()
    valid = labels >= 0
    expected = np.zeros((5, 5), np.int64)
    np.add.at(expected, (labels[valid], preds[valid]), 1)
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == valid.sum()


def test_ids_that_are_neither_class_nor_ignore_are_dropped():
    """Validated masks have none; if one slips through it must not crash or land in a cell."""
    cm = np.asarray(confusion_matrix(np.array([0, 7, 1]), np.array([0, 1, 1]), num_classes=2))
    assert cm.tolist() == [[1, 0], [0, 1]]


def test_metric_refuses_invalid_labels_in_eager_code():
    """Same rule and message as the losses: 7 is neither a class of 2 nor ignore 255."""
    metric = MeanIoU(2, ignore=255, from_logits=False)
    for y_true in (np.array([0, 1, 7, 1]), tf.constant([0, 1, 7, 1])):
        expected = r"labels: value 7 is not a class id .*: 1 px, first at y=0 x=2"
        with pytest.raises(ValueError, match=expected):
            metric.update_state(y_true, Y_PRED)
    assert float(metric.result()) == 0.0  # nothing was counted


def test_metric_drops_invalid_labels_in_compiled_code():
    """Compiled, the values are unknown: the pixel is left out (never counted as a clamped
    class), as confusion_matrix does; the loss of the same batch is what turns NaN."""
    metric = MeanIoU(2, ignore=255, from_logits=False)
    tf.function(metric.update_state, jit_compile=False)(
        tf.constant([0, 1, 7, 255, 1]), tf.constant([0, 0, 1, 1, 1])
    )
    assert float(metric.result()) == pytest.approx(0.5)  # the spec case: 7 and 255 left out
    cm = confusion_matrix(np.array([0, 1, 7, 1]), Y_PRED, num_classes=2, ignore=255)
    assert np.asarray(cm).tolist() == [[1, 0], [1, 1]]


def test_metric_config_round_trip_and_compile():
    metric = MeanIoU(4, ignore=255, from_logits=True, name="miou")
    clone = MeanIoU.from_config(metric.get_config())
    assert clone.get_config() == metric.get_config()
    assert clone.dtype == metric.dtype and clone.get_config()["ignore"] == 255
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(4, 1)])
    model.compile(loss=MaskedSparseCategoricalCrossentropy(ignore=255), metrics=[clone])
    y = np.full((2, 4, 4), 255, np.int32)
    y[:, 0, 0] = 1
    result = model.evaluate(np.ones((2, 4, 4, 3), np.float32), y, verbose=0, return_dict=True)
    assert 0.0 <= result["miou"] <= 1.0
