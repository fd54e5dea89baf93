"""TFRecord framing without TensorFlow: the same bytes TensorFlow writes, read back checked."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from labelfix.records.framing import CorruptRecord, read_records, write_record

RECORDS = [b"", b"a", b"hello" * 1000, bytes(range(256)) * 300]


def test_records_equal_tensorflows_bytes_and_read_back_both_ways(tmp_path: Path):
    tf = pytest.importorskip("tensorflow")
    for compression, tf_name in (("none", ""), ("gzip", "GZIP")):
        ours, theirs = tmp_path / f"ours.{compression}", tmp_path / f"tf.{compression}"
        with (
            gzip.GzipFile(ours, "wb", compresslevel=6, mtime=0)
            if compression == "gzip"
            else open(ours, "wb")
        ) as fh:
            for record in RECORDS:
                write_record(fh, record)
        with tf.io.TFRecordWriter(str(theirs), tf.io.TFRecordOptions(tf_name)) as writer:
            for record in RECORDS:
                writer.write(record)
        if compression == "none":
            assert ours.read_bytes() == theirs.read_bytes()
        else:  # gzip headers differ (name, time); the record streams are identical
            assert gzip.decompress(ours.read_bytes()) == gzip.decompress(theirs.read_bytes())
        read_by_tf = [r.numpy() for r in tf.data.TFRecordDataset(str(ours), tf_name)]
        assert read_by_tf == RECORDS
        with open(theirs, "rb") as fh:
            assert list(read_records(fh, compression=compression)) == RECORDS


def test_a_flipped_bit_or_a_cut_is_a_corrupt_record_naming_its_index():
    buf = io.BytesIO()
    for record in RECORDS:
        write_record(buf, record)
    data = bytearray(buf.getvalue())
    offset = (16 + 0) + (16 + 1) + 12 + 100  # inside the third record's data
    data[offset] ^= 1
    with pytest.raises(CorruptRecord, match=r"^record 2: bad data checksum"):
        list(read_records(io.BytesIO(bytes(data))))
    with pytest.raises(CorruptRecord, match=r"^record 3: the file ends inside a record"):
        list(read_records(io.BytesIO(buf.getvalue()[:-10])))
    header = bytearray(buf.getvalue())
    header[0] ^= 1  # the first length
    with pytest.raises(CorruptRecord, match=r"^record 0: bad length checksum"):
        list(read_records(io.BytesIO(bytes(header))))
