"""What ``labelfix doctor`` found, as frozen dataclasses and one JSON document.

Every :class:`Conclusion` says how sure it is (``high``, ``medium``, ``low``) and on what
evidence; the :class:`CommandSet` s hold the commands to run next as argument lists (one set,
or one per reading when the data cannot decide between two).
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIDENCES = ("high", "medium", "low")


@dataclass(frozen=True)
class Conclusion:
    """One thing the doctor concluded: ``topic`` (``layout``, ``void``, ``classes``, ...),
    what it is, how sure (:data:`CONFIDENCES`), and the evidence."""

    topic: str
    text: str
    confidence: str
    evidence: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "topic": self.topic,
            "text": self.text,
            "confidence": self.confidence,
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True)
class Problem:
    """Something to fix or to know before training: ``kind`` (``unpaired``, ``size``,
    ``exif``, ``mixed``, ``lossy``, ``unreadable``, ``names``, ...), a message, a few files."""

    kind: str
    message: str
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "files": list(self.files)}


@dataclass(frozen=True)
class SplitReport:
    """One split: its folders (and id list), how many pairs and unpaired files it has."""

    name: str
    images: str
    masks: str
    pairs: int
    unpaired: int
    list_file: str | None = None
    image_suffix: str = ""
    mask_suffix: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "images": self.images,
            "masks": self.masks,
            "list": self.list_file,
            "image_suffix": self.image_suffix,
            "mask_suffix": self.mask_suffix,
            "pairs": self.pairs,
            "unpaired": self.unpaired,
        }


@dataclass(frozen=True)
class CommandSet:
    """The commands to run, in order, under one ``assumption`` (None: what the data says)."""

    commands: tuple[tuple[str, ...], ...]
    assumption: str | None = None
    confidence: str | None = None

    def to_dict(self) -> dict:
        return {
            "assumption": self.assumption,
            "confidence": self.confidence,
            "commands": [list(c) for c in self.commands],
        }


@dataclass(frozen=True)
class DoctorReport:
    """Everything ``labelfix doctor ROOT`` concluded about the dataset under ``root``.

    ``ignore`` is None when the data cannot decide the void value (then ``command_sets`` holds
    one set per reading). ``sampled`` of ``masks`` masks were read.
    """

    root: str
    convention: str
    ignore: tuple[int, ...] | None
    num_classes: int | None
    class_names: tuple[str, ...] | None
    splits: tuple[SplitReport, ...]
    conclusions: tuple[Conclusion, ...]
    problems: tuple[Problem, ...]
    command_sets: tuple[CommandSet, ...]
    masks: int = 0
    sampled: int = 0
    examples: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def decided(self) -> bool:
        return self.ignore is not None

    @property
    def commands(self) -> tuple[tuple[str, ...], ...]:
        """Every command of every set, in order (each set writes to its own folders)."""
        return tuple(c for s in self.command_sets for c in s.commands)

    def to_dict(self) -> dict:
        pairs = sum(s.pairs for s in self.splits)
        return {
            "root": self.root,
            "convention": self.convention,
            "ignore": list(self.ignore) if self.ignore is not None else None,
            "decided": self.decided,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "pairs": {
                "total": pairs,
                "unpaired": sum(s.unpaired for s in self.splits),
                "examples": [{"mask": m, "image": i} for m, i in self.examples],
            },
            "splits": [s.to_dict() for s in self.splits],
            "masks": self.masks,
            "sampled": self.sampled,
            "conclusions": [c.to_dict() for c in self.conclusions],
            "problems": [p.to_dict() for p in self.problems],
            "commands": [list(c) for c in self.commands],
            "command_sets": [s.to_dict() for s in self.command_sets],
            "notes": list(self.notes),
        }
