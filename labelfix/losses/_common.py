"""What every labelfix loss shares: label alignment, the reductions (``docs/losses.md``, rule 3),
the Loss base class and the tf.distribute replica context. The label checks themselves (rule 1,
and labels that are neither a class nor void) are :mod:`labelfix.checks.tensors`'.

``keras.ops`` and NumPy only; TensorFlow is imported only when Keras already runs on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from labelfix.checks.tensors import (
    check_labels,
    invalid_mask,
    is_symbolic,
    raise_on_invalid_labels,
)
from labelfix.labels import IGNORE_AS

REDUCTIONS = ("valid_mean", "per_image_mean", "sum", "none")
__all__ = ["check_labels", "invalid_mask", "is_symbolic", "raise_on_invalid_labels"]


def valid_count(labels: Any, *, ignore: int = IGNORE_AS) -> Any:
    """Number of pixels whose label is not ``ignore``, as a float32 scalar.

    In distributed training, sum this over replicas and pass it as ``global_valid_count``.

    >>> import numpy as np
    >>> float(valid_count(np.array([[0, 1, -1, -1]], "int32")))
    2.0
    """
    labels = check_labels(labels, ignore)
    return ops.sum(ones_where(ops.not_equal(labels, ignore)))


def align_labels(labels: Any, pixel_shape: tuple, logits_shape: tuple) -> Any:
    """``labels`` shaped like ``pixel_shape`` (the logits' shape without the class axis).

    A trailing axis of size 1 is squeezed. A static mismatch (transposed H and W, another batch
    size) is a ``ValueError`` naming both shapes; unknown dimensions are not compared.
    """
    shape = tuple(labels.shape)
    if len(shape) == len(pixel_shape) + 1 and shape[-1] in (1, None):
        labels = ops.squeeze(labels, axis=-1)
        shape = shape[:-1]
    if len(shape) != len(pixel_shape) or any(
        a is not None and b is not None and a != b for a, b in zip(shape, pixel_shape, strict=True)
    ):
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match logits of shape "
            f"{tuple(logits_shape)}: expected {tuple(pixel_shape)} (the logits' shape without "
            f"the class axis), optionally with a trailing axis of size 1"
        )
    return labels


@dataclass(frozen=True)
class Labels:
    """Labels prepared for a loss (``[N...]``, the pixel shape).

    ``valid``: not ``ignore``. ``safe``: int32, void pixels 0, clipped to ``0..num_classes-1``
    (safe to gather with on every backend). ``scale``: float32, NaN where a label is neither
    ``ignore`` nor a class id, else exactly 1. A loss multiplies each pixel's loss by it, so
    such a pixel's loss *and* gradient are NaN (``d(l * s) = s dl``) while every other value is
    unchanged: compiled code, which cannot raise on values, gives NaN instead of training on a
    clamped class, with no extra pass over the labels.
    """

    valid: Any
    safe: Any
    scale: Any


def class_last(labels: Any, logits: Any, *, ignore: int, axis: int) -> tuple[Any, Any, int]:
    """``(labels, logits, num_classes)`` checked and aligned: labels' dtype and ``ignore``
    (:func:`check_labels`), logits with the class axis last (static size), labels shaped like
    the logits without it, and invalid labels refused in eager code."""
    labels = check_labels(labels, ignore)
    logits = ops.convert_to_tensor(logits)
    rank = len(logits.shape)
    if axis % rank != rank - 1:  # channels_first: move classes last (one transpose, fused by XLA)
        logits = ops.moveaxis(logits, axis % rank, -1)
    num_classes = logits.shape[-1]
    if num_classes is None:
        raise ValueError("the class axis of logits must have a static size")
    labels = align_labels(labels, tuple(logits.shape[:-1]), tuple(logits.shape))
    raise_on_invalid_labels(labels, num_classes=num_classes, ignore=ignore)
    return labels, logits, num_classes


def prepare_labels(labels: Any, num_classes: int, ignore: int) -> Labels:
    """:class:`Labels` from checked, aligned labels (see :func:`check_labels`)."""
    valid = ops.not_equal(labels, ignore)
    safe = ops.clip(ops.where(valid, ops.cast(labels, "int32"), 0), 0, num_classes - 1)
    bad = invalid_mask(labels, num_classes, ignore)
    scale = ops.where(bad, np.float32(np.nan), np.float32(1.0))
    return Labels(valid, safe, scale)


def reduce_pixels(
    per_pixel: Any, valid: Any, reduction: str, global_valid_count: Any | None = None
) -> Any:
    """The reductions (``docs/losses.md``, rule 3) of a per-pixel map that is 0 at void pixels."""
    if reduction == "none":
        return per_pixel
    if reduction == "sum":
        return ops.sum(per_pixel)
    if reduction == "valid_mean":
        if global_valid_count is None:
            count = ops.sum(ones_where(valid))
        else:
            count = ops.cast(global_valid_count, "float32")
        # max(count, 1): an all-void batch gives 0 / 1 = 0 (and zero gradients), never 0 / 0.
        return ops.sum(per_pixel) / ops.maximum(count, 1.0)
    # per_image_mean
    batch = ops.shape(per_pixel)[0]
    image_sum = ops.sum(ops.reshape(per_pixel, (batch, -1)), axis=1)
    image_count = ops.sum(ops.reshape(ones_where(valid), (batch, -1)), axis=1)
    image_mean = image_sum / ops.maximum(image_count, 1.0)
    images_with_valid = ops.sum(ops.cast(image_count > 0, "float32"))
    return ops.sum(image_mean) / ops.maximum(images_with_valid, 1.0)


def ones_where(mask: Any) -> Any:
    """float32 1 where ``mask``, else 0. A select, not a cast: XLA:CPU reduces a cast bool
    through a slow generic loop (binary cross-entropy ~25% slower, benchmarks/bench_loss.py)."""
    return ops.where(mask, np.float32(1.0), np.float32(0.0))


def check_reduction(reduction: str, global_valid_count: Any | None = None) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if global_valid_count is not None and reduction != "valid_mean":
        raise ValueError(f"global_valid_count needs reduction='valid_mean', got {reduction!r}")


def per_class(values: Any, num_classes: int, what: str) -> Any:
    """A float32 ``[num_classes]`` tensor from one number or one number per class."""
    if isinstance(values, (int, float, np.number)):
        return ops.full((num_classes,), float(values), dtype="float32")
    tensor = ops.convert_to_tensor(values, dtype="float32")
    if tuple(tensor.shape) != (num_classes,):
        raise ValueError(
            f"{what} must have one weight per class ({num_classes}), got shape "
            f"{tuple(tensor.shape)}"
        )
    return tensor


# --------------------------------------------------------------------------- distribution


def replica_context() -> tuple[int, Any]:
    """``(num_replicas, all_reduce_sum)`` of the current tf.distribute replica context.

    ``(1, None)`` on other backends, outside a strategy and in cross-replica context. Imports
    TensorFlow only when Keras already runs on it (as Keras' own losses do).
    """
    if keras.backend.backend() != "tensorflow":
        return 1, None
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return 1, None
    return ctx.num_replicas_in_sync, lambda x: ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


# --------------------------------------------------------------------------- the Loss classes


class MaskedLoss(keras.losses.Loss):
    """What the labelfix ``Loss`` classes share: ``ignore``, the labelfix reduction names,
    labels passed to the function untouched (the Keras base class would cast them to float),
    no ``sample_weight``, and a ``get_config`` that round-trips ``dtype``.

    ``dtype`` is kept for Keras' API and serialisation; the losses compute in float32 and return
    float32 whatever it says (mixed precision needs exactly that).
    """

    #: The pure loss function (a staticmethod) and the names of the options an instance holds:
    #: ``call`` passes them to the function and ``get_config`` records them.
    function: Any = None
    options: tuple[str, ...] = ()

    def __init__(self, *, ignore: int, reduction: str | None, name: str, dtype: Any = None):
        if reduction is not None:
            check_reduction(reduction)
        # The base class reduces nothing: the function already returns the final value.
        super().__init__(name=name, reduction="none", dtype=dtype)
        self.ignore = int(ignore)
        self.labelfix_reduction = reduction

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} does not take sample_weight; use per-class weights, "
                "or ignore pixels through the labels"
            )
        with keras.name_scope(self.name):
            return self.call(y_true, y_pred)

    def option_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.options}

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return self.call_pixelwise(
            type(self).function, y_true, y_pred, ignore=self.ignore, **self.option_values()
        )

    def call_pixelwise(self, function: Any, y_true: Any, y_pred: Any, **kwargs: Any) -> Any:
        """``function(y_true, y_pred, ...)``; under a tf.distribute strategy with more than one
        replica, ``valid_mean`` all-reduces the valid-pixel count, so each replica returns
        ``local_sum / global_count``: the value Keras' trainer expects from a loss (already
        scaled for distribution, gradients summed over replicas)."""
        num_replicas, all_reduce_sum = replica_context()
        if num_replicas > 1 and self.labelfix_reduction == "valid_mean":
            count = all_reduce_sum(valid_count(y_true, ignore=self.ignore))
            return function(y_true, y_pred, global_valid_count=count, **kwargs)
        return function(y_true, y_pred, reduction=self.labelfix_reduction, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = {
            "name": self.name,
            "dtype": keras.dtype_policies.serialize(self._dtype_policy),
            "ignore": self.ignore,
        }
        if self.labelfix_reduction is not None:
            config["reduction"] = self.labelfix_reduction
        return {**config, **self.option_values()}
