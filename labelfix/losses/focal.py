"""The ignore-aware sparse categorical focal loss (``docs/losses.md``, "The family")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from labelfix.labels import IGNORE_AS
from labelfix.losses import _common


def masked_sparse_categorical_focal_crossentropy(
    labels: Any,
    logits: Any,
    *,
    ignore: int = IGNORE_AS,
    from_logits: bool = True,
    axis: int = -1,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
    reduction: str = "valid_mean",
    global_valid_count: Any | None = None,
) -> Any:
    """Focal loss (Lin et al. 2017) over integer labels that skips pixels labelled ``ignore``.

    Per valid pixel ``-alpha[label] * (1 - p_t)**gamma * log(p_t)``, ``p_t`` the softmax
    probability of the label, reduced like :func:`masked_sparse_categorical_crossentropy` (same
    ``labels``, ``logits``, ``ignore``, ``axis``, ``reduction`` and ``global_valid_count``, and
    the same void guarantees: zero loss and gradient at void pixels whatever their logits, 0.0
    without a valid pixel, float32 compute). ``gamma=0`` and ``alpha=None`` give exactly the
    cross-entropy.

    Args:
        gamma: the focusing exponent, ``>= 0``.
        alpha: ``None`` (weight 1), one weight for every class (Keras'
            ``CategoricalFocalCrossentropy(alpha=...)``), or ``C`` per-class weights. Like
            ``class_weights`` it does not change the ``valid_mean`` denominator.

    >>> import numpy as np
    >>> logits = np.tile(np.float32([np.log(2), 0, 0]), (1, 1, 4, 1))
    >>> labels = np.array([[[0, 1, 255, 255]]], "int32")
    >>> f = masked_sparse_categorical_focal_crossentropy
    >>> round(float(f(labels, logits, ignore=255)), 6)  # (0.25 ln 2 + 0.5625 ln 4) / 2
    0.476539
    >>> round(float(f(labels, logits, ignore=255, gamma=0.0)), 6)  # the cross-entropy
    1.039721
    """
    _common.check_reduction(reduction, global_valid_count)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    labels, logits, num_classes = _common.class_last(labels, logits, ignore=ignore, axis=axis)
    weights = None if alpha is None else _common.per_class(alpha, num_classes, "alpha")

    prepared = _common.prepare_labels(labels, num_classes, ignore)
    x = ops.cast(logits, "float32")
    focal = _focal_from_logits if from_logits else _focal_from_probs
    per_pixel = focal(x, prepared, float(gamma))
    if weights is not None:
        per_pixel = per_pixel * ops.take(weights, prepared.safe)
    return _common.reduce_pixels(per_pixel, prepared.valid, reduction, global_valid_count)


def _focal_from_logits(x: Any, labels: _common.Labels, gamma: float) -> Any:
    """Per-pixel focal loss with the gradient written out, as the cross-entropy's.

    With ``l = log p_t`` and ``m = 1 - p_t``: ``f = -m**gamma * l`` and
    ``df/dl = m**gamma * (gamma * p_t * l / m - 1)``, ``dl/dx = one_hot - softmax``. ``l / m``
    tends to -1 as ``m`` goes to 0 (``m = -expm1(l)`` keeps it exact), so no ``0 * inf``
    appears for any ``gamma >= 0``. Void pixels: zero loss and gradient, whatever their logits;
    invalid labels: NaN in both (``labels.scale``).
    """
    shape = ops.shape(labels.safe)
    num_classes = x.shape[-1]
    x = ops.reshape(x, (-1, num_classes))
    scale = ops.reshape(labels.scale, (-1,))
    valid = ops.reshape(labels.valid, (-1,))
    labels = ops.reshape(labels.safe, (-1,))

    @ops.custom_gradient
    def focal(x):
        peak = ops.max(x, axis=-1, keepdims=True)
        exp = ops.exp(x - peak)
        sum_exp = ops.sum(exp, axis=-1, keepdims=True)
        target = ops.take_along_axis(x, ops.expand_dims(labels, -1), axis=-1)
        # log p_t, clamped to <= 0 against rounding (a negative 1 - p_t would make pow NaN).
        log_p = ops.minimum(ops.squeeze(target - peak - ops.log(sum_exp), -1), 0.0)
        m = -ops.expm1(log_p)  # 1 - p_t
        modulation = ops.power(m, gamma) if gamma else ops.ones_like(m)
        loss = ops.where(valid, -modulation * log_p * scale, 0.0)

        def grad(*args, upstream=None):  # (upstream) on TF/JAX, upstream= on PyTorch
            if upstream is None:
                (upstream,) = args
            positive = m > 0
            ratio = ops.where(positive, log_p / ops.where(positive, m, 1.0), -1.0)
            d_log_p = modulation * (gamma * (1.0 - m) * ratio - 1.0)
            # g * -df/dl, which multiplies (softmax - one_hot).
            coef = ops.expand_dims(-upstream * scale * d_log_p, -1)
            is_label = ops.equal(
                ops.expand_dims(labels, -1), ops.arange(num_classes, dtype="int32")
            )
            return ops.where(
                ops.expand_dims(valid, -1),
                exp * (coef / sum_exp) - ops.where(is_label, coef, 0.0),
                0.0,
            )

        return loss, grad

    return ops.reshape(focal(x), shape)


def _focal_from_probs(p: Any, labels: _common.Labels, gamma: float) -> Any:
    """Per-pixel focal loss of probabilities as Keras computes it (renormalise, clip), void
    pixels' probabilities replaced by 1 first so autodiff gives them zero gradient."""
    valid, scale, labels = labels.valid, labels.scale, labels.safe
    num_classes = p.shape[-1]
    p = ops.where(ops.expand_dims(valid, -1), p, 1.0)
    p = p / ops.sum(p, axis=-1, keepdims=True)
    eps = keras.backend.epsilon()
    p = ops.clip(p, eps, 1.0 - eps)
    is_label = ops.equal(ops.expand_dims(labels, -1), ops.arange(num_classes, dtype="int32"))
    p_t = ops.sum(ops.where(is_label, p, 0.0), axis=-1)
    loss = -ops.power(1.0 - p_t, gamma) * ops.log(p_t)
    return ops.where(valid, loss * scale, 0.0)


@keras.saving.register_keras_serializable(package="labelfix")
class MaskedSparseCategoricalFocalCrossentropy(_common.MaskedLoss):
    """``keras.losses.Loss`` around :func:`masked_sparse_categorical_focal_crossentropy`.

    Same arguments; distributed like :class:`MaskedSparseCategoricalCrossentropy` (global
    valid-pixel count under a tf.distribute strategy).

    >>> import numpy as np
    >>> x = np.tile(np.float32([np.log(2), 0, 0]), (1, 1, 4, 1))
    >>> y = np.array([[[0, 1, 255, 255]]], "int32")
    >>> [round(float(MaskedSparseCategoricalFocalCrossentropy(ignore=255, gamma=g)(y, x)), 6)
    ...  for g in (2.0, 0.0)]  # gamma 0 is the cross-entropy
    [0.476539, 1.039721]
    """

    function = staticmethod(masked_sparse_categorical_focal_crossentropy)
    options = ("from_logits", "axis", "gamma", "alpha")

    def __init__(
        self,
        *,
        ignore: int = IGNORE_AS,
        from_logits: bool = True,
        axis: int = -1,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        reduction: str = "valid_mean",
        name: str = "masked_sparse_categorical_focal_crossentropy",
        dtype: Any = None,
    ):
        super().__init__(ignore=ignore, reduction=reduction, name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.axis = int(axis)
        self.gamma = float(gamma)
        if alpha is None or isinstance(alpha, (int, float)):
            self.alpha = None if alpha is None else float(alpha)
        else:
            self.alpha = [float(a) for a in alpha]
