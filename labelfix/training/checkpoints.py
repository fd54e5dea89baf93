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
from labelfix.training.config import RunConfig
from labelfix.training.history import EpochStats, stats_from_dict

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
        try:  # reads the directory's "checkpoint" state file, when there is one
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, str(self.directory), max_to_keep=KEEP, checkpoint_name="epoch"
            )
        except Exception as err:  # a damaged state file: text_format.ParseError, OpError, ...
            raise LabelfixError(
                f"{self.directory / 'checkpoint'}: damaged checkpoint list ({_reason(err)}); "
                "it names the newest checkpoint: restore it, or train into another --output"
            ) from None

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
        found = sorted(
            (p.name[: -len(".index")] for p in self.directory.glob("epoch-*.index")),
            key=lambda name: int(name[6:]) if name[6:].isdigit() else -1,  # epoch-9 < epoch-10
        )
        if latest is None and found:  # the state file that names the newest is unreadable
            raise LabelfixError(
                f"{self.directory / 'checkpoint'}: damaged or missing checkpoint list, so the "
                f"newest of {', '.join(found)} is unknown; write the line "
                f'model_checkpoint_path: "{found[-1]}" into it to resume from that one'
            )
        if latest is None:
            raise LabelfixError(
                f"{self.directory}: no checkpoint to resume from (a run with this output "
                "writes one after every epoch)"
            )
        self._check_settings()
        import tensorflow as tf

        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (ValueError, AssertionError) as err:
            first = str(err).splitlines()[0]
            raise LabelfixError(f"{latest}: does not fit this model ({first})") from None
        except (tf.errors.OpError, IndexError, OSError) as err:  # cut short, or not one
            raise LabelfixError(self._damaged(latest, err)) from None
        try:
            history = [stats_from_dict(s) for s in json.loads(self.history.numpy().decode())]
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise LabelfixError(self._damaged(latest, err)) from None
        return int(self.epoch.numpy()), history

    def _damaged(self, latest: str, err: BaseException) -> str:
        """``.../epoch-3: damaged checkpoint (...)``, and which earlier ones there are."""
        earlier = [os.path.basename(c) for c in self.manager.checkpoints if c != latest]
        advice = (
            f"; the earlier checkpoints here ({', '.join(earlier)}) are named in "
            f"{self.directory / 'checkpoint'}"
            if earlier
            else ""
        )
        return (
            f"{latest}: damaged checkpoint, cannot resume from it ({_reason(err)}: cut short by "
            f"a full disk or an interrupted copy?){advice}"
        )

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


def _reason(err: BaseException) -> str:
    """The first line of an error (TensorFlow's: its message), at most 200 characters."""
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first if len(first) <= 200 else first[:197] + "..."


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def load_weights(model: Any, path: str | os.PathLike) -> None:
    """Start ``model`` from a local ``.keras`` or ``.weights.h5`` file (no download).

    Raises:
        LabelfixError: the file is missing, of another kind, or holds another architecture.
    """
    import zipfile

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LabelfixError(f"{path}: no such weights file")
    if not path.endswith((".keras", ".weights.h5")):
        raise LabelfixError(f"{path}: expected a .keras or .weights.h5 file")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):  # Keras: BadZipFile traceback
        raise LabelfixError(
            f"{path}: not a readable .keras file (a .keras file is a zip archive; this one is "
            "truncated or of another format)"
        )
    try:
        model.load_weights(path)
    except (OSError, zipfile.BadZipFile) as err:  # h5py: not HDF5, or cut short
        raise LabelfixError(f"{path}: not a readable weights file ({_flat(err)})") from None
    except (ValueError, KeyError) as err:
        raise LabelfixError(f"{path}: does not fit this model ({_flat(err)})") from None


def _flat(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 240 else text[:237] + "..."
