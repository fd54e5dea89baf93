"""Shards: the ``{split}-NNNNN-of-MMMMM.tfrecord`` files, written under temporary names and
published (renamed into place, the manifest written last) only when every record is in.

A write that fails (a full disk, a read-only directory) raises a LabelfixError naming the
shard's final path and the reason, never the hidden temporary name; the caller discards the
temporary files, and the output is left without a manifest, so a rerun writes it whole.

>>> shard_name("train", 1, 4)
'train-00001-of-00004.tfrecord'
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from labelfix.errors import LabelfixError
from labelfix.io import fs
from labelfix.io.atomic import move_into_place, temporary_name, write_atomic
from labelfix.records.framing import write_record
from labelfix.records.manifest import manifest_path


def shard_name(split: str, index: int, count: int) -> str:
    """``train-00001-of-00004.tfrecord``: the names DeepLab globs as ``{split}-*``."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def shard_pattern(split: str) -> re.Pattern:
    return re.compile(re.escape(split) + r"-\d{5}-of-\d{5}\.tfrecord")


@dataclass(frozen=True)
class ShardInfo:
    """One finished shard: file name (relative to the output directory), records, size, sha256."""

    file: str
    records: int
    bytes: int
    sha256: str


class _HashingFile:
    """A binary file being written, whose sha256 and size are kept as the bytes go by (so a
    finished shard is not read again to hash it)."""

    def __init__(self, path: str):
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.digest, self.size = hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class ShardSet:
    """Shards under temporary names; moved to their final names only by :meth:`finish`.

    Records are framed by :mod:`labelfix.records.framing` (no TensorFlow: the bytes are what
    ``tf.io.TFRecordWriter`` writes). Local output: the temporary files live in ``output`` (so
    the rename is atomic). Remote output (``gs://...``): they are written to a local temporary
    directory and uploaded by :func:`publish` once every record is in. ``count``, when known
    before the run, names the shards in error messages.
    """

    def __init__(self, output: str, split: str, compression: str, *, count: int | None = None):
        self.output, self.split, self.count = output, split, count
        self.compression = compression
        self.directory = tempfile.mkdtemp(prefix="labelfix-") if fs.is_url(output) else output
        self.temps: list[str] = []
        self.records: list[int] = []
        self.sizes: list[int] = []
        self.files: list[_HashingFile] = []
        self.writer = None

    def final_path(self, index: int) -> str:
        """Where shard ``index`` goes: ``out/train-00003-of-00008.tfrecord`` (``-of-?????``
        while the number of shards is not known yet)."""
        if self.count is not None:
            return fs.join(self.output, shard_name(self.split, index, self.count))
        return fs.join(self.output, f"{self.split}-{index:05d}-of-?????.tfrecord")

    def _guarded(self, step, *args):
        """Run a write step; an OSError names the shard's final path, not the temporary one."""
        try:
            return step(*args)
        except OSError as err:
            index = len(self.temps) - 1
            raise LabelfixError(
                f"{self.final_path(index)}: cannot write the shard ({err.strerror or err}); "
                "nothing was published"
            ) from err

    def open_next(self) -> None:
        self.close()
        tmp = temporary_name(
            os.path.join(self.directory, shard_name(self.split, len(self.temps), 0))
        )
        self.temps.append(tmp)
        self.records.append(0)
        self.sizes.append(0)
        raw = self._guarded(_HashingFile, tmp)
        self.files.append(raw)
        self.writer = (
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0, filename="")
            if self.compression == "gzip"
            else raw
        )

    def write(self, data: bytes) -> None:
        self._guarded(write_record, self.writer, data)
        self.records[-1] += 1
        self.sizes[-1] += len(data)

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            self._guarded(writer.close)
            if writer is not self.files[-1]:  # gzip leaves the file beneath it open
                self._guarded(self.files[-1].close)

    def discard(self) -> None:
        with contextlib.suppress(OSError, LabelfixError):
            self.close()
        self.writer = None
        for tmp in self.temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.temps, self.files = [], []
        if self.directory != self.output:
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)

    def finish(self, manifest: dict) -> tuple[ShardInfo, ...]:
        """Move the shards to their final names and write the manifest last."""
        self.close()
        count = len(self.temps)
        shards = [
            ShardInfo(
                file=shard_name(self.split, i, count),
                records=self.records[i],
                bytes=self.files[i].size,
                sha256=self.files[i].digest.hexdigest(),
            )
            for i in range(count)
        ]
        try:
            publish(self.output, self.split, list(zip(self.temps, shards, strict=True)), manifest)
        except OSError as err:
            where = err.filename or self.output
            raise LabelfixError(
                f"{where}: cannot write ({err.strerror or err}); the output has no manifest "
                "until a run finishes: run the same command again"
            ) from err
        self.temps = []
        self.discard()
        return tuple(shards)


def publish(
    output: str, split: str, staged: Sequence[tuple[str, ShardInfo]], manifest: dict
) -> None:
    """Move finished shards (``(staged path, info)``) to their names in ``output``, then write
    the manifest listing them; shards of ``split`` from an earlier run are removed.

    Shared by the local writer and the Beam runner; ``output`` and the staged paths may be local
    or remote (:mod:`labelfix.io.fs`).
    """
    manifest["shards"] = [s.__dict__ for _, s in staged]
    final_manifest = manifest_path(output, split)
    # From here the directory stops looking finished until the new manifest is in place.
    with contextlib.suppress(FileNotFoundError):
        fs.remove(final_manifest)
    keep = {s.file for _, s in staged}
    pattern = shard_pattern(split)
    for name in fs.listdir(output):
        if pattern.fullmatch(name) and name not in keep:
            fs.remove(fs.join(output, name))
    for tmp, shard in staged:
        move_into_place(tmp, fs.join(output, shard.file))
    write_atomic(final_manifest, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))


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
