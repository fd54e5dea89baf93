"""``labelfix remap``: change label values in mask files, safely and fast."""

from __future__ import annotations

import click

from labelfix.cli import options
from labelfix.cli._common import handle_errors
from labelfix.cli._rewrite import execute, rewrite_options


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
