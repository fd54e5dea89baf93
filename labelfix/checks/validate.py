"""Check masks against ``num_classes`` and the ignore values; the messages every command shares.

On a dataset of your own::

    result = validate(["masks/"], num_classes=21, ignore=(255,))
    result.ok, result.errors[0].message
    # -> (False, 'masks/0007.png: value 37 is not a class id (expected 0..20 or ignore 255):
    #     412 px, first at y=3 x=118')
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from labelfix.checks.rules import bad_value_message
from labelfix.checks.scan import FileReport
from labelfix.checks.stats import DatasetStats, scan_dataset, unused_ignore_message
from labelfix.io.masks import KINDS
from labelfix.io.pairing import CONVENTIONS, Naming, check_images_folder


@dataclass(frozen=True)
class Problem:
    """One finding about one file. ``level`` is ``"error"`` (exit 1) or ``"warning"``."""

    path: str
    level: str
    code: str
    message: str
    value: int | None = None
    pixels: int | None = None
    y: int | None = None
    x: int | None = None


#: Errors a file's storage kind alone causes.
_KIND_ERRORS = {
    "colour": "colour mask: colours are not class ids (convert it with a colormap)",
    "jpeg": "JPEG mask: lossy compression puts values that are no class on every edge",
}
_LOSSY = "(bilinear resizing, anti-aliasing or JPEG; see labelfix repair)"


def file_problems(
    report: FileReport, *, num_classes: int, ignore: Sequence[int] = ()
) -> list[Problem]:
    """Everything wrong with one file, errors first."""
    path = report.path
    if report.error is not None:
        return [Problem(path, "error", "unreadable", f"{path}: {report.error}")]
    problems: list[Problem] = []
    if report.kind in _KIND_ERRORS:
        problems.append(Problem(path, "error", report.kind, f"{path}: {_KIND_ERRORS[report.kind]}"))
    for bad in report.bad_values:
        message = bad_value_message(path, bad, num_classes=num_classes, ignore=ignore)
        problems.append(
            Problem(path, "error", "value", message, bad.value, bad.pixels, bad.y, bad.x)
        )
    if report.image_problem:
        problems.append(Problem(path, "error", "image", f"{path}: {report.image_problem}"))
    return problems + _warnings(report, ignore)


def _warnings(report: FileReport, ignore: Sequence[int]) -> list[Problem]:
    path = report.path
    found: list[Problem] = []
    if report.kind == "palette":
        found.append(
            Problem(path, "warning", "palette", f"{path}: palette PNG: {KINDS['palette']}")
        )
    if report.looks_interpolated:
        values = ", ".join(str(sv.value) for sv in report.suspects)
        message = (
            f"{path}: looks interpolated: values {values} lie only on boundaries between "
            f"two other values {_LOSSY}"
        )
        found.append(Problem(path, "warning", "interpolated", message))
    else:
        for sv in report.suspects:
            message = (
                f"{path}: value {sv.value} looks like a lossy artifact: "
                f"{100 * sv.share:.0f}% of its {sv.pixels} px lie on boundaries between two "
                f"other values {_LOSSY}"
            )
            found.append(
                Problem(path, "warning", "artifact", message, value=sv.value, pixels=sv.pixels)
            )
    if report.specks and report.pixels and report.specks / report.pixels > 0.001:
        message = (
            f"{path}: {report.specks} px are specks with fewer than 3 same-valued neighbours "
            "(JPEG noise? see labelfix repair)"
        )
        found.append(Problem(path, "warning", "specks", message, pixels=report.specks))
    if report.image_note:
        found.append(Problem(path, "warning", "exif", f"{path}: {report.image_note}"))
    if ignore and report.all_void:
        message = (
            f"{path}: every pixel is ignore ({', '.join(map(str, ignore))}); "
            "it adds nothing to training"
        )
        found.append(Problem(path, "warning", "all-void", message))
    return found


@dataclass
class ValidationResult:
    """What ``labelfix validate`` found: per-file problems plus the dataset totals."""

    stats: DatasetStats
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def bad_files(self) -> list[str]:
        return list(dict.fromkeys(p.path for p in self.errors))

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "files": self.stats.files,
            "num_classes": self.stats.num_classes,
            "ignore": list(self.stats.ignore),
            "bad_files": len(self.bad_files),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [
                {k: v for k, v in p.__dict__.items() if v is not None} for p in self.problems
            ],
        }


def validate(
    paths: Iterable[str | os.PathLike],
    *,
    num_classes: int,
    ignore: Sequence[int] = (),
    images: str | os.PathLike | None = None,
    naming: Naming = CONVENTIONS,
    glob: str | None = None,
    jobs: int | None = None,
    on_file: Callable[[FileReport, list[Problem]], None] | None = None,
    **read_options,
) -> ValidationResult:
    """Check every mask under ``paths``; ``result.ok`` is False when any file has an error.

    With ``images``, each mask needs one image, found by ``naming`` (:mod:`labelfix.io.pairing`;
    a folder of masks given as ``images`` is :class:`~labelfix.io.pairing.MasksAsImages`).
    ``read_options`` (``colours``, ``artifacts``) go to the scan.
    """
    paths = list(paths)
    if images is not None:
        check_images_folder(images, paths, naming=naming)
    problems: list[Problem] = []

    def check(report: FileReport) -> None:
        found = file_problems(report, num_classes=num_classes, ignore=ignore)
        problems.extend(found)
        if on_file is not None:
            on_file(report, found)

    stats = scan_dataset(
        paths,
        glob=glob,
        ignore=ignore,
        num_classes=num_classes,
        images=images,
        naming=naming,
        jobs=jobs,
        on_file=check,
        **read_options,
    )
    for value in stats.unused_ignore:
        where = ", ".join(os.fspath(p) for p in paths)
        message = f"{where}: {unused_ignore_message(value, stats)}"
        problems.append(Problem(where, "warning", "unused-ignore", message, value=value))
    return ValidationResult(stats=stats, problems=problems)
