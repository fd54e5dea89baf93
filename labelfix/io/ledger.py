"""The ledger: which files labelfix wrote into a directory, and with what content.

Every directory labelfix writes into keeps ``.labelfix-written`` (JSON Lines). Before a file is
renamed into place, one line records its name (relative to the directory) and the sha256 of
its new content; a file that stops being labelfix's (rewritten in place: the user's data again)
or that labelfix removes gets a ``released`` line. A file is labelfix's to replace or remove
only while its content has a digest recorded since its last release
(:meth:`Ledger.owns`): a file the user copied in, edited or restored is theirs.

Writing the line *before* the rename means a run killed between the two leaves a file whose
content either has the recorded digest (the rename happened: labelfix's) or its earlier one
(also recorded, when labelfix wrote it). Lines are appended with one ``write`` each, so parallel
workers never interleave; a line cut short by a crash can only be the last one and is skipped.
Any other line that is not a ledger entry makes the ledger damaged (:class:`LedgerDamaged`):
labelfix then cannot tell which files are its own and refuses to guess.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> ledger = Ledger(d)
>>> ledger.record("a.png", "ab" * 32, run="r1", command="remap")
>>> ledger.digests("a.png")
('abababababababababababababababababababababababababababababababab',)
>>> ledger.release("a.png")
>>> Ledger(d).digests("a.png")
()
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from labelfix.errors import LabelfixError
from labelfix.io import fs
from labelfix.io.atomic import write_atomic

#: The ledger kept in every directory labelfix writes into.
LEDGER_NAME = ".labelfix-written"
#: At most this many digests are kept per file (the newest): a run killed between a line and
#: its rename leaves the file with the previous one.
KEEP_DIGESTS = 4
_DIGEST = re.compile(r"[0-9a-f]{64}")
_HEADER = {"labelfix_written": 1}


class LedgerDamaged(LabelfixError):
    """A ledger that cannot be read: labelfix cannot tell which files it wrote (exit 1)."""


def sha256_file(path: str) -> str | None:
    """The sha256 of a local file's content (None when it cannot be read)."""
    try:
        with fs.open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


class Ledger:
    """The ledger of one directory (local or remote), read when first asked.

    Local ledgers are appended to as files are written; a remote one (``gs://``) is kept in
    memory and uploaded whole by :meth:`flush`.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.path = fs.join(directory, LEDGER_NAME)
        self.remote = fs.is_url(directory)
        self._entries: dict[str, list[str]] | None = None
        self._lines = 0
        self._dirty = False

    def __getstate__(self) -> dict:  # sent to worker processes: they read it again if needed
        return {"directory": self.directory}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"])

    # ------------------------------------------------------------------------- reading

    @property
    def entries(self) -> dict[str, list[str]]:
        if self._entries is None:
            self._entries, self._lines = self._read()
        return self._entries

    def digests(self, name: str) -> tuple[str, ...]:
        """The digests recorded for ``name`` since its last release (oldest first)."""
        return tuple(self.entries.get(name, ()))

    def owns(self, name: str, path: str) -> bool:
        """Whether the file ``path`` (named ``name`` here) is labelfix's: its content has a
        digest recorded for ``name`` since the name was last released."""
        recorded = self.entries.get(name)
        return bool(recorded) and sha256_file(path) in recorded

    def _read(self) -> tuple[dict[str, list[str]], int]:
        try:
            data = fs.read_bytes(self.path)
        except FileNotFoundError:
            return {}, 0
        except OSError as err:
            raise LedgerDamaged(
                f"{self.path}: cannot read labelfix's ledger ({err.strerror or err}); it "
                "tells which files here labelfix wrote"
            ) from None
        entries: dict[str, list[str]] = {}
        lines = data.split(b"\n")
        last = len(lines) - 1  # the text after the final newline (empty unless cut short)
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            entry = _parse(raw)
            if entry is None:
                if number - 1 == last:  # a line cut short by a crash: never acted on
                    continue
                raise LedgerDamaged(
                    f"{self.path}: damaged at line {number} (not a ledger entry); labelfix "
                    "cannot tell which files here it wrote. Move it away, then remove or keep "
                    "the files yourself"
                )
            if entry is _HEADER:
                continue
            name, digest = entry
            if digest is None:
                entries.pop(name, None)
            else:
                kept = entries.setdefault(name, [])
                if digest not in kept:
                    kept.append(digest)
                del kept[:-KEEP_DIGESTS]
        return entries, len(lines)

    # ------------------------------------------------------------------------- writing

    def record(self, name: str, digest: str, *, run: str | None = None, command: str = "") -> None:
        """Note that ``name`` is about to get the content ``digest`` (before the rename)."""
        entry = {"file": name, "sha256": digest}
        if run:
            entry["run"] = run
        if command:
            entry["command"] = command
        self._append(entry)
        if self._entries is not None:
            kept = self._entries.setdefault(name, [])
            if digest not in kept:
                kept.append(digest)
            del kept[:-KEEP_DIGESTS]

    def release(self, name: str) -> None:
        """Note that ``name`` is no longer labelfix's (rewritten in place, or removed)."""
        if self._entries is not None and name not in self._entries:
            return
        self._append({"file": name, "released": True})
        if self._entries is not None:
            self._entries.pop(name, None)

    def _append(self, entry: dict) -> None:
        line = json.dumps(entry, ensure_ascii=True) + "\n"
        if self.remote:
            self.entries  # noqa: B018 - read the remote ledger before it is rewritten
            self._dirty = True
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise OSError(err.errno, err.strerror, self.path) from None
        try:
            if os.fstat(fd).st_size == 0:
                line = json.dumps(_HEADER) + "\n" + line
            os.write(fd, line.encode("utf-8"))
        except OSError as err:
            raise OSError(err.errno, err.strerror, self.path) from None
        finally:
            os.close(fd)
        self._lines += 1

    def flush(self) -> None:
        """Write the ledger whole when it must be: a remote one that changed, or a local one
        that this process read (a rerun into the directory) and that has grown much longer than
        what it says. Call it only while holding the directory's lock, with no worker writing."""
        if self.remote:
            if self._dirty:
                self._write(self.entries)
            return
        if self._entries is None:
            return  # never read here: nothing to fold, and memory stays flat
        entries, lines = self._read()  # workers may have appended since it was read
        if lines >= 2 * len(entries) + 64:
            self._write(entries)
        self._entries, self._lines = entries, lines

    def _write(self, entries: dict[str, list[str]]) -> None:
        lines = [json.dumps(_HEADER)]
        for name, digests in sorted(entries.items()):
            lines.extend(json.dumps({"file": name, "sha256": d}) for d in digests)
        write_atomic(self.path, ("\n".join(lines) + "\n").encode("utf-8"))
        self._dirty = False
        self._lines = len(lines)


def _parse(raw: bytes):
    """``(name, digest or None)`` of one ledger line, ``_HEADER`` for the header, None when it
    is not a ledger entry."""
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entry, dict):
        return None
    if entry == _HEADER:
        return _HEADER
    name = entry.get("file")
    if not isinstance(name, str) or not name or name.startswith("/") or "\x00" in name:
        return None
    if entry.get("released") is True:
        return name, None
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        return None
    return name, digest
