"""An ignore-aware sparse categorical cross-entropy for segmentation (see SPEC-loss.md).

A pure function first, then a thin ``keras.losses.Loss`` around it. Written in ``keras.ops`` only,
so it runs on the TensorFlow, JAX and PyTorch backends of Keras 3 and under XLA; this module never
imports TensorFlow at import time.

Semantics in one paragraph: ``valid = labels != ignore``. Ignored pixels get label 0, their
per-pixel loss is selected away with one ``where`` and the backward pass is written out as
``where(valid, g * (softmax - target), 0)``, so they add exactly zero loss and zero gradient even
when their logits are inf or NaN (nothing computed from them reaches either). The default
reduction divides the sum over valid pixels by the number of valid pixels in the batch (or, in
distributed training, in the *global* batch). A batch without a valid pixel has loss 0.0 and
zero gradients, never NaN. Computation is float32 whatever the logits dtype. No boolean gathers,
no data-dependent shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = [
    "REDUCTIONS",
    "MaskedSparseCategoricalCrossentropy",
    "masked_sparse_categorical_crossentropy",
    "valid_count",
]

REDUCTIONS = ("valid_mean", "per_image_mean", "sum", "none")

_INT_DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")


def _check_labels(labels: Any, ignore: int) -> Any:
    """Return ``labels`` as a tensor after the dtype checks of spec point 1."""
    if not hasattr(labels, "dtype"):
        labels = np.asarray(labels)
    dtype = keras.backend.standardize_dtype(labels.dtype)
    if dtype not in _INT_DTYPES:
        raise TypeError(
            f"labels must be integers (class ids), got dtype {dtype}; cast masks with "
            "ops.cast(mask, 'int32') after checking they hold whole numbers"
        )
    if isinstance(ignore, bool) or not isinstance(ignore, (int, np.integer)):
        raise TypeError(f"ignore must be an int, got {ignore!r}")
    info = np.iinfo(dtype)
    if not info.min <= int(ignore) <= info.max:
        raise ValueError(
            f"ignore={ignore} cannot occur in {dtype} labels (range {info.min}..{info.max}), so "
            f"no pixel would be ignored and e.g. 255 would train as a class; pass the value the "
            f"masks actually use (ignore={info.max}?) or signed labels"
        )
    return labels


def valid_count(labels: Any, *, ignore: int = -1) -> Any:
    """Number of pixels whose label is not ``ignore``, as a float32 scalar.

    In distributed training, sum this over replicas and pass it as ``global_valid_count``.

    >>> import numpy as np
    >>> float(valid_count(np.array([[0, 1, -1, -1]], "int32")))
    2.0
    """
    labels = _check_labels(labels, ignore)
    return ops.sum(ops.cast(ops.not_equal(labels, ignore), "float32"))


def masked_sparse_categorical_crossentropy(
    labels: Any,
    logits: Any,
    *,
    ignore: int = -1,
    from_logits: bool = True,
    axis: int = -1,
    class_weights: Sequence[float] | Any | None = None,
    reduction: str = "valid_mean",
    label_smoothing: float = 0.0,
    global_valid_count: Any | None = None,
) -> Any:
    """Sparse categorical cross-entropy that skips pixels labelled ``ignore``.

    Args:
        labels: integer class ids, ``[B, H, W]`` or ``[B, H, W, 1]`` (any integer dtype that can
            hold ``ignore``; float labels are a ``TypeError``). Ids must be ``0..C-1`` or
            ``ignore``: validate masks first (``labelfix validate``). Another id is an error in
            eager TensorFlow and undefined under XLA (the gather clamps).
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

    Example (the spec's hand-checkable case, 1.5 ln 2):

    >>> import numpy as np
    >>> logits = np.tile(np.float32([np.log(2), 0, 0]), (1, 1, 4, 1))
    >>> labels = np.array([[[0, 1, 255, 255]]], "int32")
    >>> loss = masked_sparse_categorical_crossentropy(labels, logits, ignore=255)
    >>> round(float(loss), 6)
    1.039721
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if global_valid_count is not None and reduction != "valid_mean":
        raise ValueError(f"global_valid_count needs reduction='valid_mean', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    labels = _check_labels(labels, ignore)

    logits = ops.convert_to_tensor(logits)
    rank = len(logits.shape)
    axis = axis % rank
    if axis != rank - 1:  # channels_first: move classes last (one transpose, fused by XLA)
        logits = ops.moveaxis(logits, axis, -1)
    if len(labels.shape) == rank:
        labels = ops.squeeze(labels, axis=-1)
    num_classes = logits.shape[-1]
    if num_classes is None:
        raise ValueError("the class axis of logits must have a static size")

    if class_weights is not None:
        cw = ops.convert_to_tensor(class_weights, dtype="float32")
        if tuple(cw.shape) != (num_classes,):
            raise ValueError(
                f"class_weights must have one weight per class ({num_classes}), got shape "
                f"{tuple(cw.shape)}"
            )

    valid = ops.not_equal(labels, ignore)
    safe_labels = ops.where(valid, ops.cast(labels, "int32"), 0)
    x = ops.cast(logits, "float32")  # float32 compute under mixed precision (fused by XLA)
    if from_logits:
        per_pixel = _cross_entropy_from_logits(x, safe_labels, valid, label_smoothing)
    else:
        per_pixel = _cross_entropy_from_probs(x, safe_labels, valid, label_smoothing)

    if class_weights is not None:
        per_pixel = per_pixel * ops.take(cw, safe_labels)

    if reduction == "none":
        return per_pixel
    if reduction == "sum":
        return ops.sum(per_pixel)
    if reduction == "valid_mean":
        if global_valid_count is None:
            count = ops.sum(ops.cast(valid, "float32"))
        else:
            count = ops.cast(global_valid_count, "float32")
        # max(count, 1): an all-void batch gives 0 / 1 = 0 (and zero gradients), never 0 / 0.
        return ops.sum(per_pixel) / ops.maximum(count, 1.0)
    # per_image_mean
    batch = ops.shape(per_pixel)[0]
    image_sum = ops.sum(ops.reshape(per_pixel, (batch, -1)), axis=1)
    image_count = ops.sum(ops.reshape(ops.cast(valid, "float32"), (batch, -1)), axis=1)
    image_mean = image_sum / ops.maximum(image_count, 1.0)
    images_with_valid = ops.sum(ops.cast(image_count > 0, "float32"))
    return ops.sum(image_mean) / ops.maximum(images_with_valid, 1.0)


def _cross_entropy_from_logits(x: Any, labels: Any, valid: Any, label_smoothing: float) -> Any:
    """Per-pixel cross-entropy (shape of ``labels``), exactly 0 in value and gradient where not
    ``valid``, even when those pixels' logits are inf or NaN.

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
    shape = ops.shape(labels)
    num_classes = x.shape[-1]
    x = ops.reshape(x, (-1, num_classes))
    labels = ops.reshape(labels, (-1,))
    valid = ops.reshape(valid, (-1,))
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
        loss = ops.where(valid, ops.squeeze(loss, -1), 0.0)

        def grad(*args, upstream=None):  # (upstream) on TF/JAX, upstream= on PyTorch
            if upstream is None:
                (upstream,) = args
            up = ops.expand_dims(upstream, -1)
            is_label = ops.equal(
                ops.expand_dims(labels, -1), ops.arange(num_classes, dtype="int32")
            )
            target_grad = ops.where(is_label, on * up, off * up)
            # where(valid, g * (softmax - q), 0), the per-pixel division hoisted.
            return ops.where(ops.expand_dims(valid, -1), exp * (up / sum_exp) - target_grad, 0.0)

        return loss, grad

    return ops.reshape(cross_entropy(x), shape)


def _cross_entropy_from_probs(p: Any, labels: Any, valid: Any, label_smoothing: float) -> Any:
    """Per-pixel cross-entropy of probabilities, as Keras computes it (renormalise, clip, log).

    Ignored pixels' probabilities are replaced by 1 before anything else (the plain sanitising
    ``where``), so plain autodiff gives them zero loss and zero gradient.
    """
    num_classes = p.shape[-1]
    p = ops.where(ops.expand_dims(valid, -1), p, 1.0)
    p = p / ops.sum(p, axis=-1, keepdims=True)
    eps = keras.backend.epsilon()
    log_p = ops.log(ops.clip(p, eps, 1.0 - eps))
    on = 1.0 - label_smoothing + label_smoothing / num_classes
    off = label_smoothing / num_classes
    is_label = ops.equal(ops.expand_dims(labels, -1), ops.arange(num_classes, dtype="int32"))
    loss = -ops.sum(ops.where(is_label, on, off) * log_p, axis=-1)
    return ops.where(valid, loss, 0.0)


@keras.saving.register_keras_serializable(package="labelfix")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
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

    def __init__(
        self,
        *,
        ignore: int = -1,
        from_logits: bool = True,
        axis: int = -1,
        class_weights: Sequence[float] | None = None,
        reduction: str = "valid_mean",
        label_smoothing: float = 0.0,
        name: str = "masked_sparse_categorical_crossentropy",
        dtype: Any = None,
    ):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        # The base class reduces nothing: the function already returns the final value.
        super().__init__(name=name, reduction="none", dtype=dtype)
        self.ignore = int(ignore)
        self.from_logits = bool(from_logits)
        self.axis = int(axis)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.labelfix_reduction = reduction
        self.label_smoothing = float(label_smoothing)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if sample_weight is not None:
            raise ValueError(
                "MaskedSparseCategoricalCrossentropy does not take sample_weight; "
                "use class_weights, or ignore pixels through the labels"
            )
        with keras.name_scope(self.name):
            return self.call(y_true, y_pred)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        kwargs = {
            "ignore": self.ignore,
            "from_logits": self.from_logits,
            "axis": self.axis,
            "class_weights": self.class_weights,
            "label_smoothing": self.label_smoothing,
        }
        num_replicas, all_reduce_sum = _replica_context()
        if num_replicas > 1 and self.labelfix_reduction == "valid_mean":
            count = all_reduce_sum(valid_count(y_true, ignore=self.ignore))
            return masked_sparse_categorical_crossentropy(
                y_true, y_pred, global_valid_count=count, **kwargs
            )
        return masked_sparse_categorical_crossentropy(
            y_true, y_pred, reduction=self.labelfix_reduction, **kwargs
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ignore": self.ignore,
            "from_logits": self.from_logits,
            "axis": self.axis,
            "class_weights": self.class_weights,
            "reduction": self.labelfix_reduction,
            "label_smoothing": self.label_smoothing,
        }


def _replica_context():
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
