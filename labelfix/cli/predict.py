"""``labelfix predict``: one predicted mask per image, written as class ids."""

from __future__ import annotations

import importlib.util
import json

import click

from labelfix.cli import options
from labelfix.cli._common import (
    decoder_messages,
    fail,
    handle_errors,
    progress,
    require_tensorflow,
    verbosity,
)
from labelfix.errors import MissingExtra

_PALETTES = {
    "manifest": "palette PNG, the manifest's colours",
    "voc": "palette PNG, Pascal VOC colours",
    "none": "no palette",
}


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", type=click.Path(exists=True))
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    required=True,
    help="Directory for the masks (same relative paths as the images).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "npy"]),
    default="png",
    show_default=True,
    help="png: palette PNG of class ids (16-bit grey beyond 256 classes); npy: uint8/uint16.",
)
@click.option(
    "--records",
    type=click.Path(exists=True, file_okay=False),
    metavar="DIR",
    help="A to-tfrecord output: its num_classes is checked, its palette (if any) used.",
)
@click.option(
    "--split",
    default="train",
    show_default=True,
    metavar="NAME",
    help="Whose manifest --records reads.",
)
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing files under --output that no earlier predict wrote (never images).",
)
@options.json_option
@handle_errors
def predict(model, images, output, fmt, records, split, batch_size, overwrite, as_json):
    """Predict a mask for every image in IMAGES (a directory, or one file) with MODEL.

    Each image is predicted whole, at its own size: padded (with 0) to a multiple of the
    model's stride, the logits cropped back, never resized; a model with a fixed input size
    runs on tiles of that size. Masks hold class ids 0..N-1 at the image's size, under
    --output at the image's relative path: palette PNGs (the manifest's colours with
    --records, else the Pascal VOC colours), which `labelfix stats` and `validate` read as
    class ids, or .npy with --format npy. A mask replaces only a file an earlier predict
    wrote there (--overwrite for others; never one of the images).

    \b
    labelfix predict model/model.keras data/images/val -o predictions --records records
    """
    require_tensorflow("predict")
    if importlib.util.find_spec("keras") is None:
        raise MissingExtra("`labelfix predict` needs Keras 3: pip install 'labelfix[tf]'")
    import tensorflow as tf

    import labelfix  # noqa: F401  (registers labelfix's Keras objects)
    from labelfix.training.predict import find_images
    from labelfix.training.predict import predict as run_predict
    from labelfix.training.sources import tf_error_reason

    manifest = None
    if records is not None:
        from labelfix.records.manifest import read_manifest

        manifest = read_manifest(records, split)
    total = len(find_images(images))
    try:
        with (
            decoder_messages(enabled=verbosity() < 1),  # its warning after the bar's last line
            progress("predict", total=total, unit="images") as advance,
        ):
            result = run_predict(
                model,
                images,
                output,
                fmt=fmt,
                manifest=manifest,
                batch_size=batch_size,
                on_image=advance,
                overwrite=overwrite,
            )
    except tf.errors.OpError as err:  # what the library does not name itself
        fail(tf_error_reason(err.message), 1)
    if as_json:
        document = {
            "ok": True,
            "output": str(result.output),
            "format": result.format,
            "num_classes": result.num_classes,
            "palette": result.palette,
            "masks": [str(p) for p in result.masks],
        }
        click.echo(json.dumps(document, indent=2))
        return
    how = _PALETTES[result.palette] if fmt == "png" else "npy"
    click.echo(
        f"Wrote {len(result.masks)} mask(s) to {result.output} ({how}; class ids "
        f"0..{result.num_classes - 1}, every pixel a class, none void)"
    )
