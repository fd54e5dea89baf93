"""``labelfix stats``: what the masks hold, and the traps they set for TensorFlow."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os

import click

from labelfix.checks.scan import FileReport, report_to_dict
from labelfix.checks.stats import DatasetStats, scan_dataset, unused_ignore_message
from labelfix.checks.void import SHAPE_SAMPLE, VoidGuess, guess_from_counts, is_candidate
from labelfix.cli import options
from labelfix.cli._common import (
    count_masks,
    fail,
    handle_errors,
    no_masks,
    plural,
    progress,
    records_input,
    table,
)
from labelfix.io import fs
from labelfix.io.door import Door, Outlet, Rules
from labelfix.io.masks import KINDS
from labelfix.parallel import keep_freed_memory


@click.command(cls=options.PipelineCommand)
@options.storage_paths_argument
@options.ignore_option
@options.num_classes_option()
@options.glob_option
@options.colormap_options
@options.artifacts_option
@options.jobs_option
@options.runner_option
@options.json_option
@click.option(
    "--per-image",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Also write one row per mask to FILE (.csv, or .jsonl for JSON Lines).",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Also write a self-contained HTML report: charts, the worst masks, a sortable"
    " per-image table (needs matplotlib: pip install 'labelfix[viz]').",
)
@options.class_names_option(
    "Class names for the --html report, one per line (line k names class k)."
)
@options.record_key_options
@handle_errors
def stats(
    paths,
    ignore,
    num_classes,
    glob,
    colormap,
    unknown_colour,
    artifacts,
    jobs,
    runner,
    as_json,
    per_image,
    html_path,
    class_names,
    runner_args,
    **record_keys,
):
    """Report sizes, storage kinds, per-value pixel counts, void share and class weights.

    TFRecord shards (files, globs, a directory of them) are read record by record, without a
    manifest: the traps TensorFlow's decoders would hit (palette or 16-bit PNG masks, palette
    colours read as grey) are errors.

    \b
    labelfix stats masks/
    labelfix stats masks/ --ignore 255 --num-classes 21 --per-image rows.csv
    labelfix stats masks/ --ignore 255 --num-classes 21 --html report.html
    labelfix stats tfrecord/ --ignore 255 --num-classes 21
    labelfix stats gs://bucket/masks --runner beam -- --runner=DataflowRunner ...
    labelfix stats masks/ --runner dask -- --scheduler tcp://HOST:8786
    """
    colours = options.colour_policy(colormap, unknown_colour, ignore=ignore)
    if class_names is not None and html_path is None:
        raise click.UsageError("--class-names names the classes of the --html report: add --html")
    if records_input(paths, record_keys):
        if runner != "local" or html_path is not None or glob is not None:
            raise click.UsageError(
                "TFRecords are read with --runner local, without --html or --glob"
            )
        return _stats_of_records(
            paths, ignore, num_classes, colours, artifacts, jobs, as_json, per_image, record_keys
        )
    if html_path is not None:
        from labelfix.viz.report import require_matplotlib

        require_matplotlib()
    if runner != "local":
        for flag, given in (("--per-image", per_image), ("--html", html_path)):
            if given is not None:
                raise click.UsageError(f"{flag} needs --runner local")
        from labelfix.engines.common import engine_for, scan_dataset_on

        result = scan_dataset_on(
            engine_for(runner, runner_args),
            paths,
            glob=glob,
            ignore=ignore,
            num_classes=num_classes,
            colours=colours,
            artifacts=artifacts,
        )
        void = _Holding(active=not ignore).guess(result, colours)
        return _report(result, as_json, paths, glob, void=void)
    keep_freed_memory()  # this process reads the masks itself with -j 1 or a few files
    with Door(Rules.of("stats", inputs=paths)) as door, contextlib.ExitStack() as stack:
        outlets = {}
        for path in (per_image, html_path):  # refused now, not after every mask was read
            if path is not None:
                outlets[path] = door.file(path)[0]
                outlets[path].check(path)
        on_row = None
        if per_image is not None:
            on_row = stack.enter_context(_row_writer(outlets[per_image], per_image))
        advance = stack.enter_context(progress("stats", total=count_masks(paths, glob)))
        reports: list[FileReport] = []
        holding = _Holding(active=not ignore)

        def on_file(report: FileReport) -> None:
            advance(1)
            holding.add(report)
            if on_row is not None:
                on_row(report)
            if html_path is not None:
                reports.append(report)

        result = scan_dataset(
            paths,
            glob=glob,
            ignore=ignore,
            num_classes=num_classes,
            jobs=jobs,
            on_file=on_file,
            colours=colours,
            artifacts=artifacts,
        )
        if html_path is not None and result.files:
            _write_html(
                outlets[html_path],
                html_path,
                result,
                reports,
                paths=paths,
                read=colours,
                artifacts=artifacts,
                class_names=class_names,
            )
    _report(result, as_json, paths, glob, void=holding.guess(result, colours))


def _write_html(
    outlet: Outlet, path: str, result: DatasetStats, reports, *, paths, read, **options
) -> None:
    """The --html report, from the same DatasetStats and FileReports as the other outputs."""
    from labelfix.viz.report import ReportOptions, html_report

    text = html_report(result, reports, paths=paths, options=ReportOptions(**options), read=read)
    outlet.write(path, text.encode("utf-8"))
    click.echo(f"labelfix: wrote {path}", err=True)


class _Holding:
    """Without ``--ignore``: a few masks holding each void candidate (255, 0, -1, ...), read
    again once the scan is done to see where the candidate lies (:mod:`labelfix.checks.void`)."""

    def __init__(self, *, active: bool):
        self.active = active
        self.paths: dict[int, list[str]] = {}

    def add(self, report: FileReport) -> None:
        if not self.active or not report.is_label:
            return
        for value in report.values:
            if is_candidate(value):
                held = self.paths.setdefault(value, [])
                if len(held) < SHAPE_SAMPLE:
                    held.append(report.path)

    def guess(self, result: DatasetStats, colours) -> VoidGuess | None:
        """What the masks say about void, when no ``--ignore`` was given and a candidate is
        there; None otherwise."""
        if not self.active or not result.label_files:
            return None
        if not any(is_candidate(v) for v in result.values):
            return None
        from labelfix.errors import UnreadableMask
        from labelfix.labels.colormap import read_label_mask

        def samples():
            for path in dict.fromkeys(p for held in self.paths.values() for p in held):
                try:
                    yield read_label_mask(path, colours=colours).labels
                except UnreadableMask:  # changed since the scan: its totals still count
                    continue

        pixels = {v: s.pixels for v, s in result.values.items()}
        images = {v: s.images for v, s in result.values.items()}
        return guess_from_counts(pixels, images, result.label_files, samples())


def _report(
    result: DatasetStats, as_json: bool, paths, glob, *, void: VoidGuess | None = None
) -> None:
    """Print the report; exit 1 when a file is unreadable or there are none. ``void``: what
    the masks say about void (no ``--ignore`` given)."""
    if result.files == 0:
        fail(no_masks(paths, glob))
    if as_json:
        document = result.to_dict()
        if void is not None:
            document["probable_void"] = _void_document(void)
            document["class_weights"] = result.weights_document(_weights_of(result, void))
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(render(result, void=void))
    for value in result.unused_ignore:
        click.echo(f"labelfix: warning: {unused_ignore_message(value, result)}", err=True)
    for path, reason in result.unreadable:
        click.echo(f"labelfix: error: {path}: {reason}", err=True)
    if result.unreadable:
        raise SystemExit(1)


@contextlib.contextmanager
def _row_writer(outlet: Outlet, path: str):
    """Write per-image rows to ``path`` (CSV or JSON Lines), whole or not at all."""
    jsonl = path.lower().endswith((".jsonl", ".json", ".ndjson"))
    with outlet.create(path) as staged:
        fh = io.TextIOWrapper(staged, encoding="utf-8", newline="", write_through=True)
        yield from _rows(fh, jsonl)
        fh.detach()


def _rows(fh, jsonl: bool):
    """The row writer ``_row_writer`` yields (one function per report)."""
    if jsonl:
        yield lambda report: fh.write(json.dumps(report_to_dict(report)) + "\n")
        return
    writer = csv.writer(fh)
    writer.writerow(
        [
            "path",
            "kind",
            "height",
            "width",
            "dtype",
            "values",
            "counts",
            "void_pixels",
            "bad_values",
            "error",
        ]
    )

    def row(report: FileReport) -> None:
        writer.writerow(
            [
                fs.printable(report.path),  # a name that is not UTF-8: backslash escapes
                report.kind or "",
                report.height,
                report.width,
                report.dtype or "",
                " ".join(map(str, report.values)),
                " ".join(map(str, report.counts)),
                report.void_pixels,
                " ".join(str(b.value) for b in report.bad_values),
                fs.printable(report.error or ""),
            ]
        )

    yield row


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render(result: DatasetStats, *, void: VoidGuess | None = None, unit: str = "file") -> str:
    """The human report: aligned tables, data only (errors go to stderr). One section after
    another, each blank-line separated and left out when it has nothing to say. ``void``: what
    the masks say about void when no ``--ignore`` was given; ``unit``: what was read, a file
    or a record."""
    sections = (
        _summary(result, unit),
        _storage(result, unit),
        _values(result, void),
        _void(result, void),
        _range(result),
        _weights(result, void),
        _artifacts(result),
    )
    out = [line for section in sections if section for line in (*section, "")][:-1]
    for path, kind in result.not_labels:
        out.append(f"{os.fspath(path)}: {kind} mask, not counted ({KINDS[kind]})")
    return "\n".join(out)


def _summary(result: DatasetStats, unit: str = "file") -> list[str]:
    parts = [plural(result.label_files, "label mask")]
    if result.not_labels:
        parts.append(plural(len(result.not_labels), "not label mask"))
    if result.unreadable:
        parts.append(f"{len(result.unreadable)} unreadable")
    out = [f"Scanned {plural(result.files, unit)}: " + ", ".join(parts)]
    if result.sizes:
        sizes = sorted(result.sizes.items(), key=lambda kv: -kv[1])
        out.append(
            "Sizes (WxH): "
            + ", ".join(f"{w}x{h} ({n})" for (h, w), n in sizes[:8])
            + (f", ... {len(sizes) - 8} more" if len(sizes) > 8 else "")
        )
    return out


def _storage(result: DatasetStats, unit: str = "file") -> list[str]:
    if not result.kinds:
        return []
    rows = [
        (kind, n, KINDS.get(kind) or "")
        for kind, n in sorted(result.kinds.items(), key=lambda kv: list(KINDS).index(kv[0]))
    ]
    return ["Storage:", table(rows, ("kind", unit + "s", "trap"), right={1})]


def _values(result: DatasetStats, void: VoidGuess | None = None) -> list[str]:
    if not result.values:
        return []
    probable = _probable(void)
    rows = [
        (
            v,
            f"{s.pixels:,}",
            _pct(s.pixels / result.total_pixels),
            s.images,
            "void? (no --ignore)" if v in probable else result.role(v),
        )
        + ((_pct(s.fringe / s.pixels),) if result.artifacts else ())
        for v, s in sorted(result.values.items())
    ]
    header = ("value", "pixels", "share", "images", "role")
    right = {0, 1, 2, 3}
    if result.artifacts:
        header, right = (*header, "on fringes"), {*right, 5}
    return ["Values:", table(rows, header, right=right)]


def _probable(void: VoidGuess | None) -> tuple[int, ...]:
    """The values the masks make void, when they decide it (not when a guess is low)."""
    if void is None or not void.decided or void.confidence == "low":
        return ()
    return void.ignore


def _void_document(void: VoidGuess) -> dict:
    return {
        "ignore": list(void.ignore) if void.decided else None,
        "decided": void.decided,
        "confidence": void.confidence,
        "summary": void.summary,
        "evidence": list(void.evidence),
        "readings": [r.assumption for r in void.readings],
    }


def _void_advice(void: VoidGuess) -> str:
    if not void.decided:
        options = []
        for r in void.readings:
            if r.ignore:
                options.append(f"--ignore {', '.join(map(str, r.ignore))} if {r.assumption}")
            elif r.maps:
                maps = " ".join(f"--map {a}:{b}" for a, b in r.maps)
                options.append(f"{maps} (remap, to-tfrecord) if {r.assumption}")
        return "; ".join(options)
    reading = void.readings[0]
    if reading.preset:
        return f"give --preset {reading.preset} to remap and to-tfrecord"
    if reading.ignore:
        return f"give --ignore {' --ignore '.join(map(str, reading.ignore))}"
    if reading.maps:
        maps = " ".join(f"--map {a}:{b}" for a, b in reading.maps)
        return f"no --ignore; {maps} -n {reading.num_classes} for remap and to-tfrecord"
    return "no --ignore needed"


def _void(result: DatasetStats, void: VoidGuess | None = None) -> list[str]:
    if not result.ignore:
        if void is None:
            return []
        out = [f"Void: no --ignore given. {void.summary} [{void.confidence}]."]
        out.extend(f"  {e}" for e in void.evidence)
        out.append(f"  So: {_void_advice(void)}.")
        return out
    ign = ", ".join(map(str, result.ignore))
    return [
        f"Void (ignore {ign}): {result.void_pixels:,} px, {_pct(result.void_share)}"
        f" of all pixels; {len(result.all_void)} mask(s) entirely void",
        *(f"  {path}" for path in result.all_void[:20]),
    ]


def _range(result: DatasetStats) -> list[str]:
    n = result.num_classes
    if n is None:
        return []
    if not result.out_of_range:
        return [f"Every value is a class id (0..{n - 1}) or ignore."]
    out = [f"Not class ids (num_classes {n}, valid 0..{n - 1}, not ignore):"]
    for v, files in sorted(result.out_of_range.items()):
        shown = ", ".join(files[:5]) + (f", ... {len(files) - 5} more" if len(files) > 5 else "")
        out.append(f"  value {v} in {len(files)} file(s): {shown}")
    return out


def _weights_of(result: DatasetStats, void: VoidGuess | None) -> dict[int, float]:
    """The class weights, the values the masks make void left out (no ``--ignore`` given)."""
    probable = _probable(void)
    if not probable:
        return result.class_weights()
    return dataclasses.replace(result, ignore=probable).class_weights()


def _weights(result: DatasetStats, void: VoidGuess | None = None) -> list[str]:
    weights = _weights_of(result, void)
    if not weights:
        return []
    rows = [
        (c, f"{w:.4f}", "" if result.values.get(c) else "no pixel: 1.0, not measured")
        for c, w in weights.items()
    ]
    head = "Suggested class weights (median-frequency balancing"
    probable = _probable(void)
    if probable:
        values = ", ".join(map(str, probable))
        head += f"; {values} left out as probable void, --ignore {values} makes it so"
    return [head + "):", table(rows, ("class", "weight", ""), right={0, 1})]


def _artifacts(result: DatasetStats) -> list[str]:
    if not result.artifacts:
        return []
    if result.suspects:
        rows = [
            (v, f, f"{p:,}", _pct(fr / p if p else 0.0))
            for v, (f, p, fr) in sorted(result.suspects.items())
        ]
        out = [
            "Suspected lossy artifacts (values on boundaries between two other values):",
            table(rows, ("value", "files", "pixels", "on fringes"), right={0, 1, 2, 3}),
        ]
    else:
        out = ["No value lies only on boundaries between two other values."]
    out.append(f"Specks (< 3 same-valued neighbours): {result.specks:,} px")
    if result.interpolated:
        out.append(f"{len(result.interpolated)} mask(s) look interpolated (resized or JPEG):")
        out.extend(f"  {path}" for path in result.interpolated[:20])
    return out


# ----------------------------------------------------------------------------- TFRecords


#: Per kind of error in records, how many are named before the rest are counted.
ERRORS_SHOWN = 3


def _paths_text(paths) -> str:
    """How a problem of the whole set of shards names them (``check_records``' ``where``)."""
    return ", ".join(map(str, paths))


def _stats_of_records(
    paths, ignore, num_classes, colours, artifacts, jobs, as_json, per_image, record_keys
) -> None:
    """``stats`` of TFRecord shards: the same report, one row per record, and the records'
    errors on stderr (exit 1)."""
    from labelfix.records.foreign_checks import check_records

    with Door(Rules.of("stats", inputs=paths)) as door, contextlib.ExitStack() as stack:
        on_row = None
        if per_image is not None:
            outlet = door.file(per_image)[0]
            outlet.check(per_image)
            on_row = stack.enter_context(_row_writer(outlet, per_image))
        advance = stack.enter_context(progress("stats", unit="records"))

        def on_record(found, problems) -> None:
            advance(1)
            if on_row is not None:
                on_row(found.report)

        check = check_records(
            paths,
            keys=options.record_keys(**record_keys),
            num_classes=num_classes,
            ignore=ignore,
            colours=colours,
            artifacts=artifacts,
            jobs=jobs,
            on_record=on_record,
        )
    errors = [p for p in check.errors if p.code not in ("value", "unreadable", "framing")]
    if as_json:
        document = {**check.stats.to_dict(), "records": check.records}
        document["ok"] = document["ok"] and not errors
        document["problems"] = [p.message for p in errors]
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(render(check.stats, unit="record"))
    for value in check.stats.unused_ignore:
        click.echo(f"labelfix: warning: {unused_ignore_message(value, check.stats)}", err=True)
    for path, reason in check.stats.unreadable:
        click.echo(f"labelfix: error: {path}: {reason}", err=True)
    shown: dict[str, int] = {}
    whole = [p for p in errors if p.path == _paths_text(paths)]  # of the whole set: all shown
    for problem in errors:  # a few records of each kind
        if problem.path != _paths_text(paths):
            shown[problem.code] = shown.get(problem.code, 0) + 1
            if shown[problem.code] <= ERRORS_SHOWN:
                click.echo(f"labelfix: error: {problem.message}", err=True)
    for code, count in shown.items():
        if count > ERRORS_SHOWN:
            click.echo(
                f"labelfix: error: ... and {count - ERRORS_SHOWN} more record(s) with the same "
                f"{code} error (labelfix validate names them all)",
                err=True,
            )
    for problem in whole:
        click.echo(f"labelfix: error: {problem.message}", err=True)
    if check.stats.unreadable or errors:
        raise SystemExit(1)
