"""labelfix: make semantic-segmentation label masks safe to train on in TensorFlow.

The public API, imported lazily (so ``labelfix --help`` and ``labelfix stats`` never load
TensorFlow or Keras):

>>> import labelfix
>>> stats = labelfix.scan_dataset(["masks/"], ignore=(255,), num_classes=21)   # doctest: +SKIP
>>> labelfix.preset("cityscapes").num_classes
19
"""

from __future__ import annotations

import importlib

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
    "load": "labelfix.data",
    "read_manifest": "labelfix.data",
    "masked_sparse_categorical_crossentropy": "labelfix.losses",
    "MaskedSparseCategoricalCrossentropy": "labelfix.losses",
    "MeanIoU": "labelfix.metrics",
    "build_model": "labelfix.training.model",
    "train": "labelfix.training.loop",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'labelfix' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
