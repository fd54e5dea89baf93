"""What a training run reports and keeps: per-epoch stats, progress events, the result, and
``history.json`` (the run's settings and every epoch, per-class IoU by class name).

>>> EpochStats(epoch=1, loss=0.7, pixel_accuracy=0.8, mean_iou=0.5).val_mean_iou is None
True
>>> class_names(None, 3)
('class 0', 'class 1', 'class 2')
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from labelfix._version import __version__
from labelfix.training.config import RunConfig

__all__ = [
    "EpochStats",
    "Progress",
    "TrainResult",
    "class_names",
    "history_record",
    "stats_from_dict",
    "write_history",
]


@dataclass(frozen=True)
class EpochStats:
    """Metrics of one epoch (void excluded). ``val_*`` are None without a validation split."""

    epoch: int
    loss: float
    pixel_accuracy: float
    mean_iou: float
    val_loss: float | None = None
    val_pixel_accuracy: float | None = None
    val_mean_iou: float | None = None
    iou_per_class: tuple[float | None, ...] = ()  # validation if any, else training
    seconds: float = 0.0
    learning_rate: float | None = None  # at the end of the epoch


@dataclass(frozen=True)
class Progress:
    """What ``train`` reports to its ``progress`` callback.

    ``kind`` is ``"start"`` (``devices``, ``precision``, ``steps``; ``epoch`` is the last epoch
    already done, non-zero when resuming), ``"step"`` (``step`` of ``steps`` done, running
    ``loss``), ``"validate"`` or ``"epoch"`` (``stats``).
    """

    kind: str
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    stats: EpochStats | None = None
    devices: tuple[str, ...] = ()
    precision: str = ""


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced. ``model`` is the trained ``keras.Model``; ``resumed_from``
    the epoch of the checkpoint it continued (0: a fresh run)."""

    history: tuple[EpochStats, ...]
    devices: tuple[str, ...]
    precision: str
    num_replicas: int
    steps_per_epoch: int
    class_weights: tuple[float, ...] | None
    model_path: Path | None
    history_path: Path | None
    checkpoint_dir: Path | None = None
    log_dir: Path | None = None
    resumed_from: int = 0
    model: Any = field(repr=False, compare=False, default=None)
    loss: str = "ce"
    binary: bool = False


def class_names(names: Sequence[str] | None, num_classes: int) -> tuple[str, ...]:
    """The manifest's class names, or ``class K``; duplicates get their id appended."""
    if not names or len(names) != num_classes:
        return tuple(f"class {k}" for k in range(num_classes))
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return tuple(n if seen[n] == 1 else f"{n} ({k})" for k, n in enumerate(names))


def stats_from_dict(data: Mapping[str, Any]) -> EpochStats:
    """An :class:`EpochStats` from its ``asdict`` form (as the checkpoints keep it)."""
    known = {f.name for f in fields(EpochStats)}
    values = {k: v for k, v in data.items() if k in known}
    values["iou_per_class"] = tuple(values.get("iou_per_class", ()))
    return EpochStats(**values)


def history_record(run: RunConfig, history: Sequence[EpochStats]) -> dict[str, Any]:
    """The document of ``history.json``: settings, then every epoch; ``iou_per_class`` maps
    class names to IoU (None: the class is absent from labels and predictions)."""
    epochs = []
    for stats in history:
        row = asdict(stats)
        row["iou_per_class"] = dict(zip(run.class_names, stats.iou_per_class, strict=False))
        epochs.append(row)
    return {
        "labelfix_version": __version__,
        "num_classes": run.num_classes,
        "class_names": list(run.class_names),
        "ignore": run.ignore,
        "class_weights": list(run.class_weights) if run.class_weights else None,
        "loss": run.loss,
        "binary": run.binary,
        "batch_size": run.batch_size,
        "crop_size": list(run.crop_size),
        "steps_per_epoch": run.steps_per_epoch,
        "precision": run.precision,
        "devices": list(run.devices),
        "num_replicas": run.num_replicas,
        "model": {"width": run.width, "backbone": run.backbone, "norm": run.norm},
        "epochs": epochs,
    }


def write_history(outlet, path: Path, run: RunConfig, history: Sequence[EpochStats]) -> Path:
    """Write ``history.json`` through the run's door (it is rewritten after every epoch)."""
    text = json.dumps(history_record(run, history), indent=2) + "\n"
    outlet.write(str(path), text.encode())
    return path
