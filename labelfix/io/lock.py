"""Advisory directory locks: one labelfix run at a time writes into a directory.

A run that writes into a directory (``remap``/``repair`` into an output or in place,
``to-tfrecord`` into its output) holds :func:`directory_lock` on it for the whole run. The lock
is ``fcntl.flock`` on ``DIR/.labelfix.lock`` (a dotfile: no mask scan and no ``{split}-*`` glob
sees it), which holds who took it: pid, host, command and start time. A second run fails at once
with :class:`DirectoryLocked` naming the directory and the holder. The kernel drops a flock when
its process dies, so a lock file left by a killed run is free and the next run takes it over
(and says so, see :attr:`HeldLock.note`); a clean exit removes the file.

A directory inside or around a locked one counts as locked too: a run in place on ``masks/``
and one on ``masks/a/`` would write the same files.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with directory_lock(d, command="remap") as held:
...     held.note is None
True
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from labelfix.errors import LabelfixError

#: The lock file inside every directory a run writes into.
LOCK_NAME = ".labelfix.lock"

#: Lock files this process holds (real paths), so its own locks never count as another run's.
_HELD: set[str] = set()


class DirectoryLocked(LabelfixError):
    """Another run is writing into the directory (the CLI exits 1)."""


@dataclass(frozen=True)
class HeldLock:
    """A lock this process holds. ``previous`` is what a run that died holding it recorded."""

    directory: str
    path: str
    previous: dict | None = None

    @property
    def note(self) -> str | None:
        """One line saying that the lock of a dead run was taken over (None when it was not)."""
        if self.previous is None:
            return None
        return (
            f"{self.directory}: took over the lock of a run that ended without releasing it "
            f"({describe_holder(self.previous)}); it was killed or crashed, and what it left "
            "half-done is finished or redone by this run"
        )


def describe_holder(holder: dict | None) -> str:
    """``pid 123 on host, `labelfix remap`, started 2025-01-01T10:00:00+00:00``.

    >>> describe_holder({"pid": 7, "host": "h", "command": "remap", "started": "T"})
    'pid 7 on h, `labelfix remap`, started T'
    >>> describe_holder({})
    'holder unknown: it is just starting'
    """
    if not holder:
        return "holder unknown: it is just starting"
    where = f" on {holder['host']}" if holder.get("host") else ""
    parts = [f"pid {holder.get('pid', '?')}{where}"]
    if holder.get("command"):
        parts.append(f"`labelfix {holder['command']}`")
    parts.append(f"started {holder.get('started', 'at an unknown time')}")
    return ", ".join(parts)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _read_holder(fd: int, *, wait: float = 0.0) -> dict:
    """The JSON record in an open lock file ({} when empty or unreadable); waits up to ``wait``
    seconds for a holder that has just taken the lock to write it."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
            data = os.pread(fd, 4096, 0)
            if data.strip():
                holder = json.loads(data.decode("utf-8"))
                return holder if isinstance(holder, dict) else {}
        if time.monotonic() >= deadline:
            return {}
        time.sleep(0.02)


def holder(directory: str | os.PathLike) -> dict | None:
    """The record of the run (another process) holding ``directory``'s lock, None when free.

    >>> import tempfile
    >>> holder(tempfile.mkdtemp()) is None
    True
    """
    path = os.path.join(os.fspath(directory), LOCK_NAME)
    if os.path.realpath(path) in _HELD:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd, wait=0.2)
        except OSError:
            return None  # no locks on this file system: nothing to learn
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _ancestors(directory: str) -> Iterable[str]:
    parent = os.path.dirname(directory)
    while parent != directory:
        yield parent
        directory, parent = parent, os.path.dirname(parent)


def check_free(directories: Iterable[str | os.PathLike], *, inside: str) -> None:
    """Raise DirectoryLocked when another run holds one of ``directories`` (ones a run that
    holds ``inside`` writes into)."""
    for directory in directories:
        found = holder(directory)
        if found is not None:
            raise DirectoryLocked(
                f"{os.fspath(directory)}: another labelfix run is writing here "
                f"({describe_holder(found)}), inside {inside}; wait for it to finish"
            )


def _dead_holder(found: dict | None) -> bool:
    """Whether the recorded holder is a process of this host that no longer exists."""
    if not found or found.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(found["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return False


def _flock_within(fd: int, *, seconds: float) -> bool:
    """Take the lock once a killed run's worker processes, which inherited it through fork
    and exit when they see their parent gone, have exited (a rerun started right after a kill
    found them still holding it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            continue
    return False


def _acquire(directory: str, command: str) -> tuple[int, str, dict]:
    """Open, flock and claim ``directory``'s lock file: ``(fd, path, previous holder)``."""
    path = os.path.join(directory, LOCK_NAME)
    for _ in range(50):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise LabelfixError(
                f"{directory}: cannot write into this directory ({err.strerror or err})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            found = _read_holder(fd, wait=0.2)
            if _dead_holder(found) and _flock_within(fd, seconds=10.0):
                pass  # its orphaned workers (which share the lock) exited meanwhile
            else:
                os.close(fd)
                raise DirectoryLocked(
                    f"{directory}: another labelfix run is writing here "
                    f"({describe_holder(found)}); wait for it to finish, or stop it, then run "
                    "this command again"
                ) from None
        except OSError as err:
            os.close(fd)
            raise LabelfixError(
                f"{directory}: cannot lock {LOCK_NAME} ({err.strerror or err})"
            ) from None
        # A run that is finishing unlinks its lock file: the one we hold must still be there.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd, path, _read_holder(fd)
        os.close(fd)
    raise DirectoryLocked(f"{directory}: could not take {LOCK_NAME}: it keeps changing")


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike, *, command: str) -> Iterator[HeldLock]:
    """Hold ``directory``'s lock (creating the directory) for the block; see the module doc.

    Raises :class:`DirectoryLocked` at once when another run holds it, or holds a directory
    around it. ``command`` (``"remap"``) is recorded for the message another run would show.
    """
    directory = os.fspath(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise LabelfixError(f"{directory}: cannot create it ({err.strerror or err})") from None
    key = os.path.realpath(os.path.join(directory, LOCK_NAME))
    if key in _HELD:
        raise DirectoryLocked(f"{directory}: this process already writes into it")
    fd, path, previous = _acquire(directory, command)
    _HELD.add(key)
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command}
        record["started"] = _now()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        real = os.path.realpath(directory)
        for outer in _ancestors(real):
            found = holder(outer)
            if found is not None:
                raise DirectoryLocked(
                    f"{directory}: another labelfix run is writing into {outer}, which "
                    f"contains it ({describe_holder(found)}); wait for it to finish"
                )
        yield HeldLock(directory=directory, path=path, previous=previous or None)
    finally:
        _HELD.discard(key)
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                os.unlink(path)  # still holding the flock, so nobody else holds this file
        os.close(fd)
