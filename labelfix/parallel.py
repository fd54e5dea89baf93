"""Run a per-file function over many files on every core, in order, with bounded memory.

:func:`ordered_map` is the plain form; :class:`BackgroundMap` drives it from a thread, so the
caller can do other work (import TensorFlow, process the first items itself) while the worker
processes start.

Workers die with the process that started them: killed with SIGKILL, a parent gets no chance to
stop them, and they would wait for work forever. On Linux the kernel sends forked workers SIGTERM
(``prctl(PR_SET_PDEATHSIG)``); everywhere a thread in each worker also checks on that process.

>>> list(ordered_map(len, ["a", "bb"], jobs=2))   # (two items: run here, no pool)
[1, 2]
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from labelfix.errors import LabelfixError
from labelfix.io.atomic import deferred_signals

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


#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
#: How often (seconds) a worker's watcher thread checks that the process it works for is alive.
PARENT_POLL_S = 0.5


def _die_with_parent(owner: int) -> None:
    """Worker initializer: end this process when ``owner`` (the process that made the pool) dies.

    Forked workers are ``owner``'s children: the kernel sends them SIGTERM when it dies
    (Linux). Forkserver workers are children of the server, which outlives ``owner`` while they
    live; for them, and everywhere, a daemon thread checks ``owner`` and this process's parent
    every :data:`PARENT_POLL_S` seconds and ends the process once either is gone.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    parent, born = os.getppid(), _started(owner)
    if not _alive(owner, born):  # died before the prctl took effect
        os._exit(1)
    threading.Thread(
        target=_watch, args=(owner, born, parent), name="labelfix-owner-watch", daemon=True
    ).start()


#: ``mallopt`` parameters (glibc ``<malloc.h>``) and the values workers set.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap and are reused once freed (glibc's largest).
WORKER_MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap kept for the next file instead of handed back.
WORKER_TRIM_THRESHOLD = 64 << 20


def keep_freed_memory() -> None:
    """Let freed blocks of a few MB be reused instead of unmapped (worker processes, and the
    command line's own process when it reads masks itself).

    glibc maps a block of a few MB (an inflated mask, its decoded pixels) afresh with ``mmap``
    and unmaps it when freed; its threshold for doing so only rises to the size of blocks
    already freed, so blocks of one size are mapped again for every file, and the kernel zeroes
    and maps each 4 KB page anew: inflating a 2048x1024 mask took 1.1 ms instead of 0.2 ms. A
    worker reads one file after another with blocks of the same few sizes, so it keeps them
    (its memory stays at the largest file's working set, see benchmarks/bench_scale.py).
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, WORKER_TRIM_THRESHOLD)


#: The signals a worker is forked with blocked (see :func:`_blocked_while_forking`).
_WORKER_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _blocked_while_forking(forking: bool) -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread while the block may fork workers (``forking``).

    A forked worker inherits the handlers of the moment, those of
    :func:`~labelfix.io.atomic.deferred_signals`, which only note a signal; one arriving before
    the worker's initializer put its own handlers in place was swallowed, and the worker lived
    on (SIGTERM from :func:`stop_workers` under load). A worker inherits the signal mask too:
    what arrives stays pending until :func:`_init_worker` unblocks it, with its own handlers.
    In this process a signal held here is delivered when the block ends.
    """
    if not forking or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _init_worker(owner: int) -> None:
    # Ctrl-C is the command's to handle (it reaches the workers too: one process group); the
    # command then ends its workers (_abandon), whose writes are atomic.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # forked while the pool held signals back
    if hasattr(signal, "pthread_sigmask"):  # forked with them blocked: a pending SIGTERM ends it
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _WORKER_SIGNALS)
    _die_with_parent(owner)
    keep_freed_memory()


def _watch(owner: int, born: str | None, parent: int) -> None:
    """Exit the process (no cleanup: nobody waits for its results) once its owner is gone."""
    while os.getppid() == parent and _alive(owner, born):
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time)`` of a process from ``/proc`` (None when it is gone or unknown)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def _started(pid: int) -> str | None:
    """The start time of ``pid`` (Linux), which tells a reused pid from the process itself."""
    found = _proc_stat(pid)
    return found[1] if found is not None else None


def _alive(pid: int, born: str | None) -> bool:
    """True while process ``pid`` (started at ``born``, when known) runs; a zombie is dead."""
    if born is not None:
        found = _proc_stat(pid)
        return found is not None and found[0] not in ("Z", "X", "x") and found[1] == born
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: The pools of this process that may still have workers (see :func:`stop_workers`).
_POOLS: weakref.WeakSet = weakref.WeakSet()

#: How the pool itself fails (a worker killed, a pipe to one closed), as opposed to ``func``.
_POOL_FAILURES = (BrokenProcessPool, ConnectionError, EOFError)


def _pool_failed(err: BaseException) -> LabelfixError:
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return LabelfixError(
        f"worker processes stopped unexpectedly ({reason}); files are never left half-written, "
        "so run the same command again to finish (or with --jobs 1)"
    )


def _run_chunk(func: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [func(item) for item in chunk]


class _Pool(ProcessPoolExecutor):
    """A worker pool that knows its workers without reading the executor's private state: its
    context's ``Process`` notes each one as it starts (for :func:`stop_workers`), and
    ``forking`` says whether they are forked (see :func:`_blocked_while_forking`)."""

    def __init__(self, jobs: int, ctx: multiprocessing.context.BaseContext):
        self.workers: weakref.WeakSet = weakref.WeakSet()
        self.forking = ctx.get_start_method() == "fork"
        super().__init__(
            max_workers=jobs,
            mp_context=_NotingContext(ctx, self.workers),
            initializer=_init_worker,
            initargs=(os.getpid(),),
        )


class _NotingContext:
    """``ctx``, whose processes are added to ``workers`` as they are made."""

    def __init__(self, ctx: multiprocessing.context.BaseContext, workers: weakref.WeakSet):
        self._ctx, self._workers = ctx, workers

    def Process(self, *args, **kwargs):
        process = self._ctx.Process(*args, **kwargs)
        self._workers.add(process)
        return process

    def __getattr__(self, name: str):
        return getattr(self._ctx, name)


def _start_pool(jobs: int, ctx: multiprocessing.context.BaseContext) -> _Pool:
    """A pool of ``jobs`` workers (tracked for :func:`stop_workers`)."""
    # Ctrl-C inside the pool's own bookkeeping (starting workers, queueing work, waiting for a
    # result, shutting down) could leave a lock held and the pool waiting forever: there it is
    # held back, and raised just after, by the caller.
    with deferred_signals():
        pool = _Pool(jobs, ctx)
        _POOLS.add(pool)
    return pool


def ordered_map(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    jobs: int | None = None,
    chunksize: int = 4,
    preload: tuple[str, ...] = ("labelfix.checks.stats",),
    pool: _Pool | None = None,
) -> Iterator[R]:
    """Yield ``func(item)`` for each item, in input order, using ``jobs`` processes.

    ``func`` must be picklable (a module-level function or a ``functools.partial`` of one).
    At most ``4 * jobs`` chunks are in flight, so neither inputs nor results pile up in memory
    however many files there are. ``jobs=1`` runs in this process. ``pool``: workers started
    already (``jobs`` of them), which this ends.
    """
    jobs = default_jobs() if not jobs or jobs < 1 else jobs
    iterator = iter(items)
    if jobs == 1 and pool is None:
        yield from map(func, iterator)
        return
    # A few files are not worth starting processes for.
    head = list(itertools.islice(iterator, chunksize * 2))
    if len(head) < chunksize * 2 and pool is None:
        yield from map(func, head)
        return
    iterator = itertools.chain(head, iterator)
    work = functools.partial(_run_chunk, func)
    if pool is None:
        pool = _start_pool(jobs, _context(preload))
    forking = pool.forking
    pending: deque = deque()
    try:
        while True:
            while len(pending) < 4 * jobs:
                chunk = list(itertools.islice(iterator, chunksize))
                if not chunk:
                    break
                try:
                    with deferred_signals(), _blocked_while_forking(forking):
                        pending.append(pool.submit(work, chunk))
                except _POOL_FAILURES as err:
                    raise _pool_failed(err) from err
            if not pending:
                break
            try:
                with deferred_signals():  # a chunk is a few files: Ctrl-C waits for it
                    results = pending.popleft().result()
            except _POOL_FAILURES as err:
                raise _pool_failed(err) from err
            yield from results
    except BaseException:  # Ctrl-C, an error, or the caller stopped reading
        _abandon(pool)
        raise
    with deferred_signals():
        pool.shutdown(wait=True)


def _abandon(pool: _Pool) -> None:
    """Stop ``pool`` now: end its workers (SIGTERM) instead of waiting for what is queued."""
    _stop([pool])


def stop_workers() -> None:
    """End the workers of every pool this process still has (the command line's Ctrl-C).

    Waiting for them could last forever: Ctrl-C while a pool was starting its workers, or while
    the caller held a result, left them waiting for work nobody would send, and the process
    waiting for them at exit. A worker ended mid-file leaves
    the file as it was or whole (every write goes through a temporary name, which the next run
    removes).
    """
    _stop(list(_POOLS))


def _stop(pools: list[_Pool]) -> None:
    with deferred_signals():
        workers = [w for pool in pools for w in list(pool.workers)]
        for worker in workers:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                worker.terminate()
        for worker in workers:
            with contextlib.suppress(OSError, ValueError, AssertionError):
                worker.join(5)
        for pool in pools:
            # Shut down only now, and wait for its manager thread, which reaps the workers too:
            # until it has seen them die, it may take the exit status a join here would read.
            # Only when they are gone: one that would not die must not hang the command.
            gone = all(_gone(worker) for worker in workers)
            pool.shutdown(wait=gone, cancel_futures=True)


def _gone(worker) -> bool:
    """Whether a worker process has ended (its exit status read here or by its pool)."""
    if worker.exitcode is not None or worker.pid is None:
        return True
    try:
        os.kill(worker.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


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
        # Workers forked from this thread while it is the only one start in milliseconds;
        # from the driving thread they would come from a fork server (a fresh interpreter
        # importing ``preload``: about 0.4 s before the first result).
        self._pool = None
        ctx = _context(preload)
        if jobs > 1 and ctx.get_start_method() == "fork":
            self._pool = _start_pool(jobs, ctx)
            with deferred_signals(), _blocked_while_forking(True):
                self._pool.submit(int)  # forks the workers now, before the thread below starts
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
                work, self._claims(), jobs=jobs, chunksize=8, preload=self.preload, pool=self._pool
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
