"""Median-frequency class weights (Eigen & Fergus 2015): the one rule ``stats`` and ``train`` share.

``freq[c] = pixels of c / pixels of the images where c occurs`` and
``weight[c] = median(freq over the classes present) / freq[c]``.

A class with no pixel gets **1.0**: it never weighs anything in the data it was counted on, and
1.0 is the neutral weight if the weights are reused on data where it does occur (0.0 would
silently drop that class from the loss there).

>>> median_frequency_weights([600, 300, 100, 0])
(0.5, 1.0, 3.0, 1.0)
>>> median_frequency_weights([600, 300, 100], [1000, 1000, 200])
(0.833333, 1.666667, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labelfix.errors import LabelfixError

#: The weight of a class that has no pixel.
ABSENT_CLASS_WEIGHT = 1.0


def median_frequency_weights(
    class_pixels: Sequence[int], class_image_pixels: Sequence[int] | None = None
) -> tuple[float, ...]:
    """One weight per class, rounded to 6 decimals.

    ``class_image_pixels[c]`` is the number of pixels of the images that contain class c (the
    paper's denominator, kept in ``stats`` and in the ``to-tfrecord`` manifest); without it every
    class is divided by all labelled pixels. Raises LabelfixError when no class has a pixel.
    """
    counts = np.asarray(class_pixels, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise LabelfixError(f"class pixel counts must be non-negative, one per class: {counts}")
    present = counts > 0
    if not present.any():
        raise LabelfixError("no labelled pixels: cannot derive class weights")
    if class_image_pixels is None:
        totals = np.full_like(counts, counts.sum())
    else:
        totals = np.asarray(class_image_pixels, dtype=np.float64)
        if totals.shape != counts.shape or (totals[present] < counts[present]).any():
            raise LabelfixError(
                f"class image pixels {totals.tolist()} do not match the pixel counts "
                f"{counts.tolist()}"
            )
    freq = np.where(present, counts / np.where(present, totals, 1.0), 0.0)
    median = float(np.median(freq[present]))
    weights = np.where(present, median / np.where(present, freq, 1.0), ABSENT_CLASS_WEIGHT)
    return tuple(round(float(w), 6) for w in weights)
