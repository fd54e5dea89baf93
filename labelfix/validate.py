"""Check masks against ``num_classes`` and the ignore values; the messages every command shares.

>>> result = validate(["masks/"], num_classes=21, ignore=(255,))   # doctest: +SKIP
>>> result.ok, result.errors[0].message                             # doctest: +SKIP
(False, 'masks/0007.png: value 37 is not a class id (expected 0..20 or ignore 255): 412 px, \
first at y=3 x=118')
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from labelfix.masks import KINDS
from labelfix.scan import BadValue, DatasetStats, FileReport, scan_dataset


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


def expected_text(num_classes: int, ignore: Sequence[int]) -> str:
    """``expected 0..20 or ignore 255`` -- the phrase every range error uses."""
    text = f"expected 0..{num_classes - 1}"
    if ignore:
        text += " or ignore " + ", ".join(str(v) for v in ignore)
    return text


def bad_value_message(path: str, bad: BadValue, *, num_classes: int, ignore: Sequence[int]) -> str:
    return (
        f"{path}: value {bad.value} is not a class id ({expected_text(num_classes, ignore)}): "
        f"{bad.pixels} px, first at y={bad.y} x={bad.x}"
    )


def file_problems(
    report: FileReport, *, num_classes: int, ignore: Sequence[int] = ()
) -> list[Problem]:
    """Everything wrong with one file, errors first."""
    path = report.path
    if report.error is not None:
        return [Problem(path, "error", "unreadable", f"{path}: {report.error}")]
    problems: list[Problem] = []
    if report.kind == "colour":
        problems.append(
            Problem(
                path,
                "error",
                "colour",
                f"{path}: colour mask: colours are not class ids (convert it with a colormap)",
            )
        )
    elif report.kind == "jpeg":
        problems.append(
            Problem(
                path,
                "error",
                "jpeg",
                f"{path}: JPEG mask: lossy compression puts values that are no class on every edge",
            )
        )
    for bad in report.bad_values:
        problems.append(
            Problem(
                path,
                "error",
                "value",
                bad_value_message(path, bad, num_classes=num_classes, ignore=ignore),
                value=bad.value,
                pixels=bad.pixels,
                y=bad.y,
                x=bad.x,
            )
        )
    if report.image_problem:
        problems.append(Problem(path, "error", "image", f"{path}: {report.image_problem}"))
    if report.kind == "palette":
        problems.append(
            Problem(
                path,
                "warning",
                "palette",
                f"{path}: palette PNG: {KINDS['palette']}",
            )
        )
    if report.looks_interpolated:
        values = ", ".join(str(sv.value) for sv in report.suspects)
        problems.append(
            Problem(
                path,
                "warning",
                "interpolated",
                f"{path}: looks interpolated: values {values} lie only on boundaries between "
                "two other values (bilinear resizing, anti-aliasing or JPEG; see labelfix repair)",
            )
        )
    else:
        for sv in report.suspects:
            problems.append(
                Problem(
                    path,
                    "warning",
                    "artifact",
                    f"{path}: value {sv.value} looks like a lossy artifact: "
                    f"{100 * sv.share:.0f}% of its {sv.pixels} px lie on boundaries between two "
                    "other values (bilinear resizing, anti-aliasing or JPEG; see labelfix repair)",
                    value=sv.value,
                    pixels=sv.pixels,
                )
            )
    if report.specks and report.pixels and report.specks / report.pixels > 0.001:
        problems.append(
            Problem(
                path,
                "warning",
                "specks",
                f"{path}: {report.specks} px are specks with fewer than 3 same-valued neighbours "
                "(JPEG noise? see labelfix repair)",
                pixels=report.specks,
            )
        )
    if ignore and report.all_void:
        problems.append(
            Problem(
                path,
                "warning",
                "all-void",
                f"{path}: every pixel is ignore ({', '.join(map(str, ignore))}); "
                "it adds nothing to training",
            )
        )
    return problems


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
    glob: str | None = None,
    jobs: int | None = None,
    on_file: Callable[[FileReport, list[Problem]], None] | None = None,
    **read_options,
) -> ValidationResult:
    """Check every mask under ``paths``; ``result.ok`` is False when any file has an error.

    ``read_options`` (``colormap``, ``unknown_colour``, ``artifacts``) go to the scan.
    """
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
        jobs=jobs,
        on_file=check,
        **read_options,
    )
    result = ValidationResult(stats=stats, problems=problems)
    return result
