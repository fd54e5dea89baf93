"""The commands ``labelfix doctor`` prints: argument lists, every option filled in for the data.

Per reading of the values (:class:`~labelfix.checks.void.Reading`): ``repair`` when the masks
are lossy, ``to-tfrecord`` and ``verify`` per split, ``train`` on the training split (validated
on ``val`` when there is one). ``to-tfrecord`` applies the mapping as it writes, so no ``remap``
is needed. Two readings (the data cannot decide) write to separate folders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from labelfix.checks.void import Reading
from labelfix.doctor.conventions import Findings
from labelfix.doctor.report import CommandSet

#: Raw class ids (before the preset's mapping) of the presets: what ``repair`` checks against.
_RAW_CLASSES = {"voc": 21, "ade20k": 151, "cityscapes": 34}
EPOCHS = 30
#: Batch size of the train command (smaller when the training split has fewer pairs).
BATCH_SIZE = 8


@dataclass(frozen=True)
class SplitPlan:
    """One split to write: its name, folders, id list, naming options, unpaired files."""

    name: str
    images: str
    masks: str
    list_file: str | None
    naming: tuple[str, ...]
    unpaired: int
    pairs: int = 0


def _value(v: int) -> str:
    return f"{v}"


def _ignore_options(values: Sequence[int]) -> list[str]:
    # "--ignore=-1": a value starting with "-" is never mistaken for an option
    return [t for v in values for t in ((f"--ignore={v}",) if v < 0 else ("--ignore", str(v)))]


def mapping_options(reading: Reading, findings: Findings) -> list[str]:
    """The to-tfrecord options that read the masks as ``reading`` says."""
    if reading.preset is not None:
        out = ["--preset", reading.preset]
        if reading.preset in ("voc", "ade20k"):
            out += ["--unmapped", "error"]  # a value no rule names is an error, never void
    else:
        out = ["--num-classes", str(reading.num_classes)]
        out += _ignore_options(reading.ignore)
        out += [f"--map={a}:{b}" for a, b in reading.maps]
        names = findings.names
        if findings.names_file is not None and names and len(names) == reading.num_classes:
            out += ["--class-names", findings.names_file]
    if findings.colormap is not None:
        out += ["--colormap", findings.colormap]
    return out


def _tag(reading: Reading, readings: Sequence[Reading]) -> str:
    """A folder suffix that tells the readings apart: ``255-void``, ``255-class``."""
    values = sorted(
        {v for r in readings for v in r.ignore} | {a for r in readings for a, _ in r.maps}
    )
    value = values[0] if values else 0
    return f"{value}-void" if value in reading.ignore else f"{value}-class"


def repair_command(reading: Reading, masks: str, repaired: str) -> list[str]:
    """``labelfix repair`` in the raw values' terms (before any mapping)."""
    if reading.preset is not None:
        raw = _RAW_CLASSES[reading.preset]
        void = [0] if reading.preset == "ade20k" else [255]
        n = raw
    else:
        void = list(reading.ignore) + [a for a, _ in reading.maps]
        n = reading.num_classes - len(reading.maps)
    return ["labelfix", "repair", masks, "--num-classes", str(max(n, 1)),
            *_ignore_options(void), "--output", repaired]  # fmt: skip


def build(
    findings: Findings,
    splits: Sequence[SplitPlan],
    *,
    masks_root: str,
    output: str,
    model: str,
) -> tuple[CommandSet, ...]:
    """One :class:`CommandSet` per reading of the values."""
    readings = findings.guess.readings
    sets = []
    for reading in readings:
        tag = "" if len(readings) == 1 else "-" + _tag(reading, readings)
        out, trained = output + tag, model + tag
        commands: list[list[str]] = []
        rebase = {}
        if findings.repair:
            repaired = os.path.normpath(masks_root) + "-repaired" + tag
            commands.append(repair_command(reading, masks_root, repaired))
            for split in splits:
                rel = os.path.relpath(split.masks, masks_root)
                rebase[split.name] = os.path.normpath(os.path.join(repaired, rel))
        options = mapping_options(reading, findings)
        for split in splits:
            command = ["labelfix", "to-tfrecord", "--images", split.images,
                       "--masks", rebase.get(split.name, split.masks), "--output", out,
                       "--split", split.name, *options, *split.naming]  # fmt: skip
            if split.list_file is not None:
                command += ["--list", split.list_file]
            if split.unpaired:
                command.append("--skip-unpaired")
            if findings.exif is not None:
                command += ["--exif", findings.exif]
            commands.append(command)
        for split in splits:
            commands.append(["labelfix", "verify", out, "--split", split.name])
        names = [s.name for s in splits]
        train_split = "train" if "train" in names else names[0]
        crop = f"{findings.crop[0]}x{findings.crop[1]}"
        batch = max(1, min(BATCH_SIZE, *(s.pairs for s in splits if s.name == train_split)))
        command = ["labelfix", "train", out, "--num-classes", str(reading.num_classes),
                   "--epochs", str(EPOCHS), "--batch-size", str(batch),
                   "--crop-size", crop, "--output", trained]  # fmt: skip
        if train_split != "train":
            command += ["--split", train_split]
        if "val" in names and train_split != "val":
            command += ["--val-split", "val"]
        if reading.binary:
            command.append("--binary")
        commands.append(command)
        sets.append(
            CommandSet(
                tuple(tuple(c) for c in commands),
                assumption=None if len(readings) == 1 else reading.assumption,
                confidence=findings.guess.confidence,
            )
        )
    return tuple(sets)
