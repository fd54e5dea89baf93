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

A clean, lossless mask has specks and fringe values too: hand-drawn detail (the 1-px tip of a
polygon, a thin object between two others). What tells a lossy mask from it is a *signature*
(:func:`lossy_signature`): several fringe-only values, or a speckled share of its pixels.
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

#: A mask with at least this many fringe-only values "looks interpolated" (a lossy signature).
INTERPOLATED_MIN_SUSPECTS = 3
#: A mask with at least this share of specks is speckled (a lossy signature). Measured on masks
#: made by labelfix.synthetic (64x80 and 375x500, 6 seeds): clean ones have at most 0.25%,
#: saved as JPEG (quality 95 to 75) 2% to 50%, resized bilinearly 1.7% to 16%.
SPECKLED_SHARE = 0.01

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


def lossy_signature(
    labels: np.ndarray,
    *,
    ignore: Sequence[int] = (),
    threshold: float = FRINGE_THRESHOLD,
    suspects: Sequence[SuspectValue] | None = None,
    support: np.ndarray | None = None,
) -> str | None:
    """What shows that a mask went through lossy compression or interpolation, or None.

    At least :data:`INTERPOLATED_MIN_SUSPECTS` values lying only on fringes (``suspects``, as
    :func:`suspect_values` finds them), or at least :data:`SPECKLED_SHARE` of the pixels being
    specks (``support``: :func:`equal_neighbours`). Either is computed when not given.

    >>> a = np.zeros((40, 40), np.uint8); a[10:30, 10:30] = 15; a[5, 5] = 15
    >>> lossy_signature(a) is None                  # one speck: could be drawn
    True
    >>> lossy_signature(np.array([[0, 3, 7, 9, 15]] * 3, np.uint8))
    'values 3, 7, 9 lie only on boundaries between two other values'
    """
    if suspects is None:
        suspects = suspect_values(labels, ignore=ignore, threshold=threshold)
    if len(suspects) >= INTERPOLATED_MIN_SUSPECTS:
        values = ", ".join(str(s.value) for s in suspects[:6])
        more = f" and {len(suspects) - 6} more" if len(suspects) > 6 else ""
        return f"values {values}{more} lie only on boundaries between two other values"
    if support is None:
        support = equal_neighbours(labels)
    specks = int(np.count_nonzero(support < MIN_SUPPORT))
    if labels.size and specks >= SPECKLED_SHARE * labels.size:
        return f"{100 * specks / labels.size:.1f}% of its pixels are specks"
    return None


def stray_mask(
    labels: np.ndarray,
    *,
    num_classes: int,
    ignore: Sequence[int] = (),
    threshold: float = FRINGE_THRESHOLD,
    min_support: int = MIN_SUPPORT,
    suspects: Sequence[SuspectValue] | None = None,
    support: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels to repair: values that are neither class nor ignore, suspected artifact values,
    and specks (pixels with fewer than ``min_support`` same-valued neighbours of 8).
    ``suspects`` and ``support`` are :func:`suspect_values` and :func:`equal_neighbours` of
    ``labels`` when the caller has them already."""
    stray = ~is_valid(labels, num_classes, ignore)
    if suspects is None:
        suspects = suspect_values(labels, ignore=ignore, threshold=threshold)
    for s in suspects:
        if 0 <= s.value < num_classes:
            stray |= labels == s.value
    if min_support > 0:
        if support is None:
            support = equal_neighbours(labels)
        stray |= support < min_support
    return stray
