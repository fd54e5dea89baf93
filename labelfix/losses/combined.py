"""A weighted sum of labelfix losses (e.g. cross-entropy + Dice), each keeping its own void
semantics and distribution rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from labelfix.losses._common import MaskedLoss


@keras.saving.register_keras_serializable(package="labelfix")
class CombinedLoss(keras.losses.Loss):
    """``sum(weight * loss(y_true, y_pred))`` over ``(loss, weight)`` pairs.

    Each part is called as it would be alone, so it keeps its own handling of void pixels,
    invalid labels (a NaN in any part makes the sum NaN) and replicas (the cross-entropy
    all-reduces its valid-pixel count, Dice its per-class sums). Serialises with its parts.

    >>> import numpy as np
    >>> from labelfix.losses import MaskedDiceLoss, MaskedSparseCategoricalCrossentropy
    >>> loss = CombinedLoss([(MaskedSparseCategoricalCrossentropy(ignore=255), 1.0),
    ...                      (MaskedDiceLoss(ignore=255), 0.5)])
    >>> logits = np.tile(np.float32([np.log(2), 0, 0]), (1, 1, 4, 1))
    >>> round(float(loss(np.array([[[0, 1, 255, 255]]], "int32"), logits)), 6)  # 1.5 ln 2 + 7/24
    1.331387
    """

    def __init__(
        self,
        losses: Sequence[tuple[keras.losses.Loss, float]],
        *,
        name: str = "combined_loss",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction="none", dtype=dtype)
        parts = []
        for part in losses:
            loss, weight = (part["loss"], part["weight"]) if isinstance(part, dict) else part
            if isinstance(loss, dict):
                loss = keras.saving.deserialize_keras_object(loss)
            if not isinstance(loss, MaskedLoss):
                raise TypeError(
                    f"CombinedLoss takes labelfix losses (their void handling is what it "
                    f"keeps), got {type(loss).__name__}"
                )
            parts.append((loss, float(weight)))
        if not parts:
            raise ValueError("CombinedLoss needs at least one (loss, weight) pair")
        self.losses = parts

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if sample_weight is not None:
            raise ValueError("CombinedLoss does not take sample_weight")
        with keras.name_scope(self.name):
            return self.call(y_true, y_pred)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        total = None
        for loss, weight in self.losses:
            term = weight * loss(y_true, y_pred)
            total = term if total is None else total + term
        return total

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": keras.dtype_policies.serialize(self._dtype_policy),
            "losses": [
                {"loss": keras.saving.serialize_keras_object(loss), "weight": weight}
                for loss, weight in self.losses
            ],
        }
