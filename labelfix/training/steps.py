"""The loss and the distributed train and eval steps of the reference training loop.

* **Loss**: :func:`labelfix.losses.masked_sparse_categorical_crossentropy`, normalised by the
  number of valid pixels in the *global* batch: every replica returns
  ``local_sum / global_valid_count`` and the optimizer sums gradients over replicas, so any
  number of devices gives the single-device loss and gradients.
* **Step**: forward and backward of each replica in one ``tf.function(jit_compile=True)``;
  the tiny cross-replica parts (valid-pixel count, gradient all-reduce inside the optimizer)
  run around it, because collectives inside an XLA cluster are not portable across devices.

>>> loss_fn = masked_loss(ignore=-1)
>>> labels, logits = tf.constant([[0, -1]]), tf.constant([[[0.0, 0.0], [5.0, -5.0]]])
>>> round(float(loss_fn(labels, logits, tf.constant(1.0))), 4)  # ln 2: the void pixel adds 0
0.6931
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from labelfix.labels import IGNORE_AS
from labelfix.losses import masked_sparse_categorical_crossentropy, valid_count
from labelfix.metrics import confusion_matrix
from labelfix.training.inference import ShapeSteps

__all__ = ["LossFn", "make_eval_step", "make_train_step", "masked_loss"]

LossFn = Callable[[Any, Any, Any], Any]


def masked_loss(
    *, ignore: int, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0
) -> LossFn:
    """The default ``loss_fn(labels, logits, global_valid_count)`` of the steps below."""

    def loss_fn(labels: Any, logits: Any, global_valid_count: Any) -> Any:
        return masked_sparse_categorical_crossentropy(
            labels,
            logits,
            ignore=ignore,
            class_weights=class_weights,
            label_smoothing=label_smoothing,
            global_valid_count=global_valid_count,
        )

    return loss_fn


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

    ``loss`` is the global valid-pixel mean (the sum of the replicas' ``local_sum / global
    count``); the confusion matrix is summed over replicas. Build model and optimizer (call
    ``optimizer.build``) under ``strategy.scope()`` first.
    """
    loss_fn = loss_fn or masked_loss(ignore=ignore)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    # 1. One replica's forward and backward, compiled by XLA.
    @tf.function(jit_compile=jit_compile)
    def forward_backward(images, labels, global_valid_count):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_fn(labels, logits, global_valid_count)
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        grads = tape.gradient(scaled_loss, model.trainable_variables)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        cm = confusion_matrix(labels, predictions, num_classes=num_classes, ignore=ignore)
        return loss, grads, cm

    # 2. Per replica: global valid count in, gradients summed across replicas by the optimizer.
    def replica_step(images, labels):
        ctx = tf.distribute.get_replica_context()
        global_count = ctx.all_reduce(
            tf.distribute.ReduceOp.SUM, valid_count(labels, ignore=ignore)
        )
        loss, grads, cm = forward_backward(images, labels, global_count)
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
        loss_sum = loss_fn(labels, logits, tf.constant(1.0))  # "global count" 1: the plain sum
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        cm = confusion_matrix(labels, predictions, num_classes=num_classes, ignore=ignore)
        return loss_sum, count, cm

    def make(height: int, width: int) -> Callable:
        def step(batch):
            outputs = strategy.run(replica_step, args=batch)
            return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, o, axis=None) for o in outputs)

        return step

    return ShapeSteps(make, strategy)
