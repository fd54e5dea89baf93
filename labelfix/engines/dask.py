"""``stats`` and ``to-tfrecord`` on a ``dask.distributed`` cluster, without Beam.

The steps of :mod:`labelfix.engines.common` go to the cluster as one task per batch
(``Client.map``), and their results come back in order (``Client.gather``). The cluster is one
of (``labelfix ... --runner dask -- OPTION...``):

* ``--scheduler tcp://HOST:8786``: a running scheduler (``dask scheduler`` plus ``dask worker``
  processes, or any deployment); without it, dask's own ``DASK_SCHEDULER_ADDRESS`` (or
  ``scheduler-address`` in dask's configuration) is used;
* ``--workers N``: a cluster of N worker processes started on this machine for the run
  (``distributed.LocalCluster``, one thread each), stopped at its end.

With neither, the run stops with a usage error saying so: a run never starts a cluster it was
not asked for. Every worker must import the same labelfix, and reach the inputs and the output
(on one machine: the same paths; on many: ``gs://``, ``s3://`` or a shared disk).
``--timeout SECONDS`` (default 30) bounds the wait for the scheduler.

On a cluster of your own::

    stats = scan_dataset_dask(["masks/"], scheduler="tcp://10.0.0.5:8786",
                              ignore=(255,), num_classes=21)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from labelfix.checks.stats import DatasetStats
from labelfix.engines.common import Engine, one_line, scan_dataset_on, write_dataset_on
from labelfix.errors import LabelfixError, MissingExtra, UsageError
from labelfix.io.door import Door
from labelfix.records.spec import WriteSpec
from labelfix.records.write import WriteResult

try:
    import dask
    import distributed
except ImportError:  # pragma: no cover - exercised through the CLI's message
    raise MissingExtra(
        "--runner dask needs dask.distributed: pip install 'labelfix[dask]'"
    ) from None

__all__ = ["DaskEngine", "DaskOptions", "scan_dataset_dask", "write_dataset_dask"]

#: How long (seconds) to wait for a scheduler to answer, unless ``--timeout`` says otherwise.
DEFAULT_TIMEOUT = 30.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"--runner dask options: {message}")


@dataclass(frozen=True)
class DaskOptions:
    """Where a run's dask cluster is (see the module doc)."""

    scheduler: str | None = None
    workers: int | None = None
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if self.scheduler and self.workers:
            raise UsageError(
                "--runner dask: give --scheduler (a running cluster) or --workers "
                "(a cluster on this machine), not both"
            )
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--runner dask: --workers must be at least 1, got {self.workers}")
        if not (self.timeout > 0):
            raise UsageError(f"--runner dask: --timeout must be positive, got {self.timeout}")

    @classmethod
    def from_args(cls, args: Sequence[str]) -> DaskOptions:
        """The options after ``--`` (UsageError for one it does not know)."""
        parser = _Parser(prog="--runner dask", add_help=False, allow_abbrev=False)
        parser.add_argument("--scheduler", metavar="ADDRESS")
        parser.add_argument("--workers", type=int, metavar="N")
        parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS")
        parsed, unknown = parser.parse_known_args(list(args))
        if unknown:
            raise UsageError(
                f"--runner dask: unknown option {unknown[0]} (expected --scheduler ADDRESS, "
                "--workers N, --timeout SECONDS)"
            )
        return cls(scheduler=parsed.scheduler, workers=parsed.workers, timeout=parsed.timeout)

    def resolved(self) -> DaskOptions:
        """These options, the scheduler taken from dask's configuration when neither it nor
        ``workers`` is given (``DASK_SCHEDULER_ADDRESS``); UsageError when there is none."""
        if self.scheduler or self.workers:
            return self
        scheduler = dask.config.get("scheduler-address", None)
        if not scheduler:
            raise UsageError(
                "--runner dask needs a cluster: -- --scheduler tcp://HOST:8786 (or "
                "DASK_SCHEDULER_ADDRESS), or -- --workers N to start N worker processes on "
                "this machine"
            )
        return DaskOptions(scheduler=scheduler, timeout=self.timeout)


class DaskEngine(Engine):
    """Runs :mod:`labelfix.engines.common`'s steps as tasks on a dask cluster."""

    def __init__(self, options: DaskOptions):
        self.options = options = options.resolved()
        self.name = (
            f"the dask cluster at {options.scheduler}"
            if options.scheduler
            else f"a local dask cluster of {options.workers} worker process(es)"
        )
        self._client = None

    @classmethod
    def from_args(cls, args: Sequence[str]) -> DaskEngine:
        return cls(DaskOptions.from_args(args))

    @contextlib.contextmanager
    def session(self, door: Door) -> Iterator[DaskEngine]:
        """Connect to the scheduler (or start the local cluster) for the run; let go after."""
        with contextlib.ExitStack() as stack:
            address = self.options.scheduler
            try:
                if self.options.workers:
                    # the cluster's own files (the workers' spill space) go into the run's scratch
                    scratch = stack.enter_context(door.scratch())
                    stack.enter_context(dask.config.set({"temporary-directory": scratch}))
                    address = stack.enter_context(
                        distributed.LocalCluster(
                            n_workers=self.options.workers,
                            threads_per_worker=1,
                            processes=True,
                            dashboard_address="127.0.0.1:0",  # never a fixed port
                            local_directory=scratch,
                            silence_logs=logging.ERROR,
                        )
                    )
                client = stack.enter_context(
                    distributed.Client(address, timeout=self.options.timeout, set_as_default=False)
                )
            except (OSError, TimeoutError, ValueError) as err:
                raise LabelfixError(f"cannot start or reach {self.name}: {one_line(err)}") from err
            try:  # tasks given to a scheduler without workers would wait forever
                client.wait_for_workers(1, timeout=self.options.timeout)
            except (OSError, TimeoutError) as err:
                raise LabelfixError(
                    f"{self.name} has no workers (waited {self.options.timeout:g} s): start "
                    f"some with `dask worker {self.options.scheduler}`"
                ) from err
            self._client = client
            try:
                yield self
            finally:
                self._client = None

    def map(self, func: Callable, items: Sequence, *, what: str) -> list:
        if self._client is None:
            raise RuntimeError("DaskEngine.map outside its session")
        if not items:
            return []
        futures = self._client.map(func, list(items), pure=False)
        try:
            return self._client.gather(futures)
        except BaseException as err:
            with contextlib.suppress(Exception):
                self._client.cancel(futures)
            if isinstance(err, (KeyboardInterrupt, LabelfixError)) or not isinstance(
                err, Exception
            ):
                raise
            raise self.failed(what, err) from err


# ----------------------------------------------------------------------------- the commands


def scan_dataset_dask(
    paths: Iterable[str | os.PathLike],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **options,
) -> DatasetStats:
    """:func:`labelfix.checks.stats.scan_dataset` on a dask cluster: the same DatasetStats.

    ``scheduler`` (an address) or ``workers`` (a local cluster of that many processes) say
    which cluster; ``options`` are :func:`~labelfix.engines.common.scan_dataset_on`'s.
    """
    engine = DaskEngine(DaskOptions(scheduler=scheduler, workers=workers, timeout=timeout))
    return scan_dataset_on(engine, paths, **options)


def write_dataset_dask(
    spec: WriteSpec | None = None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **options,
) -> WriteResult:
    """:func:`labelfix.records.write.write_dataset` on a dask cluster: the same records,
    shards and manifest."""
    engine = DaskEngine(DaskOptions(scheduler=scheduler, workers=workers, timeout=timeout))
    return write_dataset_on(engine, spec, **options)
