"""``labelfix train``: the reference training loop on a ``labelfix to-tfrecord`` output."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import click

from labelfix.cli import options
from labelfix.cli._common import (
    Bar,
    decoder_messages,
    fail,
    handle_errors,
    require_tensorflow,
    show_progress,
    verbosity,
)
from labelfix.errors import MissingExtra, UsageError
from labelfix.training import LOSSES, PRECISIONS
from labelfix.training.config import TrainConfig, weights_problem


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
    if not Path(value).exists():
        raise click.BadParameter(f"expected auto, none or a file of weights, got {value!r}")
    text = options.read_option_file(value, what="class weights file")
    try:
        parsed = json.loads(text)
    except ValueError:  # numbers of thousands of digits included
        parsed = [w for w in re.split(r"[\s,]+", text.strip()) if w]
    except RecursionError:
        raise click.BadParameter(f"{value}: JSON nested too deeply") from None
    try:
        if isinstance(parsed, dict):
            weights = {int(k): float(v) for k, v in parsed.items()}
            if any(not 0 <= k < options.MAX_CLASSES for k in weights):
                raise ValueError("class id out of range")
            return tuple(weights.get(i, 1.0) for i in range(max(weights, default=-1) + 1))
        weights = tuple(float(w) for w in parsed)
    except (TypeError, ValueError, OverflowError):
        raise click.BadParameter(
            f"{value}: expected numbers, one weight per class (or {{class id: weight}}, ids "
            f"0..{options.MAX_CLASSES - 1})"
        ) from None
    if not weights or any(not math.isfinite(w) or w < 0 for w in weights):
        raise click.BadParameter(f"{value}: expected finite, non-negative weights, got {weights}")
    if not any(weights):
        raise click.BadParameter(f"{value}: every weight is 0: nothing would be trained")
    num_classes = ctx.params.get("num_classes") if ctx is not None else None
    problem = weights_problem(weights, num_classes) if num_classes else None
    if problem is not None:
        raise click.BadParameter(f"{value}: {problem}")
    return weights


class TrainProgress:
    """Progress of a run: the start line on stderr, then, on a terminal, a :class:`Bar` per
    epoch (steps, running loss, rate, ETA; "validating" while it validates); one line per
    epoch always (to stdout, or to stderr under ``--json``)."""

    def __init__(self, *, enabled: bool | None = None, epochs_to: str = "stdout") -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.err = epochs_to == "stderr"
        self.bar: Bar | None = None

    def __call__(self, event) -> None:
        if event.kind == "start":
            replicas = len(event.devices)
            resumed = f", resuming after epoch {event.epoch}" if event.epoch else ""
            click.echo(
                f"labelfix: training on {', '.join(event.devices)} ({event.precision}, "
                f"{replicas} replica{'s' * (replicas != 1)}, {event.steps} steps/epoch{resumed})",
                err=True,
            )
        elif event.kind in ("step", "validate") and self.enabled:
            if self.bar is None:
                self.bar = Bar(f"epoch {event.epoch}/{event.epochs}", unit="steps", total=None)
            note = "validating" if event.kind == "validate" else f"loss {event.loss:.4f}"
            self.bar(event.step - self.bar.done, total=event.steps, note=note)
        elif event.kind == "epoch":
            if self.bar is not None:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()
                self.bar = None  # the next epoch's clock
            click.echo(_epoch_line(event.stats, event.epochs), err=self.err)


#: The config's names in its messages, and the options that set them.
_OPTIONS = {
    "binary=True": "--binary",
    "resume=True": "--resume",
    "num_classes": "--num-classes",
    "batch_size": "--batch-size",
    "crop_size": "--crop-size",
    "class_weights": "--class-weights",
    "label_smoothing": "--label-smoothing",
}


def option_names(message: str) -> str:
    """A TrainConfig message in the command line's words.

    >>> option_names("binary=True trains ...: num_classes must be 2, got 4")
    '--binary trains ...: --num-classes must be 2, got 4'
    """
    return re.sub("|".join(map(re.escape, _OPTIONS)), lambda m: _OPTIONS[m[0]], message)


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


def _document(result) -> dict:
    """The ``--json`` document of a finished run."""
    from dataclasses import asdict

    return {
        "ok": True,
        "devices": list(result.devices),
        "precision": result.precision,
        "loss": result.loss,
        "binary": result.binary,
        "num_replicas": result.num_replicas,
        "steps_per_epoch": result.steps_per_epoch,
        "class_weights": list(result.class_weights) if result.class_weights else None,
        "resumed_from": result.resumed_from,
        "model": str(result.model_path),
        "history_path": str(result.history_path),
        "checkpoints": str(result.checkpoint_dir),
        "logs": str(result.log_dir),
        "history": [asdict(s) for s in result.history],
    }


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
    help="Directory for model.keras, history.json, checkpoints/ and logs/ (TensorBoard).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from the newest checkpoint in --output: weights, optimizer state, epoch.",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Start from a local .keras or .weights.h5 file of the same architecture.",
)
@options.no_verify_option
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
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    default="ce",
    show_default=True,
    help="Cross-entropy, focal, soft Dice (per-class sums over the global batch) or CE + Dice; "
    "void pixels count in none.",
)
@click.option(
    "--binary",
    is_flag=True,
    help="Masks of 2 classes (0 background, 1 foreground; -n 2) trained as one sigmoid channel.",
)
@click.option("--learning-rate", "--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3)
@click.option("--width", type=click.IntRange(min=4), default=32, show_default=True)
@click.option("--backbone", metavar="NAME", help="A keras.applications model (weights=None).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@options.json_option
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
    resume,
    weights,
    no_verify,
    class_weights,
    crop_size,
    loss,
    binary,
    learning_rate,
    width,
    backbone,
    precision,
    seed,
    as_json,
):
    """Train a DeepLabV3+ on TFRecords written by `labelfix to-tfrecord`.

    Void pixels are left out of the loss (normalised by the valid pixels of the global batch)
    and of the metrics; --loss picks the loss, --binary trains 2-class masks as one sigmoid
    channel (scored like a 2-class run). Uses every visible GPU (mixed precision), else the
    CPU. Shards are checked against the manifest first; a label that is neither void nor a
    class stops the run naming its record. Validation scores whole images of any size (each
    padded to a multiple of 16, never resized). Writes a checkpoint every epoch (--resume
    continues from it), TensorBoard scalars in OUTPUT/logs and history.json (per-class IoU by name).

    \b
    labelfix train records/ -n 21 -e 30 -b 16 --val-split val --class-weights auto
    labelfix train records/ -n 21 -e 50 -b 16 --val-split val --resume
    labelfix train records/ -n 2 -e 30 -b 8 --binary --loss ce+dice
    """
    params = click.get_current_context().params
    try:
        config = TrainConfig.from_options({**params, "verify_digests": not no_verify})
    except UsageError as err:
        raise UsageError(option_names(str(err))) from None
    require_tensorflow("train")
    if importlib.util.find_spec("keras") is None:
        raise MissingExtra("`labelfix train` needs Keras 3: pip install 'labelfix[tf]'")
    import tensorflow as tf

    from labelfix.training.loop import train as run_train
    from labelfix.training.sources import tf_error_reason

    bar = TrainProgress(enabled=show_progress(), epochs_to="stderr" if as_json else "stdout")
    try:
        with decoder_messages(enabled=verbosity() < 1):
            result = run_train(config, progress=bar)
    except tf.errors.OpError as err:  # unreadable records and the like
        fail(tf_error_reason(err.message), 1)
    if as_json:
        click.echo(json.dumps(_document(result), indent=2))
        return
    click.echo(f"devices: {', '.join(result.devices)} ({result.precision})")
    click.echo(f"saved {result.model_path} and {result.history_path}")
    click.echo(f"checkpoints in {result.checkpoint_dir}, TensorBoard logs in {result.log_dir}")
