"""The reference training loop for segmentation masks, readable top to bottom.

What it gets right, and where:

* **Input**: TFRecords from ``labelfix to-tfrecord`` through ``labelfix.data.load`` (or any
  ``tf.data`` dataset of ``(image float32 [H, W, 3], mask int [H, W])``), augmented in
  :mod:`labelfix.training.pipelines`.
* **Loss and step**: normalised by the valid pixels of the *global* batch, so any number of
  devices gives the single-device loss and gradients (:mod:`labelfix.training.steps`).
* **Devices and precision**: every visible GPU, mixed precision there; float32 on the CPU
  (:mod:`labelfix.training.devices`).
* **Metrics**: loss, pixel accuracy and mean IoU with void excluded, from confusion matrices
  summed exactly (int64) on the host.

The library never prints: pass ``progress=`` to watch it (``labelfix train`` draws a bar).

>>> EpochStats(epoch=1, loss=0.7, pixel_accuracy=0.8, mean_iou=0.5).val_mean_iou is None
True
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from labelfix._version import __version__
from labelfix.errors import LabelfixError
from labelfix.labels import IGNORE_AS
from labelfix.labels.weights import median_frequency_weights
from labelfix.metrics import iou_per_class, mean_iou, pixel_accuracy
from labelfix.training.devices import describe_devices, make_strategy, resolve_precision
from labelfix.training.model import build_model
from labelfix.training.pipelines import (
    MODEL_MULTIPLE,
    shard_by_data,
    training_pipeline,
    validation_pipeline,
)
from labelfix.training.steps import make_eval_step, make_train_step, masked_loss

__all__ = ["EpochStats", "Progress", "TrainResult", "train"]


@dataclass(frozen=True)
class EpochStats:
    """Metrics of one epoch (void excluded). ``val_*`` are None without a validation split."""

    epoch: int
    loss: float
    pixel_accuracy: float
    mean_iou: float
    val_loss: float | None = None
    val_pixel_accuracy: float | None = None
    val_mean_iou: float | None = None
    iou_per_class: tuple[float | None, ...] = ()  # validation if any, else training
    seconds: float = 0.0


@dataclass(frozen=True)
class Progress:
    """What ``train`` reports to its ``progress`` callback.

    ``kind`` is ``"start"`` (``devices``, ``precision``, ``steps``), ``"step"`` (``step`` of
    ``steps`` done, running ``loss``), ``"validate"`` or ``"epoch"`` (``stats``).
    """

    kind: str
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    stats: EpochStats | None = None
    devices: tuple[str, ...] = ()
    precision: str = ""


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced. ``model`` is the trained ``keras.Model``."""

    history: tuple[EpochStats, ...]
    devices: tuple[str, ...]
    precision: str
    num_replicas: int
    steps_per_epoch: int
    class_weights: tuple[float, ...] | None
    model_path: Path | None
    history_path: Path | None
    model: Any = field(repr=False, compare=False, default=None)


@dataclass(frozen=True)
class _Run:
    """One run's settings once resolved: what ``train``'s helpers share, what history.json keeps."""

    num_classes: int
    ignore: int
    epochs: int
    batch_size: int
    crop_size: tuple[int, int]
    steps_per_epoch: int
    class_weights: tuple[float, ...] | None
    precision: str
    devices: tuple[str, ...]
    num_replicas: int


@dataclass(frozen=True)
class _Source:
    """The examples before batching, and the manifest they came with (None for datasets)."""

    dataset: tf.data.Dataset
    val_dataset: tf.data.Dataset | None
    manifest: Mapping[str, Any] | None


@dataclass(frozen=True)
class _Batches:
    """Endless distributed training batches, and the validation batches (None: no split)."""

    train: Iterator[Any]
    val: tf.data.Dataset | None


@dataclass(frozen=True)
class _Steps:
    """The run's compiled steps (see :mod:`labelfix.training.steps`)."""

    train: Callable[[Any], tuple[Any, Any]]
    evaluate: Callable[[Any], tuple[Any, Any, Any]]


def train(
    *,
    num_classes: int,
    epochs: int,
    batch_size: int,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    val_split: str | None = None,
    dataset: tf.data.Dataset | None = None,
    val_dataset: tf.data.Dataset | None = None,
    steps_per_epoch: int | None = None,
    output: str | os.PathLike | None = None,
    ignore: int = IGNORE_AS,
    class_weights: str | Sequence[float] | None = None,
    crop_size: Sequence[int] = (512, 512),
    scale_range: Sequence[float] | None = (0.5, 2.0),
    flip: bool = True,
    learning_rate: float = 1e-3,
    label_smoothing: float = 0.0,
    width: int = 32,
    backbone: str | None = None,
    norm: str = "group",
    precision: str = "auto",
    devices: Sequence[str] | None = None,
    jit_compile: bool = True,
    seed: int | None = 0,
    progress: Callable[[Progress], None] | None = None,
) -> TrainResult:
    """Train a DeepLabV3+ (:func:`labelfix.training.model.build_model`) on segmentation masks.

    Args:
        num_classes: classes 0..N-1; must match the dataset manifest when ``data_dir`` is given.
        epochs, batch_size: ``batch_size`` is the *global* batch, split over the replicas (a
            multiple of their number).
        data_dir: a ``labelfix to-tfrecord`` output, read with ``labelfix.data.load(data_dir,
            split, ignore_as=ignore)``; ``val_split`` names the validation split.
        dataset, val_dataset: instead of ``data_dir``, unbatched ``tf.data`` datasets of
            ``(image float32 [H, W, 3], mask int [H, W])`` whose void value is ``ignore``.
        steps_per_epoch: default: examples // batch_size (from the dataset's cardinality or the
            manifest, counting the records if neither knows).
        output: a directory for ``model.keras`` and ``history.json`` (created); None saves nothing.
        ignore: the void value the masks hold (``labelfix.data`` presents void as -1).
        class_weights: None, ``"auto"`` (median frequency from the manifest's
            ``class_pixel_counts``), or one weight per class.
        crop_size: training crop ``(height, width)``, multiples of 16; images are scaled by
            ``scale_range``, padded (mask with ``ignore``) and cropped to it.
        precision: ``"auto"`` (float32 on CPU, mixed on GPU; see
            :func:`~labelfix.training.devices.resolve_precision`), or one of ``"float32"``,
            ``"mixed_bfloat16"``, ``"mixed_float16"``.
        devices: devices for ``MirroredStrategy``; default every visible GPU (or the CPU).
        seed: seeds Keras/TF/NumPy globally (model init) and the augmentation; None: random.
        progress: called with a :class:`Progress` at start, after every step and every epoch.

    Returns:
        A :class:`TrainResult`; ``history`` has loss, pixel accuracy and mean IoU (void
        excluded) per epoch.

    Raises:
        LabelfixError: missing or inconsistent data (e.g. a batch larger than the dataset).
    """
    report = progress or (lambda event: None)
    crop_size = _check_sizes(crop_size, epochs=epochs, batch_size=batch_size)
    strategy = _strategy(devices, batch_size=batch_size, seed=seed)

    source = _read(dataset, val_dataset, data_dir, split, val_split, num_classes, ignore)
    weights = _class_weights(class_weights, source.manifest, num_classes, data_dir)
    if steps_per_epoch is None:
        steps_per_epoch = _steps_per_epoch(source, batch_size=batch_size, split=split)
    augmentation = dict(crop_size=crop_size, scale_range=scale_range, flip=flip, seed=seed)
    batches = _batches(strategy, source, batch_size=batch_size, ignore=ignore, **augmentation)

    precision = _check_precision(precision, jit_compile=jit_compile)
    run = _Run(
        num_classes=num_classes,
        ignore=ignore,
        epochs=epochs,
        batch_size=batch_size,
        crop_size=crop_size,
        steps_per_epoch=steps_per_epoch,
        class_weights=weights,
        precision=precision,
        devices=describe_devices(strategy),
        num_replicas=strategy.num_replicas_in_sync,
    )
    model, optimizer = _build(
        strategy, run, learning_rate=learning_rate, width=width, backbone=backbone, norm=norm
    )
    steps = _make_steps(
        model, optimizer, strategy, run, label_smoothing=label_smoothing, jit_compile=jit_compile
    )
    report(
        Progress(
            "start", epochs=epochs, steps=steps_per_epoch, devices=run.devices, precision=precision
        )
    )
    history = [
        _run_epoch(epoch, run, strategy, steps, batches, report) for epoch in range(1, epochs + 1)
    ]
    return _finish(output, model, run, history)


def _check_sizes(crop_size: Sequence[int], *, epochs: int, batch_size: int) -> tuple[int, int]:
    crop = tuple(int(c) for c in crop_size)
    if len(crop) != 2 or any(c < 1 or c % MODEL_MULTIPLE for c in crop):
        raise ValueError(f"crop_size must be two multiples of {MODEL_MULTIPLE}, got {crop}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    return crop[0], crop[1]


def _strategy(
    devices: Sequence[str] | None, *, batch_size: int, seed: int | None
) -> tf.distribute.Strategy:
    """The strategy, made before any TensorFlow op (MultiWorkerMirroredStrategy must configure
    the runtime first); then the global seed."""
    strategy = make_strategy(devices)
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"batch_size {batch_size} is not a multiple of the {replicas} replicas")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return strategy


def _read(
    dataset: tf.data.Dataset | None,
    val_dataset: tf.data.Dataset | None,
    data_dir: str | os.PathLike | None,
    split: str,
    val_split: str | None,
    num_classes: int,
    ignore: int,
) -> _Source:
    """The datasets given, or the splits of ``data_dir`` read with ``labelfix.data``."""
    if dataset is not None:
        return _Source(dataset, val_dataset, None)
    if data_dir is None:
        raise ValueError("pass data_dir or dataset")
    from labelfix import data

    manifest = data.read_manifest(data_dir, split)
    if manifest.get("num_classes") not in (None, num_classes):
        raise LabelfixError(
            f"{data_dir}: the manifest says num_classes={manifest['num_classes']}, "
            f"got num_classes={num_classes}"
        )
    dataset = data.load(data_dir, split, ignore_as=ignore)
    if val_split is not None and val_dataset is None:
        val_dataset = data.load(data_dir, val_split, ignore_as=ignore)
    return _Source(dataset, val_dataset, manifest)


def _class_weights(
    spec: str | Sequence[float] | None,
    manifest: Mapping[str, Any] | None,
    num_classes: int,
    data_dir: Any,
) -> tuple[float, ...] | None:
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        counts = (manifest or {}).get("class_pixel_counts")
        if counts is None:
            raise LabelfixError(
                f"{data_dir or 'dataset'}: class_weights='auto' needs the manifest's "
                "class_pixel_counts (write the data with `labelfix to-tfrecord`)"
            )
        weights = median_frequency_weights(counts, (manifest or {}).get("class_image_pixels"))
    elif isinstance(spec, str):
        raise ValueError(f"class_weights must be None, 'auto' or numbers, got {spec!r}")
    else:
        weights = tuple(float(w) for w in spec)
    if len(weights) != num_classes:
        raise LabelfixError(f"expected {num_classes} class weights, got {len(weights)}")
    return weights


def _steps_per_epoch(source: _Source, *, batch_size: int, split: str) -> int:
    steps = _count_examples(source.dataset, source.manifest) // batch_size
    if steps < 1:
        raise LabelfixError(
            f"the {split!r} split has fewer examples than one batch of {batch_size}"
        )
    return steps


def _count_examples(dataset: tf.data.Dataset, manifest: Mapping[str, Any] | None) -> int:
    cardinality = int(dataset.cardinality())
    if cardinality >= 0:
        return cardinality
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError("an infinite dataset needs steps_per_epoch")
    for key in ("num_examples", "num_records", "count"):
        if manifest and isinstance(manifest.get(key), int):
            return manifest[key]
    return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))


def _batches(
    strategy: tf.distribute.Strategy,
    source: _Source,
    *,
    batch_size: int,
    ignore: int,
    **augmentation: Any,
) -> _Batches:
    """Augmented training batches (``augmentation``: the options of ``training_pipeline``),
    distributed; the validation batches, padded."""
    train_batches = training_pipeline(
        source.dataset, batch_size=batch_size, ignore=ignore, **augmentation
    )
    val_batches = None
    if source.val_dataset is not None:
        val_batches = validation_pipeline(source.val_dataset, batch_size=batch_size, ignore=ignore)
    return _Batches(
        train=iter(strategy.experimental_distribute_dataset(shard_by_data(train_batches))),
        val=val_batches,
    )


def _check_precision(precision: str, *, jit_compile: bool) -> str:
    precision = resolve_precision(precision)
    if precision != "float32" and jit_compile and not tf.config.list_physical_devices("GPU"):
        raise ValueError(
            f"{precision} on the CPU: XLA's CPU backend rejects low-precision convolution "
            "gradients; use precision='float32' (the CPU default) or jit_compile=False"
        )
    return precision


def _build(
    strategy: tf.distribute.Strategy,
    run: _Run,
    *,
    learning_rate: float,
    width: int,
    backbone: str | None,
    norm: str,
) -> tuple[keras.Model, keras.optimizers.Optimizer]:
    """The model and its optimizer (cosine decay over the run), built under ``strategy``."""
    with strategy.scope():
        model = build_model(
            num_classes=run.num_classes,
            input_shape=(*run.crop_size, 3) if backbone else (None, None, 3),
            width=width,
            backbone=backbone,
            norm=norm,
            dtype=None if run.precision == "float32" else run.precision,
        )
        schedule = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=run.epochs * run.steps_per_epoch, alpha=0.01
        )
        optimizer = keras.optimizers.Adam(schedule)
        if run.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    return model, optimizer


def _make_steps(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    run: _Run,
    *,
    label_smoothing: float,
    jit_compile: bool,
) -> _Steps:
    """The train and eval steps with the run's masked, weighted loss."""
    loss_fn = masked_loss(
        ignore=run.ignore, class_weights=run.class_weights, label_smoothing=label_smoothing
    )
    common = dict(model=model, strategy=strategy, num_classes=run.num_classes, ignore=run.ignore)
    return _Steps(
        train=make_train_step(
            optimizer=optimizer, loss_fn=loss_fn, jit_compile=jit_compile, **common
        ),
        evaluate=make_eval_step(loss_fn=loss_fn, **common),
    )


def _run_epoch(
    epoch: int,
    run: _Run,
    strategy: tf.distribute.Strategy,
    steps: _Steps,
    batches: _Batches,
    report: Callable[[Progress], None],
) -> EpochStats:
    """Train one epoch, validate if there is a split, and report the stats."""
    started = time.perf_counter()
    loss_total, cm = _train_epoch(epoch, run, steps.train, batches.train, report)
    if not math.isfinite(loss_total):
        raise LabelfixError(f"epoch {epoch}: the loss is not finite ({loss_total})")
    val = None
    if batches.val is not None:
        report(Progress("validate", epoch, run.epochs, run.steps_per_epoch, run.steps_per_epoch))
        val = _evaluate(steps.evaluate, strategy, batches.val, run.num_classes)
    per_class = iou_per_class(val[1] if val else cm)
    stats = EpochStats(
        epoch=epoch,
        loss=loss_total / run.steps_per_epoch,
        pixel_accuracy=pixel_accuracy(cm),
        mean_iou=mean_iou(cm),
        val_loss=val[0] if val else None,
        val_pixel_accuracy=pixel_accuracy(val[1]) if val else None,
        val_mean_iou=mean_iou(val[1]) if val else None,
        iou_per_class=tuple(None if math.isnan(v) else float(v) for v in per_class),
        seconds=time.perf_counter() - started,
    )
    report(
        Progress("epoch", epoch, run.epochs, run.steps_per_epoch, run.steps_per_epoch, stats=stats)
    )
    return stats


def _train_epoch(
    epoch: int,
    run: _Run,
    train_step: Callable[[Any], tuple[Any, Any]],
    train_batches: Iterator[Any],
    report: Callable[[Progress], None],
) -> tuple[float, np.ndarray]:
    """``(sum of the step losses, int64 confusion matrix)`` of one epoch's training steps."""
    steps = run.steps_per_epoch
    cm = np.zeros((run.num_classes, run.num_classes), np.int64)
    loss_total = 0.0
    pending = None  # read step i's results after launching step i+1: the device never waits
    for step in range(1, steps + 2):
        launched = train_step(next(train_batches)) if step <= steps else None
        if pending is not None:
            loss, batch_cm = pending
            loss_total += float(loss)
            cm += batch_cm.numpy().astype(np.int64)
            done = step - 1
            report(Progress("step", epoch, run.epochs, done, steps, loss=loss_total / done))
        pending = launched
    return loss_total, cm


def _evaluate(
    eval_step: Callable, strategy: tf.distribute.Strategy, batches: tf.data.Dataset, n: int
) -> tuple[float, np.ndarray]:
    """``(valid-pixel mean loss, int64 confusion matrix)`` over the whole validation set."""
    loss_sum, count = 0.0, 0.0
    cm = np.zeros((n, n), np.int64)
    for batch in strategy.experimental_distribute_dataset(shard_by_data(batches)):
        batch_loss, batch_count, batch_cm = eval_step(batch)
        loss_sum += float(batch_loss)
        count += float(batch_count)
        cm += batch_cm.numpy().astype(np.int64)
    return loss_sum / max(count, 1.0), cm


def _finish(
    output: str | os.PathLike | None, model: keras.Model, run: _Run, history: list[EpochStats]
) -> TrainResult:
    """Save ``model.keras`` and ``history.json`` to ``output`` (unless None); the result."""
    model_path = history_path = None
    if output is not None:
        model_path, history_path = _save(Path(output), model, run, history)
    return TrainResult(
        history=tuple(history),
        devices=run.devices,
        precision=run.precision,
        num_replicas=run.num_replicas,
        steps_per_epoch=run.steps_per_epoch,
        class_weights=tuple(run.class_weights) if run.class_weights else None,
        model_path=model_path,
        history_path=history_path,
        model=model,
    )


def _save(out: Path, model: keras.Model, run: _Run, history: list[EpochStats]) -> tuple[Path, Path]:
    """Write ``model.keras`` and ``history.json`` (the run's settings and every epoch)."""
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "model.keras"
    model.save(model_path)
    history_path = out / "history.json"
    record = {
        "labelfix_version": __version__,
        "num_classes": run.num_classes,
        "ignore": run.ignore,
        "class_weights": list(run.class_weights) if run.class_weights else None,
        "batch_size": run.batch_size,
        "crop_size": list(run.crop_size),
        "steps_per_epoch": run.steps_per_epoch,
        "precision": run.precision,
        "devices": list(run.devices),
        "num_replicas": run.num_replicas,
        "epochs": [asdict(s) for s in history],
    }
    history_path.write_text(json.dumps(record, indent=2) + "\n")
    return model_path, history_path
