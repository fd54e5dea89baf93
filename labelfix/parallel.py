"""Run a per-file function over many files on every core, in order, with bounded memory.

:func:`ordered_map` is the plain form; :class:`BackgroundMap` drives it from a thread, so the
caller can do other work (import TensorFlow, process the first items itself) while the worker
processes start.

>>> list(ordered_map(len, ["a", "bb"], jobs=2))   # doctest: +SKIP
[1, 2]
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_jobs() -> int:
    """Number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _context(preload: tuple[str, ...]) -> multiprocessing.context.BaseContext:
    """``fork`` (fast start) when this process runs one thread, else ``forkserver``.

    Forking a process with threads (TensorFlow's, say) can deadlock the child, so then workers
    come from a clean server process that preloads ``preload``.
    """
    if hasattr(os, "fork") and threading.active_count() == 1 and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    return ctx


def _run_chunk(func: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [func(item) for item in chunk]


def ordered_map(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    jobs: int | None = None,
    chunksize: int = 4,
    preload: tuple[str, ...] = ("labelfix.checks.stats",),
) -> Iterator[R]:
    """Yield ``func(item)`` for each item, in input order, using ``jobs`` processes.

    ``func`` must be picklable (a module-level function or a ``functools.partial`` of one).
    At most ``4 * jobs`` chunks are in flight, so neither inputs nor results pile up in memory
    however many files there are. ``jobs=1`` runs in this process.
    """
    jobs = default_jobs() if not jobs or jobs < 1 else jobs
    iterator = iter(items)
    if jobs == 1:
        yield from map(func, iterator)
        return
    # A few files are not worth starting processes for.
    head = list(itertools.islice(iterator, chunksize * 2))
    if len(head) < chunksize * 2:
        yield from map(func, head)
        return
    iterator = itertools.chain(head, iterator)
    ctx = _context(preload)
    work = functools.partial(_run_chunk, func)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        pending: deque = deque()
        try:
            while True:
                while len(pending) < 4 * jobs:
                    chunk = list(itertools.islice(iterator, chunksize))
                    if not chunk:
                        break
                    pending.append(pool.submit(work, chunk))
                if not pending:
                    break
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _indexed(func: Callable, item: tuple[int, object]) -> tuple[int, object]:
    index, value = item
    return index, func(value)


class BackgroundMap:
    """``func`` over ``items`` on worker processes, results in order, driven from a thread.

    The worker pool takes a moment to start (a fresh interpreter importing numpy and Pillow);
    meanwhile the caller can import TensorFlow, or work through the first items itself
    (:meth:`help_until_started`), so small datasets do not pay for the start-up. Results wait
    in memory up to ``max_bytes`` (as ``size`` counts each result), then the workers pause.
    """

    def __init__(
        self,
        func: Callable,
        items: Sequence,
        *,
        jobs: int,
        local: Callable | None = None,
        size: Callable[[object], int] = lambda result: 256,
        max_bytes: int = 1 << 28,
        preload: tuple[str, ...] = (),
    ):
        self.func, self.items, self.max_bytes = func, items, max_bytes
        self.size, self.preload = size, preload
        self.local = local or func  # what this process runs (its caches stay out of the pickles)
        self._cond = threading.Condition()
        self._cursor = self._wanted = 0
        self._results: dict[int, object] = {}
        self._bytes = 0
        self._started = self._finished = self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._drive, args=(jobs,), name="labelfix-workers", daemon=True
        )
        self._thread.start()

    def _claim(self) -> int | None:
        with self._cond:
            if self._stop or self._cursor >= len(self.items):
                return None
            self._cursor += 1
            return self._cursor - 1

    def _claims(self) -> Iterator[tuple[int, object]]:
        while (index := self._claim()) is not None:
            yield index, self.items[index]

    def _put(self, index: int, result: object, *, from_pool: bool) -> None:
        with self._cond:
            self._results[index] = result
            self._bytes += self.size(result)
            self._started = self._started or from_pool
            self._cond.notify_all()
            # pause while the consumer has plenty to do; never while it waits for the next result
            while (
                from_pool
                and self._bytes > self.max_bytes
                and not self._stop
                and self._wanted in self._results
            ):
                self._cond.wait()

    def _drive(self, jobs: int) -> None:
        try:
            work = functools.partial(_indexed, self.func)
            for index, result in ordered_map(
                work, self._claims(), jobs=jobs, chunksize=8, preload=self.preload
            ):
                self._put(index, result, from_pool=True)
        except BaseException as err:  # handed to the consuming thread
            with self._cond:
                self._error = err
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def help_until_started(self) -> None:
        """Process items in this thread until the first result comes back from a worker."""
        while not self._started and self._error is None:
            index = self._claim()
            if index is None:
                return
            self._put(index, self.local(self.items[index]), from_pool=False)

    def __iter__(self) -> Iterator[object]:
        for index in range(len(self.items)):
            with self._cond:
                self._wanted = index
                self._cond.notify_all()
                while index not in self._results:
                    if self._error is not None:
                        raise self._error
                    if self._finished:
                        raise RuntimeError("worker pool stopped early")  # pragma: no cover
                    self._cond.wait()
                result = self._results.pop(index)
                self._bytes -= self.size(result)
                self._cond.notify_all()
            yield result

    def close(self) -> None:
        """Stop handing out items and wait for the workers to finish the ones in flight."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
