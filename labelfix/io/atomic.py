"""The one atomic writer: a file labelfix writes appears under its final name whole, or not at all.

Every output (masks, shards, manifests, run records, reports) is written to a hidden temporary
name beside its final name (``.NAME.<random>.labelfix-tmp``, which no ``{split}-*`` glob and no
mask scan matches) and renamed over the final name only when complete. An interrupted write leaves
at most a temporary file, never a half-written file under a final name.

* Local paths: the rename is ``os.replace`` in the same directory (atomic). ``durable=True``
  also syncs the data and the directory, so even a power cut leaves the old file or the new one
  (used in place, where the old file is the only copy).
* Remote paths (``gs://``, ``s3://``, see :mod:`labelfix.io.fs`): the data is uploaded under the
  temporary name and then moved; on object stores an object is all-or-nothing anyway.

A new file gets the mode ``0o666`` less the umask (as ``open`` would give it); a replaced file
keeps its mode. An ``OSError`` met on the temporary file (a full disk, a read-only directory)
names the final path: the hidden name means nothing to the user. A killed run can leave a
temporary file behind; :func:`remove_stale_temporaries` clears them (the next run does, once it
holds the directory's lock, see :mod:`labelfix.io.lock`).

>>> import pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_atomic(d / "a.txt", b"done")
>>> [p.name for p in d.iterdir()], (d / "a.txt").read_bytes()
(['a.txt'], b'done')
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import uuid
from collections.abc import Iterator
from typing import NoReturn

from labelfix.errors import UsageError
from labelfix.io import fs

#: What every temporary name ends with (stale ones are found by it).
TMP_SUFFIX = ".labelfix-tmp"
#: Exactly the names :func:`temporary_name` makes; nothing else is ever removed as stale.
TMP_PATTERN = re.compile(r"\.(?P<final>.+)\.[0-9a-f]{12}" + re.escape(TMP_SUFFIX))
#: Hidden staging directories (Beam's shards, a Keras model file) start with this.
STAGING_PREFIX = ".labelfix-stage-"
STAGING_PATTERN = re.compile(re.escape(STAGING_PREFIX) + r"[0-9a-f]{12}")
#: The longest file name most file systems take, in bytes.
NAME_MAX = 255


def temporary_name(final: str | os.PathLike) -> str:
    """A hidden, unique name beside ``final``: ``dir/.NAME.<12 hex>.labelfix-tmp``.

    A long ``NAME`` is shortened (its middle left out) so that the temporary name still fits
    the file system's limit when the final name does.

    >>> len(os.fsencode(os.path.basename(temporary_name("d/" + "a" * 250 + ".png"))))
    255
    """
    final = os.fspath(final)
    name = fs.basename(final)
    tail = f".{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
    room = NAME_MAX - len(tail) - 1
    encoded = os.fsencode(name)
    if len(encoded) > room:
        keep = room - 1
        head, end = encoded[: keep // 2], encoded[len(encoded) - (keep - keep // 2) :]
        name = os.fsdecode(head).rstrip("\udc80") + "~" + os.fsdecode(end)
        while len(os.fsencode(name)) > room:  # a character cut in two took more room
            name = name[1:]
    return fs.join(fs.dirname(final), f".{name}{tail}")


def is_temporary(name: str) -> bool:
    """True for a name :func:`temporary_name` makes (a base name, not a path).

    >>> is_temporary(".0001.png.0123456789ab.labelfix-tmp"), is_temporary("0001.png")
    (True, False)
    """
    return TMP_PATTERN.fullmatch(name) is not None


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Remove the temporary files (and staging directories) an interrupted run left in
    ``directory`` (not below it).

    Only regular files whose names match :data:`TMP_PATTERN` and directories that match
    :data:`STAGING_PATTERN` are removed; call it only while holding the directory's lock, or a
    running writer's temporary file goes too. Returns how many were removed (0 for a missing or
    remote directory).
    """
    directory = os.fspath(directory)
    if fs.is_url(directory):
        return 0
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        if is_temporary(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        elif STAGING_PATTERN.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def _raise_on_final(err: OSError, tmp: str, final: str) -> NoReturn:
    """Raise ``err`` again, naming ``final`` when it was raised on the temporary file."""
    renamed = _on_final(err, tmp, final)
    if renamed is err:
        raise err
    raise renamed from err


def _on_final(err: OSError, tmp: str, final: str) -> OSError:
    """``err`` naming ``final`` when it was raised on the temporary file (or names no file).

    >>> _on_final(OSError(28, "No space left on device", ".a.png.0123456789ab.labelfix-tmp"),
    ...           ".a.png.0123456789ab.labelfix-tmp", "a.png")
    OSError(28, 'No space left on device')
    >>> _.filename
    'a.png'
    """
    if err.filename not in (None, tmp) or err.filename2 not in (None, final):
        return err
    return OSError(err.errno, err.strerror or str(err), final)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def move_into_place(tmp: str, final: str, *, durable: bool = False) -> None:
    """Rename the complete file ``tmp`` over ``final`` (``tmp`` is local; ``final`` may be remote).

    Locally, ``final`` keeps its mode if it exists, else gets ``0o666`` less the umask.
    """
    if fs.is_url(final):
        if fs.is_url(tmp):
            fs.replace(tmp, final)
            return
        staged = temporary_name(final)
        try:
            fs.replace(tmp, staged)  # upload under the temporary name ...
            fs.replace(staged, final)  # ... then move it into place
        except BaseException:
            with contextlib.suppress(OSError):
                fs.remove(staged)
            raise
        return
    try:
        mode = os.stat(final).st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)
    try:
        os.replace(tmp, final)
    except OSError as err:
        _raise_on_final(err, tmp, final)
    if durable:
        _sync_directory(os.path.dirname(final) or ".")


def _sync_directory(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, durable: bool = False) -> Iterator[str]:
    """Yield a temporary local path beside ``final``; rename it over ``final`` only on success.

    The temporary file is removed if the block raises or is interrupted. With ``durable`` the
    file is synced to disk before the rename. An ``OSError`` on the temporary file (raised here
    or in the block) is raised again naming ``final``.

    For example::

        with atomic_path("out/0001.png") as tmp:
            Image.fromarray(a).save(tmp, format="PNG")
    """
    final = writable_target(final)
    directory = os.path.dirname(final) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = temporary_name(final)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        _raise_on_final(err, tmp, final)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        move_into_place(tmp, final, durable=durable)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _raise_on_final(err, tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def writable_target(final: str | os.PathLike) -> str:
    """The local path a write to ``final`` replaces: a symbolic link's target (the link stays a
    link); UsageError for what a rename must never replace (a device, a FIFO, a directory, e.g.
    ``/dev/stdout``)."""
    final = os.fspath(final)
    if os.path.islink(final):
        final = os.path.realpath(final)
    try:
        mode = os.stat(final).st_mode
    except FileNotFoundError:
        return final
    if not stat.S_ISREG(mode):
        raise UsageError(
            f"{final}: not a regular file; labelfix writes a complete file under a temporary "
            "name and renames it into place, which would replace it (give a file path)"
        )
    return final


def write_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` (local or remote) through a temporary name."""
    path = os.fspath(path)
    if not fs.is_url(path):
        with atomic_path(path, durable=durable) as tmp, open(tmp, "wb") as fh:
            fh.write(data)
        return
    fd, tmp = tempfile.mkstemp(prefix=".labelfix-", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        move_into_place(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def copy_atomic(
    source: str | os.PathLike, destination: str | os.PathLike, *, durable: bool = False
) -> None:
    """Copy a local file to ``destination`` through a temporary name."""
    with atomic_path(destination, durable=durable) as tmp:
        shutil.copyfile(source, tmp)


#: Whether :func:`deferred_signals` holds the signals now (it nests: the outermost one delivers).
_deferring = False


@contextlib.contextmanager
def deferred_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM while the block runs, then deliver them as they would
    have been: the few renames that publish an output run whole, never half.

    A KeyboardInterrupt raised between two renames would leave half an output, and the code that
    catches it (removing temporary files) would run on a state it does not expect. While the
    block runs, the signals are only noted; when it ends, the previous handlers are put back and
    each noted signal is raised again (Ctrl-C then raises KeyboardInterrupt just after the
    block). Only the main thread can change signal handlers: elsewhere, and inside an enclosing
    block, this does nothing. Keep the block short: a second Ctrl-C waits for it too.
    """
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous: dict[int, object] = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if handler is None:  # installed outside Python: cannot be put back
            continue
        previous[signum] = handler
        signal.signal(signum, lambda received, frame: noted.append(received))
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(noted):
            signal.raise_signal(signum)
