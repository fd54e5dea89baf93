"""The manifest beside the shards (``{split}.labelfix.json``): how masks are stored, which value
is void, per-class counts, and every shard with its size and sha256.

>>> manifest_path("tfrecords", "val")
'tfrecords/val.labelfix.json'

On a dataset of your own::

    m = read_manifest("tfrecords", "train")
    m["num_classes"], m["ignore"], m["ignore_as"], m["mask_encoding"]
    # -> (21, 255, -1, 'png')
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field

from labelfix._version import __version__
from labelfix.errors import LabelfixError
from labelfix.io import fs
from labelfix.labels import IGNORE_AS
from labelfix.records.example import FEATURES
from labelfix.records.spec import COMPRESSIONS, WriteSpec

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
    #: images stored turned as their EXIF orientation says (not the file's bytes)
    rotated: int = 0
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
        self.rotated += result.image is not None
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
        self.rotated += other.rotated
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
        "exif": spec.exif,
        "images_rotated": tally.rotated,
        "shuffle": bool(spec.shuffle),
        "seed": spec.seed if spec.shuffle else None,
        "filename": spec.filename,
        "from_records": list(spec.records) if spec.records is not None else None,
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
    elif (
        not os.path.exists(path) and not glob.has_magic(path) and not path.endswith(MANIFEST_SUFFIX)
    ):
        # a directory name that is not there: say so, not "./train.labelfix.json"
        where = os.path.abspath(path)
        raise LabelfixError(
            f"{path}: no such directory of records ({where}; relative paths start from the "
            f"working directory, {os.getcwd()}); write it with labelfix to-tfrecord"
        )
    else:
        file = manifest_path(os.path.dirname(path) or ".", split)
    directory = os.path.dirname(os.path.abspath(file))
    try:
        manifest = json.loads(fs.read_bytes(file))  # a FIFO is refused, never opened
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
    except UnicodeDecodeError:
        raise LabelfixError(f"{file}: invalid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise LabelfixError(f"{file}: invalid JSON (nested too deeply)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise LabelfixError(f"{file}: not a labelfix TFRecord manifest")
    version = manifest.get("format_version", 0)
    if not _is_int(version):
        raise LabelfixError(
            f"{file}: not a valid labelfix manifest (format_version: {_shown(version)} is not "
            "an integer)"
        )
    if version > MANIFEST_VERSION:
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
    problem = manifest_problem(manifest)
    if problem is not None:
        raise LabelfixError(f"{file}: not a valid labelfix manifest ({problem})")
    manifest["directory"] = directory
    manifest["manifest_path"] = file
    return manifest


#: The most classes a manifest may claim (readers make per-class arrays of this length).
MAX_CLASSES = 1 << 24
#: The mask dtypes each encoding stores (:meth:`~labelfix.records.spec.WriteSpec.mask_storage`).
MASK_DTYPES = {"png": ("uint8", "uint16"), "raw": ("int8", "int16", "int32")}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _counts_problem(name: str, value) -> str | None:
    """What is wrong with a list of non-negative integer counts.

    Its length is not checked here: a manifest whose ``num_classes`` was edited still reads, so
    that verify and train can name the records that disagree with it; verify also names the
    count list, and train's class weights check their length.
    """
    if not isinstance(value, list):
        return f"{name}: expected a list of counts, got {_shown(value)}"
    for i, n in enumerate(value):
        if not _is_int(n) or n < 0:
            return f"{name}[{i}]: expected a count (an integer >= 0), got {_shown(n)}"
    return None


def _shard_problem(i: int, shard) -> str | None:
    where = f"shards[{i}]"
    if not isinstance(shard, dict):
        return f"{where}: expected an object with file, records, bytes, sha256"
    name = shard.get("file")
    if not isinstance(name, str) or not name:
        return f"{where}.file: expected a file name, got {_shown(name)}"
    if "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        return f"{where}.file: {name!r} is not a plain file name (no directory parts)"
    for key in ("records", "bytes"):
        if not _is_int(shard.get(key)) or shard[key] < 0:
            return f"{where}.{key}: expected an integer >= 0, got {_shown(shard.get(key))}"
    if not isinstance(shard.get("sha256"), str):
        return f"{where}.sha256: expected a hex digest, got {_shown(shard.get('sha256'))}"
    return None


def manifest_problem(manifest: dict) -> str | None:
    """``FIELD: what is wrong`` for the first field of ``manifest`` that its readers (verify,
    labelfix.data, train, evaluate, predict) could not use as it is; None when all are fine.

    >>> manifest_problem({"num_classes": -3, "ignore": None, "shards": []})
    'num_classes: expected an integer 1..16777216, got -3'
    """
    num_classes = manifest.get("num_classes")
    if not _is_int(num_classes) or not 1 <= num_classes <= MAX_CLASSES:
        return f"num_classes: expected an integer 1..{MAX_CLASSES}, got {_shown(num_classes)}"
    for key in ("ignore", "ignore_as"):
        value = manifest.get(key)
        if value is not None and not _is_int(value):
            return f"{key}: expected an integer or null, got {_shown(value)}"
    encoding = manifest.get("mask_encoding")
    if encoding not in MASK_DTYPES:
        return f"mask_encoding: expected one of {', '.join(MASK_DTYPES)}, got {_shown(encoding)}"
    dtype = manifest.get("mask_dtype")
    if dtype not in MASK_DTYPES[encoding]:
        known = ", ".join(MASK_DTYPES[encoding])
        return f"mask_dtype: expected one of {known} for {encoding} masks, got {_shown(dtype)}"
    if manifest.get("compression") not in COMPRESSIONS:
        got = _shown(manifest.get("compression"))
        return f"compression: expected one of {', '.join(COMPRESSIONS)}, got {got}"
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return f"shards: expected a list of shards, got {_shown(shards)}"
    seen: set[str] = set()
    for i, shard in enumerate(shards):
        problem = _shard_problem(i, shard)
        if problem is not None:
            return problem
        if shard["file"] in seen:
            return f"shards[{i}].file: {shard['file']!r} is listed twice"
        seen.add(shard["file"])
    for key in ("num_records", "ignore_pixels"):
        value = manifest.get(key)
        if value is not None and (not _is_int(value) or value < 0):
            return f"{key}: expected an integer >= 0, got {_shown(value)}"
    for key in ("class_pixel_counts", "class_image_counts", "class_image_pixels"):
        if manifest.get(key) is not None:
            problem = _counts_problem(key, manifest[key])
            if problem is not None:
                return problem
    names = manifest.get("class_names")  # of another length: readers fall back to "class K"
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        return f"class_names: expected null or a list of names (strings), got {_shown(names)}"
    palette = manifest.get("palette")
    if palette is not None and (
        not isinstance(palette, list)
        or not all(
            isinstance(c, list) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c)
            for c in palette
        )
    ):
        return f"palette: expected null or a list of [r, g, b] (0..255), got {_shown(palette)}"
    return None


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []
