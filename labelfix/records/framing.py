"""TFRecord framing without TensorFlow: write and read the records of a shard, CRCs checked.

A TFRecord file is a sequence of ``uint64 length | uint32 masked_crc32c(length) | data |
uint32 masked_crc32c(data)`` (little-endian), the whole stream gzip-compressed for
``compression="gzip"`` (TensorFlow's ``GZIP`` option). CRC-32C comes from ``google-crc32c``
(hardware-accelerated, wheels for every platform); the files are byte-identical to what
``tf.io.TFRecordWriter`` writes, and ``tf.data.TFRecordDataset`` reads them.

>>> import io
>>> buf = io.BytesIO()
>>> write_record(buf, b"hello")  # bytes written
21
>>> buf.getvalue().hex()
'0500000000000000eab2043e68656c6c6fbb1f1c19'
>>> list(read_records(io.BytesIO(buf.getvalue())))
[b'hello']
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable, Iterator
from typing import IO

import google_crc32c

_MASK_DELTA = 0xA282EAD8


class CorruptRecord(ValueError):
    """A record whose framing or checksum is wrong; ``index`` is its number in the file."""

    def __init__(self, index: int, reason: str):
        self.index = index
        super().__init__(f"record {index}: {reason}")


def masked_crc32c(data: bytes) -> int:
    """TensorFlow's masked CRC-32C: rotate right by 15 bits, add a constant (mod 2**32)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def write_record(fh: IO[bytes], data: bytes) -> int:
    """Append one framed record to ``fh``; returns the bytes written."""
    length = struct.pack("<Q", len(data))
    fh.write(length + struct.pack("<I", masked_crc32c(length)))
    fh.write(data)
    fh.write(struct.pack("<I", masked_crc32c(data)))
    return len(data) + 16


def read_records(
    fh: IO[bytes],
    *,
    compression: str = "none",
    on_bad_data: Callable[[CorruptRecord], None] | None = None,
) -> Iterator[bytes]:
    """Every record of a file object, in order; CorruptRecord on a bad length, a bad CRC or a
    file that ends inside a record. With ``on_bad_data``, a record whose data checksum is wrong
    (its length is right, so the next one can still be found) is handed to it and skipped."""
    if compression == "gzip":
        fh = gzip.GzipFile(fileobj=fh, mode="rb")
    index = 0
    while True:
        head = fh.read(12)
        if not head:
            return
        if len(head) < 12:
            raise CorruptRecord(index, "the file ends inside a record header")
        length, crc = struct.unpack("<QI", head)
        if masked_crc32c(head[:8]) != crc:
            raise CorruptRecord(index, "bad length checksum (corrupt record header)")
        data = fh.read(length)
        tail = fh.read(4)
        if len(data) < length or len(tail) < 4:
            raise CorruptRecord(index, "the file ends inside a record")
        if masked_crc32c(data) != struct.unpack("<I", tail)[0]:
            if on_bad_data is None:
                raise CorruptRecord(index, "bad data checksum (corrupt record)")
            on_bad_data(CorruptRecord(index, "bad data checksum (corrupt record)"))
        else:
            yield data
        index += 1
