"""Helpers for the training tests: a learnable synthetic dataset and a stand-in ``labelfix.data``.

Imported by test_train.py (pytest puts tests/ on sys.path); not a test module itself.
"""

from __future__ import annotations

import sys
import types

import numpy as np

#: Fixed, well separated colours: class k is drawn in CLASS_RGB[k] (float image in [0, 1]).
CLASS_RGB = np.array(
    [[0.1, 0.1, 0.1], [0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.2, 0.3, 0.9], [0.9, 0.85, 0.2]],
    np.float32,
)


def shapes(
    count: int,
    *,
    seed: int,
    size: int = 32,
    num_classes: int = 4,
    ignore: int = -1,
    void_seed: int | None = None,
    dtype=np.int32,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images with coloured rectangles on class-0 background, each outlined by a
    one-pixel void border whose image content is random noise (drawn from ``void_seed``, so two
    datasets can differ only there). Returns ``(images float32 [N,S,S,3], masks [N,S,S])``."""
    rng = np.random.default_rng(seed)
    void_rng = np.random.default_rng(seed + 1000 if void_seed is None else void_seed)
    images = np.empty((count, size, size, 3), np.float32)
    masks = np.empty((count, size, size), dtype)
    for i in range(count):
        mask = np.zeros((size, size), np.int64)
        for k in rng.permutation(np.arange(1, num_classes)):
            h, w = rng.integers(size // 5, size // 2, size=2)
            y, x = rng.integers(1, size - h - 1), rng.integers(1, size - w - 1)
            mask[y - 1 : y + h + 1, x - 1 : x + w + 1] = -1
            mask[y : y + h, x : x + w] = k
        void = mask < 0
        image = CLASS_RGB[np.where(void, 0, mask)] + rng.normal(0, 0.04, (size, size, 3))
        image[void] = void_rng.uniform(0, 1, (void.sum(), 3))  # arbitrary content under void
        images[i] = image
        masks[i] = np.where(void, ignore, mask)
    return images, masks


def fake_data_module(splits: dict, *, num_classes: int, ignore_stored: int = 255):
    """A stand-in for ``labelfix.data`` (load, read_manifest) over in-memory arrays.

    ``splits``: name -> (images, masks with void -1). The manifest counts pixels per class.
    """
    import tensorflow as tf

    from labelfix.errors import LabelfixError

    def read_manifest(path, split):
        if split not in splits:
            raise LabelfixError(f"{path}: no split {split!r}")
        masks = splits[split][1]
        counts = [int((masks == k).sum()) for k in range(num_classes)]
        return {
            "num_classes": num_classes,
            "class_names": None,
            "ignore": ignore_stored,
            "ignore_as": -1,
            "class_pixel_counts": counts,
        }

    def load(path, split="train", *, ignore_as=-1):
        read_manifest(path, split)
        images, masks = splits[split]
        masks = np.where(masks == -1, ignore_as, masks).astype(np.int32)
        return tf.data.Dataset.from_tensor_slices((images, masks))

    module = types.ModuleType("labelfix.data")
    module.load = load
    module.read_manifest = read_manifest
    return module


def install_fake_data(monkeypatch, splits: dict, *, num_classes: int):
    """Put :func:`fake_data_module` in place of ``labelfix.data`` (``train`` imports it when
    used) for as long as ``monkeypatch`` (a fixture, or ``pytest.MonkeyPatch.context()``) lasts."""
    import labelfix

    module = fake_data_module(splits, num_classes=num_classes)
    monkeypatch.setitem(sys.modules, "labelfix.data", module)
    monkeypatch.setattr(labelfix, "data", module, raising=False)
    return module
