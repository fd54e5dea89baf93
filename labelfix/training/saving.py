"""The model a training run saves is compiled with the run's loss and metric, so that
``keras.saving.load_model`` gives a model that ``evaluate`` and ``fit`` take as it is.

The run trains with its own step (:mod:`labelfix.training.steps`), so Keras never compiled the
model: :func:`compile_for_saving` does, with the Keras loss of the run (its class weights
included) and :class:`~labelfix.metrics.MeanIoU`. A binary run (one sigmoid channel) is compiled
with the binary cross-entropy, whatever its training loss (focal and Dice train on the two-class
logits ``[0, x]``, which no Keras loss takes) and without class weights, and without a metric
(``MeanIoU`` takes one channel per class).
"""

from __future__ import annotations

import keras

from labelfix.losses import (
    CombinedLoss,
    MaskedBinaryCrossentropy,
    MaskedDiceLoss,
    MaskedSparseCategoricalCrossentropy,
    MaskedSparseCategoricalFocalCrossentropy,
)
from labelfix.metrics import MeanIoU


def run_loss(
    kind: str, *, ignore: int, binary: bool = False, class_weights=None
) -> keras.losses.Loss:
    """The Keras loss of a training run's ``kind`` (``ce``, ``focal``, ``dice``, ``ce+dice``)."""
    weights = list(class_weights) if class_weights else None
    if binary:
        return MaskedBinaryCrossentropy(ignore=ignore)
    ce = MaskedSparseCategoricalCrossentropy(ignore=ignore, class_weights=weights)
    if kind == "focal":
        return MaskedSparseCategoricalFocalCrossentropy(ignore=ignore, alpha=weights)
    if kind == "dice":
        return MaskedDiceLoss(ignore=ignore)
    if kind == "ce+dice":
        return CombinedLoss([(ce, 1.0), (MaskedDiceLoss(ignore=ignore), 1.0)])
    return ce


def compile_for_saving(
    model: keras.Model,
    *,
    num_classes: int,
    ignore: int,
    loss: str = "ce",
    binary: bool = False,
    class_weights=None,
) -> None:
    """Compile ``model`` (Adam, the run's loss, ``MeanIoU`` unless binary) before it is saved."""
    model.compile(
        optimizer="adam",
        loss=run_loss(loss, ignore=ignore, binary=binary, class_weights=class_weights),
        metrics=None if binary else [MeanIoU(num_classes, ignore=ignore)],
    )
