"""TFRecords labelfix did not write: find the shards, read each record's mask and image, and name
the traps their consumers will hit.

Other tools' records (DeepLab's ``build_voc2012_data.py``, Model Garden's
``tf_example_builder.py``, your own code) come without a manifest: the keys are
:class:`~labelfix.records.example.RecordKeys` (DeepLab / Model Garden by default), compression is
told by the first bytes, and each mask is read from its bytes exactly as a mask file is
(:func:`~labelfix.labels.colormap.read_label_mask`: a palette PNG as its indices), then scanned
by the same :func:`~labelfix.checks.scan.scan_mask` as a file. What differs is what a record's
storage means: the records go straight to TensorFlow, whose decoders
(``decode_png``/``decode_image(channels=1)``, uint8) read a palette PNG as the luminance of its
colours and a 16-bit PNG as its high bytes. Those are errors here (:func:`storage_trap`), not
the warnings they are for mask files.

>>> where("tfrecord/val-00000-of-00004.tfrecord", 3, "2007_000033")
'tfrecord/val-00000-of-00004.tfrecord: record 3 (2007_000033)'
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from labelfix.checks.scan import FileReport, scan_mask
from labelfix.errors import LabelfixError, UnreadableMask
from labelfix.io import fs
from labelfix.io.images import decode_problem, image_header, quick_header
from labelfix.io.masks import KINDS, Mask
from labelfix.io.png import PNG_SIGNATURE
from labelfix.labels.colormap import ColourPolicy, read_label_mask
from labelfix.labels.luminance import tf_luminance
from labelfix.records.example import RecordKeys, parse_example
from labelfix.records.framing import CorruptRecord, masked_crc32c, read_records

#: File names taken for shards in a directory: ``*.tfrecord``-like suffixes, or the sharded
#: ``NAME-NNNNN-of-NNNNN`` names DeepLab and Model Garden write.
SHARD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrecord.gz", ".tfrecords.gz", ".tfr")
_SHARDED = re.compile(r"(.+)-\d{5}-of-\d{5}(\.[A-Za-z0-9]+)*")
_MASK_SUFFIXES = (".png", ".npy", ".jpg", ".jpeg")


def is_shard_name(name: str) -> bool:
    """Whether a file called ``name`` is taken for a TFRecord shard.

    >>> is_shard_name("val-00000-of-00004.tfrecord"), is_shard_name("train.labelfix.json")
    (True, False)
    """
    if name.startswith(".") or name.lower().endswith((".json", *_MASK_SUFFIXES)):
        return False
    return name.lower().endswith(SHARD_SUFFIXES) or bool(_SHARDED.fullmatch(name))


def shard_files(directory: str) -> list[str]:
    """The shard files at the top of ``directory`` (none when it cannot be listed)."""
    return _shard_names(directory)[0]


def _shard_names(directory: str) -> tuple[list[str], bool]:
    """``(shard files, has mask files)`` at the top of ``directory``."""
    try:
        names = sorted(fs.listdir(directory))
    except OSError:
        return [], False
    shards = [fs.join(directory, n) for n in names if is_shard_name(n)]
    masks = any(n.lower().endswith(_MASK_SUFFIXES) and not n.startswith(".") for n in names)
    return [p for p in shards if not fs.isdir(p)], masks


def _expand(path: str) -> list[str]:
    if glob.has_magic(path) and not fs.is_url(path) and not os.path.exists(path):
        return sorted(glob.glob(path))
    return [path]


def looks_like_records(paths: Iterable[str | os.PathLike]) -> bool:
    """Whether every path is TFRecords: a shard file, a glob matching shard files, or a
    directory whose top holds shards and no mask files (so ``stats DIR`` reads the records)."""
    found = False
    for path in map(os.fspath, paths):
        matches = _expand(path)
        if not matches:
            return False
        for match in matches:
            if fs.isdir(match):
                shards, masks = _shard_names(match)
                if not shards or masks:
                    return False
            elif not is_shard_name(fs.basename(match)):
                return False
            found = True
    return found


def find_shards(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The shard files of ``paths`` (files, globs, directories of shards), in order; a
    LabelfixError naming a path that holds none."""
    shards: list[str] = []
    for path in map(os.fspath, paths):
        matches = _expand(path)
        if not matches:
            raise LabelfixError(f"{path}: no file matches this pattern")
        for match in matches:
            if fs.isdir(match):
                found, _ = _shard_names(match)
                if not found:
                    raise LabelfixError(
                        f"{match}: no TFRecord shards in this directory (looked for "
                        f"{', '.join('*' + s for s in SHARD_SUFFIXES)} and NAME-NNNNN-of-NNNNN)"
                    )
                shards.extend(found)
            elif not fs.exists(match):
                raise LabelfixError(f"{match}: no such file")
            else:
                shards.append(match)
    return list(dict.fromkeys(shards))


def split_of(shards: Sequence[str]) -> str | None:
    """The split all ``shards`` are named for (``val-00000-of-00004.tfrecord``: val), or None.

    >>> split_of(["a/val-00000-of-00002.tfrecord", "a/val-00001-of-00002.tfrecord"])
    'val'
    """
    found = {m.group(1) if (m := _SHARDED.fullmatch(fs.basename(s))) else None for s in shards}
    return found.pop() if len(found) == 1 else None


def shards_of_split(directory: str, split: str | None) -> list[str]:
    """The shard files of ``directory`` named for ``split`` (all of them for None, or when none
    is named for a split); LabelfixError when others are, but none for ``split``."""
    every = shard_files(directory)
    named = {f: split_of([f]) for f in every}
    if split is None or not any(named.values()):
        return every
    found = [f for f in every if named[f] == split]
    if every and not found:
        there = sorted({s or fs.basename(f) for f, s in named.items()})
        raise LabelfixError(
            f"{directory}: no {split} shards in this directory (shards there: {', '.join(there)})"
        )
    return found


def compression_of(path: str) -> str:
    """``"gzip"`` or ``"none"``, from a shard's first bytes: an uncompressed shard opens with a
    record length whose masked CRC follows it; a gzip stream with ``1f 8b``."""
    try:
        with fs.open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return "none"  # reading it says what is wrong
    if len(head) == 12 and masked_crc32c(head[:8]) == struct.unpack("<I", head[8:])[0]:
        return "none"
    return "gzip" if head[:2] == b"\x1f\x8b" else "none"


def iter_records(
    shards: Sequence[str], problems: list[tuple[str, str]]
) -> Iterator[tuple[str, int, bytes]]:
    """``(shard, index, record)`` of every record, framing and CRCs checked; each problem goes
    to ``problems`` as ``(where, reason)``: a record whose data checksum is wrong is skipped, a
    broken header ends its shard (the records after it cannot be found)."""
    for shard in shards:
        count = 0  # records met, the skipped ones included: the next one's index
        skipped: list[CorruptRecord] = []

        def bad(err: CorruptRecord, shard: str = shard, skipped: list = skipped) -> None:
            skipped.append(err)
            problems.append((f"{shard}: record {err.index}", str(err).split(": ", 1)[-1]))

        try:
            raw = fs.open(shard, "rb")  # a FIFO or device is refused, never opened
        except OSError as err:
            problems.append((shard, f"cannot read the shard ({err.strerror or err})"))
            continue
        with raw:
            try:
                stream = read_records(raw, compression=compression_of(shard), on_bad_data=bad)
                for read, record in enumerate(stream):
                    count = read + len(skipped) + 1
                    yield shard, count - 1, record
            except CorruptRecord as err:
                reason = str(err).split(": ", 1)[-1]
                problems.append(
                    (f"{shard}: record {err.index}", f"{reason}; the rest of the shard is unread")
                )
            except (OSError, EOFError, zlib.error) as err:
                problems.append((f"{shard}: record {count}", f"unreadable ({err})"))


def where(shard: str, index: int, name: str | None = None) -> str:
    """How messages name a record: ``shard: record 3 (2007_000033)``."""
    return f"{shard}: record {index}" + (f" ({name})" if name else "")


@dataclass(frozen=True)
class ForeignRecord:
    """One record's features as :class:`~labelfix.records.example.RecordKeys` name them (None:
    absent; ``filename`` and ``source_id`` as stored, bytes). ``name`` is its
    ``image/filename``, else its ``source_id``, as messages show it."""

    shard: str
    index: int
    image: bytes | None
    mask: bytes | None
    mask_format: str | None = None
    filename: bytes | None = None
    source_id: bytes | None = None
    height: int | None = None
    width: int | None = None

    @property
    def name(self) -> str | None:
        return _text(self.filename or self.source_id)

    @property
    def where(self) -> str:
        return where(self.shard, self.index, self.name)


class BadRecord(ValueError):
    """A record that is no usable Example: ``at`` names the record, ``reason`` says why."""

    def __init__(self, at: str, reason: str):
        self.at, self.reason = at, reason
        super().__init__(f"{at}: {reason}")


def _single(features: dict, key: str, kind: type, at: str):
    values = features.get(key)
    if not values:
        return None
    if len(values) != 1 or not isinstance(values[0], kind):
        what = "bytes value" if kind is bytes else "integer"
        raise BadRecord(at, f"feature {key} holds {len(values)} values, expected one {what}")
    return values[0]


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value else None


def parse_record(shard: str, index: int, data: bytes, keys: RecordKeys) -> ForeignRecord:
    """The features of one serialised record; BadRecord when it is no Example, or has no image
    or no mask under ``keys`` (the message lists the bytes features it has)."""
    at = where(shard, index)
    try:
        features = parse_example(data)
    except ValueError as err:
        raise BadRecord(at, f"not a tf.train.Example ({err})") from None
    filename = _single(features, keys.filename, bytes, at)
    source_id = _single(features, keys.source_id, bytes, at)
    at = where(shard, index, _text(filename or source_id))
    found = {}
    for name, key in (("mask", keys.mask), ("image", keys.image)):
        found[name] = _single(features, key, bytes, at)
        if found[name] is None:
            present = sorted(k for k, v in features.items() if v and isinstance(v[0], bytes))
            option = "--mask-key" if name == "mask" else "--image-key"
            raise BadRecord(
                at,
                f"no {name} under {key} (its bytes features: {', '.join(present) or 'none'}); "
                f"{option} names another key",
            )
    return ForeignRecord(
        shard=shard,
        index=index,
        image=found["image"],
        mask=found["mask"],
        mask_format=_text(_single(features, keys.mask_format, bytes, at)),
        filename=filename,
        source_id=source_id,
        height=_single(features, keys.height, int, at),
        width=_single(features, keys.width, int, at),
    )


#: Raw mask dtypes by bytes per pixel: uint8 as Model Garden's ``decode_image`` of ``RAW``
#: masks defaults to, signed wider ones as DeepLab2 and labelfix store them.
RAW_DTYPES = {1: "uint8", 2: "int16", 4: "int32"}


def _raw_mask(record: ForeignRecord) -> Mask:
    at, data = record.where, record.mask
    height, width = record.height, record.width
    if not height or not width or height < 0 or width < 0:
        raise UnreadableMask(at, "a raw mask needs the record's image/height and image/width")
    size, rest = divmod(len(data), height * width)
    if rest or size not in RAW_DTYPES:
        raise UnreadableMask(
            at,
            f"raw mask of {len(data)} bytes for {width}x{height} pixels (expected 1, 2 or 4 "
            "bytes a pixel)",
        )
    dtype = np.dtype(RAW_DTYPES[size]).newbyteorder("<")
    array = np.frombuffer(data, dtype).reshape(height, width).astype(dtype.newbyteorder("="))
    return Mask(path=at, kind="raw", array=array)


def record_mask(record: ForeignRecord, *, colours: ColourPolicy | None = None) -> Mask:
    """The record's mask as class ids, read as a mask file is (a palette PNG as its indices;
    colour masks through ``colours``); a ``raw`` mask from its bytes, its dtype told by its
    size (:data:`RAW_DTYPES`). UnreadableMask naming the record otherwise."""
    fmt = (record.mask_format or "").lower()
    data = record.mask
    if fmt == "raw" and data[:8] != PNG_SIGNATURE:
        return _raw_mask(record)
    return read_label_mask(record.where, colours=colours, data=data)


# ----------------------------------------------------------------------------- the traps


def storage_trap(mask: Mask, values: np.ndarray, counts: np.ndarray) -> tuple[str, str] | None:
    """``(code, message)`` when TensorFlow's mask decoders (DeepLab's ``decode_png``, Model
    Garden's ``decode_image``, ``channels=1``, uint8) would not read this stored mask's ids, else
    None. A palette PNG reads as the luminance of its colours (DeepLab's writer stores the mask
    file's bytes as they are, so this is the common case); a 16-bit PNG as its high bytes."""
    if mask.kind == "palette" and mask.palette is not None:
        colours = np.frombuffer(mask.palette, np.uint8).reshape(-1, 3)[values]
        read = tf_luminance(colours)
        wrong = int(counts[read != values].sum())
        if not wrong:
            return None
        return "palette", (
            f"{mask.path}: palette PNG in the record: DeepLab's and Model Garden's decoders "
            f"(decode_png/decode_image, channels=1) read the luminance of its colours: "
            f"{_listed(read)} where the ids are {_listed(values)} ({wrong:,} px wrong)"
        )
    if mask.kind == "16-bit":
        read = values >> 8
        wrong = int(counts[read != values].sum())
        if not wrong:
            return None
        return "16-bit", (
            f"{mask.path}: 16-bit PNG in the record: DeepLab's and Model Garden's decoders read "
            f"it as uint8, keeping each value's high byte: {_listed(read)} where the ids are "
            f"{_listed(values)} ({wrong:,} px wrong)"
        )
    if mask.kind in ("1-bit", "2/4-bit"):
        return mask.kind, f"{mask.path}: {mask.kind} PNG in the record: {KINDS[mask.kind]}"
    return None


def _listed(values: np.ndarray, most: int = 8) -> str:
    shown = ", ".join(str(int(v)) for v in values[:most])
    return shown + (f", ... ({len(values) - most} more)" if len(values) > most else "")


def image_problems(record: ForeignRecord, mask_size: tuple[int, int] | None) -> list[str]:
    """What is wrong with a record's image: it does not decode, its size is not the mask's or
    not the ``image/height``/``image/width`` the record says (Model Garden reshapes by them)."""
    data, found = record.image, []
    problem = decode_problem(data)
    if problem is not None:
        return [f"image {problem}"]
    try:
        _, height, width, _ = quick_header(data) or image_header(data)
    except ValueError as err:
        return [f"image: {err}"]
    said = (record.height, record.width)
    if None not in said and said != (height, width):
        found.append(
            f"image is {width}x{height} but the record says {record.width}x{record.height}"
        )
    if mask_size is not None and mask_size != (height, width):
        mh, mw = mask_size
        found.append(f"mask is {mw}x{mh} but its image is {width}x{height}")
    return found


# ----------------------------------------------------------------------------- per record


@dataclass(frozen=True)
class RecordReport:
    """One record's :class:`~labelfix.checks.scan.FileReport` (``path`` names the record) and
    the traps its storage sets (``(code, message)``, errors)."""

    report: FileReport
    traps: tuple[tuple[str, str], ...] = ()


def scan_record(
    item: tuple[str, int, bytes],
    *,
    keys: RecordKeys,
    ignore: Sequence[int] = (),
    num_classes: int | None = None,
    colours: ColourPolicy | None = None,
    artifacts: bool = False,
) -> RecordReport:
    """Parse one record, read its mask and scan it as a file is scanned, check its image and
    storage (in a worker); never raises for bad data."""
    shard, index, data = item
    relpath = f"{fs.basename(shard)}:{index}"
    try:
        record = parse_record(shard, index, data, keys)
    except BadRecord as err:
        return RecordReport(FileReport(path=err.at, relpath=relpath, error=err.reason))
    try:
        mask = record_mask(record, colours=colours)
        report = scan_mask(
            mask, relpath, ignore=ignore, num_classes=num_classes, artifacts=artifacts
        )
        trap = storage_trap(mask, *mask.value_counts()) if mask.is_label else None
    except UnreadableMask as err:
        return RecordReport(FileReport(path=record.where, relpath=relpath, error=err.reason))
    except MemoryError:
        return RecordReport(
            FileReport(path=record.where, relpath=relpath, error="out of memory while decoding")
        )
    problems = image_problems(record, (report.height, report.width))
    if problems:
        report = dataclasses.replace(report, image_problem="; ".join(problems))
    return RecordReport(report, (trap,) if trap is not None else ())


# ----------------------------------------------------------------------------- for tf.data


def labelfix_manifests(directory: str) -> list[str]:
    """The labelfix manifests (``*.labelfix.json``) at the top of ``directory``."""
    try:
        return sorted(n for n in fs.listdir(directory) if n.endswith(".labelfix.json"))
    except OSError:
        return []


def foreign_manifest(
    paths: Iterable[str | os.PathLike], *, keys: RecordKeys | None = None, ignore: int | None = None
) -> dict:
    """What :mod:`labelfix.data` needs to read shards without a manifest, in a manifest's
    shape: the shards (``files``), their compression, the keys, and how masks are stored, told
    by the first record (a grey PNG's depth, or a raw mask's bytes a pixel). ``ignore`` is the
    stored value that marks void (None: none). LabelfixError when the masks are stored in a way
    TensorFlow would misread (a palette or colour PNG: rewrite them with ``labelfix
    to-tfrecord --from-records``)."""
    keys = keys or RecordKeys()
    shards = find_shards(paths)
    compressions = {compression_of(s) for s in shards}
    if len(compressions) > 1:
        raise LabelfixError(f"{shards[0]}: some shards are gzip-compressed and some are not")
    problems: list[tuple[str, str]] = []
    first = next(iter_records(shards, problems), None)
    if first is None:
        reason = f"{problems[0][0]}: {problems[0][1]}" if problems else f"{shards[0]}: no records"
        raise LabelfixError(reason)
    try:
        record = parse_record(*first, keys)
    except BadRecord as err:
        raise LabelfixError(str(err)) from None
    encoding, dtype, check = _stored_as(record)
    return {
        "format": "foreign",
        "num_classes": None,
        "num_records": None,
        "ignore": ignore,
        "mask_encoding": encoding,
        "mask_dtype": dtype,
        "compression": compressions.pop(),
        "feature_keys": {
            "image": keys.image,
            "mask": keys.mask,
            "height": keys.height,
            "width": keys.width,
        },
        "files": shards,
        "png_header": check,
    }


_REWRITE = "rewrite them with labelfix to-tfrecord --from-records"


def _stored_as(record: ForeignRecord) -> tuple[str, str, bytes | None]:
    """``(encoding, dtype, PNG bit depth + colour type bytes every mask must have)``."""
    data, at = record.mask, record.where
    if (record.mask_format or "").lower() == "raw" and data[:8] != PNG_SIGNATURE:
        return "raw", _raw_mask(record).array.dtype.name, None
    if data[:8] != PNG_SIGNATURE or len(data) < 26:
        raise LabelfixError(
            f"{at}: the mask is not a PNG (labelfix.data reads grey PNG and raw masks); {_REWRITE}"
        )
    bits, colour = data[24], data[25]
    if colour == 3:
        raise LabelfixError(
            f"{at}: palette PNG masks: tf.io.decode_png reads the luminance of their colours, "
            f"not the ids; {_REWRITE}"
        )
    if colour != 0 or bits not in (8, 16):
        raise LabelfixError(
            f"{at}: {bits}-bit PNG masks of colour type {colour}: tf.io.decode_png would not "
            f"read the ids; {_REWRITE}"
        )
    return "png", "uint8" if bits == 8 else "uint16", bytes((bits, colour))
