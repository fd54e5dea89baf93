"""The per-file scan: read one mask once and reduce it to a small :class:`FileReport`.

The report holds the value histogram, void pixels, bad values with their first coordinate (the
rule of :mod:`labelfix.checks.rules`) and, on request, lossy-artifact suspects. Reports are made
in worker processes and folded by :mod:`labelfix.checks.stats`.

>>> report = scan_file(("masks/0007.png", "0007.png"), ignore=(255,),
...                    num_classes=21)                    # doctest: +SKIP
>>> report.bad_values                                     # doctest: +SKIP
(BadValue(value=37, pixels=412, y=3, x=118, source=None),)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from labelfix.checks.artifacts import (
    MIN_SUPPORT,
    SuspectValue,
    equal_neighbours,
    fringe_mask,
    suspect_values,
)
from labelfix.checks.rules import BadValue, find_bad_values
from labelfix.errors import UnreadableMask
from labelfix.io import fs
from labelfix.io.images import AmbiguousImage, decode_problem, find_image, image_size
from labelfix.io.masks import Mask
from labelfix.labels.colormap import ColourPolicy, read_label_mask

#: A mask with at least this many fringe-only values "looks interpolated".
INTERPOLATED_MIN_SUSPECTS = 3


@dataclass(frozen=True)
class FileReport:
    """What one mask file holds. ``error`` is set (and the rest empty) when it can't be used."""

    path: str
    relpath: str
    kind: str | None = None
    height: int = 0
    width: int = 0
    dtype: str | None = None
    values: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    void_pixels: int = 0
    bad_values: tuple[BadValue, ...] = ()
    error: str | None = None
    image_problem: str | None = None
    #: with ``artifacts=True``: values whose pixels lie (almost) only on fringes, and specks
    suspects: tuple[SuspectValue, ...] = ()
    specks: int = 0
    #: with ``artifacts=True``: per value (aligned with ``values``), its pixels on fringes
    fringe: tuple[int, ...] = ()

    @property
    def looks_interpolated(self) -> bool:
        """Several values lie only on fringes: the mask was resized or compressed lossily."""
        return len(self.suspects) >= INTERPOLATED_MIN_SUSPECTS

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def all_void(self) -> bool:
        return self.error is None and self.pixels > 0 and self.void_pixels == self.pixels

    @property
    def is_label(self) -> bool:
        return self.error is None and self.kind not in ("colour", "jpeg")


def scan_mask(
    mask: Mask,
    relpath: str,
    *,
    ignore: Sequence[int] = (),
    num_classes: int | None = None,
    artifacts: bool = False,
) -> FileReport:
    """Reduce a decoded mask to its :class:`FileReport`."""
    height, width = mask.shape
    if not mask.is_label:
        return FileReport(
            path=mask.path,
            relpath=relpath,
            kind=mask.kind,
            height=height,
            width=width,
            dtype=str(mask.dtype),
        )
    values, counts = mask.value_counts()
    ignore_set = set(ignore)
    void = int(sum(int(c) for v, c in zip(values, counts, strict=True) if int(v) in ignore_set))
    bad: tuple[BadValue, ...] = ()
    if num_classes is not None:
        bad = find_bad_values(
            values, counts, lambda: mask.labels, num_classes=num_classes, void=ignore
        )
    suspects: tuple[SuspectValue, ...] = ()
    specks = 0
    fringe: tuple[int, ...] = ()
    if artifacts:
        labels = mask.labels
        on_fringe = fringe_mask(labels)
        suspects = tuple(suspect_values(labels, ignore=ignore, fringe=on_fringe))
        specks = int((equal_neighbours(labels) < MIN_SUPPORT).sum())
        fv, fc = np.unique(labels[on_fringe], return_counts=True)
        by_value = dict(zip(fv.tolist(), fc.tolist(), strict=True))
        fringe = tuple(by_value.get(int(v), 0) for v in values)
    return FileReport(
        path=mask.path,
        relpath=relpath,
        kind=mask.kind,
        height=height,
        width=width,
        dtype=str(mask.dtype),
        values=tuple(int(v) for v in values),
        counts=tuple(int(c) for c in counts),
        void_pixels=void,
        bad_values=bad,
        suspects=suspects,
        specks=specks,
        fringe=fringe,
    )


def scan_file(
    item: tuple[str, str],
    *,
    ignore: Sequence[int] = (),
    num_classes: int | None = None,
    images: str | None = None,
    colours: ColourPolicy | None = None,
    artifacts: bool = False,
) -> FileReport:
    """Read and reduce one mask file; never raises for a bad file (see ``FileReport.error``)."""
    path, relpath = item
    try:
        mask = read_label_mask(path, colours=colours)
        report = scan_mask(
            mask, relpath, ignore=ignore, num_classes=num_classes, artifacts=artifacts
        )
    except UnreadableMask as err:
        return FileReport(path=path, relpath=relpath, error=err.reason)
    except MemoryError:
        return FileReport(path=path, relpath=relpath, error="out of memory while decoding")
    if images is not None:
        problem = _image_problem(images, relpath, report)
        if problem:
            report = FileReport(**{**_fields(report), "image_problem": problem})
    return report


def _fields(report: FileReport) -> dict:
    return {name: getattr(report, name) for name in report.__dataclass_fields__}


def _image_problem(images: str, relpath: str, report: FileReport) -> str | None:
    try:
        image = find_image(images, relpath)
    except AmbiguousImage as err:  # a problem of this mask; the other files keep going
        return f"{len(err.images)} images match it: {', '.join(err.images)}"
    if image is None:
        return (
            f"no image for this mask under {images} (looked for {os.path.splitext(relpath)[0]}.*)"
        )
    try:
        problem = decode_problem(fs.read_bytes(image))
        if problem is not None:
            return f"its image {image}: {problem}"
        height, width = image_size(image)
    except (OSError, ValueError, SyntaxError):
        return f"its image {image} cannot be read"
    if (height, width) != (report.height, report.width):
        return (
            f"size {report.width}x{report.height} does not match its image {image} "
            f"({width}x{height})"
        )
    return None


def report_to_dict(report: FileReport) -> dict:
    """One file's report as JSON-ready data (``--per-image`` rows)."""
    d = asdict(report)
    d["bad_values"] = [
        {k: v for k, v in asdict(b).items() if k != "source" or v is not None}
        for b in report.bad_values
    ]
    d["suspects"] = [asdict(sv) for sv in report.suspects]
    d["values"] = list(report.values)
    d["counts"] = list(report.counts)
    return d
