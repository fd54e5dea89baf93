"""Planning a rewrite: list the files, decide where each output goes and in which format, check
the records of earlier runs. Nothing is read or written here but directory listings and records.

* Without ``output`` or ``in_place`` the output goes to a sibling directory, ``masks`` ->
  ``masks-remapped``, mirroring the input tree.
* A PNG cannot hold -1: when the mapping produces a negative value (or one above 65535) every
  mask of the run is written as ``.npy`` with the smallest signed integer dtype that holds its
  values (labelme's ``SegmentationClassNpy`` convention).
* In place, a file's name never changes: a change of format in place is refused.

On a dataset of your own::

    from labelfix.labels.presets import preset
    plan = plan_remap(["gtFine/"], preset("cityscapes"))
    plan.count, plan.targets[0].destination
    # -> (2975, 'gtFine-remapped')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from labelfix.errors import UsageError
from labelfix.io.door import Outlet, Rules
from labelfix.io.masks import MASK_SUFFIXES, is_listed, iter_mask_files, smallest_int_dtype
from labelfix.labels.colormap import ColourPolicy
from labelfix.labels.labelmap import LabelMap
from labelfix.rewrite.jobs import FileJob, Target
from labelfix.rewrite.record import Guard
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
    """Everything decided before the first file is read. Built by :func:`plan_remap`.

    The plan does not hold the files: :meth:`jobs` lists them again, lazily, so that memory
    does not grow with their number; ``count`` says how many there were when it was made.
    """

    label_map: LabelMap
    targets: tuple[Target, ...]
    in_place: bool
    format: str | None
    format_reason: str | None
    keep_palette: bool
    #: files the run reads (the skipped ones aside)
    count: int = 0
    #: outputs already there (of an earlier run; a file no run wrote is refused)
    existing: int = 0
    skipped: tuple[str, ...] = ()
    skipped_reason: str | None = None
    notes: tuple[str, ...] = ()
    repair: RepairSpec | None = None
    colours: ColourPolicy | None = None
    #: every directory that keeps a record of the run (the output or in-place directories)
    record_roots: tuple[str, ...] = ()
    #: every directory the outputs go into
    directories: tuple[str, ...] = ()
    force: bool = False
    #: ``(record directory, run id)`` of interrupted runs whose work this run finishes
    resumes: tuple[tuple[str, str], ...] = ()
    glob: str | None = None
    suffixes: tuple[str, ...] = MASK_SUFFIXES
    #: what the run may write (:mod:`labelfix.io.door`): its inputs, in place or not
    rules: Rules | None = None
    #: damaged run records are set aside instead of stopping the run (``--discard-record``)
    discard_record: bool = False

    @property
    def command(self) -> str:
        return "repair" if self.repair is not None else "remap"

    def jobs(self) -> Iterator[FileJob]:
        """The files to remap, in order, listed as they are asked for (the skipped ones left
        out)."""
        skipped = frozenset(self.skipped)
        return (job for job in self._listed() if job.source not in skipped)

    def _listed(self) -> Iterator[FileJob]:
        for target in self.targets:
            for path, relpath in iter_mask_files(
                [target.source], glob=self.glob, suffixes=self.suffixes
            ):
                fmt = self.format or ("npy" if path.lower().endswith(".npy") else "png")
                name = os.path.join(target.prefix, _with_format(relpath, fmt))
                if os.path.isdir(path):  # one that cannot be listed: reading it fails, naming it
                    name = os.path.join(target.prefix, relpath)
                yield FileJob(
                    source=path,
                    relpath=relpath,
                    destination=path if self.in_place else os.path.join(target.destination, name),
                    format=fmt,
                    record_root=target.destination,
                    record_name=name,
                    # npy only for the value a PNG cannot hold: a PNG without it stays a PNG
                    keep_png=fmt == "npy"
                    and self.format_reason is not None
                    and path.lower().endswith(".png"),
                )


def recheck(plan: RemapPlan) -> RemapPlan:
    """``plan`` with the files listed and the records read again (a run that finished since it
    was made may have remapped some of its files); called once the run holds its directories'
    locks."""
    return _survey(plan)


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
        stored = (  # as apply.choose_storage picks it: signed only for a negative value
            "with the smallest signed integer dtype that holds their values (labelme's "
            "SegmentationClassNpy convention"
            if unfit[0] < 0
            else f"of dtype {smallest_int_dtype(0, unfit[-1])}, unsigned as no value is "
            "negative (a signed .npy input stays signed"
        )
        return "npy", (
            f"the mapping produces {unfit[0]}, which a PNG cannot store: masks are written as "
            f".npy {stored}; read them with numpy.load)"
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


@dataclass(frozen=True)
class RemapOptions:
    """Where and how a rewrite writes (the options remap and repair share): ``output`` or
    ``in_place`` (else a sibling ``NAME{suffix}`` directory), ``fmt`` (``png``/``npy``; None:
    as the input, ``.npy`` for negative values), ``keep_palette``, ``glob`` or ``suffixes`` (the
    files listed), ``force`` (a non-idempotent mapping again), ``repair`` (a
    :class:`~labelfix.rewrite.repair.RepairSpec`), ``colours`` (colour masks read as ids),
    ``discard_record`` (damaged run records set aside instead of stopping)."""

    output: str | os.PathLike | None = None
    in_place: bool = False
    fmt: str | None = None
    keep_palette: bool = True
    glob: str | None = None
    force: bool = False
    repair: RepairSpec | None = None
    colours: ColourPolicy | None = None
    suffix: str = DEFAULT_SUFFIX
    suffixes: tuple[str, ...] = MASK_SUFFIXES
    discard_record: bool = False


def plan_remap(
    paths: Sequence[str | os.PathLike],
    label_map: LabelMap,
    options: RemapOptions | None = None,
    /,
    **fields,
) -> RemapPlan:
    """List the files under ``paths`` and decide where and how each one is written, as
    ``options`` (a :class:`RemapOptions`, or its fields as keywords) say.

    Raises RemapUsageError for requests that cannot be carried out (output over an input,
    two inputs writing one output, a format change in place, PNG for negative values) and
    AlreadyRemapped when a non-idempotent mapping was already applied to the files.
    """
    options = options if options is not None else RemapOptions(**fields)
    output, in_place, suffix = options.output, options.in_place, options.suffix
    fmt = options.fmt
    if in_place and output is not None:
        raise RemapUsageError("--in-place and --output exclude each other: choose one")
    run_format, reason = output_format(label_map, fmt=fmt)
    sources = [os.fspath(p) for p in paths]
    for source in sources:
        if not os.path.exists(source):
            raise RemapUsageError(f"{source}: no such file or directory")
    targets = []
    for source in sources:
        root = source if os.path.isdir(source) else (os.path.dirname(source) or ".")
        prefix = ""
        if in_place:
            destination = root
        elif output is None:
            destination = default_destination(source, suffix=suffix)
        else:
            destination = os.fspath(output)
            if len(sources) > 1 and os.path.isdir(source):
                prefix = os.path.basename(os.path.abspath(source))
        targets.append(Target(source=source, destination=destination, prefix=prefix))
    plan = RemapPlan(
        label_map=label_map,
        targets=tuple(targets),
        in_place=in_place,
        format=run_format,
        format_reason=reason,
        keep_palette=options.keep_palette,
        repair=options.repair,
        colours=options.colours,
        force=options.force,
        glob=options.glob,
        suffixes=options.suffixes,
        discard_record=options.discard_record,
    )
    plan = dataclasses.replace(
        plan, rules=Rules.of(plan.command, inputs=sources, in_place=in_place)
    )
    _check_targets(plan)
    return _survey(plan)


def _check_targets(plan: RemapPlan) -> None:
    """Refuse inputs given twice (one inside another), two inputs writing one output folder,
    an output directory inside its input: what can be seen without listing the files."""
    inputs: list[tuple[str, str]] = []  # (real path, as given)
    for target in plan.targets:
        real = os.path.realpath(target.source)
        for other_real, other in inputs:
            if real == other_real:
                raise RemapUsageError(
                    f"{target.source} is given twice (also as {other}): give each input once"
                )
            for (a, a_shown), (b, b_shown) in (
                ((real, target.source), (other_real, other)),
                ((other_real, other), (real, target.source)),
            ):  # a inside directory b, and listed when b is: reached twice
                if os.path.isdir(b) and a.startswith(b + os.sep) and _listed_in(a, b, plan):
                    raise RemapUsageError(
                        f"{a_shown} is given twice (also inside {b_shown}): give each input once"
                    )
        inputs.append((real, target.source))
    if plan.in_place:
        return
    folders: dict[str, str] = {}
    for target in plan.targets:  # an output directory over or inside an input: the door's rule
        outlet = Outlet(target.destination, plan.rules, run="plan", dry_run=True)
        plan.rules.refuse_input(target.destination, outlet.real(target.destination), directory=True)
        if not os.path.isdir(target.source):
            continue
        folder = os.path.abspath(os.path.join(target.destination, target.prefix))
        if folder in folders:
            raise RemapUsageError(
                f"{folders[folder]} and {target.source} both go to {folder}: give each input "
                "once, or write them to separate --output directories"
            )
        folders[folder] = target.source


def _listed_in(path: str, directory: str, plan: RemapPlan) -> bool:
    """Whether listing ``directory`` reaches ``path`` (below it): no hidden folder on the way,
    a mask's name, or ``path`` a directory."""
    parts = os.path.relpath(path, directory).split(os.sep)
    if any(part.startswith(".") for part in parts):
        return False
    return os.path.isdir(path) or is_listed(parts[-1], glob=plan.glob, suffixes=plan.suffixes)


def _survey(plan: RemapPlan) -> RemapPlan:
    """List the files once and check them one at a time, keeping counts and examples, not the
    files: ``plan`` with its count, directories, skipped files and notes filled in.

    Raises RemapUsageError for two files with one output, a format change in place, an output
    over an input or over a file no earlier run wrote; AlreadyRemapped (see
    :class:`~labelfix.rewrite.record.Guard`).
    """
    guard = Guard(
        plan.label_map,
        in_place=plan.in_place,
        force=plan.force,
        discard_damaged=plan.discard_record,
    )
    outlets: dict[str, Outlet] = {}  # per output directory: the door's rules, checked here
    existing = 0
    roots: dict[str, None] = {}
    directories: dict[str, None] = {}
    here: dict[str, str] = {}  # output -> input, for the directory being listed
    links: dict[str, str] = {}  # real path -> input, for inputs that are symbolic links
    renamed = _Examples()  # in place: files that would need another name
    for job in plan._listed():
        directory = os.path.dirname(job.destination)
        if directory not in directories:  # memory: the largest directory, not the whole run
            directories[directory] = None
            here.clear()
        if job.destination in here:
            raise RemapUsageError(
                f"{here[job.destination]} and {job.source} both go to {job.destination}: give "
                "each input once"
            )
        here[job.destination] = job.source
        roots[job.record_root] = None
        if os.path.islink(job.source):  # a link to another input reaches that file twice
            real = os.path.realpath(job.source)
            if real in links:
                raise RemapUsageError(
                    f"{job.source} is given twice (also as {links[real]}): give each input once"
                )
            links[real] = job.source
        if plan.in_place:
            if job.destination != _with_format(job.source, job.format) and not os.path.isdir(
                job.source
            ):  # (an unlistable directory fails when read, naming itself)
                renamed.add(job.source, job.format)
        else:
            if job.record_root not in outlets:
                outlets[job.record_root] = Outlet(
                    job.record_root, plan.rules, run="plan", dry_run=True
                )
            outlets[job.record_root].check(job.destination)  # Refused: exit 2, nothing written
            existing += os.path.lexists(job.destination)
            if job.keep_png:  # it may be written as a PNG instead
                outlets[job.record_root].check(job.as_png().destination)
                existing += os.path.lexists(job.as_png().destination)
        guard.check(job)
    if links:  # a file that is also reached through a link
        for job in plan._listed():
            real = os.path.realpath(job.source)
            if not os.path.islink(job.source) and real in links:
                raise RemapUsageError(
                    f"{links[real]} is given twice (also as {job.source}): give each input once"
                )
    if renamed.count:
        source, fmt = renamed.first
        hint = (
            ", or keep a non-negative ignore on disk (e.g. --out 255) and map it to -1 when loading"
            if fmt == "npy"
            else ""
        )
        raise RemapUsageError(
            f"--in-place would have to replace {source} (and {renamed.count - 1} more) with a "
            f".{fmt} file of another name; in place a file keeps its name. Write to another "
            f"directory with --output DIR{hint}."
        )
    guarded = guard.verdict()
    return dataclasses.replace(
        plan,
        count=guard.files - len(guarded.skipped),
        existing=existing,
        skipped=guarded.skipped,
        skipped_reason=guarded.reason,
        notes=guarded.notes,
        record_roots=tuple(roots),
        directories=tuple(directories),
        resumes=guarded.resumes,
    )


class _Examples:
    """How many times something was found, and the first one."""

    def __init__(self) -> None:
        self.count, self.first = 0, ()

    def add(self, *example) -> None:
        self.count += 1
        self.first = self.first or example


def _with_format(relpath: str, file_format: str) -> str:
    stem, ext = os.path.splitext(relpath)
    if file_format == "npy":
        return stem + ".npy"
    return relpath if ext.lower() == ".png" else stem + ".png"
