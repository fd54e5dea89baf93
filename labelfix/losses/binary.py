"""The ignore-aware binary (sigmoid) cross-entropy (``docs/losses.md``, "The family")."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from labelfix.labels import IGNORE_AS
from labelfix.losses._common import (
    MaskedLoss,
    check_labels,
    check_reduction,
    prepare_labels,
    raise_on_invalid_labels,
    reduce_pixels,
)


def masked_binary_crossentropy(
    labels: Any,
    logits: Any,
    *,
    ignore: int = IGNORE_AS,
    from_logits: bool = True,
    pos_weight: float | None = None,
    reduction: str = "valid_mean",
    global_valid_count: Any | None = None,
) -> Any:
    """Sigmoid cross-entropy over labels in {0, 1} that skips pixels labelled ``ignore``.

    Per valid pixel ``softplus(x) - y * x`` from logits ``x`` (``-y log p - (1 - y) log(1 - p)``
    from probabilities, clipped as Keras does), with ``pos_weight`` multiplying the ``y = 1``
    term (``tf.nn.weighted_cross_entropy_with_logits``' convention). Reduced like
    :func:`masked_sparse_categorical_crossentropy`, with the same void guarantees.

    Args:
        labels: integers in {0, 1} or ``ignore``, the logits' shape, or the logits' shape with
            (or without) a trailing axis of size 1. Another value is a ``ValueError`` in eager
            code and NaN in compiled code (see :mod:`labelfix.losses`).
        logits: ``[B, H, W]`` or ``[B, H, W, 1]`` scores (probabilities when
            ``from_logits=False``); computed in float32.
        pos_weight: weight of the positive (``y = 1``) term; ``None`` is 1. It does not change
            the ``valid_mean`` denominator.
        reduction, global_valid_count: as for the cross-entropy (``"none"`` returns the map in
            the shape the labels and logits share).

    The seed's example: the pixel labelled -1 is void; Keras' ``BinaryCrossentropy`` on all
    five pixels gives 0.4720796 instead.

    >>> import numpy as np
    >>> labels = np.array([[0, 0, 0, 1, -1]], "int32")
    >>> logits = np.array([[-0.5, -0.6, -0.9, 1.2, 0.1]], "float32")
    >>> round(float(masked_binary_crossentropy(labels, logits)), 7)
    0.3790003
    """
    check_reduction(reduction, global_valid_count)
    labels = check_labels(labels, ignore)
    logits = ops.convert_to_tensor(logits)
    labels, logits = _align(labels, logits)
    raise_on_invalid_labels(labels, num_classes=2, ignore=ignore)

    prepared = prepare_labels(labels, 2, ignore)
    valid = prepared.valid
    y = ops.cast(prepared.safe, "float32")
    weight = 1.0 if pos_weight is None else float(pos_weight)
    if from_logits:
        per_pixel = _binary_from_logits(
            ops.cast(logits, "float32"), y, valid, prepared.scale, weight
        )
    else:
        # Void pixels' probabilities replaced before anything is computed from them: zero loss
        # and zero gradient (the where's gradient is exactly 0 there), even for inf or NaN.
        eps = keras.backend.epsilon()
        p = ops.clip(ops.where(valid, ops.cast(logits, "float32"), 0.5), eps, 1.0 - eps)
        per_pixel = -(weight * y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p))
        # NaN loss and gradient at labels other than 0, 1 and ignore (compiled code).
        per_pixel = ops.where(valid, per_pixel * prepared.scale, 0.0)
    return reduce_pixels(per_pixel, valid, reduction, global_valid_count)


def _binary_from_logits(x: Any, y: Any, valid: Any, scale: Any, weight: float) -> Any:
    """Per-pixel ``(1 - y) softplus(x) + w y softplus(-x)``, 0 in value and gradient where not
    ``valid`` whatever ``x`` is there; the gradient ``(1 - y) sigmoid(x) - w y sigmoid(-x)`` is
    written out (as for the cross-entropy), so nothing of a void pixel's logit reaches it.
    ``scale`` (:class:`~labelfix.losses._common.Labels`) multiplies both, inside the one
    elementwise pass (outside, it made XLA:CPU materialise one more pixel-sized tensor)."""

    @ops.custom_gradient
    def binary(x):
        e = ops.exp(-ops.abs(x))  # stable softplus and sigmoid from one exp
        softplus = ops.relu(x) + ops.log1p(e)
        loss = (1.0 - y) * softplus + weight * y * (softplus - x)
        loss = ops.where(valid, loss * scale, 0.0)

        def grad(*args, upstream=None):  # (upstream) on TF/JAX, upstream= on PyTorch
            if upstream is None:
                (upstream,) = args
            sigmoid = ops.where(x >= 0, 1.0, e) / (1.0 + e)
            d = (1.0 - y) * sigmoid - weight * y * (1.0 - sigmoid)
            return ops.where(valid, upstream * d * scale, 0.0)

        return loss, grad

    return binary(x)


def _align(labels: Any, logits: Any) -> tuple[Any, Any]:
    """Labels and logits in one shape: a trailing axis of size 1 on either side is squeezed."""
    lshape, xshape = tuple(labels.shape), tuple(logits.shape)
    if len(lshape) == len(xshape) - 1 and xshape[-1] in (1, None):
        logits = ops.squeeze(logits, axis=-1)
    elif len(lshape) == len(xshape) + 1 and lshape[-1] in (1, None):
        labels = ops.squeeze(labels, axis=-1)
    a, b = tuple(labels.shape), tuple(logits.shape)
    if len(a) != len(b) or any(
        i is not None and j is not None and i != j for i, j in zip(a, b, strict=True)
    ):
        raise ValueError(
            f"labels of shape {lshape} do not match logits of shape {xshape}: expected the same "
            f"shape, one of them with a trailing axis of size 1"
        )
    return labels, logits


@keras.saving.register_keras_serializable(package="labelfix")
class MaskedBinaryCrossentropy(MaskedLoss):
    """``keras.losses.Loss`` around :func:`masked_binary_crossentropy`.

    Same arguments; distributed like :class:`MaskedSparseCategoricalCrossentropy` (global
    valid-pixel count under a tf.distribute strategy).

    >>> import numpy as np
    >>> loss = MaskedBinaryCrossentropy()
    >>> labels = np.array([[0, 0, 0, 1, -1]], "int32")
    >>> round(float(loss(labels, np.float32([[-0.5, -0.6, -0.9, 1.2, 0.1]]))), 7)
    0.3790003
    """

    function = staticmethod(masked_binary_crossentropy)
    options = ("from_logits", "pos_weight")

    def __init__(
        self,
        *,
        ignore: int = IGNORE_AS,
        from_logits: bool = True,
        pos_weight: float | None = None,
        reduction: str = "valid_mean",
        name: str = "masked_binary_crossentropy",
        dtype: Any = None,
    ):
        super().__init__(ignore=ignore, reduction=reduction, name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.pos_weight = None if pos_weight is None else float(pos_weight)
