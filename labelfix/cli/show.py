"""``labelfix show``: masks as pictures, to check labels by looking (a contact sheet)."""

from __future__ import annotations

import os

import click

from labelfix.cli import options
from labelfix.cli._common import fail, handle_errors, no_masks, table
from labelfix.io.door import Door, Rules
from labelfix.io.inputs import watch_inputs
from labelfix.io.pairing import check_images_folder
from labelfix.viz.sheet import VOID_ALPHA, ShowOptions, contact_sheet, legend_entries, png_bytes

#: Masks on one sheet when neither --limit, --worst nor --files says otherwise.
SHEET_LIMIT = 64


@click.command()
@options.storage_paths_argument
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), metavar="FILE", help="The sheet (PNG)."
)
@click.option(
    "--each",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Also, or instead, one PNG per mask under DIR (same relative paths).",
)
@options.images_option("Draw each mask over its image (paired as validate --images pairs them).")
@options.pairing_options
@click.option(
    "--alpha",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    metavar="A",
    help=f"Opacity of the mask over its image (void's at least {VOID_ALPHA}, to stay hatched).",
)
@options.ignore_option
@options.num_classes_option()
@options.artifacts_option
@options.class_names_option()
@options.colormap_options
@click.option(
    "--worst",
    type=click.IntRange(min=1),
    metavar="N",
    help="Show the N masks with the most problem pixels (then the most void pixels).",
)
@click.option(
    "--files",
    multiple=True,
    metavar="NAME",
    help="Show this mask (relative path or file name, extension optional; repeatable).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help=f"Show at most the first N masks (default for a sheet: {SHEET_LIMIT}).",
)
@click.option(
    "--max-size",
    type=click.IntRange(min=16),
    default=256,
    show_default=True,
    metavar="PX",
    help="Longer side of a thumbnail, at most (masks are only shrunk, by nearest neighbour).",
)
@click.option(
    "--zoom",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    metavar="K",
    help="Enlarge small masks K times first, by repeating pixels (--max-size still bounds).",
)
@click.option("--columns", type=click.IntRange(min=1), metavar="C", help="Thumbnails per row.")
@options.glob_option
@options.jobs_option
@handle_errors
def show(
    paths,
    output,
    each,
    images,
    image_suffix,
    mask_suffix,
    alpha,
    ignore,
    num_classes,
    artifacts,
    class_names,
    colormap,
    unknown_colour,
    worst,
    files,
    limit,
    max_size,
    zoom,
    columns,
    glob,
    jobs,
):
    """Draw masks in class colours, void hatched, problem pixels in one highlight colour.

    Lists the masks shown on stdout; writes a contact sheet (-o) and/or one picture per mask
    (--each). Problem pixels: values that are no class id (with -n), and with --artifacts the
    stray pixels `repair` would fix.

    \b
    labelfix show masks/ -o sheet.png --ignore 255 -n 21
    labelfix show masks/ --images images/ --worst 12 -n 21 --ignore 255 -o worst.png
    labelfix show masks/ --colormap voc --files 2007_000033 --each pictures/
    """
    from labelfix.viz.selection import DIFFERENT_PALETTES, plan_show, render_plan

    if output is None and each is None:
        raise click.UsageError("say where the pictures go: -o sheet.png and/or --each DIR")
    if output is not None and not output.lower().endswith(".png"):
        raise click.UsageError(f"-o {output}: the sheet is a PNG file, name it *.png")
    if artifacts and num_classes is None:
        raise click.UsageError("--artifacts needs --num-classes")
    show_options = ShowOptions(
        ignore=ignore,
        num_classes=num_classes,
        artifacts=artifacts,
        alpha=alpha,
        max_size=max_size,
        zoom=zoom,
    )
    naming = options.naming(image_suffix, mask_suffix)
    if images is not None:
        check_images_folder(images, paths, naming=naming)
    watch = watch_inputs([*paths, images])
    with Door(Rules.of("show", inputs=[*paths, images])) as door:
        sheet = door.file(output)[0] if output is not None else None
        if sheet is not None:  # refused now, not after every mask was drawn
            sheet.check(output)
        pictures = door.outlet(each) if each is not None else None
        if limit is None and output is not None and worst is None:
            limit = SHEET_LIMIT
        plan = plan_show(
            paths,
            options=show_options,
            glob=glob,
            files=files,
            worst=worst,
            limit=limit,
            read=options.colour_policy(colormap, unknown_colour, ignore=ignore),
            class_names=class_names,
            jobs=jobs,
        )
        if plan.found == 0:
            fail(no_masks(paths, glob))
        if plan.colours.source == DIFFERENT_PALETTES:
            click.echo(
                "labelfix: note: the masks' palettes give a class different colours: drawn in "
                "generated colours, one per class id",
                err=True,
            )
        if worst is None and not files and limit is not None and plan.found > limit:
            click.echo(
                f"labelfix: note: showing the first {limit} of {plan.found} masks "
                "(--limit, --worst or --files choose others)",
                err=True,
            )
        shown, errors, drawn = [], list(plan.errors), 0
        for item in render_plan(plan, images=images, jobs=jobs, naming=naming):
            if isinstance(item, tuple):
                errors.append(item)
                continue
            drawn += 1
            if item.prepared.note:
                click.echo(f"labelfix: warning: {item.name}: {item.prepared.note}", err=True)
            if each is not None:
                name = item.name if item.name.lower().endswith(".png") else item.name + ".png"
                legend = legend_entries([item], colours=plan.colours, options=show_options)
                picture = contact_sheet([item], legend=legend, options=show_options)
                pictures.write(os.path.join(each, name), png_bytes(picture))
            if output is not None:
                shown.append(item)
        _listing(plan)
        if output is not None and shown:
            legend = legend_entries(shown, colours=plan.colours, options=show_options)
            picture = contact_sheet(
                shown, legend=legend, options=show_options, columns=columns, title=_title(plan)
            )
            watch.confirm()
            sheet.write(output, png_bytes(picture))
            click.echo(f"Wrote {output}: {len(shown)} mask(s), {picture.width}x{picture.height} px")
        if each is not None:
            click.echo(f"Wrote {drawn} picture(s) under {each}/")
        for path, reason in errors:
            click.echo(f"labelfix: error: {path}: {reason}", err=True)
        if not drawn:
            fail("no mask could be shown")
        if errors:
            raise SystemExit(1)


def _title(plan) -> str:
    opts = plan.options
    parts = [f"{len(plan.surveys)} of {plan.found} mask(s)"]
    if opts.num_classes is not None:
        parts.append(f"{opts.num_classes} classes")
    if opts.ignore:
        parts.append("ignore " + ", ".join(map(str, opts.ignore)))
    parts.append(f"colours: {plan.colours.source}")
    return " · ".join(parts)


def _listing(plan) -> None:
    """The masks shown, one row each, on stdout."""
    if not plan.surveys:
        return
    rows = [
        (s.relpath, s.kind or "", f"{s.problem_pixels:,}", f"{s.void_pixels:,}")
        for s in plan.surveys
    ]
    click.echo(table(rows, ("mask", "kind", "problem px", "void px"), right={2, 3}))
