"""``labelfix validate``: exit 0 only when every mask is safe to train on."""

from __future__ import annotations

import json

import click

from labelfix.checks.validate import validate as run_validate
from labelfix.cli import options
from labelfix.cli._common import (
    count_masks,
    fail,
    handle_errors,
    no_masks,
    plural,
    progress,
    records_input,
)

#: Per kind of warning, how many files are named before the rest are counted.
WARNINGS_SHOWN = 3


@click.command()
@options.storage_paths_argument
@options.num_classes_option(required=True)
@options.ignore_option
@options.images_option(
    "Image directory: each mask needs one image of its relative path, stem and size (Cityscapes"
    " and other suffixes: see --image-suffix)."
)
@options.pairing_options
@options.glob_option
@options.colormap_options
@options.artifacts_option
@options.jobs_option
@options.json_option
@options.record_key_options
@handle_errors
def validate(
    paths,
    num_classes,
    ignore,
    images,
    image_suffix,
    mask_suffix,
    glob,
    colormap,
    unknown_colour,
    artifacts,
    jobs,
    as_json,
    **record_keys,
):
    """Check that every mask holds only ids 0..N-1 or an ignore value.

    Exit 0 when all masks are clean (warnings allowed), 1 when any file has a problem.
    TFRecord shards (files, globs, a directory of them) are checked record by record, without
    a manifest, with their images and framing; masks TensorFlow's decoders would misread
    (palette or 16-bit PNGs, palette colours read as grey) are errors there.

    \b
    labelfix validate masks/ --num-classes 21 --ignore 255
    labelfix validate gtFine/ -n 19 --ignore 255 --images leftImg8bit/ \\
        --glob '*_labelTrainIds.png' --json
    labelfix validate tfrecord/ -n 21 --ignore 255
    """
    options.warn_if_ignore_is_class(ignore, num_classes)
    records = records_input(paths, record_keys)
    if records and (images is not None or glob is not None):
        raise click.UsageError("TFRecords hold their images: no --images or --glob with them")
    unit = "record" if records else "file"
    with progress(
        "validate", total=None if records else count_masks(paths, glob), unit=unit + "s"
    ) as advance:
        if records:
            from labelfix.records.foreign_checks import validate_records

            result = validate_records(
                paths,
                num_classes=num_classes,
                ignore=ignore,
                keys=options.record_keys(**record_keys),
                jobs=jobs,
                on_record=lambda found, problems: advance(1),
                colours=options.colour_policy(colormap, unknown_colour, ignore=ignore),
                artifacts=artifacts,
            )
        else:
            result = run_validate(
                paths,
                num_classes=num_classes,
                ignore=ignore,
                images=images,
                naming=options.naming(image_suffix, mask_suffix),
                glob=glob,
                jobs=jobs,
                on_file=lambda report, problems: advance(1),
                colours=options.colour_policy(colormap, unknown_colour, ignore=ignore),
                artifacts=artifacts,
            )
    if result.stats.files == 0 and not (records and result.problems):
        fail(no_masks(paths, glob))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        shown: dict[str, int] = {}
        for problem in result.problems:
            if problem.level == "error":
                click.echo(problem.message)
                continue
            shown[problem.code] = shown.get(problem.code, 0) + 1
            if shown[problem.code] <= WARNINGS_SHOWN:
                click.echo("warning: " + problem.message)
        for code, count in shown.items():
            if count > WARNINGS_SHOWN:
                click.echo(
                    f"warning: ... and {count - WARNINGS_SHOWN} more {unit}(s) with the same "
                    f"{code} warning (--json lists them all)"
                )
        verdict = "OK" if result.ok else "FAILED"
        whole = ", ".join(paths)  # a problem of the whole set of records
        bad = [p for p in result.bad_files if not records or p != whole]
        click.echo(
            f"{verdict}: {plural(result.stats.files, unit)}, {len(bad)} with problems, "
            f"{len(result.warnings)} warning(s)"
        )
    if not result.ok:
        raise SystemExit(1)
