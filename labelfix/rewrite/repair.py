"""Repair of lossy artifacts: give every stray pixel (see :mod:`labelfix.checks.artifacts`) the
majority valid label of its neighbourhood, or make it void.

>>> a = np.array([[0, 0, 7, 15, 15]] * 3, np.uint8)
>>> repair(a, num_classes=21, ignore=(255,), all_masks=True).labels.tolist()[0]
[0, 0, 0, 15, 15]

A lossless mask with no lossy signature keeps its specks and fringe values (they may be drawn
so) unless ``all_masks``; a mask where values that are no class id form large regions is
refused (:class:`TooMuchAbsorbed`): a repair would relabel it, not mend it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labelfix.checks.artifacts import (
    FRINGE_THRESHOLD,
    MIN_SUPPORT,
    OFFSETS,
    equal_neighbours,
    lossy_signature,
    stray_mask,
    suspect_values,
)
from labelfix.checks.rules import expected_text, is_valid
from labelfix.io.masks import smallest_int_dtype, value_counts

STRATEGIES = ("nearest", "ignore")

#: A value holding at least this share of a mask is one of its classes, not noise (what the
#: suggested ``num_classes`` is made from).
REGION_SHARE = 0.01
#: Default most share of a mask that pixels of values that are no class id may hold *inside
#: regions* (not specks: at least 3 of their 8 neighbours share their value) for :func:`repair`
#: to absorb them into their neighbours. Measured on masks made by labelfix.synthetic, saved as
#: JPEG (quality 90 to 50, resized bilinearly or not; 64x80 and 375x500, 6 seeds): with the
#: right ``num_classes`` such pixels hold at most 0.5%; with -n 2 or 10 instead of 21, 3% to
#: 49% (up to 83% on a real mask).
MAX_ABSORBED = 0.05


class TooMuchAbsorbed(ValueError):
    """Regions of values that are no class id hold a large share of a mask: absorbing them
    into their neighbours would relabel the mask, not repair it (``num_classes`` too small?)."""


@dataclass(frozen=True)
class RepairResult:
    """A repaired mask and how many pixels changed (``stray`` found, ``to_ignore`` made void).

    ``signature`` says what shows the mask is lossy (:func:`~labelfix.checks.artifacts.
    lossy_signature`, or ``"a JPEG file"``); without one, only values that are no class are
    repaired unless asked, and ``held`` counts the stray pixels of class values (specks, fringe
    values: hand-drawn detail, as far as anyone can tell) left as drawn.
    """

    labels: np.ndarray
    stray: int
    changed: int
    to_ignore: int
    signature: str | None = None
    held: int = 0


def repair(
    labels: np.ndarray,
    spec: RepairSpec | None = None,
    /,
    *,
    jpeg: bool = False,
    max_rounds: int = 64,
    **options,
) -> RepairResult:
    """Give every stray pixel the majority class of its 3x3 neighbourhood, or make it void, as
    ``spec`` (a :class:`RepairSpec`, or its fields as keyword ``options``) says.

    ``nearest`` grows valid labels into stray regions one ring per round (class ids and ignore
    values vote, stray pixels do not; ties go to the smallest value); stray pixels no valid
    label reaches become the ignore value. ``ignore`` makes every stray pixel the ignore value
    (``out``, else ``ignore[0]``).

    Specks and fringe values of a mask with no lossy signature (``jpeg``: it was read from a
    JPEG file, which is one) are left as drawn unless ``all_masks``; values that are no class
    are repaired either way. TooMuchAbsorbed (a ValueError) when values that are no class hold
    regions making up more than ``max_absorbed`` of the mask; ValueError when stray pixels have
    no class next to them and there is no ignore value.
    """
    spec = spec if spec is not None else RepairSpec(**options)
    num_classes, ignore, out, strategy = spec.num_classes, spec.ignore, spec.out, spec.strategy
    threshold, min_support, all_masks = spec.threshold, spec.min_support, spec.all_masks
    max_absorbed = spec.max_absorbed
    void = out if out is not None else (ignore[0] if ignore else None)
    support = equal_neighbours(labels)
    problem = absorbed_problem(
        labels, num_classes=num_classes, ignore=ignore, limit=max_absorbed, support=support
    )
    if problem is not None:
        raise TooMuchAbsorbed(problem)
    suspects = suspect_values(labels, ignore=ignore, threshold=threshold)
    stray = stray_mask(
        labels,
        num_classes=num_classes,
        ignore=ignore,
        min_support=min_support,
        suspects=suspects,
        support=support,
    )
    signature = (
        "a JPEG file" if jpeg else lossy_signature(labels, suspects=suspects, support=support)
    )
    held = 0
    if signature is None and not all_masks:
        invalid = ~is_valid(labels, num_classes, ignore)
        held = int(np.count_nonzero(stray & ~invalid))
        stray = invalid
    n_stray = int(stray.sum())
    if n_stray == 0:
        return RepairResult(labels, stray=0, changed=0, to_ignore=0, signature=signature, held=held)
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
                f"{n_void} stray pixels have no class next to them and no ignore value is given "
                "(give one with --ignore)"
            )
        work[leftover] = void
    result = work.astype(smallest_int_dtype(int(work.min()), int(work.max())))
    changed = int((result.astype(np.int64) != labels.astype(np.int64)).sum())
    return RepairResult(
        labels=result,
        stray=n_stray,
        changed=changed,
        to_ignore=n_void,
        signature=signature,
        held=held,
    )


def absorbed_problem(
    labels: np.ndarray,
    *,
    num_classes: int,
    ignore: Sequence[int] = (),
    limit: float = MAX_ABSORBED,
    support: np.ndarray | None = None,
) -> str | None:
    """Why repairing ``labels`` would relabel it rather than mend it, or None: pixels of values
    that are no class id lie inside regions of their value (not specks, by ``support``, as
    :func:`~labelfix.checks.artifacts.equal_neighbours` counts) and make up more than
    ``limit`` of the mask. JPEG noise is specks; a region is a class that ``num_classes`` does
    not count. Suggests the ``num_classes`` the values seen call for.

    >>> a = np.zeros((10, 10), np.uint8); a[:5] = 7
    >>> print(absorbed_problem(a, num_classes=2, ignore=(255,)))
    value 7 is no class id (expected 0..1 or ignore 255) yet fills 50% of the pixels, in \
regions: repair would absorb them into their neighbours (more than --max-absorbed 5%); the \
values seen suggest -n 8, or --ignore for a void value
    """
    if limit >= 1 or not labels.size:
        return None
    if support is None:
        support = equal_neighbours(labels)
    inside = support >= MIN_SUPPORT  # not specks: JPEG noise is specks
    solid = inside & ~is_valid(labels, num_classes, ignore)
    share = int(np.count_nonzero(solid)) / labels.size
    if share <= limit:
        return None
    # the values with regions of their own: classes, as far as the mask shows
    values, counts = value_counts(labels[inside])
    regions = values[(counts >= REGION_SHARE * labels.size) & ~np.isin(values, list(ignore))]
    named = regions[~is_valid(regions, num_classes, ignore)].tolist()
    if not named:  # many small regions: name the values with the most pixels in them
        found, found_counts = value_counts(labels[solid])
        named = sorted(found[np.argsort(-found_counts, kind="stable")[:6]].tolist())
    listed = ", ".join(map(str, named[:6])) + (
        f" and {len(named) - 6} more" if len(named) > 6 else ""
    )
    which = f"value {listed} is" if len(named) == 1 else f"values {listed} are"
    fill = "fills" if len(named) == 1 else "fill"
    top = max([*regions.tolist(), *named])
    return (
        f"{which} no class id ({expected_text(num_classes, ignore)}) yet {fill} "
        f"{100 * share:.0f}% of the pixels, in regions: repair would absorb them into their "
        f"neighbours (more than --max-absorbed {100 * limit:.0f}%); the values seen suggest "
        f"-n {top + 1}, or --ignore for a void value"
    )


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

    >>> a = np.zeros((40, 40), np.uint8); a[10:30, 10:30] = 15; a[5, 5] = 15
    >>> spec = RepairSpec(num_classes=21, ignore=(255,))
    >>> spec.apply(a).held, spec.apply(a).changed             # one speck: no lossy signature
    (1, 0)
    >>> spec.apply(a, jpeg=True).changed
    1
    """

    num_classes: int
    ignore: tuple[int, ...] = ()
    out: int | None = None
    strategy: str = "nearest"
    threshold: float = FRINGE_THRESHOLD
    min_support: int = MIN_SUPPORT
    all_masks: bool = False
    max_absorbed: float = MAX_ABSORBED

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignore", tuple(self.ignore))
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        if self.strategy == "ignore" and self.out is None and not self.ignore:
            raise ValueError("--strategy ignore needs an ignore value (--ignore or --out)")

    def apply(self, labels: np.ndarray, *, jpeg: bool = False) -> RepairResult:
        """:func:`repair` ``labels`` (``jpeg``: read from a JPEG file)."""
        return repair(labels, self, jpeg=jpeg)

    def to_dict(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "ignore": list(self.ignore),
            "out": self.out,
            "strategy": self.strategy,
            "fringe_threshold": self.threshold,
            "min_support": self.min_support,
            "all_masks": self.all_masks,
            "max_absorbed": self.max_absorbed,
        }


def value_changes(
    before: np.ndarray, after: np.ndarray
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(values, counts, outputs)``: for each value of ``before`` and each value its pixels
    have in ``after``, how many pixels; sorted by value, then output. What a rewrite reports per
    value, exactly as the file changes.

    >>> value_changes(np.array([[0, 7, 7, 15]]), np.array([[0, 0, 15, 15]]))
    ((0, 7, 7, 15), (1, 1, 1, 1), (0, 0, 15, 15))
    """
    values, counts = value_counts(before)
    totals = dict(zip(values.tolist(), counts.tolist(), strict=True))
    moved = before != after
    pairs: dict[tuple[int, int], int] = {}
    if moved.any():
        was, now = before[moved].astype(np.int64), after[moved].astype(np.int64)
        low, span = int(now.min()), int(now.max()) - int(now.min()) + 1
        keys, n = np.unique((was - int(was.min())) * span + (now - low), return_counts=True)
        for key, count in zip(keys.tolist(), n.tolist(), strict=True):
            v, o = divmod(key, span)
            v, o = v + int(was.min()), o + low
            pairs[(v, o)] = count
            totals[v] -= count
    pairs.update({(v, v): c for v, c in totals.items() if c})
    ordered = sorted(pairs.items())
    return (
        tuple(v for (v, _), _ in ordered),
        tuple(c for _, c in ordered),
        tuple(o for (_, o), _ in ordered),
    )
