"""TensorBoard scalars of a training run, one point per epoch, written with ``tf.summary``.

``OUTPUT/logs/train``: ``loss``, ``pixel_accuracy``, ``mean_iou``, ``learning_rate``;
``OUTPUT/logs/validation`` (with a validation split): ``loss``, ``pixel_accuracy``,
``mean_iou``. Per-class IoU goes to ``iou/<class name>`` in the validation log when there is
one, else in the training log (as ``EpochStats.iou_per_class``). View with
``tensorboard --logdir OUTPUT/logs``.

Written with ``tf.summary.write`` and the scalar plugin's metadata (what
``tf.summary.scalar`` writes), so TensorBoard itself need not be installed to train.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelfix.training.history import EpochStats

__all__ = ["Summaries", "tag"]


def tag(name: str) -> str:
    """A class name as a summary tag: characters other than letters, digits, ``_.-`` become
    ``_`` (``"traffic light"`` -> ``"traffic_light"``).

    >>> tag("traffic light"), tag("class 3")
    ('traffic_light', 'class_3')
    """
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def _scalar(name: str, value: float) -> None:
    """``tf.summary.scalar`` without the tensorboard package: the same event, metadata and
    float32 tensor, at the default writer's step."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata)


class Summaries:
    """Writers for ``log_dir/train`` and (``validation``) ``log_dir/validation``; a context
    manager that closes them."""

    def __init__(self, log_dir: Path, *, class_names: Sequence[str], validation: bool):
        import tensorflow as tf

        self.log_dir, self.class_names = Path(log_dir), tuple(class_names)
        self.train = tf.summary.create_file_writer(str(self.log_dir / "train"))
        self.val = (
            tf.summary.create_file_writer(str(self.log_dir / "validation")) if validation else None
        )

    def __enter__(self) -> Summaries:
        return self

    def __exit__(self, *exc: Any) -> None:
        for writer in (self.train, self.val):
            if writer is not None:
                writer.close()

    def write(self, stats: EpochStats) -> None:
        """The scalars of one epoch, at step ``stats.epoch``."""
        step = stats.epoch
        with self.train.as_default(step=step):
            _scalar("loss", stats.loss)
            _scalar("pixel_accuracy", stats.pixel_accuracy)
            _scalar("mean_iou", stats.mean_iou)
            if stats.learning_rate is not None:
                _scalar("learning_rate", stats.learning_rate)
            if self.val is None:
                self._per_class(stats)
        if self.val is not None and stats.val_loss is not None:
            with self.val.as_default(step=step):
                _scalar("loss", stats.val_loss)
                _scalar("pixel_accuracy", stats.val_pixel_accuracy)
                _scalar("mean_iou", stats.val_mean_iou)
                self._per_class(stats)
        self.train.flush()
        if self.val is not None:
            self.val.flush()

    def _per_class(self, stats: EpochStats) -> None:
        for name, iou in zip(self.class_names, stats.iou_per_class, strict=False):
            if iou is not None:
                _scalar(f"iou/{tag(name)}", iou)
