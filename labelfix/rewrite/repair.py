"""Repair of lossy artifacts: give every stray pixel (see :mod:`labelfix.checks.artifacts`) the
majority valid label of its neighbourhood, or make it void.

>>> a = np.array([[0, 0, 7, 15, 15]] * 3, np.uint8)
>>> repair(a, num_classes=21, ignore=(255,)).labels.tolist()[0]
[0, 0, 0, 15, 15]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labelfix.checks.artifacts import FRINGE_THRESHOLD, MIN_SUPPORT, OFFSETS, stray_mask
from labelfix.checks.rules import is_valid
from labelfix.io.masks import smallest_int_dtype

STRATEGIES = ("nearest", "ignore")


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
        leftover = _grow_nearest(
            work, stray, num_classes=num_classes, ignore=ignore, rounds=max_rounds
        )
    else:
        leftover = stray
    n_void = int(leftover.sum())
    if n_void:
        if void is None:
            raise ValueError(
                f"{n_void} stray pixels have no class next to them and no ignore value is given"
            )
        work[leftover] = void
    result = work.astype(smallest_int_dtype(int(work.min()), int(work.max())))
    changed = int((result.astype(np.int64) != labels.astype(np.int64)).sum())
    return RepairResult(labels=result, stray=n_stray, changed=changed, to_ignore=n_void)


def _grow_nearest(
    work: np.ndarray, stray: np.ndarray, *, num_classes: int, ignore: Sequence[int], rounds: int
) -> np.ndarray:
    """Grow valid labels into the stray pixels of ``work`` (in place), one ring per round; class
    ids and ignore values vote, ties go to the smallest value. Returns the pixels never reached."""
    pending = stray.copy()
    height, width = work.shape
    for _ in range(rounds):
        ys, xs = np.nonzero(pending)
        if ys.size == 0:
            break
        votes = np.full((ys.size, 8), -1, dtype=np.int64)
        for k, (dy, dx) in enumerate(OFFSETS):
            ny, nx = ys + dy, xs + dx
            inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
            nyc, nxc = np.clip(ny, 0, height - 1), np.clip(nx, 0, width - 1)
            value = work[nyc, nxc]
            ok = inside & ~pending[nyc, nxc] & is_valid(value, num_classes, ignore)
            votes[:, k] = np.where(ok, value, -1)
        has_vote = (votes >= 0).any(axis=1)
        if not has_vote.any():
            break
        same = (votes[:, :, None] == votes[:, None, :]) & (votes[:, None, :] >= 0)
        tally = np.where(votes >= 0, same.sum(axis=2), 0)
        # ties go to the smallest class id among the most frequent, deterministically
        best = np.where(tally == tally.max(axis=1, keepdims=True), votes, np.iinfo(np.int64).max)
        winner = best.min(axis=1)
        work[ys[has_vote], xs[has_vote]] = winner[has_vote]
        pending[ys[has_vote], xs[has_vote]] = False
    return pending


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
