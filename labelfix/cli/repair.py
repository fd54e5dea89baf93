"""``labelfix repair``: undo lossy artifacts (JPEG, anti-aliasing, bilinear resizing)."""

from __future__ import annotations

import click

from labelfix.checks.artifacts import FRINGE_THRESHOLD, MIN_SUPPORT
from labelfix.cli import options
from labelfix.cli._common import handle_errors
from labelfix.cli._rewrite import execute, rewrite_options
from labelfix.io.masks import REPAIR_SUFFIXES
from labelfix.labels.labelmap import LabelMap
from labelfix.rewrite.repair import MAX_ABSORBED, STRATEGIES, RepairSpec


@click.command()
@options.paths_argument
@options.num_classes_option(required=True)
@options.ignore_option
@options.out_option
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default="nearest",
    show_default=True,
    help="Stray pixels take the majority valid label of their 3x3 neighbourhood (nearest),"
    " or become the ignore value (ignore).",
)
@click.option(
    "--fringe-threshold",
    type=float,
    default=FRINGE_THRESHOLD,
    show_default=True,
    help="A class value is an artifact when this share of its pixels lie between two other"
    " values (above 1 turns it off).",
)
@click.option(
    "--min-support",
    type=click.IntRange(0, 8),
    default=MIN_SUPPORT,
    show_default=True,
    help="Pixels with fewer same-valued neighbours (of 8) are specks; 0 keeps 1-px lines.",
)
@click.option(
    "--all",
    "all_masks",
    is_flag=True,
    help="Also repair specks and fringe values of masks with no lossy signature (no JPEG,"
    " fringe values or specks found): by default those are left as drawn.",
)
@click.option(
    "--max-absorbed",
    type=click.FloatRange(0.0, 1.0),
    default=MAX_ABSORBED,
    show_default=True,
    metavar="SHARE",
    help="Refuse a mask where values that are no class id form regions holding more than this"
    " share of it (-n too small?); 1 turns it off.",
)
@rewrite_options("-repaired")
@handle_errors
def repair(
    paths, num_classes, ignore, out, strategy, fringe_threshold, min_support, all_masks,
    max_absorbed, output, in_place, fmt, no_palette, dry_run, force, discard_record, glob,
    colormap, unknown_colour, jobs, as_json,
):  # fmt: skip
    """Give stray pixels a valid label: values that are no class, class values that only
    lie on fringes between two other regions, and specks.

    Reports how many pixels changed per file (the dry run, exactly what a run changes, per
    value). A lossless mask with no lossy signature (no JPEG, fringe values or specks found)
    only gets its values that are no class repaired: its specks and thin regions may be drawn
    so (--all repairs them too). A mask where values that are no class form large regions is
    refused (--max-absorbed): -n is likely too small. The same safety rules as remap: a
    sibling directory by default, atomic in-place writes with --in-place.

    \b
    labelfix repair masks/ --num-classes 21 --ignore 255 --output masks-fixed/
    labelfix repair jpeg-masks/ -n 6 --ignore 255 --strategy ignore --in-place
    """
    label_map = LabelMap(ignore=ignore, out=out)
    void = label_map.out_value
    try:
        spec = RepairSpec(
            num_classes=num_classes,
            ignore=(void,) if void is not None else (),
            out=void,
            strategy=strategy,
            threshold=fringe_threshold,
            min_support=min_support,
            all_masks=all_masks,
            max_absorbed=max_absorbed,
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    execute(
        paths, label_map, "repair", output=output, in_place=in_place, fmt=fmt,
        keep_palette=not no_palette, glob=glob, force=force, dry_run=dry_run, jobs=jobs,
        as_json=as_json, repair=spec, suffix="-repaired", suffixes=REPAIR_SUFFIXES,
        discard_record=discard_record,
        colours=options.colour_policy(colormap, unknown_colour, ignore=ignore, out=void),
    )  # fmt: skip
