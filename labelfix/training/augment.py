"""Training augmentation for (image, mask) pairs, in TensorFlow ops for use inside ``tf.data``.

Every random choice is drawn once and applied identically to the image and the mask. Masks are
resized with nearest neighbour only (a bilinear mask invents class ids between neighbours, e.g.
7.5 -> 7 between classes 0 and 15) and padded with the ``ignore`` value only (padding with 0 would
teach "background" at every crop border). Randomness is stateless: the same ``seed`` gives the
same augmentation, so a run is reproducible.

>>> import tensorflow as tf
>>> image, mask = tf.zeros([20, 30, 3]), tf.zeros([20, 30], tf.int32)
>>> out_image, out_mask = augment(image, mask, seed=[1, 2], crop_size=(32, 32), ignore=-1)
>>> out_image.shape, out_mask.shape
(TensorShape([32, 32, 3]), TensorShape([32, 32]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "augment",
    "pad_to_multiple",
    "pad_to_size",
    "random_crop",
    "random_flip",
    "random_scale",
]


def _seeds(seed: Any, n: int) -> list[Any]:
    """``n`` independent stateless seeds derived from one ``[2]`` seed."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return list(tf.unstack(tf.random.experimental.stateless_split(seed, num=n)))


def _check_ignore(mask: Any, ignore: int) -> None:
    info = np.iinfo(mask.dtype.as_numpy_dtype)
    if not info.min <= ignore <= info.max:
        raise ValueError(
            f"ignore={ignore} does not fit the mask dtype {mask.dtype.name} "
            f"({info.min}..{info.max}); padding would write a class id instead of void"
        )


def _as_3d(mask: Any) -> tuple[Any, bool]:
    squeeze = mask.shape.rank == 2
    return (mask[..., tf.newaxis] if squeeze else mask), squeeze


def random_scale(
    image: Any, mask: Any, *, seed: Any, ignore: int, scale_range: Sequence[float] = (0.5, 2.0)
) -> tuple[Any, Any]:
    """Resize both by one factor drawn from ``scale_range``: image bilinear, mask nearest.

    ``ignore`` is only checked here (nearest neighbour copies it like any other value).
    """
    _check_ignore(mask, ignore)
    low, high = scale_range
    factor = tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high)
    size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * factor), tf.int32)
    size = tf.maximum(size, 1)
    mask3, squeeze = _as_3d(mask)
    image = tf.image.resize(image, size, method="bilinear")
    mask3 = tf.image.resize(mask3, size, method="nearest")  # keeps the dtype, no blending
    return image, (mask3[..., 0] if squeeze else mask3)


def pad_to_size(
    image: Any, mask: Any, *, size: Any, ignore: int, image_fill: float | Sequence[float] = 0.0
) -> tuple[Any, Any]:
    """Pad bottom/right to at least ``size`` ``(h, w)``: image with ``image_fill``, mask with
    ``ignore`` (never 0, which is a class)."""
    _check_ignore(mask, ignore)
    mask3, squeeze = _as_3d(mask)
    shape = tf.shape(image)
    pad_h = tf.maximum(size[0] - shape[0], 0)
    pad_w = tf.maximum(size[1] - shape[1], 0)
    paddings = [[0, pad_h], [0, pad_w], [0, 0]]
    fill = tf.cast(image_fill, image.dtype)
    image = tf.pad(image - fill, paddings) + fill  # per-channel fill (e.g. the dataset mean)
    mask3 = tf.pad(mask3, paddings, constant_values=tf.cast(ignore, mask.dtype))
    return image, (mask3[..., 0] if squeeze else mask3)


def pad_to_multiple(
    image: Any,
    mask: Any,
    *,
    multiple: int,
    ignore: int,
    image_fill: float | Sequence[float] = 0.0,
) -> tuple[Any, Any]:
    """Pad bottom/right so H and W are multiples of ``multiple`` (the model's output stride),
    mask with ``ignore``: evaluation at full resolution without resizing the mask."""
    shape = tf.shape(image)[:2]
    size = (shape + multiple - 1) // multiple * multiple
    return pad_to_size(image, mask, size=size, ignore=ignore, image_fill=image_fill)


def random_crop(
    image: Any,
    mask: Any,
    *,
    seed: Any,
    crop_size: Sequence[int],
    ignore: int,
    image_fill: float | Sequence[float] = 0.0,
) -> tuple[Any, Any]:
    """Pad (mask with ``ignore``) to at least ``crop_size``, then crop both at one random offset."""
    crop_h, crop_w = crop_size
    image, mask = pad_to_size(
        image, mask, size=(crop_h, crop_w), ignore=ignore, image_fill=image_fill
    )
    shape = tf.shape(image)
    seed_y, seed_x = _seeds(seed, 2)
    y = tf.random.stateless_uniform([], seed=seed_y, maxval=shape[0] - crop_h + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform([], seed=seed_x, maxval=shape[1] - crop_w + 1, dtype=tf.int32)
    image = image[y : y + crop_h, x : x + crop_w]
    mask = mask[y : y + crop_h, x : x + crop_w]
    image.set_shape([crop_h, crop_w, image.shape[-1]])
    mask.set_shape([crop_h, crop_w, *mask.shape[2:]])
    return image, mask


def random_flip(image: Any, mask: Any, *, seed: Any) -> tuple[Any, Any]:
    """Mirror both left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
    return image, mask


def augment(
    image: Any,
    mask: Any,
    *,
    seed: Any,
    crop_size: Sequence[int],
    ignore: int,
    scale_range: Sequence[float] | None = (0.5, 2.0),
    flip: bool = True,
    image_fill: float | Sequence[float] = 0.0,
) -> tuple[Any, Any]:
    """Random scale, pad-and-crop to ``crop_size`` and horizontal flip, identical for both.

    Args:
        image: float ``[H, W, C]``.
        mask: integer ``[H, W]`` (or ``[H, W, 1]``) holding class ids and ``ignore``.
        seed: ``[2]`` integers for the stateless RNG (e.g. from ``tf.data.Dataset.random``).
        crop_size: ``(height, width)`` of the output.
        ignore: the void value the mask uses; padding writes it. A value the mask dtype cannot
            hold (-1 in uint8) is a ``ValueError``.
        scale_range: ``(low, high)`` zoom factors; None for no scaling.
        image_fill: the image padding: 0, or the per-channel dataset mean.
    """
    seed_scale, seed_crop, seed_flip = _seeds(seed, 3)
    if scale_range is not None:
        image, mask = random_scale(
            image, mask, seed=seed_scale, ignore=ignore, scale_range=scale_range
        )
    image, mask = random_crop(
        image, mask, seed=seed_crop, crop_size=crop_size, ignore=ignore, image_fill=image_fill
    )
    if flip:
        image, mask = random_flip(image, mask, seed=seed_flip)
    return image, mask
