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
import re
import struct
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from labelfix.errors import LabelfixError
from labelfix.io import fs
from labelfix.io.atomic import deferred_signals
from labelfix.io.door import Outlet, StagedFile
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


class ShardSet:
    """Shards under temporary names; moved to their final names only by :meth:`finish`.

    Records are framed by :mod:`labelfix.records.framing` (no TensorFlow: the bytes are what
    ``tf.io.TFRecordWriter`` writes) into files the run's door gives
    (:meth:`~labelfix.io.door.Outlet.create`: beside their final names locally, a local
    temporary file uploaded by :func:`publish` for a remote output), hashed as they are written.
    ``count``, when known before the run, names the shards in error messages.
    """

    def __init__(self, outlet: Outlet, split: str, compression: str, *, count: int | None = None):
        self.outlet, self.output, self.split, self.count = outlet, outlet.root, split, count
        self.compression = compression
        self.temps: list[StagedFile] = []
        self.records: list[int] = []
        self.sizes: list[int] = []
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
        self.records.append(0)
        self.sizes.append(0)
        self.temps.append(None)  # named in an error of its creation
        first = fs.join(self.output, shard_name(self.split, len(self.temps) - 1, 0))
        raw = self._guarded(lambda: self.outlet.create(first, check=False))
        self.temps[-1] = raw
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
            if writer is not self.temps[-1]:  # gzip leaves the file beneath it open
                self._guarded(self.temps[-1].close)

    def discard(self) -> None:
        with contextlib.suppress(OSError, LabelfixError):
            self.close()
        self.writer = None
        for staged in self.temps:
            if staged is not None:
                staged.discard()
        self.temps = []

    def finish(
        self, manifest: dict, *, confirm: Callable[[], None] | None = None
    ) -> tuple[ShardInfo, ...]:
        """Move the shards to their final names and write the manifest last; ``confirm()`` is
        called just before (it raises to stop the publish: inputs changed meanwhile)."""
        self.close()
        count = len(self.temps)
        shards = [
            ShardInfo(
                file=shard_name(self.split, i, count),
                records=self.records[i],
                bytes=staged.size,
                sha256=staged.digest.hexdigest(),
            )
            for i, staged in enumerate(self.temps)
        ]
        if confirm is not None:
            confirm()
        # Ctrl-C waits until the temporary names are forgotten too: after publish() they are
        # the final shards' old names, and nothing may be removed by them.
        with deferred_signals():
            try:
                staged = [(t.path, info) for t, info in zip(self.temps, shards, strict=True)]
                publish(self.outlet, self.split, staged, manifest)
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


def _journals(output: str, split: str, names: Iterable[str]) -> list[str]:
    """The journals of the interrupted publishes of ``split`` in ``output``."""
    pattern = journal_pattern(split)
    return [fs.join(output, name) for name in sorted(names) if pattern.fullmatch(name)]


@dataclass(frozen=True)
class OutputState:
    """What a split's shards in an output directory are, before a run replaces them.

    ``owned``: shard-named files labelfix wrote and nobody changed since (the door's ledger,
    :mod:`labelfix.io.ledger`): a new run may replace or remove them. ``foreign``: every other
    shard-named file (another tool's records, e.g. DeepLab's own ``build_voc2012_data.py``
    output, or a shard edited by hand): never removed, and a run refuses to write beside them.
    """

    owned: frozenset[str]
    foreign: tuple[str, ...]
    journals: tuple[str, ...]
    existing: frozenset[str]


def output_state(outlet: Outlet, split: str) -> OutputState:
    """The :class:`OutputState` of ``split`` in the outlet's directory (empty when there is
    none)."""
    output = outlet.root
    try:
        names = fs.listdir(output)
    except (FileNotFoundError, NotADirectoryError):
        names = []
    pattern = shard_pattern(split)
    existing = {n for n in names if pattern.fullmatch(n)}
    owned = {n for n in existing if outlet.owns(fs.join(output, n))}
    return OutputState(
        owned=frozenset(owned),
        foreign=tuple(sorted(existing - owned)),
        journals=tuple(_journals(output, split, names)),
        existing=frozenset(existing),
    )


def refuse_foreign_shards(outlet: Outlet, split: str, state: OutputState | None = None) -> None:
    """LabelfixError when the outlet's directory holds ``split``-shard-named files that labelfix
    did not write (or that changed since): a ``{split}-*`` glob (DeepLab, Model Garden) would
    read them with the new shards, and removing them could lose someone's data. Called before
    anything is written."""
    state = state if state is not None else output_state(outlet, split)
    if state.foreign:
        more = f" (and {len(state.foreign) - 1} more)" if len(state.foreign) > 1 else ""
        raise LabelfixError(
            f"{fs.join(outlet.root, state.foreign[0])}{more}: a {split} shard that labelfix did "
            f"not write, or that changed since (another tool's records?); a {split}-* glob would "
            "read it with the new shards: move it away, or write to another directory; nothing "
            "was written"
        )


def publish(
    outlet: Outlet, split: str, staged: Sequence[tuple[str, ShardInfo]], manifest: dict
) -> None:
    """Move finished shards (``(staged path, info)``) to their names in the outlet's directory,
    then put the manifest listing them in place; shards of ``split`` from an earlier run are
    removed last.

    Shared by the local writer and the Beam runner; the output and the staged paths may be
    local or remote (:mod:`labelfix.io.fs`); every step goes through the door (the ledger notes
    each shard before it is renamed, so a killed run leaves nothing that is not labelfix's own).
    The protocol keeps a readable output at every instant:

    1. Refuse (LabelfixError, nothing moved) if a shard-named file labelfix did not write has
       appeared (:func:`refuse_foreign_shards`): it is never replaced or removed.
    2. Write a journal, ``.{split}.labelfix-publish.<hex>``, naming the shards this run writes:
       ``verify`` reports an interrupted publish by it.
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
    says so); the next run replaces them all. An OSError before the commit undoes what it can
    (new shards under new names are removed again) and raises a LabelfixError that says whether
    the earlier output is unchanged.
    """
    output = outlet.root
    manifest["shards"] = [s.__dict__ for _, s in staged]
    final_manifest = manifest_path(output, split)
    new = [s.file for _, s in staged]
    with deferred_signals():
        state = output_state(outlet, split)
        refuse_foreign_shards(outlet, split, state)
        had_manifest = fs.exists(final_manifest)
        journal = fs.join(output, f".{split}.labelfix-publish.{uuid.uuid4().hex[:12]}")
        data = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
        moved: list[str] = []
        replaced = False
        manifest_file = None
        try:
            outlet.write(journal, "".join(f"{n}\n" for n in sorted(new)).encode("utf-8"))
            manifest_file = outlet.create(final_manifest)
            manifest_file.write(data)
            manifest_file.close()
            order = sorted(staged, key=lambda item: item[1].file in state.existing)
            for tmp, shard in order:
                replaced = replaced or shard.file in state.existing
                outlet.commit(tmp, fs.join(output, shard.file), sha256=shard.sha256)
                moved.append(shard.file)
            manifest_file.commit()  # the commit point
        except OSError as err:
            undone = _undo(outlet, moved, state.existing, journal, manifest_file, replaced)
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
                outlet.remove(fs.join(output, name))
            for path in (*state.journals, journal):
                outlet.delete_own(path)
        except OSError as err:
            raise LabelfixError(
                f"{err.filename or output}: cannot remove a file of the earlier {split} output "
                f"({err.strerror or err}); the new output is complete, but a {split}-* glob "
                "would read the old shards too: run the same command again"
            ) from err


def _undo(outlet: Outlet, moved, existing, journal, manifest_file, replaced: bool) -> bool:
    """Undo an unfinished publish: True when the earlier output is back as it was."""
    undone = not replaced
    for name in moved:
        if name not in existing:
            with contextlib.suppress(OSError, LabelfixError):
                outlet.remove(fs.join(outlet.root, name))
    if manifest_file is not None:
        manifest_file.discard()
    if undone:
        with contextlib.suppress(OSError):
            outlet.delete_own(journal)
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
