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

from labelfix.errors import LabelfixError
from labelfix.io.door import Door, Outlet, Rules
from labelfix.io.inputs import watch_inputs
from labelfix.labels import IGNORE_AS
from labelfix.labels.weights import median_frequency_weights
from labelfix.metrics import iou_per_class, mean_iou, pixel_accuracy
from labelfix.training.checkpoints import Checkpoints, load_weights
from labelfix.training.devices import describe_devices, make_strategy, resolve_precision
from labelfix.training.history import (
    EpochStats,
    Progress,
    RunConfig,
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

__all__ = ["EpochStats", "Progress", "TrainResult", "train"]


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
    resume: bool = False,
    weights: str | os.PathLike | None = None,
    verify_digests: bool = True,
    ignore: int = IGNORE_AS,
    class_weights: str | Sequence[float] | None = None,
    crop_size: Sequence[int] = (512, 512),
    scale_range: Sequence[float] | None = (0.5, 2.0),
    flip: bool = True,
    learning_rate: float = 1e-3,
    label_smoothing: float = 0.0,
    loss: str = "ce",
    binary: bool = False,
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
        epochs, batch_size: ``epochs`` counts from the start of the run, resumed or not;
            ``batch_size`` is the *global* batch, split over the replicas (a multiple of their
            number).
        data_dir: a ``labelfix to-tfrecord`` output; ``val_split`` names the validation split.
            Shard sizes are checked against the manifest, and sha256 digests unless
            ``verify_digests=False``.
        dataset, val_dataset: instead of ``data_dir``, unbatched ``tf.data`` datasets of
            ``(image float32 [H, W, 3], mask int [H, W][, name string])`` whose void value is
            ``ignore``.
        steps_per_epoch: default: examples // batch_size (from the dataset's cardinality or the
            manifest, counting the records if neither knows).
        output: a directory for ``model.keras``, ``history.json``, ``checkpoints/`` and
            ``logs/`` (created); None saves nothing.
        resume: continue from the newest checkpoint under ``output`` (weights, optimizer state,
            epoch counter and history); the augmentation draws new random numbers.
        weights: start from this local ``.keras`` or ``.weights.h5`` file (same architecture).
        ignore: the void value the masks hold (``labelfix.data`` presents void as -1).
        class_weights: None, ``"auto"`` (median frequency from the manifest's
            ``class_pixel_counts``), or one weight per class (focal: its per-class alpha).
        loss: one of :data:`~labelfix.training.LOSSES`: ``"ce"`` (cross-entropy), ``"focal"``,
            ``"dice"`` (soft Dice, per-class sums over the global batch) or ``"ce+dice"``; see
            :class:`~labelfix.training.steps.TrainingLoss`.
        binary: masks of 2 classes (``num_classes=2``: 0 background, 1 foreground) trained as
            one sigmoid channel; the model outputs ``[B, H, W, 1]`` logits, a pixel is
            foreground where its logit is > 0, and the metrics are those of the 2 classes,
            as for a 2-class softmax run.
        crop_size: training crop ``(height, width)``, multiples of 16; images are scaled by
            ``scale_range``, padded (mask with ``ignore``) and cropped to it.
        precision: ``"auto"`` (float32 on CPU, mixed on GPU; see
            :func:`~labelfix.training.devices.resolve_precision`), or one of ``"float32"``,
            ``"mixed_bfloat16"``, ``"mixed_float16"``.
        devices: devices for ``MirroredStrategy``; default every visible GPU (or the CPU).
        seed: seeds Keras/TF/NumPy globally (model init) and the augmentation; None: random.
        progress: called with a :class:`Progress` at start, after every step and every epoch.

    Returns:
        A :class:`TrainResult`; ``history`` has loss, pixel accuracy, mean and per-class IoU
        (void excluded) per epoch.

    Raises:
        LabelfixError: missing, changed or inconsistent data (a shard that differs from its
            manifest, a label that is neither void nor a class, a damaged record: each named),
            or nothing to resume from.
    """
    report = progress or (lambda event: None)
    crop_size = _check_sizes(crop_size, epochs=epochs, batch_size=batch_size)
    _check_loss(loss, binary=binary, num_classes=num_classes)
    if resume and output is None:
        raise ValueError("resume=True needs the output directory of the run to continue")
    if resume and weights is not None:
        raise ValueError("resume=True continues from the checkpoint: it takes no weights")
    if not resume:
        _refuse_earlier_run(output)
    watch_inputs([data_dir])  # records being written, or rewritten, stop the run now
    strategy = _strategy(devices, batch_size=batch_size, seed=seed)
    source = _read(
        dataset,
        val_dataset,
        data_dir,
        split,
        val_split,
        num_classes=num_classes,
        ignore=ignore,
        digests=verify_digests,
    )
    if steps_per_epoch is None:
        steps_per_epoch = _steps_per_epoch(source, batch_size=batch_size, split=split)
    run = RunConfig(
        num_classes=num_classes,
        ignore=ignore,
        epochs=epochs,
        batch_size=batch_size,
        crop_size=crop_size,
        steps_per_epoch=steps_per_epoch,
        class_weights=_class_weights(class_weights, source.manifest, num_classes, data_dir),
        precision=_check_precision(precision, jit_compile=jit_compile),
        devices=describe_devices(strategy),
        num_replicas=strategy.num_replicas_in_sync,
        class_names=class_names((source.manifest or {}).get("class_names"), num_classes),
        width=width,
        backbone=backbone,
        norm=norm,
        loss=loss,
        binary=binary,
    )
    model, optimizer = _build(strategy, run, learning_rate=learning_rate)
    if weights is not None:
        load_weights(model, weights)
    door = Door(Rules.of("train", inputs=[data_dir, weights]))
    with door:
        outlet = door.outlet(output) if output is not None else None
        outputs = _outputs(outlet, model, optimizer, run, validation=source.val_dataset is not None)
        return _train_epochs(
            outputs, model, optimizer, run, source, strategy, resume, epochs, report,
            dict(crop_size=crop_size, scale_range=scale_range, flip=flip, seed=seed),
            dict(label_smoothing=label_smoothing, jit_compile=jit_compile),
        )  # fmt: skip


def _train_epochs(
    outputs, model, optimizer, run, source, strategy, resume, epochs, report, augmentation,
    step_options,
) -> TrainResult:  # fmt: skip
    """Restore (``resume``), then train epoch after epoch, recording each; the result."""
    done, history = outputs.checkpoints.restore() if resume else (0, [])
    seed = augmentation["seed"]
    augmentation["seed"] = seed if seed is None or not done else seed + 7919 * done
    batches = _batches(strategy, source, run, **augmentation)
    trainer = _trainer(model, optimizer, strategy, run, **step_options)
    report(
        Progress(
            "start",
            done,
            epochs,
            steps=run.steps_per_epoch,
            devices=run.devices,
            precision=run.precision,
        )
    )
    with read_errors(source.manifests), outputs.summaries or contextlib.nullcontext():
        for epoch in range(done + 1, epochs + 1):
            history.append(_run_epoch(epoch, run, trainer, batches, report))
            _record_epoch(outputs, run, history)
    return _finish(outputs, model, run, history, resumed_from=done)


def _refuse_earlier_run(output: str | os.PathLike | None) -> None:
    """A fresh run never replaces an earlier run's ``model.keras`` or mixes its checkpoints
    with that run's (a hostile-user pass found both happening silently)."""
    if output is None:
        return
    directory = Path(output)
    found = [
        name
        for name in ("model.keras", "checkpoints", "history.json")
        if (directory / name).exists()
    ]
    if found:
        raise ValueError(
            f"{directory} holds an earlier run ({', '.join(found)}): resume it (--resume) or "
            "choose a new output directory"
        )


def _check_sizes(crop_size: Sequence[int], *, epochs: int, batch_size: int) -> tuple[int, int]:
    crop = tuple(int(c) for c in crop_size)
    if len(crop) != 2 or any(c < 1 or c % MODEL_MULTIPLE for c in crop):
        raise ValueError(f"crop_size must be two multiples of {MODEL_MULTIPLE}, got {crop}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    return crop[0], crop[1]


def _check_loss(loss: str, *, binary: bool, num_classes: int) -> None:
    TrainingLoss(kind=loss)  # an unknown loss: its ValueError, before anything is built
    if binary and num_classes != 2:
        raise ValueError(
            f"binary=True trains masks of 2 classes (0 background, 1 foreground) as one sigmoid "
            f"channel: num_classes must be 2, got {num_classes}"
        )


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
    *,
    num_classes: int,
    ignore: int,
    digests: bool,
) -> _Source:
    """The datasets given, or the splits of ``data_dir``: manifest checked against
    ``num_classes``, shards against the manifest, records named by shard and index."""
    if dataset is not None:
        return _Source(dataset, val_dataset, None)
    if data_dir is None:
        raise ValueError("pass data_dir or dataset")
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
        raise ValueError(
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
