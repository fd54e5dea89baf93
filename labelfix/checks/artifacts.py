"""Lossy-artifact detection for masks saved as JPEG, anti-aliased or resized bilinearly.

Such masks carry *stray* values: values that are no class at all, and class values that only
occur as thin fringes between two other regions (bilinear resizing of a 0|15 edge leaves a
band of 5s, 7s and 10s). A pixel is a *fringe* pixel when two of its four neighbours hold two
different values, both unlike its own; a value whose pixels are nearly all fringe pixels is a
suspected artifact. Ignore values are never suspects (VOC's 255 borders are thin on purpose).

>>> a = np.array([[0, 0, 7, 15, 15]] * 3, np.uint8)
>>> [(s.value, s.pixels, s.fringe) for s in suspect_values(a, ignore=(255,))]
[(7, 3, 3)]

Pixels are also stray when they are *specks*: fewer than 3 of their 8 neighbours share their
value (JPEG noise). That also removes real structures 1 px wide: pass ``min_support=0`` to keep
them. :mod:`labelfix.rewrite.repair` gives stray pixels a valid label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labelfix.checks.rules import is_valid

#: A value is a suspected artifact when at least this share of its pixels are fringe pixels.
FRINGE_THRESHOLD = 0.9
#: A pixel with fewer same-valued neighbours (of 8) than this is a speck (JPEG noise). Real
#: structures 2 px wide or more always have 3; 1-px lines have 2 (use 2, or 0 to turn it off).
MIN_SUPPORT = 3

#: The 8 neighbours of a pixel, as (dy, dx).
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


@dataclass(frozen=True)
class SuspectValue:
    """A value whose pixels lie (almost) only on boundaries between two other values."""

    value: int
    pixels: int
    fringe: int

    @property
    def share(self) -> float:
        return self.fringe / self.pixels if self.pixels else 0.0


def fringe_mask(labels: np.ndarray) -> np.ndarray:
    """True where two of the 4 neighbours hold two different values, both unlike the pixel."""
    p = np.pad(labels, 1, mode="edge")
    centre = labels
    neighbours = (p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:])
    differs = [n != centre for n in neighbours]
    out = np.zeros(labels.shape, dtype=bool)
    for i in range(4):
        for j in range(i + 1, 4):
            out |= differs[i] & differs[j] & (neighbours[i] != neighbours[j])
    return out


def suspect_values(
    labels: np.ndarray,
    *,
    ignore: Sequence[int] = (),
    threshold: float = FRINGE_THRESHOLD,
    fringe: np.ndarray | None = None,
) -> list[SuspectValue]:
    """Values (not ignore) with at least ``threshold`` of their pixels on fringes, ascending."""
    if threshold > 1.0:
        return []
    if fringe is None:
        fringe = fringe_mask(labels)
    values, counts = np.unique(labels, return_counts=True)
    fringe_values, fringe_counts = np.unique(labels[fringe], return_counts=True)
    fringe_by_value = dict(zip(fringe_values.tolist(), fringe_counts.tolist(), strict=True))
    ignore_set = set(ignore)
    found = []
    for v, c in zip(values.tolist(), counts.tolist(), strict=True):
        f = fringe_by_value.get(v, 0)
        if v not in ignore_set and f and f / c >= threshold:
            found.append(SuspectValue(value=v, pixels=c, fringe=f))
    return found


def equal_neighbours(labels: np.ndarray) -> np.ndarray:
    """For each pixel, how many of its 8 neighbours hold the same value (edges replicated)."""
    p = np.pad(labels, 1, mode="edge")
    height, width = labels.shape
    count = np.zeros(labels.shape, dtype=np.int8)
    for dy, dx in OFFSETS:
        count += p[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] == labels
    return count


def stray_mask(
    labels: np.ndarray,
    *,
    num_classes: int,
    ignore: Sequence[int] = (),
    threshold: float = FRINGE_THRESHOLD,
    min_support: int = MIN_SUPPORT,
) -> np.ndarray:
    """Pixels to repair: values that are neither class nor ignore, suspected artifact values,
    and specks (pixels with fewer than ``min_support`` same-valued neighbours of 8)."""
    stray = ~is_valid(labels, num_classes, ignore)
    for s in suspect_values(labels, ignore=ignore, threshold=threshold):
        if 0 <= s.value < num_classes:
            stray |= labels == s.value
    if min_support > 0:
        stray |= equal_neighbours(labels) < min_support
    return stray
