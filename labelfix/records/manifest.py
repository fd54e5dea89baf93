"""The manifest beside the shards (``{split}.labelfix.json``): how masks are stored, which value
is void, per-class counts, and every shard with its size and sha256.

>>> manifest_path("tfrecords", "val")
'tfrecords/val.labelfix.json'
>>> m = read_manifest("tfrecords", "train")                  # doctest: +SKIP
>>> m["num_classes"], m["ignore"], m["ignore_as"], m["mask_encoding"]   # doctest: +SKIP
(21, 255, -1, 'png')
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from labelfix._version import __version__
from labelfix.errors import LabelfixError
from labelfix.labels import IGNORE_AS
from labelfix.records.example import FEATURES
from labelfix.records.spec import WriteSpec

MANIFEST_SUFFIX = ".labelfix.json"
MANIFEST_FORMAT = "labelfix-tfrecord"
MANIFEST_VERSION = 1


def manifest_path(output: str | os.PathLike, split: str) -> str:
    return os.path.join(os.fspath(output), f"{split}{MANIFEST_SUFFIX}")


@dataclass
class RecordTally:
    """Per-class pixel and image counts over the written records (folded, or merged)."""

    num_classes: int
    records: int = 0
    class_pixels: list[int] = field(default_factory=list)
    class_images: list[int] = field(default_factory=list)
    class_image_pixels: list[int] = field(default_factory=list)
    ignore_pixels: int = 0
    passthrough: int = 0
    #: The class colours of the palette masks (``[[r, g, b], ...]``) while they all agree;
    #: ``palette_conflict`` once two differ (the manifest then records none).
    palette: list | None = None
    palette_conflict: bool = False

    def __post_init__(self) -> None:
        for name in ("class_pixels", "class_images", "class_image_pixels"):
            if not getattr(self, name):
                setattr(self, name, [0] * self.num_classes)

    def add(self, result) -> None:
        """Count one prepared record (:class:`labelfix.records.prepare.Prepared`)."""
        self.records += 1
        for c, n in zip(result.classes, result.counts, strict=True):
            self.class_pixels[c] += n
        for c in set(result.classes):
            self.class_images[c] += 1
            self.class_image_pixels[c] += result.height * result.width
        self.ignore_pixels += result.ignore_pixels
        self.passthrough += result.passthrough
        if result.palette is not None:
            self._see_palette([list(c) for c in result.palette], False)

    def _see_palette(self, palette: list | None, conflict: bool) -> None:
        if conflict or (palette is not None and self.palette not in (None, palette)):
            self.palette_conflict = True
        elif palette is not None:
            self.palette = palette

    def merge(self, other: RecordTally) -> None:
        self.records += other.records
        for name in ("class_pixels", "class_images", "class_image_pixels"):
            mine, theirs = getattr(self, name), getattr(other, name)
            for c in range(self.num_classes):
                mine[c] += theirs[c]
        self.ignore_pixels += other.ignore_pixels
        self.passthrough += other.passthrough
        self._see_palette(other.palette, other.palette_conflict)


def build_manifest(spec: WriteSpec, tally: RecordTally) -> dict:
    """The manifest of a finished run (its ``shards`` are filled in when they are published)."""
    label_map = spec.label_map
    stored_ignore, mask_dtype = spec.mask_storage()
    names = label_map.class_names
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "labelfix_version": __version__,
        "split": spec.split,
        "num_records": tally.records,
        "num_classes": spec.num_classes,
        "class_names": list(names) if names and len(names) == spec.num_classes else None,
        "ignore": stored_ignore,
        "ignore_as": IGNORE_AS if stored_ignore is not None else None,
        "mask_encoding": spec.mask_encoding,
        "mask_dtype": mask_dtype,
        "compression": spec.compression,
        "readers": spec.readers(),
        "feature_keys": {name: k for name, (k, _) in FEATURES.items()},
        "class_pixel_counts": tally.class_pixels,
        "class_image_counts": tally.class_images,
        "class_image_pixels": tally.class_image_pixels,
        "ignore_pixels": tally.ignore_pixels,
        "palette": _palette(spec, tally),
        "mapping": label_map.to_dict(),
        "shuffle": bool(spec.shuffle),
        "seed": spec.seed if spec.shuffle else None,
        "shards": [],
    }


def _palette(spec: WriteSpec, tally: RecordTally) -> list | None:
    """One ``[r, g, b]`` per class, for drawing predictions in the dataset's own colours: the
    colormap's first colour of each id (colour masks), or the palette every palette mask shares
    (ids kept as read); None otherwise."""
    if spec.colours is not None:
        colours: dict[int, list[int]] = {}
        cmap = spec.colours.colormap
        for i, colour in zip(cmap.ids, cmap.colours, strict=True):
            colours.setdefault(int(i), [int(c) for c in colour])
        if all(k in colours for k in range(spec.num_classes)):
            return [colours[k] for k in range(spec.num_classes)]
        return None
    if tally.palette_conflict or tally.palette is None:
        return None
    return tally.palette


def read_manifest(path: str | os.PathLike, split: str = "train") -> dict:
    """The manifest of ``split`` as a dict, plus ``directory`` (where its shards are).

    ``path`` is the output directory, the manifest file itself, or a shard file pattern
    (``out/train-*.tfrecord``: the manifest beside it is read).

    """
    path = os.fspath(path)
    if path.endswith(MANIFEST_SUFFIX) and os.path.isfile(path):
        file = path
    elif os.path.isdir(path):
        file = manifest_path(path, split)
    else:
        file = manifest_path(os.path.dirname(path) or ".", split)
    directory = os.path.dirname(os.path.abspath(file))
    try:
        with open(file, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        found = sorted(
            n[: -len(MANIFEST_SUFFIX)] for n in _listdir(directory) if n.endswith(MANIFEST_SUFFIX)
        )
        hint = (
            f" (splits there: {', '.join(found)})"
            if found
            else (" (write one with labelfix to-tfrecord)")
        )
        raise LabelfixError(f"{file}: no manifest for split {split!r}{hint}") from None
    except OSError as err:
        raise LabelfixError(f"{file}: cannot read the manifest ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise LabelfixError(f"{file}: invalid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise LabelfixError(f"{file}: not a labelfix TFRecord manifest")
    if manifest.get("format_version", 0) > MANIFEST_VERSION:
        raise LabelfixError(
            f"{file}: manifest format {manifest['format_version']} is newer than this labelfix "
            f"reads ({MANIFEST_VERSION}); upgrade labelfix"
        )
    missing = [
        k
        for k in ("num_classes", "ignore", "mask_encoding", "mask_dtype", "compression", "shards")
        if k not in manifest
    ]
    if missing:
        raise LabelfixError(f"{file}: manifest lacks {', '.join(missing)}")
    manifest["directory"] = directory
    manifest["manifest_path"] = file
    return manifest


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []
