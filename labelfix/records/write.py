"""Write (image, mask) pairs as sharded TFRecords that DeepLab and TF Model Garden read unchanged.

Read -> check -> encode -> write, as plain steps:

* :func:`~labelfix.io.pairing.find_pairs` pairs every mask with its image;
* worker processes (numpy + Pillow only, never TensorFlow) turn each pair into a checked,
  encoded mask plus image header facts (:func:`~labelfix.records.prepare.prepare_pair`);
* the parent reads the image bytes, serialises the ``tf.train.Example`` by hand and frames the
  records into shards under temporary names (:class:`~labelfix.records.shards.ShardSet`); they
  are renamed when every record is in, and the manifest is renamed last
  (:func:`~labelfix.records.shards.publish`). While the workers
  start, the parent imports TensorFlow or works through the first pairs itself.

One bad pair stops the run with :class:`~labelfix.io.pairing.DatasetProblems` listing every
problem, and no shard is left behind. Shard-named files in the output that no labelfix manifest
lists (another tool's records) stop the run before anything is written: a ``train-*`` glob would
read them with the new shards, and they are not labelfix's to remove. A local output directory
is locked for the whole run (:mod:`labelfix.io.lock`: a second run into it fails at once), and
the temporary shards a killed run left there are removed first (every file goes through the
door, :mod:`labelfix.io.door`). Inputs being rewritten in place stop the run, before it reads
them and again before it publishes (:mod:`labelfix.io.inputs`). The same
:class:`~labelfix.records.spec.WriteSpec` runs on Apache Beam or dask with
:func:`labelfix.engines.common.write_dataset_on`.

On a dataset of your own::

    result = write_dataset(images="JPEGImages", masks="SegmentationClass", output="tfrecords",
                           label_map=preset("voc"), num_classes=21)
    result.num_records, [s.file for s in result.shards][:1]
    # -> (2913, ['train-00000-of-00003.tfrecord'])
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from labelfix.checks.rules import expected_text
from labelfix.errors import LabelfixError, UsageError
from labelfix.io.door import Door, Rules
from labelfix.io.inputs import watch_inputs
from labelfix.io.pairing import DatasetProblems, Pair, find_pairs
from labelfix.labels import IGNORE_AS
from labelfix.parallel import BackgroundMap, default_jobs
from labelfix.records.example import record_filename
from labelfix.records.manifest import RecordTally, build_manifest, manifest_path
from labelfix.records.prepare import Prepared, RecordPlan, Rejected, prepare_pair, record_bytes
from labelfix.records.shards import ShardInfo, ShardSet, refuse_foreign_shards
from labelfix.records.spec import WriteSpec


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
    #: images stored turned as their EXIF orientation says, as PNG (``exif="rotate"``)
    rotated_images: int = 0
    #: temporary files of earlier, killed runs removed from the output directory
    stale_temporaries: int = 0
    #: lines worth a warning (a lock taken over from a killed run)
    notes: tuple[str, ...] = ()
    #: what the counts of the written split suggest is wrong (:func:`split_warnings`)
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        spec: WriteSpec,
        shards: Sequence[ShardInfo],
        tally: RecordTally,
        skipped: Sequence,
        *,
        stale_temporaries: int = 0,
        notes: Sequence[str] = (),
    ) -> WriteResult:
        stored_ignore, mask_dtype = spec.mask_storage()
        return cls(
            output=spec.output,
            split=spec.split,
            manifest=manifest_path(spec.output, spec.split),
            shards=tuple(shards),
            num_records=tally.records,
            num_classes=spec.num_classes,
            mask_encoding=spec.mask_encoding,
            mask_dtype=mask_dtype,
            compression=spec.compression,
            ignore=stored_ignore,
            ignore_as=IGNORE_AS if stored_ignore is not None else None,
            class_pixel_counts=tuple(tally.class_pixels),
            ignore_pixels=tally.ignore_pixels,
            passthrough=tally.passthrough,
            skipped=tuple(skipped),
            rotated_images=tally.rotated,
            stale_temporaries=stale_temporaries,
            notes=tuple(notes),
            warnings=split_warnings(
                spec.split,
                tally.class_pixels,
                tally.ignore_pixels,
                class_names=spec.label_map.class_names,
                void=spec.label_map.ignore,
            ),
        )

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
            "images_rotated": self.rotated_images,
            "skipped": list(self.skipped),
            "stale_temporaries_removed": self.stale_temporaries,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "shards": [s.__dict__ for s in self.shards],
        }


#: At most this many absent classes are named in a warning.
MAX_NAMED_CLASSES = 10


def split_warnings(
    split: str,
    class_pixels: Sequence[int],
    ignore_pixels: int,
    *,
    class_names: Sequence[str] | None = None,
    void: Sequence[int] = (),
) -> tuple[str, ...]:
    """Warnings about a written split's counts: classes with no pixel in any record, and more
    void than labelled pixels (a class written as void: 0/255 binary masks with ``--ignore
    255``). Said for every split, a small val split too: it is cheap, and the words say "in
    this split".

    >>> split_warnings("train", [900, 0], 1200, void=(255,))  # doctest: +NORMALIZE_WHITESPACE
    ('class 1 has no pixel in any record in this split (train)',
     '57% of the pixels in this split (train) are void (ignore 255): is 255 a class? Binary masks
     stored as 0/255 need --map 255:1 instead of --ignore 255')
    """
    warnings = []
    absent = [c for c, n in enumerate(class_pixels) if n == 0]
    if absent:
        names = class_names if class_names and len(class_names) == len(class_pixels) else None
        shown = [f"{c} ({names[c]})" if names else str(c) for c in absent[:MAX_NAMED_CLASSES]]
        more = len(absent) - len(shown)
        listing = ", ".join(shown) + (f" and {more} more" if more else "")
        if len(absent) == 1:
            warnings.append(f"class {listing} has no pixel in any record in this split ({split})")
        else:
            warnings.append(
                f"{len(absent)} of {len(class_pixels)} classes have no pixel in any record in "
                f"this split ({split}): {listing}"
            )
    total = sum(class_pixels) + ignore_pixels
    if total and 2 * ignore_pixels > total:
        share = f"{ignore_pixels / total:.0%}"
        if void:
            v = void[0]
            values = ", ".join(map(str, void))
            hint = (
                f" (ignore {values}): is {v} a class? Binary masks stored as 0/{v} need "
                f"--map {v}:1 instead of --ignore {v}"
            )
        else:
            hint = ": is the void value a class? Map it to its class id with --map"
        warnings.append(f"{share} of the pixels in this split ({split}) are void{hint}")
    return tuple(warnings)


def plan_pairs(spec: WriteSpec) -> tuple[list[Pair], list[str], tuple[str, ...]]:
    """The pairs of a run in record order, the unpaired files skipped, and the notes of the
    pairing (masks it left out, as Cityscapes' instance ids beside the label ids). Each pair's
    ``filename`` is what ``image/filename`` will hold (``spec.filename``)."""
    if spec.records is not None:
        raise UsageError(
            "records are rewritten on this machine: labelfix.records.write.write_dataset"
        )
    pairing = find_pairs(
        images=spec.images,
        masks=spec.masks,
        naming=spec.naming,
        ids=spec.ids,
        skip_unpaired=spec.skip_unpaired,
    )
    pairs = [
        dataclasses.replace(p, filename=record_filename(p.filename, spec.filename))
        for p in pairing.pairs
    ]
    skipped = list(pairing.unpaired)
    if not pairs:
        raise LabelfixError(f"{spec.masks}: no (image, mask) pairs to write")
    if spec.shuffle:
        order = np.random.default_rng(spec.seed).permutation(len(pairs))
        pairs = [pairs[i] for i in order]
    return pairs, skipped, pairing.notes


#: What every bad-value message says (:func:`labelfix.checks.rules.bad_value_message`).
BAD_VALUE_TEXT = " is not a class id ("


def invalid(
    spec: WriteSpec, problems: Sequence[str], bad_files: int, pairs: int, *, what: str = "pair"
):
    """The error a run with bad pairs ends with (the same for every runner).

    The expected values are named only when a problem is a bad value (not for a size mismatch
    or an unreadable file). Problems arrive as lines of text (the engines' workers send
    nothing else), so bad values are told by the words of their one message.
    """
    void = (spec.out,) if spec.out is not None else ()
    bad_values = any(BAD_VALUE_TEXT in line for line in problems)
    expected = f" ({expected_text(spec.num_classes, void)})" if bad_values else ""
    return DatasetProblems(
        f"{bad_files} of {pairs} {what}(s) cannot be written{expected}; no shard was written",
        problems,
        kind="invalid",
        files=bad_files,
    )


def write_dataset(
    spec: WriteSpec | None = None,
    *,
    jobs: int | None = None,
    on_record: Callable[..., None] | None = None,
    on_note: Callable[[str], None] | None = None,
    **options,
) -> WriteResult:
    """Write every (image, mask) pair as TFRecord shards plus a manifest; see the module doc.

    ``spec`` is a :class:`~labelfix.records.spec.WriteSpec`, or its fields are given as keyword
    ``options``; a spec with ``records`` rewrites another tool's TFRecords
    (:func:`labelfix.records.convert.write_from_records`). ``jobs`` worker processes prepare
    the pairs; ``on_record(0, total=N)`` is called once the N pairs are known, then
    ``on_record(1)`` as each pair is done;
    ``on_note(line)`` with each line worth a warning (also in the result's ``notes``). Raises
    :class:`~labelfix.io.lock.DirectoryLocked` when another run writes into
    the output directory.

    On a dataset of your own::

        write_dataset(images="img", masks="gt", output="tfr", num_classes=3,
                      label_map=LabelMap(ignore=(255,)))
        # -> WriteResult(output='tfr', split='train', ..., num_records=8, ...)
    """
    spec = spec if spec is not None else WriteSpec(**options)
    if spec.records is not None:
        from labelfix.records.convert import write_from_records

        return write_from_records(spec, jobs=jobs, on_record=on_record, on_note=on_note)
    watch = watch_inputs([spec.images, spec.masks])
    pairs, skipped, pairing_notes = plan_pairs(spec)
    if on_record is not None:
        on_record(0, total=len(pairs))
    with Door(Rules.of("to-tfrecord", inputs=[spec.images, spec.masks])) as door:
        outlet = door.outlet(spec.output)
        notes = (*pairing_notes, *door.notes)
        if on_note is not None:
            for note in notes:
                on_note(note)
        refuse_foreign_shards(outlet, spec.split)  # before anything is written
        infos, tally = _write_locked(spec, pairs, jobs, on_record, outlet, watch.confirm)
    return WriteResult.of(spec, infos, tally, skipped, stale_temporaries=door.stale, notes=notes)


def _write_locked(spec: WriteSpec, pairs: list[Pair], jobs, on_record, outlet, confirm):
    """Prepare the pairs on ``jobs`` workers and write the shards: ``(shard infos, tally)``."""
    plan = RecordPlan.from_spec(spec)
    work = functools.partial(prepare_pair, plan=plan)
    jobs = default_jobs() if not jobs or jobs < 1 else jobs
    results = None
    if jobs > 1 and len(pairs) > 16:
        # the workers get a label map whose lookup tables are not cached yet (smaller pickles)
        local_plan = dataclasses.replace(plan, label_map=dataclasses.replace(plan.label_map))
        results = BackgroundMap(
            work,
            pairs,
            jobs=jobs,
            local=functools.partial(prepare_pair, plan=local_plan),
            size=lambda r: len(r.mask) if isinstance(r, Prepared) else 256,
            preload=("labelfix.records.prepare",),
        )
    try:
        return write_shards(
            spec,
            outlet,
            results if results is not None else map(work, pairs),
            total=len(pairs),
            record_of=lambda i, result: record_bytes(pairs[i], result, spec.mask_encoding),
            on_record=on_record,
            confirm=confirm,
            started=results.help_until_started if results is not None else None,
        )
    finally:
        if results is not None:
            results.close()


def write_shards(
    spec: WriteSpec,
    outlet,
    prepared: Iterable[Prepared | Rejected],
    *,
    total: int | None,
    record_of: Callable[[int, Prepared], bytes],
    on_record=None,
    confirm: Callable[[], None] | None = None,
    started: Callable[[], None] | None = None,
    what: str = "pair",
) -> tuple[tuple[ShardInfo, ...], RecordTally]:
    """Frame each prepared item (``record_of(index, prepared)``: its serialised Example) into
    the split's shards, in order, and publish them with the manifest: ``(shard infos, tally)``.
    ``total`` items are known ahead (needed with ``num_shards``; None: a stream). One rejected
    item stops the run (:func:`invalid`, naming ``what`` the items are) and leaves no shard.
    ``started`` is called once the first shard is open (the workers may help meanwhile)."""
    shards = None
    try:
        shards = ShardSet(outlet, spec.split, spec.compression, count=spec.num_shards)
        if started is not None:
            started()
        tally = _write_records(spec, prepared, shards, on_record, total, record_of, what)
        return shards.finish(build_manifest(spec, tally), confirm=confirm), tally
    except BaseException:
        if shards is not None:
            shards.discard()
        raise


def _write_records(spec, prepared, shards: ShardSet, on_record, total, record_of, what):
    """Frame each prepared item into the shards, in order; after the first rejected one, only
    collect problems. Raises DatasetProblems when any item failed."""
    tally = RecordTally(spec.num_classes)
    problems: list[str] = []
    bad_files = count = 0
    if spec.num_shards is not None and total is None:
        raise ValueError("num_shards needs the number of records ahead")
    for i, result in enumerate(prepared):
        count = i + 1
        if on_record is not None:
            on_record(1)
        if isinstance(result, Rejected):
            problems.extend(result.problems)
            bad_files += 1
            shards.discard()
            continue
        if problems:
            continue
        record = record_of(i, result)
        if spec.num_shards is not None:
            while len(shards.temps) <= i * spec.num_shards // max(total, 1):
                shards.open_next()
        elif shards.writer is None or (
            shards.sizes[-1] and shards.sizes[-1] + len(record) > spec.size_limit
        ):
            shards.open_next()
        shards.write(record)
        tally.add(result)
    if problems:
        raise invalid(spec, problems, bad_files, count, what=what)
    if not count:
        source = ", ".join(spec.records) if spec.records is not None else spec.masks
        raise LabelfixError(f"{source}: no {what}s to write; nothing was written")
    while spec.num_shards is not None and len(shards.temps) < spec.num_shards:
        shards.open_next()  # more shards than records: empty shards keep the -of-N names true
    return tally
