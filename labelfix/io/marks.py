"""The mark of a directory whose files a run is rewriting in place.

The door (:mod:`labelfix.io.door`) writes ``.labelfix-inplace.json`` into every directory an
in-place run rewrites, when the run starts changing files (state ``running``), and marks it
``finished`` at the run's commit point. A mark left ``running`` by a run that is no longer alive
means a half-rewritten directory; readers (:mod:`labelfix.io.inputs`) refuse it and name the
command that finishes the job. The mark stays after a run finishes: readers compare it before
and after they read, so a rewrite that started and finished meanwhile is seen too.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import socket
import sys
from collections.abc import Iterable

from labelfix.io.atomic import write_atomic

#: The mark's name inside the directory.
IN_PLACE_NAME = ".labelfix-inplace.json"
#: The command line of this process's labelfix command (:func:`set_command_line`).
_COMMAND_LINE: list[str] | None = None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def mark_in_place(directory: str, *, run: str, command: str, done: bool = False) -> None:
    """Write ``directory``'s mark: being rewritten by ``run``, or (``done``) finished."""
    path = os.path.join(directory, IN_PLACE_NAME)
    mark = read_in_place(directory) if done else None
    if mark is None or mark.get("run") != run:
        mark = {
            "run": run,
            "command": command,
            "argv": _argv(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now(),
        }
    mark["state"] = "finished" if done else "running"
    if done:
        mark["finished"] = now()
    write_atomic(path, (json.dumps(mark, indent=1) + "\n").encode("utf-8"), durable=True)


def read_in_place(directory: str) -> dict | None:
    """``directory``'s mark (None when there is none); a damaged one reads as a run that did
    not finish (``{"state": "damaged"}``)."""
    path = os.path.join(directory, IN_PLACE_NAME)
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 16)
    except FileNotFoundError:
        return None
    except OSError:
        return {"state": "damaged"}
    try:
        mark = json.loads(data)
    except (ValueError, RecursionError):
        return {"state": "damaged"}
    return mark if isinstance(mark, dict) else {"state": "damaged"}


def set_command_line(args: Iterable[str]) -> None:
    """Record the ``labelfix ...`` command line being run (the CLI does, once), so that a mark
    can say which command finishes an interrupted run."""
    global _COMMAND_LINE
    _COMMAND_LINE = ["labelfix", *args]


def _argv() -> str:
    args = _COMMAND_LINE if _COMMAND_LINE is not None else list(sys.argv)
    return " ".join(shlex.quote(a) for a in args)
