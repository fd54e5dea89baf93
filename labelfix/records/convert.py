"""Rewrite another tool's TFRecords as labelfix records: ``to-tfrecord --from-records``.

Each record of the input shards (:mod:`labelfix.records.foreign`: files, globs, directories;
DeepLab / Model Garden keys unless the spec's ``keys`` say otherwise) goes through the same
steps as an (image, mask) pair (:func:`~labelfix.records.prepare.prepare_mask`): its mask is
read as ids (a palette PNG as its indices, never the luminance TensorFlow would read), mapped by
the spec's label map (``--map``, ``--preset``, ``--luminance``), checked against
``num_classes`` and encoded; its image must decode and match the mask's size, and is copied
byte for byte. The worker serialises the whole new Example; the parent frames the records into
shards through the writer of :mod:`labelfix.records.write` (one door, the input shards as the
run's inputs: it refuses to write over them). One bad record stops the run and leaves no shard.

On records of your own::

    write_dataset(records=["tfrecord/"], output="fixed", label_map=preset("voc"), split="val")
    # -> WriteResult(output='fixed', split='val', ..., num_records=1449, ...)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence

from labelfix.io import fs
from labelfix.io.door import Door, Rules
from labelfix.io.images import check_image_bytes
from labelfix.io.inputs import watch_inputs
from labelfix.parallel import ordered_map
from labelfix.records.example import (
    RecordKeys,
    feature_key,
    record_filename,
    serialize_example,
)
from labelfix.records.foreign import (
    BadRecord,
    compression_of,
    find_shards,
    iter_records,
    parse_record,
    record_mask,
)
from labelfix.records.prepare import Prepared, RecordPlan, Rejected, prepare_mask
from labelfix.records.shards import count_records, refuse_foreign_shards
from labelfix.records.spec import WriteSpec
from labelfix.records.write import WriteResult, write_shards


def prepare_record(
    item: tuple[str, int, bytes], *, plan: RecordPlan, keys: RecordKeys, filename: str
) -> Prepared | Rejected:
    """One input record -> its checked, rewritten Example (:attr:`Prepared.record`), or why
    not (in a worker; never raises for bad data). ``image/filename`` keeps the record's own
    name (``filename="stem"`` drops an extension), ``image/source_id`` its own id."""
    shard, index, data = item
    try:
        record = parse_record(shard, index, data, keys)
    except BadRecord as err:
        return Rejected((str(err),))
    at = record.where
    prepared = prepare_mask(
        at,
        record.mask,
        lambda: record_mask(record, colours=plan.colours),
        keys.image,
        lambda: (record.image, check_image_bytes(record.image)),
        plan,
        image_at=f"{at}: {keys.image}",
    )
    if not isinstance(prepared, Prepared):
        return prepared
    stem = fs.basename(shard).split(".")[0]
    # names stay their own bytes (surrogate escapes through str), UTF-8 or not
    name = (record.filename or record.source_id or b"").decode("utf-8", "surrogateescape")
    name = name or f"{stem}-{index:05d}"
    example = serialize_example(
        {
            feature_key("image"): record.image,
            feature_key("image_format"): prepared.image_format,
            feature_key("filename"): record_filename(name, filename),
            feature_key("source_id"): record.source_id or record_filename(name),
            feature_key("height"): prepared.height,
            feature_key("width"): prepared.width,
            feature_key("channels"): prepared.channels,
            feature_key("mask"): prepared.mask,
            feature_key("mask_format"): plan.encoding,
        }
    )
    return dataclasses.replace(prepared, mask=b"", record=example)


def _then(prepared: Iterable, read_problems: list[tuple[str, str]]) -> Iterator:
    """The prepared records, then one rejection per record the shards' framing lost."""
    yield from prepared
    for at, reason in read_problems:
        yield Rejected((f"{at}: {reason}",))


def _count(shards: Sequence[str]) -> int:
    """Records in the shards (framing only): ``num_shards`` spreads them evenly."""
    total = 0
    for shard in shards:

        def chunks(shard: str = shard) -> Iterator[bytes]:
            with fs.open(shard, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    yield chunk

        with contextlib.suppress(OSError, ValueError):  # reading the records names it
            total += count_records(chunks(), compression=compression_of(shard))
    return total


def write_from_records(
    spec: WriteSpec,
    *,
    jobs: int | None = None,
    on_record: Callable[..., None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> WriteResult:
    """Rewrite the records of ``spec.records`` as the split ``spec.split`` in ``spec.output``,
    with a manifest; see the module doc (:func:`labelfix.records.write.write_dataset` calls it
    for a spec with ``records``)."""
    shards = find_shards(spec.records)
    watch = watch_inputs(shards)
    plan = RecordPlan.from_spec(spec)
    work = functools.partial(prepare_record, plan=plan, keys=spec.keys, filename=spec.filename)
    total = _count(shards) if spec.num_shards is not None else None
    if on_record is not None:
        on_record(0, total=total)
    with Door(Rules.of("to-tfrecord", inputs=[*spec.records, *shards])) as door:
        outlet = door.outlet(spec.output)
        notes = tuple(door.notes)
        if on_note is not None:
            for note in notes:
                on_note(note)
        refuse_foreign_shards(outlet, spec.split)  # before anything is written
        read_problems: list[tuple[str, str]] = []
        prepared = ordered_map(
            work,
            iter_records(shards, read_problems),
            jobs=jobs,
            chunksize=8,
            preload=("labelfix.records.convert",),
        )
        infos, tally = write_shards(
            spec,
            outlet,
            _then(prepared, read_problems),
            total=total,
            record_of=lambda i, result: result.record,
            on_record=on_record,
            confirm=watch.confirm,
            what="record",
        )
    return WriteResult.of(spec, infos, tally, (), stale_temporaries=door.stale, notes=notes)
