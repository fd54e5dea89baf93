"""Checkpoints of a training run (``OUTPUT/checkpoints/``), resuming from them, and starting
from given weights.

A checkpoint (``tf.train.Checkpoint``, written after every epoch) holds the model's weights,
the optimizer's state (its moments and iteration count, hence the learning-rate schedule's
position), the number of epochs done and their stats; ``run.json`` beside them holds the
settings that shape the model. Resuming restores all of it into a freshly built model and
optimizer, after checking those settings agree; TensorFlow's checkpoint format works under any
``tf.distribute`` strategy.

>>> Checkpoints.describe_mismatch({"width": 32}, {"width": 16})
'width 16 (the checkpoint has 32)'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from labelfix.errors import LabelfixError
from labelfix.training.history import EpochStats, RunConfig, stats_from_dict

__all__ = ["Checkpoints", "load_weights"]

#: Checkpoints kept (the newest); older ones are deleted as new ones are written.
KEEP = 3


class Checkpoints:
    """Save and restore ``model``, ``optimizer``, the epoch and the history under ``directory``."""

    def __init__(self, directory: Path, model: Any, optimizer: Any, run: RunConfig, *, outlet):
        import tensorflow as tf

        self.directory, self.run, self.outlet = Path(directory), run, outlet
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.history = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, epoch=self.epoch, history=self.history
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.directory), max_to_keep=KEEP, checkpoint_name="epoch"
        )

    @property
    def settings_path(self) -> Path:
        return self.directory / "run.json"

    def save(self, epoch: int, history: list[EpochStats]) -> str:
        """Write the checkpoint of ``epoch`` (and ``run.json``); returns its path prefix.

        TensorFlow writes the checkpoint files itself, into the directory the run's door gave;
        ``run.json`` goes through the door."""
        settings = {key: _jsonable(getattr(self.run, key)) for key in RunConfig.MODEL_KEYS}
        data = (json.dumps(settings, indent=2) + "\n").encode()
        self.outlet.write(str(self.settings_path), data)
        self.epoch.assign(epoch)
        self.history.assign(json.dumps([asdict(s) for s in history]))
        return self.manager.save(checkpoint_number=epoch)

    def restore(self) -> tuple[int, list[EpochStats]]:
        """Load the newest checkpoint; ``(epochs done, their stats)``.

        Raises:
            LabelfixError: no checkpoint there, or one made with other model settings.
        """
        latest = self.manager.latest_checkpoint
        if latest is None:
            raise LabelfixError(
                f"{self.directory}: no checkpoint to resume from (a run with this output "
                "writes one after every epoch)"
            )
        self._check_settings()
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (ValueError, AssertionError) as err:
            first = str(err).splitlines()[0]
            raise LabelfixError(f"{latest}: does not fit this model ({first})") from None
        history = [stats_from_dict(s) for s in json.loads(self.history.numpy().decode())]
        return int(self.epoch.numpy()), history

    def _check_settings(self) -> None:
        try:
            saved = json.loads(self.settings_path.read_text())
        except (OSError, ValueError):
            return  # no record: the restore itself checks the shapes
        current = {key: _jsonable(getattr(self.run, key)) for key in RunConfig.MODEL_KEYS}
        differences = self.describe_mismatch(saved, current)
        if differences:
            raise LabelfixError(
                f"{self.directory}: cannot resume with {differences}; "
                "use the settings of the run that wrote the checkpoints"
            )

    @staticmethod
    def describe_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
        """``"width 16 (the checkpoint has 32)"`` for each setting that differs."""
        return ", ".join(
            f"{key.replace('_', '-')} {current.get(key)} (the checkpoint has {value})"
            for key, value in saved.items()
            if key in current and current[key] != value
        )


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def load_weights(model: Any, path: str | os.PathLike) -> None:
    """Start ``model`` from a local ``.keras`` or ``.weights.h5`` file (no download).

    Raises:
        LabelfixError: the file is missing, of another kind, or holds another architecture.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LabelfixError(f"{path}: no such weights file")
    if not path.endswith((".keras", ".weights.h5")):
        raise LabelfixError(f"{path}: expected a .keras or .weights.h5 file")
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError) as err:
        text = " ".join(str(err).split()) or type(err).__name__
        text = text if len(text) <= 240 else text[:237] + "..."
        raise LabelfixError(f"{path}: does not fit this model ({text})") from None
