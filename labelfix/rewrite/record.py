"""The record of rewrite runs kept in every output (or in-place) directory, and its journal.

``.labelfix-remap.json`` lists every run (mapping, sources, which files it finished and the
sha256 each was given); while a run is under way its workers append to
``.labelfix-remap.journal``, which the end of the run (or the next run, after an interruption)
folds into the record. :class:`Guard` reads the records to keep a non-idempotent mapping
(Cityscapes labelIds -> trainIds) from being applied twice to the same file.

Each written file gets two journal lines: before its new content is renamed into place an
*intent* line with the sha256 of that content, after it a *done* line with the same digest.
Whether a file was remapped is decided from its content, never from its name alone: a file
counts as remapped by a run when its content has the digest the run gave it. A run killed
between the rename and the done line leaves the intent, which vouches the same way; a file the
user restored after an interrupted run has another digest and is remapped again.

A record or journal that cannot be read (cut in half, garbage, wrong types) is an error naming
it (:class:`RecordDamaged`): discarding it silently could apply a mapping twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from labelfix.errors import LabelfixError
from labelfix.io import fs
from labelfix.io.door import Outlet
from labelfix.labels.labelmap import LabelMap
from labelfix.rewrite.jobs import FileJob

#: The record of rewrite runs kept in every output (or in-place) directory.
RECORD_NAME = ".labelfix-remap.json"
#: Per-file progress of a run, appended by the workers; folded into the record at the end.
#: It is left behind only by an interrupted run, and the next run folds it in.
JOURNAL_NAME = ".labelfix-remap.journal"
#: The record's format: 2 keeps a digest per file (1 listed names only, still read).
RECORD_FORMAT = 2


class AlreadyRemapped(LabelfixError):
    """The mapping is not idempotent and was already applied to these files (exit 1)."""


class RecordDamaged(LabelfixError):
    """A run record or journal that cannot be read (exit 1; ``--discard-record`` starts over)."""


def mapping_key(mapping: dict) -> tuple:
    """What makes two recorded mappings the same mapping (names and class lists aside)."""
    return (
        tuple(tuple(int(x) for x in rule) for rule in mapping.get("rules", ())),
        tuple(sorted(int(v) for v in mapping.get("ignore", ()))),
        mapping.get("out"),
        mapping.get("unmapped", "keep"),
    )


def read_runs(directory: str | os.PathLike, *, discard_damaged: bool = False) -> list[dict]:
    """The runs recorded in ``directory`` (empty when there is no record).

    Each run's ``files`` maps the files it finished to the sha256 it gave them (None: not
    known, a format-1 record or a file left as it was); ``pending`` (name -> sha256) lists the
    files it was renaming into place when it stopped, from the journal its workers left
    behind (see the module doc). Raises RecordDamaged for a record or journal that cannot be
    read, unless ``discard_damaged`` (then such a file counts as empty).
    """
    directory = os.fspath(directory)
    runs = _read_record(directory, discard_damaged=discard_damaged)
    done, intents = _read_journal(directory, discard_damaged=discard_damaged)
    return [_with_journal(run, done, intents) for run in runs]


def damaged(directory: str | os.PathLike) -> list[str]:
    """The paths of ``directory``'s record and journal that cannot be read."""
    directory = os.fspath(directory)
    found = []
    for name, read in (
        (RECORD_NAME, _read_record),
        (JOURNAL_NAME, lambda d: list(_journal_entries(d))),
    ):
        try:
            read(directory)
        except RecordDamaged:
            found.append(os.path.join(directory, name))
    return found


def _damaged(path: str, what: str) -> RecordDamaged:
    return RecordDamaged(
        f"{path}: damaged run record ({what}); it keeps a mapping from being applied twice, so "
        "labelfix will not guess. Restore it, or pass --discard-record to start a new record "
        "(files an earlier run already mapped would then be mapped again)"
    )


def _read_record(directory: str, *, discard_damaged: bool = False) -> list[dict]:
    """The runs of ``directory``'s record as it was written (the journal aside), ``files``
    as a dict; RecordDamaged for one that cannot be read."""
    path = os.path.join(directory, RECORD_NAME)
    try:
        data = fs.read_bytes(path)
    except FileNotFoundError:
        return []
    except OSError as err:
        if discard_damaged:
            return []
        raise _damaged(path, f"cannot read it: {err.strerror or err}") from None
    try:
        return _parse_record(data)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
        if discard_damaged:
            return []
        raise _damaged(path, str(err) or type(err).__name__) from None


def _parse_record(data: bytes) -> list[dict]:
    record = json.loads(data.decode("utf-8"))
    if not isinstance(record, dict) or not isinstance(record.get("runs"), list):
        raise ValueError("not a labelfix run record")
    runs = []
    for run in record["runs"]:
        if not isinstance(run, dict) or not isinstance(run.get("id"), str):
            raise ValueError("a run without an id")
        if not isinstance(run.get("mapping", {}), dict):
            raise ValueError(f"run {run['id']}: its mapping is not an object")
        mapping_key(run.get("mapping", {}))  # its rules are numbers
        files = run.get("files", [])
        if isinstance(files, list):
            files = dict.fromkeys(files)
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in files.items()
        ):
            raise ValueError(f"run {run['id']}: its files are not names")
        pending = run.get("pending") or {}
        if not isinstance(pending, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in pending.items()
        ):
            raise ValueError(f"run {run['id']}: its pending files are not names and digests")
        runs.append({**run, "files": files, "pending": pending})
    return runs


def _journal_entries(
    directory: str, *, discard_damaged: bool = False
) -> Iterator[tuple[str, str, str | None, str | None]]:
    """``(run id, file, intent digest or None, done digest or None)`` per line of the journal,
    read as it goes; a line cut short by a crash (the last) is skipped, any other bad line is
    RecordDamaged."""
    path = os.path.join(directory, JOURNAL_NAME)
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    except OSError as err:
        if discard_damaged:
            return
        raise _damaged(path, f"cannot read it: {err.strerror or err}") from None
    with fh:
        number, held = 0, None
        for raw in fh:
            number += 1
            if held is not None:  # a bad line followed by another: not a torn last line
                if discard_damaged:
                    return
                raise _damaged(path, f"line {held} is not a journal entry")
            entry = _journal_line(raw)
            if entry is None:
                held = number
                continue
            yield entry
        if held is not None and raw.endswith(b"\n") and not discard_damaged:
            raise _damaged(path, f"line {held} is not a journal entry")


def _journal_line(raw: bytes) -> tuple[str, str, str | None, str | None] | None:
    try:
        entry = json.loads(raw)
        run, name = entry["run"], entry["file"]
        intent, done = entry.get("intent"), entry.get("sha256")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    if not (isinstance(run, str) and isinstance(name, str)):
        return None
    if not all(v is None or isinstance(v, str) for v in (intent, done)):
        return None
    return run, name, intent or None, done or None


def _read_journal(
    directory: str, *, leave_out: str | None = None, discard_damaged: bool = False
) -> tuple[dict[str, dict[str, str | None]], dict[str, dict[str, str]]]:
    """``(done, intents)``: per run id (but ``leave_out``), the files finished (with their
    digests) and the digests files were to get."""
    done: dict[str, dict[str, str | None]] = {}
    intents: dict[str, dict[str, str]] = {}
    for run_id, name, intent, digest in _journal_entries(
        directory, discard_damaged=discard_damaged
    ):
        if run_id == leave_out:
            continue
        if intent:
            intents.setdefault(run_id, {})[name] = intent
        else:
            done.setdefault(run_id, {})[name] = digest
    return done, intents


def finish_run(outlet: Outlet, run_id: str, *, when: str, resumed: Iterable[str] = ()) -> str:
    """Mark the run ``run_id`` complete in the record of ``outlet``'s directory, and the
    interrupted runs it finished (``resumed``) as finished by it; the journal is folded in.

    The run's own files go from the journal to the record a line at a time: memory does not
    grow with the number of files a run writes.
    """
    directory = outlet.root
    resumed = set(resumed)
    done, intents = _read_journal(directory, leave_out=run_id)  # normally empty: folded at start
    runs = [_with_journal(run, done, intents) for run in _read_record(directory)]
    path = os.path.join(directory, RECORD_NAME)
    with outlet.create(path) as staged:
        out = io.TextIOWrapper(staged, encoding="utf-8", write_through=True)
        out.write(f'{{"labelfix_remap": {RECORD_FORMAT}, "runs": [\n')
        for i, run in enumerate(runs):
            out.write(",\n" if i else "")
            if run.get("id") == run_id:
                run.update(finished=when, complete=True)
                _write_streamed(run, directory, out)
                continue
            if run.get("id") in resumed and not run.get("complete"):
                run["finished_by"] = run_id
            out.write(json.dumps(_clean(run), indent=1))
        out.write("\n]}\n")
        out.detach()
    outlet.delete_own(os.path.join(directory, JOURNAL_NAME))  # folded into the record
    return path


def _clean(run: dict) -> dict:
    """``run`` as the record keeps it (no empty ``pending``)."""
    if not run.get("pending"):
        run = {k: v for k, v in run.items() if k != "pending"}
    return run


def _write_streamed(run: dict, directory: str, out) -> None:
    """Write ``run`` to ``out`` with the files the journal says it finished, one at a time.

    Held meanwhile: the files being renamed into place (an intent line waits for its done line,
    a few per worker) and those that failed after their intent (``pending`` in the record)."""
    meta = {k: v for k, v in run.items() if k not in ("files", "pending")}
    out.write(json.dumps(meta, indent=1)[:-2] + ',\n "files": {')
    pending: dict[str, str] = dict(run.get("pending") or {})
    separator = ""

    def put(name: str, digest: str | None) -> None:
        nonlocal separator
        out.write(f"{separator}\n  {json.dumps(name)}: {json.dumps(digest)}")
        separator = ","

    for name, digest in run.get("files", {}).items():
        put(name, digest)
    for run_id, name, intent, digest in _journal_entries(directory):
        if run_id != run["id"]:
            continue
        if intent:
            pending[name] = intent
        else:
            pending.pop(name, None)
            put(name, digest)
    out.write("\n }")
    if pending:
        out.write(',\n "pending": ' + json.dumps(pending))
    out.write("\n}")


def _with_journal(run: dict, done: dict, intents: dict) -> dict:
    """``run`` with its journal lines folded in (see :func:`read_runs`)."""
    files = dict(run.get("files") or {})
    files.update(done.get(run.get("id"), {}))
    run["files"] = files
    pending = dict(run.get("pending") or {})
    pending.update(intents.get(run.get("id"), {}))
    pending = {name: digest for name, digest in pending.items() if name not in files}
    if pending:
        run["pending"] = pending
    else:
        run.pop("pending", None)
    return run


def file_digest(path: str | os.PathLike) -> str | None:
    """The sha256 of a file's content (None when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def write_runs(outlet: Outlet, runs: list[dict]) -> str:
    """Write the record of ``outlet``'s directory whole (the journal folded in)."""
    path = os.path.join(outlet.root, RECORD_NAME)
    data = {"labelfix_remap": RECORD_FORMAT, "runs": [_clean(r) for r in runs]}
    outlet.write(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))
    outlet.delete_own(os.path.join(outlet.root, JOURNAL_NAME))  # folded into the record
    return path


def set_aside(outlet: Outlet, paths: Iterable[str], *, when: str) -> list[str]:
    """Move damaged record files out of the way (``--discard-record``): renamed, never
    deleted; returns the new names."""
    moved = []
    for path in paths:
        aside = f"{path}.damaged-{when.replace(':', '')}"
        outlet.commit(path, aside)
        moved.append(aside)
    return moved


def _ancestors(directory: str) -> Iterable[str]:
    while True:
        yield directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return
        directory = parent


@dataclass(frozen=True)
class Guarded:
    """What :class:`Guard` found: the files to skip and why, notes, and ``resumes``:
    ``(record directory, run id)`` of interrupted runs this one finishes."""

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


class Guard:
    """Keeps a non-idempotent mapping from being applied twice to the same files.

    Fed the files of a run one at a time (:meth:`check`), it keeps counts and examples, not the
    files: memory grows with the records it reads and the files it skips, not with the run.
    A file counts as remapped by a run when the run finished it, or when the run was renaming
    it into place when it stopped and the file now has the content it was to get. In place,
    such files are skipped; when every file was remapped by runs that did not finish, this run
    finishes their work (nothing left to do). :meth:`verdict` raises AlreadyRemapped when every
    file was remapped by a finished run, or when writing elsewhere (skipping would leave holes
    in the output).
    """

    def __init__(
        self, label_map: LabelMap, *, in_place: bool, force: bool, discard_damaged: bool = False
    ):
        self.label_map, self.in_place, self.force = label_map, in_place, force
        self.discard_damaged = discard_damaged
        self.key = mapping_key(label_map.to_dict())
        self.files = self.hits = self.others = 0
        self.skipped: list[str] = []
        self.first_hit: tuple[str, str] | None = None  # (source, record directory)
        self.latest: dict | None = None  # the latest run that remapped one of the files
        self.any_finished = False
        self.interrupted: dict[tuple[str, str], None] = {}
        self.first_other: tuple[str, dict] | None = None
        self._records: dict[str, list[tuple[dict, frozenset[str], dict]]] = {}
        self._chains: dict[str, tuple[str, list[str]]] = {}

    def check(self, job: FileJob) -> bool:
        """Note one file; True when an earlier run of this mapping remapped it."""
        self.files += 1
        if self.label_map.idempotent:
            return False
        path, directories = self._chain(job.source)
        digest = _LazyDigest(path)
        hit: dict | None = None  # the latest run of this mapping that remapped the file
        other: dict | None = None  # a run of another mapping that did
        for directory in directories:
            name = os.path.relpath(path, directory)
            for run, files, pending in self._records[directory]:  # oldest first: latest wins
                if name in files:
                    if files[name] is not None and files[name] != digest():
                        continue  # restored or changed since: not this run's output
                elif name not in pending or pending[name] != digest():
                    continue
                if _run_key(run) == self.key:
                    hit = run
                else:
                    other = other or run
            if hit is not None:
                self._note_hit(job.source, directory, hit)
                break
        if other is not None:
            self.others += 1
            self.first_other = self.first_other or (job.source, other)
        return hit is not None

    def _note_hit(self, source: str, directory: str, run: dict) -> None:
        self.hits += 1
        self.first_hit = self.first_hit or (source, directory)
        if self.latest is None or str(run.get("started")) > str(self.latest.get("started")):
            self.latest = run
        if finished(run):
            self.any_finished = True
        elif run.get("id"):
            self.interrupted[directory, str(run["id"])] = None
        if self.in_place:
            self.skipped.append(source)

    def _chain(self, source: str) -> tuple[str, list[str]]:
        """The real path of ``source`` and the directories above it that keep records (each
        directory's answer is kept: a file costs one ``lstat`` unless it is a link)."""
        parent, base = os.path.split(source)
        if parent not in self._chains:
            real = os.path.realpath(parent or ".")
            self._chains[parent] = (real, [d for d in _ancestors(real) if self._read(d)])
        real, directories = self._chains[parent]
        if os.path.islink(source):
            path = os.path.realpath(source)
            return path, [d for d in _ancestors(os.path.dirname(path)) if self._read(d)]
        return os.path.join(real, base), directories

    def _read(self, directory: str) -> list:
        if directory not in self._records:
            found = []
            if os.path.exists(os.path.join(directory, RECORD_NAME)):
                found = [
                    (r, r["files"], r.get("pending") or {})
                    for r in read_runs(directory, discard_damaged=self.discard_damaged)
                ]
            self._records[directory] = found
        return self._records[directory]

    def verdict(self) -> Guarded:
        """What to skip, or AlreadyRemapped (see the class doc)."""
        notes: tuple[str, ...] = ()
        if self.first_other is not None:
            source, run = self.first_other
            notes = (
                f"{self.others} file(s), e.g. {source}, were remapped before with another "
                f"mapping ({_describe_record(run)}); check that this one is meant for them",
            )
        if not self.hits or self.force:
            return Guarded(notes=notes)
        source, directory = self.first_hit
        run = self.latest
        when = run.get("finished") or run.get("started") or "an earlier run"
        state = "" if finished(run) else " (a run that did not finish)"
        what = (
            f"{self.hits} file(s), e.g. {source}, were already remapped by this "
            f"mapping ({self.label_map.describe()}) on {when}{state}, as recorded in "
            f"{os.path.join(directory, RECORD_NAME)}; the mapping is not idempotent, so "
            "applying it again would change them a second time"
        )
        if not self.in_place or (self.hits == self.files and self.any_finished):
            raise AlreadyRemapped(f"{what}. Use --force to apply it anyway.")
        return Guarded(
            skipped=tuple(self.skipped),
            reason=f"{what}; they were skipped (--force remaps them again)",
            notes=notes,
            resumes=tuple(self.interrupted),
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
    outlet: Outlet,
    job: FileJob,
    run_id: str | None,
    *,
    intent: str | None = None,
    digest: str | None = None,
    durable: bool = False,
) -> None:
    """Record one finished file (with ``digest``, the sha256 it was given), or with ``intent``
    the content it is about to get.

    One short append, so parallel workers do not interleave; ``durable`` syncs it to disk (an
    intent must be on disk before the rename it announces).
    """
    if run_id is None:
        return
    entry = {"run": run_id, "file": job.record_name}
    if intent is not None:
        entry["intent"] = intent
    elif digest is not None:
        entry["sha256"] = digest
    outlet.append(
        os.path.join(job.record_root, JOURNAL_NAME), json.dumps(entry) + "\n", durable=durable
    )
