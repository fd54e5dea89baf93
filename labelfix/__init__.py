"""labelfix: make semantic-segmentation label masks safe to train on in TensorFlow.

The public API, imported lazily (so ``labelfix --help`` and ``labelfix stats`` never load
TensorFlow or Keras):

>>> import labelfix
>>> labelfix.preset("cityscapes").num_classes
19

On a dataset of your own: ``labelfix.scan_dataset(["masks/"], ignore=(255,), num_classes=21)``.
"""

from __future__ import annotations

import importlib
import sys

from labelfix._imports import around_import
from labelfix._version import __version__

_EXPORTS: dict[str, str] = {
    # reading and writing masks
    "Mask": "labelfix.io.masks",
    "read_mask": "labelfix.io.masks",
    "write_mask": "labelfix.io.masks",
    # mappings and colour masks
    "LabelMap": "labelfix.labels.labelmap",
    "build_label_map": "labelfix.labels.presets",
    "preset": "labelfix.labels.presets",
    "Colormap": "labelfix.labels.colormap",
    "ColourPolicy": "labelfix.labels.colormap",
    "load_colormap": "labelfix.labels.colormap",
    # stats, validation, rewriting
    "DatasetStats": "labelfix.checks.stats",
    "FileReport": "labelfix.checks.scan",
    "scan_dataset": "labelfix.checks.stats",
    "ValidationResult": "labelfix.checks.validate",
    "validate": "labelfix.checks.validate",
    "RemapResult": "labelfix.rewrite.run",
    "remap": "labelfix.rewrite.run",
    "RepairSpec": "labelfix.rewrite.repair",
    "repair": "labelfix.rewrite.repair",
    # TFRecords and training (TensorFlow / Keras needed when called)
    "WriteSpec": "labelfix.records.spec",
    "WriteResult": "labelfix.records.write",
    "write_dataset": "labelfix.records.write",
    "verify_dataset": "labelfix.records.verify",
    # TFRecords another tool wrote (DeepLab, Model Garden): no manifest needed
    "RecordKeys": "labelfix.records.example",
    "check_records": "labelfix.records.foreign_checks",
    "validate_records": "labelfix.records.foreign_checks",
    "verify_records": "labelfix.records.foreign_checks",
    "load": "labelfix.data",
    "read_manifest": "labelfix.data",
    "masked_sparse_categorical_crossentropy": "labelfix.losses",
    "MaskedSparseCategoricalCrossentropy": "labelfix.losses",
    "masked_sparse_categorical_focal_crossentropy": "labelfix.losses",
    "MaskedSparseCategoricalFocalCrossentropy": "labelfix.losses",
    "masked_binary_crossentropy": "labelfix.losses",
    "MaskedBinaryCrossentropy": "labelfix.losses",
    "masked_dice_loss": "labelfix.losses",
    "MaskedDiceLoss": "labelfix.losses",
    "CombinedLoss": "labelfix.losses",
    "MeanIoU": "labelfix.metrics",
    "build_model": "labelfix.training.model",
    "train": "labelfix.training.loop",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'labelfix' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:  # a minimal install: say what to install, as labelfix.data
        if (err.name or "").split(".")[0] not in ("keras", "tensorflow"):
            raise
        from labelfix.errors import MissingExtra

        raise MissingExtra(
            f"labelfix.{name} needs Keras 3 and TensorFlow: pip install 'labelfix[tf]'"
        ) from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


# ----------------------------------------------------------------------------- Keras objects
#: Modules whose Keras objects (losses, metrics) are registered under the package "labelfix".
_KERAS_MODULES = ("labelfix.losses", "labelfix.metrics")


def _after_keras(run, module) -> None:
    """Register labelfix's losses and metrics with Keras as soon as Keras is imported.

    ``import labelfix`` must stay light (no Keras, no TensorFlow), yet a model saved with a
    labelfix loss must load with plain ``keras.saving.load_model`` after ``import labelfix``,
    and Keras finds custom classes only once their modules have run.
    """
    run(module)
    _import_keras_modules()


def _import_keras_modules() -> None:
    """Import the registering modules, unless one is being imported right now (it was what
    imported Keras: importing the others in the middle of it could meet a half-run module; the
    losses package imports the metrics module at its end, so both get registered anyway)."""
    busy = [m for m in sys.modules if m.startswith(_KERAS_MODULES)]
    if not busy:
        for name in _KERAS_MODULES:
            importlib.import_module(name)


def _register_with_keras() -> None:
    if "keras" in sys.modules:
        _import_keras_modules()
    else:
        around_import("keras", _after_keras)


_register_with_keras()
