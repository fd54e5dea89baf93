"""Run a per-file function over many files on every core, in order, with bounded memory.

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
from collections.abc import Callable, Iterable, Iterator
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
    preload: tuple[str, ...] = ("labelfix.scan",),
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
