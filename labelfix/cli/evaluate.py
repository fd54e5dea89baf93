"""``labelfix evaluate``: score a trained model on a split of a ``labelfix to-tfrecord`` output."""

from __future__ import annotations

import importlib.util
import json
import os

import click

from labelfix.cli import options
from labelfix.cli._common import (
    decoder_messages,
    fail,
    handle_errors,
    plural,
    progress,
    require_tensorflow,
    table,
    verbosity,
)
from labelfix.errors import MissingExtra


def report_lines(report) -> list[str]:
    """The per-class table and the summary lines of an ``EvaluationReport``."""
    cm = report.confusion
    rows = []
    for k, (name, iou) in enumerate(zip(report.class_names, report.iou, strict=True)):
        rows.append(
            (
                k,
                name,
                "-" if iou != iou else f"{iou:.4f}",  # NaN: absent from labels and predictions
                f"{int(cm[k].sum()):,}",
                f"{int(cm[:, k].sum()):,}",
            )
        )
    lines = [table(rows, ("id", "class", "IoU", "pixels", "predicted"), right={0, 2, 3, 4})]
    void = f"; {report.void_pixels:,} void px not counted" if report.void_pixels else ""
    correct = int(cm.trace())
    lines.append(
        f"Pixel accuracy: {report.pixel_accuracy:.4f} ({correct:,} of {report.valid_pixels:,} "
        f"valid px{void})"
    )
    lines.append(
        f"Mean IoU: {report.mean_iou:.4f} over the {report.classes_present} of "
        f"{len(report.class_names)} classes present (in labels or predictions)"
    )
    return lines


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="val", show_default=True, metavar="NAME", help="Split to score.")
@click.option(
    "--batch-size",
    "-b",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Images per batch (only images of the same padded size share one).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    default="labelfix-evaluate",
    show_default=True,
    help="Directory for confusion.csv, confusion.png and report.json.",
)
@options.no_verify_option
@options.json_option
@handle_errors
def evaluate(model, data_dir, split, batch_size, output, no_verify, as_json):
    """Score MODEL (a .keras file from `labelfix train`) on a split of DATA_DIR.

    Prints per-class IoU (class names from the manifest), pixel accuracy and the mean IoU over
    the classes present; writes the confusion matrix (rows: truth) as CSV and as a PNG heat map
    normalised per row (needs matplotlib: pip install 'labelfix[viz]'; skipped, saying so,
    without it). Every image is scored whole, at its own size (padded to a multiple of the
    model stride, never resized); void pixels never count.

    \b
    labelfix evaluate model/model.keras records/ --split val -o model/eval
    """
    require_tensorflow("evaluate")
    if importlib.util.find_spec("keras") is None:
        raise MissingExtra("`labelfix evaluate` needs Keras 3: pip install 'labelfix[tf]'")
    import tensorflow as tf

    import labelfix  # noqa: F401  (registers labelfix's Keras objects)
    from labelfix.io.door import Door, Rules
    from labelfix.records.manifest import read_manifest
    from labelfix.training.evaluate import OUTPUT_NAMES, write_outputs
    from labelfix.training.evaluate import evaluate as run_evaluate
    from labelfix.training.sources import tf_error_reason

    total = read_manifest(data_dir, split).get("num_records")
    with Door(Rules.of("evaluate", inputs=[model, data_dir])) as door:
        outlet = door.outlet(output)
        for name in OUTPUT_NAMES.values():  # refused now, not after the evaluation
            outlet.check(os.path.join(output, name))
        try:
            with (
                decoder_messages(enabled=verbosity() < 1),  # its warning after the bar's last line
                progress("evaluate", total=total, unit="images") as advance,
            ):
                report = run_evaluate(
                    model,
                    data_dir,
                    split=split,
                    batch_size=batch_size,
                    verify_digests=not no_verify,
                    on_batch=advance,
                )
        except tf.errors.OpError as err:  # what the library does not name itself
            fail(tf_error_reason(err.message), 1)
        files = write_outputs(report, outlet)
    if files["note"]:
        click.echo(f"labelfix: skipped confusion.png: {files['note']}", err=True)
    if as_json:
        document = {"ok": True, **report.to_dict()}
        document["files"] = {k: str(v) for k, v in files.items() if k != "note" and v is not None}
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"{model} on {data_dir} (split {split}): {plural(report.images, 'image')}")
    for line in report_lines(report):
        click.echo(line)
    written = [str(files[k]) for k in ("csv", "png", "json") if files[k] is not None]
    click.echo(f"Wrote {', '.join(written)}")
