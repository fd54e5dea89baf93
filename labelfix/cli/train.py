"""``labelfix train``: the reference training loop on a ``labelfix to-tfrecord`` output."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import click

from labelfix.cli import options
from labelfix.cli._common import fail, handle_errors, require_tensorflow
from labelfix.errors import MissingExtra
from labelfix.training import PRECISIONS


def _check_crop_size(ctx, param, value):
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", value)
    if not match:
        raise click.BadParameter(f"expected H or HxW, e.g. 512 or 512x1024, got {value!r}")
    size = (int(match[1]), int(match[2] or match[1]))
    if any(s < 16 or s % 16 for s in size):
        raise click.BadParameter(f"height and width must be multiples of 16, got {value!r}")
    return size


def _check_class_weights(ctx, param, value):
    """``auto`` / ``none`` / a file: a JSON list, a JSON object {class id: weight} (others 1.0),
    or numbers separated by commas or whitespace."""
    if value in (None, "none"):
        return None
    if value == "auto":
        return "auto"
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"expected auto, none or a file of weights, got {value!r}")
    text = path.read_text()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = [w for w in re.split(r"[\s,]+", text.strip()) if w]
    try:
        if isinstance(parsed, dict):
            weights = {int(k): float(v) for k, v in parsed.items()}
            return tuple(weights.get(i, 1.0) for i in range(max(weights, default=-1) + 1))
        weights = tuple(float(w) for w in parsed)
    except (TypeError, ValueError):
        raise click.BadParameter(f"{value}: expected numbers, one weight per class") from None
    if not weights or any(w < 0 for w in weights):
        raise click.BadParameter(f"{value}: expected non-negative weights, got {weights}")
    return weights


class _Bar:
    """One self-rewriting stderr line per epoch; silent when stderr is not a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.started = time.perf_counter()

    def __call__(self, event) -> None:
        if event.kind == "start":
            replicas = len(event.devices)
            click.echo(
                f"labelfix: training on {', '.join(event.devices)} ({event.precision}, "
                f"{replicas} replica{'s' * (replicas != 1)}, {event.steps} steps/epoch)",
                err=True,
            )
        elif event.kind in ("step", "validate") and self.enabled:
            if event.step == 1:
                self.started = time.perf_counter()
            done = event.step / max(event.steps, 1)
            filled = int(30 * done)
            tail = "validating" if event.kind == "validate" else f"loss {event.loss:.4f}"
            elapsed = time.perf_counter() - self.started
            sys.stderr.write(
                f"\repoch {event.epoch}/{event.epochs} [{'#' * filled}{'.' * (30 - filled)}] "
                f"{event.step}/{event.steps} {tail} {elapsed:.0f}s\x1b[K"
            )
            sys.stderr.flush()
        elif event.kind == "epoch":
            if self.enabled:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()
            click.echo(_epoch_line(event.stats, event.epochs))


def _epoch_line(s, epochs: int) -> str:
    line = (
        f"epoch {s.epoch}/{epochs}  loss {s.loss:.4f}  pixel_acc {s.pixel_accuracy:.4f}  "
        f"mIoU {s.mean_iou:.4f}"
    )
    if s.val_loss is not None:
        line += (
            f"  val_loss {s.val_loss:.4f}  val_pixel_acc {s.val_pixel_accuracy:.4f}  "
            f"val_mIoU {s.val_mean_iou:.4f}"
        )
    return line + f"  ({s.seconds:.1f}s)"


@click.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@options.num_classes_option(required=True)
@click.option("--epochs", "-e", type=click.IntRange(min=1), required=True, help="Epochs to run.")
@click.option(
    "--batch-size",
    "-b",
    type=click.IntRange(min=1),
    required=True,
    help="Global batch size, split over all replicas.",
)
@click.option(
    "--steps-per-epoch",
    type=click.IntRange(min=1),
    help="Default: training examples // batch size.",
)
@click.option("--split", default="train", show_default=True, help="Training split name.")
@click.option("--val-split", metavar="NAME", help="Validation split, evaluated after each epoch.")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    default="labelfix-train",
    show_default=True,
    help="Directory for model.keras and history.json.",
)
@click.option(
    "--class-weights",
    default="none",
    show_default=True,
    callback=_check_class_weights,
    metavar="auto|none|FILE",
    help="auto: median frequency from the manifest's pixel counts; FILE: one weight per class.",
)
@click.option(
    "--crop-size",
    default="512",
    show_default=True,
    callback=_check_crop_size,
    metavar="H[xW]",
    help="Training crop; multiples of 16.",
)
@click.option("--learning-rate", "--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3)
@click.option("--width", type=click.IntRange(min=4), default=32, show_default=True)
@click.option("--backbone", metavar="NAME", help="A keras.applications model (weights=None).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@handle_errors
def train(
    data_dir,
    num_classes,
    epochs,
    batch_size,
    steps_per_epoch,
    split,
    val_split,
    output,
    class_weights,
    crop_size,
    learning_rate,
    width,
    backbone,
    precision,
    seed,
):
    """Train a DeepLabV3+ on TFRecords written by `labelfix to-tfrecord`.

    Void pixels are left out of the loss (normalised by the valid pixels of the global batch)
    and of the metrics. Uses every visible GPU (mixed precision), else the CPU.

    \b
    labelfix train records/ -n 21 -e 30 -b 16 --val-split val --class-weights auto
    """
    require_tensorflow("train")
    if importlib.util.find_spec("keras") is None:
        raise MissingExtra("`labelfix train` needs Keras 3: pip install 'labelfix[tf]'")
    import tensorflow as tf

    from labelfix.training.loop import train as run_train

    try:
        result = run_train(
            data_dir=data_dir,
            num_classes=num_classes,
            epochs=epochs,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            split=split,
            val_split=val_split,
            output=output,
            class_weights=class_weights,
            crop_size=crop_size,
            learning_rate=learning_rate,
            width=width,
            backbone=backbone,
            precision=precision,
            seed=seed,
            progress=_Bar(),
        )
    except ValueError as err:  # an option the data or devices do not allow
        fail(str(err).splitlines()[0], 2)
    except tf.errors.OpError as err:  # unreadable records and the like
        fail(err.message.splitlines()[0], 1)
    click.echo(f"devices: {', '.join(result.devices)} ({result.precision})")
    click.echo(f"saved {result.model_path} and {result.history_path}")
