"""Write (image, mask) pairs as sharded TFRecords that DeepLab and TF Model Garden read unchanged.

Read -> check -> encode -> write, as plain steps:

* :func:`find_pairs` pairs every mask with its image (same relative path and stem);
* worker processes (numpy + Pillow only, never TensorFlow) decode each mask, apply the
  :class:`~labelfix.mapping.LabelMap` to its histogram, check every value against ``num_classes``
  and the ignore value, encode the mask and read the image header (:func:`prepare_pair`);
* the parent reads the image bytes (cheaper than piping them back), serialises the
  ``tf.train.Example`` by hand (:func:`serialize_example`: the same bytes as TensorFlow's
  deterministic serialisation, 3x faster than building the proto) and frames the records with
  ``tf.io.TFRecordWriter`` into shards under temporary names; they are renamed when every record
  is in, and the manifest is written last. While the workers start, the parent imports
  TensorFlow or works through the first pairs itself.

Masks are stored with the canonical ignore value ``out`` of the label map, in one of two forms:

* ``png``: 8-bit grey PNG (16-bit when a class id or the ignore value exceeds 255), palettes
  stripped. A PNG cannot hold -1, so a negative ``out`` is stored as 255 (65535 for 16-bit).
  A mask that needs no change keeps its compressed pixel data byte for byte.
* ``raw``: little-endian signed integers (as DeepLab2 stores panoptic labels), the smallest
  width holding every value (``int8`` for ids up to 127 and ``out=-1``), so -1 lives in the record.

The manifest (``{split}.labelfix.json``) says which, and :mod:`labelfix.data` presents the ignore
value as -1 by default.

>>> result = write_dataset(images="JPEGImages", masks="SegmentationClass", output="tfrecords",
...                        label_map=preset("voc"), num_classes=21)     # doctest: +SKIP
>>> result.num_records, [s.file for s in result.shards][:1]             # doctest: +SKIP
(2913, ['train-00000-of-00003.tfrecord'])
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from labelfix import fs
from labelfix._version import __version__
from labelfix.errors import LabelfixError, MappingError, MissingExtra, UnreadableMask
from labelfix.mapping import LabelMap
from labelfix.masks import (
    Mask,
    encode_png,
    iter_mask_files,
    read_mask,
)
from labelfix.pairing import IMAGE_EXTENSIONS, mask_stem
from labelfix.parallel import default_jobs, ordered_map
from labelfix.scan import BadValue, value_counts
from labelfix.validate import bad_value_message, expected_text

if TYPE_CHECKING:
    from labelfix.colormap import Colormap

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_MASK_ENCODING",
    "FEATURES",
    "MASK_ENCODINGS",
    "DatasetProblems",
    "Pair",
    "ShardInfo",
    "VerifyResult",
    "WriteResult",
    "feature_key",
    "find_pairs",
    "manifest_path",
    "parse_example",
    "parse_size",
    "read_id_list",
    "read_manifest",
    "serialize_example",
    "shard_name",
    "verify_dataset",
    "write_dataset",
]

# ----------------------------------------------------------------------------- constants

#: The one table of feature keys: name -> (key, type). DeepLab's ``build_data.py`` and TF Model
#: Garden's segmentation decoder use these keys; ``image/source_id`` is Model Garden's id.
FEATURES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "image": ("image/encoded", "bytes"),
        "image_format": ("image/format", "bytes"),
        "filename": ("image/filename", "bytes"),
        "source_id": ("image/source_id", "bytes"),
        "height": ("image/height", "int64"),
        "width": ("image/width", "int64"),
        "channels": ("image/channels", "int64"),
        "mask": ("image/segmentation/class/encoded", "bytes"),
        "mask_format": ("image/segmentation/class/format", "bytes"),
    }
)

MASK_ENCODINGS = ("png", "raw")
COMPRESSIONS = ("none", "gzip")

#: Default mask encoding, for training too. benchmarks/bench_reader.py on 2 cores: raw reads
#: only 5-15% faster than png (the image decode dominates) and only in its int8 form (``out=-1``),
#: at 3.2x the disk at VOC size (1.8x at Cityscapes size); with void kept as 255 (int16) it is
#: no faster at VOC size and 5.3x the disk. png is also what DeepLab / Model Garden decode.
DEFAULT_MASK_ENCODING = "png"

#: Default shard size (bytes of records before compression).
DEFAULT_SHARD_SIZE = 100_000_000

MANIFEST_SUFFIX = ".labelfix.json"
MANIFEST_FORMAT = "labelfix-tfrecord"
MANIFEST_VERSION = 1

#: Image formats TensorFlow's ``tf.io.decode_image`` reads, by Pillow format name.
_TF_IMAGE_FORMATS = {
    "JPEG": "jpeg",
    "MPO": "jpeg",
    "PNG": "png",
    "GIF": "gif",
    "BMP": "bmp",
    "WEBP": "webp",
}
_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "LA": 2, "RGB": 3, "YCbCr": 3, "CMYK": 3, "RGBA": 4}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def feature_key(name: str) -> str:
    """The key of ``name`` in :data:`FEATURES`: ``feature_key("height")`` -> ``image/height``."""
    return FEATURES[name][0]


def shard_name(split: str, index: int, count: int) -> str:
    """``train-00001-of-00004.tfrecord``: the names DeepLab globs as ``{split}-*``."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def manifest_path(output: str | os.PathLike, split: str) -> str:
    return os.path.join(os.fspath(output), f"{split}{MANIFEST_SUFFIX}")


def _shard_pattern(split: str) -> re.Pattern:
    return re.compile(re.escape(split) + r"-\d{5}-of-\d{5}\.tfrecord")


# ----------------------------------------------------------------------------- errors, results


class DatasetProblems(LabelfixError):
    """Files that cannot go into the dataset: ``problems`` holds one line per problem.

    ``kind`` is ``"unpaired"`` (masks or images without a partner) or ``"invalid"`` (bad masks,
    unreadable files, size mismatches).
    """

    def __init__(self, message: str, problems: Sequence[str], *, kind: str, files: int):
        self.problems = tuple(problems)
        self.kind = kind
        self.files = files
        super().__init__(message)


@dataclass(frozen=True)
class ShardInfo:
    """One finished shard: file name (relative to the output directory), records, size, sha256."""

    file: str
    records: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_dataset` wrote.

    ``ignore`` is the value stored in the masks for void pixels (None when there is none),
    ``ignore_as`` the value :mod:`labelfix.data` presents it as by default.
    """

    output: str
    split: str
    manifest: str
    shards: tuple[ShardInfo, ...]
    num_records: int
    num_classes: int
    mask_encoding: str
    mask_dtype: str
    compression: str
    ignore: int | None
    ignore_as: int | None
    class_pixel_counts: tuple[int, ...]
    ignore_pixels: int
    passthrough: int
    skipped: tuple[str, ...] = ()

    @property
    def paths(self) -> list[str]:
        return [os.path.join(self.output, s.file) for s in self.shards]

    def to_dict(self) -> dict:
        return {
            "output": self.output,
            "split": self.split,
            "manifest": self.manifest,
            "num_records": self.num_records,
            "num_classes": self.num_classes,
            "mask_encoding": self.mask_encoding,
            "mask_dtype": self.mask_dtype,
            "compression": self.compression,
            "ignore": self.ignore,
            "ignore_as": self.ignore_as,
            "ignore_pixels": self.ignore_pixels,
            "class_pixel_counts": list(self.class_pixel_counts),
            "passthrough_masks": self.passthrough,
            "skipped": list(self.skipped),
            "shards": [s.__dict__ for s in self.shards],
        }


# ----------------------------------------------------------------------------- small parsers


def parse_size(text: str | int) -> int:
    """``"100MB"`` -> 100_000_000, ``"1GiB"`` -> 2**30, ``"4096"`` -> 4096; ValueError otherwise."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"expected a size like 100MB, 1.5GB or 512MiB, got {text!r}")
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value < 1:
        raise ValueError(f"a shard size must be at least 1 byte, got {text!r}")
    return value


def read_id_list(path: str | os.PathLike) -> list[str]:
    """The ids of a split file (VOC ``ImageSets/Segmentation/train.txt``): first word per line.

    Blank lines and ``#`` comments are skipped; a trailing image/mask extension is dropped.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not a UTF-8 text file"
        raise LabelfixError(f"{path}: cannot read the id list ({reason})") from None
    ids = []
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        token = words[0].replace("\\", "/")
        stem, ext = os.path.splitext(token)
        if ext.lower() in (*IMAGE_EXTENSIONS, ".npy"):
            token = stem
        ids.append(token)
    return list(dict.fromkeys(ids))


# ----------------------------------------------------------------------------- pairing


@dataclass(frozen=True)
class Pair:
    """A mask and its image. ``source_id`` is the pairing key (``aachen/aachen_000000_000019``)."""

    mask: str
    image: str
    source_id: str
    filename: str


def _posix(relpath: str) -> str:
    return relpath.replace(os.sep, "/")


def _image_files(images: str, exclude: set[str]) -> Iterator[tuple[str, str]]:
    for root, dirs, files in fs.walk(images):
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            full = fs.join(root, name)
            if fs.normpath(full) not in exclude:
                yield full, fs.relpath(full, images)


def find_pairs(
    *,
    images: str | os.PathLike,
    masks: str | os.PathLike,
    image_suffix: str = "",
    mask_suffix: str = "",
    ids: Iterable[str] | None = None,
    skip_unpaired: bool = False,
) -> tuple[list[Pair], list[str]]:
    """Pair masks with images by relative path and stem; ``(pairs, unpaired problem lines)``.

    ``mask_suffix``/``image_suffix`` are stripped from the stems (Cityscapes:
    ``_gtFine_labelIds`` / ``_leftImg8bit``); with a suffix, files without it are not considered.
    ``ids`` restricts the pairs to those ids, in that order (an id matches the whole key or its
    last component). Raises DatasetProblems listing every unpaired file unless ``skip_unpaired``.
    """
    images, masks = os.fspath(images), os.fspath(masks)
    for what, top in (("images", images), ("masks", masks)):
        if not fs.isdir(top):
            raise LabelfixError(f"{top}: the {what} directory does not exist")
    problems: list[str] = []
    mask_by_key: dict[str, tuple[str, str]] = {}
    for path, rel in iter_mask_files([masks]):
        if mask_suffix and not os.path.splitext(rel)[0].endswith(mask_suffix):
            continue
        key = _posix(mask_stem(rel, mask_suffix=mask_suffix))
        if key in mask_by_key:
            problems.append(f"{path}: a second mask for {key} (the first is {mask_by_key[key][0]})")
        else:
            mask_by_key[key] = (path, rel)
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    image_by_key: dict[str, tuple[str, str]] = {}
    exclude = {fs.normpath(p) for p, _ in mask_by_key.values()}
    for path, rel in _image_files(images, exclude):
        stem, ext = os.path.splitext(rel)
        if image_suffix and not stem.endswith(image_suffix):
            continue
        key = _posix(mask_stem(rel, mask_suffix=image_suffix))
        old = image_by_key.get(key)
        if old is None or rank[ext.lower()] < rank[os.path.splitext(old[1])[1].lower()]:
            image_by_key[key] = (path, rel)

    if ids is None:
        keys = sorted(mask_by_key)
        for key in sorted(set(image_by_key) - set(mask_by_key)):
            problems.append(f"{image_by_key[key][0]}: no mask for this image under {masks}")
    else:
        keys = []
        by_base: dict[str, list[str]] = {}
        for key in sorted(set(mask_by_key) | set(image_by_key)):
            by_base.setdefault(key.rsplit("/", 1)[-1], []).append(key)
        for wanted in ids:
            wanted = wanted.strip("/")
            for suffix in (mask_suffix, image_suffix):
                if suffix and wanted.endswith(suffix):
                    wanted = wanted[: -len(suffix)]
            if wanted in mask_by_key or wanted in image_by_key:
                keys.append(wanted)
            elif len(by_base.get(wanted, ())) == 1:
                keys.append(by_base[wanted][0])
            elif by_base.get(wanted):
                problems.append(f"id {wanted} is ambiguous: {', '.join(by_base[wanted])}")
            else:
                problems.append(f"id {wanted}: no mask under {masks} and no image under {images}")
    pairs = []
    for key in dict.fromkeys(keys):
        mask, image = mask_by_key.get(key), image_by_key.get(key)
        if mask is None:
            problems.append(f"{image[0]}: no mask for this image under {masks}")
        elif image is None:
            problems.append(
                f"{mask[0]}: no image for this mask under {images} "
                f"(looked for {key}{image_suffix}.*)"
            )
        else:
            pairs.append(
                Pair(mask=mask[0], image=image[0], source_id=key, filename=_posix(image[1]))
            )
    if problems and not skip_unpaired:
        raise DatasetProblems(
            f"{len(problems)} unpaired file(s): every mask needs one image and every image a mask",
            problems,
            kind="unpaired",
            files=len(problems),
        )
    return pairs, problems


# ----------------------------------------------------------------------------- Example wire format
# tf.train.Example is a small protobuf: Example{features=1: Features{feature=1: map<string,
# Feature>}}, Feature{bytes_list=1 | float_list=2 | int64_list=3}, each list {repeated value=1}.
# Writing it by hand needs no TensorFlow and is 3x faster than building a tf.train.Example;
# entries are sorted by key, so the bytes equal TensorFlow's deterministic serialisation.


_SMALL_VARINTS = tuple(bytes((i,)) for i in range(128))


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL_VARINTS[value]
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@functools.lru_cache(maxsize=64)
def _key_field(key: str) -> bytes:
    """MapEntry.key (field 1) of a feature key."""
    encoded = key.encode("utf-8")
    return b"\x0a" + _varint(len(encoded)) + encoded


def serialize_example(features: Mapping[str, bytes | str | int]) -> bytes:
    """A serialised ``tf.train.Example`` of single-value features (bytes/str or int), no TF needed.

    Large values are copied once, into the result.

    >>> data = serialize_example({"image/height": 375, "image/format": "jpeg"})
    >>> parse_example(data)
    {'image/format': [b'jpeg'], 'image/height': [375]}
    """
    parts: list = []
    total = 0
    for key in sorted(features):
        value = features[key]
        if isinstance(value, str):
            value = value.encode("utf-8")
        if isinstance(value, (bytes, bytearray, memoryview)):
            n = len(value)
            inner = b"\x0a" + _varint(n)  # BytesList.value
            tail = value
            feature_tag = b"\x0a"  # Feature.bytes_list
        elif isinstance(value, (int, np.integer)):
            packed = _varint(int(value))
            inner = b"\x0a" + _varint(len(packed)) + packed  # Int64List.value, packed
            n, tail = 0, None
            feature_tag = b"\x1a"  # Feature.int64_list
        else:
            kind = type(value).__name__
            raise TypeError(f"feature {key}: expected bytes, str or int, got {kind}")
        list_len = len(inner) + n
        feature = feature_tag + _varint(list_len) + inner  # Feature, without the big tail
        feature_len = len(feature) + n
        entry = _key_field(key) + b"\x12" + _varint(feature_len) + feature  # MapEntry
        entry_len = len(entry) + n
        head = b"\x0a" + _varint(entry_len) + entry  # Features.feature
        parts.append(head)
        total += len(head) + n
        if tail is not None:
            parts.append(tail)
    return b"".join([b"\x0a", _varint(total), *parts])  # Example.features


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _messages(buf: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, object]]:
    """Yield ``(field, wire type, value)``; length-delimited values as ``(start, end)``."""
    while pos < end:
        tag, pos = _read_varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos, end)
        elif wire == 2:
            length, pos = _read_varint(buf, pos, end)
            if pos + length > end:
                raise ValueError("truncated field")
            value = (pos, pos + length)
            pos += length
        elif wire == 5:
            value, pos = bytes(buf[pos : pos + 4]), pos + 4
        elif wire == 1:
            value, pos = bytes(buf[pos : pos + 8]), pos + 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated field")
        yield number, wire, value


def parse_example(data: bytes) -> dict[str, list]:
    """Parse a serialised ``tf.train.Example`` without TensorFlow: key -> list of values.

    bytes_list values come back as ``bytes``, int64_list as ``int``, float_list as ``float``.
    Raises ValueError for malformed input.
    """
    buf = memoryview(data)
    out: dict[str, list] = {}
    for number, wire, span in _messages(buf, 0, len(buf)):
        if number != 1 or wire != 2:
            continue
        for fnum, fwire, entry in _messages(buf, *span):
            if fnum != 1 or fwire != 2:
                continue
            key, values = None, []
            for enum, ewire, evalue in _messages(buf, *entry):
                if enum == 1 and ewire == 2:
                    key = bytes(buf[evalue[0] : evalue[1]]).decode("utf-8")
                elif enum == 2 and ewire == 2:
                    values = _feature_values(buf, *evalue)
            if key is None:
                raise ValueError("feature map entry without a key")
            out[key] = values
    return out


def _feature_values(buf: memoryview, start: int, end: int) -> list:
    values: list = []
    for kind, wire, span in _messages(buf, start, end):
        if wire != 2:
            continue
        for vnum, vwire, value in _messages(buf, *span):
            if vnum != 1:
                continue
            if kind == 1 and vwire == 2:
                values.append(bytes(buf[value[0] : value[1]]))
            elif kind == 3 and vwire == 0:
                values.append(value - (1 << 64) if value >= 1 << 63 else value)
            elif kind == 3 and vwire == 2:
                pos, stop = value
                while pos < stop:
                    v, pos = _read_varint(buf, pos, stop)
                    values.append(v - (1 << 64) if v >= 1 << 63 else v)
            elif kind == 2 and vwire == 2:
                values.extend(
                    struct.unpack(
                        f"<{(value[1] - value[0]) // 4}f", bytes(buf[value[0] : value[1]])
                    )
                )
            elif kind == 2 and vwire == 5:
                values.append(struct.unpack("<f", value)[0])
    return values


# ----------------------------------------------------------------------------- PNG helpers


def _png_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """``(width, height, bit depth, colour type, interlace)`` from a PNG's IHDR, or None."""
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, colour, interlace


def _grey_png(data: bytes) -> bytes | None:
    """The same PNG as 8/16-bit greyscale with only IHDR, IDAT and IEND (None if malformed).

    An 8-bit palette PNG's pixel data *are* its indices, filtered exactly like 8-bit grey, so
    changing the colour type and dropping PLTE/tRNS gives a grey PNG of the indices without
    recompressing anything.
    """
    out = [_PNG_SIGNATURE]
    pos, end = 8, len(data)
    while pos + 12 <= end:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        stop = pos + 12 + length
        if stop > end:
            return None
        if ctype == b"IHDR":
            ihdr = bytearray(data[pos + 8 : pos + 8 + length])
            ihdr[9] = 0  # colour type: greyscale
            body = b"IHDR" + bytes(ihdr)
            out.append(
                struct.pack(">I", length) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
            )
        elif ctype in (b"IDAT", b"IEND"):
            out.append(data[pos:stop])
        if ctype == b"IEND":
            return b"".join(out)
        pos = stop
    return None


def _image_header(source: bytes | str) -> tuple[str, int, int, int]:
    """``(format, height, width, channels)`` from an image header (file path or bytes).

    ValueError with a reason for what TensorFlow could not decode; OSError when unreadable.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            fmt, (width, height), mode = im.format, im.size, im.mode
            transparent = "transparency" in im.info
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Image.UnidentifiedImageError:
        empty = not source if isinstance(source, bytes) else os.path.getsize(source) == 0
        raise ValueError("empty file" if empty else "not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"corrupt image header ({err})") from None
    if fmt not in _TF_IMAGE_FORMATS:
        raise ValueError(
            f"{fmt} images cannot be decoded by tf.io.decode_image (JPEG, PNG, GIF, BMP, WebP)"
        )
    channels = 4 if mode == "P" and transparent else _CHANNELS.get(mode, 3)
    return _TF_IMAGE_FORMATS[fmt], height, width, channels


_JPEG_SOF = frozenset(
    (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _quick_header(data: bytes) -> tuple[str, int, int, int] | None:
    """:func:`_image_header` for plain JPEG and PNG files without Pillow (None: ask Pillow).

    Reads the JPEG SOF marker or the PNG IHDR chunk: 5x faster than ``Image.open``, which
    matters when each mask takes a fraction of a millisecond.
    """
    if data[:3] == b"\xff\xd8\xff":
        pos, end = 2, len(data)
        while pos + 4 <= end:
            if data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker == 0xFF:
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:
                pos += 2
                continue
            if marker in (0xD9, 0xDA):
                return None
            if marker in _JPEG_SOF:
                if pos + 10 > end:
                    return None
                height, width = struct.unpack_from(">HH", data, pos + 5)
                channels = 1 if data[pos + 9] == 1 else 3
                return ("jpeg", height, width, channels) if height and width else None
            (length,) = struct.unpack_from(">H", data, pos + 2)
            pos += 2 + length
        return None
    header = _png_header(data)
    if header is None or header[3] not in _PNG_CHANNELS or not header[0] or not header[1]:
        return None
    width, height, _, colour, _ = header
    channels = _PNG_CHANNELS[colour]
    if colour == 3:
        pos = 8
        while pos + 8 <= len(data):
            (length,) = struct.unpack_from(">I", data, pos)
            ctype = data[pos + 4 : pos + 8]
            if ctype == b"tRNS":
                channels = 4
            if ctype in (b"IDAT", b"IEND"):
                break
            pos += 12 + length
        else:
            return None
    return "png", height, width, channels


def _read_image_header(path: str) -> tuple[str, int, int, int]:
    """``(format, height, width, channels)`` of an image file, from its first bytes if possible."""
    with fs.open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if fs.is_url(path):
        return _quick_header(head) or _image_header(fs.read_bytes(path))
    return _quick_header(head) or _image_header(path)


# ----------------------------------------------------------------------------- per-pair work


@dataclass(frozen=True)
class _Plan:
    """Everything a worker needs to turn a pair into a record (picklable, no TensorFlow)."""

    label_map: LabelMap
    num_classes: int
    out: int | None
    stored_ignore: int | None
    encoding: str
    mask_dtype: str
    colormap: Colormap | None = None
    unknown_colour: str = "error"


@dataclass(frozen=True)
class _Prepared:
    """A checked pair: its encoded mask, image header facts and class statistics.

    The image bytes are not in here: the parent reads them itself, which is cheaper than
    sending them back through a pipe.
    """

    mask: bytes
    image_format: str
    height: int
    width: int
    channels: int
    classes: tuple[int, ...]
    counts: tuple[int, ...]
    ignore_pixels: int
    passthrough: bool


@dataclass(frozen=True)
class _Rejected:
    problems: tuple[str, ...]


def _mapped_values(
    label_map: LabelMap, dtype: np.dtype, values: np.ndarray, path: str, labels: Callable
) -> np.ndarray:
    """The output of the label map for each distinct value (one lookup per value, not per pixel)."""
    if label_map.is_identity:
        return values.astype(np.int64)
    try:
        return label_map.apply(values.astype(dtype), path=path).astype(np.int64)
    except MappingError:
        label_map.apply(labels(), path=path)  # raises again, naming the first pixel
        raise


def _convert(labels: np.ndarray, values: np.ndarray, stored: np.ndarray, dtype) -> np.ndarray:
    """``labels`` with each of ``values`` replaced by ``stored``, as ``dtype`` (one LUT pass)."""
    dtype = np.dtype(dtype)
    if labels.dtype in (np.uint8, np.uint16):
        lut = np.zeros(1 << (8 * labels.dtype.itemsize), dtype)
        lut[values] = stored
        return np.take(lut, labels)
    lo, hi = int(values[0]), int(values[-1])
    if hi - lo < (1 << 20):
        lut = np.zeros(hi - lo + 1, dtype)
        lut[values - lo] = stored
        return lut[(labels - lo).astype(np.intp, copy=False)]
    return stored.astype(dtype)[np.searchsorted(values, labels)]


@dataclass
class _MaskData:
    """A decoded mask, its value histogram and (for PNGs) the file's bytes for passthrough."""

    mask: Mask
    values: np.ndarray
    counts: np.ndarray
    png: bytes | None = None

    @property
    def kind(self) -> str:
        return self.mask.kind

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    @property
    def dtype(self) -> np.dtype:
        return self.mask.dtype

    def labels(self) -> np.ndarray:
        return self.mask.labels


def _read_mask_data(
    path: str,
    *,
    colormap: Colormap | None = None,
    unknown_colour: str = "error",
    ignore: int = 255,
) -> _MaskData:
    """Read a mask file once, decode it and count its values; raises UnreadableMask.

    The bytes are kept for PNGs, so a mask that needs no change can be stored as it is.
    8-bit grey and palette masks are counted by Pillow's C histogram without a numpy round
    trip (see :meth:`labelfix.masks.Mask.value_counts`).
    """
    try:
        data = fs.read_bytes(path)
    except OSError:
        data = None  # read_mask says what is wrong with the path
    mask = read_mask(
        path, colormap=colormap, unknown_colour=unknown_colour, ignore=ignore, data=data
    )
    values, counts = mask.value_counts()
    png = data if data is not None and _png_header(data) is not None else None
    return _MaskData(mask=mask, values=values, counts=counts, png=png)


def prepare_pair(pair: Pair, plan: _Plan) -> _Prepared | _Rejected:
    """Read, map, check and encode one pair's mask, and read its image header (in a worker)."""
    path = pair.mask
    try:
        void = plan.out if plan.out is not None and plan.out >= 0 else 255
        mask = _read_mask_data(
            path, colormap=plan.colormap, unknown_colour=plan.unknown_colour, ignore=void
        )
    except UnreadableMask as err:
        return _Rejected((str(err),))
    except MemoryError:
        return _Rejected((f"{path}: out of memory while decoding",))
    values, counts = mask.values, mask.counts
    try:
        mapped = _mapped_values(plan.label_map, mask.dtype, values, path, mask.labels)
    except MappingError as err:
        return _Rejected((str(err),))
    out, num_classes = plan.out, plan.num_classes
    is_void = mapped == out if out is not None else np.zeros(len(mapped), bool)
    is_class = (mapped >= 0) & (mapped < num_classes) & ~is_void
    problems = []
    bad = ~(is_void | is_class)
    if bad.any():
        ignore = plan.label_map.ignore or ((out,) if out is not None else ())
        flat, width = mask.labels().ravel(), mask.shape[1]
        for v, m, c in zip(values[bad], mapped[bad], counts[bad], strict=True):
            y, x = divmod(int(np.argmax(flat == v)), width)
            message = bad_value_message(
                path, BadValue(int(v), int(c), y, x), num_classes=num_classes, ignore=ignore
            )
            problems.append(message + (f" (mapped to {m})" if m != v else ""))
    try:
        image_format, height, width, channels = _read_image_header(pair.image)
    except OSError as err:
        problems.append(f"{pair.image}: cannot read the image ({err.strerror or err})")
    except ValueError as err:
        problems.append(f"{pair.image}: {err}")
    else:
        if (height, width) != mask.shape:
            problems.append(
                f"{path}: size {mask.shape[1]}x{mask.shape[0]} does not match its image "
                f"{pair.image} ({width}x{height})"
            )
    if problems:
        return _Rejected(tuple(problems))

    stored = np.where(is_void, plan.stored_ignore, mapped) if out is not None else mapped
    mask_bytes, passthrough = None, False
    if plan.encoding == "png":
        bits = 8 if plan.mask_dtype == "uint8" else 16
        if mask.png is not None and (stored == values).all():
            mask_bytes = _passthrough_png(mask.png, bits)
            passthrough = mask_bytes is not None
        if mask_bytes is None:
            converted = _convert(mask.labels(), values, stored, plan.mask_dtype)
            mask_bytes = encode_png(converted, bits=bits)
    else:
        dtype = np.dtype(plan.mask_dtype).newbyteorder("<")
        mask_bytes = _convert(mask.labels(), values, stored, dtype).tobytes()
    return _Prepared(
        mask=mask_bytes,
        image_format=image_format,
        height=height,
        width=width,
        channels=channels,
        classes=tuple(mapped[is_class].tolist()),
        counts=tuple(counts[is_class].tolist()),
        ignore_pixels=int(counts[is_void].sum()),
        passthrough=passthrough,
    )


def _example(pair: Pair, prepared: _Prepared, encoding: str) -> bytes:
    """The serialised Example of a prepared pair, with the image's original bytes."""
    image_bytes = fs.read_bytes(pair.image)
    return serialize_example(
        {
            feature_key("image"): image_bytes,
            feature_key("image_format"): prepared.image_format,
            feature_key("filename"): pair.filename,
            feature_key("source_id"): pair.source_id,
            feature_key("height"): prepared.height,
            feature_key("width"): prepared.width,
            feature_key("channels"): prepared.channels,
            feature_key("mask"): prepared.mask,
            feature_key("mask_format"): encoding,
        }
    )


def _passthrough_png(data: bytes, bits: int) -> bytes | None:
    """The mask file's own pixel data when it is a plain (or palette) PNG of ``bits`` bits."""
    header = _png_header(data)
    if header is None or header[2] != bits or header[3] not in (0, 3):
        return None
    if header[3] == 3 and bits != 8:
        return None
    return _grey_png(data)


# ----------------------------------------------------------------------------- storage choices


def _storage(encoding: str, num_classes: int, out: int | None) -> tuple[int | None, str]:
    """``(stored ignore value, mask dtype)`` for an encoding, num_classes and canonical ignore."""
    hi = num_classes - 1
    if encoding == "png":
        stored = out
        if out is not None and out < 0:
            stored = 255 if hi < 255 else 65535
        top = max(hi, stored if stored is not None else 0)
        if top > 0xFFFF:
            raise LabelfixError(
                f"a PNG mask holds at most 65535, but {top} is needed; use mask_encoding='raw'"
            )
        return stored, "uint8" if top <= 0xFF else "uint16"
    lo = min(0, out if out is not None else 0)
    top = max(hi, out if out is not None else 0)
    for name in ("int8", "int16", "int32"):
        info = np.iinfo(name)
        if info.min <= lo and top <= info.max:
            return out, name
    raise LabelfixError(f"class ids {lo}..{top} do not fit 32-bit signed integers")


# ----------------------------------------------------------------------------- running the work


def _indexed(func: Callable, item: tuple[int, object]) -> tuple[int, object]:
    index, value = item
    return index, func(value)


def _result_bytes(result: object) -> int:
    return len(result.mask) if isinstance(result, _Prepared) else 256


class _Pipeline:
    """``func`` over ``items`` on worker processes, results in order, driven from a thread.

    The worker pool takes a moment to start (a fresh interpreter importing numpy and Pillow);
    meanwhile the caller can import TensorFlow, or work through the first items itself
    (:meth:`help_until_started`), so small datasets do not pay for the start-up. Results wait
    in memory up to ``max_bytes`` of encoded masks, then the workers pause.
    """

    def __init__(
        self,
        func: Callable,
        items: Sequence,
        *,
        jobs: int,
        local: Callable | None = None,
        max_bytes: int = 1 << 28,
    ):
        self.func, self.items, self.max_bytes = func, items, max_bytes
        self.local = local or func  # what this process runs (its caches stay out of the pickles)
        self._cond = threading.Condition()
        self._cursor = self._wanted = 0
        self._results: dict[int, object] = {}
        self._bytes = 0
        self._started = self._finished = self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._drive, args=(jobs,), name="labelfix-workers", daemon=True
        )
        self._thread.start()

    def _claim(self) -> int | None:
        with self._cond:
            if self._stop or self._cursor >= len(self.items):
                return None
            self._cursor += 1
            return self._cursor - 1

    def _claims(self) -> Iterator[tuple[int, object]]:
        while (index := self._claim()) is not None:
            yield index, self.items[index]

    def _put(self, index: int, result: object, *, from_pool: bool) -> None:
        with self._cond:
            self._results[index] = result
            self._bytes += _result_bytes(result)
            self._started = self._started or from_pool
            self._cond.notify_all()
            # pause while the consumer has plenty to do; never while it waits for the next result
            while (
                from_pool
                and self._bytes > self.max_bytes
                and not self._stop
                and self._wanted in self._results
            ):
                self._cond.wait()

    def _drive(self, jobs: int) -> None:
        try:
            work = functools.partial(_indexed, self.func)
            for index, result in ordered_map(
                work, self._claims(), jobs=jobs, chunksize=8, preload=("labelfix.tfrecord",)
            ):
                self._put(index, result, from_pool=True)
        except BaseException as err:  # handed to the consuming thread
            with self._cond:
                self._error = err
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def help_until_started(self) -> None:
        """Process items in this thread until the first result comes back from a worker."""
        while not self._started and self._error is None:
            index = self._claim()
            if index is None:
                return
            self._put(index, self.local(self.items[index]), from_pool=False)

    def __iter__(self) -> Iterator[object]:
        for index in range(len(self.items)):
            with self._cond:
                self._wanted = index
                self._cond.notify_all()
                while index not in self._results:
                    if self._error is not None:
                        raise self._error
                    if self._finished:
                        raise RuntimeError("worker pool stopped early")  # pragma: no cover
                    self._cond.wait()
                result = self._results.pop(index)
                self._bytes -= _result_bytes(result)
                self._cond.notify_all()
            yield result

    def close(self) -> None:
        """Stop handing out items and wait for the workers to finish the ones in flight."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()


# ----------------------------------------------------------------------------- writing


class _ShardSet:
    """Shards under temporary names; moved to their final names only by :meth:`finish`.

    Local output: the temporary files live in ``output`` (so the rename is atomic). Remote output
    (``gs://...``): they are written to a local temporary directory and uploaded by
    :func:`_publish` once every record is in.
    """

    def __init__(self, output: str, split: str, compression: str):
        import tensorflow as tf

        self._tf = tf
        self.output, self.split = output, split
        self.options = tf.io.TFRecordOptions(
            compression_type="GZIP" if compression == "gzip" else ""
        )
        self.directory = tempfile.mkdtemp(prefix="labelfix-") if fs.is_url(output) else output
        self.temps: list[str] = []
        self.records: list[int] = []
        self.sizes: list[int] = []
        self.writer = None

    def open_next(self) -> None:
        self.close()
        fd, tmp = tempfile.mkstemp(
            dir=self.directory,
            prefix=f".{self.split}-{len(self.temps):05d}-",
            suffix=".tfrecord.labelfix-tmp",
        )
        os.close(fd)
        self.temps.append(tmp)
        self.records.append(0)
        self.sizes.append(0)
        self.writer = self._tf.io.TFRecordWriter(tmp, self.options)

    def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.records[-1] += 1
        self.sizes[-1] += len(data)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def discard(self) -> None:
        self.close()
        for tmp in self.temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.temps = []
        if self.directory != self.output:
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)

    def finish(self, manifest: dict) -> tuple[ShardInfo, ...]:
        """Hash the shards, move them to their final names, write the manifest last."""
        self.close()
        count = len(self.temps)
        shards = []
        for i, tmp in enumerate(self.temps):
            with open(tmp, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            shards.append(
                ShardInfo(
                    file=shard_name(self.split, i, count),
                    records=self.records[i],
                    bytes=os.path.getsize(tmp),
                    sha256=digest,
                )
            )
        _publish(self.output, self.split, list(zip(self.temps, shards, strict=True)), manifest)
        self.temps = []
        self.discard()
        return tuple(shards)


def _publish(
    output: str, split: str, staged: Sequence[tuple[str, ShardInfo]], manifest: dict
) -> None:
    """Move finished shards (``(staged path, info)``) to their names in ``output``, then write
    the manifest listing them; shards of ``split`` from an earlier run are removed.

    Shared by the local writer and the Beam runner; ``output`` and the staged paths may be local
    or remote (:mod:`labelfix.fs`).
    """
    manifest["shards"] = [s.__dict__ for _, s in staged]
    final_manifest = manifest_path(output, split)
    local = not fs.is_url(output)
    # From here the directory stops looking finished until the new manifest is in place.
    with contextlib.suppress(FileNotFoundError):
        fs.remove(final_manifest)
    keep = {s.file for _, s in staged}
    pattern = _shard_pattern(split)
    for name in fs.listdir(output):
        if pattern.fullmatch(name) and name not in keep:
            fs.remove(fs.join(output, name))
    for tmp, shard in staged:
        if local:
            os.chmod(tmp, 0o644)
        fs.replace(tmp, fs.join(output, shard.file))
    text = json.dumps(manifest, indent=2) + "\n"
    if not local:
        fs.write_bytes_atomic(final_manifest, text.encode("utf-8"))
        return
    fd, tmp = tempfile.mkstemp(dir=output, prefix=f".{split}.", suffix=".labelfix-tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final_manifest)
    except BaseException:
        os.unlink(tmp)
        raise


@dataclass
class _Tally:
    """Per-class pixel and image counts over the written records (folded, or merged)."""

    num_classes: int
    records: int = 0
    class_pixels: list[int] = field(default_factory=list)
    class_images: list[int] = field(default_factory=list)
    class_image_pixels: list[int] = field(default_factory=list)
    ignore_pixels: int = 0
    passthrough: int = 0

    def __post_init__(self) -> None:
        for name in ("class_pixels", "class_images", "class_image_pixels"):
            if not getattr(self, name):
                setattr(self, name, [0] * self.num_classes)

    def add(self, result: _Prepared) -> None:
        self.records += 1
        for c, n in zip(result.classes, result.counts, strict=True):
            self.class_pixels[c] += n
        for c in set(result.classes):
            self.class_images[c] += 1
            self.class_image_pixels[c] += result.height * result.width
        self.ignore_pixels += result.ignore_pixels
        self.passthrough += result.passthrough

    def merge(self, other: _Tally) -> None:
        self.records += other.records
        for name in ("class_pixels", "class_images", "class_image_pixels"):
            mine, theirs = getattr(self, name), getattr(other, name)
            for c in range(self.num_classes):
                mine[c] += theirs[c]
        self.ignore_pixels += other.ignore_pixels
        self.passthrough += other.passthrough


@dataclass(frozen=True)
class _WriteJob:
    """A checked ``write_dataset`` call: the pairs in record order and the per-pair plan."""

    output: str
    split: str
    pairs: tuple[Pair, ...]
    skipped: tuple[str, ...]
    plan: _Plan
    label_map: LabelMap
    num_classes: int
    compression: str
    num_shards: int | None
    size_limit: int
    shuffle: bool
    seed: int

    def invalid(self, problems: Sequence[str], bad_files: int) -> DatasetProblems:
        """The error a run with bad pairs ends with (the same for every runner)."""
        shown = _ignore_shown(self.label_map)
        return DatasetProblems(
            f"{bad_files} of {len(self.pairs)} pair(s) cannot be written "
            f"({expected_text(self.num_classes, shown)}); no shard was written",
            problems,
            kind="invalid",
            files=bad_files,
        )

    def manifest(self, tally: _Tally) -> dict:
        """The manifest of a finished run (its ``shards`` are filled in by :func:`_publish`)."""
        label_map, plan = self.label_map, self.plan
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "labelfix_version": __version__,
            "split": self.split,
            "num_records": tally.records,
            "num_classes": self.num_classes,
            "class_names": list(label_map.class_names)
            if label_map.class_names and len(label_map.class_names) == self.num_classes
            else None,
            "ignore": plan.stored_ignore,
            "ignore_as": -1 if plan.stored_ignore is not None else None,
            "mask_encoding": plan.encoding,
            "mask_dtype": plan.mask_dtype,
            "compression": self.compression,
            "feature_keys": {name: k for name, (k, _) in FEATURES.items()},
            "class_pixel_counts": tally.class_pixels,
            "class_image_counts": tally.class_images,
            "class_image_pixels": tally.class_image_pixels,
            "ignore_pixels": tally.ignore_pixels,
            "mapping": label_map.to_dict(),
            "shuffle": bool(self.shuffle),
            "seed": self.seed if self.shuffle else None,
            "shards": [],
        }

    def result(self, infos: Sequence[ShardInfo], tally: _Tally) -> WriteResult:
        plan = self.plan
        return WriteResult(
            output=self.output,
            split=self.split,
            manifest=manifest_path(self.output, self.split),
            shards=tuple(infos),
            num_records=tally.records,
            num_classes=self.num_classes,
            mask_encoding=plan.encoding,
            mask_dtype=plan.mask_dtype,
            compression=self.compression,
            ignore=plan.stored_ignore,
            ignore_as=-1 if plan.stored_ignore is not None else None,
            class_pixel_counts=tuple(tally.class_pixels),
            ignore_pixels=tally.ignore_pixels,
            passthrough=tally.passthrough,
            skipped=self.skipped,
        )


def _write_job(
    *,
    images: str | os.PathLike,
    masks: str | os.PathLike,
    output: str | os.PathLike,
    split: str = "train",
    label_map: LabelMap | None = None,
    num_classes: int | None = None,
    mask_encoding: str = DEFAULT_MASK_ENCODING,
    compression: str = "none",
    num_shards: int | None = None,
    shard_size: int | str | None = None,
    shuffle: bool = False,
    seed: int = 0,
    image_suffix: str = "",
    mask_suffix: str = "",
    ids: Iterable[str] | None = None,
    skip_unpaired: bool = False,
    colormap: Colormap | None = None,
    unknown_colour: str = "error",
) -> _WriteJob:
    """Check the options of :func:`write_dataset`, pair the files and plan the per-pair work."""
    label_map = label_map if label_map is not None else LabelMap()
    num_classes = num_classes if num_classes is not None else label_map.num_classes
    if num_classes is None or num_classes < 1:
        raise LabelfixError(f"num_classes must be given and at least 1, got {num_classes}")
    if mask_encoding not in MASK_ENCODINGS:
        raise LabelfixError(f"mask encoding must be one of {', '.join(MASK_ENCODINGS)}")
    if compression not in COMPRESSIONS:
        raise LabelfixError(f"compression must be one of {', '.join(COMPRESSIONS)}")
    if num_shards is not None and shard_size is not None:
        raise LabelfixError("give num_shards or shard_size, not both")
    if num_shards is not None and num_shards < 1:
        raise LabelfixError(f"num_shards must be at least 1, got {num_shards}")
    if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", split):
        raise LabelfixError(f"split must be a plain name like train or val, got {split!r}")
    try:
        size_limit = parse_size(shard_size) if shard_size is not None else DEFAULT_SHARD_SIZE
    except ValueError as err:
        raise LabelfixError(str(err)) from None
    out = label_map.out_value
    if out is not None and 0 <= out < num_classes:
        raise LabelfixError(
            f"the ignore value {out} is also a class id (num_classes {num_classes}, ids "
            f"0..{num_classes - 1}); choose another canonical ignore with out, e.g. 255 or -1"
        )
    stored_ignore, mask_dtype = _storage(mask_encoding, num_classes, out)

    pairs, skipped = find_pairs(
        images=images,
        masks=masks,
        image_suffix=image_suffix,
        mask_suffix=mask_suffix,
        ids=ids,
        skip_unpaired=skip_unpaired,
    )
    if not pairs:
        raise LabelfixError(f"{os.fspath(masks)}: no (image, mask) pairs to write")
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(pairs))
        pairs = [pairs[i] for i in order]
    plan = _Plan(
        label_map=label_map,
        num_classes=num_classes,
        out=out,
        stored_ignore=stored_ignore,
        encoding=mask_encoding,
        mask_dtype=mask_dtype,
        colormap=colormap,
        unknown_colour=unknown_colour,
    )
    return _WriteJob(
        output=os.fspath(output),
        split=split,
        pairs=tuple(pairs),
        skipped=tuple(skipped),
        plan=plan,
        label_map=label_map,
        num_classes=num_classes,
        compression=compression,
        num_shards=num_shards,
        size_limit=size_limit,
        shuffle=shuffle,
        seed=seed,
    )


def write_dataset(
    *,
    images: str | os.PathLike,
    masks: str | os.PathLike,
    output: str | os.PathLike,
    split: str = "train",
    label_map: LabelMap | None = None,
    num_classes: int | None = None,
    mask_encoding: str = DEFAULT_MASK_ENCODING,
    compression: str = "none",
    num_shards: int | None = None,
    shard_size: int | str | None = None,
    shuffle: bool = False,
    seed: int = 0,
    image_suffix: str = "",
    mask_suffix: str = "",
    ids: Iterable[str] | None = None,
    skip_unpaired: bool = False,
    jobs: int | None = None,
    on_record: Callable[[int], None] | None = None,
    colormap: Colormap | None = None,
    unknown_colour: str = "error",
) -> WriteResult:
    """Write every (image, mask) pair as TFRecord shards plus a manifest; see the module doc.

    ``label_map`` (default: none, values kept) is applied to every mask, and every result must be
    a class id ``0..num_classes-1`` or the label map's canonical ignore ``out``; one bad mask
    raises :class:`DatasetProblems` listing every problem, and no shard is left behind.
    ``num_shards`` or ``shard_size`` (bytes or ``"100MB"``, default 100 MB) set the sharding;
    the order is the sorted mask order (or ``ids`` order), permuted by ``seed`` when ``shuffle``.
    With a ``colormap``, colour masks are converted to class ids first. ``images``, ``masks``
    and ``output`` may be remote (``gs://...``, see :mod:`labelfix.fs`); the same job runs on
    Apache Beam with :func:`labelfix.beam.write_dataset_beam`.

    >>> from labelfix.mapping import LabelMap
    >>> write_dataset(images="img", masks="gt", output="tfr", num_classes=3,
    ...               label_map=LabelMap(ignore=(255,)))                   # doctest: +SKIP
    WriteResult(output='tfr', split='train', ..., num_records=8, ...)
    """
    job = _write_job(
        images=images,
        masks=masks,
        output=output,
        split=split,
        label_map=label_map,
        num_classes=num_classes,
        mask_encoding=mask_encoding,
        compression=compression,
        num_shards=num_shards,
        shard_size=shard_size,
        shuffle=shuffle,
        seed=seed,
        image_suffix=image_suffix,
        mask_suffix=mask_suffix,
        ids=ids,
        skip_unpaired=skip_unpaired,
        colormap=colormap,
        unknown_colour=unknown_colour,
    )
    output, pairs, plan = job.output, job.pairs, job.plan
    num_shards = job.num_shards
    fs.makedirs(output)

    tally = _Tally(job.num_classes)
    problems: list[str] = []
    bad_files = 0
    total = len(pairs)
    work = functools.partial(prepare_pair, plan=plan)
    jobs = default_jobs() if not jobs or jobs < 1 else jobs
    results = None
    if jobs > 1 and total > 16:
        # the workers get a label map whose lookup tables are not cached yet (smaller pickles)
        local_plan = dataclasses.replace(plan, label_map=dataclasses.replace(plan.label_map))
        local = functools.partial(prepare_pair, plan=local_plan)
        results = _Pipeline(work, pairs, jobs=jobs, local=local)
    shards = None
    try:
        shards = _ShardSet(output, split, compression)  # imports TensorFlow; workers start
        if results is not None:
            results.help_until_started()
        for i, result in enumerate(results if results is not None else map(work, pairs)):
            if on_record is not None:
                on_record(1)
            if isinstance(result, _Rejected):
                problems.extend(result.problems)
                bad_files += 1
                shards.discard()
                continue
            if problems:
                continue
            record = _example(pairs[i], result, plan.encoding)
            if num_shards is not None:
                while len(shards.temps) <= i * num_shards // total:
                    shards.open_next()
            elif shards.writer is None or (
                shards.sizes[-1] and shards.sizes[-1] + len(record) > job.size_limit
            ):
                shards.open_next()
            shards.write(record)
            tally.add(result)
        if problems:
            raise job.invalid(problems, bad_files)
        while num_shards is not None and len(shards.temps) < num_shards:
            shards.open_next()  # more shards than records: empty shards keep the -of-N names true
        infos = shards.finish(job.manifest(tally))
    except BaseException:
        if shards is not None:
            shards.discard()
        raise
    finally:
        if results is not None:
            results.close()
    return job.result(infos, tally)


def _ignore_shown(label_map: LabelMap) -> tuple[int, ...]:
    if label_map.ignore:
        return label_map.ignore
    return (label_map.out_value,) if label_map.out_value is not None else ()


def count_records(chunks: Iterable[bytes], *, compression: str = "none") -> int:
    """Number of records in a TFRecord file given as byte chunks (framing only, no CRC check).

    A record is ``uint64 length, uint32 crc, data, uint32 crc``; ``compression="gzip"`` files are
    inflated on the fly. ValueError when the file ends inside a record.
    """
    inflate = zlib.decompressobj(wbits=31) if compression == "gzip" else None
    records, skip, head = 0, 0, b""
    for chunk in chunks:
        if inflate is not None:
            chunk = inflate.decompress(chunk)
        pos = 0
        while pos < len(chunk):
            if skip:
                step = min(skip, len(chunk) - pos)
                skip -= step
                pos += step
                continue
            need = 12 - len(head)
            head += chunk[pos : pos + need]
            pos += min(need, len(chunk) - pos)
            if len(head) == 12:
                (length,) = struct.unpack("<Q", head[:8])
                skip, head = length + 4, b""
                records += 1
    if skip or head:
        raise ValueError("the file ends inside a record")
    return records


def shard_info(path: str, *, compression: str = "none", name: str | None = None) -> ShardInfo:
    """Records, bytes and sha256 of a written shard, read back from ``path`` (local or remote)."""
    digest = hashlib.sha256()
    size = 0

    def chunks() -> Iterator[bytes]:
        nonlocal size
        with fs.open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
                size += len(chunk)
                yield chunk

    records = count_records(chunks(), compression=compression)
    return ShardInfo(
        file=name or fs.basename(path), records=records, bytes=size, sha256=digest.hexdigest()
    )


# ----------------------------------------------------------------------------- manifest


def read_manifest(path: str | os.PathLike, split: str = "train") -> dict:
    """The manifest of ``split`` as a dict, plus ``directory`` (where its shards are).

    ``path`` is the output directory, the manifest file itself, or a shard file pattern
    (``out/train-*.tfrecord``: the manifest beside it is read).

    >>> m = read_manifest("tfrecords", "train")                  # doctest: +SKIP
    >>> m["num_classes"], m["ignore"], m["ignore_as"], m["mask_encoding"]   # doctest: +SKIP
    (21, 255, -1, 'png')
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


# ----------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify_dataset` found; ``problems`` has one line per problem."""

    manifest: str
    shards: int
    records: int
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Checked:
    problems: tuple[str, ...]
    classes: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class _VerifyPlan:
    num_classes: int
    ignore: int | None
    encoding: str
    mask_dtype: str


def check_record(item: tuple[str, int, bytes], plan: _VerifyPlan) -> _Checked:
    """Parse one serialised record, read its image header, decode its mask, check every value."""
    shard, index, data = item
    where = f"{shard}: record {index}"
    empty = np.zeros(0, np.int64)
    try:
        features = parse_example(data)
    except ValueError as err:
        return _Checked((f"{where}: not a tf.train.Example ({err})",), empty, empty)
    source = features.get(feature_key("source_id"), [b""])
    if source and isinstance(source[0], bytes) and source[0]:
        where += f" ({source[0].decode('utf-8', 'replace')})"
    problems = []
    values = {}
    for name, (key, kind) in FEATURES.items():
        got = features.get(key)
        if not got or len(got) != 1 or not isinstance(got[0], bytes if kind == "bytes" else int):
            problems.append(f"{where}: feature {key} is missing or not a single {kind} value")
        else:
            values[name] = got[0]
    if problems:
        return _Checked(tuple(problems), empty, empty)
    height, width = values["height"], values["width"]
    try:
        _, ih, iw, _ = _image_header(values["image"])
        if (ih, iw) != (height, width):
            problems.append(f"{where}: image is {iw}x{ih} but the record says {width}x{height}")
    except ValueError as err:
        problems.append(f"{where}: image: {err}")
    fmt = values["mask_format"].decode("utf-8", "replace")
    if fmt != plan.encoding:
        problems.append(f"{where}: mask format {fmt!r}, the manifest says {plan.encoding!r}")
        return _Checked(tuple(problems), empty, empty)
    try:
        labels = _decode_mask(values["mask"], plan, height, width)
    except ValueError as err:
        problems.append(f"{where}: mask: {err}")
        return _Checked(tuple(problems), empty, empty)
    found, counts = value_counts(labels)
    is_void = found == plan.ignore if plan.ignore is not None else np.zeros(len(found), bool)
    is_class = (found >= 0) & (found < plan.num_classes) & ~is_void
    flat = labels.ravel()
    for v, c in zip(found[~(is_void | is_class)], counts[~(is_void | is_class)], strict=True):
        y, x = divmod(int(np.argmax(flat == v)), width)
        ignore = (plan.ignore,) if plan.ignore is not None else ()
        problems.append(
            bad_value_message(
                where, BadValue(int(v), int(c), y, x), num_classes=plan.num_classes, ignore=ignore
            )
        )
    return _Checked(tuple(problems), found[is_class].astype(np.int64), counts[is_class])


def _decode_mask(data: bytes, plan: _VerifyPlan, height: int, width: int) -> np.ndarray:
    if plan.encoding == "raw":
        dtype = np.dtype(plan.mask_dtype).newbyteorder("<")
        if len(data) != height * width * dtype.itemsize:
            raise ValueError(f"{len(data)} bytes, expected {height}x{width} {plan.mask_dtype}")
        return np.frombuffer(data, dtype).reshape(height, width)
    header = _png_header(data)
    bits = 8 if plan.mask_dtype == "uint8" else 16
    if header is None:
        raise ValueError("not a PNG")
    if header[3] != 0 or header[2] != bits:
        raise ValueError(
            f"PNG is colour type {header[3]} with {header[2]} bits, expected {bits}-bit grey "
            "(tf.io.decode_png would not return the class ids)"
        )
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            labels = np.asarray(im)
    except (OSError, SyntaxError, ValueError, zlib.error) as err:
        raise ValueError(f"corrupt PNG ({err})") from None
    if labels.shape != (height, width):
        raise ValueError(f"PNG is {labels.shape[1]}x{labels.shape[0]}, expected {width}x{height}")
    return labels


def _read_shards(
    tf, directory: str, manifest: dict, problems: list[str], found: dict[str, int]
) -> Iterator[tuple[str, int, bytes]]:
    """Every record of every shard the manifest lists; read errors become problem lines."""
    compression = "GZIP" if manifest["compression"] == "gzip" else ""
    for shard in manifest["shards"]:
        name = shard["file"]
        path = os.path.join(directory, name)
        found[name] = 0
        if not os.path.isfile(path):
            problems.append(f"{name}: shard listed in the manifest is missing")
            continue
        try:
            for index, record in enumerate(tf.data.TFRecordDataset(path, compression)):
                found[name] = index + 1
                yield name, index, record.numpy()
        except tf.errors.OpError as err:
            message = str(err.message).strip().splitlines()[0]
            message = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", message)  # TF's op context
            problems.append(f"{name}: record {found[name]}: unreadable ({message})")


def verify_dataset(
    path: str | os.PathLike,
    *,
    split: str = "train",
    jobs: int | None = None,
    on_record: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Read every record back and check it against the manifest; see ``labelfix verify``.

    Checks: each shard exists, has the manifest's record count, size and sha256; each record is
    an Example with every feature key; its image header is readable and matches height/width;
    its mask decodes to that size and holds only class ids or the stored ignore value; the
    per-class pixel counts add up to the manifest's.
    """
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - exercised through the CLI's check
        raise MissingExtra("verify needs TensorFlow: pip install 'labelfix[tf]'") from None
    manifest = read_manifest(path, split)
    directory = manifest["directory"]
    num_classes = int(manifest["num_classes"])
    plan = _VerifyPlan(
        num_classes=num_classes,
        ignore=manifest["ignore"],
        encoding=manifest["mask_encoding"],
        mask_dtype=manifest["mask_dtype"],
    )
    problems: list[str] = []
    read_problems: list[str] = []
    found: dict[str, int] = {}
    class_pixels = np.zeros(num_classes, np.int64)
    records = 0
    items = _read_shards(tf, directory, manifest, read_problems, found)
    check = functools.partial(check_record, plan=plan)
    for result in ordered_map(check, items, jobs=jobs, chunksize=8, preload=("labelfix.tfrecord",)):
        records += 1
        if on_record is not None:
            on_record(1)
        problems.extend(result.problems)
        if len(result.classes):
            np.add.at(class_pixels, result.classes, result.counts)
    problems.extend(read_problems)
    for shard in manifest["shards"]:
        name = shard["file"]
        spath = os.path.join(directory, name)
        if not os.path.isfile(spath):
            continue
        if found.get(name, 0) != shard.get("records"):
            problems.append(
                f"{name}: the manifest says {shard.get('records')} records, "
                f"the shard holds {found.get(name, 0)}"
            )
        size = os.path.getsize(spath)
        if size != shard.get("bytes"):
            problems.append(
                f"{name}: the manifest says {shard.get('bytes')} bytes, the file has {size}"
            )
        with open(spath, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        if digest != shard.get("sha256"):
            problems.append(
                f"{name}: sha256 {digest[:16]}... does not match the manifest's "
                f"{str(shard.get('sha256'))[:16]}..."
            )
    listed = {s["file"] for s in manifest["shards"]}
    pattern = _shard_pattern(split)
    for name in sorted(_listdir(directory)):
        if pattern.fullmatch(name) and name not in listed:
            problems.append(f"{name}: shard not in the manifest (a {split}-* glob would read it)")
    if manifest.get("num_records") is not None and manifest["num_records"] != records:
        problems.append(
            f"{manifest['manifest_path']}: the manifest says "
            f"{manifest['num_records']} records, the shards hold {records}"
        )
    expected = manifest.get("class_pixel_counts")
    if not read_problems and expected is not None and list(expected) != class_pixels.tolist():
        diff = [
            c for c in range(num_classes) if c >= len(expected) or expected[c] != class_pixels[c]
        ]
        c = diff[0] if diff else len(expected)
        problems.append(
            f"{manifest['manifest_path']}: class_pixel_counts disagree with the records "
            f"(class {c}: manifest {expected[c] if c < len(expected) else 'none'}, "
            f"records {int(class_pixels[c]) if c < num_classes else 'none'})"
        )
    return VerifyResult(
        manifest=manifest["manifest_path"],
        shards=len(manifest["shards"]),
        records=records,
        problems=tuple(problems),
    )
