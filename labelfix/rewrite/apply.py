"""Rewriting one file: read, map, (repair,) check, choose the storage, write atomically.

:func:`remap_file` runs in worker processes and never raises for bad data: a problem becomes a
``failed`` :class:`~labelfix.rewrite.jobs.FileResult` whose errors name the file. What is done to
every file of a run travels once, as a :class:`Rewrite`.

* PNG output is 8-bit when every value the mapping can produce fits in 8 bits, else 16-bit (a
  16-bit input stays 16-bit when values are kept, or in place); palette masks keep their
  palette (unless ``keep_palette=False`` or the output needs 16 bits).
* In place, a file whose values do not change is left untouched, and a file is only ever
  replaced by renaming a complete (synced) temporary file over it.
* Before the rename the run journal gets the sha256 of the new content (an intent), after it
  the file's done line with the same digest (see :mod:`labelfix.rewrite.record`): a run
  killed in between cannot make the next run map the file again.
* Every write goes through the run's door (:class:`~labelfix.io.door.Outlet`, one per record
  directory), which refuses what must never be written.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from labelfix.checks.rules import bad_value_message, find_bad_values
from labelfix.errors import LabelfixError, MappingError, UnreadableMask
from labelfix.io.door import Outlet
from labelfix.io.masks import Mask, encode_npy, smallest_int_dtype, value_counts
from labelfix.io.png import PNG_COMPRESS_LEVEL, encode_png
from labelfix.labels.colormap import ColourPolicy, read_label_mask
from labelfix.labels.labelmap import LabelMap
from labelfix.rewrite.jobs import FileJob, FileResult
from labelfix.rewrite.plan import PNG_MAX
from labelfix.rewrite.record import file_digest, journal
from labelfix.rewrite.repair import RepairSpec, value_changes


@dataclass(frozen=True)
class Rewrite:
    """What a run does to every file (sent to the workers once per chunk of files)."""

    label_map: LabelMap
    keep_palette: bool = True
    in_place: bool = False
    repair: RepairSpec | None = None
    colours: ColourPolicy | None = None
    dry_run: bool = False
    compress_level: int = PNG_COMPRESS_LEVEL
    run_id: str | None = None
    #: the door's outlet of each record directory (none in a dry run)
    outlets: Mapping[str, Outlet] = field(default_factory=dict)


def remap_file(job: FileJob, rewrite: Rewrite) -> FileResult:
    """Read, map, (repair,) check and (unless a dry run) write one file. Never raises for bad
    data; in place, a file whose values do not change is left untouched."""
    failed = _Failure(job)
    try:
        mask, labels = _read(job, rewrite)
    except UnreadableMask as err:  # NotALabelMask included: colour and JPEG masks
        return failed(str(err))
    except MemoryError:
        return failed(f"{job.source}: out of memory while decoding")
    label_map = rewrite.label_map
    values, counts = mask.value_counts() if mask.is_label else value_counts(labels)
    values = [int(v) for v in values]
    outputs = [label_map.lookup(v) for v in values]
    stats = {"values": tuple(values), "counts": tuple(int(c) for c in counts)}
    if any(o is None for o in outputs):
        return failed(_unmapped_message(label_map, labels, job.source), **stats)
    stats["outputs"] = tuple(outputs)
    changed = any(o != v for v, o in zip(values, outputs, strict=True))
    array = None  # the output array, once computed
    lo, hi = min(outputs), max(outputs)
    if rewrite.repair is not None:  # stray values are what a repair is for: check after it
        mapped = label_map.apply(labels, path=job.source) if changed else labels
        try:
            repaired = rewrite.repair.apply(mapped, jpeg=mask.kind == "jpeg")
        except ValueError as err:  # strays with nowhere to go; values that are no class, en masse
            return failed(f"{job.source}: {err}", **stats)
        stats["repaired"], stats["to_ignore"] = repaired.changed, repaired.to_ignore
        stats["held"] = repaired.held
        changed = changed or repaired.changed > 0
        array = repaired.labels
        # per value, what its pixels become, as the file will change (one value may go several ways)
        stats["values"], stats["counts"], stats["outputs"] = value_changes(labels, array)
        lo, hi = int(array.min()), int(array.max())
    else:
        problems = _range_problems(job.source, labels, values, counts, outputs, label_map)
        if problems:
            return failed(*problems, **stats)
    changed = changed or mask.kind == "colormap"  # a colour file becomes a label file
    if job.keep_png and lo >= 0 and hi <= PNG_MAX:  # no value here that a PNG cannot hold
        job = job.as_png()
    status = "changed" if changed else "unchanged"
    try:
        storage = choose_storage(mask, labels, job.format, lo, hi, rewrite)
    except ValueError as err:
        return failed(str(err), **stats)
    if rewrite.in_place and not changed:  # left as it is, and done as far as the record goes
        if not rewrite.dry_run:
            with contextlib.suppress(OSError):  # mapping it again would leave it as it is too
                journal(rewrite.outlets[job.record_root], job, rewrite.run_id)
        return FileResult(job.source, job.destination, status, **stats)
    if rewrite.dry_run:
        return FileResult(job.source, job.destination, status, stored=storage.describe(), **stats)
    outlet = rewrite.outlets[job.record_root]
    try:
        if not changed and storage.matches(mask, labels, job):
            digest = file_digest(job.source) or "unreadable"
            journal(outlet, job, rewrite.run_id, intent=digest)
            outlet.copy(job.source, job.destination)
        else:
            if array is None:
                array = (
                    label_map.apply(labels, path=job.source, present=values) if changed else labels
                )
            data = storage.encode(array, compress_level=rewrite.compress_level)
            digest = hashlib.sha256(data).hexdigest()
            journal(outlet, job, rewrite.run_id, intent=digest, durable=rewrite.in_place)
            outlet.write(job.destination, data, durable=rewrite.in_place)
    except OSError as err:
        return failed(_write_error(job, err), **stats)
    except LabelfixError as err:  # the door refused it (another run locked a folder below)
        return failed(f"{job.destination}: not written ({err})", **stats)
    with contextlib.suppress(OSError):  # the intent line already vouches for the new content
        journal(outlet, job, rewrite.run_id, digest=digest)
    return FileResult(
        job.source, job.destination, status, written=True, stored=storage.describe(), **stats
    )


def _write_error(job: FileJob, err: OSError) -> str:
    """``out/a.png: cannot write (No space left on device)``, naming another file involved."""
    reason = err.strerror or str(err)
    if err.filename is not None and err.filename != job.destination:
        reason += f": {err.filename}"  # the run journal, or the source of a copy
    return f"{job.destination}: cannot write ({reason}); it was left as it was"


class _Failure:
    """``failed(*errors, **stats)``: the failed result of a job."""

    def __init__(self, job: FileJob):
        self.job = job

    def __call__(self, *errors: str, **stats) -> FileResult:
        return FileResult(self.job.source, self.job.destination, "failed", errors=errors, **stats)


def _read(job: FileJob, rewrite: Rewrite) -> tuple[Mask, np.ndarray]:
    """The decoded mask and its label array (a grey JPEG counts as labels when repairing)."""
    mask = read_label_mask(job.source, colours=rewrite.colours)
    return mask, mask.labels_or_grey_jpeg() if rewrite.repair is not None else mask.labels


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
    void = (label_map.out_value,) if label_map.out_value is not None else ()
    bad = find_bad_values(values, counts, labels, num_classes=n, void=void, outputs=outputs)
    return tuple(bad_value_message(path, b, num_classes=n, ignore=void) for b in bad)


@dataclass(frozen=True)
class Storage:
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
            return encode_npy(array.astype(self.dtype, copy=False))
        return encode_png(
            array, bits=self.bits, palette=self.palette, compress_level=compress_level
        )


def choose_storage(
    mask: Mask, labels: np.ndarray, fmt: str, lo: int, hi: int, rewrite: Rewrite
) -> Storage:
    """Decide how one file's output is stored; ValueError when ``fmt`` cannot hold it."""
    label_map = rewrite.label_map
    mapped = label_map.outputs
    if fmt == "npy":
        lo_all = min(lo, *mapped) if mapped else lo
        hi_all = max(hi, *mapped) if mapped else hi
        signed = lo_all < 0 or np.issubdtype(labels.dtype, np.signedinteger)
        return Storage("npy", dtype=str(smallest_int_dtype(lo_all, hi_all, signed=signed)))
    if lo < 0 or hi > PNG_MAX:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{mask.path}: value {bad} cannot be stored in a PNG (0..{PNG_MAX}); "
            "write .npy instead (--format npy)"
        )
    # The depth is decided from what the mapping can produce, so a run does not mix depths:
    # kept values of a 16-bit input may need 16 bits; rule outputs above 255 need them always.
    # In place, a 16-bit file stays 16-bit (its unchanged neighbours are not rewritten).
    keeps_wide = mask.kind == "16-bit" and (label_map.unmapped == "keep" or rewrite.in_place)
    wide = keeps_wide or max(hi, *mapped, 0) > 0xFF
    bits = 16 if wide else 8
    palette = mask.palette if rewrite.keep_palette and bits == 8 else None
    return Storage("png", bits=bits, palette=palette)
