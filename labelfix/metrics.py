"""Mean IoU and pixel accuracy with the void value left out.

Two routes, both backend-agnostic (``keras.ops``; this module never imports TensorFlow):

* :class:`MeanIoU` is Keras' own ``keras.metrics.MeanIoU(ignore_class=...)`` with labelfix's
  vocabulary, for ``model.compile(metrics=[...])`` and ``model.evaluate``.
* :func:`confusion_matrix` (one batch, jit-friendly) plus the NumPy helpers :func:`mean_iou`,
  :func:`iou_per_class` and :func:`pixel_accuracy` on a confusion matrix accumulated on the host
  in int64. ``labelfix.train`` uses this route: see the note in :class:`MeanIoU` for why.

>>> import numpy as np
>>> cm = confusion_matrix(np.array([0, 1, 255, 1]), np.array([0, 0, 1, 1]),
...                       num_classes=2, ignore=255)
>>> np.asarray(cm).tolist()
[[1, 0], [1, 1]]
>>> float(mean_iou(cm)), float(pixel_accuracy(cm))
(0.5, 0.6666666666666666)
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from labelfix.checks.tensors import raise_on_invalid_labels
from labelfix.labels import IGNORE_AS

__all__ = ["MeanIoU", "confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy"]


@keras.saving.register_keras_serializable(package="labelfix")
class MeanIoU(keras.metrics.MeanIoU):
    """Mean intersection-over-union over classes, pixels labelled ``ignore`` excluded.

    Keras' ``MeanIoU(ignore_class=ignore)`` with labelfix's argument names: ``from_logits=True``
    takes the argmax of ``y_pred`` (Keras' ``sparse_y_pred=False``). Classes absent from both
    labels and predictions are left out of the mean.

    Why Keras' own metric: for masks that passed ``labelfix validate`` (every value a class id
    or the ignore value) it is right. ``ignore_class`` removes void pixels from the confusion
    matrix (docs/losses.md's case gives 0.5, not 0.3333 as when void is counted), -1 works as
    well as 255, and on TensorFlow (Keras >= 3.8) the matrix is int64, exact for any dataset.

    Labels that are neither a class id nor ``ignore`` (37 with 21 classes, 255 with
    ``ignore=-1``) follow the losses' rule (see :mod:`labelfix.losses`):

    ===========================  ==========================================================
    eager (``update_state`` on   ``ValueError`` naming each value, its pixel count and its
    NumPy / eager tensors)       first index, the losses' message
    compiled (``model.fit``,     those pixels are left out of the matrix (as Keras >= 3.15
    ``evaluate``, ``jax.jit``)   and :func:`confusion_matrix` do), never counted as a
                                 clamped class; the loss of the same batch is NaN, which is
                                 what makes the batch fail visibly
    ===========================  ==========================================================

    Where Keras' metric is not enough, and what labelfix does instead (``labelfix.train``
    accumulates :func:`confusion_matrix` batches in int64 NumPy on the host):

    * older Keras 3 releases crash in the scatter on such ids (3.15 drops them).
    * counts: Keras <= 3.3 keeps the matrix in float32 (increments are lost past 2**24 pixels
      per cell, about eight Cityscapes images of road); on JAX without x64 it is int32 and wraps
      past 2**31 pixels per cell (a Cityscapes epoch has 6e9 pixels).
    * under ``tf.distribute`` its variables are sync-on-read; the reference training step
      rather returns a per-replica confusion matrix from the compiled step and sums those.
      Keras' symbolic build under a strategy passes float labels (the replicas' batches
      averaged): this metric takes them, as Keras' does.

    >>> import numpy as np
    >>> m = MeanIoU(2, ignore=255, from_logits=False)
    >>> _ = m.update_state(np.array([0, 1, 255, 1]), np.array([0, 0, 1, 1]))
    >>> float(m.result())
    0.5
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore: int = IGNORE_AS,
        from_logits: bool = True,
        axis: int = -1,
        name: str = "mean_iou",
        dtype: Any = None,
    ):
        super().__init__(
            num_classes=num_classes,
            name=name,
            dtype=dtype,
            ignore_class=ignore,
            sparse_y_true=True,
            sparse_y_pred=not from_logits,
            axis=axis,
        )
        self.ignore = ignore
        self.from_logits = from_logits

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """Keras' update, after the eager check of labels that are neither class nor void."""
        if hasattr(y_true, "dtype") or isinstance(y_true, (list, tuple)):
            labels = y_true if hasattr(y_true, "dtype") else np.asarray(y_true)
            dtype = keras.backend.standardize_dtype(labels.dtype)
            if "int" in dtype:
                raise_on_invalid_labels(labels, num_classes=self.num_classes, ignore=self.ignore)
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)

    def pixel_accuracy(self) -> Any:
        """Correct valid pixels / valid pixels, from the same confusion matrix (0 if empty)."""
        cm = ops.cast(self.total_cm, "float32")
        return ops.divide_no_nan(ops.trace(cm), ops.sum(cm))

    def get_config(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "ignore": self.ignore,
            "from_logits": self.from_logits,
            "axis": self.axis,
            "name": self.name,
            "dtype": self.dtype,
        }


def confusion_matrix(
    labels: Any, predictions: Any, *, num_classes: int, ignore: int = IGNORE_AS
) -> Any:
    """``[num_classes, num_classes]`` int32 counts (rows: label, columns: prediction), one batch.

    Pixels labelled ``ignore`` are left out, as are labels and predictions outside
    ``0..num_classes-1``: silently, in eager code too, as this is the jit-friendly counting
    helper; the loss of the same batch is what raises or turns NaN (see
    :mod:`labelfix.losses`). ``keras.ops`` only, static shapes: it runs inside
    ``jit_compile=True`` steps (an unsorted segment sum, i.e. an XLA scatter-add).
    Counts are exact up to 2**31 per cell and batch; sum batches in int64 on the host.

    >>> import numpy as np
    >>> np.asarray(confusion_matrix(np.array([[0, -1], [1, 1]]), np.array([[0, 1], [0, 1]]),
    ...                             num_classes=2)).tolist()
    [[1, 0], [1, 1]]
    """
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    predictions = ops.reshape(ops.cast(predictions, "int32"), (-1,))
    keep = (
        ops.not_equal(labels, ignore)
        & (labels >= 0)
        & (labels < num_classes)
        & (predictions >= 0)
        & (predictions < num_classes)
    )
    cells = num_classes * num_classes
    # Dropped pixels go to an extra bucket that is cut off afterwards.
    index = ops.where(keep, labels * num_classes + predictions, cells)
    counts = ops.segment_sum(ops.ones_like(index), index, num_segments=cells + 1)
    return ops.reshape(counts[:cells], (num_classes, num_classes))


def iou_per_class(cm: Any) -> np.ndarray:
    """IoU of each class from a confusion matrix; NaN for a class absent from labels and
    predictions.

    >>> iou_per_class([[1, 0], [1, 1]]).tolist()
    [0.5, 0.5]
    """
    cm = np.asarray(cm, dtype=np.float64)
    true_positives = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - true_positives
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, true_positives / np.maximum(union, 1), np.nan)


def mean_iou(cm: Any) -> float:
    """Mean IoU over the classes present (labels or predictions); 0.0 for an empty matrix."""
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


def pixel_accuracy(cm: Any) -> float:
    """Correct pixels / valid pixels; 0.0 for an empty matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0
