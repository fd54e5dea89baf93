"""Running a rewrite (remap or repair): plan once, apply in parallel, fold the results.

:func:`~labelfix.rewrite.plan.plan_remap` lists the files and decides where and how each is
written; :func:`run_remap` records the run, hands the files to worker processes
(:func:`~labelfix.rewrite.apply.remap_file`) and folds their results into a :class:`RemapResult`;
:func:`remap` does both.

Every file goes through the door (:mod:`labelfix.io.door`): the run holds the lock of every
directory it records in for its whole length, so two runs never write the same files; once it
holds them it reads the records again (the door has removed the temporary files a killed run
left there). Finishing the record is the commit point: a run interrupted after it has done its
work (:class:`Interrupted` says which).

On a dataset of your own::

    from labelfix.labels.presets import preset
    result = remap(["gtFine/"], preset("cityscapes"), jobs=2)
    result.changed, result.written, result.destinations
    # -> (2975, 2975, ('gtFine-remapped',))
"""

from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from labelfix._version import __version__
from labelfix.io.atomic import deferred_signals
from labelfix.io.door import Door, Outlet
from labelfix.io.lock import check_free
from labelfix.io.png import PNG_COMPRESS_LEVEL
from labelfix.labels.labelmap import LabelMap
from labelfix.parallel import ordered_map
from labelfix.rewrite.apply import Rewrite, remap_file
from labelfix.rewrite.jobs import FileResult, Target
from labelfix.rewrite.plan import RemapPlan, plan_remap, recheck
from labelfix.rewrite.record import damaged, finish_run, read_runs, set_aside, write_runs


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a run; ``finished`` when it came after the commit point (the
    record was complete: nothing is left to do)."""

    def __init__(self, *, finished: bool, in_place: bool):
        super().__init__()
        self.finished, self.in_place = finished, in_place


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
    #: with a repair: stray pixels left as drawn in masks with no lossy signature, and files
    held_pixels: int = 0
    held_files: int = 0
    #: temporary files of earlier, killed runs removed from the directories written
    stale_temporaries: int = 0
    #: values of the files that were read but failed (not in ``values``)
    failed_values: frozenset[int] = frozenset()

    @property
    def ok(self) -> bool:
        return not self.failed_files and self.files > 0

    @property
    def unused_ignore(self) -> tuple[int, ...]:
        """``ignore`` values of the mapping that match no pixel of the files read."""
        if not self.read:
            return ()
        seen = {v.value for v in self.values} | self.failed_values
        return tuple(v for v in self.label_map.ignore if v not in seen)

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
            "held_back_pixels": self.held_pixels,
            "held_back_files": self.held_files,
            "total_pixels": self.total_pixels,
            "manifests": list(self.manifests),
            "stale_temporaries_removed": self.stale_temporaries,
            "errors": list(self.errors),
            "notes": list(self.notes),
        }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run_remap(
    plan: RemapPlan,
    *,
    jobs: int | None = None,
    dry_run: bool = False,
    compress_level: int = PNG_COMPRESS_LEVEL,
    on_file: Callable[[FileResult], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> RemapResult:
    """Carry out ``plan`` over ``jobs`` processes and return the summary.

    Unless it is a dry run, the run first opens the door on every record directory (taking its
    lock: :class:`~labelfix.io.lock.DirectoryLocked` when another run holds one), reads the
    records again, then every record directory gets the run (marked incomplete); each worker
    notes each file it writes; at the end the run is marked complete. ``on_file`` gets each
    file's result as it arrives, in input order; ``on_note`` each line worth a warning (a lock
    taken over from a killed run, a damaged record set aside), which the result's ``notes``
    list too. Ctrl-C raises :class:`Interrupted`.
    """
    if dry_run:
        return _run(plan, None, jobs, compress_level, on_file, 0, (), {})
    finished = [False]
    try:
        with Door(plan.rules) as door:
            roots = sorted(plan.record_roots, key=os.path.realpath)
            outlets = {root: door.outlet(root) for root in roots}
            plan = recheck(plan)  # a run that ended while this one waited may have done some
            written = sorted(set(plan.directories) - set(roots))
            # another run locked a directory below a root, where this one writes too
            check_free(_between(written, roots), inside=", ".join(roots))
            door.sweep(written)
            notes = list(door.notes)
            for root, outlet in outlets.items():
                if plan.discard_record:
                    notes.extend(_set_aside(outlet))
                runs = read_runs(root)
                runs.append(_run_record(plan, door.run))
                write_runs(outlet, runs)
            if on_note is not None:
                for note in notes:
                    on_note(note)
            door.start()

            def commit(run_id: str) -> tuple[str, ...]:
                with deferred_signals():
                    manifests = _finish(plan, run_id, outlets)
                    door.finish()
                    finished[0] = True
                return manifests

            return _run(
                plan, door.run, jobs, compress_level, on_file, door.stale, tuple(notes), outlets,
                commit,
            )  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted(finished=finished[0], in_place=plan.in_place) from None


def _set_aside(outlet: Outlet) -> list[str]:
    """Notes for the damaged record files of ``outlet``'s directory, moved out of the way."""
    paths = damaged(outlet.root)
    moved = set_aside(outlet, paths, when=_now())
    return [
        f"{path}: damaged; moved to {aside} (--discard-record): files an earlier run mapped "
        "may be mapped again"
        for path, aside in zip(paths, moved, strict=True)
    ]


def _between(directories: Sequence[str], roots: Sequence[str]) -> list[str]:
    """``directories`` and their parents up to (not including) the root each lies in."""
    tops = {os.path.realpath(r) for r in roots}
    found: dict[str, None] = {}
    for directory in directories:
        while directory and os.path.realpath(directory) not in tops and directory not in found:
            found[directory] = None
            parent = os.path.dirname(directory)
            directory = parent if parent != directory else ""
    return list(found)


def _run(
    plan, run_id, jobs, compress_level, on_file, stale, notes, outlets, commit=None
) -> RemapResult:
    """Apply ``plan`` (``run_id`` None: a dry run), fold the results, finish the records."""
    rewrite = Rewrite(
        label_map=plan.label_map,
        keep_palette=plan.keep_palette,
        in_place=plan.in_place,
        repair=plan.repair,
        colours=plan.colours,
        dry_run=run_id is None,
        compress_level=compress_level,
        run_id=run_id,
        outlets=outlets,
    )
    func = functools.partial(remap_file, rewrite=rewrite)
    tally = RemapTally()
    for result in ordered_map(func, plan.jobs(), jobs=jobs, preload=("labelfix.rewrite.run",)):
        tally.add(result)
        if on_file is not None:
            on_file(result)
    manifests = commit(run_id) if commit is not None else ()
    return tally.result(plan, dry_run=run_id is None, manifests=manifests, stale=stale, notes=notes)


def _finish(plan: RemapPlan, run_id: str, outlets: Mapping[str, Outlet]) -> tuple[str, ...]:
    """Mark the run complete in every record (the interrupted runs it finished too)."""
    resumes: dict[str, set[str]] = {}
    for directory, resumed in plan.resumes:
        resumes.setdefault(os.path.realpath(directory), set()).add(resumed)
    return tuple(
        finish_run(outlet, run_id, when=_now(), resumed=resumes.get(os.path.realpath(root), ()))
        for root, outlet in outlets.items()
    )


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
        "colormap": plan.colours.colormap.name if plan.colours is not None else None,
        "files": [],
    }


class RemapTally:
    """Folds file results together; memory grows with distinct values, not with files."""

    def __init__(self) -> None:
        self.files = self.read = self.changed = self.unchanged = self.written = 0
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.stored: dict[str, int] = {}
        self.values: dict[tuple[int, int], list[int]] = {}
        self.repaired = self.to_ignore = self.repaired_files = 0
        self.held = self.held_files = 0
        self.failed_values: set[int] = set()

    def add(self, r: FileResult) -> None:
        self.files += 1
        self.read += bool(r.values)  # decoded as a label mask
        if r.status == "failed":
            self.failed.append(r.source)
            self.errors.extend(r.errors)
            self.failed_values.update(r.values)
            return
        self.changed += r.status == "changed"
        self.unchanged += r.status == "unchanged"
        self.written += r.written
        self.repaired += r.repaired
        self.to_ignore += r.to_ignore
        self.repaired_files += r.repaired > 0
        self.held += r.held
        self.held_files += r.held > 0
        if r.stored is not None:  # written, or would be in a dry run
            self.stored[r.stored] = self.stored.get(r.stored, 0) + 1
        for v, c, o in zip(r.values, r.counts, r.outputs, strict=True):
            entry = self.values.setdefault((v, o), [0, 0])
            entry[0] += c
            entry[1] += 1

    def result(
        self,
        plan: RemapPlan,
        *,
        dry_run: bool,
        manifests: tuple[str, ...],
        stale: int = 0,
        notes: tuple[str, ...] = (),
    ) -> RemapResult:
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
            notes=plan.notes + notes,
            repaired_pixels=self.repaired,
            to_ignore_pixels=self.to_ignore,
            repaired_files=self.repaired_files,
            held_pixels=self.held,
            held_files=self.held_files,
            stale_temporaries=stale,
            failed_values=frozenset(self.failed_values),
        )


def remap(
    paths: Sequence[str | os.PathLike],
    label_map: LabelMap,
    *,
    dry_run: bool = False,
    jobs: int | None = None,
    compress_level: int = PNG_COMPRESS_LEVEL,
    on_file: Callable[[FileResult], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    **plan_options,
) -> RemapResult:
    """Plan and run a remap: :func:`~labelfix.rewrite.plan.plan_remap` then :func:`run_remap`.

    ``plan_options`` (the fields of :class:`~labelfix.rewrite.plan.RemapOptions`) go to the
    plan.
    """
    plan = plan_remap(paths, label_map, **plan_options)
    return run_remap(
        plan,
        jobs=jobs,
        dry_run=dry_run,
        compress_level=compress_level,
        on_file=on_file,
        on_note=on_note,
    )
