"""``stats``, ``validate`` and ``verify`` on TFRecords without a manifest (another tool's).

Every record is read once, in a worker process, by
:func:`~labelfix.records.foreign.scan_record` (the per-mask scan of a file, plus the record's
image and storage checks) and folded into the same
:class:`~labelfix.checks.stats.DatasetStats` and :class:`~labelfix.checks.validate.Problem`\\ s
as mask files are, so the reports read the same. Records differ in what is an error: storage
TensorFlow's decoders misread (a palette or 16-bit PNG), framing and CRCs, and two traps only
the whole set shows: values that are palette colours read as grey
(:func:`~labelfix.labels.luminance.detect_luminance`), and 8-bit masks for more than 256
classes.

On a dataset of your own::

    check = validate_records(["tfrecord/"], num_classes=21, ignore=(255,))
    check.ok, check.errors[0].message
    # -> (False, 'tfrecord/train-00000-of-00004.tfrecord: record 0 (2007_000032): palette PNG
    #     in the ...')
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from labelfix.checks.stats import DatasetStats, unused_ignore_message
from labelfix.checks.validate import Problem, ValidationResult, file_problems
from labelfix.io.inputs import watch_inputs
from labelfix.labels.colormap import ColourPolicy
from labelfix.labels.luminance import detect_luminance
from labelfix.parallel import ordered_map
from labelfix.records.example import RecordKeys
from labelfix.records.foreign import (
    RecordReport,
    find_shards,
    iter_records,
    labelfix_manifests,
    scan_record,
    shard_files,
    shards_of_split,
    split_of,
)
from labelfix.records.verify import VerifyResult

#: Mask kinds that hold at most 8 bits a pixel.
_EIGHT_BIT = frozenset({"8-bit", "palette", "1-bit", "2/4-bit"})


@dataclass
class RecordCheck:
    """What reading a set of shards found: the dataset totals, one
    :class:`~labelfix.checks.validate.Problem` per finding (errors and warnings), the shards
    read and the records in them."""

    stats: DatasetStats
    problems: list[Problem] = field(default_factory=list)
    shards: tuple[str, ...] = ()
    records: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]


def record_problems(
    found: RecordReport, *, num_classes: int | None, ignore: Sequence[int]
) -> list[Problem]:
    """A record's problems, as :func:`~labelfix.checks.validate.file_problems` words a file's,
    with its storage traps as errors in place of the palette warning mask files get."""
    problems = [
        p
        for p in file_problems(found.report, num_classes=num_classes or 0, ignore=ignore)
        if p.code != "palette"
    ]
    path = found.report.path
    traps = [Problem(path, "error", code, message) for code, message in found.traps]
    return traps + problems


#: What each storage trap of :func:`~labelfix.records.foreign.storage_trap` is, in a summary.
_TRAPS = {
    "palette": "palette PNG masks, which DeepLab's and Model Garden's decoders read as luminance",
    "16-bit": "16-bit PNG masks, which DeepLab's and Model Garden's decoders read as uint8",
    "1-bit": "1-bit PNG masks, which TensorFlow's decoder reads as 0/255",
    "2/4-bit": "2- or 4-bit PNG masks, which TensorFlow's decoder scales to 0..255",
}


def _trap_summary(check: RecordCheck, where: str) -> list[Problem]:
    """One error per storage trap found, for the whole set: how many records, and the fix."""
    counts: dict[str, int] = {}
    for problem in check.problems:
        if problem.code in _TRAPS:
            counts[problem.code] = counts.get(problem.code, 0) + 1
    return [
        Problem(
            where,
            "error",
            code,
            f"{where}: {n:,} of {check.records:,} record(s) store {_TRAPS[code]}: rewrite them "
            f"with labelfix to-tfrecord --from-records {where} -o OUT (masks are read as ids)",
        )
        for code, n in counts.items()
    ]


def dataset_traps(
    stats: DatasetStats, *, num_classes: int | None, ignore: Sequence[int], where: str
) -> list[Problem]:
    """The traps only the whole set shows (see the module doc), as errors naming ``where``."""
    found = []
    pixels = {v: s.pixels for v, s in stats.values.items()}
    match = detect_luminance(pixels, num_classes=num_classes, ignore=ignore)
    if match is not None:
        message = (
            f"{where}: {match.message()}; map them back with labelfix to-tfrecord "
            f"--from-records ... {match.advice()}"
        )
        found.append(Problem(where, "error", "luminance", message))
    kinds = set(stats.kinds) - {"colour", "jpeg"}
    if num_classes is not None and num_classes > 256 and kinds and kinds <= _EIGHT_BIT:
        message = (
            f"{where}: every mask is 8-bit, but the ids of {num_classes} classes go up to "
            f"{num_classes - 1}: ids above 255 were wrapped (id % 256) or clipped (to 255) when "
            "these records were written; rebuild them from the original masks (labelfix "
            "to-tfrecord stores 16-bit PNGs for more than 255 classes)"
        )
        found.append(Problem(where, "error", "wrapped", message))
    return found


def check_records(
    paths: Iterable[str | os.PathLike],
    *,
    keys: RecordKeys | None = None,
    num_classes: int | None = None,
    ignore: Sequence[int] = (),
    colours: ColourPolicy | None = None,
    artifacts: bool = False,
    jobs: int | None = None,
    on_record: Callable[[RecordReport, list[Problem]], None] | None = None,
) -> RecordCheck:
    """Read every record of the shards under ``paths`` (files, globs, directories), scan its
    mask and image, and collect the problems (see the module doc). ``on_record`` is called with
    each record's report and problems as they arrive.

    Raises :class:`~labelfix.io.inputs.InputsBusy` when a shard's directory is being written
    (another run holds it), before the first record and after the last.
    """
    paths = [os.fspath(p) for p in paths]
    shards = find_shards(paths)
    watch = watch_inputs(shards)
    ignore = tuple(ignore)
    check = RecordCheck(stats=DatasetStats(ignore=ignore, num_classes=num_classes))
    read_problems: list[tuple[str, str]] = []
    scan = functools.partial(
        scan_record,
        keys=keys or RecordKeys(),
        ignore=ignore,
        num_classes=num_classes,
        colours=colours,
        artifacts=artifacts,
    )
    items = iter_records(shards, read_problems)
    for found in ordered_map(
        scan, items, jobs=jobs, chunksize=8, preload=("labelfix.records.foreign",)
    ):
        check.records += 1
        check.stats.add(found.report)
        problems = record_problems(found, num_classes=num_classes, ignore=ignore)
        check.problems.extend(problems)
        if on_record is not None:
            on_record(found, problems)
    for at, reason in read_problems:
        check.stats.unreadable.append((at, reason))
        check.problems.append(Problem(at, "error", "framing", f"{at}: {reason}"))
    where = ", ".join(paths)
    if not check.records and not read_problems:
        message = f"{where}: no records in {len(shards)} shard(s)"
        check.problems.append(Problem(where, "error", "empty", message))
    check.problems.extend(_trap_summary(check, where))
    check.problems.extend(
        dataset_traps(check.stats, num_classes=num_classes, ignore=ignore, where=where)
    )
    for value in check.stats.unused_ignore:
        message = f"{where}: {unused_ignore_message(value, check.stats)}"
        check.problems.append(Problem(where, "warning", "unused-ignore", message, value=value))
    check.shards = tuple(shards)
    watch.confirm()
    return check


def validate_records(
    paths: Iterable[str | os.PathLike], *, num_classes: int, **options
) -> ValidationResult:
    """:func:`~labelfix.checks.validate.validate` for shards: ``result.ok`` is False when any
    record has an error (``options`` as :func:`check_records` takes them)."""
    check = check_records(paths, num_classes=num_classes, **options)
    return ValidationResult(stats=check.stats, problems=check.problems)


def verify_records(paths: Iterable[str | os.PathLike], **options) -> VerifyResult:
    """:func:`~labelfix.records.verify.verify_dataset` for shards without a manifest: framing
    and CRCs, every record's Example, image and mask, the storage traps, and (with
    ``num_classes``) every value. One problem line per error."""
    check = check_records(paths, **options)
    return VerifyResult(
        manifest=None,
        shards=len(check.shards),
        records=check.records,
        problems=tuple(p.message for p in check.errors),
    )


# ----------------------------------------------------------------------------- what to verify


@dataclass(frozen=True)
class VerifyTarget:
    """What ``labelfix verify PATH...`` checks: a labelfix output (``directory`` and ``split``;
    ``shards``: only these files of it, or None for all), or other shards (``records``)."""

    directory: str | None = None
    split: str = "train"
    shards: tuple[str, ...] | None = None
    records: tuple[str, ...] = ()


def verify_target(paths: Sequence[str | os.PathLike], split: str | None = None) -> VerifyTarget:
    """Decide what to verify: a directory holding labelfix manifests is a labelfix output (its
    ``split``; by default its only split, else train); shard files beside the manifest of the
    split their names say are those shards of it; anything else is shards without a manifest
    (a directory's: those of ``split`` when given)."""
    paths = [os.fspath(p) for p in paths]
    if len(paths) == 1 and os.path.isdir(paths[0]):
        directory = paths[0]
        manifests = labelfix_manifests(directory)
        if len(manifests) == 1 and split is None:
            return VerifyTarget(directory=directory, split=manifests[0].split(".")[0])
        if not manifests and shard_files(directory):
            return VerifyTarget(records=tuple(shards_of_split(directory, split)))
        return VerifyTarget(directory=directory, split=split or "train")  # says what is missing
    files = find_shards(paths)
    directories = {os.path.dirname(f) or "." for f in files}
    if len(directories) == 1:
        directory = directories.pop()
        named = split_of(files)
        if split in (None, named) and f"{named}.labelfix.json" in labelfix_manifests(directory):
            names = tuple(os.path.basename(f) for f in files)
            return VerifyTarget(directory=directory, split=named, shards=names)
    return VerifyTarget(records=tuple(paths))
