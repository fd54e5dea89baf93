"""What every engine shares: list the inputs, cut them into batches, run the library's per-mask
functions on the batches wherever the engine runs them, fold the results, publish.

An engine (:mod:`labelfix.engines.beam`, :mod:`labelfix.engines.dask`) only runs a function over
a list of items on its workers and hands the results back in order (:class:`Engine`). Items and
results are JSON data, so they cross processes, machines and Beam's staged files unchanged; the
functions are picklable objects of this module (every worker imports labelfix).

* ``stats``: the masks are listed here and cut into batches of consecutive files; a worker scans
  a batch with :func:`~labelfix.checks.scan.scan_file` into a partial
  :class:`~labelfix.checks.stats.DatasetStats`; merged in batch order
  (:meth:`~labelfix.checks.stats.DatasetStats.merge`) they are the local runner's report, its
  lists in listing order.
* ``to-tfrecord``: the pairs are planned as locally (:func:`~labelfix.records.write.plan_pairs`);
  a worker prepares a batch of pairs (:func:`~labelfix.records.prepare.prepare_pair`) and frames
  its records, in order, into one piece file in a staging directory under the output. Once
  every batch passed, the shards are cut as the local runner cuts them (:func:`shard_layout`),
  workers copy each shard's records out of the pieces (compressing them if asked), and the
  shards are published through the door (:func:`~labelfix.records.shards.publish`): the same
  files, byte for byte, as the local runner writes. A bad pair ends the run with the local
  runner's :class:`~labelfix.io.pairing.DatasetProblems`, and nothing is published.
  While it runs, the staging directory holds the records twice (pieces and shards).

The launching process holds the output's lock for the whole run and watches the inputs
(:mod:`labelfix.io.inputs`) as the local runner does; workers write only into the run's staging
directories (:func:`~labelfix.io.door.open_private`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from labelfix.checks.scan import scan_file
from labelfix.checks.stats import DatasetStats
from labelfix.errors import LabelfixError, UsageError
from labelfix.io import fs
from labelfix.io.door import Door, Rules, open_private
from labelfix.io.inputs import watch_inputs
from labelfix.io.masks import iter_mask_files
from labelfix.io.pairing import Pair
from labelfix.labels.colormap import ColourPolicy
from labelfix.parallel import keep_freed_memory
from labelfix.records.framing import write_record
from labelfix.records.manifest import RecordTally, build_manifest
from labelfix.records.prepare import RecordPlan, Rejected, prepare_pair, record_bytes
from labelfix.records.shards import ShardInfo, publish, refuse_foreign_shards, shard_name
from labelfix.records.spec import WriteSpec
from labelfix.records.write import WriteResult, invalid, plan_pairs

#: The engines ``--runner`` names, besides ``local``.
ENGINES = ("beam", "dask")


class Engine:
    """Runs a function over a list of items on workers; subclasses say where.

    ``with engine.session(door): engine.map(func, items, what="scanning the masks")``: the
    session connects (or starts) what the engine needs, for the run of ``door`` (which issues
    its scratch directories), and lets it go at the end.
    """

    #: How messages name the engine: ``Beam's DaskRunner``, ``the dask cluster at tcp://...``.
    name = "an engine"

    @contextlib.contextmanager
    def session(self, door: Door) -> Iterator[Engine]:
        yield self

    def map(self, func: Callable, items: Sequence, *, what: str) -> list:
        """``[func(item) for item in items]``, computed by the workers; LabelfixError naming
        ``what`` and the engine when the engine fails."""
        raise NotImplementedError

    def failed(self, what: str, err: BaseException) -> LabelfixError:
        """The one-line error of a failed run: what failed, on which engine, and why."""
        return LabelfixError(f"{what} failed on {self.name}: {one_line(err)}")


def one_line(err: BaseException, limit: int = 300) -> str:
    """``OSError: Timed out trying to connect ...``: the first line of an error, shortened."""
    text = str(err).strip().splitlines()
    reason = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def engine_for(runner: str, args: Sequence[str] = ()) -> Engine:
    """The engine ``--runner`` names, configured by the options given after ``--``."""
    if runner == "beam":
        from labelfix.engines.beam import BeamEngine

        return BeamEngine(args)
    if runner == "dask":
        from labelfix.engines.dask import DaskEngine

        return DaskEngine.from_args(args)
    raise UsageError(f"unknown runner {runner!r} (expected one of: local, {', '.join(ENGINES)})")


# ----------------------------------------------------------------------------- paths


def absolute(path: str) -> str:
    """A local path as an absolute one (a worker's working directory is its own); URLs as
    they are."""
    return path if fs.is_url(path) else os.path.abspath(path)


def _in_worker() -> None:
    """Once per worker process: keep freed memory for the next file
    (:func:`~labelfix.parallel.keep_freed_memory`; dask's workers start with glibc told to hand
    back every freed block, which made each mask 2-3x slower to decode)."""
    global _WORKER_READY
    if not _WORKER_READY:
        keep_freed_memory()
        _WORKER_READY = True


_WORKER_READY = False


def _resolved(base: str, path: str) -> str:
    """``path`` as the launching process, working in ``base``, means it."""
    return path if fs.is_url(path) or os.path.isabs(path) else os.path.join(base, path)


# ----------------------------------------------------------------------------- batches

#: About this many batches per run: enough to keep many workers busy and balanced, ...
TARGET_BATCHES = 64
#: ... with at most this many items in each (more batches for larger datasets).
MAX_BATCH = 256


def batch_size(count: int) -> int:
    """Items per batch for ``count`` items.

    >>> batch_size(12), batch_size(1000), batch_size(10**6)
    (1, 16, 256)
    """
    return min(MAX_BATCH, max(1, math.ceil(count / TARGET_BATCHES)))


def batches(items: Sequence, size: int | None = None) -> list[list]:
    """``[[index, [item, ...]], ...]``: consecutive items, ``size`` (default
    :func:`batch_size`) at a time.

    >>> batches(["a", "b", "c"], 2)
    [[0, ['a', 'b']], [1, ['c']]]
    """
    size = size or batch_size(len(items))
    return [
        [i, list(items[start : start + size])] for i, start in enumerate(range(0, len(items), size))
    ]


# ----------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class ScanBatch:
    """A batch of ``[path, relpath]`` masks -> their partial DatasetStats, as JSON (a worker's
    job; the options are :func:`~labelfix.checks.scan.scan_file`'s). Relative paths are read
    from ``base`` (the launching process's working directory) and reported as given."""

    base: str
    ignore: tuple[int, ...]
    num_classes: int | None
    images: str | None = None
    colours: ColourPolicy | None = None
    artifacts: bool = False

    def __call__(self, batch: list) -> dict:
        _in_worker()
        _, items = batch
        stats = DatasetStats(ignore=self.ignore, num_classes=self.num_classes)
        for path, relpath in items:
            report = scan_file(
                (_resolved(self.base, path), relpath),
                ignore=self.ignore,
                num_classes=self.num_classes,
                images=self.images,
                colours=self.colours,
                artifacts=self.artifacts,
            )
            stats.add(dataclasses.replace(report, path=path))
        return stats.to_json()


def fold_stats(partials: Iterable[dict], *, ignore: tuple[int, ...], num_classes) -> DatasetStats:
    """Merge partial stats (JSON, in batch order) into the dataset's."""
    stats = DatasetStats(ignore=ignore, num_classes=num_classes)
    for partial in partials:
        stats.merge(DatasetStats.from_json(partial))
    return stats


def scan_dataset_on(
    engine: Engine,
    paths: Iterable[str | os.PathLike],
    *,
    glob: str | None = None,
    ignore: Sequence[int] = (),
    num_classes: int | None = None,
    images: str | os.PathLike | None = None,
    colours: ColourPolicy | None = None,
    artifacts: bool = False,
) -> DatasetStats:
    """:func:`labelfix.checks.stats.scan_dataset` on ``engine``: the same DatasetStats."""
    ignore, paths = tuple(ignore), list(paths)
    watch = watch_inputs([*paths, images])  # inputs being rewritten in place: refused
    listed = [[path, relpath] for path, relpath in iter_mask_files(paths, glob=glob)]
    stats = DatasetStats(ignore=ignore, num_classes=num_classes)
    if listed:
        scan = ScanBatch(
            base=os.getcwd(),
            ignore=ignore,
            num_classes=num_classes,
            images=absolute(os.fspath(images)) if images is not None else None,
            colours=colours,
            artifacts=artifacts,
        )
        with Door(Rules.of("stats", inputs=paths)) as door, engine.session(door):
            partials = engine.map(scan, batches(listed), what="scanning the masks")
        stats = fold_stats(partials, ignore=ignore, num_classes=num_classes)
    watch.confirm()
    return stats


# ----------------------------------------------------------------------------- to-tfrecord


@dataclass(frozen=True)
class EncodeBatch:
    """A batch of ``[mask, image, source_id, filename]`` pairs -> their records, framed in
    order into ``staging/piece-NNNNN`` (a worker's job). Returns JSON: the piece's path (None
    when it holds no record), each record's length, the class tally, and the problems of the
    pairs that cannot be written (once there is one, no more records are framed). Relative
    paths are read from ``base`` and named as given."""

    plan: RecordPlan
    staging: str
    base: str

    def __call__(self, batch: list) -> dict:
        _in_worker()
        index, items = batch
        tally = RecordTally(self.plan.num_classes)
        problems: list[str] = []
        lengths: list[int] = []
        bad = 0
        path = fs.join(self.staging, f"piece-{index:05d}")
        with contextlib.ExitStack() as stack:
            piece = None
            for mask, image, source_id, filename in items:
                pair = Pair(
                    mask=_resolved(self.base, mask),
                    image=_resolved(self.base, image),
                    source_id=source_id,
                    filename=filename,
                )
                result = prepare_pair(pair, self.plan)
                if isinstance(result, Rejected):
                    given = {pair.mask: mask, pair.image: image}
                    problems.extend(_as_given(line, given) for line in result.problems)
                    bad += 1
                    continue
                if problems:
                    continue
                if piece is None:
                    piece = stack.enter_context(open_private(path))
                record = record_bytes(pair, result, self.plan.encoding)
                write_record(piece, record)
                lengths.append(len(record))
                tally.add(result)
        return {
            "piece": path if lengths else None,
            "lengths": lengths,
            "tally": dataclasses.asdict(tally),
            "problems": problems,
            "bad_files": bad,
        }


def _as_given(line: str, paths: dict[str, str]) -> str:
    """A problem line with the paths a worker read named as the user gave them."""
    for read, given in paths.items():
        if read != given:
            line = line.replace(read, given)
    return line


def shard_layout(
    lengths: Sequence[int], *, num_shards: int | None, size_limit: int
) -> tuple[list[int], int]:
    """``(shard of each record, number of shards)``, cut as the local runner cuts them: record
    ``i`` of ``N`` goes to shard ``i * num_shards // N``; without ``num_shards``, a new shard
    starts when the next record would take the current one past ``size_limit`` bytes.

    >>> shard_layout([5, 5, 5], num_shards=2, size_limit=0)
    ([0, 0, 1], 2)
    >>> shard_layout([6, 3, 6, 20], num_shards=None, size_limit=10)
    ([0, 0, 1, 2], 3)
    """
    if num_shards:
        return [i * num_shards // len(lengths) for i in range(len(lengths))], num_shards
    layout, shard, size = [], 0, 0
    for length in lengths:
        if size and size + length > size_limit:
            shard, size = shard + 1, 0
        layout.append(shard)
        size += length
    return layout, shard + 1


def shard_jobs(pieces: Sequence[dict], spec: WriteSpec) -> list[dict]:
    """What each shard is made of: ``{"file", "records", "ranges": [[piece, start, stop], ...]}``
    (byte ranges of framed records in the pieces, in record order)."""
    lengths = [length for piece in pieces for length in piece["lengths"]]
    layout, count = shard_layout(lengths, num_shards=spec.num_shards, size_limit=spec.size_limit)
    jobs = [
        {"file": shard_name(spec.split, s, count), "records": 0, "ranges": []} for s in range(count)
    ]
    shards = iter(layout)
    for piece in pieces:
        offset = 0
        for length in piece["lengths"]:
            job, framed = jobs[next(shards)], length + 16  # length and CRCs around the data
            ranges = job["ranges"]
            if ranges and ranges[-1][0] == piece["piece"] and ranges[-1][2] == offset:
                ranges[-1][2] += framed
            else:
                ranges.append([piece["piece"], offset, offset + framed])
            job["records"] += 1
            offset += framed
    return jobs


class _Hashing:
    """A write-only stream that counts and hashes what passes through to ``raw``."""

    def __init__(self, raw):
        self.raw, self.size, self.digest = raw, 0, hashlib.sha256()

    def write(self, data) -> int:
        self.raw.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


#: Bytes copied at a time from a piece into a shard.
COPY_CHUNK = 4 << 20


@dataclass(frozen=True)
class AssembleShard:
    """One shard job (:func:`shard_jobs`) -> the shard ``staging/{file}``, compressed as the
    local runner compresses (a worker's job); returns its :class:`ShardInfo` fields."""

    staging: str
    compression: str

    def __call__(self, job: dict) -> list:
        with open_private(fs.join(self.staging, job["file"])) as raw:
            sink = _Hashing(raw)
            writer = (
                gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0, filename="")
                if self.compression == "gzip"
                else sink
            )
            for piece, start, stop in job["ranges"]:
                with fs.open(piece, "rb") as fh:
                    fh.seek(start)
                    left = stop - start
                    while left > 0:
                        chunk = fh.read(min(COPY_CHUNK, left))
                        if not chunk:
                            raise OSError(f"{piece}: ends before byte {stop}")
                        writer.write(chunk)
                        left -= len(chunk)
            if writer is not sink:
                writer.close()
        return [job["file"], job["records"], sink.size, sink.digest.hexdigest()]


def write_dataset_on(engine: Engine, spec: WriteSpec | None = None, **options) -> WriteResult:
    """:func:`labelfix.records.write.write_dataset` on ``engine``: the same checks, records,
    shards and manifest (see the module doc). ``spec`` is a
    :class:`~labelfix.records.spec.WriteSpec`, or its fields are given as keyword ``options``.
    """
    spec = spec if spec is not None else WriteSpec(**options)
    watch = watch_inputs([spec.images, spec.masks])
    pairs, skipped, pairing_notes = plan_pairs(spec)
    items = [[p.mask, p.image, p.source_id, p.filename] for p in pairs]
    # the launching process holds the output's lock for the life of the run
    door = Door(Rules.of("to-tfrecord", inputs=[spec.images, spec.masks]))
    with door:
        outlet = door.outlet(spec.output)
        refuse_foreign_shards(outlet, spec.split)  # before anything is written
        with outlet.staging() as staging, engine.session(door):
            staging = absolute(staging)
            encode = EncodeBatch(RecordPlan.from_spec(spec), staging, os.getcwd())
            pieces = engine.map(encode, batches(items), what="preparing the pairs")
            problems = [line for piece in pieces for line in piece["problems"]]
            if problems:
                bad = sum(piece["bad_files"] for piece in pieces)
                raise invalid(spec, problems, bad, len(pairs))
            tally = RecordTally(spec.num_classes)
            for piece in pieces:
                tally.merge(RecordTally(**piece["tally"]))
            jobs = shard_jobs(pieces, spec)
            assemble = AssembleShard(staging, spec.compression)
            infos = [
                ShardInfo(*info) for info in engine.map(assemble, jobs, what="writing the shards")
            ]
            if sum(s.records for s in infos) != tally.records:
                raise LabelfixError(
                    f"{spec.output}: {engine.name} wrote {sum(s.records for s in infos)} "
                    f"records for {tally.records} pairs; nothing was published"
                )
            watch.confirm()
            staged = [(fs.join(staging, s.file), s) for s in infos]
            publish(outlet, spec.split, staged, build_manifest(spec, tally))
    notes = (*pairing_notes, *door.notes)
    return WriteResult.of(spec, infos, tally, skipped, stale_temporaries=door.stale, notes=notes)
