"""The reference training loop for segmentation masks, readable top to bottom.

What it gets right, and where:

* **Input**: TFRecords from ``labelfix to-tfrecord``, their shards checked against the manifest
  (sizes, sha256) and every record named by shard and index (:mod:`labelfix.training.sources`),
  or any ``tf.data`` dataset of ``(image float32 [H, W, 3], mask int [H, W])``; augmented in
  :mod:`labelfix.training.pipelines`, where a label that is neither void nor a class stops the
  run before its batch is trained on, naming the record.
* **Loss and step**: normalised by the valid pixels of the *global* batch, so any number of
  devices gives the single-device loss and gradients (:mod:`labelfix.training.steps`).
* **Devices and precision**: every visible GPU, mixed precision there; float32 on the CPU
  (:mod:`labelfix.training.devices`).
* **Validation**: whole images of any size, each padded to a multiple of the model stride
  (:mod:`labelfix.training.inference`).
* **Metrics**: loss, pixel accuracy, mean and per-class IoU with void excluded, from confusion
  matrices summed exactly (int64) on the host.
* **Outputs** (with ``output``): ``model.keras``, ``history.json`` (rewritten every epoch), a
  checkpoint every epoch in ``checkpoints/`` (``resume=True`` continues from the newest,
  :mod:`labelfix.training.checkpoints`) and TensorBoard scalars in ``logs/``
  (:mod:`labelfix.training.summaries`).

The library never prints: pass ``progress=`` to watch it (``labelfix train`` draws a bar).

>>> EpochStats(epoch=1, loss=0.7, pixel_accuracy=0.8, mean_iou=0.5).val_mean_iou is None
True
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from labelfix.errors import LabelfixError, UsageError
from labelfix.io.door import Door, Outlet, Rules
from labelfix.io.inputs import watch_inputs
from labelfix.labels.weights import median_frequency_weights
from labelfix.metrics import iou_per_class, mean_iou, pixel_accuracy
from labelfix.training.checkpoints import Checkpoints, load_weights
from labelfix.training.config import RunConfig, TrainConfig
from labelfix.training.devices import describe_devices, make_strategy, resolve_precision
from labelfix.training.history import (
    EpochStats,
    Progress,
    TrainResult,
    class_names,
    write_history,
)
from labelfix.training.inference import Evaluator
from labelfix.training.model import build_model
from labelfix.training.pipelines import (
    MODEL_MULTIPLE,
    evaluation_pipeline,
    shard_by_data,
    training_pipeline,
)
from labelfix.training.saving import compile_for_saving
from labelfix.training.sources import read_errors, read_split, require_labelled_pixels
from labelfix.training.steps import TrainingLoss, make_train_step
from labelfix.training.summaries import Summaries

__all__ = ["EpochStats", "Progress", "TrainConfig", "TrainResult", "train"]


@dataclass(frozen=True)
class _Source:
    """The examples before batching, and the manifests they came with (none for datasets)."""

    dataset: tf.data.Dataset
    val_dataset: tf.data.Dataset | None
    manifest: Mapping[str, Any] | None
    manifests: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class _Batches:
    """Endless distributed training batches, and the validation batches (None: no split)."""

    train: Iterator[Any]
    val: tf.data.Dataset | None


@dataclass(frozen=True)
class _Trainer:
    """The model, its optimizer, the compiled train step and the validation's evaluator."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    step: Callable[[Any], tuple[Any, Any]]
    evaluate: Evaluator


@dataclass(frozen=True)
class _Outputs:
    """Where a run writes (all None without ``output``), through the door's outlet."""

    directory: Path | None
    checkpoints: Checkpoints | None
    summaries: Summaries | None
    outlet: Outlet | None = None


def train(
    config: TrainConfig | None = None,
    /,
    *,
    dataset: tf.data.Dataset | None = None,
    val_dataset: tf.data.Dataset | None = None,
    progress: Callable[[Progress], None] | None = None,
    **options: Any,
) -> TrainResult:
    """Train a DeepLabV3+ (:func:`labelfix.training.model.build_model`) on segmentation masks.

    Args:
        config: what to do (:class:`~labelfix.training.config.TrainConfig`); or give its
            fields as keyword ``options`` (``train(num_classes=21, epochs=30, ...)``).
        dataset, val_dataset: instead of the config's ``data_dir``, unbatched ``tf.data``
            datasets of ``(image float32 [H, W, 3], mask int [H, W][, name string])`` whose
            void value is the config's ``ignore``.
        progress: called with a :class:`Progress` at start, after every step and every epoch.

    Returns:
        A :class:`TrainResult`; ``history`` has loss, pixel accuracy, mean and per-class IoU
        (void excluded) per epoch.

    Raises:
        UsageError: options no run can use (the config's checks), or that these data and
            devices cannot (a batch that does not split over the replicas, low precision on
            the CPU under XLA, an earlier run's output without ``resume``).
        LabelfixError: missing, changed or inconsistent data (a shard that differs from its
            manifest, a label that is neither void nor a class, a damaged record: each named),
            or nothing to resume from.
    """
    config = config if config is not None else TrainConfig(**options)
    report = progress or (lambda event: None)
    if not config.resume:
        _refuse_earlier_run(config.output)
    watch_inputs([config.data_dir])  # records being written, or rewritten, stop the run now
    strategy = _strategy(config.devices, batch_size=config.batch_size, seed=config.seed)
    source = _read(dataset, val_dataset, config)
    run = _run_config(config, source, strategy)
    model, optimizer = _build(strategy, run, learning_rate=config.learning_rate)
    if config.weights is not None:
        load_weights(model, config.weights)
    door = Door(Rules.of("train", inputs=[config.data_dir, config.weights]))
    with door:
        outlet = door.outlet(config.output) if config.output is not None else None
        outputs = _outputs(outlet, model, optimizer, run, validation=source.val_dataset is not None)
        return _train_epochs(config, outputs, model, optimizer, run, source, strategy, report)


def _run_config(config: TrainConfig, source: _Source, strategy) -> RunConfig:
    """What the run resolves ``config`` to, once it has seen the data and the devices."""
    steps = config.steps_per_epoch or _steps_per_epoch(
        source, batch_size=config.batch_size, split=config.split
    )
    return RunConfig(
        num_classes=config.num_classes,
        ignore=config.ignore,
        epochs=config.epochs,
        batch_size=config.batch_size,
        crop_size=config.crop_size,
        steps_per_epoch=steps,
        class_weights=_class_weights(
            config.class_weights, source.manifest, config.num_classes, config.data_dir
        ),
        precision=_check_precision(config.precision, jit_compile=config.jit_compile),
        devices=describe_devices(strategy),
        num_replicas=strategy.num_replicas_in_sync,
        class_names=class_names((source.manifest or {}).get("class_names"), config.num_classes),
        width=config.width,
        backbone=config.backbone,
        norm=config.norm,
        loss=config.loss,
        binary=config.binary,
    )


def _train_epochs(
    config: TrainConfig,
    outputs: _Outputs,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    run: RunConfig,
    source: _Source,
    strategy: tf.distribute.Strategy,
    report: Callable[[Progress], None],
) -> TrainResult:
    """Restore (``resume``), then train epoch after epoch, recording each; the result."""
    done, history = outputs.checkpoints.restore() if config.resume else (0, [])
    seed = config.seed if config.seed is None or not done else config.seed + 7919 * done
    augmentation = dict(
        crop_size=config.crop_size, scale_range=config.scale_range, flip=config.flip, seed=seed
    )
    batches = _batches(strategy, source, run, **augmentation)
    trainer = _trainer(model, optimizer, strategy, run, config.label_smoothing, config.jit_compile)
    report(
        Progress(
            "start",
            done,
            config.epochs,
            steps=run.steps_per_epoch,
            devices=run.devices,
            precision=run.precision,
        )
    )
    with read_errors(source.manifests), outputs.summaries or contextlib.nullcontext():
        for epoch in range(done + 1, config.epochs + 1):
            history.append(_run_epoch(epoch, run, trainer, batches, report))
            _record_epoch(outputs, run, history)
    return _finish(outputs, model, run, history, resumed_from=done)


def _refuse_earlier_run(output: str | os.PathLike | None) -> None:
    """A fresh run never replaces an earlier run's ``model.keras`` nor mixes its checkpoints
    with that run's."""
    if output is None:
        return
    directory = Path(output)
    found = [
        name
        for name in ("model.keras", "checkpoints", "history.json")
        if (directory / name).exists()
    ]
    if found:
        raise UsageError(
            f"{directory} holds an earlier run ({', '.join(found)}): resume it (--resume) or "
            "choose a new output directory"
        )


def _strategy(
    devices: Sequence[str] | None, *, batch_size: int, seed: int | None
) -> tf.distribute.Strategy:
    """The strategy, made before any TensorFlow op (MultiWorkerMirroredStrategy must configure
    the runtime first); then the global seed."""
    strategy = make_strategy(devices)
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UsageError(f"batch_size {batch_size} is not a multiple of the {replicas} replicas")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return strategy


def _read(
    dataset: tf.data.Dataset | None, val_dataset: tf.data.Dataset | None, config: TrainConfig
) -> _Source:
    """The datasets given, or the splits of the config's ``data_dir``: manifest checked against
    ``num_classes``, shards against the manifest, records named by shard and index."""
    if dataset is not None:
        return _Source(dataset, val_dataset, None)
    data_dir, split, val_split = config.data_dir, config.split, config.val_split
    num_classes, ignore, digests = config.num_classes, config.ignore, config.verify_digests
    if data_dir is None:
        raise UsageError("give a data_dir or a dataset")
    from labelfix.records.manifest import read_manifest

    manifest = read_manifest(data_dir, split)
    if manifest.get("num_classes") not in (None, num_classes):
        raise LabelfixError(
            f"{data_dir}: the manifest says num_classes={manifest['num_classes']}, "
            f"got num_classes={num_classes}"
        )
    splits = [read_split(data_dir, split, ignore=ignore, digests=digests)]
    require_labelled_pixels(
        splits[0].manifest, data_dir=data_dir, split=split, use="nothing to train on"
    )
    if val_split is not None:
        splits.append(read_split(data_dir, val_split, ignore=ignore, digests=digests))
        require_labelled_pixels(
            splits[1].manifest,
            data_dir=data_dir,
            split=val_split,
            use="validation would report loss 0 and mIoU 0 of nothing",
        )
    val = splits[1].dataset if val_split is not None else None
    return _Source(splits[0].dataset, val, splits[0].manifest, tuple(s.manifest for s in splits))


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
        raise UsageError("an infinite dataset needs steps_per_epoch")
    for key in ("num_examples", "num_records", "count"):
        if manifest and isinstance(manifest.get(key), int):
            return manifest[key]
    return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))


def _batches(
    strategy: tf.distribute.Strategy, source: _Source, run: RunConfig, **augmentation: Any
) -> _Batches:
    """Augmented, checked training batches (``augmentation``: the options of
    ``training_pipeline``), distributed; the validation batches, each image padded on its own."""
    train_batches = training_pipeline(
        source.dataset,
        batch_size=run.batch_size,
        ignore=run.ignore,
        num_classes=run.num_classes,
        **augmentation,
    )
    val_batches = None
    if source.val_dataset is not None:
        val_batches = evaluation_pipeline(
            source.val_dataset,
            batch_size=run.batch_size,
            ignore=run.ignore,
            multiple=(*run.crop_size,) if run.backbone else MODEL_MULTIPLE,
            num_classes=run.num_classes,
            replicas=run.num_replicas,
        )
    return _Batches(
        train=iter(strategy.experimental_distribute_dataset(shard_by_data(train_batches))),
        val=val_batches,
    )


def _check_precision(precision: str, *, jit_compile: bool) -> str:
    precision = resolve_precision(precision)
    if precision != "float32" and jit_compile and not tf.config.list_physical_devices("GPU"):
        raise UsageError(
            f"{precision} on the CPU: XLA's CPU backend rejects low-precision convolution "
            "gradients; use precision='float32' (the CPU default) or jit_compile=False"
        )
    return precision


def _build(
    strategy: tf.distribute.Strategy, run: RunConfig, *, learning_rate: float
) -> tuple[keras.Model, keras.optimizers.Optimizer]:
    """The model and its optimizer (cosine decay over the run), built under ``strategy``."""
    with strategy.scope():
        model = build_model(
            num_classes=1 if run.binary else run.num_classes,
            input_shape=(*run.crop_size, 3) if run.backbone else (None, None, 3),
            width=run.width,
            backbone=run.backbone,
            norm=run.norm,
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


def _loss_fn(run: RunConfig, label_smoothing: float = 0.0) -> TrainingLoss:
    return TrainingLoss(
        kind=run.loss,
        ignore=run.ignore,
        binary=run.binary,
        class_weights=run.class_weights,
        label_smoothing=label_smoothing,
    )


def _trainer(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    run: RunConfig,
    label_smoothing: float,
    jit_compile: bool,
) -> _Trainer:
    """The train step with the run's masked, weighted loss, and validation's evaluator."""
    step = make_train_step(
        model=model,
        optimizer=optimizer,
        strategy=strategy,
        num_classes=run.num_classes,
        ignore=run.ignore,
        loss_fn=_loss_fn(run, label_smoothing),
        jit_compile=jit_compile,
    )
    evaluator = Evaluator(
        model,
        num_classes=run.num_classes,
        ignore=run.ignore,
        loss_fn=_loss_fn(run),
        strategy=strategy,
    )
    return _Trainer(model, optimizer, step, evaluator)


def _outputs(
    outlet: Outlet | None,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    run: RunConfig,
    *,
    validation: bool,
) -> _Outputs:
    """Checkpoints and summaries in directories the door gives (under the outlet's root)."""
    if outlet is None:
        return _Outputs(None, None, None)
    directory = Path(outlet.root)
    checkpoints = Path(outlet.directory(os.path.join(outlet.root, "checkpoints")))
    logs = Path(outlet.directory(os.path.join(outlet.root, "logs")))
    return _Outputs(
        directory,
        Checkpoints(checkpoints, model, optimizer, run, outlet=outlet),
        Summaries(logs, class_names=run.class_names, validation=validation),
        outlet,
    )


def _run_epoch(
    epoch: int,
    run: RunConfig,
    trainer: _Trainer,
    batches: _Batches,
    report: Callable[[Progress], None],
) -> EpochStats:
    """Train one epoch, validate if there is a split, and report the stats."""
    started = time.perf_counter()
    loss_total, cm = _train_epoch(epoch, run, trainer.step, batches.train, report)
    if not math.isfinite(loss_total):
        raise LabelfixError(f"epoch {epoch}: the loss is not finite ({loss_total})")
    val = None
    if batches.val is not None:
        report(Progress("validate", epoch, run.epochs, run.steps_per_epoch, run.steps_per_epoch))
        val = trainer.evaluate(batches.val)
    per_class = iou_per_class(val.confusion if val else cm)
    stats = EpochStats(
        epoch=epoch,
        loss=loss_total / run.steps_per_epoch,
        pixel_accuracy=pixel_accuracy(cm),
        mean_iou=mean_iou(cm),
        val_loss=val.loss if val else None,
        val_pixel_accuracy=pixel_accuracy(val.confusion) if val else None,
        val_mean_iou=mean_iou(val.confusion) if val else None,
        iou_per_class=tuple(None if math.isnan(v) else float(v) for v in per_class),
        seconds=time.perf_counter() - started,
        learning_rate=_learning_rate(trainer.optimizer),
    )
    report(
        Progress("epoch", epoch, run.epochs, run.steps_per_epoch, run.steps_per_epoch, stats=stats)
    )
    return stats


def _learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return float(keras.ops.convert_to_numpy(inner.learning_rate))


def _train_epoch(
    epoch: int,
    run: RunConfig,
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


def _record_epoch(outputs: _Outputs, run: RunConfig, history: list[EpochStats]) -> None:
    """After each epoch: TensorBoard scalars, the checkpoint, history.json so far."""
    if outputs.directory is None:
        return
    outputs.summaries.write(history[-1])
    outputs.checkpoints.save(history[-1].epoch, history)
    write_history(outputs.outlet, outputs.directory / "history.json", run, history)


def _finish(
    outputs: _Outputs,
    model: keras.Model,
    run: RunConfig,
    history: list[EpochStats],
    *,
    resumed_from: int,
) -> TrainResult:
    """Save ``model.keras`` and ``history.json`` (unless no output); the result."""
    model_path = history_path = None
    if outputs.directory is not None:
        model_path = outputs.directory / "model.keras"
        compile_for_saving(model, num_classes=run.num_classes, ignore=run.ignore, loss=run.loss,
                           binary=run.binary, class_weights=run.class_weights)  # fmt: skip
        with outputs.outlet.staged(str(model_path)) as staged:
            model.save(staged)
        history_path = write_history(
            outputs.outlet, outputs.directory / "history.json", run, history
        )
    return TrainResult(
        history=tuple(history),
        devices=run.devices,
        precision=run.precision,
        num_replicas=run.num_replicas,
        steps_per_epoch=run.steps_per_epoch,
        class_weights=tuple(run.class_weights) if run.class_weights else None,
        model_path=model_path,
        history_path=history_path,
        checkpoint_dir=outputs.checkpoints.directory if outputs.checkpoints else None,
        log_dir=outputs.summaries.log_dir if outputs.summaries else None,
        resumed_from=resumed_from,
        model=model,
        loss=run.loss,
        binary=run.binary,
    )
