"""Run a segmentation model on whole images of any size: the core of validation, ``evaluate``
and ``predict``.

Keras 3's bilinear ``UpSampling2D`` cannot be traced with an unknown height or width (it raises
``OperatorNotAllowedInGraphError``), so one traced function serves a single padded size: a
:class:`ShapeSteps` keeps one ``tf.function`` per ``(height, width)``, its batch dimension
relaxed after the first call (``reduce_retracing`` has only the batch to relax). The batches
come from :func:`labelfix.training.pipelines.evaluation_pipeline`: each image padded to a
multiple of the model stride, batched with images of its own padded size. A model with a static
input size (a ``keras.applications`` backbone) is run on non-overlapping tiles of that size
instead (the image padded to a multiple of the tile), so each pixel is still scored once.

>>> import keras
>>> input_multiple(keras.Sequential([keras.Input((64, 96, 3)), keras.layers.Conv2D(2, 1)]))
(64, 96)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from labelfix.metrics import confusion_matrix
from labelfix.training.pipelines import MODEL_MULTIPLE, shard_by_data

__all__ = [
    "Evaluation",
    "Evaluator",
    "ShapeSteps",
    "batch_loss_sum",
    "evaluate_batches",
    "forward",
    "input_multiple",
    "predict_batches",
    "predicted_classes",
    "scored_classes",
    "static_size",
]


def scored_classes(model: keras.Model) -> int:
    """How many classes ``model`` scores: its output channels, or 2 for one sigmoid channel
    (a ``--binary`` model: background and foreground)."""
    channels = int(model.output_shape[-1])
    return 2 if channels == 1 else channels


def predicted_classes(logits: Any) -> Any:
    """int32 class ids ``[B, H, W]`` from logits ``[B, H, W, C]``: the argmax, or for one
    sigmoid channel (``C = 1``) ``logit > 0`` (probability above 0.5).

    >>> predicted_classes(tf.constant([[[[-0.5], [0.5]]]])).numpy().tolist()
    [[[0, 1]]]
    """
    if logits.shape[-1] == 1:
        return tf.cast(logits[..., 0] > 0, tf.int32)
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def static_size(model: keras.Model) -> tuple[int, int] | None:
    """The model's static input ``(height, width)``, or None when either is dynamic."""
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    height, width = shape[1], shape[2]
    return None if height is None or width is None else (int(height), int(width))


def input_multiple(model: keras.Model) -> tuple[int, int]:
    """What evaluation images are padded to multiples of: the model's static input size (it
    is then run on tiles), else :data:`~labelfix.training.pipelines.MODEL_MULTIPLE`."""
    return static_size(model) or (MODEL_MULTIPLE, MODEL_MULTIPLE)


def forward(model: keras.Model, images: Any, tile: tuple[int, int] | None = None) -> Any:
    """Logits ``[B, H, W, C]`` of ``images`` ``[B, H, W, 3]`` (H, W static): in one call, or
    with ``tile`` on the non-overlapping ``tile``-sized pieces (H, W multiples of it)."""
    if tile is None:
        return model(images, training=False)
    th, tw = tile
    height, width = images.shape[1], images.shape[2]
    nh, nw = height // th, width // tw
    batch = tf.shape(images)[0]
    x = tf.reshape(images, [batch, nh, th, nw, tw, images.shape[-1]])
    x = tf.reshape(tf.transpose(x, [0, 1, 3, 2, 4, 5]), [batch * nh * nw, th, tw, -1])
    logits = model(x, training=False)
    classes = logits.shape[-1]
    logits = tf.reshape(logits, [batch, nh, nw, th, tw, classes])
    return tf.reshape(tf.transpose(logits, [0, 1, 3, 2, 4, 5]), [batch, height, width, classes])


def batch_loss_sum(
    loss_fn: Callable[[Any, Any, Any], Any], labels: Any, logits: Any, ignore: int
) -> Any:
    """``loss_fn``'s batch loss times the batch's valid pixels: the loss summed over them for a
    per-pixel loss (its valid mean undone), the batch loss weighted by its valid pixels for
    Dice (not a per-pixel sum); summed over batches and divided by all valid pixels it is the
    validation loss."""
    from labelfix.losses import valid_count

    count = valid_count(labels, ignore=ignore)
    return tf.cast(loss_fn(labels, logits, count), tf.float32) * count


class ShapeSteps:
    """``steps(batch)``: ``make(height, width)``'s function (made once per padded size and
    wrapped in ``tf.function(reduce_retracing=True)``) applied to ``batch``, whose first
    component is the images (a tensor, or a distributed value)."""

    def __init__(self, make: Callable[[int, int], Callable], strategy: Any = None):
        self.make, self.strategy = make, strategy
        self.functions: dict[tuple[int, int], Callable] = {}

    def __call__(self, batch: Any) -> Any:
        images = batch[0]
        if self.strategy is not None:
            images = self.strategy.experimental_local_results(images)[0]
        key = (int(images.shape[1]), int(images.shape[2]))
        function = self.functions.get(key)
        if function is None:
            function = self.functions[key] = tf.function(self.make(*key), reduce_retracing=True)
        return function(batch)


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_batches` counted: an int64 confusion matrix (rows: truth), the
    loss summed over valid pixels (0.0 without a loss), the valid pixels (the matrix's sum)
    and the images."""

    confusion: np.ndarray
    loss_sum: float
    valid_pixels: int
    images: int

    @property
    def loss(self) -> float:
        """The valid-pixel mean loss."""
        return self.loss_sum / max(self.valid_pixels, 1)


class Evaluator:
    """``evaluator(batches) -> Evaluation``: confusion matrix (and loss) of ``model`` over
    ``batches`` of :func:`~labelfix.training.pipelines.evaluation_pipeline`
    ``(image, mask, size)``; its traced functions (one per padded size) are kept between calls,
    so validating every epoch traces each size once.

    Padded pixels carry ``ignore``, so they count nowhere; the counts of each batch are summed
    in int64 on the host. ``loss_fn(labels, logits, global_count)`` as in
    :mod:`labelfix.training.steps` (see :func:`batch_loss_sum`). With ``strategy`` the batches are
    split over its replicas.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        num_classes: int,
        ignore: int,
        loss_fn: Callable[[Any, Any, Any], Any] | None = None,
        strategy: tf.distribute.Strategy | None = None,
    ):
        self.num_classes, self.strategy = num_classes, strategy
        self.steps = ShapeSteps(self._maker(model, num_classes, ignore, loss_fn), strategy)
        self._distributed: tuple[Any, Any] = (None, None)

    def _maker(self, model, num_classes, ignore, loss_fn) -> Callable[[int, int], Callable]:
        tile, strategy = static_size(model), self.strategy

        def replica(images, labels, sizes):
            logits = forward(model, images, tile)
            loss = (
                tf.constant(0.0)
                if loss_fn is None
                else batch_loss_sum(loss_fn, labels, logits, ignore)
            )
            predictions = predicted_classes(logits)
            cm = confusion_matrix(labels, predictions, num_classes=num_classes, ignore=ignore)
            real = tf.reduce_sum(tf.cast(sizes[:, 0] > 0, tf.int32))  # not the fill (0x0)
            return tf.cast(loss, tf.float32), cm, real

        def step(batch):
            outputs = strategy.run(replica, args=batch)
            return tuple(strategy.reduce("SUM", o, axis=None) for o in outputs)

        return lambda height, width: (lambda batch: replica(*batch)) if strategy is None else step

    def _batches(self, batches: tf.data.Dataset) -> Any:
        if self.strategy is None:
            return batches
        if self._distributed[0] is not batches:  # distribute once, iterate every epoch
            distributed = self.strategy.experimental_distribute_dataset(shard_by_data(batches))
            self._distributed = (batches, distributed)
        return self._distributed[1]

    def __call__(
        self, batches: tf.data.Dataset, on_batch: Callable[[int], None] | None = None
    ) -> Evaluation:
        """Evaluate; ``on_batch(images)`` after each batch."""
        cm = np.zeros((self.num_classes, self.num_classes), np.int64)
        loss_sum, images = 0.0, 0
        for batch in self._batches(batches):
            batch_loss, batch_cm, batch_images = self.steps(batch)
            loss_sum += float(batch_loss)
            cm += batch_cm.numpy().astype(np.int64)
            images += int(batch_images)
            if on_batch is not None:
                on_batch(int(batch_images))
        return Evaluation(cm, loss_sum, int(cm.sum()), images)


def evaluate_batches(
    model: keras.Model,
    batches: tf.data.Dataset,
    *,
    num_classes: int,
    ignore: int,
    loss_fn: Callable[[Any, Any, Any], Any] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Evaluation:
    """One :class:`Evaluator` call: the confusion matrix (and loss) of ``model`` over
    ``batches``; ``on_batch(images)`` after each batch."""
    evaluator = Evaluator(
        model, num_classes=num_classes, ignore=ignore, loss_fn=loss_fn, strategy=strategy
    )
    return evaluator(batches, on_batch)


def predict_batches(
    model: keras.Model, batches: tf.data.Dataset
) -> Iterator[tuple[Any, np.ndarray]]:
    """``(key, class ids int32 [h, w])`` per image of ``batches`` ``(image, key, size)``: the
    predicted classes (:func:`predicted_classes`), cropped back to the image's own size."""
    tile = static_size(model)

    def make(height: int, width: int) -> Callable:
        def step(batch):
            images, keys, sizes = batch
            logits = forward(model, images, tile)
            return predicted_classes(logits), keys, sizes

        return step

    steps = ShapeSteps(make)
    for batch in batches:
        predictions, keys, sizes = steps(batch)
        for prediction, key, (h, w) in zip(
            predictions.numpy(), keys.numpy(), sizes.numpy(), strict=True
        ):
            yield key, prediction[:h, :w]
