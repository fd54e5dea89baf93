"""Lossy-artifact detection and repair for masks saved as JPEG, anti-aliased or resized bilinearly.

Such masks carry *stray* values: values that are no class at all, and class values that only
occur as thin fringes between two other regions (bilinear resizing of a 0|15 edge leaves a
band of 5s, 7s and 10s). A pixel is a *fringe* pixel when two of its four neighbours hold two
different values, both unlike its own; a value whose pixels are nearly all fringe pixels is a
suspected artifact. Ignore values are never suspects (VOC's 255 borders are thin on purpose).

>>> a = np.array([[0, 0, 7, 15, 15]] * 3, np.uint8)
>>> [(s.value, s.pixels, s.fringe) for s in suspect_values(a, ignore=(255,))]
[(7, 3, 3)]
>>> repair(a, num_classes=21, ignore=(255,)).labels.tolist()[0]
[0, 0, 0, 15, 15]

Pixels are also stray when they are *specks*: fewer than 3 of their 8 neighbours share their
value (JPEG noise). That also removes real structures 1 px wide: pass ``min_support=0`` to keep
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: A value is a suspected artifact when at least this share of its pixels are fringe pixels.
FRINGE_THRESHOLD = 0.9
#: A pixel with fewer same-valued neighbours (of 8) than this is a speck (JPEG noise). Real
#: structures 2 px wide or more always have 3; 1-px lines have 2 (use 2, or 0 to turn it off).
MIN_SUPPORT = 3

STRATEGIES = ("nearest", "ignore")

_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


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
    for dy, dx in _OFFSETS:
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
    stray = ~_is_valid(labels, num_classes, ignore)
    for s in suspect_values(labels, ignore=ignore, threshold=threshold):
        if 0 <= s.value < num_classes:
            stray |= labels == s.value
    if min_support > 0:
        stray |= equal_neighbours(labels) < min_support
    return stray


def _is_valid(values: np.ndarray, num_classes: int, ignore: Sequence[int]) -> np.ndarray:
    valid = (values >= 0) & (values < num_classes)
    for v in ignore:
        valid |= values == v
    return valid


@dataclass(frozen=True)
class RepairResult:
    """A repaired mask and how many pixels changed (``stray`` found, ``to_ignore`` made void)."""

    labels: np.ndarray
    stray: int
    changed: int
    to_ignore: int


def repair(
    labels: np.ndarray,
    *,
    num_classes: int,
    ignore: Sequence[int] = (),
    out: int | None = None,
    strategy: str = "nearest",
    threshold: float = FRINGE_THRESHOLD,
    min_support: int = MIN_SUPPORT,
    max_rounds: int = 64,
) -> RepairResult:
    """Give every stray pixel the majority class of its 3x3 neighbourhood, or make it void.

    ``nearest`` grows valid labels into stray regions one ring per round (class ids and ignore
    values vote, stray pixels do not; ties go to the smallest value); stray pixels no valid
    label reaches become the ignore value. ``ignore`` makes every stray pixel the ignore value
    (``out``, else ``ignore[0]``).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    void = out if out is not None else (ignore[0] if ignore else None)
    stray = stray_mask(
        labels,
        num_classes=num_classes,
        ignore=ignore,
        threshold=threshold,
        min_support=min_support,
    )
    n_stray = int(stray.sum())
    if n_stray == 0:
        return RepairResult(labels=labels, stray=0, changed=0, to_ignore=0)
    if void is None and strategy == "ignore":
        raise ValueError("strategy 'ignore' needs an ignore value")
    lo = min(int(labels.min()), void if void is not None else 0)
    hi = max(int(labels.max()), void if void is not None else 0, num_classes - 1)
    work = labels.astype(np.int64 if lo < 0 or hi > 2**31 else np.int32, copy=True)
    if strategy == "nearest":
        pending = stray.copy()
        height, width = labels.shape
        for _ in range(max_rounds):
            ys, xs = np.nonzero(pending)
            if ys.size == 0:
                break
            votes = np.full((ys.size, 8), -1, dtype=np.int64)
            for k, (dy, dx) in enumerate(_OFFSETS):
                ny, nx = ys + dy, xs + dx
                inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
                nyc, nxc = np.clip(ny, 0, height - 1), np.clip(nx, 0, width - 1)
                value = work[nyc, nxc]
                ok = inside & ~pending[nyc, nxc] & _is_valid(value, num_classes, ignore)
                votes[:, k] = np.where(ok, value, -1)
            has_vote = (votes >= 0).any(axis=1)
            if not has_vote.any():
                break
            same = (votes[:, :, None] == votes[:, None, :]) & (votes[:, None, :] >= 0)
            tally = np.where(votes >= 0, same.sum(axis=2), 0)
            # ties go to the smallest class id among the most frequent, deterministically
            best = np.where(
                tally == tally.max(axis=1, keepdims=True), votes, np.iinfo(np.int64).max
            )
            winner = best.min(axis=1)
            sel = has_vote
            work[ys[sel], xs[sel]] = winner[sel]
            pending[ys[sel], xs[sel]] = False
        leftover = pending
    else:
        leftover = stray
    n_void = int(leftover.sum())
    if n_void:
        if void is None:
            raise ValueError(
                f"{n_void} stray pixels have no class next to them and no ignore value is given"
            )
        work[leftover] = void
    from labelfix.masks import smallest_int_dtype

    result = work.astype(smallest_int_dtype(int(work.min()), int(work.max())))
    changed = int((result.astype(np.int64) != labels.astype(np.int64)).sum())
    return RepairResult(labels=result, stray=n_stray, changed=changed, to_ignore=n_void)


@dataclass(frozen=True)
class RepairSpec:
    """The repair a command applies to every file (see :func:`repair`).

    >>> spec = RepairSpec(num_classes=21, ignore=(255,))
    >>> spec.apply(np.array([[0, 0, 7, 15, 15]] * 3, np.uint8)).changed
    3
    """

    num_classes: int
    ignore: tuple[int, ...] = ()
    out: int | None = None
    strategy: str = "nearest"
    threshold: float = FRINGE_THRESHOLD
    min_support: int = MIN_SUPPORT

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")
        if self.strategy == "ignore" and self.out is None and not self.ignore:
            raise ValueError("--strategy ignore needs an ignore value (--ignore or --out)")

    def apply(self, labels: np.ndarray) -> RepairResult:
        return repair(
            labels,
            num_classes=self.num_classes,
            ignore=self.ignore,
            out=self.out,
            strategy=self.strategy,
            threshold=self.threshold,
            min_support=self.min_support,
        )

    def to_dict(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "ignore": list(self.ignore),
            "out": self.out,
            "strategy": self.strategy,
            "fringe_threshold": self.threshold,
            "min_support": self.min_support,
        }
