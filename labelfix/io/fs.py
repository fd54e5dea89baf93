"""One filesystem layer for every command: local paths through ``os``, URLs through fsspec.

A path with a scheme (``gs://bucket/masks``, ``s3://bucket/masks``, ``memory://masks``) goes to
`fsspec <https://filesystem-spec.readthedocs.io>`_, imported only when such a path is seen
(``pip install 'labelfix[remote]'``, plus ``gcsfs`` for ``gs://`` or ``s3fs`` for ``s3://``).
Every other path is a local path and goes straight to ``os``.
Paths keep the caller's spelling: ``walk("gs://b/masks")`` yields ``gs://b/masks/a``, never a
stripped ``b/masks/a``.

No policy lives here: atomic writing is :mod:`labelfix.io.atomic`'s.

>>> join("gs://bucket/masks", "a", "0001.png")
'gs://bucket/masks/a/0001.png'
>>> relpath("gs://bucket/masks/a/0001.png", "gs://bucket/masks")
'a/0001.png'
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import posixpath
import re
import shutil
import stat
from collections.abc import Iterator
from typing import IO

from labelfix.errors import LabelfixError, MissingExtra

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` paths (handled by fsspec), False for local paths."""
    return isinstance(path, str) and _SCHEME.match(path) is not None


def _split(path: str) -> tuple[object, str]:
    """``(fsspec filesystem, path without the scheme)`` of a URL."""
    try:
        import fsspec
    except ImportError:
        raise MissingExtra(
            f"{path}: remote paths need fsspec: pip install 'labelfix[remote]'"
        ) from None
    try:
        return fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as err:
        raise MissingExtra(f"{path}: no filesystem for this scheme ({err})") from None


def _scheme(path: str) -> str:
    return _SCHEME.match(path).group(0)


# ----------------------------------------------------------------------------- paths


def join(path: str | os.PathLike, *parts: str) -> str:
    path = os.fspath(path)
    if not is_url(path):
        return os.path.join(path, *parts)
    return "/".join([path.rstrip("/"), *(p.strip("/") for p in parts)])


def dirname(path: str) -> str:
    if not is_url(path):
        return os.path.dirname(path)
    scheme = _scheme(path)
    rest = path[len(scheme) :].rstrip("/")
    return scheme + posixpath.dirname(rest)


def basename(path: str) -> str:
    return os.path.basename(path) if not is_url(path) else posixpath.basename(path.rstrip("/"))


def normpath(path: str) -> str:
    if not is_url(path):
        return os.path.normpath(path)
    scheme = _scheme(path)
    return scheme + posixpath.normpath(path[len(scheme) :])


def relpath(path: str, start: str) -> str:
    if not is_url(path):
        return os.path.relpath(path, start)
    scheme = _scheme(path)
    return posixpath.relpath(path[len(scheme) :], start[len(_scheme(start)) :])


def printable(text: str) -> str:
    """``text`` (a path, or a message naming one) as valid Unicode: the bytes of a file name
    that is not UTF-8, which Python holds as surrogate escapes, become backslash escapes.

    >>> printable(os.fsdecode(b"masks/\\xff.png")), printable("café.png")
    ('masks/\\\\xff.png', 'café.png')
    """
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name makes (from JSON, say)
        data = text.encode("utf-8", "backslashreplace")
    return data.decode("utf-8", "backslashreplace")


# ----------------------------------------------------------------------------- queries


def _query(path: str, local, remote: str):
    """``local(path)`` for a local path, else the fsspec filesystem's method ``remote``."""
    if not is_url(path):
        return local(path)
    fs, p = _split(path)
    return getattr(fs, remote)(p)


def exists(path: str) -> bool:
    return _query(path, os.path.exists, "exists")


def isdir(path: str) -> bool:
    return _query(path, os.path.isdir, "isdir")


def isfile(path: str) -> bool:
    return _query(path, os.path.isfile, "isfile")


def getsize(path: str) -> int:
    return int(_query(path, os.path.getsize, "size"))


def listdir(path: str) -> list[str]:
    """Names in a directory (not full paths)."""
    if not is_url(path):
        return os.listdir(path)
    fs, p = _split(path)
    root = p.rstrip("/")
    return [
        posixpath.basename(e.rstrip("/")) for e in fs.ls(p, detail=False) if e.rstrip("/") != root
    ]


def walk(top: str, onerror=None) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` for local and remote directories; sorting ``dirs`` in place prunes/orders.

    ``onerror`` gets the OSError of a local directory that cannot be listed."""
    if not is_url(top):
        yield from os.walk(top, onerror=onerror)
        return
    fs, p = _split(top)
    yield from _walk_remote(fs, p.rstrip("/"), top.rstrip("/"))


def _walk_remote(fs, root: str, shown: str) -> Iterator[tuple[str, list[str], list[str]]]:
    dirs, files = [], []
    for entry in fs.ls(root, detail=True):
        name = entry["name"].rstrip("/")
        if name == root:  # object stores may list a directory's placeholder object
            continue
        (dirs if entry["type"] == "directory" else files).append(posixpath.basename(name))
    yield shown, dirs, files
    for d in dirs:
        yield from _walk_remote(fs, f"{root}/{d}", f"{shown}/{d}")


def file_sizes(top: str) -> dict[str, int]:
    """``{path: bytes}`` of every file under ``top`` (remote: from the listing, no extra calls)."""
    if not is_url(top):
        return {
            os.path.join(root, name): os.path.getsize(os.path.join(root, name))
            for root, _, files in os.walk(top)
            for name in files
        }
    fs, p = _split(top)
    found = fs.find(p, detail=True)
    stripped = p.rstrip("/")
    shown = top.rstrip("/")
    return {
        shown + name[len(stripped) :]: int(info.get("size") or 0)
        for name, info in found.items()
        if info.get("type") != "directory"
    }


# ----------------------------------------------------------------------------- reading, writing


class NotARegularFile(OSError):
    """A local path to read that is no regular file (a FIFO, a socket, a device); never opened.

    ``strerror`` says what it is: ``not a regular file (a FIFO)``.
    """


#: What a local path that is neither a regular file nor a directory is, for messages.
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_file(mode: int) -> str | None:
    """``"a FIFO"`` (socket, character or block device) for such an ``st_mode``, else None.

    >>> special_file(stat.S_IFIFO | 0o644), special_file(stat.S_IFREG | 0o644)
    ('a FIFO', None)
    """
    for test, what in _SPECIAL_FILES:
        if test(mode):
            return what
    return None


def _refuse_special(path: str, mode: int) -> None:
    what = special_file(mode)
    if what is not None:
        raise NotARegularFile(errno.EINVAL, f"not a regular file ({what})", path)
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)


def _open_local_for_reading(path: str, mode: str) -> IO:
    """``builtins.open(path, mode)`` for a regular file (symbolic links followed); what is no
    regular file is refused without opening it: opening a FIFO for reading waits until someone
    writes to it, a device may never end. The file is looked at with ``stat`` first, then
    opened non-blocking and looked at again (it may have been swapped in between)."""
    _refuse_special(path, os.stat(path).st_mode)

    def opener(name: str, flags: int) -> int:
        fd = os.open(name, flags | getattr(os, "O_NONBLOCK", 0))
        try:
            _refuse_special(path, os.fstat(fd).st_mode)
            if hasattr(os, "O_NONBLOCK"):
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    return builtins.open(path, mode, opener=opener)


def open(path: str, mode: str = "rb") -> IO:
    """A file object for ``path``: ``builtins.open`` locally, fsspec's for URLs.

    A local path opened for reading only must be a regular file (after following symbolic
    links): :class:`NotARegularFile` for a FIFO, socket or device, which is never opened.
    """
    if not is_url(path):
        if mode.startswith("r") and "+" not in mode:
            return _open_local_for_reading(os.fspath(path), mode)
        return builtins.open(path, mode)
    fs, p = _split(path)
    return fs.open(p, mode)


def read_bytes(path: str) -> bytes:
    """The whole file; :class:`NotARegularFile` for a local FIFO, socket or device."""
    with open(path, "rb") as fh:
        return fh.read()


#: The most an option file (a map file, class names, a colormap, class weights) may hold.
OPTION_FILE_LIMIT = 16 << 20

#: Byte-order marks, longest first (UTF-32's little-endian mark begins with UTF-16's).
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


class UnreadableText(LabelfixError):
    """A small text file given as an option that cannot be read as text (the CLI exits 2)."""


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB" if size >= 1 << 20 else f"{size:,} bytes"


def read_text(path: str | os.PathLike, *, what: str, limit: int = OPTION_FILE_LIMIT) -> str:
    """The text of a small file given as an option (``what``: ``"map file"``, ...).

    UTF-8 with or without a byte-order mark, or UTF-16/UTF-32 with one (what Windows editors
    save). :class:`UnreadableText`, one line naming the file, for a FIFO, socket or device
    (refused without opening it: reading one may never end), a file over ``limit`` bytes
    (never read whole), any other encoding, or binary data.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("wb", suffix=".csv", delete=False) as fh:
    ...     _ = fh.write("7,0".encode("utf-16"))
    >>> read_text(fh.name, what="map file")
    '7,0'
    >>> os.remove(fh.name)
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as err:
        raise UnreadableText(f"{path}: cannot read the {what}: {err.strerror or err}") from None
    if len(data) > limit:
        raise UnreadableText(f"{path}: the {what} is over {_mib(limit)}; is it the file you meant?")
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        shown = encoding.upper().removesuffix("-SIG")
        raise UnreadableText(
            f"{path}: the {what} is not {shown} text (byte 0x{data[err.start]:02x} at offset "
            f"{err.start}): save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise UnreadableText(
            f"{path}: the {what} is not text (it holds NUL characters; UTF-16 without a "
            "byte-order mark?): save it as UTF-8"
        )
    return text


def makedirs(path: str) -> None:
    if not is_url(path):
        os.makedirs(path, exist_ok=True)
        return
    fs, p = _split(path)
    fs.makedirs(p, exist_ok=True)


def remove(path: str) -> None:
    """Delete a file; FileNotFoundError when it is not there."""
    if not is_url(path):
        os.unlink(path)
        return
    fs, p = _split(path)
    if not fs.exists(p):
        raise FileNotFoundError(path)
    fs.rm_file(p)


def rmtree(path: str) -> None:
    """Delete a directory and everything under it; quietly when it is not there."""
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, p = _split(path)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(p, recursive=True)


def replace(src: str, dst: str) -> None:
    """Move ``src`` to ``dst``, overwriting it: ``os.replace`` locally, fsspec's move or upload
    otherwise. Atomic only local to local; :func:`labelfix.io.atomic.move_into_place` makes the
    other cases atomic by going through a temporary name."""
    if not is_url(dst):
        if is_url(src):
            raise ValueError(f"cannot move {src} to the local path {dst}")
        os.replace(src, dst)
        return
    fs, d = _split(dst)
    if is_url(src):
        _, s = _split(src)
        fs.mv(s, d)
        return
    fs.put_file(src, d)
    os.unlink(src)
