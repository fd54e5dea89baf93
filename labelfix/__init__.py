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
    "Mask": "labelfix.masks",
    "read_mask": "labelfix.masks",
    "write_mask": "labelfix.masks",
    # mappings and colour masks
    "LabelMap": "labelfix.mapping",
    "build_label_map": "labelfix.mapping",
    "preset": "labelfix.mapping",
    "Colormap": "labelfix.colormap",
    "load_colormap": "labelfix.colormap",
    # stats, validation, rewriting
    "DatasetStats": "labelfix.scan",
    "FileReport": "labelfix.scan",
    "scan_dataset": "labelfix.scan",
    "ValidationResult": "labelfix.validate",
    "validate": "labelfix.validate",
    "RemapResult": "labelfix.remap",
    "remap": "labelfix.remap",
    "RepairSpec": "labelfix.artifacts",
    "repair": "labelfix.artifacts",
    # TFRecords and training (TensorFlow / Keras needed when called)
    "WriteResult": "labelfix.tfrecord",
    "write_dataset": "labelfix.tfrecord",
    "load": "labelfix.data",
    "read_manifest": "labelfix.data",
    "masked_sparse_categorical_crossentropy": "labelfix.losses",
    "MaskedSparseCategoricalCrossentropy": "labelfix.losses",
    "MeanIoU": "labelfix.metrics",
    "build_model": "labelfix.model",
    "train": "labelfix.train",
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
