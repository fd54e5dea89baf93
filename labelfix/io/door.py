"""The one door: every file any labelfix command writes goes through here, and only here is it
decided what may be written.

A run opens a :class:`Door` with its :class:`Rules` (the command, the inputs it reads, whether it
rewrites them in place) and asks it for an :class:`Outlet` per directory it writes into. Every
write, copy, rename into place and removal is a method of the outlet, which applies the rules:

1. **Never an input.** A target that is an input file of the run, lies inside an input directory
   (unless the run rewrites its inputs in place), or reaches either through symbolic links is
   refused: :class:`Refused`, a usage error (exit 2) naming both paths.
2. **Never the user's file.** An existing file is replaced or removed only when a ledger above
   it (:mod:`labelfix.io.ledger`) says labelfix wrote it *and* its content is still what
   labelfix wrote. A file rewritten in place is the user's data again, never "an earlier run's
   output". Labelfix's own bookkeeping files (hidden names containing ``labelfix``) are its own
   by name.
3. **One run per directory.** An outlet holds its directory's lock (:mod:`labelfix.io.lock`) for
   the whole run, from the process that opened the door (a Beam launcher too), and removes the
   temporary files a killed run left there.
4. **Whole or not at all.** Files are written under a temporary name and renamed into place
   (:mod:`labelfix.io.atomic`); errors name the final path.
5. **In place, announced.** A run that rewrites its inputs in place marks the directory
   (:mod:`labelfix.io.marks`) until it finishes, so that readers can tell a directory being
   rewritten, or left half-rewritten, from a clean one (:mod:`labelfix.io.inputs`).

Worker processes get outlets by pickling: they write and record, the launching process holds
the locks.

>>> import os, tempfile
>>> base = tempfile.mkdtemp(); masks = os.path.join(base, "masks"); os.mkdir(masks)
>>> with Door(Rules.of("show", inputs=[masks])) as door:
...     out = door.outlet(os.path.join(base, "pictures"))
...     out.write(os.path.join(base, "pictures", "a.png"), b"png")
...     door.outlet(masks)  # doctest: +ELLIPSIS
Traceback (most recent call last):
labelfix.io.door.Refused: .../masks is the input .../masks, which this `labelfix show` reads; ...
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from labelfix.errors import LabelfixError, UsageError
from labelfix.io import fs
from labelfix.io.atomic import (
    STAGING_PATTERN,
    STAGING_PREFIX,
    TMP_SUFFIX,
    copy_atomic,
    deferred_signals,
    move_into_place,
    remove_stale_temporaries,
    temporary_name,
    writable_target,
    write_atomic,
)
from labelfix.io.ledger import LEDGER_NAME, Ledger, sha256_file
from labelfix.io.lock import check_free, directory_lock
from labelfix.io.marks import mark_in_place, now


class Refused(UsageError):
    """A write the rules forbid (the CLI exits 2); the message names both paths."""


def is_reserved(name: str) -> bool:
    """Labelfix's own bookkeeping: hidden names that contain ``labelfix``.

    >>> is_reserved(".labelfix-remap.json"), is_reserved(".train.labelfix-publish.0a"), \
is_reserved("a.png")
    (True, True, False)
    """
    return name.startswith(".") and "labelfix" in name


def new_run_id() -> str:
    return f"{now()}-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Input:
    """One input of a run: the path as given, its real path, and whether it is a directory."""

    path: str
    real: str
    is_dir: bool

    @classmethod
    def of(cls, path: str | os.PathLike) -> Input:
        path = os.fspath(path)
        if fs.is_url(path):
            return cls(path, fs.normpath(path), fs.isdir(path))
        return cls(path, os.path.realpath(path), os.path.isdir(path))


@dataclass(frozen=True)
class Rules:
    """What a run may write: see the module doc. Built once per run, sent to its workers.

    ``overwrite`` (``predict --overwrite``) lets a run replace files labelfix did not write;
    the input rule still holds.
    """

    command: str
    inputs: tuple[Input, ...] = ()
    in_place: bool = False
    overwrite: bool = False

    @classmethod
    def of(
        cls,
        command: str,
        *,
        inputs: Iterable[str | os.PathLike | None] = (),
        in_place: bool = False,
        overwrite: bool = False,
    ) -> Rules:
        found = tuple(Input.of(p) for p in inputs if p is not None and _exists(os.fspath(p)))
        return cls(command, found, in_place, overwrite)

    def refuse_input(self, target: str, real: str, *, directory: bool = False) -> None:
        """Refused when ``target`` (real path ``real``) is an input or inside one (in place:
        only what lies outside every input is refused)."""
        inside_any = False
        for found in self.inputs:
            same = real == found.real
            inside = found.is_dir and _inside(real, found.real)
            if not (same or inside):
                continue
            inside_any = True
            if self.in_place and not directory:
                continue
            what = f"the input {found.path}" if same else f"inside the input {found.path}"
            through = "" if os.path.abspath(target) == real else " (through a symbolic link)"
            raise Refused(
                f"{target} is {what}{through}, which this `labelfix {self.command}` reads; "
                "writing there could replace what it reads: choose "
                + ("a directory" if directory else "an output")
                + " outside the inputs"
                + (", or use --in-place" if self.command in ("remap", "repair") else "")
            )
        if self.in_place and not directory and not inside_any and self.inputs:
            raise Refused(f"{target}: an in-place run writes only over its inputs")


def _exists(path: str) -> bool:
    return fs.exists(path) if fs.is_url(path) else os.path.lexists(path)


def _inside(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip(os.sep) + os.sep)


# ----------------------------------------------------------------------------- outlets


class Outlet:
    """Writes into one directory tree (``root``) under a run's :class:`Rules`.

    Made by :meth:`Door.outlet`, which holds the lock; picklable, so worker processes write
    through it too. Every path given is a path under ``root``.
    """

    def __init__(self, root: str, rules: Rules, *, run: str, dry_run: bool = False):
        self.root = root
        self.rules = rules
        self.run = run
        self.dry_run = dry_run
        self.remote = fs.is_url(root)
        self.ledger = Ledger(root)
        self._real_dirs: dict[str, str] = {}
        self._ledgers: dict[str, Ledger | None] = {}
        self._ready: set[str] = set()

    def __getstate__(self) -> dict:
        return {
            "root": self.root,
            "rules": self.rules,
            "run": self.run,
            "dry_run": self.dry_run,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], state["rules"], run=state["run"], dry_run=state["dry_run"])

    def __repr__(self) -> str:
        return f"Outlet({self.root!r}, command={self.rules.command!r})"

    # ------------------------------------------------------------------------- checks

    def name(self, target: str) -> str:
        """``target`` relative to the root (``a/b.png``)."""
        name = fs.relpath(target, self.root)
        if name == os.curdir or name.startswith(os.pardir):
            raise ValueError(f"{target} is not under {self.root}")
        return name.replace(os.sep, "/")

    def real(self, target: str) -> str:
        """The real path a write to ``target`` lands on (a final symbolic link followed)."""
        if self.remote:
            return fs.normpath(target)
        if os.path.islink(target):
            return os.path.realpath(target)
        parent, base = os.path.split(target)
        parent = parent or "."
        if parent not in self._real_dirs:
            self._real_dirs[parent] = os.path.realpath(parent)
        return os.path.join(self._real_dirs[parent], base)

    def check(self, target: str) -> str:
        """Apply the rules to a write of ``target``; the path a rename replaces.

        Raises Refused (see the module doc) and UsageError for what a rename must never replace
        (a device, a FIFO, a directory).
        """
        target = os.fspath(target)
        name = self.name(target)
        reserved = is_reserved(fs.basename(target))
        if not reserved:
            self.rules.refuse_input(target, self.real(target))
        if self.remote:
            if not reserved and not self.rules.overwrite and fs.exists(target):
                self._refuse_foreign(target, name)
            return target
        final = writable_target(target)
        if reserved or self.rules.in_place or self.rules.overwrite:
            return final
        if os.path.lexists(final):  # (a link to a file not there yet is written through)
            self._refuse_foreign(target, name)
        return final

    def owns(self, target: str) -> bool:
        """Whether the existing file ``target`` is labelfix's to replace (see the module doc)."""
        return any(ledger.owns(name, target) for ledger, name in self._ledgers_above(target))

    def _refuse_foreign(self, target: str, name: str) -> None:
        if self.owns(target):
            return
        recorded = any(ledger.digests(n) for ledger, n in self._ledgers_above(target))
        if recorded:
            raise Refused(
                f"{target} was changed since labelfix wrote it (its content is no longer what "
                "labelfix wrote): it is yours now; move it away or choose another output path"
            )
        raise Refused(
            f"{target} already exists and labelfix did not write it; move it away or choose "
            "another output path"
        )

    def _ledgers_above(self, target: str) -> Iterator[tuple[Ledger, str]]:
        """The ledgers of ``target``'s directory and every directory above it that has one,
        with ``target``'s name in each."""
        if self.remote:
            yield self.ledger, self.name(target)
            return
        path = os.path.abspath(target)
        directory = os.path.dirname(path)
        while True:
            ledger = self._ledger_in(directory)
            if ledger is not None:
                yield ledger, os.path.relpath(path, directory).replace(os.sep, "/")
            parent = os.path.dirname(directory)
            if parent == directory:
                return
            directory = parent

    def _ledger_in(self, directory: str) -> Ledger | None:
        if directory not in self._ledgers:
            root = os.path.abspath(self.root)
            if directory == root:
                found = self.ledger
            elif os.path.exists(os.path.join(directory, LEDGER_NAME)):
                found = Ledger(directory)
            else:
                found = None
            self._ledgers[directory] = found
        return self._ledgers[directory]

    def _prepare(self, target: str) -> None:
        """Create ``target``'s directory; refuse one below the root that another run locked."""
        directory = fs.dirname(target)
        if directory in self._ready:
            return
        if not self.remote:
            between = []
            d, root = os.path.abspath(directory), os.path.abspath(self.root)
            while d != root and _inside(d, root):
                between.append(d)
                d = os.path.dirname(d)
            check_free(between, inside=self.root)
        fs.makedirs(directory or ".")
        self._ready.add(directory)

    def _record(self, target: str, digest: str) -> None:
        """Note in the ledger that ``target`` gets ``digest`` (before it is renamed into place);
        in place, the file is released instead: it stays the user's."""
        if is_reserved(fs.basename(target)):
            return
        if self.rules.in_place:
            self._release(target)
            return
        self.ledger.record(self.name(target), digest, run=self.run, command=self.rules.command)

    def _release(self, target: str) -> None:
        for ledger, name in self._ledgers_above(target):
            if ledger.digests(name):
                ledger.release(name)

    def _refuse_dry(self) -> None:
        if self.dry_run:
            raise RuntimeError("a dry run writes nothing")

    # ------------------------------------------------------------------------- writing

    def write(self, target: str, data: bytes, *, durable: bool = False) -> str:
        """Write ``data`` to ``target`` (whole or not at all); returns ``target``."""
        self._refuse_dry()
        target = os.fspath(target)
        final = self.check(target)
        self._prepare(target)
        self._record(target, hashlib.sha256(data).hexdigest())
        write_atomic(final, data, durable=durable)
        return target

    def copy(self, source: str, target: str, *, durable: bool = False) -> str:
        """Copy the file ``source`` to ``target`` (whole or not at all)."""
        self._refuse_dry()
        final = self.check(target)
        self._prepare(target)
        digest = sha256_file(source)
        if digest is None:
            raise OSError(2, "cannot read the file to copy", source)
        self._record(target, digest)
        copy_atomic(source, final, durable=durable)
        return target

    def create(self, target: str, *, check: bool = True) -> StagedFile:
        """A new file for ``target``, written in pieces (``write``), hashed as it goes, renamed
        into place by :meth:`StagedFile.commit` (or by leaving its ``with`` block).

        With ``check=False`` the rules are applied only when it is committed (shards, whose
        final names are known only once every record is in)."""
        self._refuse_dry()
        if check:
            self.check(target)
        self._prepare(target)
        return StagedFile(self, target)

    @contextlib.contextmanager
    def staged(self, target: str) -> Iterator[str]:
        """A path (in a hidden directory beside ``target``, with ``target``'s own name) for a
        writer that needs one (Keras' ``model.save``, matplotlib); renamed into place when
        the block ends without error."""
        self._refuse_dry()
        final = self.check(target)
        self._prepare(target)
        with self.staging(fs.dirname(target)) as directory:
            path = os.path.join(directory, fs.basename(target))
            yield path
            self.commit(path, target, checked=final)

    def staging(self, directory: str | None = None):
        """A fresh hidden directory under ``directory`` (default: the root) for a writer that
        writes many files itself (Beam's shards); deleted when the block ends. Its files reach
        their final names only through :meth:`commit`."""
        self._refuse_dry()
        return staging_directory(directory or self.root)

    def commit(
        self, staged: str, target: str, *, sha256: str | None = None, checked: str | None = None
    ) -> str:
        """Rename the complete file ``staged`` (a :meth:`staging` file, or a local temporary
        file) to ``target``. ``sha256`` saves reading it again."""
        self._refuse_dry()
        final = checked if checked is not None else self.check(target)
        self._prepare(target)
        digest = sha256 or sha256_file(staged)
        if digest is None:
            raise OSError(2, "the staged file is gone", target)
        self._record(target, digest)
        move_into_place(staged, final)
        return target

    def remove(self, target: str) -> bool:
        """Remove ``target`` when it is labelfix's (see :meth:`owns`); False when it was not
        there. Refused for a file labelfix did not write, or that changed since."""
        self._refuse_dry()
        target = os.fspath(target)
        if not fs.exists(target):
            return False
        if not is_reserved(fs.basename(target)):
            self.rules.refuse_input(target, self.real(target))
            self._refuse_foreign(target, self.name(target))
        self._release(target)
        with contextlib.suppress(FileNotFoundError):
            fs.remove(target)
        return True

    def append(self, target: str, line: str, *, durable: bool = False) -> None:
        """Append one line to a journal of labelfix's own (a reserved name), in one write."""
        self._refuse_dry()
        if not is_reserved(fs.basename(target)) or self.remote:
            raise ValueError(f"{target}: only labelfix's own local journals are appended to")
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            if durable:
                os.fsync(fd)
        except OSError as err:
            raise OSError(err.errno, err.strerror, target) from None
        finally:
            os.close(fd)

    def delete_own(self, target: str) -> None:
        """Remove one of labelfix's own bookkeeping files (a reserved name)."""
        if not is_reserved(fs.basename(target)):
            raise ValueError(f"{target}: not a file of labelfix's own")
        with contextlib.suppress(FileNotFoundError):
            fs.remove(target)

    def directory(self, target: str) -> str:
        """A directory under the root for a writer that manages its own files in it
        (TensorFlow's checkpoints and summaries, which create it when they first write):
        never an input, nor locked by another run."""
        self._refuse_dry()
        target = os.fspath(target)
        self.name(target)  # under the root
        self.rules.refuse_input(target, self.real(target), directory=True)
        if not self.remote:
            check_free([target], inside=self.root)
        return target


class StagedFile(io.RawIOBase):
    """A file being written under a temporary name (see :meth:`Outlet.create`); a writable
    binary stream (wrap it in ``io.TextIOWrapper`` or ``gzip.GzipFile``)."""

    def __init__(self, outlet: Outlet, target: str):
        super().__init__()
        self.outlet, self.target = outlet, target
        self.digest = hashlib.sha256()
        self.size = 0
        if outlet.remote:
            fd, self.path = tempfile.mkstemp(prefix=".labelfix-", suffix=TMP_SUFFIX)
            self.fh = os.fdopen(fd, "wb")
        else:
            self.path = temporary_name(writable_target(target))
            try:
                self.fh = open(self.path, "xb")  # noqa: SIM115 - closed by commit/discard
            except OSError as err:
                raise OSError(err.errno, err.strerror, target) from None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        try:
            self.fh.write(data)
        except OSError as err:
            raise OSError(err.errno, err.strerror, self.target) from None
        return len(data)

    def flush(self) -> None:
        if not self.fh.closed:
            self.fh.flush()

    def close(self) -> None:
        """Close the temporary file (it stays staged until :meth:`commit`)."""
        if not self.fh.closed:
            try:
                self.fh.close()
            except OSError as err:
                raise OSError(err.errno, err.strerror, self.target) from None
        super().close()

    def commit(self, target: str | None = None) -> str:
        """Rename the file into place, at ``target`` when given (see :meth:`Outlet.commit`)."""
        self.close()
        final = target or self.target
        return self.outlet.commit(self.path, final, sha256=self.digest.hexdigest())

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def __enter__(self) -> StagedFile:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def staging_directory(base: str) -> Iterator[str]:
    """A fresh ``base/.labelfix-stage-<hex>`` (local or remote), deleted when the block ends;
    a killed run's is removed by the next run that writes into ``base``."""
    path = fs.join(base, f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}")
    fs.makedirs(path)
    try:
        yield path
    finally:
        fs.rmtree(path)


def open_private(path: str):
    """A new binary file inside a staging directory (:func:`staging_directory`): files a run
    hands to its own workers (a Beam listing), never outputs."""
    parts = path.replace("\\", "/").split("/")
    if not any(STAGING_PATTERN.fullmatch(part) for part in parts[:-1]):
        raise ValueError(f"{path}: not inside a labelfix staging directory")
    return fs.open(path, "wb")


# ----------------------------------------------------------------------------- the door


@dataclass
class Door:
    """The writes of one run (see the module doc): ``with Door(rules) as door:``.

    ``notes`` collects lines worth a warning (a lock taken over from a killed run), ``stale``
    the temporary files of killed runs removed. Leaving the block releases the locks. An
    in-place run marks its directories between :meth:`start` and :meth:`finish` (or the end of
    a block that raised nothing).
    """

    rules: Rules
    dry_run: bool = False
    run: str = field(default_factory=new_run_id)
    notes: list[str] = field(default_factory=list)
    stale: int = 0
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _outlets: dict[str, Outlet] = field(default_factory=dict)
    _in_place: list[str] = field(default_factory=list)

    def __enter__(self) -> Door:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(ok=kind is None)

    def outlet(self, root: str | os.PathLike) -> Outlet:
        """The outlet for ``root``: its lock taken (once), stale temporaries removed, and for
        an in-place run the directory marked as being rewritten."""
        root = os.fspath(root)
        key = root if fs.is_url(root) else os.path.realpath(root)
        if key in self._outlets:
            return self._outlets[key]
        outlet = Outlet(root, self.rules, run=self.run, dry_run=self.dry_run)
        if not self.rules.in_place:
            outlet.rules.refuse_input(root, outlet.real(root), directory=True)
        if not self.dry_run:
            self._open(outlet)
        self._outlets[key] = outlet
        return outlet

    def file(self, target: str | os.PathLike) -> tuple[Outlet, str]:
        """``(outlet of its directory, target)`` for a single output file."""
        target = os.fspath(target)
        return self.outlet(fs.dirname(target) or "."), target

    def write(self, target: str | os.PathLike, data: bytes) -> str:
        """Write one file (its directory's outlet opened as needed)."""
        outlet, target = self.file(target)
        return outlet.write(target, data)

    @contextlib.contextmanager
    def scratch(self, base: str | None = None) -> Iterator[str]:
        """A private staging directory (not an output) under ``base`` (local or remote; the
        system's temporary directory when None), removed when the block ends; write into it
        with :func:`open_private`."""
        with staging_directory(base or tempfile.gettempdir()) as path:
            yield path

    def _open(self, outlet: Outlet) -> None:
        if outlet.remote:
            fs.makedirs(outlet.root)
            return
        if not os.path.lexists(outlet.root):  # a run that writes nothing leaves no directory
            self._stack.callback(_remove_if_empty, outlet.root)
        held = self._stack.enter_context(directory_lock(outlet.root, command=self.rules.command))
        if held.note is not None:
            self.notes.append(held.note)
        self.stale += remove_stale_temporaries(outlet.root)

    def sweep(self, directories: Iterable[str]) -> None:
        """Remove the temporary files killed runs left in ``directories`` (below an outlet's
        root, whose lock this door holds); counted in :attr:`stale`."""
        for directory in directories:
            self.stale += remove_stale_temporaries(directory)

    def start(self) -> None:
        """The run is about to change files: an in-place run marks its directories as being
        rewritten (until :meth:`finish`)."""
        if not self.rules.in_place or self.dry_run:
            return
        for outlet in self._outlets.values():
            if not outlet.remote and outlet.root not in self._in_place:
                mark_in_place(outlet.root, run=self.run, command=self.rules.command)
                self._in_place.append(outlet.root)

    def finish(self) -> None:
        """The run's work is done: mark the directories it rewrote in place finished (call it
        at the commit point, inside :func:`~labelfix.io.atomic.deferred_signals`)."""
        for root in self._in_place:
            mark_in_place(root, run=self.run, command=self.rules.command, done=True)
        self._in_place.clear()

    def close(self, *, ok: bool = True) -> None:
        """Fold the ledgers and release the locks. An in-place run interrupted between
        :meth:`start` and :meth:`finish` keeps its mark: readers then see a half-rewritten
        directory; one that ends without an exception (``ok``) is finished."""
        try:
            with deferred_signals():
                for outlet in self._outlets.values():
                    if not self.dry_run:
                        with contextlib.suppress(LabelfixError, OSError):
                            outlet.ledger.flush()
                if ok:
                    self.finish()
        finally:
            self._stack.close()


def _remove_if_empty(directory: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(directory)
