"""Dataset statistics: per-file reports folded into what ``labelfix stats`` reports.

Each file is read once, in a worker process, and reduced to a small
:class:`~labelfix.checks.scan.FileReport`; the parent only folds reports together, so memory does
not grow with the number of files.

On a dataset of your own::

    stats = scan_dataset(["masks/"], ignore=(255,), num_classes=21)
    stats.void_share, stats.out_of_range
    # -> (0.054, {37: ['masks/0007.png']})
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from labelfix.checks import rules
from labelfix.checks.scan import FileReport, scan_file
from labelfix.io.inputs import watch_inputs
from labelfix.io.masks import KINDS, iter_mask_files
from labelfix.io.pairing import CONVENTIONS, Naming
from labelfix.labels.colormap import ColourPolicy
from labelfix.labels.weights import median_frequency_weights
from labelfix.parallel import ordered_map


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

    def to_json(self) -> dict:
        """Every field as JSON data, in order (partial results cross process and machine
        boundaries this way); :meth:`from_json` reverses it exactly."""
        return {
            "ignore": list(self.ignore),
            "num_classes": self.num_classes,
            "files": self.files,
            "label_files": self.label_files,
            "total_pixels": self.total_pixels,
            "void_pixels": self.void_pixels,
            "kinds": list(self.kinds.items()),
            "sizes": [[h, w, n] for (h, w), n in self.sizes.items()],
            "values": [
                [v, s.pixels, s.images, s.image_pixels, s.fringe] for v, s in self.values.items()
            ],
            "unreadable": [list(entry) for entry in self.unreadable],
            "not_labels": [list(entry) for entry in self.not_labels],
            "all_void": list(self.all_void),
            "out_of_range": [[v, list(files)] for v, files in self.out_of_range.items()],
            "suspects": [[v, list(entry)] for v, entry in self.suspects.items()],
            "specks": self.specks,
            "interpolated": list(self.interpolated),
            "artifacts": self.artifacts,
        }

    @classmethod
    def from_json(cls, data: dict) -> DatasetStats:
        """The DatasetStats :meth:`to_json` wrote.

        >>> stats = DatasetStats(ignore=(255,), files=2, sizes={(8, 10): 2})
        >>> DatasetStats.from_json(stats.to_json()) == stats
        True
        """
        return cls(
            ignore=tuple(data["ignore"]),
            num_classes=data["num_classes"],
            files=data["files"],
            label_files=data["label_files"],
            total_pixels=data["total_pixels"],
            void_pixels=data["void_pixels"],
            kinds=dict(data["kinds"]),
            sizes={(h, w): n for h, w, n in data["sizes"]},
            values={v: ValueStats(p, i, ip, f) for v, p, i, ip, f in data["values"]},
            unreadable=[tuple(entry) for entry in data["unreadable"]],
            not_labels=[tuple(entry) for entry in data["not_labels"]],
            all_void=list(data["all_void"]),
            out_of_range={v: list(files) for v, files in data["out_of_range"]},
            suspects={v: list(entry) for v, entry in data["suspects"]},
            specks=data["specks"],
            interpolated=list(data["interpolated"]),
            artifacts=data["artifacts"],
        )

    @property
    def unused_ignore(self) -> tuple[int, ...]:
        """Ignore values that match no pixel of any label mask scanned (a wrong void value?)."""
        if not self.label_files:
            return ()
        return tuple(v for v in self.ignore if v not in self.values)

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
        """Median-frequency balancing over the valid classes (:mod:`labelfix.labels.weights`).

        With ``num_classes`` every class id gets a weight (1.0 for a class that never occurs);
        without it, the class values that occur do. Empty when no class has a pixel.
        """
        ids = (
            list(range(self.num_classes))
            if self.num_classes is not None
            else sorted(v for v, s in self.values.items() if self.is_class(v) and s.pixels)
        )
        empty = ValueStats()
        pixels = [self.values.get(c, empty).pixels for c in ids]
        if not any(pixels):
            return {}
        image_pixels = [self.values.get(c, empty).image_pixels for c in ids]
        return dict(zip(ids, median_frequency_weights(pixels, image_pixels), strict=True))

    def weights_document(self, weights: dict[int, float]) -> list[dict]:
        """``[{"class": 3, "weight": 1.0, "absent": true}, ...]``: absent classes (no pixel,
        weight 1.0 unmeasured) marked."""
        return [
            {"class": c, "weight": w, **({} if self.values.get(c) else {"absent": True})}
            for c, w in sorted(weights.items())
        ]

    def to_dict(self) -> dict:
        """The whole report as plain JSON-ready data."""
        return {
            "ok": self.files > 0 and not self.unreadable,
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
            "class_weights": self.weights_document(self.class_weights()),
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


def unused_ignore_message(value: int, stats: DatasetStats) -> str:
    """``ignore value 255 matches no pixel of the 12 masks (values seen: 0..5)``: the rule's
    words (:func:`labelfix.checks.rules.unused_ignore_message`) for a dataset's stats."""
    return rules.unused_ignore_message(value, masks=stats.label_files, seen=stats.values)


def iter_reports(
    paths: Iterable[str | os.PathLike],
    *,
    glob: str | None = None,
    ignore: Sequence[int] = (),
    num_classes: int | None = None,
    images: str | os.PathLike | None = None,
    jobs: int | None = None,
    colours: ColourPolicy | None = None,
    artifacts: bool = False,
    naming: Naming = CONVENTIONS,
):
    """Yield a :class:`FileReport` per mask file under ``paths``, in sorted path order (with
    ``images``, each mask's image found by ``naming``).

    Raises :class:`~labelfix.io.inputs.InputsBusy` when an input directory is being rewritten
    in place or was left half-rewritten, before the first report, and when that changed while
    the files were read, after the last (see :mod:`labelfix.io.inputs`).
    """
    paths = list(paths)
    watch = watch_inputs([*paths, images])
    func = functools.partial(
        scan_file,
        ignore=tuple(ignore),
        num_classes=num_classes,
        images=os.fspath(images) if images is not None else None,
        colours=colours,
        artifacts=artifacts,
        naming=naming,
    )
    yield from ordered_map(func, iter_mask_files(paths, glob=glob), jobs=jobs)
    watch.confirm()


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
    ``read_options`` (``colours``, ``artifacts``) go to :func:`~labelfix.checks.scan.scan_file`.
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
