"""The record of rewrite runs kept in every output (or in-place) directory, and its journal.

``.labelfix-remap.json`` lists every run (mapping, sources, which files it finished); while a run
is under way its workers append to ``.labelfix-remap.journal``, which the end of the run (or the
next run, after an interruption) folds into the record. :func:`guard` reads the records to keep a
non-idempotent mapping (Cityscapes labelIds -> trainIds) from being applied twice to the same file.

Each written file gets two journal lines: before its new content is renamed into place an
*intent* line with the sha256 of that content, after it a *done* line. A run killed between the
rename and the done line leaves the intent: a file whose content has that digest was written by
the run, and counts as done. A run killed before the rename leaves the old content, whose digest
differs, so the file is remapped again. Either way no file is mapped twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from labelfix.errors import LabelfixError
from labelfix.io.atomic import write_atomic
from labelfix.labels.labelmap import LabelMap
from labelfix.rewrite.jobs import FileJob

#: The record of rewrite runs kept in every output (or in-place) directory.
RECORD_NAME = ".labelfix-remap.json"
#: Per-file progress of a run, appended by the workers; folded into the record at the end.
#: It is left behind only by an interrupted run, and the next run folds it in.
JOURNAL_NAME = ".labelfix-remap.journal"


class AlreadyRemapped(LabelfixError):
    """The mapping is not idempotent and was already applied to these files (exit 1)."""


def mapping_key(mapping: dict) -> tuple:
    """What makes two recorded mappings the same mapping (names and class lists aside)."""
    return (
        tuple(tuple(int(x) for x in rule) for rule in mapping.get("rules", ())),
        tuple(sorted(int(v) for v in mapping.get("ignore", ()))),
        mapping.get("out"),
        mapping.get("unmapped", "keep"),
    )


def read_runs(directory: str | os.PathLike) -> list[dict]:
    """The runs recorded in ``directory`` (empty when there is no record).

    Files of an interrupted run are taken from the journal its workers left behind: ``files``
    lists the files it finished, ``pending`` (name -> sha256) the files it was renaming into
    place when it stopped (see the module doc).
    """
    directory = os.fspath(directory)
    runs: list[dict] = []
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(directory, RECORD_NAME), encoding="utf-8") as fh:
            data = json.load(fh)
        runs = [dict(r) for r in data.get("runs", []) if isinstance(r, dict)]
    done, intents = _read_journal(directory)
    for run in runs:
        extra = done.get(run.get("id"), [])
        if extra:
            run["files"] = list(dict.fromkeys([*run.get("files", []), *extra]))
        pending = dict(run.get("pending") or {}) if isinstance(run.get("pending"), dict) else {}
        pending.update(intents.get(run.get("id"), {}))
        finished = set(run.get("files", []))
        pending = {name: digest for name, digest in pending.items() if name not in finished}
        if pending:
            run["pending"] = pending
        else:
            run.pop("pending", None)
    return runs


def _read_journal(directory: str) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """``(done, intents)``: per run id, the files finished and the digests they were to get."""
    done: dict[str, list[str]] = {}
    intents: dict[str, dict[str, str]] = {}
    try:
        with open(os.path.join(directory, JOURNAL_NAME), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return done, intents
    for line in lines:
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            entry = json.loads(line)  # a line cut short by a crash is skipped
            if entry.get("intent"):
                intents.setdefault(entry["run"], {})[entry["file"]] = str(entry["intent"])
            else:
                done.setdefault(entry["run"], []).append(entry["file"])
    return done, intents


def file_digest(path: str | os.PathLike) -> str | None:
    """The sha256 of a file's content (None when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def write_runs(directory: str, runs: list[dict]) -> str:
    path = os.path.join(directory, RECORD_NAME)
    data = {"labelfix_remap": 1, "runs": runs}
    write_atomic(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, JOURNAL_NAME))  # folded into the record
    return path


def _ancestors(directory: str) -> Iterable[str]:
    while True:
        yield directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return
        directory = parent


@dataclass(frozen=True)
class Guarded:
    """What :func:`guard` leaves of a run: the files to remap, the files skipped and why, notes,
    and ``resumes``: ``(record directory, run id)`` of interrupted runs this one finishes."""

    files: tuple[FileJob, ...]
    skipped: tuple[str, ...] = ()
    reason: str | None = None
    notes: tuple[str, ...] = ()
    resumes: tuple[tuple[str, str], ...] = ()


def finished(run: dict) -> bool:
    """True for a run that completed, or whose work a later run completed."""
    return bool(run.get("complete") or run.get("finished_by"))


def run_finished(directory: str, run_id: str) -> bool:
    """True when the run ``run_id`` recorded in ``directory`` has finished (:func:`finished`)."""
    return any(finished(r) for r in read_runs(directory) if r.get("id") == run_id)


def guard(files: Sequence[FileJob], label_map: LabelMap, *, in_place: bool, force: bool) -> Guarded:
    """Keep a non-idempotent mapping from being applied twice to the same files.

    A file counts as remapped by a run when the run finished it, or when the run was renaming
    it into place when it stopped and the file now has the content it was to get. In place,
    such files are skipped; when every file was remapped by runs that did not finish, this run
    finishes their work (nothing left to do). Raises AlreadyRemapped when every file was
    remapped by a finished run, or when writing elsewhere (skipping would leave holes in the
    output).
    """
    if label_map.idempotent:
        return Guarded(tuple(files))
    key = mapping_key(label_map.to_dict())
    cache: dict[str, list[tuple[dict, frozenset[str], dict]]] = {}

    def records(directory: str) -> list[tuple[dict, frozenset[str], dict]]:
        if directory not in cache:
            found = []
            if os.path.exists(os.path.join(directory, RECORD_NAME)):
                found = [
                    (r, frozenset(r.get("files", ())), r.get("pending") or {})
                    for r in read_runs(directory)
                ]
            cache[directory] = found
        return cache[directory]

    hits: list[tuple[int, str, dict]] = []
    others: list[tuple[int, dict]] = []
    for index, job in enumerate(files):
        path = os.path.realpath(job.source)
        digest = _LazyDigest(path)
        hit = None
        for directory in _ancestors(os.path.dirname(path)):
            runs = records(directory)
            if not runs:
                continue
            name = os.path.relpath(path, directory)
            for run, names, pending in runs:  # oldest first: the latest hit wins
                if name not in names and (name not in pending or pending[name] != digest()):
                    continue
                if _run_key(run) == key:
                    hit = (index, directory, run)
                else:
                    others.append((index, run))
            if hit is not None:
                hits.append(hit)
                break
    notes: tuple[str, ...] = ()
    if others:
        index, run = others[0]
        notes = (
            f"{len({i for i, _ in others})} file(s), e.g. {files[index].source}, were remapped "
            f"before with another mapping ({_describe_record(run)}); check that this one is "
            "meant for them",
        )
    if not hits or force:
        return Guarded(tuple(files), notes=notes)
    index, directory, _ = hits[0]
    run = max((h[2] for h in hits), key=lambda r: str(r.get("started")))  # the latest
    when = run.get("finished") or run.get("started") or "an earlier run"
    state = "" if finished(run) else " (a run that did not finish)"
    what = (
        f"{len(hits)} file(s), e.g. {files[index].source}, were already remapped by this "
        f"mapping ({label_map.describe()}) on {when}{state}, as recorded in "
        f"{os.path.join(directory, RECORD_NAME)}; the mapping is not idempotent, so "
        "applying it again would change them a second time"
    )
    interrupted = [(d, r) for _, d, r in hits if not finished(r)]
    if not in_place or (len(hits) == len(files) and len(interrupted) < len(hits)):
        raise AlreadyRemapped(f"{what}. Use --force to apply it anyway.")
    done = {i for i, _, _ in hits}
    return Guarded(
        files=tuple(job for i, job in enumerate(files) if i not in done),
        skipped=tuple(files[i].source for i in sorted(done)),
        reason=f"{what}; they were skipped (--force remaps them again)",
        notes=notes,
        resumes=tuple(dict.fromkeys((d, str(r["id"])) for d, r in interrupted if r.get("id"))),
    )


class _LazyDigest:
    """A file's sha256, read only when first asked for."""

    def __init__(self, path: str):
        self.path = path
        self.value: str | None = None
        self.read = False

    def __call__(self) -> str | None:
        if not self.read:
            self.value, self.read = file_digest(self.path), True
        return self.value


def _run_key(run: dict) -> tuple | None:
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        return mapping_key(run.get("mapping", {}))
    return None  # a record edited by hand: matches nothing


def _describe_record(run: dict) -> str:
    with contextlib.suppress(LabelfixError, TypeError, ValueError):
        return LabelMap.from_dict(run.get("mapping", {})).describe()
    return "unreadable record"


def journal(
    job: FileJob, run_id: str | None, *, intent: str | None = None, durable: bool = False
) -> None:
    """Record one finished file, or with ``intent`` (a sha256) the content it is about to get.

    One short append, so parallel workers do not interleave; ``durable`` syncs it to disk (an
    intent must be on disk before the rename it announces).
    """
    if run_id is None:
        return
    entry = {"run": run_id, "file": job.record_name}
    if intent is not None:
        entry["intent"] = intent
    line = json.dumps(entry) + "\n"
    fd = os.open(
        os.path.join(job.record_root, JOURNAL_NAME), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
    )
    try:
        os.write(fd, line.encode("utf-8"))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
