"""What ``fault_injection.py``'s campaigns share: the data, the runs, the kills and the table.

Runs are labelfix commands in their own process group (session), started as a new ``python -m
labelfix`` process (``exec``) or forked from the campaign's process (``fork``), and killed with
SIGKILL to the whole group, workers too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from labelfix.io.atomic import STAGING_PATTERN, TMP_PATTERN
from labelfix.io.lock import LOCK_NAME
from labelfix.records.framing import CorruptRecord, read_records
from labelfix.records.shards import journal_pattern
from labelfix.rewrite.record import RECORD_NAME
from labelfix.synthetic import cityscapes_like_mask

SPLIT = "train"


# ----------------------------------------------------------------------------- data


def make_dataset(root: Path, *, count: int, width: int, height: int, seed: int) -> None:
    """``root/gt/NNNNN.png`` labelId masks and ``root/img/NNNNN.jpg`` images of the same size."""
    rng = np.random.default_rng(seed)
    (root / "gt").mkdir(parents=True)
    (root / "img").mkdir(parents=True)
    yy, xx = np.mgrid[0:height, 0:width]
    base = ((xx * 255) // max(width - 1, 1)).astype(np.uint8)
    for i in range(count):
        mask = cityscapes_like_mask(rng, height=height, width=width)
        Image.fromarray(mask).save(root / "gt" / f"{i:05d}.png")
        shade = ((yy * 97 + i * 13) % 256).astype(np.uint8)
        image = np.stack([base, shade, np.full_like(base, i % 256)], axis=-1)
        Image.fromarray(image).save(root / "img" / f"{i:05d}.jpg", quality=40)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def masks_of(root: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(root.glob("*.png"))}


def temporaries(root: Path) -> list[Path]:
    """Temporary files and staging directories a run left under ``root``."""
    return [
        p
        for p in root.rglob("*")
        if TMP_PATTERN.fullmatch(p.name)
        or "labelfix-tmp" in p.name
        or STAGING_PATTERN.fullmatch(p.name)
    ]


def journals(root: Path) -> list[Path]:
    """The publish journals of interrupted to-tfrecord runs in ``root``."""
    pattern = journal_pattern(SPLIT)
    return [p for p in root.iterdir() if pattern.fullmatch(p.name)] if root.is_dir() else []


def records_of(path: Path) -> list[str] | None:
    """The sha256 of every record of a TFRecord file, in order; None when it is cut short or
    its framing or checksums are wrong."""
    try:
        with open(path, "rb") as fh:
            return [hashlib.sha256(r).hexdigest() for r in read_records(fh)]
    except (CorruptRecord, OSError):
        return None


def record_counter(directory: Path, names) -> Counter:
    found: Counter = Counter()
    for name in names:
        found.update(records_of(directory / name) or ())
    return found


# ----------------------------------------------------------------------------- launching


class Run:
    """One labelfix command in its own process group (session)."""

    def __init__(self, args: list[str], log: Path, launch: str, *, stdout: Path | None = None):
        """Start ``labelfix ARGS``, its output in ``log`` (stdout in ``stdout`` when given)."""
        self.log = log
        self.code: int | None = None
        self.started = time.monotonic()
        self.ended: float | None = None
        if launch == "exec":
            self._out = open(log, "wb")  # noqa: SIM115 - closed in poll()
            self._data = open(stdout, "wb") if stdout else None  # noqa: SIM115 - the same
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "labelfix", *args],
                stdout=self._data or self._out,
                stderr=self._out if stdout else subprocess.STDOUT,
                start_new_session=True,
            )
            self.pid = self.proc.pid
            return
        self.proc = self._out = self._data = None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: becomes `labelfix ARGS`
            code = 70
            try:
                os.setsid()
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                fd = os.open(log, flags, 0o644)
                os.dup2(os.open(stdout, flags, 0o644) if stdout else fd, 1)
                os.dup2(fd, 2)
                from labelfix.cli import main

                main(args, prog_name="labelfix")
                code = 0
            except SystemExit as exit_:
                code = (
                    exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                )
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.pid = pid

    def poll(self) -> int | None:
        if self.code is not None:
            return self.code
        if self.proc is not None:
            self.code = self.proc.poll()
        else:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
        if self.code is not None:
            self.ended = time.monotonic()
            for fh in (self._out, self._data):
                if fh is not None:
                    fh.close()
        return self.code

    def wait(self, timeout: float = 600.0) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"labelfix did not finish in {timeout:.0f} s, see {self.log}")
            time.sleep(0.01)
        return self.code

    def kill(self) -> bool:
        """SIGKILL the whole process group; True when the run was still going."""
        alive = self.poll() is None
        # (a pid that ended is signalled only while its group lives on: it may be reused)
        if alive or any(state != "Z" and group == self.pid for _, state, group in processes()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        if alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # killed before its setsid
        self.wait()
        wait_group_gone(self.pid)
        return alive

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """Wait until no live process of group ``pgid`` is left (workers reparented to init)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(state != "Z" and group == pgid for _, state, group in processes()):
            return
        time.sleep(0.02)
    raise RuntimeError(f"processes of group {pgid} still alive {timeout:.0f} s after SIGKILL")


def processes() -> list[tuple[int, str, int]]:
    """``(pid, state, process group)`` of every process (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            found.append((int(entry), fields[0], int(fields[2])))
    return found


def exclusive_flocks() -> set[int]:
    """The pids holding an exclusive ``flock`` now (from /proc/locks, without taking one: a
    probe with ``flock`` itself would make a run that locks at that instant fail)."""
    holders = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[1] == "FLOCK" and fields[3] == "WRITE":
                with contextlib.suppress(ValueError):
                    holders.add(int(fields[4]))
    return holders


# ----------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """How long a run took, and when (seconds after its start) temporary files were seen in the
    directory it writes: the window in which a kill lands mid-write."""

    duration: float
    window: tuple[float, float] | None = None

    def merge(self, other: Timing) -> Timing:
        """The shorter run's duration (the first run pays for cold caches), a known window."""
        return Timing(min(self.duration, other.duration), self.window or other.window)

    def pick_delay(self, rng: random.Random) -> float:
        """Half the kills anywhere in the run, half inside the write window."""
        if self.window is not None and rng.random() < 0.5:
            return rng.uniform(*self.window)
        return rng.uniform(0.1, 0.95) * self.duration


def run_to_end(
    args: list[str], log: Path, launch: str, *, watch: Path | None = None
) -> tuple[int, Timing, str]:
    """Run a command to its end; with ``watch``, note when temporaries exist there."""
    start = time.monotonic()
    run = Run(args, log, launch)
    first = last = None
    while run.poll() is None:
        if watch is not None:
            with contextlib.suppress(OSError):
                names = os.listdir(watch)
                if any(TMP_PATTERN.fullmatch(n) or STAGING_PATTERN.fullmatch(n) for n in names):
                    now = time.monotonic() - start
                    first, last = first if first is not None else now, now
        time.sleep(0.005)
    window = (first, last) if first is not None else None
    return run.wait(), Timing(time.monotonic() - start, window), run.output()


# ----------------------------------------------------------------------------- masks


def remap_args(target: Path, *extra: str) -> list[str]:
    return ["remap", "--preset", "cityscapes", "--in-place", *extra, str(target)]


def remap_references(work: Path, target: Path, launch: str, row: Row, name: str):
    """Remap a fresh copy of the masks once (the new content) and again with --force (the
    double-mapped one): ``(timing, MaskStates)``; ``target`` is left remapped once."""
    pristine, logs = work / "data" / "gt", work / "logs"
    reset_masks(pristine, target)
    code, timing, out = run_to_end(
        remap_args(target), logs / f"{name}-reference.log", launch, watch=target
    )
    if code != 0:
        raise RuntimeError(f"reference remap failed ({code}):\n{out}")
    new = masks_of(target)
    code, again, out = run_to_end(
        remap_args(target, "--force"), logs / f"{name}-twice.log", launch, watch=target
    )
    if code != 0:
        raise RuntimeError(f"remap --force failed ({code}):\n{out}")
    twice = masks_of(target)
    reset_masks(pristine, target)
    code, _, out = run_to_end(remap_args(target), logs / f"{name}-again.log", launch)
    if code != 0 or masks_of(target) != new:
        raise RuntimeError(f"a second reference remap gave other masks ({code}):\n{out}")
    return timing.merge(again), MaskStates(row, masks_of(pristine), new, twice)


def reset_masks(pristine: Path, target: Path) -> None:
    shutil.rmtree(target.parent, ignore_errors=True)
    shutil.copytree(pristine, target)


def remap_rerun_ok(code: int, out: str, target: Path) -> bool:
    """Whether a rerun of the in-place remap ended as it should: it finished the job, or (exit
    1) it found the job done by a run that finished and refused to map the files again."""
    if code == 0:
        return True
    path = target / RECORD_NAME
    record = json.loads(path.read_text()) if path.exists() else {}
    done_before = any(r.get("complete") for r in record.get("runs", ()))
    return code == 1 and done_before and "already remapped" in out


class MaskStates:
    """The old, new (mapped once) and double-mapped content of every mask of an in-place
    remap, and what a directory of them is in: it counts into ``row``."""

    def __init__(self, row: Row, old: dict[str, str], new: dict[str, str], twice: dict[str, str]):
        self.row, self.old, self.new, self.twice = row, old, new, twice
        self.changing = sum(old[n] != new[n] for n in old)

    def classify(self, directory: Path, when: str, *, finished: bool) -> None:
        """Count masks mapped twice, with neither content, or (``finished``) never mapped, and
        mask files lost or added."""
        row, now = self.row, masks_of(directory)
        for name, value in now.items():
            if name not in self.new or value == self.new[name]:
                continue
            if value == self.twice[name] and self.twice[name] != self.new[name]:
                row.double_mapped += 1
                row.problems.append(f"{when}: {name} was mapped twice")
            elif value != self.old[name] or finished:
                row.partial += 1
                what = "neither old nor new content" if value != self.old[name] else "never mapped"
                row.problems.append(f"{when}: {name} has {what}")
        if set(now) != set(self.old):
            row.lost += len(set(self.old) - set(now))
            row.problems.append(f"{when}: mask files lost or added: {set(self.old) ^ set(now)}")

    def half_done(self, directory: Path) -> bool:
        """Some masks that change are rewritten, not all."""
        now = masks_of(directory)
        changed = sum(now.get(n) != self.old[n] for n in self.old if self.old[n] != self.new[n])
        return 0 < changed < self.changing


def leftovers(row: Row, directory: Path, when: str, *, lock: bool = True) -> None:
    """Count temporary files, staging directories and (``lock``) a lock file left."""
    stale = temporaries(directory)
    row.leftover_temporaries += len(stale)
    row.problems += [f"{when}: {p} left" for p in stale]
    if lock and (directory / LOCK_NAME).exists():
        row.leftover_locks += 1
        row.problems.append(f"{when}: {LOCK_NAME} left")


# ----------------------------------------------------------------------------- the table


@dataclass
class Row:
    command: str
    rounds: int = 0
    kills: int = 0
    mid_write: int = 0
    reruns_ok: int = 0
    double_mapped: int = 0
    partial: int = 0
    leftover_temporaries: int = 0
    bad_shards: int = 0
    refused: int = 0
    mixed: int = 0
    lost: int = 0
    leftover_locks: int = 0
    problems: list[str] = field(default_factory=list)
    #: what happened, counted (``"read during the remap: refused"``), shown under the table
    seen: Counter = field(default_factory=Counter)
    #: one line per event, written to the logs
    events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.reruns_ok == self.rounds

    def cells(self) -> tuple:
        reruns = f"{self.reruns_ok}/{self.rounds}"
        counts = (self.double_mapped, self.partial, self.leftover_temporaries, self.bad_shards)
        return (
            self.command, self.kills, self.mid_write, reruns, *counts,
            self.refused, self.mixed, self.lost,
        )  # fmt: skip


HEADER = (
    "command", "kills", "killed mid-write", "reruns ok", "double-mapped", "partial files",
    "leftover temporaries", "bad shards", "refused", "mixed", "lost",
)  # fmt: skip


def render(rows: list[Row]) -> str:
    """The table, then what each campaign saw."""
    cells = [HEADER, *(r.cells() for r in rows)]
    cells = [[str(c) for c in row] for row in cells]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(parts))
    for row in rows:
        if row.seen:
            seen = ", ".join(f"{what} {n}" for what, n in sorted(row.seen.items()))
            lines.append(f"{row.command}: {seen}")
    return "\n".join(lines)
