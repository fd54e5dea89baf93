"""``stats`` and ``to-tfrecord`` as Apache Beam pipelines: the DirectRunner, Beam's DaskRunner on
a ``dask.distributed`` cluster, Dataflow, Flink, Spark.

Each step of :mod:`labelfix.engines.common` is one small pipeline made of the transforms every
runner translates, the DaskRunner's short list included: ``Create`` over the numbers of the
items, ``Reshuffle`` (spreads them where the runner can), ``Map``. The items are staged as one
JSON file each in a scratch directory, so the job graph stays small however many masks there
are; a worker reads its item, runs the library's function on it and writes the result beside
it, where the launching process reads it back. Nothing is read with Beam's sources or written
with its sinks: the DaskRunner translates neither (``ReadFromText`` left it with no input:
``'NoneType' object has no attribute 'map'``), and it computes only a pipeline's last step, so
each pipeline is one chain.

Pipeline options are Beam's own flags (``["--runner=DataflowRunner", ...]``; default: the
DirectRunner). The module of the runner named by ``--runner`` is imported before they are read,
so that its own options (the DaskRunner's ``--dask_client_address``) are known; an unknown option
is a usage error. On the DaskRunner every item is a task of its own unless ``--dask_npartitions``
or ``--dask_partition_size`` says otherwise. A cluster runner needs inputs, output and
``--temp_location`` on storage every worker can reach (``gs://``, ``s3://``, a shared disk).

What Beam itself leaves in the system's temporary directory while a pipeline runs (the
DirectRunner's attempt to start its Prism job server, staged requirements, the pipeline's own
temporary directory) goes into a scratch directory of the run, removed at the end.

On a dataset of your own::

    stats = scan_dataset_beam(["masks/"], ignore=(255,), num_classes=21)
    result = write_dataset_beam(images="img", masks="gt", output="gs://b/tfr",
                                num_classes=21, pipeline_args=["--runner=DataflowRunner"])
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence

from labelfix.checks.stats import DatasetStats
from labelfix.engines.common import (
    Engine,
    absolute,
    one_line,
    scan_dataset_on,
    write_dataset_on,
)
from labelfix.errors import LabelfixError, MissingExtra, UsageError
from labelfix.io import fs
from labelfix.io.door import Door, open_private
from labelfix.records.spec import WriteSpec
from labelfix.records.write import WriteResult


class _ImportNoise(logging.Filter):
    """Beam's warning on import that BigQuery's client is missing (labelfix does not use it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("apitools not found")


_noise = _ImportNoise()
logging.getLogger().addFilter(_noise)
try:
    import apache_beam as beam
    from apache_beam.options import pipeline_options as beam_options
    from apache_beam.runners.runner import PipelineState
except ImportError:  # pragma: no cover - exercised through the CLI's message
    raise MissingExtra("--runner beam needs Apache Beam: pip install 'labelfix[beam]'") from None
finally:
    logging.getLogger().removeFilter(_noise)

__all__ = [
    "BeamEngine",
    "pipeline_options",
    "runner_args",
    "scan_dataset_beam",
    "write_dataset_beam",
]

#: Runners Beam knows by class name, and the DaskRunner, which it knows only by its full path.
RUNNERS = {
    path.rsplit(".", 1)[-1].lower(): path
    for path in (
        *beam_options.StandardOptions.ALL_KNOWN_RUNNERS,
        "apache_beam.runners.dask.dask_runner.DaskRunner",
    )
}
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


# ----------------------------------------------------------------------------- options


class _Parser(beam_options._BeamArgumentParser):
    """Beam's own option parser (it knows value-provider options), with errors as UsageError."""

    def error(self, message: str):
        raise UsageError(f"Beam pipeline options: {message}")


def _runner_flag(args: list[str]) -> tuple[int, int, str] | None:
    """``(first index, last index, value)`` of the last ``--runner`` flag, or None."""
    found = None
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            found = (i, i, arg.partition("=")[2])
        elif arg == "--runner" and i + 1 < len(args):
            found = (i, i + 1, args[i + 1])
    return found


def resolve_runner(name: str) -> str:
    """The full class path of a runner named as Beam accepts it (``DataflowRunner``,
    ``dataflow``, ``module.Class``), ``DaskRunner`` too.

    >>> resolve_runner("DaskRunner"), resolve_runner("direct")
    ('apache_beam.runners.dask.dask_runner.DaskRunner', \
'apache_beam.runners.direct.direct_runner.DirectRunner')
    """
    key = name.lower()
    path = RUNNERS.get(key) or RUNNERS.get(key + "runner")
    if path is not None:
        return path
    if "." in name:
        return name
    known = ", ".join(sorted(p.rsplit(".", 1)[-1] for p in RUNNERS.values()))
    raise UsageError(f"--runner={name}: not a Beam runner (known: {known}, or module.Class)")


def runner_args(args: Sequence[str]) -> list[str]:
    """``args`` checked, with ``--runner`` as the runner's full path.

    The runner's module is imported first, so that the options it defines are parsed (Beam
    otherwise discards them with a warning: "Discarding unparseable args"). UsageError for an
    unknown runner or option, MissingExtra for a runner whose packages are not installed.
    """
    args = list(args)
    flag = _runner_flag(args)
    if flag is not None:
        first, last, name = flag
        path = resolve_runner(name)
        module = path.rpartition(".")[0]
        try:
            importlib.import_module(module)
        except ImportError as err:
            extra = "apache-beam[dask]" if path == DASK_RUNNER else f"what {module} needs"
            raise MissingExtra(f"--runner={name}: {err} (pip install '{extra}')") from None
        args[first : last + 1] = [f"--runner={path}"]
    parser = _Parser(allow_abbrev=False)
    classes: dict[str, type] = {}
    for cls in beam_options.PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)  # as Beam does: a class defined twice counts once
    for cls in classes.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(args)
    flags = [arg for arg in unknown if arg.startswith("-")]
    if flags:
        runner = flag[2] if flag else "DirectRunner"
        raise UsageError(
            f"unknown Beam pipeline option {flags[0]} (not an option of Beam or of {runner})"
        )
    return args


def pipeline_options(args: Sequence[str]) -> beam_options.PipelineOptions:
    """Beam's PipelineOptions for ``args`` (:func:`runner_args`)."""
    return beam_options.PipelineOptions(runner_args(args))


# ----------------------------------------------------------------------------- the engine


@contextlib.contextmanager
def _temporary_files_in(directory: str) -> Iterator[None]:
    """Point this process's temporary directory (and its children's: ``TMPDIR``) at
    ``directory`` for the block."""
    saved, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = directory
    os.environ["TMPDIR"] = directory
    try:
        yield
    finally:
        tempfile.tempdir = saved
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


def _run_item(index: int, func: Callable, prefix: str) -> int:
    """A worker's step: read item ``index`` from the scratch directory, run ``func`` on it,
    write the result beside it."""
    item = json.loads(fs.read_bytes(f"{prefix}{index:06d}.json"))
    result = json.dumps(func(item)).encode("utf-8")
    with open_private(f"{prefix}{index:06d}.result.json") as fh:
        fh.write(result)
    return index


class BeamEngine(Engine):
    """Runs :mod:`labelfix.engines.common`'s steps as Beam pipelines (see the module doc)."""

    def __init__(self, pipeline_args: Sequence[str] = ()):
        args = runner_args(pipeline_args)
        flags = beam_options.PipelineOptions(args).get_all_options()
        self.runner = flags.get("runner") or "DirectRunner"
        self.temp_location = flags.get("temp_location")
        self.name = f"Beam's {self.runner.rsplit('.', 1)[-1]}"
        if self.runner == DASK_RUNNER:
            if flags.get("address"):
                self.name += f" at {flags['address']}"
            if not (flags.get("npartitions") or flags.get("partition_size")):
                args.append("--dask_partition_size=1")  # every item a task of its own
        self.options = beam_options.PipelineOptions(args)
        self._scratch: str | None = None
        self._steps = 0

    @contextlib.contextmanager
    def session(self, door: Door) -> Iterator[BeamEngine]:
        with (
            door.scratch(self.temp_location and absolute(self.temp_location)) as scratch,
            door.scratch() as local,
            _temporary_files_in(local),
        ):
            self._scratch, self._steps = scratch, 0
            try:
                yield self
            finally:
                self._scratch = None

    def map(self, func: Callable, items: Sequence, *, what: str) -> list:
        if self._scratch is None:
            raise RuntimeError("BeamEngine.map outside its session")
        if not items:
            return []
        prefix = fs.join(self._scratch, f"step{self._steps}-")
        self._steps += 1
        for index, item in enumerate(items):
            with open_private(f"{prefix}{index:06d}.json") as fh:
                fh.write(json.dumps(item).encode("utf-8"))
        pipeline = beam.Pipeline(options=self.options)
        _ = (
            pipeline
            | "Items" >> beam.Create(range(len(items)))
            | "Spread" >> beam.Reshuffle()
            | "Run" >> beam.Map(_run_item, func, prefix)
        )
        self._run(pipeline, what)
        results = []
        for index in range(len(items)):
            try:
                results.append(json.loads(fs.read_bytes(f"{prefix}{index:06d}.result.json")))
            except (OSError, ValueError) as err:
                raise LabelfixError(
                    f"{what} failed on {self.name}: no result for item {index} of "
                    f"{len(items)} ({one_line(err)})"
                ) from err
        return results

    def _run(self, pipeline, what: str) -> None:
        """Run ``pipeline`` to the end; any failure of the runner becomes one line."""
        result, state = None, None
        try:
            result = pipeline.run()
            state = result.wait_until_finish()
        except BaseException as err:
            if result is not None:  # what still runs on a cluster is stopped
                with contextlib.suppress(Exception):
                    result.cancel()
            if isinstance(err, (KeyboardInterrupt, LabelfixError)) or not isinstance(
                err, Exception
            ):
                raise
            raise self.failed(what, err) from err
        finally:
            client = getattr(result, "client", None)  # the DaskRunner leaves it connected
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        if state not in (None, PipelineState.DONE):
            raise LabelfixError(f"{what} failed on {self.name}: the pipeline ended {state}")


# ----------------------------------------------------------------------------- the commands


def scan_dataset_beam(
    paths: Iterable[str | os.PathLike], *, pipeline_args: Sequence[str] = (), **options
) -> DatasetStats:
    """:func:`labelfix.checks.stats.scan_dataset` as Beam pipelines: the same DatasetStats.

    ``options`` are :func:`~labelfix.engines.common.scan_dataset_on`'s (``glob``, ``ignore``,
    ``num_classes``, ``images``, ``colours``, ``artifacts``).
    """
    return scan_dataset_on(BeamEngine(pipeline_args), paths, **options)


def write_dataset_beam(
    spec: WriteSpec | None = None, *, pipeline_args: Sequence[str] = (), **options
) -> WriteResult:
    """:func:`labelfix.records.write.write_dataset` as Beam pipelines: the same records,
    shards and manifest (a :class:`~labelfix.records.spec.WriteSpec`, or its fields as
    keyword ``options``)."""
    return write_dataset_on(BeamEngine(pipeline_args), spec, **options)
