"""The loss and the distributed train and eval steps of the reference training loop.

* **Loss**: :class:`TrainingLoss`, one of :data:`~labelfix.training.LOSSES` (cross-entropy,
  focal, soft Dice, cross-entropy + Dice) over softmax logits or one sigmoid channel
  (``binary``). Per-pixel losses are normalised by the number of valid pixels in the *global*
  batch: every replica returns ``local_sum / global_valid_count`` and the optimizer sums
  gradients over replicas. Dice is not a per-pixel sum: its per-class sums are all-reduced,
  each replica returning the global batch's Dice loss / replicas. Either way any number of
  devices gives the single-device loss and gradients.
* **Step**: forward and backward of each replica in one ``tf.function(jit_compile=True)``;
  the tiny cross-replica parts (valid-pixel count, gradient all-reduce inside the optimizer)
  run around it, because collectives inside an XLA cluster are not portable across devices.
  With Dice on more than one replica only the model's forward (and its backward) is compiled:
  the per-class sums are all-reduced between the forward and the loss, under one tape.

>>> loss_fn = masked_loss(ignore=-1)
>>> labels, logits = tf.constant([[0, -1]]), tf.constant([[[0.0, 0.0], [5.0, -5.0]]])
>>> round(float(loss_fn(labels, logits, tf.constant(1.0))), 4)  # ln 2: the void pixel adds 0
0.6931
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from labelfix.errors import UsageError
from labelfix.labels import IGNORE_AS
from labelfix.losses import (
    masked_binary_crossentropy,
    masked_dice_loss,
    masked_sparse_categorical_crossentropy,
    masked_sparse_categorical_focal_crossentropy,
    valid_count,
)
from labelfix.metrics import confusion_matrix
from labelfix.training import LOSSES
from labelfix.training.inference import ShapeSteps, batch_loss_sum, predicted_classes

__all__ = ["LossFn", "TrainingLoss", "make_eval_step", "make_train_step", "masked_loss"]

LossFn = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class TrainingLoss:
    """``loss(labels, logits, global_valid_count)``: the loss of a training run.

    ``kind`` is one of :data:`~labelfix.training.LOSSES`: ``"ce"`` (cross-entropy),
    ``"focal"`` (focal cross-entropy, ``gamma``, ``class_weights`` as its per-class alpha),
    ``"dice"`` (soft Dice over the classes present in the batch) or ``"ce+dice"`` (their sum,
    Dice times ``dice_weight``). Each part keeps the family's void semantics
    (:mod:`labelfix.losses`).

    ``binary``: the logits are one sigmoid channel ``[B, H, W, 1]`` and the labels 0, 1 or
    ``ignore``. The cross-entropy is then :func:`~labelfix.losses.masked_binary_crossentropy`;
    focal, Dice, class weights and label smoothing use the two-class logits ``[0, x]``, whose
    softmax is exactly ``[1 - sigmoid(x), sigmoid(x)]`` (so binary Dice averages background
    and foreground, like the two-class softmax run).

    ``pooled`` says the loss needs the per-class sums of the global batch (Dice): the train
    step then passes ``sum_over_replicas`` and ``num_replicas`` on more than one replica.

    >>> import numpy as np
    >>> logits = np.tile(np.float32([np.log(2), 0, 0]), (1, 1, 4, 1))
    >>> labels = np.array([[[0, 1, 255, 255]]], "int32")
    >>> [round(float(TrainingLoss(kind=k, ignore=255)(labels, logits, 2.0)), 6)
    ...  for k in LOSSES]  # docs/losses.md's values: 1.5 ln 2, focal, 1 - (1/2 + 1/3) / 2, the sum
    [1.039721, 0.476539, 0.583333, 1.623054]
    """

    kind: str = "ce"
    ignore: int = IGNORE_AS
    binary: bool = False
    class_weights: tuple[float, ...] | None = None
    label_smoothing: float = 0.0
    gamma: float = 2.0
    dice_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in LOSSES:
            raise UsageError(f"loss must be one of {', '.join(LOSSES)}, got {self.kind!r}")
        if self.binary and self.class_weights is not None and len(self.class_weights) != 2:
            raise UsageError(
                f"a binary run takes 2 class weights (background, foreground), got "
                f"{len(self.class_weights)}"
            )

    @property
    def pooled(self) -> bool:
        """Whether the loss needs the global batch's per-class sums (Dice)."""
        return "dice" in self.kind

    def __call__(
        self,
        labels: Any,
        logits: Any,
        global_valid_count: Any,
        *,
        sum_over_replicas: Callable[[Any], Any] | None = None,
        num_replicas: int = 1,
    ) -> Any:
        two = _two_classes(logits) if self.binary else logits
        total = 0.0
        if self.kind in ("ce", "ce+dice"):
            if self.binary and self.class_weights is None and not self.label_smoothing:
                total = masked_binary_crossentropy(
                    labels, logits, ignore=self.ignore, global_valid_count=global_valid_count
                )
            else:
                total = masked_sparse_categorical_crossentropy(
                    labels,
                    two,
                    ignore=self.ignore,
                    class_weights=self.class_weights,
                    label_smoothing=self.label_smoothing,
                    global_valid_count=global_valid_count,
                )
        if self.kind == "focal":
            total = masked_sparse_categorical_focal_crossentropy(
                labels,
                two,
                ignore=self.ignore,
                gamma=self.gamma,
                alpha=self.class_weights,
                global_valid_count=global_valid_count,
            )
        if self.pooled:
            dice = masked_dice_loss(
                labels,
                two,
                ignore=self.ignore,
                sum_over_replicas=sum_over_replicas,
                num_replicas=num_replicas,
            )
            total = total + self.dice_weight * dice
        return total


def _two_classes(logits: Any) -> Any:
    """``[0, x]`` from one sigmoid channel ``x``: softmax gives ``[1 - sigmoid(x), sigmoid(x)]``."""
    x = tf.cast(logits, tf.float32)
    return tf.concat([tf.zeros_like(x), x], axis=-1)


def masked_loss(
    *, ignore: int, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0
) -> LossFn:
    """The default ``loss_fn(labels, logits, global_valid_count)`` of the steps below: the
    masked cross-entropy (a :class:`TrainingLoss` of kind ``"ce"``)."""
    weights = None if class_weights is None else tuple(float(w) for w in class_weights)
    return TrainingLoss(
        kind="ce", ignore=ignore, class_weights=weights, label_smoothing=label_smoothing
    )


def make_train_step(
    *,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    num_classes: int,
    ignore: int = IGNORE_AS,
    loss_fn: LossFn | None = None,
    jit_compile: bool = True,
) -> Callable[[Any], tuple[Any, Any]]:
    """``step(distributed_batch) -> (loss, confusion_matrix)`` for one global batch.

    ``loss`` is the global batch's loss (for per-pixel losses the sum of the replicas'
    ``local_sum / global count``); the confusion matrix is summed over replicas. ``loss_fn``:
    ``loss_fn(labels, logits, global_valid_count)``, default the masked cross-entropy; one
    whose ``pooled`` attribute is true (a Dice :class:`TrainingLoss`) also takes
    ``sum_over_replicas=`` and ``num_replicas=`` (see :func:`labelfix.losses.masked_dice_loss`).
    Build model and optimizer (call ``optimizer.build``) under ``strategy.scope()`` first.
    """
    loss_fn = loss_fn or masked_loss(ignore=ignore)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    replicas = strategy.num_replicas_in_sync
    pools_sums = bool(getattr(loss_fn, "pooled", False)) and replicas > 1

    def forward_backward(images, labels, global_valid_count, forward, **loss_options):
        """One replica's loss, gradients and confusion matrix, ``forward`` giving the logits."""
        with tf.GradientTape() as tape:
            logits = forward(images)
            loss = loss_fn(labels, logits, global_valid_count, **loss_options)
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        grads = tape.gradient(scaled_loss, model.trainable_variables)
        cm = confusion_matrix(
            labels, predicted_classes(logits), num_classes=num_classes, ignore=ignore
        )
        return loss, grads, cm

    def train_forward(images):
        return model(images, training=True)

    # 1. One replica's forward and backward, compiled by XLA as one function.
    compiled = tf.function(
        lambda images, labels, count: forward_backward(images, labels, count, train_forward),
        jit_compile=jit_compile,
    )

    # 1b. Dice on several replicas: only the forward is compiled; the per-class sums are
    # all-reduced between it and the loss, under one tape (the all-reduce's gradient sums the
    # upstream gradients over replicas).
    compiled_forward = tf.function(train_forward, jit_compile=jit_compile)

    def pooled(images, labels, global_valid_count):
        ctx = tf.distribute.get_replica_context()
        return forward_backward(
            images,
            labels,
            global_valid_count,
            compiled_forward,
            sum_over_replicas=lambda x: ctx.all_reduce(tf.distribute.ReduceOp.SUM, x),
            num_replicas=replicas,
        )

    # 2. Per replica: global valid count in, gradients summed across replicas by the optimizer.
    def replica_step(images, labels):
        ctx = tf.distribute.get_replica_context()
        global_count = ctx.all_reduce(
            tf.distribute.ReduceOp.SUM, valid_count(labels, ignore=ignore)
        )
        run = pooled if pools_sums else compiled
        loss, grads, cm = run(images, labels, global_count)
        if scaled and ctx.num_replicas_in_sync > 1:
            # The loss-scale optimizer decides "skip this step" from one replica's gradients;
            # make every replica see a non-finite gradient if any replica has one, so they all
            # skip together (otherwise they would disagree and the all-reduce would hang).
            finite = tf.reduce_all(
                [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
            )
            bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(~finite, tf.float32))
            grads = [
                g if g is None else tf.where(bad > 0, tf.cast(np.nan, g.dtype), g) for g in grads
            ]
        optimizer.apply(grads, model.trainable_variables)
        return loss, cm

    # 3. The whole global batch.
    @tf.function
    def step(batch):
        loss, cm = strategy.run(replica_step, args=batch)
        sum_ = tf.distribute.ReduceOp.SUM
        return strategy.reduce(sum_, loss, axis=None), strategy.reduce(sum_, cm, axis=None)

    return step


def make_eval_step(
    *,
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    num_classes: int,
    ignore: int = IGNORE_AS,
    loss_fn: LossFn | None = None,
) -> Callable[[Any], tuple[Any, Any, Any]]:
    """``step(distributed_batch) -> (loss_sum, valid_count, confusion_matrix)``, inference mode.

    Not XLA-compiled: validation images keep their own (padded) sizes, and XLA would compile
    once per size. One ``tf.function`` per padded (height, width), never one traced with an
    unknown height: Keras' bilinear ``UpSampling2D`` cannot be (see
    :class:`labelfix.training.inference.ShapeSteps`).
    """
    loss_fn = loss_fn or masked_loss(ignore=ignore)

    def replica_step(images, labels):
        logits = model(images, training=False)
        count = valid_count(labels, ignore=ignore)
        loss_sum = batch_loss_sum(loss_fn, labels, logits, ignore)
        predictions = predicted_classes(logits)
        cm = confusion_matrix(labels, predictions, num_classes=num_classes, ignore=ignore)
        return loss_sum, count, cm

    def make(height: int, width: int) -> Callable:
        def step(batch):
            outputs = strategy.run(replica_step, args=batch)
            return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, o, axis=None) for o in outputs)

        return step

    return ShapeSteps(make, strategy)
