"""``labelfix remap``: change label values in mask files, safely and fast."""

from __future__ import annotations

import json
import os

import click

from labelfix.cli import options
from labelfix.cli._common import fail, handle_errors, no_masks, plural, progress, table
from labelfix.rewrite.jobs import FileResult
from labelfix.rewrite.plan import FORMATS, RemapUsageError, plan_remap
from labelfix.rewrite.run import Interrupted, RemapResult, run_remap


def rewrite_options(suffix: str):
    """The output options remap and repair share: where and how files are written."""

    def decorate(func):
        decorators = [
            click.option(
                "--output",
                "-o",
                type=click.Path(file_okay=False),
                metavar="DIR",
                help="Write here, mirroring the input tree (default: a sibling directory "
                f"NAME{suffix}).",
            ),
            click.option(
                "--in-place",
                is_flag=True,
                help="Replace each file atomically (a file keeps its name).",
            ),
            click.option(
                "--format",
                "fmt",
                type=click.Choice(FORMATS),
                help="Output format (default: .npy when a value is negative, else as the input).",
            ),
            click.option("--no-palette", is_flag=True, help="Drop the palette of palette PNGs."),
            click.option("--dry-run", is_flag=True, help="Say what would change; write nothing."),
            click.option(
                "--force",
                is_flag=True,
                help="Apply a non-idempotent mapping again to files it was applied to.",
            ),
            click.option(
                "--discard-record",
                is_flag=True,
                help="Set a damaged run record aside and start a new one (files an earlier run "
                "mapped may then be mapped again).",
            ),
            options.glob_option,
            options.colormap_options,
            options.jobs_option,
            options.json_option,
        ]
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return decorate


@click.command()
@options.paths_argument
@options.mapping_options
@options.luminance_option
@options.num_classes_option()
@click.option(
    "--void-is-class",
    is_flag=True,
    help="Allow an --out that is a class id (0..N-1): void pixels then train as that class.",
)
@rewrite_options("-remapped")
@handle_errors
def remap(
    paths, ignore, out, maps, map_file, preset, unmapped, luminance, num_classes, void_is_class,
    output, in_place, fmt, no_palette, dry_run, force, discard_record, glob, colormap,
    unknown_colour, jobs, as_json,
):  # fmt: skip
    """Map label values: ignore values to one canonical value, ids to train ids, presets.

    Without --output or --in-place the result goes to a new sibling directory (masks/ ->
    masks-remapped/), never over the input. Values a PNG cannot hold (-1) are written as
    signed .npy. A record (.labelfix-remap.json) keeps a mapping that is not idempotent from
    being applied twice to the same files.

    \b
    labelfix remap --ignore 255 --out -1 masks/
    labelfix remap --preset cityscapes --in-place gtFine/
    labelfix remap --map 7:0 --map 8:1 --unmapped ignore --out 255 -n 2 masks/ -o out/
    labelfix remap --preset ade20k --dry-run annotations/
    labelfix remap --preset voc --luminance voc --map 52:5 grey-masks/ -o masks/
    """
    label_map = options.label_map_from_options(
        ignore=ignore, out=out, maps=maps, map_file=map_file, preset=preset, unmapped=unmapped,
        num_classes=num_classes, void_is_class=void_is_class, luminance=luminance,
    )  # fmt: skip
    if label_map.is_identity and fmt is None and not no_palette and colormap is None:
        raise click.UsageError(
            f"the mapping changes no value ({label_map.describe()}): give --ignore V with "
            "--out T, --map A:B, --map-file FILE or --preset NAME"
        )
    execute(
        paths, label_map, "remap", output=output, in_place=in_place, fmt=fmt,
        keep_palette=not no_palette, glob=glob, force=force, dry_run=dry_run, jobs=jobs,
        as_json=as_json, discard_record=discard_record,
        colours=options.colour_policy(
            colormap, unknown_colour, ignore=label_map.ignore, out=label_map.out_value
        ),
    )  # fmt: skip


def execute(paths, label_map, command, *, dry_run, jobs, as_json, **plan_options) -> None:
    """Plan, run and report a rewrite of mask files (remap and repair); exits 1 on failures."""
    try:
        plan = plan_remap(paths, label_map, **plan_options)
    except RemapUsageError as err:
        raise click.UsageError(str(err)) from None
    if not plan.count and not plan.skipped:
        fail(no_masks(paths, plan_options.get("glob")))
    for note in plan.notes:
        click.echo(f"labelfix: warning: {note}", err=True)
    # outputs of an earlier run into the same directory are replaced: say so, never silently
    existing = plan.existing  # counted before the run writes any

    def on_file(result: FileResult) -> None:
        advance(1)
        for message in result.errors:
            click.echo(f"labelfix: error: {message}", err=True)
        if result.repaired and not as_json:
            void = f", {result.to_ignore:,} of them to ignore" if result.to_ignore else ""
            verb = "would repair" if dry_run else "repaired"
            click.echo(f"{result.source}: {verb} {result.repaired:,} px{void}")
        if result.held and not as_json:
            click.echo(
                f"{result.source}: left {result.held:,} stray px as drawn: no lossy signature "
                "(no JPEG, fringe values or specks), they may be hand-drawn detail (--all "
                "repairs them)"
            )

    try:
        with progress(command, enabled=not as_json, total=plan.count) as advance:
            result = run_remap(
                plan,
                jobs=jobs,
                dry_run=dry_run,
                on_file=on_file,
                on_note=lambda note: click.echo(f"labelfix: warning: {note}", err=True),
            )
    except Interrupted as stop:
        click.echo(f"labelfix: {interrupted_state(stop, command)}", err=True)
        raise
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else render(result))
    if existing:
        verb = "would replace" if dry_run else "replaced"
        click.echo(
            f"labelfix: note: {verb} {existing} existing file(s) in {_where(result)} (an "
            "earlier run's output)",
            err=True,
        )
    for value in result.unused_ignore:
        click.echo(
            f"labelfix: warning: ignore value {value} matches no pixel of the {result.read} "
            "mask(s) read; is it this dataset's void value?",
            err=True,
        )
    instances = instance_ids_warning(result)
    if instances:
        click.echo(f"labelfix: warning: {instances}", err=True)
    if result.failed_files:
        click.echo(
            f"labelfix: error: {len(result.failed_files)} of {result.files} file(s) could not be "
            f"{'repaired' if command == 'repair' else 'remapped'} and were not written",
            err=True,
        )
        raise SystemExit(1)


#: Cityscapes instanceIds hold labelId * 1000 + instance for objects: values from 1000 on.
INSTANCE_IDS = 1000


def instance_ids_warning(result: RemapResult) -> str | None:
    """What to say when the cityscapes preset met instance ids (``*_gtFine_instanceIds.png``:
    ``labelId * 1000 + k``), which it maps to void: every object instance would be lost."""
    if result.label_map.name != "cityscapes":
        return None
    found = [v for v in result.values if v.value >= INSTANCE_IDS]
    if not found:
        return None
    pixels = sum(v.pixels for v in found)
    files = max(v.files for v in found)
    shown = ", ".join(str(v.value) for v in found[:4]) + (", ..." if len(found) > 4 else "")
    verb = "would become" if result.dry_run else "became"
    return (
        f"{len(found)} value(s) of {INSTANCE_IDS} and more ({shown}; {pixels:,} px in up to "
        f"{files} file(s)) look like Cityscapes instanceIds (labelId * 1000 + instance), which "
        f"the cityscapes preset does not know: they {verb} void 255. Remap the "
        "*_gtFine_labelIds.png masks, not *_gtFine_instanceIds.png (--glob '*_labelIds.png')"
    )


def interrupted_state(stop: Interrupted, command: str) -> str:
    """What an interrupted run left, in words that match it (a rerun's advice included)."""
    verb = "repaired" if command == "repair" else "remapped"
    if stop.finished:
        return (
            f"the run had finished before the interrupt: every file was {verb} and recorded; "
            "there is nothing to redo (running it again would be refused as already done)"
        )
    if stop.in_place:
        return (
            "every file is either as it was or complete; run the same command again to finish "
            f"(the files already {verb} are recorded and skipped)"
        )
    return (
        "every file is either as it was or complete; run the same command again to write them all"
    )


def _where(result: RemapResult) -> str:
    places = [_display(d) for d in result.destinations]
    return ", ".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")


def _display(path: str) -> str:
    return path.rstrip(os.sep) + os.sep


def render(result: RemapResult) -> str:
    """The human summary: what was read, what changed, what was written where."""
    lines = [] if result.label_map.is_identity else [f"Mapping: {result.label_map.describe()}"]
    if result.dry_run:
        lines.append("")
        lines.append("Dry run, nothing written. Per value, what the pixels would become:")
        rows = [
            (
                v.value,
                v.becomes if v.changed else "(unchanged)",
                f"{v.pixels:,}",
                v.files,
            )
            for v in result.values
        ]
        if rows:
            lines.append(table(rows, ("value", "becomes", "pixels", "files"), right={0, 2, 3}))
        total = result.total_pixels
        share = f" ({100 * result.changed_pixels / total:.2f}%)" if total else ""
        lines.append(f"{result.changed_pixels:,} of {total:,} pixels would change{share}.")
        lines.append("")
    failed = len(result.failed_files)
    verb = "would change" if result.dry_run else "changed"
    lines.append(
        f"Read {result.read} of {plural(result.files, 'file')}: {result.changed} {verb}, "
        f"{result.unchanged} unchanged, {failed} failed"
        + (f", {len(result.skipped)} skipped" if result.skipped else "")
        + "."
    )
    stored = ", ".join(f"{kind} ({n})" for kind, n in result.stored)
    count = sum(n for _, n in result.stored)
    if result.in_place:
        kept = (
            f"; {result.unchanged} unchanged file(s) left as they are" if result.unchanged else ""
        )
        head = "Would replace" if result.dry_run else "Replaced"
        lines.append(f"{head} {count} file(s) in place in {_where(result)}{kept}.")
    else:
        head = "Would write" if result.dry_run else "Wrote"
        lines.append(f"{head} {count} file(s) to {_where(result)}.")
    if stored:
        lines.append(f"Stored as: {stored}.")
    if result.repaired_pixels:
        verb = "would be repaired" if result.dry_run else "repaired"
        void = result.to_ignore_pixels
        lines.append(
            f"Stray pixels {verb}: {result.repaired_pixels:,} in {result.repaired_files} file(s)"
            + (f", {void:,} of them to ignore" if void else "")
            + "."
        )
    if result.held_pixels:
        lines.append(
            f"Left as drawn: {result.held_pixels:,} stray px in {result.held_files} file(s) with "
            "no lossy signature (no JPEG, fringe values or specks): specks and thin regions of "
            "a lossless mask may be drawn so; give --all to repair them too."
        )
    if result.format_reason:
        lines.append(f"Note: {result.format_reason}.")
        if any(kind.startswith("png") for kind, _ in result.stored):
            lines.append("Masks holding no such value stay PNG.")
    if result.skipped_reason:
        lines.append(f"Skipped: {result.skipped_reason}.")
    if result.stale_temporaries:
        lines.append(
            f"Removed {result.stale_temporaries} temporary file(s) left by an interrupted run."
        )
    if result.manifests:
        lines.append("Record of this run: " + ", ".join(result.manifests))
    return "\n".join(lines)
