"""Per-file and dataset statistics of label masks: what ``stats`` and ``validate`` report.

Each file is read once, in a worker process, and reduced to a small :class:`FileReport`
(value histogram, void pixels, bad values with their first coordinate); the parent only folds
reports together, so memory does not grow with the number of files.

>>> stats = scan_dataset(["masks/"], ignore=(255,), num_classes=21)   # doctest: +SKIP
>>> stats.void_share, stats.out_of_range                               # doctest: +SKIP
(0.054, {37: ['masks/0007.png']})
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from labelfix.artifacts import (
    MIN_SUPPORT,
    SuspectValue,
    equal_neighbours,
    fringe_mask,
    suspect_values,
)
from labelfix.errors import UnreadableMask
from labelfix.masks import KINDS, Mask, iter_mask_files, read_mask
from labelfix.masks import value_counts as value_counts  # re-exported
from labelfix.pairing import find_image, image_size
from labelfix.parallel import ordered_map

if TYPE_CHECKING:
    from labelfix.colormap import Colormap


#: A mask with at least this many fringe-only values "looks interpolated".
INTERPOLATED_MIN_SUSPECTS = 3


@dataclass(frozen=True)
class BadValue:
    """A value that is neither a class id nor an ignore value, where it first occurs."""

    value: int
    pixels: int
    y: int
    x: int


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
    bad: list[BadValue] = []
    if num_classes is not None:
        flat = None
        for v, c in zip(values, counts, strict=True):
            v = int(v)
            if v in ignore_set or 0 <= v < num_classes:
                continue
            if flat is None:
                flat = mask.labels.ravel()
            y, x = divmod(int(np.argmax(flat == v)), width)
            bad.append(BadValue(value=v, pixels=int(c), y=y, x=x))
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
        bad_values=tuple(bad),
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
    colormap: Colormap | None = None,
    unknown_colour: str = "error",
    artifacts: bool = False,
) -> FileReport:
    """Read and reduce one mask file; never raises for a bad file (see ``FileReport.error``)."""
    path, relpath = item
    try:
        mask = read_mask(
            path,
            colormap=colormap,
            unknown_colour=unknown_colour,
            ignore=ignore[0] if ignore else 255,
        )
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
    image = find_image(images, relpath)
    if image is None:
        return (
            f"no image for this mask under {images} (looked for {os.path.splitext(relpath)[0]}.*)"
        )
    try:
        height, width = image_size(image)
    except (OSError, ValueError, SyntaxError):
        return f"its image {image} cannot be read"
    if (height, width) != (report.height, report.width):
        return (
            f"size {report.width}x{report.height} does not match its image {image} "
            f"({width}x{height})"
        )
    return None


@dataclass
class ValueStats:
    """Totals for one mask value across the dataset."""

    pixels: int = 0
    images: int = 0
    #: pixels of all images that contain the value (denominator of median-frequency balancing)
    image_pixels: int = 0
    #: with ``artifacts``: its pixels that lie on a boundary between two other values
    fringe: int = 0


@dataclass
class DatasetStats:
    """Everything ``labelfix stats`` reports. Built by :func:`scan_dataset`."""

    ignore: tuple[int, ...] = ()
    num_classes: int | None = None
    files: int = 0
    label_files: int = 0
    total_pixels: int = 0
    void_pixels: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    sizes: dict[tuple[int, int], int] = field(default_factory=dict)
    values: dict[int, ValueStats] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    not_labels: list[tuple[str, str]] = field(default_factory=list)
    all_void: list[str] = field(default_factory=list)
    out_of_range: dict[int, list[str]] = field(default_factory=dict)
    #: value -> [files where it is a suspected artifact, its pixels there, fringe pixels there]
    suspects: dict[int, list[int]] = field(default_factory=dict)
    specks: int = 0
    interpolated: list[str] = field(default_factory=list)
    artifacts: bool = False

    def add(self, report: FileReport) -> None:
        """Fold one file's report into the totals."""
        self.files += 1
        if report.error is not None:
            self.unreadable.append((report.path, report.error))
            return
        self.kinds[report.kind] = self.kinds.get(report.kind, 0) + 1
        size = (report.height, report.width)
        self.sizes[size] = self.sizes.get(size, 0) + 1
        if not report.is_label:
            self.not_labels.append((report.path, report.kind))
            return
        self.label_files += 1
        self.total_pixels += report.pixels
        self.void_pixels += report.void_pixels
        fringe = report.fringe or (0,) * len(report.values)
        self.artifacts = self.artifacts or bool(report.fringe)
        for v, c, f in zip(report.values, report.counts, fringe, strict=True):
            vs = self.values.get(v)
            if vs is None:
                vs = self.values[v] = ValueStats()
            vs.pixels += c
            vs.images += 1
            vs.image_pixels += report.pixels
            vs.fringe += f
        if report.looks_interpolated:
            self.interpolated.append(report.path)
        if self.ignore and report.all_void:
            self.all_void.append(report.path)
        for bad in report.bad_values:
            self.out_of_range.setdefault(bad.value, []).append(report.path)
        for sv in report.suspects:
            entry = self.suspects.setdefault(sv.value, [0, 0, 0])
            entry[0] += 1
            entry[1] += sv.pixels
            entry[2] += sv.fringe
        self.specks += report.specks

    def merge(self, other: DatasetStats) -> None:
        """Fold another partial result (same ignore/num_classes) into this one.

        Totals add up; ``other``'s file lists are appended after this one's, and its sizes
        and values not seen here are added after those that are (first-seen order).
        """
        self.files += other.files
        self.label_files += other.label_files
        self.total_pixels += other.total_pixels
        self.void_pixels += other.void_pixels
        for kind, n in other.kinds.items():
            self.kinds[kind] = self.kinds.get(kind, 0) + n
        for size, n in other.sizes.items():
            self.sizes[size] = self.sizes.get(size, 0) + n
        for v, theirs in other.values.items():
            vs = self.values.get(v)
            if vs is None:
                vs = self.values[v] = ValueStats()
            vs.pixels += theirs.pixels
            vs.images += theirs.images
            vs.image_pixels += theirs.image_pixels
            vs.fringe += theirs.fringe
        self.artifacts = self.artifacts or other.artifacts
        self.interpolated.extend(other.interpolated)
        self.unreadable.extend(other.unreadable)
        self.not_labels.extend(other.not_labels)
        self.all_void.extend(other.all_void)
        for v, files in other.out_of_range.items():
            self.out_of_range.setdefault(v, []).extend(files)
        for v, (f, p, fr) in other.suspects.items():
            entry = self.suspects.setdefault(v, [0, 0, 0])
            entry[0] += f
            entry[1] += p
            entry[2] += fr
        self.specks += other.specks

    @property
    def void_share(self) -> float:
        return self.void_pixels / self.total_pixels if self.total_pixels else 0.0

    def is_class(self, value: int) -> bool:
        if value in self.ignore:
            return False
        if self.num_classes is None:
            return value >= 0
        return 0 <= value < self.num_classes

    def class_weights(self) -> dict[int, float]:
        """Median-frequency balancing (Eigen & Fergus 2015) over the valid classes.

        ``freq(c) = pixels(c) / pixels of the images containing c`` and
        ``weight(c) = median(freq) / freq(c)``. With ``num_classes`` every class id gets a
        weight; a class that never occurs gets 0.0 (it has no pixels to weight).
        """
        freqs = {
            v: s.pixels / s.image_pixels
            for v, s in self.values.items()
            if self.is_class(v) and s.image_pixels
        }
        if not freqs:
            return {}
        median = float(np.median(list(freqs.values())))
        ids = range(self.num_classes) if self.num_classes is not None else sorted(freqs)
        return {c: (median / freqs[c] if c in freqs else 0.0) for c in ids}

    def to_dict(self) -> dict:
        """The whole report as plain JSON-ready data."""
        return {
            "files": self.files,
            "label_files": self.label_files,
            "total_pixels": self.total_pixels,
            "ignore": list(self.ignore),
            "num_classes": self.num_classes,
            "kinds": [
                {"kind": k, "files": n, "warning": KINDS.get(k)}
                for k, n in sorted(self.kinds.items(), key=lambda kv: list(KINDS).index(kv[0]))
            ],
            "sizes": [
                {"height": h, "width": w, "files": n}
                for (h, w), n in sorted(self.sizes.items(), key=lambda kv: -kv[1])
            ],
            "values": [
                {
                    "value": v,
                    "pixels": s.pixels,
                    "share": s.pixels / self.total_pixels if self.total_pixels else 0.0,
                    "images": s.images,
                    "role": self.role(v),
                    **({"fringe_share": s.fringe / s.pixels} if self.artifacts else {}),
                }
                for v, s in sorted(self.values.items())
            ],
            "void": {
                "pixels": self.void_pixels,
                "share": self.void_share,
                "all_void_files": list(self.all_void),
            }
            if self.ignore
            else None,
            "out_of_range": (
                [{"value": v, "files": files} for v, files in sorted(self.out_of_range.items())]
                if self.num_classes is not None
                else None
            ),
            "class_weights": [
                {"class": c, "weight": w} for c, w in sorted(self.class_weights().items())
            ],
            "suspected_artifacts": [
                {"value": v, "files": f, "pixels": p, "fringe_pixels": fr}
                for v, (f, p, fr) in sorted(self.suspects.items())
            ],
            "specks": self.specks,
            "interpolated_files": list(self.interpolated),
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
            "not_labels": [{"path": p, "kind": k} for p, k in self.not_labels],
        }

    def role(self, value: int) -> str:
        if value in self.ignore:
            return "ignore"
        if self.num_classes is not None and not 0 <= value < self.num_classes:
            return "out of range"
        return "class"


def report_to_dict(report: FileReport) -> dict:
    """One file's report as JSON-ready data (``--per-image`` rows)."""
    d = asdict(report)
    d["bad_values"] = [asdict(b) for b in report.bad_values]
    d["suspects"] = [asdict(sv) for sv in report.suspects]
    d["values"] = list(report.values)
    d["counts"] = list(report.counts)
    return d


def iter_reports(
    paths: Iterable[str | os.PathLike],
    *,
    glob: str | None = None,
    ignore: Sequence[int] = (),
    num_classes: int | None = None,
    images: str | os.PathLike | None = None,
    jobs: int | None = None,
    colormap: Colormap | None = None,
    unknown_colour: str = "error",
    artifacts: bool = False,
):
    """Yield a :class:`FileReport` per mask file under ``paths``, in sorted path order."""
    func = functools.partial(
        scan_file,
        ignore=tuple(ignore),
        num_classes=num_classes,
        images=os.fspath(images) if images is not None else None,
        colormap=colormap,
        unknown_colour=unknown_colour,
        artifacts=artifacts,
    )
    yield from ordered_map(func, iter_mask_files(list(paths), glob=glob), jobs=jobs)


def scan_dataset(
    paths: Iterable[str | os.PathLike],
    *,
    glob: str | None = None,
    ignore: Sequence[int] = (),
    num_classes: int | None = None,
    images: str | os.PathLike | None = None,
    jobs: int | None = None,
    on_file: Callable[[FileReport], None] | None = None,
    **read_options,
) -> DatasetStats:
    """Scan every mask under ``paths`` and return the dataset totals.

    ``on_file`` is called with each file's report as it arrives (progress bars, per-image rows).
    ``read_options`` (``colormap``, ``unknown_colour``, ``artifacts``) go to :func:`scan_file`.
    """
    stats = DatasetStats(ignore=tuple(ignore), num_classes=num_classes)
    for report in iter_reports(
        paths,
        glob=glob,
        ignore=ignore,
        num_classes=num_classes,
        images=images,
        jobs=jobs,
        **read_options,
    ):
        stats.add(report)
        if on_file is not None:
            on_file(report)
    return stats
