"""Evaluate a trained model on a ``labelfix to-tfrecord`` split (``labelfix evaluate``).

Every image at full resolution, whatever its size (padded on its own to a multiple of the
model stride, see :mod:`labelfix.training.inference`); void pixels never count. The confusion
matrix (rows: truth, columns: prediction) is summed in int64 on the host, so no count
saturates; per-class IoU, pixel accuracy and the mean IoU over the classes present (in labels
or predictions, as Keras' ``MeanIoU``) come from it.

>>> report = EvaluationReport(model="m.keras", data_dir="records", split="val",
...                           class_names=("bg", "cat"), confusion=np.array([[3, 1], [0, 2]]),
...                           images=1, void_pixels=2)
>>> round(report.mean_iou, 4), round(report.pixel_accuracy, 4), report.classes_present
(0.7083, 0.8333, 2)
>>> print(confusion_csv(report), end="")
truth\\prediction,bg,cat
bg,3,1
cat,0,2
"""

from __future__ import annotations

import importlib.util
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelfix.errors import LabelfixError, MissingExtra
from labelfix.io.door import Door, Outlet, Rules
from labelfix.labels import IGNORE_AS
from labelfix.metrics import iou_per_class, mean_iou, pixel_accuracy

__all__ = [
    "EvaluationReport",
    "confusion_csv",
    "evaluate",
    "load_model",
    "plot_confusion",
    "write_outputs",
]

#: The one-line note when matplotlib is missing.
NEEDS_MATPLOTLIB = "the confusion heat map needs matplotlib: pip install 'labelfix[viz]'"


@dataclass(frozen=True)
class EvaluationReport:
    """What :func:`evaluate` measured. ``confusion``: int64 ``[C, C]``, rows truth."""

    model: str
    data_dir: str
    split: str
    class_names: tuple[str, ...]
    confusion: np.ndarray = field(repr=False)
    images: int
    void_pixels: int | None = None

    @property
    def iou(self) -> np.ndarray:
        """IoU per class; NaN for a class absent from labels and predictions."""
        return iou_per_class(self.confusion)

    @property
    def pixel_accuracy(self) -> float:
        return pixel_accuracy(self.confusion)

    @property
    def mean_iou(self) -> float:
        """Mean IoU over the classes present (labels or predictions)."""
        return mean_iou(self.confusion)

    @property
    def classes_present(self) -> int:
        return int(np.isfinite(self.iou).sum())

    @property
    def valid_pixels(self) -> int:
        return int(self.confusion.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the scores, one row per class, and the matrix."""
        cm = self.confusion
        rows = [
            {
                "id": k,
                "name": name,
                "iou": None if np.isnan(iou) else float(iou),
                "pixels": int(cm[k].sum()),
                "predicted_pixels": int(cm[:, k].sum()),
            }
            for k, (name, iou) in enumerate(zip(self.class_names, self.iou, strict=True))
        ]
        return {
            "model": self.model,
            "data_dir": self.data_dir,
            "split": self.split,
            "images": self.images,
            "valid_pixels": self.valid_pixels,
            "void_pixels": self.void_pixels,
            "pixel_accuracy": self.pixel_accuracy,
            "mean_iou": self.mean_iou,
            "classes_present": self.classes_present,
            "num_classes": len(self.class_names),
            "per_class": rows,
            "confusion_matrix": cm.tolist(),
        }


def load_model(path: str | os.PathLike) -> Any:
    """A saved ``.keras`` model, without compiling it (no loss or metric objects needed).

    Raises:
        LabelfixError: the file is missing or is no Keras model.
    """
    import keras

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LabelfixError(f"{path}: no such model file")
    if not path.endswith(".keras"):
        raise LabelfixError(f"{path}: expected a .keras model file (model.save's format)")
    import zipfile

    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a damaged file
        raise LabelfixError(
            f"{path}: not a readable .keras model (a .keras file is a zip archive; this one is "
            "truncated or of another format)"
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LabelfixError(f"{path}: cannot load the model ({first})") from None


def evaluate(
    model: Any,
    data_dir: str | os.PathLike,
    *,
    split: str = "val",
    batch_size: int = 4,
    verify_digests: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> EvaluationReport:
    """Score ``model`` (a ``keras.Model`` or a ``.keras`` path) on ``split`` of ``data_dir``.

    Shards are checked against the manifest first (sizes; sha256 unless
    ``verify_digests=False``); a label that is neither void nor a class, or a damaged record,
    is a :class:`LabelfixError` naming the record.
    """
    from labelfix.training.history import class_names
    from labelfix.training.inference import evaluate_batches, input_multiple, scored_classes
    from labelfix.training.pipelines import evaluation_pipeline
    from labelfix.training.sources import read_errors, read_split, require_labelled_pixels

    name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model.name
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    source = read_split(data_dir, split, digests=verify_digests)
    require_labelled_pixels(source.manifest, data_dir=data_dir, split=split, use="nothing to score")
    num_classes = int(source.manifest["num_classes"])
    outputs = scored_classes(model)  # 2 for one sigmoid channel (a --binary model)
    if outputs != num_classes:
        raise LabelfixError(
            f"{name}: the model scores {outputs} classes, the {split!r} split of {data_dir} "
            f"has num_classes={num_classes}"
        )
    batches = evaluation_pipeline(
        source.dataset,
        batch_size=batch_size,
        multiple=input_multiple(model),
        num_classes=num_classes,
    )
    with read_errors([source.manifest]):
        result = evaluate_batches(
            model, batches, num_classes=num_classes, ignore=IGNORE_AS, on_batch=on_batch
        )
    if result.images and not result.confusion.sum():  # a manifest without pixel counts
        raise LabelfixError(
            f"{os.fspath(data_dir)}: split {split!r} has no labelled pixels (every pixel of its "
            f"{result.images} images is void): nothing to score; is the ignore value right?"
        )
    return EvaluationReport(
        model=name,
        data_dir=os.fspath(data_dir),
        split=split,
        class_names=class_names(source.manifest.get("class_names"), num_classes),
        confusion=result.confusion,
        images=result.images,
        void_pixels=source.manifest.get("ignore_pixels"),
    )


def confusion_csv(report: EvaluationReport) -> str:
    """The matrix as CSV: a header of class names, then one row per true class (counts)."""
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["truth\\prediction", *report.class_names])
    for name, row in zip(report.class_names, report.confusion, strict=True):
        writer.writerow([name, *(int(v) for v in row)])
    return buffer.getvalue()


def plot_confusion(report: EvaluationReport) -> bytes:
    """A heat map PNG (its bytes) of the matrix normalised per row (each true class sums to
    1), class names on both axes, the percentages written in the cells when there are few classes.

    Raises:
        MissingExtra: matplotlib is not installed.
    """
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingExtra(NEEDS_MATPLOTLIB)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    cm = report.confusion.astype(np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    n = len(report.class_names)
    side = min(max(4.0, 0.45 * n + 2.5), 30.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=100)
    try:
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(
            image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class (cells: %)"
        )
        ax.set_xticks(range(n), report.class_names, rotation=90 if n > 6 else 45, ha="right")
        ax.set_yticks(range(n), report.class_names)
        ax.set_xlabel("prediction")
        ax.set_ylabel("truth")
        ax.set_title(f"{Path(report.model).name} on {report.split}: mIoU {report.mean_iou:.3f}")
        if n <= 25:
            for (i, j), value in np.ndenumerate(share):
                colour = "white" if value > 0.5 else "black"
                ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", color=colour)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


#: The files :func:`write_outputs` writes.
OUTPUT_NAMES = {"csv": "confusion.csv", "png": "confusion.png", "json": "report.json"}


def write_outputs(
    report: EvaluationReport, directory: str | os.PathLike | Outlet
) -> dict[str, Any]:
    """``confusion.csv``, ``confusion.png`` (skipped without matplotlib) and ``report.json``
    in ``directory`` (or an outlet of the run's door, :mod:`labelfix.io.door`, which never
    writes over the run's inputs nor over files labelfix did not write); returns ``{"csv":
    path, "png": path or None, "json": path, "note": why the PNG is missing or None}``."""
    if not isinstance(directory, Outlet):
        with Door(Rules.of("evaluate")) as door:
            return write_outputs(report, door.outlet(directory))
    import json

    outlet = directory
    out = Path(outlet.root)
    written: dict[str, Any] = {k: out / name for k, name in OUTPUT_NAMES.items()}
    written.update(png=None, note=None)
    outlet.write(str(written["csv"]), confusion_csv(report).encode())
    try:
        picture = plot_confusion(report)
    except MissingExtra as err:
        written["note"] = str(err)
    else:
        written["png"] = Path(outlet.write(str(out / OUTPUT_NAMES["png"]), picture))
    data = (json.dumps(report.to_dict(), indent=2) + "\n").encode()
    outlet.write(str(written["json"]), data)
    return written
