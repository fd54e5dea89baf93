"""``labelfix to-tfrecord``: check, remap and write (image, mask) pairs as sharded TFRecords."""

from __future__ import annotations

import dataclasses
import functools
import json

import click

from labelfix.checks.rules import unused_ignore_message
from labelfix.cli import options
from labelfix.cli._common import fail, handle_errors, plural, progress
from labelfix.io.pairing import DatasetProblems, read_id_list
from labelfix.records.example import FILENAME_STYLES
from labelfix.records.spec import (
    COMPRESSIONS,
    DEFAULT_MASK_ENCODING,
    EXIF_POLICIES,
    MASK_ENCODINGS,
    WriteSpec,
    parse_size,
)


def _check_size(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@click.command("to-tfrecord", cls=options.PipelineCommand)
@click.argument("shards", nargs=-1, metavar="[SHARD...]")
@click.option(
    "--from-records",
    is_flag=True,
    help="Rewrite the TFRecord SHARDs given (files, globs, directories; another tool's, without"
    " a manifest) instead of --images/--masks: images copied byte for byte, masks read as ids"
    " (a palette PNG as its indices) and remapped as PNG masks are.",
)
@options.images_option(
    "Image directory; each mask's image has the same relative path and stem (Cityscapes and "
    "other suffixes: see --image-suffix).",
    storage=True,
)
@click.option(
    "--masks",
    type=options.StoragePath(exists=True, file_okay=False),
    metavar="DIR",
    help="Mask directory (PNG or .npy label masks).",
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=options.StoragePath(file_okay=False),
    metavar="DIR",
    help="Where the shards and the manifest go.",
)
@click.option(
    "--split",
    default=None,
    metavar="NAME",
    help="Split name: shards are NAME-00000-of-0000N.tfrecord (default: train; with"
    " --from-records, the split the input shards are named for).",
)
@options.mapping_options
@options.luminance_option
@options.num_classes_option()
@options.pairing_options
@click.option(
    "--list",
    "id_list",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Only the ids in FILE, in its order (e.g. VOC ImageSets/Segmentation/train.txt).",
)
@click.option("--skip-unpaired", is_flag=True, help="Leave out unpaired files instead of failing.")
@click.option(
    "--mask-encoding",
    type=click.Choice(MASK_ENCODINGS),
    default=DEFAULT_MASK_ENCODING,
    show_default=True,
    help="png: 8/16-bit grey PNG, what DeepLab and Model Garden decode. raw: little-endian "
    "signed integers, -1 fits; with --out -1 it reads 5-15% faster at 2-3x the disk.",
)
@click.option("--num-shards", type=click.IntRange(min=1), metavar="N", help="Exactly N shards.")
@click.option(
    "--shard-size",
    callback=_check_size,
    metavar="SIZE",
    help="Start a new shard after SIZE of records, e.g. 100MB (the default), 1GiB.",
)
@click.option(
    "--compression",
    type=click.Choice(COMPRESSIONS),
    default="none",
    show_default=True,
    help="gzip shrinks raw masks to png size but slows reading; JPEGs do not shrink.",
)
@click.option(
    "--exif",
    type=click.Choice(EXIF_POLICIES),
    default="error",
    show_default=True,
    help="Images with an EXIF orientation, which TensorFlow ignores (it reads the stored pixels):"
    " refuse them, keep them as stored (the masks follow the stored pixels), or rotate them as"
    " viewers show them (stored losslessly as PNG; the masks follow the displayed picture).",
)
@click.option(
    "--filename",
    type=click.Choice(FILENAME_STYLES),
    default="stem",
    show_default=True,
    help="What image/filename holds: stem (2007_000033, as DeepLab's writer stores it and its"
    " vis.py names predictions from it) or name (2007_000033.jpg).",
)
@click.option("--shuffle", is_flag=True, help="Shuffle the record order (reproducibly, by --seed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --shuffle.")
@options.colormap_options
@options.class_names_option("Class names, one per line in id order (recorded in the manifest).")
@options.jobs_option
@options.runner_option
@options.json_option
@options.record_key_options
@handle_errors
def to_tfrecord(
    *,
    ignore, out, maps, map_file, preset, unmapped, num_classes, id_list, colormap, unknown_colour,
    class_names, jobs, runner, as_json, runner_args, shards, from_records, luminance,
    mask_key, image_key, format_key, **spec_options,
):  # fmt: skip
    """Write image/mask pairs as TFRecords with DeepLab / Model Garden feature keys.

    Every mask is remapped (same options as remap) and checked against --num-classes and the
    ignore value before anything is written: one bad mask stops the run and leaves no shard.
    A manifest NAME.labelfix.json records the encoding, ignore value, counts and checksums.

    \b
    labelfix to-tfrecord --images JPEGImages --masks SegmentationClass --output tfr \\
        --preset voc --list ImageSets/Segmentation/train.txt
    labelfix to-tfrecord --images leftImg8bit/train --masks gtFine/train --output tfr \\
        --preset cityscapes --image-suffix _leftImg8bit --mask-suffix _gtFine_labelIds
    labelfix to-tfrecord --images gs://b/img --masks gs://b/gt --output gs://b/tfr -n 21 \\
        --runner beam -- --runner=DataflowRunner --project=P --region=R \\
        --temp_location=gs://b/tmp
    labelfix to-tfrecord --images img --masks gt --output tfr -n 21 \\
        --runner dask -- --scheduler tcp://HOST:8786
    labelfix to-tfrecord --from-records deeplab/tfrecord/val-* -o fixed --preset voc
    """
    if spec_options["num_shards"] is not None and spec_options["shard_size"] is not None:
        raise click.UsageError("give --num-shards or --shard-size, not both")
    records = _records_options(shards, from_records, runner, id_list, spec_options)
    label_map = _label_map(
        ignore, out, maps, map_file, preset, unmapped, num_classes, class_names, luminance
    )
    spec = WriteSpec.from_options(
        spec_options,
        label_map=label_map,
        num_classes=label_map.num_classes,
        ids=read_id_list(id_list) if id_list is not None else None,
        colours=options.colour_policy(
            colormap, unknown_colour, ignore=label_map.ignore, out=label_map.out_value
        ),
        records=records,
        keys=options.record_keys(mask_key=mask_key, image_key=image_key, format_key=format_key),
    )
    if runner == "local":
        from labelfix.records.write import write_dataset

        write = functools.partial(write_dataset, jobs=jobs)
    else:
        from labelfix.engines.common import engine_for, write_dataset_on

        write = functools.partial(write_dataset_on, engine_for(runner, runner_args))
    refused = None
    with progress("to-tfrecord", enabled=runner == "local") as advance:
        try:
            local = {"on_record": advance, "on_note": _warn} if runner == "local" else {}
            result = write(spec, **local)
        except DatasetProblems as err:
            refused = err
    if refused is not None:  # the validate-style report, one line per problem
        for line in refused.problems:
            click.echo(line, err=True)
        if refused.kind == "unpaired":
            what = f"{len(refused.problems)} unpaired file(s)"
            if refused.ambiguous:
                what = (
                    f"{len(refused.problems)} file(s) without exactly one partner "
                    f"({refused.ambiguous} mask(s) with several images: rename or move the "
                    "extra images)"
                )
            fail(
                f"{what}; nothing was written (--skip-unpaired leaves them out, --list picks ids)",
                problems=refused.problems,
            )
        fail(str(refused), problems=refused.problems)
    if runner != "local":  # the local runner said these as they came
        for note in result.notes:
            _warn(note)
    for line in result.skipped:
        click.echo(f"labelfix: skipped: {line}", err=True)
    warnings = list(result.warnings)
    if label_map.ignore and result.ignore_pixels == 0:
        seen = [c for c, pixels in enumerate(result.class_pixel_counts) if pixels]
        warnings.extend(
            unused_ignore_message(value, masks=result.num_records, seen=seen)
            for value in label_map.ignore
        )
    for line in warnings:
        _warn(line)
    if as_json:
        click.echo(json.dumps({"ok": True, **result.to_dict(), "warnings": warnings}, indent=2))
    else:
        click.echo(render(result, spec.readers()))


def _warn(line: str) -> None:
    click.echo(f"labelfix: warning: {line}", err=True)


def _records_options(shards, from_records, runner, id_list, spec_options) -> tuple | None:
    """The input shards of ``--from-records`` (None without it), the options checked; sets the
    split the shards are named for when ``--split`` is not given."""
    if not from_records:
        if shards:
            raise click.UsageError(
                f"unexpected argument {shards[0]!r}: shards are rewritten with --from-records"
            )
        if spec_options["images"] is None or spec_options["masks"] is None:
            raise click.UsageError("--images and --masks are required (or --from-records SHARD...)")
        spec_options["split"] = spec_options["split"] or "train"
        return None
    if not shards:
        raise click.UsageError("--from-records needs the shards to rewrite: SHARD...")
    refused = [
        option
        for option, given in (
            ("--images", spec_options["images"] is not None),
            ("--masks", spec_options["masks"] is not None),
            ("--list", id_list is not None),
            ("--shuffle", spec_options["shuffle"]),
            ("--skip-unpaired", spec_options["skip_unpaired"]),
            ("--runner beam", runner != "local"),
            ("--exif rotate", spec_options["exif"] == "rotate"),
        )
        if given
    ]
    if refused:
        raise click.UsageError(
            f"{refused[0]} does not go with --from-records (records are rewritten in their "
            "order, on this machine, images byte for byte)"
        )
    if spec_options["split"] is None:
        from labelfix.records.foreign import find_shards, split_of

        spec_options["split"] = split_of(find_shards(shards)) or "train"
    return tuple(shards)


def _label_map(ignore, out, maps, map_file, preset, unmapped, num_classes, class_names, luminance):
    """The run's LabelMap from the mapping options; it must know num_classes."""
    label_map = options.label_map_from_options(
        ignore=ignore, out=out, maps=maps, map_file=map_file, preset=preset, unmapped=unmapped,
        num_classes=num_classes, void_is_class=True,  # WriteSpec refuses it, with its reason
        luminance=luminance,
    )  # fmt: skip
    if label_map.num_classes is None:
        raise click.UsageError("--num-classes is required (or a --preset that sets it)")
    if class_names is not None:
        if len(class_names) != label_map.num_classes:
            raise click.UsageError(
                f"--class-names lists {len(class_names)} names for {label_map.num_classes} classes"
            )
        label_map = dataclasses.replace(label_map, class_names=class_names)
    return label_map


def render(result, readers: dict[str, str]) -> str:
    """The human summary of a :class:`~labelfix.records.write.WriteResult`; ``readers`` says
    which decoders read the records right (:meth:`~labelfix.records.spec.WriteSpec.readers`)."""
    shards = result.shards
    names = shards[0].file if len(shards) == 1 else f"{shards[0].file} .. {shards[-1].file}"
    size = sum(s.bytes for s in shards)
    lines = [
        f"Wrote {plural(result.num_records, 'record')} ({size / 1e6:.1f} MB) to {result.output} in "
        f"{len(shards)} shard(s): {names}",
    ]
    storage = f"Masks: {result.mask_encoding} {result.mask_dtype}"
    if result.ignore is not None:
        storage += (
            f", void stored as {result.ignore} (labelfix.data reads it as {result.ignore_as})"
        )
    if result.passthrough:
        storage += (
            f"; {result.passthrough} mask(s) stored from their own compressed pixel data, not "
            "re-encoded (a palette PNG as a grey PNG of its indices)"
        )
    lines.append(storage)
    if result.rotated_images:
        lines.append(
            f"Images: {result.rotated_images} rotated as their EXIF orientation says and stored "
            "as PNG (--exif rotate), not byte for byte"
        )
    if result.skipped:
        lines.append(f"Skipped {len(result.skipped)} unpaired file(s)")
    lines.append(f"Compression: {result.compression}; manifest: {result.manifest}")
    if result.stale_temporaries:
        lines.append(
            f"Removed {result.stale_temporaries} temporary file(s) left by an interrupted run."
        )
    names = {"labelfix.data": "labelfix.data", "deeplab": "DeepLab", "model_garden": "Model Garden"}
    lines.append("Readers: " + "; ".join(f"{names[k]} {v}" for k, v in readers.items()))
    return "\n".join(lines)
