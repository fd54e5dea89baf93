"""``stats`` and ``to-tfrecord`` as Apache Beam pipelines (DirectRunner, Dataflow, Flink, Spark).

The per-mask work is the library's own, unchanged: :func:`labelfix.checks.scan.scan_file` for
stats, :func:`labelfix.records.prepare.prepare_pair` (read -> map -> check -> encode) and the same
Example serialisation for TFRecords. Only the plumbing differs from the local multi-process runner:

* the driver lists the files (:mod:`labelfix.io.fs`, so ``gs://`` and ``s3://`` work) and stages
  the listing as a JSON-lines file that the pipeline reads, so the job graph stays small however
  many masks there are;
* stats: ``scan_file`` per mask, then a ``CombineGlobally`` of the per-file reports into one
  :class:`~labelfix.checks.stats.DatasetStats`, equal to the local report (lists in listing order);
* to-tfrecord: ``prepare_pair`` per pair, ``WriteToTFRecord`` with the local shard names
  (``{split}-SSSSS-of-NNNNN.tfrecord``) and compression into a hidden staging directory under
  the output; per-shard record counts and sha256 are read back from what was written. Only when
  every pair passed are the shards moved to their final names and the manifest written last;
  otherwise the run ends with the local runner's
  :class:`~labelfix.io.pairing.DatasetProblems`
  and the staging directory is deleted. Record order is whatever the runner produces.

Pipeline options are Beam's own command-line flags (``["--runner=DataflowRunner", ...]``); the
default is the DirectRunner. A cluster runner needs inputs, output and ``--temp_location`` on
storage every worker can reach (``gs://``, ``s3://``, HDFS).

>>> stats = scan_dataset_beam(["masks/"], ignore=(255,), num_classes=21)   # doctest: +SKIP
>>> result = write_dataset_beam(images="img", masks="gt", output="gs://b/tfr",
...                             num_classes=21, pipeline_args=["--runner=DataflowRunner"])
...                                                                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Iterable, Sequence

from labelfix.checks.scan import FileReport, scan_file
from labelfix.checks.stats import DatasetStats, ValueStats
from labelfix.errors import LabelfixError, MissingExtra
from labelfix.io import fs
from labelfix.io.door import Door, Rules, open_private
from labelfix.io.inputs import watch_inputs
from labelfix.io.masks import iter_mask_files
from labelfix.io.pairing import Pair
from labelfix.records.manifest import RecordTally, build_manifest
from labelfix.records.prepare import Prepared, RecordPlan, prepare_pair, record_bytes
from labelfix.records.shards import (
    ShardInfo,
    publish,
    refuse_foreign_shards,
    shard_info,
    shard_name,
)
from labelfix.records.spec import WriteSpec
from labelfix.records.write import WriteResult, invalid, plan_pairs

try:
    import apache_beam as beam
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.options.pipeline_options import PipelineOptions
except ImportError:  # pragma: no cover - exercised through the CLI's message
    raise MissingExtra("--runner beam needs Apache Beam: pip install 'labelfix[beam]'") from None

__all__ = ["scan_dataset_beam", "write_dataset_beam"]

#: Estimated bytes a record adds to its image and mask files (keys, lengths, CRCs).
RECORD_OVERHEAD = 200


# ----------------------------------------------------------------------------- plumbing


def _options(pipeline_args: Sequence[str]) -> PipelineOptions:
    return PipelineOptions(list(pipeline_args))


def _stage_items(directory: str, items: Iterable[list]) -> str:
    """Write one JSON array per line to ``directory/inputs.jsonl`` (a staging directory of the
    run's door); returns its path."""
    path = fs.join(directory, "inputs.jsonl")
    with open_private(path) as fh:
        for item in items:
            fh.write(json.dumps(item).encode("utf-8") + b"\n")
    return path


def _read_items(pipeline, path: str):
    """The staged items, spread over the workers (not fused with the file read)."""
    return (
        pipeline
        | "Read listing" >> beam.io.ReadFromText(path)
        | "Parse listing" >> beam.Map(json.loads)
        | "Spread" >> beam.Reshuffle()
    )


def _save_json(pcoll, path: str, label: str):
    """Write the single element of ``pcoll`` as JSON to ``path`` (read back by the driver)."""
    return (
        pcoll
        | f"{label} as JSON" >> beam.Map(json.dumps)
        | f"Save {label}" >> beam.io.WriteToText(path, shard_name_template="", num_shards=1)
    )


def _load_json(path: str):
    return json.loads(fs.read_bytes(path))


# ----------------------------------------------------------------------------- stats


def _scan_item(item: list, func) -> tuple[int, FileReport]:
    index, path, relpath = item
    return index, func((path, relpath))


@dataclasses.dataclass
class _StatsPartial:
    """A partial :class:`DatasetStats` plus what restores the listing order when merged."""

    stats: DatasetStats
    #: (height, width) -> index of the first file of that size (the local first-seen order)
    size_first: dict = dataclasses.field(default_factory=dict)
    #: path -> listing index, for files that appear in the report's file lists
    order: dict = dataclasses.field(default_factory=dict)


class _StatsFn(beam.CombineFn):
    """Folds ``(index, FileReport)`` with :meth:`DatasetStats.add`; equal to the local fold."""

    def __init__(self, ignore: tuple[int, ...], num_classes: int | None):
        self.ignore, self.num_classes = ignore, num_classes

    def create_accumulator(self) -> _StatsPartial:
        return _StatsPartial(DatasetStats(ignore=self.ignore, num_classes=self.num_classes))

    def add_input(self, acc: _StatsPartial, item: tuple[int, FileReport]) -> _StatsPartial:
        index, report = item
        acc.stats.add(report)
        if report.error is None:
            size = (report.height, report.width)
            acc.size_first[size] = min(index, acc.size_first.get(size, index))
        if report.error is not None or not report.is_label or report.all_void or report.bad_values:
            acc.order[report.path] = index
        return acc

    def merge_accumulators(self, accs: Iterable[_StatsPartial]) -> _StatsPartial:
        accs = iter(accs)
        merged = next(accs)
        for acc in accs:
            merged.stats.merge(acc.stats)
            for size, index in acc.size_first.items():
                merged.size_first[size] = min(index, merged.size_first.get(size, index))
            merged.order.update(acc.order)
        return merged

    def extract_output(self, acc: _StatsPartial) -> dict:
        stats, first, order = acc.stats, acc.size_first, acc.order
        stats.sizes = dict(sorted(stats.sizes.items(), key=lambda kv: first[kv[0]]))
        stats.unreadable.sort(key=lambda entry: order[entry[0]])
        stats.not_labels.sort(key=lambda entry: order[entry[0]])
        stats.all_void.sort(key=order.__getitem__)
        stats.interpolated.sort(key=order.__getitem__)
        for files in stats.out_of_range.values():
            files.sort(key=order.__getitem__)
        return _stats_to_json(stats)


def _stats_to_json(stats: DatasetStats) -> dict:
    """Every field of ``stats`` as JSON data, in order (:func:`_stats_from_json` reverses it)."""
    return {
        "ignore": list(stats.ignore),
        "num_classes": stats.num_classes,
        "files": stats.files,
        "label_files": stats.label_files,
        "total_pixels": stats.total_pixels,
        "void_pixels": stats.void_pixels,
        "kinds": list(stats.kinds.items()),
        "sizes": [[h, w, n] for (h, w), n in stats.sizes.items()],
        "values": [
            [v, s.pixels, s.images, s.image_pixels, s.fringe] for v, s in stats.values.items()
        ],
        "unreadable": stats.unreadable,
        "not_labels": stats.not_labels,
        "all_void": stats.all_void,
        "out_of_range": list(stats.out_of_range.items()),
        "suspects": list(stats.suspects.items()),
        "specks": stats.specks,
        "interpolated": stats.interpolated,
        "artifacts": stats.artifacts,
    }


def _stats_from_json(data: dict) -> DatasetStats:
    return DatasetStats(
        ignore=tuple(data["ignore"]),
        num_classes=data["num_classes"],
        files=data["files"],
        label_files=data["label_files"],
        total_pixels=data["total_pixels"],
        void_pixels=data["void_pixels"],
        kinds=dict((k, n) for k, n in data["kinds"]),
        sizes={(h, w): n for h, w, n in data["sizes"]},
        values={v: ValueStats(p, i, ip, f) for v, p, i, ip, f in data["values"]},
        unreadable=[tuple(e) for e in data["unreadable"]],
        not_labels=[tuple(e) for e in data["not_labels"]],
        all_void=list(data["all_void"]),
        out_of_range={v: list(files) for v, files in data["out_of_range"]},
        suspects={v: list(entry) for v, entry in data["suspects"]},
        specks=data["specks"],
        interpolated=list(data["interpolated"]),
        artifacts=data["artifacts"],
    )


def scan_dataset_beam(
    paths: Iterable[str | os.PathLike],
    *,
    glob: str | None = None,
    ignore: Sequence[int] = (),
    num_classes: int | None = None,
    images: str | os.PathLike | None = None,
    pipeline_args: Sequence[str] = (),
    **read_options,
) -> DatasetStats:
    """:func:`labelfix.checks.stats.scan_dataset` as a Beam pipeline; the same DatasetStats.

    ``pipeline_args`` are Beam flags (default: the DirectRunner). The listing and the result
    pass through ``--temp_location`` when given (needed on a cluster), else a local temporary
    directory. ``read_options`` (``colours``, ``artifacts``) go to
    :func:`~labelfix.checks.scan.scan_file`.
    """
    ignore = tuple(ignore)
    paths = list(paths)
    watch = watch_inputs([*paths, images])  # inputs being rewritten in place: refused
    listed = iter_mask_files(paths, glob=glob)
    items = [[i, path, rel] for i, (path, rel) in enumerate(listed)]
    if not items:
        return DatasetStats(ignore=ignore, num_classes=num_classes)
    func = functools.partial(
        scan_file,
        ignore=ignore,
        num_classes=num_classes,
        images=os.fspath(images) if images is not None else None,
        **read_options,
    )
    options = _options(pipeline_args)
    door = Door(Rules.of("stats", inputs=paths))
    with door, door.scratch(options.get_all_options().get("temp_location")) as staging:
        listing = _stage_items(staging, items)
        result = fs.join(staging, "stats.json")
        with beam.Pipeline(options=options) as pipeline:
            reports = _read_items(pipeline, listing) | "Scan" >> beam.Map(_scan_item, func)
            totals = reports | "Fold" >> beam.CombineGlobally(_StatsFn(ignore, num_classes))
            _save_json(totals, result, "stats")
        stats = _stats_from_json(_load_json(result))
    watch.confirm()
    return stats


# ----------------------------------------------------------------------------- to-tfrecord


class _EncodeFn(beam.DoFn):
    """One pair -> its serialised Example (main output), or its problems, plus its class tally."""

    def __init__(self, plan: RecordPlan):
        self.plan = plan

    def process(self, item: list):
        index, mask, image, source_id, filename = item
        pair = Pair(mask=mask, image=image, source_id=source_id, filename=filename)
        result = prepare_pair(pair, self.plan)
        if not isinstance(result, Prepared):
            yield beam.pvalue.TaggedOutput("problems", (index, list(result.problems)))
            return
        yield record_bytes(pair, result, self.plan.encoding)
        yield beam.pvalue.TaggedOutput("tally", dataclasses.replace(result, mask=b""))


class _TallyFn(beam.CombineFn):
    """Class pixel/image counts of the written records, with :class:`RecordTally` as locally."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def create_accumulator(self) -> RecordTally:
        return RecordTally(self.num_classes)

    def add_input(self, acc: RecordTally, prepared: Prepared) -> RecordTally:
        acc.add(prepared)
        return acc

    def merge_accumulators(self, accs: Iterable[RecordTally]) -> RecordTally:
        accs = iter(accs)
        merged = next(accs)
        for acc in accs:
            merged.merge(acc)
        return merged

    def extract_output(self, acc: RecordTally) -> dict:
        return dataclasses.asdict(acc)


def _shard_json(path: str, compression: str) -> list:
    info = shard_info(path, compression=compression)
    return [info.file, info.records, info.bytes, info.sha256]


def _estimated_shards(pairs: Sequence[Pair], images: str, masks: str, size_limit: int) -> int:
    """Shards for ``size_limit`` bytes each, from the input file sizes (one listing per dir)."""
    sizes = fs.file_sizes(images) | fs.file_sizes(masks)
    total = sum(sizes.get(p.image, 0) + sizes.get(p.mask, 0) + RECORD_OVERHEAD for p in pairs)
    return max(1, math.ceil(total / size_limit))


def write_dataset_beam(
    spec: WriteSpec | None = None, *, pipeline_args: Sequence[str] = (), **options
) -> WriteResult:
    """:func:`labelfix.records.write.write_dataset` as a Beam pipeline (``WriteToTFRecord``).

    The same :class:`~labelfix.records.spec.WriteSpec` (or its fields as keyword ``options``),
    checks, keys, shard names, compression and manifest as the local runner; see the module doc
    for what differs. Without ``num_shards`` the shard count is fixed before the run from the
    input file sizes, so shards hold about ``shard_size`` each (records are larger than their
    files with ``mask_encoding="raw"``: give ``num_shards`` there).
    """
    spec = spec if spec is not None else WriteSpec(**options)
    watch = watch_inputs([spec.images, spec.masks])
    pairs, skipped, pairing_notes = plan_pairs(spec)
    num_shards = spec.num_shards or _estimated_shards(
        pairs, spec.images, spec.masks, spec.size_limit
    )
    items = ([i, p.mask, p.image, p.source_id, p.filename] for i, p in enumerate(pairs))
    # the launching process holds the output's lock for the life of the pipeline
    door = Door(Rules.of("to-tfrecord", inputs=[spec.images, spec.masks]))
    with door, door.outlet(spec.output).staging() as staging:
        outlet = door.outlet(spec.output)
        refuse_foreign_shards(outlet, spec.split)  # before anything is written
        listing = _stage_items(staging, items)
        files = {name: fs.join(staging, f"{name}.json") for name in ("problems", "tally", "shards")}
        _run_write(spec, listing, staging, files, num_shards, pipeline_args)
        problems = sorted(_load_json(files["problems"]))
        if problems:
            lines = [line for _, found in problems for line in found]
            raise invalid(spec, lines, len(problems), len(pairs))
        tally = RecordTally(**_load_json(files["tally"]))
        infos = [ShardInfo(*entry) for entry in sorted(_load_json(files["shards"]))]
        expected = [shard_name(spec.split, i, num_shards) for i in range(num_shards)]
        if [s.file for s in infos] != expected or sum(s.records for s in infos) != tally.records:
            raise LabelfixError(
                f"{spec.output}: the Beam run wrote {len(infos)} shard(s) with "
                f"{sum(s.records for s in infos)} records, expected {num_shards} with "
                f"{tally.records}; nothing was published"
            )
        staged = [(fs.join(staging, s.file), s) for s in infos]
        watch.confirm()
        publish(outlet, spec.split, staged, build_manifest(spec, tally))
    return WriteResult.of(
        spec,
        infos,
        tally,
        skipped,
        stale_temporaries=door.stale,
        notes=(*pairing_notes, *door.notes),
    )


def _run_write(
    spec: WriteSpec,
    listing: str,
    staging: str,
    files: dict[str, str],
    num_shards: int,
    pipeline_args: Sequence[str],
) -> None:
    """The pipeline: prepare each pair, write the records, save problems, tally and shards."""
    compression = (
        CompressionTypes.GZIP if spec.compression == "gzip" else CompressionTypes.UNCOMPRESSED
    )
    with beam.Pipeline(options=_options(pipeline_args)) as pipeline:
        results = _read_items(pipeline, listing) | "Prepare" >> beam.ParDo(
            _EncodeFn(RecordPlan.from_spec(spec))
        ).with_outputs("problems", "tally", main="records")
        written = results.records | "Write" >> beam.io.WriteToTFRecord(
            fs.join(staging, spec.split),
            file_name_suffix=".tfrecord",
            num_shards=num_shards,
            shard_name_template="-SSSSS-of-NNNNN",
            compression_type=compression,
        )
        shards = (
            written
            | "Read back" >> beam.Map(_shard_json, spec.compression)
            | "All shards" >> beam.combiners.ToList()
        )
        problems = results.problems | "All problems" >> beam.combiners.ToList()
        tally = results.tally | "Tally" >> beam.CombineGlobally(_TallyFn(spec.num_classes))
        _save_json(shards, files["shards"], "shards")
        _save_json(problems, files["problems"], "problems")
        _save_json(tally, files["tally"], "tally")
