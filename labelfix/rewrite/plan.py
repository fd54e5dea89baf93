"""Planning a rewrite: list the files, decide where each output goes and in which format, check
the records of earlier runs. Nothing is read or written here but directory listings and records.

* Without ``output`` or ``in_place`` the output goes to a sibling directory, ``masks`` ->
  ``masks-remapped``, mirroring the input tree.
* A PNG cannot hold -1: when the mapping produces a negative value (or one above 65535) every
  mask of the run is written as ``.npy`` with the smallest signed integer dtype that holds its
  values (labelme's ``SegmentationClassNpy`` convention).
* In place, a file's name never changes: a change of format in place is refused.

>>> from labelfix.labels.presets import preset
>>> plan = plan_remap(["gtFine/"], preset("cityscapes"))          # doctest: +SKIP
>>> len(plan.files), plan.targets[0].destination                  # doctest: +SKIP
(2975, 'gtFine-remapped')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

from labelfix.errors import UsageError
from labelfix.io.masks import MASK_SUFFIXES, iter_mask_files
from labelfix.labels.colormap import ColourPolicy
from labelfix.labels.labelmap import LabelMap
from labelfix.rewrite.jobs import FileJob, Target
from labelfix.rewrite.record import AlreadyRemapped, guard, read_runs, run_finished
from labelfix.rewrite.repair import RepairSpec

#: ``masks`` -> ``masks-remapped`` when no output directory is given.
DEFAULT_SUFFIX = "-remapped"
FORMATS = ("png", "npy")
#: The largest value a (16-bit) PNG holds.
PNG_MAX = 0xFFFF


class RemapUsageError(UsageError):
    """A rewrite that cannot be carried out as asked (the CLI exits 2)."""


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
    colours: ColourPolicy | None = None
    #: every directory that keeps a record of the run (the output or in-place directories)
    record_roots: tuple[str, ...] = ()
    force: bool = False
    #: ``(record directory, run id)`` of interrupted runs whose work this run finishes
    resumes: tuple[tuple[str, str], ...] = ()


def recheck(plan: RemapPlan) -> RemapPlan:
    """``plan`` with the records read again (a run that finished since it was made may have
    remapped some of its files); called once the run holds its directories' locks."""
    if plan.force or plan.label_map.idempotent:
        return plan
    if not plan.files:  # a resume with nothing left: unless the run it resumes has finished since
        if plan.resumes and all(run_finished(d, run_id) for d, run_id in plan.resumes):
            raise AlreadyRemapped(
                f"{len(plan.skipped)} file(s), e.g. {plan.skipped[0]}, were already remapped "
                f"by this mapping ({plan.label_map.describe()}) in a run that finished while "
                "this one started; the mapping is not idempotent, so applying it again would "
                "change them a second time. Use --force to apply it anyway."
            )
        return plan
    guarded = guard(plan.files, plan.label_map, in_place=plan.in_place, force=False)
    if len(guarded.files) == len(plan.files):
        return plan
    return dataclasses.replace(
        plan,
        files=guarded.files,
        skipped=plan.skipped + guarded.skipped,
        skipped_reason=guarded.reason,
        resumes=tuple(dict.fromkeys(plan.resumes + guarded.resumes)),
    )


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
    colours: ColourPolicy | None = None,
    suffix: str = DEFAULT_SUFFIX,
    suffixes: tuple[str, ...] = MASK_SUFFIXES,
) -> RemapPlan:
    """List the files under ``paths`` and decide where and how each one is written.

    With ``repair``, every mapped mask is also repaired (lossy artifacts, see
    :mod:`labelfix.rewrite.repair`); with ``colours``, colour masks are read as class ids.

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
            if os.path.isdir(path):  # one that cannot be listed: reading it fails, naming it
                name = os.path.join(prefix, relpath)
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
    roots = tuple(dict.fromkeys(job.record_root for job in files))
    guarded = guard(files, label_map, in_place=in_place, force=force) if files else None
    if guarded is not None:
        files = guarded.files
    return RemapPlan(
        label_map=label_map,
        files=tuple(files),
        targets=tuple(targets),
        in_place=in_place,
        format=run_format,
        format_reason=reason,
        keep_palette=keep_palette,
        skipped=guarded.skipped if guarded else (),
        skipped_reason=guarded.reason if guarded else None,
        notes=guarded.notes if guarded else (),
        repair=repair,
        colours=colours,
        record_roots=roots,
        force=force,
        resumes=guarded.resumes if guarded else (),
    )


def _with_format(relpath: str, file_format: str) -> str:
    stem, ext = os.path.splitext(relpath)
    if file_format == "npy":
        return stem + ".npy"
    return relpath if ext.lower() == ".png" else stem + ".png"


def _check_destinations(files: list[FileJob], targets: list[Target], *, in_place: bool) -> None:
    sources: dict[str, str] = {}
    for job in files:  # `remap DIR DIR/a.png`: one mask reached twice would be written twice
        key = os.path.realpath(job.source)
        if key in sources:
            raise RemapUsageError(
                f"{job.source} is given twice (also as {sources[key]}): give each input once"
            )
        sources[key] = job.source
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
        changed = [
            job
            for job in files
            if job.destination != _with_format(job.source, job.format)
            and not os.path.isdir(job.source)  # an unlistable directory: it fails when read
        ]
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
    _refuse_foreign_files(files)


def _refuse_foreign_files(files: list[FileJob]) -> None:
    """A usage error when a destination exists that no recorded remap run wrote: the user's
    own file (ground truth copied there, another tool's output) is never replaced. Files an
    earlier run wrote into the same directory (its record lists them) are replaced.

    A hostile-user pass found ``remap ... -o ex/`` replacing a mask copied into ``ex/`` and
    calling it "an earlier run's output".
    """
    written: dict[str, set[str]] = {}
    foreign = []
    for job in files:
        if not os.path.lexists(job.destination):
            continue
        if job.record_root not in written:
            names: set[str] = set()
            for run in read_runs(job.record_root):
                names.update(run.get("files", ()))
                names.update(run.get("pending") or ())
            written[job.record_root] = names
        if job.record_name not in written[job.record_root]:
            foreign.append(job.destination)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise RemapUsageError(
            f"{foreign[0]}{more} already exists and no earlier labelfix run wrote it: remap "
            "never replaces a file it did not write; choose a new --output directory or move "
            "the file away"
        )
