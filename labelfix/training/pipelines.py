"""The ``tf.data`` pipelines of the reference training loop.

Training batches are augmented with :func:`labelfix.training.augment.augment` (scale, crop and
flip identical for image and mask, nearest neighbour only, padded with the ignore value) and have
static shapes; validation batches are full images padded to a multiple of the model stride.

>>> ds = tf.data.Dataset.from_tensors((tf.zeros([20, 30, 3]), tf.zeros([20, 30], tf.int32)))
>>> image, mask = next(iter(validation_pipeline(ds, batch_size=1, ignore=-1)))
>>> image.shape, mask.shape, int(mask[0, 25, 0])
(TensorShape([1, 32, 32, 3]), TensorShape([1, 32, 32]), -1)
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from labelfix.labels import IGNORE_AS
from labelfix.training.augment import augment, pad_to_multiple

__all__ = ["MODEL_MULTIPLE", "shard_by_data", "training_pipeline", "validation_pipeline"]

#: Spatial sizes fed to the model are multiples of this (the decoder's largest stride).
MODEL_MULTIPLE = 16


def training_pipeline(
    dataset: tf.data.Dataset,
    *,
    batch_size: int,
    crop_size: tuple[int, int],
    ignore: int = IGNORE_AS,
    scale_range: Sequence[float] | None = (0.5, 2.0),
    flip: bool = True,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Shuffle, repeat, augment (one stateless seed per example), batch with static shapes.

    Random scale, crop to ``crop_size`` (padding masks with ``ignore``) and flip, applied alike
    to image and mask; the batches have static shapes, as Keras' ``fit`` needs for this model.

    >>> batches = training_pipeline(load("records", "train"), batch_size=8,
    ...                             crop_size=(512, 512))           # doctest: +SKIP
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = dataset.shuffle(256, seed=seed, reshuffle_each_iteration=True).repeat()

    def augment_one(example_seed, example):
        image, mask = example
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


def validation_pipeline(
    dataset: tf.data.Dataset, *, batch_size: int, ignore: int
) -> tf.data.Dataset:
    """Full images, padded (mask with ``ignore``) to multiples of the model stride; no resizing."""

    def pad(image, mask):
        return pad_to_multiple(
            tf.cast(image, tf.float32), mask, multiple=MODEL_MULTIPLE, ignore=ignore
        )

    dataset = dataset.map(pad, num_parallel_calls=tf.data.AUTOTUNE)
    mask_dtype = dataset.element_spec[1].dtype
    return dataset.padded_batch(
        batch_size, padding_values=(0.0, tf.cast(ignore, mask_dtype))
    ).prefetch(tf.data.AUTOTUNE)


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shard by element across workers: the pipelines are not file-shardable (a record count
    assertion and a zipped random stream sit in them), and TensorFlow says so on every epoch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
