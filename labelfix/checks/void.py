"""Which value of a dataset marks void, told from the masks themselves, with the evidence.

Conventions differ (255 in VOC and Cityscapes trainIds, 0 in ADE20K, -1 in labelme's ``.npy``),
and binary masks store their *foreground* as 255. What tells them apart is where a value lies:

* VOC-style void is a thin band on region boundaries: nearly all its pixels lie within
  :data:`THIN_RADIUS` px of another value, and it borders two or more other values;
* binary foreground is solid regions beside one other value (0);
* a negative value is never a class id;
* ADE20K's "other" (0, reduce-zero-label) is in every image, beside ids up to 150.

:func:`value_shapes` measures one mask; :class:`ValueTotals` adds them up over a dataset (or a
sample of it); :func:`guess_void` reads them as one or two :class:`Reading` s, each saying how
sure it is. Where the data cannot decide (255 filling regions beside only a few classes), there
are two readings and no guess.

>>> m = np.zeros((12, 12), np.uint8); m[2:9, 2:9] = 255; m[3:8, 3:8] = 15
>>> [(s.value, s.pixels, s.thin, s.neighbours) for s in value_shapes(m, (255,))]
[(255, 24, 24, 2)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: A pixel lies "on a boundary" when another value is at most this many pixels away (VOC's void
#: borders are about 5 px wide: every pixel of one is within 3 px of a region).
THIN_RADIUS = 3
#: A value with at least this share of its pixels on boundaries is boundary void.
THIN_SHARE = 0.6
#: Binary masks: 0/255 with less than this share of the 255s on boundaries are solid
#: foreground; with more, thin lines, which may be a thin class or void.
LINE_SHARE = 0.9
#: Values tried as void: the conventions' markers.
CANDIDATES = (255, 65535, 0)
#: ADE20K's ids: 0 (other) and 1..150.
ADE20K_TOP = 150


@dataclass(frozen=True)
class ValueShape:
    """Where one value lies in one mask: its pixels, those within :data:`THIN_RADIUS` px of
    another value, and how many distinct other values touch it (4-neighbourhood)."""

    value: int
    pixels: int
    thin: int
    neighbours: int


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels in every direction (a square), by shifted ORs."""
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for step in range(1, radius + 1):
            if step >= out.shape[axis]:
                break
            head = [slice(None)] * 2
            tail = [slice(None)] * 2
            head[axis], tail[axis] = slice(step, None), slice(None, -step)
            grown[tuple(head)] |= out[tuple(tail)]
            grown[tuple(tail)] |= out[tuple(head)]
        out = grown
    return out


def value_shapes(labels: np.ndarray, values: Iterable[int]) -> tuple[ValueShape, ...]:
    """The :class:`ValueShape` of each of ``values`` that occurs in ``labels`` (``[H, W]``)."""
    found = []
    for value in values:
        here = labels == value
        pixels = int(np.count_nonzero(here))
        if not pixels:
            continue
        near = _dilate(~here, THIN_RADIUS) & here
        touching: set[int] = set()
        for a, b in (
            (labels[1:, :], here[:-1, :]),
            (labels[:-1, :], here[1:, :]),
            (labels[:, 1:], here[:, :-1]),
            (labels[:, :-1], here[:, 1:]),
        ):
            beside = a[b]
            touching.update(int(v) for v in np.unique(beside[beside != value]))
        found.append(ValueShape(value, pixels, int(np.count_nonzero(near)), len(touching)))
    return tuple(found)


@dataclass
class ValueTotals:
    """Per value, over many masks: pixels, files, pixels on boundaries, and files where it
    borders two or more other values (of those where its shape was measured). ``files``
    counts the masks added."""

    files: int = 0
    pixels: dict[int, int] = field(default_factory=dict)
    images: dict[int, int] = field(default_factory=dict)
    thin: dict[int, int] = field(default_factory=dict)
    between: dict[int, int] = field(default_factory=dict)
    shaped: dict[int, int] = field(default_factory=dict)
    #: per value, the masks where its shape was measured
    measured: dict[int, int] = field(default_factory=dict)

    def add(
        self,
        values: Sequence[int],
        counts: Sequence[int],
        shapes: Sequence[ValueShape] = (),
    ) -> None:
        """Add one mask: its distinct values and their pixels, and the shapes measured."""
        self.files += 1
        for v, c in zip(values, counts, strict=True):
            self.pixels[v] = self.pixels.get(v, 0) + int(c)
            self.images[v] = self.images.get(v, 0) + 1
        self.add_shapes(shapes)

    def add_shapes(self, shapes: Sequence[ValueShape]) -> None:
        """Add the shapes of values measured in one mask."""
        for s in shapes:
            self.thin[s.value] = self.thin.get(s.value, 0) + s.thin
            self.shaped[s.value] = self.shaped.get(s.value, 0) + s.pixels
            self.between[s.value] = self.between.get(s.value, 0) + (s.neighbours >= 2)
            self.measured[s.value] = self.measured.get(s.value, 0) + 1

    def thin_share(self, value: int) -> float | None:
        """The share of ``value``'s measured pixels that lie on boundaries (None: unmeasured)."""
        shaped = self.shaped.get(value, 0)
        return self.thin.get(value, 0) / shaped if shaped else None

    @property
    def total(self) -> int:
        return sum(self.pixels.values())


@dataclass(frozen=True)
class Reading:
    """One way to read the values: what is void (``ignore``), which values change (``maps``),
    the classes (``num_classes``, or a ``preset``), and whether the masks are binary."""

    assumption: str
    ignore: tuple[int, ...] = ()
    maps: tuple[tuple[int, int], ...] = ()
    num_classes: int | None = None
    preset: str | None = None
    binary: bool = False


@dataclass(frozen=True)
class VoidGuess:
    """What the masks say about void: one reading when they decide it, two when they cannot
    (``decided`` False). ``confidence`` is ``high``, ``medium`` or ``low``."""

    readings: tuple[Reading, ...]
    confidence: str
    summary: str
    evidence: tuple[str, ...] = ()

    @property
    def decided(self) -> bool:
        return len(self.readings) == 1

    @property
    def ignore(self) -> tuple[int, ...] | None:
        """The void values of the one reading; None when the data cannot decide."""
        return self.readings[0].ignore if self.decided else None


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _range(values: Sequence[int]) -> str:
    values = sorted(values)
    if not values:
        return "none"
    if len(values) > 4 and values[-1] - values[0] + 1 == len(values):
        return f"{values[0]}..{values[-1]}"
    shown = ", ".join(map(str, values[:8]))
    return shown + (f", ... ({len(values)} values)" if len(values) > 8 else "")


def _shape_evidence(totals: ValueTotals, value: int) -> str:
    share = totals.thin_share(value)
    files = totals.measured.get(value, 0)
    between = totals.between.get(value, 0)
    return (
        f"{_pct(share or 0.0)} of the pixels of {value} lie within {THIN_RADIUS} px of another "
        f"value, and it borders two or more other values in {between} of the {files} mask(s) "
        "holding it"
    )


def guess_void(totals: ValueTotals) -> VoidGuess:
    """Read the void value from the values of label masks and the shapes of the candidates
    (:data:`CANDIDATES` and negative values, measured with :func:`value_shapes`)."""
    values = sorted(v for v, p in totals.pixels.items() if p)
    files = totals.files
    negative = [v for v in values if v < 0]
    classes = [v for v in values if v >= 0]
    if negative:
        listed = ", ".join(map(str, negative))
        return VoidGuess(
            (Reading(f"{listed} is void", ignore=tuple(negative), num_classes=_top(classes)),),
            "high",
            f"{listed} is void: a negative value is never a class id (labelme's __ignore__)",
            (f"{listed} in {max(totals.images[v] for v in negative)} of {files} mask(s)",),
        )
    for top in (255, 65535):
        if top in totals.pixels:
            return _guess_top(totals, top, [v for v in classes if v != top])
    return _guess_without_top(totals, classes)


def _top(classes: Sequence[int]) -> int | None:
    return max(classes) + 1 if classes else None


def _guess_top(totals: ValueTotals, top: int, others: list[int]) -> VoidGuess:
    """255 (or 65535) is in the masks: boundary void, binary foreground, or undecided."""
    share = totals.thin_share(top)
    shape = _shape_evidence(totals, top)
    seen = f"values {_range([*others, top])} in {totals.files} mask(s)"
    void = Reading(f"{top} is void", ignore=(top,), num_classes=_top(others))
    if others == [0] or not others:
        foreground = Reading(
            f"{top} is the foreground (binary masks)",
            maps=((top, 1),),
            num_classes=2,
            binary=True,
        )
        if share is not None and share < LINE_SHARE:
            confidence = "high" if share < THIN_SHARE else "medium"
            return VoidGuess(
                (foreground,),
                confidence,
                f"binary 0/{top} masks: {top} is the foreground, a class, not void",
                (seen, shape + ": solid regions, not boundary bands"),
            )
        return VoidGuess(
            (foreground, void),
            "low",
            f"the masks hold only 0 and {top}, and {top} lies on thin lines: it may be a thin "
            f"foreground (edges, cracks, vessels) or void around unlabelled objects",
            (seen, shape),
        )
    between = totals.between.get(top, 0)
    if share is not None and share >= THIN_SHARE and 2 * between >= totals.measured.get(top, 0):
        return VoidGuess(
            (void,),
            "high",
            f"{top} is void (VOC style): it lies on region boundaries",
            (seen, shape),
        )
    gap = top - max(others)
    if len(others) > 3 and gap > max(others):
        return VoidGuess(
            (void,),
            "medium",
            f"{top} is probably void: it lies far above the class ids {_range(others)}",
            (seen, shape),
        )
    as_class = Reading(
        f"{top} is class {max(others) + 1}",
        maps=((top, max(others) + 1),),
        num_classes=max(others) + 2,
    )
    return VoidGuess(
        (void, as_class),
        "low",
        f"{top} fills regions beside only {len(others)} other value(s): it may be void or a "
        "class; the data cannot decide",
        (seen, shape),
    )


def _guess_without_top(totals: ValueTotals, classes: list[int]) -> VoidGuess:
    """No 255, nothing negative: ADE20K's 0, or no void at all."""
    files = totals.files
    if not classes:
        return VoidGuess((Reading("no values"),), "low", "the masks hold no values", ())
    zero_files = totals.images.get(0, 0)
    seen = f"values {_range(classes)} in {files} mask(s); 0 in {zero_files} of them"
    zero_share = totals.pixels.get(0, 0) / totals.total if totals.total else 0.0
    top = max(classes)
    if zero_files and zero_files >= 0.9 * files and 20 < top <= ADE20K_TOP and zero_share < 0.5:
        return VoidGuess(
            (
                Reading(
                    "0 is void (ADE20K's reduce-zero-label: k becomes k-1)",
                    ignore=(0,),
                    num_classes=ADE20K_TOP,
                    preset="ade20k",
                ),
            ),
            "medium",
            f"0 is ADE20K-style void ('other'): it is in {zero_files} of {files} mask(s), "
            f"beside ids up to {top} (ADE20K: 1..150)",
            (seen, f"0 covers {_pct(zero_share)} of the pixels"),
        )
    share = totals.thin_share(0)
    if share is not None and share >= THIN_SHARE and len(classes) > 2:
        shape = _shape_evidence(totals, 0)
        return VoidGuess(
            (
                Reading("0 is a class", num_classes=top + 1),
                Reading("0 is void", ignore=(0,), num_classes=top + 1),
            ),
            "low",
            "0 lies on region boundaries: it may be void or a class; the data cannot decide",
            (seen, shape),
        )
    return VoidGuess(
        (Reading("no value is void", num_classes=top + 1),),
        "medium",
        f"no value marks void: {_range(classes)} are all class ids",
        (seen,),
    )


#: Masks read again per candidate value to see where it lies (``stats`` without ``--ignore``).
SHAPE_SAMPLE = 12


def is_candidate(value: int) -> bool:
    """Whether a value is tried as void: 255, 65535, 0, or negative."""
    return value in CANDIDATES or value < 0


def guess_from_counts(
    pixels: Mapping[int, int],
    images: Mapping[int, int],
    files: int,
    samples: Iterable[np.ndarray] = (),
) -> VoidGuess:
    """:func:`guess_void` from a dataset's totals per value (``pixels``, ``images`` holding
    it, of ``files`` masks) and the label arrays of a few masks holding the candidates, where
    their shapes are measured."""
    totals = ValueTotals(files=files, pixels=dict(pixels), images=dict(images))
    wanted = [v for v in pixels if is_candidate(v)]
    for labels in samples:
        totals.add_shapes(value_shapes(labels, wanted))
    return guess_void(totals)


def describe_values(pixels: Mapping[int, int]) -> str:
    """``0..5, 255``: the values seen, compactly."""
    return _range([v for v, p in pixels.items() if p])
