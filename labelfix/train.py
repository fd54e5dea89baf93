"""The reference training loop for segmentation masks, readable top to bottom.

What it gets right, and where:

* **Input**: TFRecords from ``labelfix to-tfrecord`` through ``labelfix.data.load`` (or any
  ``tf.data`` dataset of ``(image float32 [H, W, 3], mask int [H, W])``), augmented with
  :func:`labelfix.augment.augment`: scale, crop and flip identical for image and mask, nearest
  neighbour only, padded with the ignore value.
* **Loss**: :func:`labelfix.losses.masked_sparse_categorical_crossentropy`, normalised by the
  number of valid pixels in the *global* batch: every replica returns
  ``local_sum / global_valid_count`` and the optimizer sums gradients over replicas, so any
  number of devices gives the single-device loss and gradients.
* **Step**: forward and backward of each replica in one ``tf.function(jit_compile=True)``;
  the tiny cross-replica parts (valid-pixel count, gradient all-reduce inside the optimizer)
  run around it, because collectives inside an XLA cluster are not portable across devices.
* **Devices**: every visible GPU through ``tf.distribute.MirroredStrategy``
  (``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set); the CPU otherwise.
* **Precision**: float32 on CPU; on GPU ``mixed_bfloat16`` (compute capability 8.0+) or
  ``mixed_float16`` with dynamic loss scaling.
* **Metrics**: loss, pixel accuracy and mean IoU with void excluded, from confusion matrices
  summed exactly (int64) on the host.

The library never prints: pass ``progress=`` to watch it (``labelfix train`` draws a bar).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from labelfix._version import __version__
from labelfix.augment import augment, pad_to_multiple
from labelfix.errors import LabelfixError
from labelfix.losses import masked_sparse_categorical_crossentropy, valid_count
from labelfix.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from labelfix.model import build_model

__all__ = [
    "PRECISIONS",
    "EpochStats",
    "Progress",
    "TrainResult",
    "make_eval_step",
    "make_strategy",
    "make_train_step",
    "median_frequency_weights",
    "resolve_precision",
    "train",
    "training_pipeline",
    "validation_pipeline",
]

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")

#: Spatial sizes fed to the model are multiples of this (the decoder's largest stride).
MODEL_MULTIPLE = 16

LossFn = Callable[[Any, Any, Any], Any]


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


def median_frequency_weights(
    class_pixel_counts: Sequence[int], class_image_pixels: Sequence[int] | None = None
) -> tuple[float, ...]:
    """Median-frequency class weights (Eigen & Fergus 2015): ``median(freq) / freq[c]``.

    ``freq[c]`` is class c's pixels divided by the pixels of the images where c occurs
    (``class_image_pixels``, the paper's definition, in the ``to-tfrecord`` manifest), or by all
    labelled pixels when that is not given. The median is over classes that occur; a class with
    no pixel gets 1.0 (it never weighs anything).

    >>> median_frequency_weights([600, 300, 100, 0])
    (0.5, 1.0, 3.0, 1.0)
    >>> median_frequency_weights([600, 300, 100], [1000, 1000, 200])
    (0.833333, 1.666667, 1.0)
    """
    counts = np.asarray(class_pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise LabelfixError(f"class pixel counts must be non-negative, one per class: {counts}")
    present = counts > 0
    if not present.any():
        raise LabelfixError("no labelled pixels: cannot derive class weights")
    if class_image_pixels is None:
        totals = np.full_like(counts, counts.sum())
    else:
        totals = np.asarray(class_image_pixels, dtype=np.float64)
        if totals.shape != counts.shape or (totals[present] < counts[present]).any():
            raise LabelfixError(
                f"class image pixels {totals.tolist()} do not match the pixel counts "
                f"{counts.tolist()}"
            )
    freq = np.where(present, counts / np.where(present, totals, 1.0), 0.0)
    median = float(np.median(freq[present]))
    weights = np.where(present, median / np.where(present, freq, 1.0), 1.0)
    return tuple(round(float(w), 6) for w in weights)


def resolve_precision(precision: str = "auto") -> str:
    """``"auto"``: float32 without a GPU; ``mixed_bfloat16`` when every GPU has compute
    capability 8.0+ (Ampere and later, no loss scaling needed); ``mixed_float16`` otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "float32"
    capabilities = [
        tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        for gpu in gpus
    ]
    return "mixed_bfloat16" if min(capabilities) >= (8, 0) else "mixed_float16"


def make_strategy(devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set, else ``MirroredStrategy`` over
    ``devices`` (default: every visible GPU, or the CPU)."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)


def describe_devices(strategy: tf.distribute.Strategy) -> tuple[str, ...]:
    """``("GPU:0 (NVIDIA H200)", ...)`` or ``("CPU:0",)``: the devices holding replicas."""
    names = []
    gpus = {f"GPU:{i}": gpu for i, gpu in enumerate(tf.config.list_physical_devices("GPU"))}
    for device in strategy.extended.worker_devices:
        spec = tf.DeviceSpec.from_string(device)
        name = f"{spec.device_type}:{spec.device_index}"
        if name in gpus:
            details = tf.config.experimental.get_device_details(gpus[name])
            name += f" ({details.get('device_name', 'GPU')})"
        names.append(name)
    return tuple(names)


def masked_loss(
    *, ignore: int, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0
) -> LossFn:
    """The default ``loss_fn(labels, logits, global_valid_count)`` of the steps below."""

    def loss_fn(labels: Any, logits: Any, global_valid_count: Any) -> Any:
        return masked_sparse_categorical_crossentropy(
            labels,
            logits,
            ignore=ignore,
            class_weights=class_weights,
            label_smoothing=label_smoothing,
            global_valid_count=global_valid_count,
        )

    return loss_fn


def make_train_step(
    *,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    num_classes: int,
    ignore: int = -1,
    loss_fn: LossFn | None = None,
    jit_compile: bool = True,
) -> Callable[[Any], tuple[Any, Any]]:
    """``step(distributed_batch) -> (loss, confusion_matrix)`` for one global batch.

    ``loss`` is the global valid-pixel mean (the sum of the replicas' ``local_sum / global
    count``); the confusion matrix is summed over replicas. Build model and optimizer (call
    ``optimizer.build``) under ``strategy.scope()`` first.
    """
    loss_fn = loss_fn or masked_loss(ignore=ignore)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    # 1. One replica's forward and backward, compiled by XLA.
    @tf.function(jit_compile=jit_compile)
    def forward_backward(images, labels, global_valid_count):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_fn(labels, logits, global_valid_count)
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        grads = tape.gradient(scaled_loss, model.trainable_variables)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        cm = confusion_matrix(labels, predictions, num_classes=num_classes, ignore=ignore)
        return loss, grads, cm

    # 2. Per replica: global valid count in, gradients summed across replicas by the optimizer.
    def replica_step(images, labels):
        ctx = tf.distribute.get_replica_context()
        global_count = ctx.all_reduce(
            tf.distribute.ReduceOp.SUM, valid_count(labels, ignore=ignore)
        )
        loss, grads, cm = forward_backward(images, labels, global_count)
        if scaled and ctx.num_replicas_in_sync > 1:
            # The loss-scale optimizer decides "skip this step" from one replica's gradients;
            # make every replica see a non-finite gradient if any replica has one, so they all
            # skip together (otherwise they would disagree and the all-reduce would hang).
            finite = tf.reduce_all(
                [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
            )
            bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(~finite, tf.float32))
            grads = [
                g if g is None else tf.where(bad > 0, tf.cast(np.nan, g.dtype), g) for g in grads
            ]
        optimizer.apply(grads, model.trainable_variables)
        return loss, cm

    # 3. The whole global batch.
    @tf.function
    def step(batch):
        loss, cm = strategy.run(replica_step, args=batch)
        sum_ = tf.distribute.ReduceOp.SUM
        return strategy.reduce(sum_, loss, axis=None), strategy.reduce(sum_, cm, axis=None)

    return step


def make_eval_step(
    *,
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    num_classes: int,
    ignore: int = -1,
    loss_fn: LossFn | None = None,
) -> Callable[[Any], tuple[Any, Any, Any]]:
    """``step(distributed_batch) -> (loss_sum, valid_count, confusion_matrix)``, inference mode.

    Not XLA-compiled: validation images keep their own (padded) sizes, and XLA would compile
    once per size.
    """
    loss_fn = loss_fn or masked_loss(ignore=ignore)

    def replica_step(images, labels):
        logits = model(images, training=False)
        count = valid_count(labels, ignore=ignore)
        loss_sum = loss_fn(labels, logits, tf.constant(1.0))  # "global count" 1: the plain sum
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        cm = confusion_matrix(labels, predictions, num_classes=num_classes, ignore=ignore)
        return loss_sum, count, cm

    @tf.function(reduce_retracing=True)
    def step(batch):
        outputs = strategy.run(replica_step, args=batch)
        return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, o, axis=None) for o in outputs)

    return step


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
    ignore: int = -1,
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
    """Train a DeepLabV3+ (:func:`labelfix.model.build_model`) on segmentation masks.

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
        precision: ``"auto"`` (float32 on CPU, mixed on GPU; see :func:`resolve_precision`),
            or one of ``"float32"``, ``"mixed_bfloat16"``, ``"mixed_float16"``.
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
    crop_size = tuple(int(c) for c in crop_size)
    if len(crop_size) != 2 or any(c < 1 or c % MODEL_MULTIPLE for c in crop_size):
        raise ValueError(f"crop_size must be two multiples of {MODEL_MULTIPLE}, got {crop_size}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    # First, before any TensorFlow op: MultiWorkerMirroredStrategy must configure the runtime.
    strategy = make_strategy(devices)
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"batch_size {batch_size} is not a multiple of the {replicas} replicas")
    if seed is not None:
        keras.utils.set_random_seed(seed)

    # --- Data --------------------------------------------------------------------------------
    manifest = None
    if dataset is None:
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
    weights = _class_weights(class_weights, manifest, num_classes, data_dir)

    if steps_per_epoch is None:
        steps_per_epoch = _count_examples(dataset, manifest) // batch_size
        if steps_per_epoch < 1:
            raise LabelfixError(
                f"the {split!r} split has fewer examples than one batch of {batch_size}"
            )
    train_batches = training_pipeline(
        dataset,
        batch_size=batch_size,
        crop_size=crop_size,
        ignore=ignore,
        scale_range=scale_range,
        flip=flip,
        seed=seed,
    )
    train_iter = iter(strategy.experimental_distribute_dataset(_shard_by_data(train_batches)))
    val_batches = None
    if val_dataset is not None:
        val_batches = validation_pipeline(val_dataset, batch_size=batch_size, ignore=ignore)

    # --- Model, optimizer, steps ---------------------------------------------------------------
    precision = resolve_precision(precision)
    if precision != "float32" and jit_compile and not tf.config.list_physical_devices("GPU"):
        raise ValueError(
            f"{precision} on the CPU: XLA's CPU backend rejects low-precision convolution "
            "gradients; use precision='float32' (the CPU default) or jit_compile=False"
        )
    with strategy.scope():
        model = build_model(
            num_classes=num_classes,
            input_shape=(*crop_size, 3) if backbone else (None, None, 3),
            width=width,
            backbone=backbone,
            norm=norm,
            dtype=None if precision == "float32" else precision,
        )
        schedule = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=epochs * steps_per_epoch, alpha=0.01
        )
        optimizer = keras.optimizers.Adam(schedule)
        if precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    loss_fn = masked_loss(ignore=ignore, class_weights=weights, label_smoothing=label_smoothing)
    train_step = make_train_step(
        model=model,
        optimizer=optimizer,
        strategy=strategy,
        num_classes=num_classes,
        ignore=ignore,
        loss_fn=loss_fn,
        jit_compile=jit_compile,
    )
    eval_step = make_eval_step(
        model=model, strategy=strategy, num_classes=num_classes, ignore=ignore, loss_fn=loss_fn
    )
    device_names = describe_devices(strategy)
    report(
        Progress(
            "start", epochs=epochs, steps=steps_per_epoch, devices=device_names, precision=precision
        )
    )

    # --- Epochs --------------------------------------------------------------------------------
    history: list[EpochStats] = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        cm = np.zeros((num_classes, num_classes), np.int64)
        loss_total = 0.0
        pending = None  # read step i's results after launching step i+1: the device never waits
        for step in range(1, steps_per_epoch + 2):
            launched = train_step(next(train_iter)) if step <= steps_per_epoch else None
            if pending is not None:
                loss, batch_cm = pending
                loss_total += float(loss)
                cm += batch_cm.numpy().astype(np.int64)
                done = step - 1
                report(
                    Progress("step", epoch, epochs, done, steps_per_epoch, loss=loss_total / done)
                )
            pending = launched
        if not math.isfinite(loss_total):
            raise LabelfixError(f"epoch {epoch}: the loss is not finite ({loss_total})")
        val = None
        if val_batches is not None:
            report(Progress("validate", epoch, epochs, steps_per_epoch, steps_per_epoch))
            val = _evaluate(eval_step, strategy, val_batches, num_classes)
        per_class = iou_per_class(val[1] if val else cm)
        stats = EpochStats(
            epoch=epoch,
            loss=loss_total / steps_per_epoch,
            pixel_accuracy=pixel_accuracy(cm),
            mean_iou=mean_iou(cm),
            val_loss=val[0] if val else None,
            val_pixel_accuracy=pixel_accuracy(val[1]) if val else None,
            val_mean_iou=mean_iou(val[1]) if val else None,
            iou_per_class=tuple(None if math.isnan(v) else float(v) for v in per_class),
            seconds=time.perf_counter() - started,
        )
        history.append(stats)
        report(Progress("epoch", epoch, epochs, steps_per_epoch, steps_per_epoch, stats=stats))

    # --- Save ----------------------------------------------------------------------------------
    model_path = history_path = None
    if output is not None:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        model_path = out / "model.keras"
        model.save(model_path)
        history_path = out / "history.json"
        record = {
            "labelfix_version": __version__,
            "num_classes": num_classes,
            "ignore": ignore,
            "class_weights": list(weights) if weights else None,
            "batch_size": batch_size,
            "crop_size": list(crop_size),
            "steps_per_epoch": steps_per_epoch,
            "precision": precision,
            "devices": list(device_names),
            "num_replicas": replicas,
            "epochs": [asdict(s) for s in history],
        }
        history_path.write_text(json.dumps(record, indent=2) + "\n")
    return TrainResult(
        history=tuple(history),
        devices=device_names,
        precision=precision,
        num_replicas=replicas,
        steps_per_epoch=steps_per_epoch,
        class_weights=tuple(weights) if weights else None,
        model_path=model_path,
        history_path=history_path,
        model=model,
    )


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


def training_pipeline(
    dataset: tf.data.Dataset,
    *,
    batch_size: int,
    crop_size: tuple[int, int],
    ignore: int = -1,
    scale_range: Sequence[float] | None = (0.5, 2.0),
    flip: bool = True,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Shuffle, repeat, augment (one stateless seed per example), batch with static shapes.

    Random scale, crop to ``crop_size`` (padding masks with ``ignore``) and flip, applied alike
    to image and mask; the batches have static shapes, as Keras' ``fit`` needs for this model.

    >>> batches = training_pipeline(load("records", "train"), batch_size=8,
    ...                             crop_size=(512, 512))           # doctest: +SKIP
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = dataset.shuffle(256, seed=seed, reshuffle_each_iteration=True).repeat()

    def augment_one(example_seed, example):
        image, mask = example
        return augment(
            tf.cast(image, tf.float32),
            mask,
            seed=example_seed,
            crop_size=crop_size,
            ignore=ignore,
            scale_range=scale_range,
            flip=flip,
        )

    dataset = tf.data.Dataset.zip((seeds, dataset)).map(
        augment_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None
    )
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def validation_pipeline(
    dataset: tf.data.Dataset, *, batch_size: int, ignore: int
) -> tf.data.Dataset:
    """Full images, padded (mask with ``ignore``) to multiples of the model stride; no resizing."""

    def pad(image, mask):
        return pad_to_multiple(
            tf.cast(image, tf.float32), mask, multiple=MODEL_MULTIPLE, ignore=ignore
        )

    dataset = dataset.map(pad, num_parallel_calls=tf.data.AUTOTUNE)
    mask_dtype = dataset.element_spec[1].dtype
    return dataset.padded_batch(
        batch_size, padding_values=(0.0, tf.cast(ignore, mask_dtype))
    ).prefetch(tf.data.AUTOTUNE)


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shard by element across workers: the pipelines are not file-shardable (a record count
    assertion and a zipped random stream sit in them), and TensorFlow says so on every epoch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _evaluate(
    eval_step: Callable, strategy: tf.distribute.Strategy, batches: tf.data.Dataset, n: int
) -> tuple[float, np.ndarray]:
    """``(valid-pixel mean loss, int64 confusion matrix)`` over the whole validation set."""
    loss_sum, count = 0.0, 0.0
    cm = np.zeros((n, n), np.int64)
    for batch in strategy.experimental_distribute_dataset(_shard_by_data(batches)):
        batch_loss, batch_count, batch_cm = eval_step(batch)
        loss_sum += float(batch_loss)
        count += float(batch_count)
        cm += batch_cm.numpy().astype(np.int64)
    return loss_sum / max(count, 1.0), cm
