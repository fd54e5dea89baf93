"""The record of rewrite runs kept in every output (or in-place) directory, and its journal.

``.labelfix-remap.json`` lists every run (mapping, sources, which files it finished); while a run
is under way its workers append each finished file to ``.labelfix-remap.journal``, which the end
of the run (or the next run, after an interruption) folds into the record. :func:`guard` reads
the records to keep a non-idempotent mapping (Cityscapes labelIds -> trainIds) from being applied
twice to the same file.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence

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

    Files of an interrupted run are taken from the journal its workers left behind.
    """
    directory = os.fspath(directory)
    runs: list[dict] = []
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(directory, RECORD_NAME), encoding="utf-8") as fh:
            data = json.load(fh)
        runs = [dict(r) for r in data.get("runs", []) if isinstance(r, dict)]
    journal = _read_journal(directory)
    for run in runs:
        extra = journal.get(run.get("id"), [])
        if extra:
            run["files"] = list(dict.fromkeys([*run.get("files", []), *extra]))
    return runs


def _read_journal(directory: str) -> dict[str, list[str]]:
    done: dict[str, list[str]] = {}
    try:
        with open(os.path.join(directory, JOURNAL_NAME), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return done
    for line in lines:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            entry = json.loads(line)  # a line cut short by a crash is skipped
            done.setdefault(entry["run"], []).append(entry["file"])
    return done


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


def guard(
    files: Sequence[FileJob], label_map: LabelMap, *, in_place: bool, force: bool
) -> tuple[Sequence[FileJob], tuple[str, ...], str | None, tuple[str, ...]]:
    """Keep a non-idempotent mapping from being applied twice to the same files.

    Returns the files to remap, the files skipped (in place: already remapped by this
    mapping), why, and notes; raises AlreadyRemapped when nothing would be left, or when
    writing elsewhere (skipping would leave holes in the output).
    """
    if label_map.idempotent:
        return files, (), None, ()
    key = mapping_key(label_map.to_dict())
    cache: dict[str, list[tuple[dict, frozenset[str]]]] = {}

    def records(directory: str) -> list[tuple[dict, frozenset[str]]]:
        if directory not in cache:
            found = []
            if os.path.exists(os.path.join(directory, RECORD_NAME)):
                found = [(r, frozenset(r.get("files", ()))) for r in read_runs(directory)]
            cache[directory] = found
        return cache[directory]

    hits: list[tuple[int, str, dict]] = []
    others: list[tuple[int, dict]] = []
    for index, job in enumerate(files):
        path = os.path.realpath(job.source)
        hit = None
        for directory in _ancestors(os.path.dirname(path)):
            runs = records(directory)
            if not runs:
                continue
            name = os.path.relpath(path, directory)
            for run, names in runs:
                if name not in names:
                    continue
                if _run_key(run) == key:
                    hit = (index, directory, run)
                    break
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
        return files, (), None, notes
    index, directory, _ = hits[0]
    run = max((h[2] for h in hits), key=lambda r: str(r.get("started")))  # the latest
    when = run.get("finished") or run.get("started") or "an earlier run"
    state = "" if run.get("complete") else " (a run that did not finish)"
    what = (
        f"{len(hits)} file(s), e.g. {files[index].source}, were already remapped by this "
        f"mapping ({label_map.describe()}) on {when}{state}, as recorded in "
        f"{os.path.join(directory, RECORD_NAME)}; the mapping is not idempotent, so "
        "applying it again would change them a second time"
    )
    if not in_place or len(hits) == len(files):
        raise AlreadyRemapped(f"{what}. Use --force to apply it anyway.")
    done = {i for i, _, _ in hits}
    remaining = [job for i, job in enumerate(files) if i not in done]
    skipped = tuple(files[i].source for i in sorted(done))
    return remaining, skipped, f"{what}; they were skipped (--force remaps them again)", notes


def _run_key(run: dict) -> tuple | None:
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        return mapping_key(run.get("mapping", {}))
    return None  # a record edited by hand: matches nothing


def _describe_record(run: dict) -> str:
    with contextlib.suppress(LabelfixError, TypeError, ValueError):
        return LabelMap.from_dict(run.get("mapping", {})).describe()
    return "unreadable record"


def journal(job: FileJob, run_id: str | None) -> None:
    """Record one finished file (one short append, so parallel workers do not interleave)."""
    if run_id is None:
        return
    line = json.dumps({"run": run_id, "file": job.record_name}) + "\n"
    fd = os.open(
        os.path.join(job.record_root, JOURNAL_NAME), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
    )
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
