"""Shards: the ``{split}-NNNNN-of-MMMMM.tfrecord`` files, written under temporary names and
published (renamed into place, the manifest renamed last) only when every record is in.

A write that fails (a full disk, a read-only directory) raises a LabelfixError naming the
shard's final path and the reason, never the hidden temporary name; the caller discards the
temporary files, and the earlier output of the split stays as it was. :func:`publish` says how
an earlier output is replaced without a moment where neither it nor the new one is readable, and
shard-named files that no labelfix manifest lists are never removed (:func:`output_state`).

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
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from labelfix.errors import LabelfixError
from labelfix.io import fs
from labelfix.io.atomic import TMP_SUFFIX, deferred_signals, move_into_place, temporary_name
from labelfix.records.framing import write_record
from labelfix.records.manifest import MANIFEST_FORMAT, manifest_path


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
        # Ctrl-C waits until the temporary names are forgotten too: after publish() they are
        # the final shards' old names, and nothing may be removed by them.
        with deferred_signals():
            try:
                staged = list(zip(self.temps, shards, strict=True))
                publish(self.output, self.split, staged, manifest)
            except OSError as err:
                where = err.filename or self.output
                raise LabelfixError(
                    f"{where}: cannot write ({err.strerror or err}); nothing was published: "
                    "run the same command again"
                ) from err
            self.temps = []
        self.discard()
        return tuple(shards)


def journal_pattern(split: str) -> re.Pattern:
    """The names of the publish journals of ``split`` (``.train.labelfix-publish.<12 hex>``)."""
    return re.compile(r"\." + re.escape(split) + r"\.labelfix-publish\.[0-9a-f]{12}")


def _listed_shards(output: str, split: str) -> set[str]:
    """The shard names the manifest of ``split`` in ``output`` lists (read leniently: a damaged
    manifest lists what it still can; an unreadable one nothing)."""
    try:
        manifest = json.loads(fs.read_bytes(manifest_path(output, split)))
    except (OSError, ValueError, RecursionError):
        return set()
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return set()
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return set()
    return {
        s["file"]
        for s in shards
        if isinstance(s, dict) and isinstance(s.get("file"), str) and "/" not in s["file"]
    }


def _journals(output: str, split: str, names: Iterable[str]) -> tuple[list[str], set[str]]:
    """``(journal paths, shard names they list)`` of the interrupted publishes of ``split``."""
    pattern = journal_pattern(split)
    paths, listed = [], set()
    for name in sorted(names):
        if pattern.fullmatch(name):
            path = fs.join(output, name)
            paths.append(path)
            with contextlib.suppress(OSError, UnicodeDecodeError):
                listed.update(fs.read_bytes(path).decode("utf-8").splitlines())
    return paths, listed


@dataclass(frozen=True)
class OutputState:
    """What a split's shards in an output directory are, before a run replaces them.

    ``owned``: shard-named files an earlier labelfix run wrote (listed by the split's manifest or
    by the journal of an interrupted publish): a new run may replace or remove them. ``foreign``:
    shard-named files no labelfix manifest lists (another tool's records, e.g. DeepLab's own
    ``build_voc2012_data.py`` output): never removed, and a run refuses to write beside them.
    """

    owned: frozenset[str]
    foreign: tuple[str, ...]
    journals: tuple[str, ...]
    existing: frozenset[str]


def output_state(output: str, split: str) -> OutputState:
    """The :class:`OutputState` of ``split`` in ``output`` (empty when it does not exist)."""
    try:
        names = fs.listdir(output)
    except (FileNotFoundError, NotADirectoryError):
        names = []
    pattern = shard_pattern(split)
    existing = {n for n in names if pattern.fullmatch(n)}
    journals, journaled = _journals(output, split, names)
    owned = _listed_shards(output, split) | journaled
    return OutputState(
        owned=frozenset(owned),
        foreign=tuple(sorted(existing - owned)),
        journals=tuple(journals),
        existing=frozenset(existing),
    )


def refuse_foreign_shards(output: str, split: str, state: OutputState | None = None) -> None:
    """LabelfixError when ``output`` holds ``split``-shard-named files that no labelfix manifest
    lists: a ``{split}-*`` glob (DeepLab, Model Garden) would read them with the new shards, and
    removing them could lose someone's data. Called before anything is written."""
    state = state if state is not None else output_state(output, split)
    if state.foreign:
        more = f" (and {len(state.foreign) - 1} more)" if len(state.foreign) > 1 else ""
        raise LabelfixError(
            f"{fs.join(output, state.foreign[0])}{more}: a {split} shard that no labelfix manifest "
            f"lists (another tool's records?); a {split}-* glob would read it with the new "
            "shards: move it away, or write to another directory; nothing was written"
        )


def publish(
    output: str, split: str, staged: Sequence[tuple[str, ShardInfo]], manifest: dict
) -> None:
    """Move finished shards (``(staged path, info)``) to their names in ``output``, then put the
    manifest listing them in place; shards of ``split`` from an earlier run are removed last.

    Shared by the local writer and the Beam runner; ``output`` and the staged paths may be local
    or remote (:mod:`labelfix.io.fs`). The protocol keeps a readable output at every instant:

    1. Refuse (LabelfixError, nothing moved) if a shard-named file that no labelfix manifest
       lists has appeared (:func:`refuse_foreign_shards`): it is never replaced or removed.
    2. Write a journal, ``.{split}.labelfix-publish.<hex>``: one line per shard name this run
       writes or the earlier output owns, so that a run that is killed from here on leaves
       nothing that the next run does not recognise as its own.
    3. Write the new manifest under a temporary name.
    4. Rename the new shards into place: first those whose names the old output does not use
       (the old manifest and its shards stay complete and valid), then those that replace an old
       shard of the same name (unavoidable with DeepLab's ``-NNNNN-of-MMMMM`` names).
    5. Rename the manifest into place: the commit point. Before it, the old manifest is the one
       readers see; after it, the new one, listing exactly the new shards.
    6. Remove the old shards the new manifest does not list, then the journals.

    Ctrl-C and SIGTERM are held for steps 2-6 (:func:`~labelfix.io.atomic.deferred_signals`) and
    delivered after, so an interrupt never lands between two renames. What only a kill, a crash
    or a failing disk can still leave: new shards beside the old manifest (verify names them as
    shards the manifest does not list, and the journal as an interrupted run), or, once a shard
    with an old name is replaced, old manifest entries whose checksums no longer match (verify
    says so). Either way the journal lets the next run replace them all. An OSError before
    the commit undoes what it can (new shards under new names are removed again) and raises a
    LabelfixError that says whether the earlier output is unchanged.
    """
    manifest["shards"] = [s.__dict__ for _, s in staged]
    final_manifest = manifest_path(output, split)
    new = [s.file for _, s in staged]
    with deferred_signals():
        state = output_state(output, split)
        refuse_foreign_shards(output, split, state)
        had_manifest = fs.exists(final_manifest)
        journal = fs.join(output, f".{split}.labelfix-publish.{uuid.uuid4().hex[:12]}")
        data = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
        moved: list[str] = []
        replaced = False
        manifest_tmp = None
        try:
            _write_plain(journal, "".join(f"{n}\n" for n in sorted({*new, *state.owned})))
            manifest_tmp = _stage(final_manifest, data)
            order = sorted(staged, key=lambda item: item[1].file in state.existing)
            for tmp, shard in order:
                replaced = replaced or shard.file in state.existing
                move_into_place(tmp, fs.join(output, shard.file))
                moved.append(shard.file)
            move_into_place(manifest_tmp, final_manifest)  # the commit point
        except OSError as err:
            undone = _undo(output, moved, state.existing, journal, manifest_tmp, replaced)
            if not undone:
                after = f"the {split} output is incomplete until a run finishes"
            elif had_manifest:
                after = f"the earlier {split} output is unchanged; nothing was published"
            else:
                after = "the output has no manifest until a run finishes"
            raise LabelfixError(
                f"{err.filename or output}: cannot write ({err.strerror or err}); {after}: "
                "run the same command again"
            ) from err
        stale = sorted((state.owned & state.existing) - set(new))
        try:
            for name in stale:
                with contextlib.suppress(FileNotFoundError):
                    fs.remove(fs.join(output, name))
            for path in (*state.journals, journal):
                with contextlib.suppress(FileNotFoundError):
                    fs.remove(path)
        except OSError as err:
            raise LabelfixError(
                f"{err.filename or output}: cannot remove a file of the earlier {split} output "
                f"({err.strerror or err}); the new output is complete, but a {split}-* glob "
                "would read the old shards too: run the same command again"
            ) from err


def _write_plain(path: str, text: str) -> None:
    """Write a small new file under its final name (a journal: a unique name, read line by line,
    so a torn write costs at most a line that no rename has acted on yet)."""
    with fs.open(path, "wb") as fh:
        fh.write(text.encode("utf-8"))


def _stage(final: str, data: bytes) -> str:
    """``data`` in a complete temporary file that :func:`move_into_place` renames to ``final``
    (beside it for a local path, a local temporary file for a remote one)."""
    if fs.is_url(final):
        fd, tmp = tempfile.mkstemp(prefix=".labelfix-", suffix=TMP_SUFFIX)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return tmp
    tmp = temporary_name(final)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OSError(err.errno, err.strerror, final) from err
    return tmp


def _undo(output, moved, existing, journal, manifest_tmp, replaced: bool) -> bool:
    """Undo an unfinished publish: True when the earlier output is back as it was."""
    undone = not replaced
    for name in moved:
        if name not in existing:
            with contextlib.suppress(OSError):
                fs.remove(fs.join(output, name))
    if manifest_tmp is not None:  # always a local file
        with contextlib.suppress(OSError):
            os.unlink(manifest_tmp)
    if undone:
        with contextlib.suppress(OSError):
            fs.remove(journal)
    return undone


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
