"""The ``tf.data`` pipelines of the reference training loop, evaluation and prediction.

Training batches are augmented with :func:`labelfix.training.augment.augment` (scale, crop and
flip identical for image and mask, nearest neighbour only, padded with the ignore value) and have
static shapes. Evaluation batches hold full images, each padded (image with 0, mask with the
ignore value) to the next multiple of the model stride and batched only with images of the same
padded size: every valid pixel is scored exactly once, at full resolution, and an image's
prediction does not depend on what else is in its batch.

Examples may carry a third component, a string naming them (``labelfix train`` passes
``"train-00000-of-00004.tfrecord: record 17 (2007_000032)"``): with ``num_classes``, a label
that is neither ``ignore`` nor ``0..num_classes-1`` stops the pipeline before any batch holding
it reaches a step, with an ``InvalidArgumentError`` whose message names the example
(:func:`bad_label_message` extracts it).

>>> ds = tf.data.Dataset.from_tensors((tf.zeros([20, 30, 3]), tf.zeros([20, 30], tf.int32)))
>>> image, mask, size = next(iter(evaluation_pipeline(ds, batch_size=1, ignore=-1)))
>>> image.shape, mask.shape, int(mask[0, 25, 0]), size.numpy().tolist()
(TensorShape([1, 32, 32, 3]), TensorShape([1, 32, 32]), -1, [[20, 30]])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from labelfix.checks.tensors import bad_labels_message
from labelfix.labels import IGNORE_AS
from labelfix.training import MODEL_MULTIPLE
from labelfix.training.augment import augment, pad_to_size

__all__ = [
    "MODEL_MULTIPLE",
    "bad_label_message",
    "check_labels",
    "check_size",
    "evaluation_pipeline",
    "prediction_pipeline",
    "shard_by_data",
    "training_pipeline",
    "validation_pipeline",
]

#: Marks the message of a rejected label inside TensorFlow's error text.
_MARK = "[labelfix bad label] "


def check_labels(mask: Any, where: Any, *, num_classes: int, ignore: int) -> Any:
    """``mask``, once its values are known to be ``ignore`` or ``0..num_classes-1``.

    Vectorised: one min and one max per example; the message (labelfix's bad-value wording:
    the first bad value, its pixel count and first position, after ``where``) is made only for
    a bad example, and raised as an ``InvalidArgumentError`` when the element is read, before
    any step sees it. An ``ignore`` the mask dtype cannot hold (-1 in uint8) is a
    ``ValueError``: a cast would make it 255, and 255 would pass as void.
    """
    info = np.iinfo(mask.dtype.as_numpy_dtype)
    if not info.min <= ignore <= info.max:
        raise ValueError(
            f"ignore={ignore} does not fit the mask dtype {mask.dtype.name} "
            f"({info.min}..{info.max})"
        )
    ignore_t = tf.constant(ignore, mask.dtype)
    labels = tf.where(mask == ignore_t, tf.zeros_like(mask), mask)
    low, high = tf.reduce_min(labels), tf.reduce_max(labels)
    ok = (low >= 0) & (high < num_classes)

    def message():  # the rule's own message, made in NumPy only for a bad example
        def words(labels, name):
            text = bad_labels_message(name.decode(), labels, num_classes=num_classes, ignore=ignore)
            return (_MARK + (text or "")).encode()

        return tf.numpy_function(words, [mask, where], tf.string, stateful=False)

    text = tf.cond(ok, lambda: tf.constant(""), message)
    with tf.control_dependencies([tf.debugging.Assert(ok, [text])]):
        return tf.identity(mask)


def check_size(image: Any, mask: Any, where: Any) -> Any:
    """``mask``, once it is known to have ``image``'s height and width; else an
    ``InvalidArgumentError`` whose message (:func:`bad_label_message` extracts it) names the
    example and both sizes. A mask of another size, padded and batched with its image, stopped
    evaluation with TensorFlow's "Cannot batch tensors with different shapes" (naming no
    record) and trained silently on crops that do not line up."""
    image_hw, mask_hw = tf.shape(image)[:2], tf.shape(mask)[:2]
    ok = tf.reduce_all(tf.equal(image_hw, mask_hw))

    def message():
        return tf.strings.join(
            [
                _MARK,
                where,
                ": mask is ",
                tf.strings.as_string(mask_hw[0]),
                "x",
                tf.strings.as_string(mask_hw[1]),
                " px (HxW), its image ",
                tf.strings.as_string(image_hw[0]),
                "x",
                tf.strings.as_string(image_hw[1]),
                " px: a mask must cover its image pixel for pixel",
            ]
        )

    text = tf.cond(ok, lambda: tf.constant(""), message)
    with tf.control_dependencies([tf.debugging.Assert(ok, [text])]):
        return tf.identity(mask)


def bad_label_message(error: BaseException) -> str | None:
    """The one-line message of a label :func:`check_labels` rejected, or None for another error.

    >>> bad_label_message(ValueError("assertion failed: [[labelfix bad label] a: value 9 ...]"))
    'a: value 9 ...'
    """
    found = re.search(re.escape(_MARK) + r"(.*?)\]", str(getattr(error, "message", error)))
    return found[1].replace('\\"', '"') if found else None


def _named(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``(image, mask, where)``: the third component as given, else ``"example N"``."""
    if len(dataset.element_spec) >= 3:
        return dataset
    return dataset.enumerate().map(
        lambda i, example: (
            *example,
            tf.strings.join(["example ", tf.strings.as_string(i)]),
        )
    )


def training_pipeline(
    dataset: tf.data.Dataset,
    *,
    batch_size: int,
    crop_size: tuple[int, int],
    ignore: int = IGNORE_AS,
    num_classes: int | None = None,
    scale_range: Sequence[float] | None = (0.5, 2.0),
    flip: bool = True,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Shuffle, repeat, check, augment (one stateless seed per example), batch, static shapes.

    Random scale, crop to ``crop_size`` (padding masks with ``ignore``) and flip, applied alike
    to image and mask; the batches ``(image, mask)`` have static shapes, as Keras' ``fit`` needs
    for this model. With ``num_classes``, each decoded mask is checked first
    (:func:`check_labels`): reading a batch that holds a label neither ``ignore`` nor a class
    id raises ``InvalidArgumentError`` naming the example (its third component, if any).

    On a dataset of your own::

        batches = training_pipeline(load("records", "train"), batch_size=8,
                                    crop_size=(512, 512), num_classes=21)
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = _named(dataset)
    dataset = dataset.shuffle(256, seed=seed, reshuffle_each_iteration=True).repeat()

    def augment_one(example_seed, example):
        image, mask, where = example[:3]
        if num_classes is not None:
            mask = check_labels(mask, where, num_classes=num_classes, ignore=ignore)
        return augment(
            tf.cast(image, tf.float32),
            mask,
            seed=example_seed,
            crop_size=crop_size,
            ignore=ignore,
            scale_range=scale_range,
            flip=flip,
        )

    dataset = tf.data.Dataset.zip((seeds, dataset)).map(
        augment_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None
    )
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _multiple(multiple: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(multiple, int):
        return multiple, multiple
    height, width = (int(m) for m in multiple)
    return height, width


def evaluation_pipeline(
    dataset: tf.data.Dataset,
    *,
    batch_size: int,
    ignore: int = IGNORE_AS,
    multiple: int | Sequence[int] = MODEL_MULTIPLE,
    num_classes: int | None = None,
    replicas: int = 1,
) -> tf.data.Dataset:
    """Full-resolution batches ``(image, mask, size)``, each image padded on its own.

    Every image is padded at the bottom/right to the next multiple of ``multiple`` (an int,
    or ``(height, width)``: the tile size of a model with a static input shape), the image with
    0 and the mask with ``ignore``, then batched only with images of that same padded size
    (up to ``batch_size``; the last batch of a size may be smaller). ``size`` is each image's
    ``[height, width]`` before padding, to crop predictions back. Order follows sizes, not the
    input. ``dataset`` yields ``(image, mask[, where])``; with ``num_classes`` masks are checked
    as in :func:`training_pipeline`. With ``replicas`` > 1 a smaller batch is completed to a
    multiple of it with empty examples (all void, ``size`` 0x0), so that no replica gets an
    empty batch (a zero-size batch breaks the model's graph).
    """
    multiple_hw = _multiple(multiple)

    def pad(image, mask, where, *rest):
        if num_classes is not None:
            mask = check_labels(mask, where, num_classes=num_classes, ignore=ignore)
        size = tf.shape(image)[:2]
        padded = (size + multiple_hw - 1) // multiple_hw * multiple_hw
        image, mask = pad_to_size(tf.cast(image, tf.float32), mask, size=padded, ignore=ignore)
        return image, mask, size

    dataset = _named(dataset).map(pad, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = _group_by_size(dataset, batch_size)
    if replicas > 1:
        dataset = dataset.map(lambda *batch: _fill_batch(*batch, replicas=replicas, ignore=ignore))
    return dataset


def _fill_batch(image, mask, size, *, replicas: int, ignore: int):
    """Complete a batch to a multiple of ``replicas`` with empty examples (void, size 0x0)."""
    missing = -tf.shape(image)[0] % replicas
    image = tf.pad(image, [[0, missing], [0, 0], [0, 0], [0, 0]])
    mask = tf.pad(mask, [[0, missing], [0, 0], [0, 0]], constant_values=tf.cast(ignore, mask.dtype))
    return image, mask, tf.pad(size, [[0, missing], [0, 0]])


def prediction_pipeline(
    dataset: tf.data.Dataset,
    *,
    batch_size: int,
    multiple: int | Sequence[int] = MODEL_MULTIPLE,
) -> tf.data.Dataset:
    """Batches ``(image, key, size)`` of ``dataset``'s ``(image, key)``: as
    :func:`evaluation_pipeline`, without masks (``key`` names the image in the output)."""
    multiple_hw = _multiple(multiple)

    def pad(image, key):
        size = tf.shape(image)[:2]
        padded = (size + multiple_hw - 1) // multiple_hw * multiple_hw
        image = tf.pad(
            tf.cast(image, tf.float32), [[0, padded[0] - size[0]], [0, padded[1] - size[1]], [0, 0]]
        )
        return image, key, size

    return _group_by_size(dataset.map(pad, num_parallel_calls=tf.data.AUTOTUNE), batch_size)


def _group_by_size(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Batches of up to ``batch_size`` elements whose first component has one (H, W)."""

    def key(image, *rest):
        shape = tf.cast(tf.shape(image)[:2], tf.int64)
        return shape[0] * (1 << 24) + shape[1]

    dataset = dataset.group_by_window(
        key, lambda _, window: window.batch(batch_size), window_size=batch_size
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def validation_pipeline(
    dataset: tf.data.Dataset, *, batch_size: int, ignore: int
) -> tf.data.Dataset:
    """``(image, mask)`` batches of :func:`evaluation_pipeline` (full images, padded each to
    multiples of the model stride, batched with same-size images; no resizing)."""
    batches = evaluation_pipeline(dataset, batch_size=batch_size, ignore=ignore)
    return batches.map(lambda image, mask, size: (image, mask))


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shard by element across workers: the pipelines are not file-shardable (a record count
    assertion and a zipped random stream sit in them), and TensorFlow says so on every epoch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
