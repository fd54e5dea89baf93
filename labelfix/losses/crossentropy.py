"""The ignore-aware sparse categorical cross-entropy (``docs/losses.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from labelfix.labels import IGNORE_AS
from labelfix.losses._common import (
    Labels,
    MaskedLoss,
    check_reduction,
    class_last,
    per_class,
    prepare_labels,
    reduce_pixels,
)


def masked_sparse_categorical_crossentropy(
    labels: Any,
    logits: Any,
    *,
    ignore: int = IGNORE_AS,
    from_logits: bool = True,
    axis: int = -1,
    class_weights: Sequence[float] | Any | None = None,
    reduction: str = "valid_mean",
    label_smoothing: float = 0.0,
    global_valid_count: Any | None = None,
) -> Any:
    """Sparse categorical cross-entropy that skips pixels labelled ``ignore``.

    Args:
        labels: integer class ids, ``[B, H, W]`` or ``[B, H, W, 1]``: the logits' shape without
            the class axis (another shape is a ``ValueError`` naming both). Any integer dtype
            that can hold ``ignore``; float labels are a ``TypeError``. A value that is neither
            ``0..C-1`` nor ``ignore`` is a ``ValueError`` in eager code and makes the loss NaN
            in compiled code: see "Labels that are neither a class nor void" in
            :mod:`labelfix.losses`.
        logits: ``[B, H, W, C]`` scores (any float dtype; computed in float32). Probabilities
            when ``from_logits=False``.
        ignore: the void value. One that the label dtype cannot hold (-1 with uint8) is a
            ``ValueError``.
        axis: the class axis of ``logits``.
        class_weights: ``C`` per-class weights; each valid pixel's loss is multiplied by
            ``class_weights[label]``. The ``valid_mean`` denominator stays the number of valid
            pixels (the TF/Keras convention). PyTorch's ``CrossEntropyLoss(weight=...)``
            divides by the sum of the weights instead: use ``reduction="sum"`` and divide by
            ``sum(class_weights[label])`` over valid pixels yourself if you need it.
        reduction: ``"valid_mean"`` (sum over valid pixels / their number), ``"per_image_mean"``
            (mean, over images with at least one valid pixel, of each image's valid mean),
            ``"sum"``, or ``"none"`` (``[B, H, W]`` float32 map, zeros at ignored pixels).
        label_smoothing: ``eps`` in ``[0, 1]``: the target becomes ``(1 - eps) one_hot + eps / C``.
        global_valid_count: distributed training only (``valid_mean``): the number of valid
            pixels summed over all replicas. Each replica then returns
            ``local_sum / global_valid_count``, so the *sum* of the replicas' gradients equals
            the single-device gradient (the mean of per-replica means does not, whenever replicas
            hold different numbers of valid pixels).

    Returns:
        A float32 scalar (``[B, H, W]`` map for ``"none"``); exactly 0.0, with zero gradients,
        when no pixel is valid.

    Example (the hand-checkable case of ``docs/losses.md``, 1.5 ln 2):

    >>> import numpy as np
    >>> logits = np.tile(np.float32([np.log(2), 0, 0]), (1, 1, 4, 1))
    >>> labels = np.array([[[0, 1, 255, 255]]], "int32")
    >>> loss = masked_sparse_categorical_crossentropy(labels, logits, ignore=255)
    >>> round(float(loss), 6)
    1.039721
    >>> masked_sparse_categorical_crossentropy(labels, logits)  # 255 is no class of 3
    Traceback (most recent call last):
    ...
    ValueError: labels: value 255 is not a class id (expected 0..2 or ignore -1): 2 px, first at ...
    """
    check_reduction(reduction, global_valid_count)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    labels, logits, num_classes = class_last(labels, logits, ignore=ignore, axis=axis)
    cw = None if class_weights is None else per_class(class_weights, num_classes, "class_weights")

    prepared = prepare_labels(labels, num_classes, ignore)
    x = ops.cast(logits, "float32")  # float32 compute under mixed precision (fused by XLA)
    if from_logits:
        per_pixel = _cross_entropy_from_logits(x, prepared, label_smoothing)
    else:
        per_pixel = _cross_entropy_from_probs(x, prepared, label_smoothing)
    if cw is not None:
        per_pixel = per_pixel * ops.take(cw, prepared.safe)
    return reduce_pixels(per_pixel, prepared.valid, reduction, global_valid_count)


def _cross_entropy_from_logits(x: Any, labels: Labels, label_smoothing: float) -> Any:
    """Per-pixel cross-entropy (the pixel shape), exactly 0 in value and gradient where not
    ``labels.valid``, even when those pixels' logits are inf or NaN, and NaN in both where a
    label is neither void nor a class (``labels.scale``, multiplied in inside the same pass).

    Why a custom gradient rather than ``where(valid, logits, 0)`` before the softmax (which
    ``_cross_entropy_from_probs`` does): the outcome is the same, but that select, broadcast
    along the class axis, stops XLA on CPU from fusing the softmax reductions and made
    forward+backward ~35% slower than Keras' plain loss (benchmarks/bench_loss.py). Here the
    forward masks the per-pixel loss with one NaN-safe ``where`` and the backward is written
    out as ``where(valid, g * (softmax - q), 0)``, so nothing computed from an ignored pixel's
    logits reaches the loss or the gradient. The label's logit is gathered (one value per pixel)
    instead of a one-hot reduction over the classes; as the gradient is explicit, the gather's
    own gradient (a scatter) is never built. Pixels are flattened to ``[N, C]``, the layout XLA's
    CPU reductions handle best. Together: ~5 passes over the logits-sized tensors, as few as
    Keras' fused plain loss needs.
    """
    shape = ops.shape(labels.safe)
    num_classes = x.shape[-1]
    x = ops.reshape(x, (-1, num_classes))
    scale = ops.reshape(labels.scale, (-1,))
    valid = ops.reshape(labels.valid, (-1,))
    labels = ops.reshape(labels.safe, (-1,))
    on = 1.0 - label_smoothing + label_smoothing / num_classes
    off = label_smoothing / num_classes

    @ops.custom_gradient
    def cross_entropy(x):
        peak = ops.max(x, axis=-1, keepdims=True)
        exp = ops.exp(x - peak)
        sum_exp = ops.sum(exp, axis=-1, keepdims=True)
        # sum_c q_c z_c for q = (1 - eps) one_hot + eps / C, z = x - peak.
        target = ops.take_along_axis(x, ops.expand_dims(labels, -1), axis=-1)
        if off:
            target = (on - off) * target + off * ops.sum(x, axis=-1, keepdims=True)
        loss = ops.log(sum_exp) - (target - peak)
        loss = ops.where(valid, ops.squeeze(loss, -1) * scale, 0.0)

        def grad(*args, upstream=None):  # (upstream) on TF/JAX, upstream= on PyTorch
            if upstream is None:
                (upstream,) = args
            up = ops.expand_dims(upstream * scale, -1)
            is_label = ops.equal(
                ops.expand_dims(labels, -1), ops.arange(num_classes, dtype="int32")
            )
            target_grad = ops.where(is_label, on * up, off * up)
            # where(valid, g * (softmax - q), 0), the per-pixel division hoisted.
            return ops.where(ops.expand_dims(valid, -1), exp * (up / sum_exp) - target_grad, 0.0)

        return loss, grad

    return ops.reshape(cross_entropy(x), shape)


def _cross_entropy_from_probs(p: Any, labels: Labels, label_smoothing: float) -> Any:
    """Per-pixel cross-entropy of probabilities, as Keras computes it (renormalise, clip, log).

    Ignored pixels' probabilities are replaced by 1 before anything else (the plain sanitising
    ``where``), so plain autodiff gives them zero loss and zero gradient. ``labels.scale``
    makes loss and gradient NaN at invalid labels.
    """
    valid, scale, labels = labels.valid, labels.scale, labels.safe
    num_classes = p.shape[-1]
    p = ops.where(ops.expand_dims(valid, -1), p, 1.0)
    p = p / ops.sum(p, axis=-1, keepdims=True)
    eps = keras.backend.epsilon()
    log_p = ops.log(ops.clip(p, eps, 1.0 - eps))
    on = 1.0 - label_smoothing + label_smoothing / num_classes
    off = label_smoothing / num_classes
    is_label = ops.equal(ops.expand_dims(labels, -1), ops.arange(num_classes, dtype="int32"))
    loss = -ops.sum(ops.where(is_label, on, off) * log_p, axis=-1)
    return ops.where(valid, loss * scale, 0.0)


@keras.saving.register_keras_serializable(package="labelfix")
class MaskedSparseCategoricalCrossentropy(MaskedLoss):
    """``keras.losses.Loss`` around :func:`masked_sparse_categorical_crossentropy`.

    Same arguments (``reduction`` uses the labelfix names: ``"valid_mean"``,
    ``"per_image_mean"``, ``"sum"``, ``"none"``). Labels are passed to the function untouched
    (the Keras base class would cast them to float). ``sample_weight`` is not supported: use
    ``class_weights``.

    Under a ``tf.distribute`` strategy with more than one replica (TensorFlow backend, replica
    context, e.g. inside ``model.fit``), ``valid_mean`` all-reduces the valid-pixel count so each
    replica returns ``local_sum / global_count``: the value Keras' trainer expects from a loss
    (already scaled for distribution, gradients summed over replicas).

    >>> import numpy as np
    >>> loss = MaskedSparseCategoricalCrossentropy(ignore=255)
    >>> logits = np.tile(np.float32([np.log(2), 0, 0]), (1, 1, 4, 1))
    >>> round(float(loss(np.array([[[0, 1, 255, 255]]], "int32"), logits)), 6)
    1.039721
    """

    function = staticmethod(masked_sparse_categorical_crossentropy)
    options = ("from_logits", "axis", "class_weights", "label_smoothing")

    def __init__(
        self,
        *,
        ignore: int = IGNORE_AS,
        from_logits: bool = True,
        axis: int = -1,
        class_weights: Sequence[float] | None = None,
        reduction: str = "valid_mean",
        label_smoothing: float = 0.0,
        name: str = "masked_sparse_categorical_crossentropy",
        dtype: Any = None,
    ):
        super().__init__(ignore=ignore, reduction=reduction, name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.axis = int(axis)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.label_smoothing = float(label_smoothing)
