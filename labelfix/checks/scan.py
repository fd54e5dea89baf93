"""The per-file scan: read one mask once and reduce it to a small :class:`FileReport`.

The report holds the value histogram, void pixels, bad values with their first coordinate (the
rule of :mod:`labelfix.checks.rules`) and, on request, lossy-artifact suspects. Reports are made
in worker processes and folded by :mod:`labelfix.checks.stats`.

On a dataset of your own::

    report = scan_file(("masks/0007.png", "0007.png"), ignore=(255,), num_classes=21)
    report.bad_values
    # -> (BadValue(value=37, pixels=412, y=3, x=118, image=None, source=None),)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from labelfix.checks.artifacts import (
    INTERPOLATED_MIN_SUSPECTS,
    MIN_SUPPORT,
    SuspectValue,
    equal_neighbours,
    fringe_mask,
    suspect_values,
)
from labelfix.checks.rules import BadValue, find_bad_values
from labelfix.errors import UnreadableMask
from labelfix.io import fs
from labelfix.io.images import (
    decode_problem,
    displayed_size,
    exif_orientation,
    image_size,
    orientation_text,
)
from labelfix.io.masks import Mask
from labelfix.io.pairing import CONVENTIONS, AmbiguousImage, Naming, find_image, looked_for
from labelfix.labels.colormap import ColourPolicy, read_label_mask


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
    #: what to know about its image that is no error (an EXIF orientation TensorFlow ignores)
    image_note: str | None = None
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
    naming: Naming = CONVENTIONS,
) -> FileReport:
    """Read and reduce one mask file; never raises for a bad file (see ``FileReport.error``).
    With ``images``, its image is found by ``naming`` (:mod:`labelfix.io.pairing`)."""
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
        problem, note = _image_problem(images, relpath, report, naming)
        if problem or note:
            report = FileReport(**{**_fields(report), "image_problem": problem, "image_note": note})
    return report


def _fields(report: FileReport) -> dict:
    return {name: getattr(report, name) for name in report.__dataclass_fields__}


def _image_problem(
    images: str, relpath: str, report: FileReport, naming: Naming
) -> tuple[str | None, ...]:
    """``(problem, note)`` about the image of a mask: it is missing, unreadable or of another
    size (a problem), or has an EXIF orientation that TensorFlow ignores (a note, unless it
    explains a size mismatch: then the problem says so)."""
    try:
        image = find_image(images, relpath, naming=naming, mask=report.path)
    except AmbiguousImage as err:  # a problem of this mask; the other files keep going
        return f"{len(err.images)} images match it: {', '.join(err.images)}", None
    if image is None:
        looked = looked_for(relpath, naming)
        return f"no image for this mask under {images} (looked for {looked})", None
    try:
        data = fs.read_bytes(image)
        problem = decode_problem(data)
        if problem is not None:
            return f"its image {image}: {problem}", None
        height, width = image_size(data)
    except (OSError, ValueError, SyntaxError):
        return f"its image {image} cannot be read", None
    problem, note = size_problem(
        image, (height, width), (report.height, report.width), exif_orientation(data)
    )
    return problem, None if note is None else f"its image {image} has {note}"


def size_problem(
    image: str,
    stored: tuple[int, int],
    mask: tuple[int, int],
    orientation: int,
    *,
    exif_option: str = "labelfix to-tfrecord --exif",
) -> tuple[str | None, str | None]:
    """``(problem, note)`` of a mask of size ``mask`` beside an image stored at ``stored``
    (both ``(height, width)``) with an EXIF ``orientation``; ``exif_option`` is the option
    that rotates (``... rotate``) or keeps (``... keep``) such images. The note starts with
    ``EXIF orientation N``: what the image has.

    TensorFlow reads the stored pixels, whatever the EXIF orientation; viewers (and annotation
    tools) show them turned. When the mask matches only the displayed size, the problem says
    so; when the sizes match, the note names the orientation and what the mask follows.

    >>> print(size_problem("a.jpg", (480, 640), (640, 480), 6, exif_option="--exif")[0])
    size 480x640 does not match its image a.jpg: the image is stored 640x480 but EXIF \
orientation 6 displays it as 480x640, the mask's size; TensorFlow reads the stored pixels \
(--exif rotate stores the image as displayed)
    """
    (height, width), (mh, mw) = stored, mask
    shown = displayed_size(height, width, orientation)
    if (height, width) != (mh, mw):
        base = f"size {mw}x{mh} does not match its image {image}"
        if orientation != 1 and shown == (mh, mw):
            return (
                f"{base}: the image is stored {width}x{height} but EXIF orientation "
                f"{orientation} displays it as {shown[1]}x{shown[0]}, the mask's size; "
                f"TensorFlow reads the stored pixels ({exif_option} rotate stores the image as "
                "displayed)"
            ), None
        return f"{base} ({width}x{height})", None
    if orientation == 1:
        return None, None
    head = f"{orientation_text(orientation)}; TensorFlow reads the stored"
    if shown != (height, width):  # the sizes say it: the mask follows the stored pixels
        return None, (
            f"{head} pixels, {width}x{height} like the mask, which follows them and not the "
            f"displayed {shown[1]}x{shown[0]} picture ({exif_option} keep stores it as it is)"
        )
    return None, (
        f"{head} pixels: a mask drawn on the displayed picture does not align with them "
        f"({exif_option} rotate stores the image as displayed, {exif_option} keep as stored)"
    )


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
