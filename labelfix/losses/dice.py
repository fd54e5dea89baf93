"""The ignore-aware soft Dice loss (``docs/losses.md``, "The family")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from labelfix.labels import IGNORE_AS
from labelfix.losses._common import (
    MaskedLoss,
    class_last,
    ones_where,
    prepare_labels,
    replica_context,
)

CLASSES = ("present", "all")


def masked_dice_loss(
    labels: Any,
    logits: Any,
    *,
    ignore: int = IGNORE_AS,
    from_logits: bool = True,
    axis: int = -1,
    classes: str = "present",
    smooth: float = 0.0,
    sum_over_replicas: Callable[[Any], Any] | None = None,
    num_replicas: int = 1,
) -> Any:
    """Soft Dice loss over integer labels, pixels labelled ``ignore`` left out of every sum.

    ``p = softmax(logits)``, ``y = one_hot(labels)``, sums over the valid pixels of the whole
    batch: ``D_c = (2 sum p_c y_c + smooth) / (sum p_c + sum y_c + smooth)``; the loss is
    ``1 - mean(D_c)`` over the classes present in the batch's valid labels
    (``classes="present"``) or over all classes (``"all"``). Void pixels add nothing to any sum
    (their ``p`` does not leak into ``sum p_c``) and get zero gradient whatever their logits;
    without a valid pixel the loss is 0.0 with zero gradients. Float32 compute, no boolean
    gathers, static shapes (XLA). Labels and logits as for
    :func:`masked_sparse_categorical_crossentropy`, invalid labels handled alike.

    Dice is not a sum over pixels, so distributed training cannot divide by a global count:
    the per-class sums themselves must be the global batch's. ``sum_over_replicas`` is a
    function that sums a tensor over replicas and whose gradient sums the upstream gradients
    (tf.distribute's ``ReplicaContext.all_reduce(SUM, .)`` is one); each replica then returns
    the global Dice loss / ``num_replicas``, so the replicas' losses and summed gradients equal
    the single-device ones. :class:`MaskedDiceLoss` does this by itself inside a tf.distribute
    replica context.

    Args:
        classes: ``"present"`` or ``"all"``.
        smooth: added to numerator and denominator of every ``D_c``.

    The case of ``docs/losses.md``: class 0 scores D = 0.5, class 1 D = 1/3, class 2 is absent.

    >>> import numpy as np
    >>> logits = np.tile(np.float32([np.log(2), 0, 0]), (1, 1, 4, 1))
    >>> labels = np.array([[[0, 1, 255, 255]]], "int32")
    >>> round(float(masked_dice_loss(labels, logits, ignore=255)), 7)  # 1 - (0.5 + 1/3) / 2
    0.5833333
    >>> round(float(masked_dice_loss(labels, logits, ignore=255, classes="all")), 7)
    0.7222222
    """
    if classes not in CLASSES:
        raise ValueError(f"classes must be one of {CLASSES}, got {classes!r}")
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    labels, logits, num_classes = class_last(labels, logits, ignore=ignore, axis=axis)

    prepared = prepare_labels(labels, num_classes, ignore)
    use = ops.reshape(prepared.valid, (-1,))
    safe_labels = ops.reshape(prepared.safe, (-1,))
    scale = ops.reshape(prepared.scale, (-1,))
    x = ops.reshape(ops.cast(logits, "float32"), (-1, num_classes))
    if from_logits:
        sums = _dice_sums_from_logits(x, safe_labels, use, scale)
    else:
        sums = _dice_sums(x, safe_labels, use, scale)
    if sum_over_replicas is not None:
        sums = sum_over_replicas(sums)
    intersection, predicted, counted = sums[0], sums[1], sums[2]

    denominator = predicted + counted + smooth
    # 0 / 0 (a class neither labelled nor predicted, smooth 0) counts as D = 0; NaN stays NaN.
    empty = ops.equal(denominator, 0.0)
    dice = ops.where(empty, 0.0, (2.0 * intersection + smooth) / ops.where(empty, 1.0, denominator))
    weight = ops.cast(counted > 0, "float32") if classes == "present" else ops.ones_like(dice)
    mean = ops.sum(weight * dice) / ops.maximum(ops.sum(weight), 1.0)
    return ops.where(ops.sum(counted) > 0, 1.0 - mean, 0.0) / float(num_replicas)


_BINS = 1024  # per-class partial sums: each accumulates ~N / (1024 C) values (float32 accuracy)


def _binned_class_sums(values: Any, labels: Any, num_classes: int) -> Any:
    """``[C]``: the sum of ``values`` (``[N]``) over the pixels of each class.

    One scatter-add over ``N`` values instead of a ``[N, C]`` one-hot product. Pixel ``i`` goes
    to bin ``(i mod 1024, label)`` and the bins are summed afterwards: a scatter-add
    accumulates sequentially, and 1024 partial sums per class keep float32 exact enough for
    megapixel batches (one accumulator per class drifts by ~1e-4).
    """
    n = ops.shape(labels)[0]
    segment = (ops.arange(n, dtype="int32") % _BINS) * num_classes + labels
    bins = ops.segment_sum(values, segment, num_segments=_BINS * num_classes)
    return ops.sum(ops.reshape(bins, (_BINS, num_classes)), axis=0)


def _dice_sums(p: Any, labels: Any, use: Any, scale: Any) -> Any:
    """``[3, C]``: per class, the sum of ``p`` over the pixels labelled with it, the sum of
    ``p``, and the number of pixels labelled with it, over the ``[N, C]`` pixels where ``use``
    (the others are replaced by a NaN-safe ``where``: zero in every sum, zero gradient).
    ``scale`` (1, or NaN at invalid labels) multiplies ``p``, so such a label makes every sum,
    and the gradient, NaN."""
    num_classes = p.shape[-1]
    p = ops.where(ops.expand_dims(use, -1), p * ops.expand_dims(scale, -1), 0.0)
    p_label = ops.squeeze(ops.take_along_axis(p, ops.expand_dims(labels, -1), axis=-1), -1)
    return ops.stack(
        [
            _binned_class_sums(p_label, labels, num_classes),
            ops.sum(p, axis=0),
            _binned_class_sums(ones_where(use), labels, num_classes),
        ]
    )


def _dice_sums_from_logits(x: Any, labels: Any, use: Any, scale: Any) -> Any:
    """:func:`_dice_sums` of ``softmax(x)``, with the backward written out.

    Forward: ``e = where(use, exp(x - max), 0)``, ``inv = 1 / sum_c e`` (0 at unused pixels),
    ``sum p_c`` as a column sum of ``e * inv``, and the label's probability gathered per pixel
    for the intersections. Backward, for upstream ``(a, b)`` on (intersection, sum p):
    ``d/dx_ij = p_ij (b_j - r_i) + [j == label_i] a_j p_i,label`` with
    ``r_i = p_i . b + a_label p_i,label``. Unused pixels have ``e = 0`` (a NaN-safe
    ``where``) and a ``where`` in the backward: zero loss and gradient, whatever their logits.
    ``scale`` multiplies ``inv`` (NaN sums and gradients at invalid labels). Eleven passes over
    ``[N, C]`` tensors against Keras' cross-entropy's nine (benchmarks/bench_loss.py); keeping
    ``e`` unsanitised to save one measured slower on XLA:CPU.
    """
    num_classes = x.shape[-1]
    rows = ops.expand_dims(use, -1)
    counted = _binned_class_sums(ones_where(use), labels, num_classes)

    @ops.custom_gradient
    def sums(x):
        e = ops.where(rows, ops.exp(x - ops.max(x, axis=-1, keepdims=True)), 0.0)
        inv = ops.where(use, scale / ops.where(use, ops.sum(e, axis=-1), 1.0), 0.0)
        predicted = ops.sum(e * ops.expand_dims(inv, -1), axis=0)
        label_e = ops.take_along_axis(e, ops.expand_dims(labels, -1), axis=-1)
        p_label = ops.squeeze(label_e, -1) * inv
        out = ops.stack([_binned_class_sums(p_label, labels, num_classes), predicted, counted])

        def grad(*args, upstream=None):  # (upstream) on TF/JAX, upstream= on PyTorch
            if upstream is None:
                (upstream,) = args
            a, b = upstream[0], upstream[1]
            a_label = ops.take(a, labels) * p_label
            r = ops.sum(e * b, axis=-1) * inv + a_label
            is_label = ops.equal(
                ops.expand_dims(labels, -1), ops.arange(num_classes, dtype="int32")
            )
            grad_x = e * ops.expand_dims(inv, -1) * (b - ops.expand_dims(r, -1))
            grad_x = grad_x + ops.where(is_label, ops.expand_dims(a_label, -1), 0.0)
            return ops.where(rows, grad_x, 0.0)  # a NaN upstream (invalid labels) stays off void

        return out, grad

    return sums(x)


@keras.saving.register_keras_serializable(package="labelfix")
class MaskedDiceLoss(MaskedLoss):
    """``keras.losses.Loss`` around :func:`masked_dice_loss`.

    Under a ``tf.distribute`` strategy with more than one replica (TensorFlow backend, replica
    context, e.g. inside ``model.fit``) the per-class sums are all-reduced, so the loss is the
    global batch's Dice (not the mean of per-replica Dice values) and the summed replica
    gradients equal the single-device gradient.

    >>> import numpy as np
    >>> loss = MaskedDiceLoss(ignore=255)
    >>> logits = np.tile(np.float32([np.log(2), 0, 0]), (1, 1, 4, 1))
    >>> round(float(loss(np.array([[[0, 1, 255, 255]]], "int32"), logits)), 7)
    0.5833333
    """

    options = ("from_logits", "axis", "classes", "smooth")

    def __init__(
        self,
        *,
        ignore: int = IGNORE_AS,
        from_logits: bool = True,
        axis: int = -1,
        classes: str = "present",
        smooth: float = 0.0,
        name: str = "masked_dice_loss",
        dtype: Any = None,
    ):
        if classes not in CLASSES:
            raise ValueError(f"classes must be one of {CLASSES}, got {classes!r}")
        super().__init__(ignore=ignore, reduction=None, name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.axis = int(axis)
        self.classes = classes
        self.smooth = float(smooth)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        num_replicas, all_reduce_sum = replica_context()
        return masked_dice_loss(
            y_true,
            y_pred,
            ignore=self.ignore,
            from_logits=self.from_logits,
            axis=self.axis,
            classes=self.classes,
            smooth=self.smooth,
            sum_over_replicas=all_reduce_sum,
            num_replicas=num_replicas,
        )
