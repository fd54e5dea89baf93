"""Inputs in a safe state: a reader refuses to read a directory that is being rewritten, or was
left half-rewritten, rather than report on (or pack into records) a mix of old and new masks.

:func:`watch_inputs` looks at the directories a command reads (each input, the directories
above it and below it) before the command reads them, and :meth:`InputWatch.confirm` looks
again once it has read them (before it publishes anything):

* a directory marked as being rewritten in place (:mod:`labelfix.io.marks`) by a
  run that is still alive: :class:`InputsBusy` (wait for it);
* the same mark left by a run that was killed: the masks are half-rewritten; the message names
  the command that finishes the job;
* a directory the reader lists files from while another run holds its lock (writing into it);
* any of these appearing, or an in-place run starting and finishing, while it was read.

Nothing is written into the inputs; remote inputs (``gs://``) are not watched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from labelfix.errors import LabelfixError
from labelfix.io import fs
from labelfix.io.lock import LOCK_NAME, describe_holder, holder
from labelfix.io.marks import IN_PLACE_NAME, read_in_place


class InputsBusy(LabelfixError):
    """An input directory is being rewritten or was left half-rewritten (exit 1)."""


def _mark_key(mark: dict | None) -> tuple | None:
    if mark is None:
        return None
    return (mark.get("run"), mark.get("state"))


@dataclass
class InputWatch:
    """What the input directories looked like when a command started reading them."""

    paths: tuple[str, ...]
    #: directory -> (in-place mark key, lock holder or None)
    before: dict[str, tuple] = field(default_factory=dict)

    def confirm(self) -> None:
        """Raise InputsBusy when an input directory changed state while it was read."""
        after = _survey(self.paths)
        for directory, state in after.items():
            _refuse(directory, state)
            if self.before.get(directory, (None, None))[0] != state[0]:
                mark = read_in_place(directory) or {}
                who = _who(mark)
                raise InputsBusy(
                    f"{directory}: rewritten in place while this command read it ({who}); "
                    "what was read may mix old and new files: run this command again"
                )


def watch_inputs(paths: Iterable[str | os.PathLike | None]) -> InputWatch:
    """Check the input directories now (InputsBusy, see the module doc) and return the watch
    whose :meth:`~InputWatch.confirm` checks them again."""
    local = tuple(os.fspath(p) for p in paths if p is not None and not fs.is_url(os.fspath(p)))
    before = _survey(local)
    for directory, state in before.items():
        _refuse(directory, state)
    return InputWatch(local, before)


def _survey(paths: tuple[str, ...]) -> dict[str, tuple]:
    """Per directory worth watching: ``(mark key, mark, live lock holder)``."""
    found: dict[str, tuple] = {}
    for path in paths:
        top = path if os.path.isdir(path) else (os.path.dirname(path) or ".")
        real = os.path.realpath(top)
        for directory in _above(real):
            _look(directory, found, listed=False)
        if os.path.isdir(path):
            _walk(top, found)
        else:
            _look(top, found, listed=True)
    return found


def _above(directory: str) -> Iterable[str]:
    parent = os.path.dirname(directory)
    while parent != directory:
        yield parent
        directory, parent = parent, os.path.dirname(parent)


def _walk(top: str, found: dict[str, tuple]) -> None:
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        names = {e.name for e in entries}
        _look(directory, found, listed=True, names=names)
        stack.extend(
            e.path for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=True)
        )


def _look(directory: str, found: dict, *, listed: bool, names: set[str] | None = None) -> None:
    if directory in found:
        return
    has_mark = (
        os.path.exists(os.path.join(directory, IN_PLACE_NAME))
        if names is None
        else (IN_PLACE_NAME in names)
    )
    has_lock = listed and (
        os.path.exists(os.path.join(directory, LOCK_NAME)) if names is None else LOCK_NAME in names
    )
    mark = read_in_place(directory) if has_mark else None
    held = holder(directory) if (has_lock or (mark and mark.get("state") != "finished")) else None
    if mark is None and held is None:
        return
    found[directory] = (_mark_key(mark), mark, held, listed)


def _refuse(directory: str, state: tuple) -> None:
    _, mark, held, listed = state
    if mark is not None and mark.get("state") != "finished":
        if held is not None:
            raise InputsBusy(
                f"{directory}: being rewritten in place now ({describe_holder(held)}); wait for "
                "it to finish, then run this command again"
            )
        if mark.get("state") == "damaged":
            raise InputsBusy(
                f"{directory}: its in-place mark {os.path.join(directory, IN_PLACE_NAME)} is "
                "damaged, so an in-place rewrite may not have finished; run it again, or remove "
                "the mark if you know the files are whole"
            )
        raise InputsBusy(
            f"{directory}: left half-rewritten by an in-place run that did not finish "
            f"({_who(mark)}); run `{mark.get('argv') or 'that command'}` again to finish it "
            "(the files already rewritten are recorded and skipped), then this command. If you "
            f"restored the files yourself, remove {os.path.join(directory, IN_PLACE_NAME)}"
        )
    if listed and held is not None:
        raise InputsBusy(
            f"{directory}: another labelfix run is writing into it now "
            f"({describe_holder(held)}); wait for it to finish, then run this command again"
        )


def _who(mark: dict) -> str:
    return describe_holder(
        {
            "pid": mark.get("pid", "?"),
            "host": mark.get("host"),
            "command": mark.get("command"),
            "started": mark.get("started", "at an unknown time"),
        }
    )
