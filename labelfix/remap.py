"""Remap the values of mask files: plan once, apply in parallel, write every file atomically.

:func:`plan_remap` lists the files, decides where each output goes and in which format (once
for the whole run, from the mapping), and checks the records of earlier runs; :func:`run_remap`
reads, maps and writes each file in a worker process and folds the per-file results into a
:class:`RemapResult`. :func:`remap` does both.

* Without ``output`` or ``in_place`` the output goes to a sibling directory, ``masks`` ->
  ``masks-remapped``, mirroring the input tree.
* A PNG cannot hold -1: when the mapping produces a negative value (or one above 65535) every
  mask of the run is written as ``.npy`` with the smallest signed integer dtype that holds its
  values (labelme's ``SegmentationClassNpy`` convention).
* PNG output is 8-bit when every value the mapping can produce fits in 8 bits, else 16-bit (a
  16-bit input stays 16-bit when values are kept, or in place); palette masks keep their
  palette (unless ``keep_palette=False`` or the output needs 16 bits).
* Each output directory (or, in place, each input directory) gets a record of the runs,
  ``.labelfix-remap.json``. A mapping that is not idempotent (Cityscapes labelIds ->
  trainIds) is refused for files it was already applied to, unless ``force=True``; in place,
  such files are skipped, so an interrupted run finishes by running it again.
* In place, a file is only ever replaced by renaming a complete temporary file over it, and
  a file's name never changes: a change of format in place is refused.

>>> from labelfix.mapping import preset
>>> result = remap(["gtFine/"], preset("cityscapes"), jobs=2)   # doctest: +SKIP
>>> result.changed, result.written, result.destinations          # doctest: +SKIP
(2975, 2975, ('gtFine-remapped',))
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from labelfix._version import __version__
from labelfix.artifacts import RepairSpec
from labelfix.errors import LabelfixError, MappingError, UnreadableMask
from labelfix.mapping import LabelMap
from labelfix.masks import (
    MASK_SUFFIXES,
    PNG_COMPRESS_LEVEL,
    Mask,
    atomic_path,
    encode_png,
    iter_mask_files,
    read_mask,
    smallest_int_dtype,
    value_counts,
)
from labelfix.parallel import ordered_map
from labelfix.scan import BadValue
from labelfix.validate import bad_value_message

if TYPE_CHECKING:
    from labelfix.colormap import Colormap

#: The record of remap runs kept in every output (or in-place) directory.
MANIFEST_NAME = ".labelfix-remap.json"
#: Per-file progress of a run, appended by the workers; folded into the manifest at the end.
#: It is left behind only by an interrupted run, and the next run folds it in.
JOURNAL_NAME = ".labelfix-remap.journal"
#: ``masks`` -> ``masks-remapped`` when no output directory is given.
DEFAULT_SUFFIX = "-remapped"
FORMATS = ("png", "npy")
#: The largest value a (16-bit) PNG holds.
PNG_MAX = 0xFFFF


class RemapUsageError(LabelfixError):
    """A request that cannot be carried out as asked (the CLI exits 2)."""


class AlreadyRemapped(LabelfixError):
    """The mapping is not idempotent and was already applied to these files (exit 1)."""


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Target:
    """One input (directory or file) and the directory its outputs go to."""

    source: str
    destination: str


@dataclass(frozen=True)
class FileJob:
    """One file to remap. ``record_root``/``record_name`` place it in a manifest."""

    source: str
    relpath: str
    destination: str
    format: str
    record_root: str
    record_name: str


@dataclass(frozen=True)
class FileResult:
    """What happened to one file. ``status`` is ``changed``, ``unchanged`` or ``failed``.

    ``values``/``counts`` are the input values and their pixels, ``outputs`` what each becomes;
    ``stored`` says how the output was (or, in a dry run, would be) stored.
    """

    source: str
    destination: str
    status: str
    written: bool = False
    stored: str | None = None
    values: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()
    #: with a repair: stray pixels changed, and how many of them became the ignore value
    repaired: int = 0
    to_ignore: int = 0


@dataclass(frozen=True)
class RemapPlan:
    """Everything decided before the first file is read. Built by :func:`plan_remap`."""

    label_map: LabelMap
    files: tuple[FileJob, ...]
    targets: tuple[Target, ...]
    in_place: bool
    format: str | None
    format_reason: str | None
    keep_palette: bool
    skipped: tuple[str, ...] = ()
    skipped_reason: str | None = None
    notes: tuple[str, ...] = ()
    repair: RepairSpec | None = None
    colormap: Colormap | None = None
    unknown_colour: str = "error"


@dataclass(frozen=True)
class ValueChange:
    """Pixels of input ``value`` across the run and what they become."""

    value: int
    becomes: int
    pixels: int
    files: int

    @property
    def changed(self) -> bool:
        return self.value != self.becomes


@dataclass(frozen=True)
class RemapResult:
    """The summary of a run (or of a dry run: nothing ``written``)."""

    label_map: LabelMap
    in_place: bool
    dry_run: bool
    targets: tuple[Target, ...]
    format: str | None
    format_reason: str | None
    files: int
    read: int
    changed: int
    unchanged: int
    written: int
    errors: tuple[str, ...]
    failed_files: tuple[str, ...]
    skipped: tuple[str, ...]
    skipped_reason: str | None
    stored: tuple[tuple[str, int], ...]
    values: tuple[ValueChange, ...]
    manifests: tuple[str, ...]
    notes: tuple[str, ...] = ()
    repaired_pixels: int = 0
    to_ignore_pixels: int = 0
    repaired_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed_files and self.files > 0

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.destination for t in self.targets))

    @property
    def changed_pixels(self) -> int:
        return sum(v.pixels for v in self.values if v.changed)

    @property
    def total_pixels(self) -> int:
        return sum(v.pixels for v in self.values)

    def to_dict(self) -> dict:
        """JSON-ready summary (``labelfix remap --json``)."""
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "in_place": self.in_place,
            "mapping": self.label_map.to_dict(),
            "targets": [{"source": t.source, "destination": t.destination} for t in self.targets],
            "format": self.format or "as input",
            "format_reason": self.format_reason,
            "files": self.files,
            "read": self.read,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "written": self.written,
            "failed": len(self.failed_files),
            "skipped": len(self.skipped),
            "skipped_reason": self.skipped_reason,
            "stored": [{"as": kind, "files": n} for kind, n in self.stored],
            "values": [
                {"value": v.value, "becomes": v.becomes, "pixels": v.pixels, "files": v.files}
                for v in self.values
            ],
            "changed_pixels": self.changed_pixels,
            "repaired_pixels": self.repaired_pixels,
            "repaired_to_ignore": self.to_ignore_pixels,
            "repaired_files": self.repaired_files,
            "total_pixels": self.total_pixels,
            "manifests": list(self.manifests),
            "errors": list(self.errors),
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- planning


def output_format(label_map: LabelMap, *, fmt: str | None = None) -> tuple[str | None, str | None]:
    """``(format, reason)`` for a whole run: ``fmt`` if given, ``"npy"`` when the mapping
    produces a value a PNG cannot hold, else None (each file keeps its format).

    Raises RemapUsageError for ``fmt="png"`` with such a value.

    >>> output_format(LabelMap(ignore=(255,), out=-1))[0]
    'npy'
    >>> output_format(LabelMap(ignore=(0,), out=255))
    (None, None)
    """
    if fmt is not None and fmt not in FORMATS:
        raise RemapUsageError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    unfit = [v for v in label_map.outputs if v < 0 or v > PNG_MAX]
    if unfit and fmt == "png":
        raise RemapUsageError(
            f"--format png cannot store {unfit[0]}, which the mapping produces "
            f"({label_map.describe()}): a PNG holds only 0..{PNG_MAX}. Use --format npy "
            "(signed .npy; the default for negative values), or keep a non-negative ignore on "
            "disk (e.g. --out 255) and map it to -1 when loading."
        )
    if fmt is not None:
        return fmt, None
    if unfit:
        return "npy", (
            f"the mapping produces {unfit[0]}, which a PNG cannot store: masks are written as "
            ".npy with the smallest signed integer dtype that holds their values "
            "(labelme's SegmentationClassNpy convention; read them with numpy.load)"
        )
    return None, None


def default_destination(source: str, *, suffix: str = DEFAULT_SUFFIX) -> str:
    """The sibling directory an input goes to: ``masks/`` -> ``masks-remapped``.

    >>> default_destination("data/masks/")
    'data/masks-remapped'
    """
    path = os.path.normpath(source)
    if os.path.isfile(path):  # a file goes to a sibling of its directory
        path = os.path.dirname(path) or "."
    if os.path.basename(path) in ("", ".", ".."):
        path = os.path.abspath(path)
    return path + suffix


def plan_remap(
    paths: Sequence[str | os.PathLike],
    label_map: LabelMap,
    *,
    output: str | os.PathLike | None = None,
    in_place: bool = False,
    fmt: str | None = None,
    keep_palette: bool = True,
    glob: str | None = None,
    force: bool = False,
    repair: RepairSpec | None = None,
    colormap: Colormap | None = None,
    unknown_colour: str = "error",
    suffix: str = DEFAULT_SUFFIX,
    suffixes: tuple[str, ...] = MASK_SUFFIXES,
) -> RemapPlan:
    """List the files under ``paths`` and decide where and how each one is written.

    With ``repair``, every mapped mask is also repaired (lossy artifacts, see
    :mod:`labelfix.artifacts`); with ``colormap``, colour masks are read as class ids.

    Raises RemapUsageError for requests that cannot be carried out (output over an input,
    two inputs writing one output, a format change in place, PNG for negative values) and
    AlreadyRemapped when a non-idempotent mapping was already applied to the files.
    """
    if in_place and output is not None:
        raise RemapUsageError("--in-place and --output exclude each other: choose one")
    run_format, reason = output_format(label_map, fmt=fmt)
    sources = [os.fspath(p) for p in paths]
    for source in sources:
        if not os.path.exists(source):
            raise RemapUsageError(f"{source}: no such file or directory")
    targets, files = [], []
    for source in sources:
        root = source if os.path.isdir(source) else (os.path.dirname(source) or ".")
        if in_place:
            destination, prefix = root, ""
        elif output is None:
            destination, prefix = default_destination(source, suffix=suffix), ""
        else:
            destination = os.fspath(output)
            several = len(sources) > 1 and os.path.isdir(source)
            prefix = os.path.basename(os.path.abspath(source)) if several else ""
        targets.append(Target(source=source, destination=destination))
        for path, relpath in iter_mask_files([source], glob=glob, suffixes=suffixes):
            file_format = run_format or ("npy" if path.lower().endswith(".npy") else "png")
            name = os.path.join(prefix, _with_format(relpath, file_format))
            files.append(
                FileJob(
                    source=path,
                    relpath=relpath,
                    destination=path if in_place else os.path.join(destination, name),
                    format=file_format,
                    record_root=destination,
                    record_name=name,
                )
            )
    _check_destinations(files, targets, in_place=in_place)
    skipped, skipped_reason, notes = (), None, ()
    if files:
        files, skipped, skipped_reason, notes = _guard(
            files, label_map, in_place=in_place, force=force
        )
    return RemapPlan(
        label_map=label_map,
        files=tuple(files),
        targets=tuple(targets),
        in_place=in_place,
        format=run_format,
        format_reason=reason,
        keep_palette=keep_palette,
        skipped=skipped,
        skipped_reason=skipped_reason,
        notes=notes,
        repair=repair,
        colormap=colormap,
        unknown_colour=unknown_colour,
    )


def _with_format(relpath: str, file_format: str) -> str:
    stem, ext = os.path.splitext(relpath)
    if file_format == "npy":
        return stem + ".npy"
    return relpath if ext.lower() == ".png" else stem + ".png"


def _check_destinations(files: list[FileJob], targets: list[Target], *, in_place: bool) -> None:
    seen: dict[str, str] = {}
    for job in files:
        key = os.path.abspath(job.destination)
        if key in seen:
            what = (
                "is listed twice" if in_place else f"and {seen[key]} both go to {job.destination}"
            )
            raise RemapUsageError(f"{job.source} {what}: give each input once")
        seen[key] = job.source
    if in_place:
        changed = [job for job in files if job.destination != _with_format(job.source, job.format)]
        if changed:
            job = changed[0]
            hint = (
                ", or keep a non-negative ignore on disk (e.g. --out 255) and map it to -1 "
                "when loading"
                if job.format == "npy"
                else ""
            )
            raise RemapUsageError(
                f"--in-place would have to replace {job.source} (and {len(changed) - 1} more) "
                f"with a .{job.format} file of another name; in place a file keeps its name. "
                f"Write to another directory with --output DIR{hint}."
            )
        return
    for target in targets:
        if not os.path.isdir(target.source):
            continue
        src = os.path.realpath(target.source)
        dst = os.path.realpath(target.destination)
        if dst == src or dst.startswith(src + os.sep):
            raise RemapUsageError(
                f"output directory {target.destination} is inside the input {target.source}; "
                "choose a directory outside it, or use --in-place"
            )
    sources = {os.path.realpath(job.source) for job in files}
    for job in files:
        if os.path.exists(job.destination) and os.path.realpath(job.destination) in sources:
            raise RemapUsageError(
                f"{job.destination} would overwrite an input; use --in-place to replace inputs"
            )


# ----------------------------------------------------------------------------- records


def mapping_key(mapping: dict) -> tuple:
    """What makes two recorded mappings the same mapping (names and class lists aside)."""
    return (
        tuple(tuple(int(x) for x in rule) for rule in mapping.get("rules", ())),
        tuple(sorted(int(v) for v in mapping.get("ignore", ()))),
        mapping.get("out"),
        mapping.get("unmapped", "keep"),
    )


def read_manifest(directory: str | os.PathLike) -> list[dict]:
    """The runs recorded in ``directory`` (empty when there is no record).

    Files of an interrupted run are taken from the journal its workers left behind.
    """
    directory = os.fspath(directory)
    runs: list[dict] = []
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(directory, MANIFEST_NAME), encoding="utf-8") as fh:
            data = json.load(fh)
        runs = [dict(r) for r in data.get("runs", []) if isinstance(r, dict)]
    journal = _read_journal(directory)
    for run in runs:
        extra = journal.get(run.get("id"), [])
        if extra:
            run["files"] = list(dict.fromkeys([*run.get("files", []), *extra]))
    return runs


def _read_journal(directory: str) -> dict[str, list[str]]:
    done: dict[str, list[str]] = {}
    try:
        with open(os.path.join(directory, JOURNAL_NAME), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return done
    for line in lines:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            entry = json.loads(line)  # a line cut short by a crash is skipped
            done.setdefault(entry["run"], []).append(entry["file"])
    return done


def _write_manifest(directory: str, runs: list[dict]) -> str:
    path = os.path.join(directory, MANIFEST_NAME)
    data = {"labelfix_remap": 1, "runs": runs}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, JOURNAL_NAME))  # folded into the manifest
    return path


def _ancestors(directory: str) -> Iterable[str]:
    while True:
        yield directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return
        directory = parent


def _guard(
    files: list[FileJob], label_map: LabelMap, *, in_place: bool, force: bool
) -> tuple[list[FileJob], tuple[str, ...], str | None, tuple[str, ...]]:
    """Keep a non-idempotent mapping from being applied twice to the same files.

    Returns the files to remap, the files skipped (in place: already remapped by this
    mapping), why, and notes; raises AlreadyRemapped when nothing would be left, or when
    writing elsewhere (skipping would leave holes in the output).
    """
    if label_map.idempotent:
        return files, (), None, ()
    key = mapping_key(label_map.to_dict())
    cache: dict[str, list[tuple[dict, frozenset[str]]]] = {}

    def records(directory: str) -> list[tuple[dict, frozenset[str]]]:
        if directory not in cache:
            found = []
            if os.path.exists(os.path.join(directory, MANIFEST_NAME)):
                found = [(r, frozenset(r.get("files", ()))) for r in read_manifest(directory)]
            cache[directory] = found
        return cache[directory]

    hits: list[tuple[int, str, dict]] = []
    others: list[tuple[int, dict]] = []
    for index, job in enumerate(files):
        path = os.path.realpath(job.source)
        hit = None
        for directory in _ancestors(os.path.dirname(path)):
            runs = records(directory)
            if not runs:
                continue
            name = os.path.relpath(path, directory)
            for run, names in runs:
                if name not in names:
                    continue
                if _run_key(run) == key:
                    hit = (index, directory, run)
                    break
                others.append((index, run))
            if hit is not None:
                hits.append(hit)
                break
    notes: tuple[str, ...] = ()
    if others:
        index, run = others[0]
        notes = (
            f"{len({i for i, _ in others})} file(s), e.g. {files[index].source}, were remapped "
            f"before with another mapping ({_describe_record(run)}); check that this one is "
            "meant for them",
        )
    if not hits or force:
        return files, (), None, notes
    index, directory, _ = hits[0]
    run = max((h[2] for h in hits), key=lambda r: str(r.get("started")))  # the latest
    when = run.get("finished") or run.get("started") or "an earlier run"
    state = "" if run.get("complete") else " (a run that did not finish)"
    what = (
        f"{len(hits)} file(s), e.g. {files[index].source}, were already remapped by this "
        f"mapping ({label_map.describe()}) on {when}{state}, as recorded in "
        f"{os.path.join(directory, MANIFEST_NAME)}; the mapping is not idempotent, so "
        "applying it again would change them a second time"
    )
    if not in_place or len(hits) == len(files):
        raise AlreadyRemapped(f"{what}. Use --force to apply it anyway.")
    done = {i for i, _, _ in hits}
    remaining = [job for i, job in enumerate(files) if i not in done]
    skipped = tuple(files[i].source for i in sorted(done))
    return remaining, skipped, f"{what}; they were skipped (--force remaps them again)", notes


def _run_key(run: dict) -> tuple | None:
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        return mapping_key(run.get("mapping", {}))
    return None  # a record edited by hand: matches nothing


def _describe_record(run: dict) -> str:
    with contextlib.suppress(LabelfixError, TypeError, ValueError):
        return LabelMap.from_dict(run.get("mapping", {})).describe()
    return "unreadable record"


# ----------------------------------------------------------------------------- one file


def remap_file(
    job: FileJob,
    *,
    label_map: LabelMap,
    keep_palette: bool = True,
    in_place: bool = False,
    dry_run: bool = False,
    compress_level: int = PNG_COMPRESS_LEVEL,
    run_id: str | None = None,
    repair: RepairSpec | None = None,
    colormap: Colormap | None = None,
    unknown_colour: str = "error",
) -> FileResult:
    """Read, map, (repair,) check and (unless ``dry_run``) write one file. Never raises for
    bad data.

    In place, a file whose values do not change is left untouched.
    """
    try:
        void = label_map.out_value
        mask = read_mask(
            job.source,
            colormap=colormap,
            unknown_colour=unknown_colour,
            ignore=void if void is not None and void >= 0 else 255,
        )
        if repair is not None and mask.kind == "jpeg" and mask.array.ndim == 2:
            labels = mask.array  # a grey JPEG mask: exactly what a repair is for
        else:
            labels = mask.labels
    except UnreadableMask as err:  # NotALabelMask included: colour and JPEG masks
        return FileResult(job.source, job.destination, "failed", errors=(str(err),))
    except MemoryError:
        return FileResult(
            job.source,
            job.destination,
            "failed",
            errors=(f"{job.source}: out of memory while decoding",),
        )
    values, counts = mask.value_counts() if mask.is_label else value_counts(labels)
    values = [int(v) for v in values]
    outputs = [label_map.lookup(v) for v in values]
    stats = {"values": tuple(values), "counts": tuple(int(c) for c in counts)}
    if any(o is None for o in outputs):
        message = _unmapped_message(label_map, labels, job.source)
        return FileResult(job.source, job.destination, "failed", errors=(message,), **stats)
    stats["outputs"] = tuple(outputs)
    changed = any(o != v for v, o in zip(values, outputs, strict=True))
    repaired = None
    lo, hi = min(outputs), max(outputs)
    if repair is not None:  # stray values are what a repair is for: check after it
        mapped = label_map.apply(labels, path=job.source) if changed else labels
        repaired = repair.apply(mapped)
        stats["repaired"], stats["to_ignore"] = repaired.changed, repaired.to_ignore
        changed = changed or repaired.changed > 0
        lo, hi = int(repaired.labels.min()), int(repaired.labels.max())
    else:
        problems = _range_problems(job.source, labels, values, counts, outputs, label_map)
        if problems:
            return FileResult(job.source, job.destination, "failed", errors=problems, **stats)
    if mask.kind == "colormap":
        changed = True  # a colour file becomes a label file
    status = "changed" if changed else "unchanged"
    try:
        spec = _storage(
            mask,
            labels,
            job.format,
            lo,
            hi,
            label_map,
            keep_palette=keep_palette,
            in_place=in_place,
        )
    except ValueError as err:
        return FileResult(job.source, job.destination, "failed", errors=(str(err),), **stats)
    if in_place and not changed:  # left as it is, and done as far as the record goes
        if not dry_run:
            _journal(job, run_id)
        return FileResult(job.source, job.destination, status, **stats)
    if dry_run:
        return FileResult(job.source, job.destination, status, stored=spec.describe(), **stats)
    try:
        if not changed and spec.matches(mask, labels, job):
            _copy_atomic(job.source, job.destination)
        elif repaired is not None:
            _write_atomic(
                job.destination,
                spec.encode(repaired.labels, compress_level=compress_level),
                durable=in_place,
            )
        else:
            array = label_map.apply(labels, path=job.source) if changed else labels
            _write_atomic(
                job.destination, spec.encode(array, compress_level=compress_level), durable=in_place
            )
    except OSError as err:
        reason = err.strerror or str(err)
        return FileResult(
            job.source,
            job.destination,
            "failed",
            errors=(f"{job.destination}: cannot write ({reason})",),
            **stats,
        )
    _journal(job, run_id)
    return FileResult(
        job.source, job.destination, status, written=True, stored=spec.describe(), **stats
    )


def _unmapped_message(label_map: LabelMap, labels: np.ndarray, path: str) -> str:
    try:
        label_map.apply(labels, path=path)  # raises the message every command uses
    except MappingError as err:
        return str(err)
    return f"{path}: a value has no mapping rule (--unmapped error)"


def _range_problems(
    path: str,
    labels: np.ndarray,
    values: list[int],
    counts: np.ndarray,
    outputs: list[int],
    label_map: LabelMap,
) -> tuple[str, ...]:
    """Messages, as ``validate`` words them, for outputs outside ``[0, num_classes)`` + out."""
    n = label_map.num_classes
    if n is None:
        return ()
    out = label_map.out_value
    ignore = (out,) if out is not None else ()
    problems = []
    width = labels.shape[1]
    for v, c, o in zip(values, counts, outputs, strict=True):
        if 0 <= o < n or o == out:
            continue
        y, x = divmod(int(np.argmax(labels.ravel() == v)), width)
        message = bad_value_message(
            path, BadValue(value=o, pixels=int(c), y=y, x=x), num_classes=n, ignore=ignore
        )
        problems.append(message + (f" (mapped from {v})" if o != v else ""))
    return tuple(problems)


@dataclass(frozen=True)
class _Storage:
    """How one output is stored: ``png`` with ``bits`` (and a palette) or ``npy`` ``dtype``."""

    format: str
    bits: int = 8
    palette: bytes | None = None
    dtype: str | None = None

    def describe(self) -> str:
        if self.format == "npy":
            return f"npy {self.dtype}"
        return f"png {self.bits}-bit" + (" palette" if self.palette is not None else "")

    def matches(self, mask: Mask, labels: np.ndarray, job: FileJob) -> bool:
        """True when the input file already is stored exactly like this (copy it)."""
        if self.format == "npy":
            return job.source.lower().endswith(".npy") and str(labels.dtype) == self.dtype
        kind_bits = {"8-bit": 8, "palette": 8, "16-bit": 16}.get(mask.kind)
        same_palette = (self.palette is not None) == (mask.palette is not None)
        return job.source.lower().endswith(".png") and kind_bits == self.bits and same_palette

    def encode(self, array: np.ndarray, *, compress_level: int) -> bytes:
        if self.format == "npy":
            buf = io.BytesIO()
            np.save(buf, array.astype(self.dtype, copy=False), allow_pickle=False)
            return buf.getvalue()
        return encode_png(
            array, bits=self.bits, palette=self.palette, compress_level=compress_level
        )


def _storage(
    mask: Mask,
    labels: np.ndarray,
    fmt: str,
    lo: int,
    hi: int,
    label_map: LabelMap,
    *,
    keep_palette: bool,
    in_place: bool = False,
) -> _Storage:
    """Decide how one file's output is stored; ValueError when ``fmt`` cannot hold it."""
    mapped = label_map.outputs
    if fmt == "npy":
        lo_all = min(lo, *mapped) if mapped else lo
        hi_all = max(hi, *mapped) if mapped else hi
        signed = lo_all < 0 or np.issubdtype(labels.dtype, np.signedinteger)
        return _Storage("npy", dtype=str(smallest_int_dtype(lo_all, hi_all, signed=signed)))
    if lo < 0 or hi > PNG_MAX:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{mask.path}: value {bad} cannot be stored in a PNG (0..{PNG_MAX}); "
            "write .npy instead (--format npy)"
        )
    # The depth is decided from what the mapping can produce, so a run does not mix depths:
    # kept values of a 16-bit input may need 16 bits; rule outputs above 255 need them always.
    # In place, a 16-bit file stays 16-bit (its unchanged neighbours are not rewritten).
    keeps_wide = mask.kind == "16-bit" and (label_map.unmapped == "keep" or in_place)
    wide = keeps_wide or max(hi, *mapped, 0) > 0xFF
    bits = 16 if wide else 8
    palette = mask.palette if keep_palette and bits == 8 else None
    return _Storage("png", bits=bits, palette=palette)


# ----------------------------------------------------------------------------- writing


def _write_atomic(destination: str, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``destination`` and rename it over it.

    ``durable`` syncs the data to disk before the rename (in place, where the old file is the
    only copy), so even a power cut leaves the old file or the new one.
    """
    with atomic_path(destination) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())


def _copy_atomic(source: str, destination: str) -> None:
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)


def _journal(job: FileJob, run_id: str | None) -> None:
    """Record one finished file (one short append, so parallel workers do not interleave)."""
    if run_id is None:
        return
    line = json.dumps({"run": run_id, "file": job.record_name}) + "\n"
    fd = os.open(
        os.path.join(job.record_root, JOURNAL_NAME), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
    )
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- a run


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run_remap(
    plan: RemapPlan,
    *,
    jobs: int | None = None,
    dry_run: bool = False,
    compress_level: int = PNG_COMPRESS_LEVEL,
    on_file: Callable[[FileResult], None] | None = None,
) -> RemapResult:
    """Carry out ``plan`` over ``jobs`` processes and return the summary.

    Before the first write every record directory gets the run (marked incomplete); each
    worker notes each finished file; at the end the run is marked complete. ``on_file`` gets
    each file's result as it arrives, in input order.
    """
    run_id = None if dry_run else f"{_now()}-{uuid.uuid4().hex[:8]}"
    roots = tuple(dict.fromkeys(job.record_root for job in plan.files))
    if run_id is not None:
        for root in roots:
            os.makedirs(root, exist_ok=True)
            runs = read_manifest(root)
            runs.append(_run_record(plan, run_id))
            _write_manifest(root, runs)
    func = functools.partial(
        remap_file,
        label_map=plan.label_map,
        keep_palette=plan.keep_palette,
        in_place=plan.in_place,
        dry_run=dry_run,
        compress_level=compress_level,
        run_id=run_id,
        repair=plan.repair,
        colormap=plan.colormap,
        unknown_colour=plan.unknown_colour,
    )
    tally = _Tally()
    for result in ordered_map(func, plan.files, jobs=jobs, preload=("labelfix.remap",)):
        tally.add(result)
        if on_file is not None:
            on_file(result)
    manifests = ()
    if run_id is not None:
        manifests = tuple(_finish_record(root, run_id) for root in roots)
    return tally.result(plan, dry_run=dry_run, manifests=manifests)


def _run_record(plan: RemapPlan, run_id: str) -> dict:
    return {
        "id": run_id,
        "labelfix": __version__,
        "started": _now(),
        "finished": None,
        "complete": False,
        "mode": "in-place" if plan.in_place else "output",
        "sources": [t.source for t in plan.targets],
        "format": plan.format or "as input",
        "mapping": plan.label_map.to_dict(),
        "repair": plan.repair.to_dict() if plan.repair is not None else None,
        "colormap": plan.colormap.name if plan.colormap is not None else None,
        "files": [],
    }


def _finish_record(root: str, run_id: str) -> str:
    runs = read_manifest(root)
    for run in runs:
        if run.get("id") == run_id:
            run["finished"] = _now()
            run["complete"] = True
    return _write_manifest(root, runs)


class _Tally:
    """Folds file results together; memory grows with distinct values, not with files."""

    def __init__(self) -> None:
        self.files = self.read = self.changed = self.unchanged = self.written = 0
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.stored: dict[str, int] = {}
        self.values: dict[tuple[int, int], list[int]] = {}
        self.repaired = self.to_ignore = self.repaired_files = 0

    def add(self, r: FileResult) -> None:
        self.files += 1
        self.read += bool(r.values)  # decoded as a label mask
        if r.status == "failed":
            self.failed.append(r.source)
            self.errors.extend(r.errors)
            return
        self.changed += r.status == "changed"
        self.unchanged += r.status == "unchanged"
        self.written += r.written
        self.repaired += r.repaired
        self.to_ignore += r.to_ignore
        self.repaired_files += r.repaired > 0
        if r.stored is not None:  # written, or would be in a dry run
            self.stored[r.stored] = self.stored.get(r.stored, 0) + 1
        for v, c, o in zip(r.values, r.counts, r.outputs, strict=True):
            entry = self.values.setdefault((v, o), [0, 0])
            entry[0] += c
            entry[1] += 1

    def result(self, plan: RemapPlan, *, dry_run: bool, manifests: tuple[str, ...]):
        return RemapResult(
            label_map=plan.label_map,
            in_place=plan.in_place,
            dry_run=dry_run,
            targets=plan.targets,
            format=plan.format,
            format_reason=plan.format_reason,
            files=self.files + len(plan.skipped),
            read=self.read,
            changed=self.changed,
            unchanged=self.unchanged,
            written=self.written,
            errors=tuple(self.errors),
            failed_files=tuple(self.failed),
            skipped=plan.skipped,
            skipped_reason=plan.skipped_reason,
            stored=tuple(sorted(self.stored.items())),
            values=tuple(
                ValueChange(value=v, becomes=o, pixels=p, files=f)
                for (v, o), (p, f) in sorted(self.values.items())
            ),
            manifests=manifests,
            notes=plan.notes,
            repaired_pixels=self.repaired,
            to_ignore_pixels=self.to_ignore,
            repaired_files=self.repaired_files,
        )


def remap(
    paths: Sequence[str | os.PathLike],
    label_map: LabelMap,
    *,
    output: str | os.PathLike | None = None,
    in_place: bool = False,
    fmt: str | None = None,
    keep_palette: bool = True,
    glob: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    jobs: int | None = None,
    compress_level: int = PNG_COMPRESS_LEVEL,
    on_file: Callable[[FileResult], None] | None = None,
    **plan_options,
) -> RemapResult:
    """Plan and run a remap: :func:`plan_remap` then :func:`run_remap`.

    ``plan_options`` (``repair``, ``colormap``, ``unknown_colour``, ``suffix``) go to the plan.
    """
    plan = plan_remap(
        paths,
        label_map,
        output=output,
        in_place=in_place,
        fmt=fmt,
        keep_palette=keep_palette,
        glob=glob,
        force=force,
        **plan_options,
    )
    return run_remap(
        plan, jobs=jobs, dry_run=dry_run, compress_level=compress_level, on_file=on_file
    )
