"""The ``tf.train.Example`` of a record: its feature keys, and the wire format without TensorFlow.

:data:`FEATURES` is the one table of feature keys (DeepLab's ``build_data.py`` and TF Model
Garden's segmentation decoder read these keys). tf.train.Example is a small protobuf:
Example{features=1: Features{feature=1: map<string, Feature>}}, Feature{bytes_list=1 |
float_list=2 | int64_list=3}, each list {repeated value=1}. Writing it by hand needs no TensorFlow
and is 3x faster than building a tf.train.Example; entries are sorted by key, so the bytes equal
TensorFlow's deterministic serialisation.

>>> feature_key("height")
'image/height'
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

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


def feature_key(name: str) -> str:
    """The key of ``name`` in :data:`FEATURES`: ``feature_key("height")`` -> ``image/height``."""
    return FEATURES[name][0]


@dataclass(frozen=True)
class RecordKeys:
    """Where the records of another tool keep each feature: :data:`FEATURES`' keys (DeepLab's
    ``build_data.py``, Model Garden's ``tf_example_builder.py``) unless told otherwise.

    >>> RecordKeys.of(mask="label/encoded").mask
    'label/encoded'
    """

    image: str = feature_key("image")
    mask: str = feature_key("mask")
    mask_format: str = feature_key("mask_format")
    filename: str = feature_key("filename")
    source_id: str = feature_key("source_id")
    height: str = feature_key("height")
    width: str = feature_key("width")

    @classmethod
    def of(cls, **keys: str | None) -> RecordKeys:
        """The default keys, with each key given (not None) in its place."""
        return dataclasses.replace(cls(), **{k: v for k, v in keys.items() if v})

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


#: What ``image/filename`` holds (:func:`record_filename`).
FILENAME_STYLES = ("stem", "name")


def record_filename(name: str, style: str = "stem") -> str:
    """The ``image/filename`` of an image: ``stem`` drops the extension, as DeepLab's writer
    stores it (its ``vis.py`` names each prediction ``<filename>.png``); ``name`` keeps it.

    >>> record_filename("2007_000033.jpg"), record_filename("a/b.c.png", "name")
    ('2007_000033', 'a/b.c.png')
    """
    if style == "name":
        return name
    head, sep, last = name.rpartition("/")
    stem, dot, _ = last.rpartition(".")
    return head + sep + (stem if dot and stem else last)


# ----------------------------------------------------------------------------- wire format

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
        if isinstance(value, str):  # a file name that is not UTF-8 is stored as its own bytes
            value = value.encode("utf-8", "surrogateescape")
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
