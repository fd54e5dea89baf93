"""The options of a training run, as one frozen dataclass, and what they resolve to.

:class:`TrainConfig` is what a user asks for (``labelfix train`` builds it from its options,
Python code builds it directly); :func:`labelfix.training.loop.train` takes it. It checks
itself when it is made: an option no run can use is a :class:`~labelfix.errors.UsageError`
(the CLI exits 2), before TensorFlow is imported. :class:`RunConfig` is what a run resolves it to
once it has seen the data and the devices (the steps per epoch, the class weights, the
precision): what ``history.json`` and the checkpoints keep.

This module imports neither TensorFlow nor Keras.

>>> config = TrainConfig(num_classes=21, epochs=30, batch_size=16, data_dir="records")
>>> config.crop_size, config.loss
((512, 512), 'ce')
>>> TrainConfig(num_classes=21, epochs=30, batch_size=16, crop_size=(500, 500))
Traceback (most recent call last):
...
labelfix.errors.UsageError: crop_size must be two multiples of 16, got (500, 500)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from labelfix.errors import UsageError
from labelfix.labels import IGNORE_AS
from labelfix.training import LOSSES, MODEL_MULTIPLE, NORMS, PRECISIONS


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`~labelfix.training.loop.train` is asked to do; see its doc.

    Data: ``data_dir`` (a ``labelfix to-tfrecord`` output) with its ``split`` and ``val_split``,
    shards checked against the manifest (sha256 too unless ``verify_digests=False``); or the
    ``dataset``/``val_dataset`` arguments of ``train``. ``ignore`` is the void value the labels
    hold (``labelfix.data`` presents void as -1).

    Run: ``epochs`` counts from the start of the run, resumed or not; ``batch_size`` is the
    global batch, split over the replicas; ``steps_per_epoch`` defaults to examples //
    batch_size. ``output``: where ``model.keras``, ``history.json``, ``checkpoints/`` and
    ``logs/`` go (None: nothing is saved); ``resume`` continues from its newest checkpoint;
    ``weights`` starts from a ``.keras`` or ``.weights.h5`` file.

    Loss and model: ``loss`` one of :data:`~labelfix.training.LOSSES`; ``class_weights`` None,
    ``"auto"`` (median frequency from the manifest) or one weight per class; ``binary`` trains
    2-class masks as one sigmoid channel; ``width``, ``backbone``, ``norm`` shape the model.
    Augmentation: ``crop_size`` (multiples of 16), ``scale_range``, ``flip``. Devices:
    ``precision`` (``"auto"``: float32 on CPU, mixed on GPU), ``devices``, ``jit_compile``,
    ``seed`` (None: random).
    """

    num_classes: int
    epochs: int
    batch_size: int
    # the data
    data_dir: str | os.PathLike | None = None
    split: str = "train"
    val_split: str | None = None
    verify_digests: bool = True
    ignore: int = IGNORE_AS
    steps_per_epoch: int | None = None
    # what the run keeps, and where it starts from
    output: str | os.PathLike | None = None
    resume: bool = False
    weights: str | os.PathLike | None = None
    # the loss and the model
    loss: str = "ce"
    class_weights: str | tuple[float, ...] | None = None
    label_smoothing: float = 0.0
    learning_rate: float = 1e-3
    binary: bool = False
    width: int = 32
    backbone: str | None = None
    norm: str = "group"
    # augmentation
    crop_size: tuple[int, int] = (512, 512)
    scale_range: tuple[float, float] | None = (0.5, 2.0)
    flip: bool = True
    # devices
    precision: str = "auto"
    devices: tuple[str, ...] | None = None
    jit_compile: bool = True
    seed: int | None = 0

    def __post_init__(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        fix("crop_size", _pair(self.crop_size, "crop_size", int))
        if self.scale_range is not None:
            fix("scale_range", _pair(self.scale_range, "scale_range", float))
        if self.devices is not None:
            fix("devices", tuple(self.devices))
        if self.class_weights not in (None, "auto"):
            if isinstance(self.class_weights, str):
                raise UsageError(
                    f"class_weights must be None, 'auto' or numbers, got {self.class_weights!r}"
                )
            fix("class_weights", tuple(float(w) for w in self.class_weights))
        for problem in self.problems():
            raise UsageError(problem)

    def problems(self) -> list[str]:
        """What no run could do with these options, one sentence each (empty when fine)."""
        found = []
        if self.num_classes < 1:
            found.append(f"num_classes must be at least 1, got {self.num_classes}")
        if self.epochs < 1 or self.batch_size < 1:
            found.append(
                f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}"
            )
        if any(c < 1 or c % MODEL_MULTIPLE for c in self.crop_size):
            found.append(
                f"crop_size must be two multiples of {MODEL_MULTIPLE}, got {self.crop_size}"
            )
        if self.loss not in LOSSES:
            found.append(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            found.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.norm not in NORMS:
            found.append(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.binary and self.num_classes != 2:
            found.append(
                "binary=True trains masks of 2 classes (0 background, 1 foreground) as one "
                f"sigmoid channel: num_classes must be 2, got {self.num_classes}"
            )
        if isinstance(self.class_weights, tuple):
            found.extend(filter(None, [weights_problem(self.class_weights, self.num_classes)]))
        if not 0.0 <= self.label_smoothing <= 1.0:
            found.append(f"label_smoothing must be in [0, 1], got {self.label_smoothing}")
        if self.resume and self.output is None:
            found.append("resume=True needs the output directory of the run to continue")
        if self.resume and self.weights is not None:
            found.append("resume=True continues from the checkpoint: it takes no weights")
        return found

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> TrainConfig:
        """A config from the options named like its fields (``labelfix train``'s parameters);
        the others are left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in names})


def weights_problem(weights: Sequence[float], num_classes: int) -> str | None:
    """What is wrong with one weight per class (None: nothing).

    >>> weights_problem((1.0, 2.0, 3.0), 2)
    '3 class weights, expected 2'
    """
    if len(weights) != num_classes:
        return f"{len(weights)} class weights, expected {num_classes}"
    return None


def _pair(values: Sequence, name: str, kind: type) -> tuple:
    try:
        pair = tuple(kind(v) for v in values)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2:
        raise UsageError(f"{name} must be two numbers, got {values!r}")
    return pair


@dataclass(frozen=True)
class RunConfig:
    """One run's settings once resolved: what ``train``'s helpers share, what history.json and
    the checkpoints keep (a resumed run must build the same model)."""

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
    class_names: tuple[str, ...] = ()
    width: int = 32
    backbone: str | None = None
    norm: str = "group"
    loss: str = "ce"
    binary: bool = False

    #: Settings a checkpoint must agree with: they shape the model and the optimizer state, or
    #: (the loss) what its epochs and history.json mean.
    MODEL_KEYS = ("num_classes", "width", "backbone", "norm", "precision", "binary", "loss")
