"""Kill labelfix runs at random moments; check that no file is lost, half-written or mapped twice.

Generates Cityscapes-like labelId masks (``--masks`` of ``--size``, 2048x1024 by default) and
JPEG images of the same sizes, then for each of two commands

* ``labelfix remap --preset cityscapes --in-place DIR`` (a mapping that is not idempotent:
  applied twice, it changes a file again), on a fresh copy of the masks each round, and
* ``labelfix to-tfrecord --images IMG --masks DIR --output OUT ...`` into the same output
  directory every round (as a user reruns it),

starts the command, SIGKILLs its whole process group (workers too) after a random delay, checks
what the kill left, reruns the same command to completion and checks again:

* every mask is its old or its new content: never mapped twice, never partial (sha256 against
  a reference run of the same command, and against the mapping applied twice with --force);
* after the rerun no temporary file (``.NAME.<hex>.labelfix-tmp``) and no lock file is left;
* no shard exists under a final name unless it is complete (size and sha256 equal the reference
  manifest's), after the kill as after the rerun, and the rerun's manifest lists exactly them.

It prints one table row per command and exits 1 when any check failed.

    python benchmarks/fault_injection.py                 # 300 masks 2048x1024, 20 kills each
    python benchmarks/fault_injection.py --quick         # 20 masks 256x128, 5 kills each

``--launch exec`` (the default) starts each run as a new ``python -m labelfix`` process;
``--launch fork`` (the default with --quick) forks it from this process, which has imported
labelfix (and TensorFlow for to-tfrecord) already, so a run starts in milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from labelfix.io.atomic import TMP_PATTERN
from labelfix.io.lock import LOCK_NAME
from labelfix.records.manifest import manifest_path
from labelfix.records.shards import shard_pattern
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
    return [p for p in root.rglob("*") if TMP_PATTERN.fullmatch(p.name) or "labelfix-tmp" in p.name]


# ----------------------------------------------------------------------------- launching


class Run:
    """One labelfix command in its own process group (session)."""

    def __init__(self, args: list[str], log: Path, launch: str):
        self.log = log
        self.code: int | None = None
        if launch == "exec":
            out = open(log, "wb")  # noqa: SIM115 - closed in wait()
            import subprocess

            self._out = out
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "labelfix", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.pid = self.proc.pid
            return
        self.proc = self._out = None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: becomes `labelfix ARGS`
            code = 70
            try:
                os.setsid()
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
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
        if self.code is not None and self._out is not None:
            self._out.close()
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
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
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


# ----------------------------------------------------------------------------- the campaigns


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
    leftover_locks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.reruns_ok == self.rounds

    def cells(self) -> tuple:
        reruns = f"{self.reruns_ok}/{self.rounds}"
        counts = (self.double_mapped, self.partial, self.leftover_temporaries, self.bad_shards)
        return (self.command, self.kills, self.mid_write, reruns, *counts)


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
                if any(TMP_PATTERN.fullmatch(n) for n in os.listdir(watch)):
                    now = time.monotonic() - start
                    first, last = first if first is not None else now, now
        time.sleep(0.005)
    window = (first, last) if first is not None else None
    return run.wait(), Timing(time.monotonic() - start, window), run.output()


def remap_campaign(work: Path, *, kills: int, launch: str, rng: random.Random) -> Row:
    pristine = work / "data" / "gt"
    target = work / "remap" / "gt"
    logs = work / "logs"
    old = masks_of(pristine)

    def args(*extra: str) -> list[str]:
        return ["remap", "--preset", "cityscapes", "--in-place", *extra, str(target)]

    def reset() -> None:
        shutil.rmtree(target.parent, ignore_errors=True)
        shutil.copytree(pristine, target)

    reset()  # the reference: once gives the new content, twice (--force) the double-mapped one
    code, timing, out = run_to_end(args(), logs / "remap-reference.log", launch, watch=target)
    if code != 0:
        raise RuntimeError(f"reference remap failed ({code}):\n{out}")
    new = masks_of(target)
    code, again, out = run_to_end(args("--force"), logs / "remap-twice.log", launch, watch=target)
    timing = timing.merge(again)
    if code != 0:
        raise RuntimeError(f"remap --force failed ({code}):\n{out}")
    twice = masks_of(target)
    row = Row("remap --preset cityscapes --in-place")

    def classify(when: str, *, finished: bool) -> None:
        now = masks_of(target)
        for name, value in now.items():
            if value == new[name]:
                continue
            if value == twice[name] and twice[name] != new[name]:
                row.double_mapped += 1
                row.problems.append(f"{when}: {name} was mapped twice")
            elif value != old[name] or finished:
                row.partial += 1
                what = "neither old nor new content" if value != old[name] else "never mapped"
                row.problems.append(f"{when}: {name} has {what}")
        if set(now) != set(old):
            row.problems.append(f"{when}: mask files lost or added: {set(old) ^ set(now)}")

    for i in range(kills):
        reset()
        row.rounds += 1
        run = Run(args(), logs / f"remap-{i:02d}-killed.log", launch)
        time.sleep(timing.pick_delay(rng))
        row.kills += run.kill()
        left = temporaries(target)
        changed = sum(masks_of(target)[n] != old[n] for n in old if old[n] != new[n])
        row.mid_write += bool(left) or 0 < changed < sum(old[n] != new[n] for n in old)
        classify(f"round {i} after the kill", finished=False)
        code, _, out = run_to_end(args(), logs / f"remap-{i:02d}-rerun.log", launch)
        record = json.loads((target / RECORD_NAME).read_text()) if code else {}
        done_before = any(r.get("complete") for r in record.get("runs", ()))
        if code == 0 or (code == 1 and done_before and "already remapped" in out):
            row.reruns_ok += 1  # (exit 1: the killed run had finished, nothing left to do)
        else:
            row.problems.append(f"round {i}: the rerun exited {code}:\n{out}")
        classify(f"round {i} after the rerun", finished=True)
        stale = temporaries(target)
        row.leftover_temporaries += len(stale)
        row.problems += [f"round {i}: {p} left after the rerun" for p in stale]
        # (a rerun refused before it locks leaves the killed run's lock file, which is free)
        if code == 0 and (target / LOCK_NAME).exists():
            row.leftover_locks += 1
            row.problems.append(f"round {i}: {LOCK_NAME} left after the rerun")
    return row


def tfrecord_campaign(
    work: Path, *, kills: int, launch: str, rng: random.Random, shards: int
) -> Row:
    data = work / "data"
    out = work / "tfrecords"
    logs = work / "logs"

    def args(output: Path) -> list[str]:
        return [
            "to-tfrecord", "--images", str(data / "img"), "--masks", str(data / "gt"),
            "--output", str(output), "--preset", "cityscapes", "--num-shards", str(shards),
        ]  # fmt: skip

    if launch == "fork":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow  # noqa: F401 - once, here, not in every forked run

    reference = work / "tfrecords-reference"
    code, timing, text = run_to_end(
        args(reference), logs / "tfrecord-reference.log", launch, watch=reference
    )
    if code != 0:
        raise RuntimeError(f"reference to-tfrecord failed ({code}):\n{text}")
    expected = {
        s["file"]: (s["bytes"], s["sha256"])
        for s in json.loads(Path(manifest_path(str(reference), SPLIT)).read_text())["shards"]
    }
    row = Row("to-tfrecord --preset cityscapes")
    pattern = shard_pattern(SPLIT)

    def check_shards(when: str, *, finished: bool) -> None:
        for path in sorted(out.glob(f"{SPLIT}-*")):
            if not pattern.fullmatch(path.name):
                continue
            want = expected.get(path.name)
            if want is None or (path.stat().st_size, digest(path)) != want:
                row.bad_shards += 1
                row.problems.append(f"{when}: {path.name} is not a complete shard")
        manifest = Path(manifest_path(str(out), SPLIT))
        if manifest.exists():
            listed = {
                s["file"]: (s["bytes"], s["sha256"])
                for s in json.loads(manifest.read_text())["shards"]
            }
            if listed != expected:
                row.problems.append(f"{when}: the manifest lists other shards")
            missing = [n for n in listed if not (out / n).exists()]
            row.bad_shards += len(missing)
            row.problems += [f"{when}: {n} is in the manifest but missing" for n in missing]
        elif finished:
            row.problems.append(f"{when}: no manifest")

    for i in range(kills):
        row.rounds += 1
        run = Run(args(out), logs / f"tfrecord-{i:02d}-killed.log", launch)
        time.sleep(timing.pick_delay(rng))
        row.kills += run.kill()
        manifest_there = Path(manifest_path(str(out), SPLIT)).exists()
        row.mid_write += bool(temporaries(out)) or not manifest_there
        check_shards(f"round {i} after the kill", finished=False)
        code, took, text = run_to_end(
            args(out), logs / f"tfrecord-{i:02d}-rerun.log", launch, watch=out
        )
        timing = timing.merge(took)
        if code == 0:
            row.reruns_ok += 1
        else:
            row.problems.append(f"round {i}: the rerun exited {code}:\n{text}")
        check_shards(f"round {i} after the rerun", finished=True)
        stale = temporaries(out)
        row.leftover_temporaries += len(stale)
        row.problems += [f"round {i}: {p} left after the rerun" for p in stale]
        if (out / LOCK_NAME).exists():
            row.leftover_locks += 1
            row.problems.append(f"round {i}: {LOCK_NAME} left after the rerun")
    return row


def render(rows: list[Row]) -> str:
    header = (
        "command", "kills", "killed mid-write", "reruns ok", "double-mapped", "partial files",
        "leftover temporaries", "bad shards",
    )  # fmt: skip
    cells = [header, *(r.cells() for r in rows)]
    cells = [[str(c) for c in row] for row in cells]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(parts))
    return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masks", type=int, help="number of masks (300; 20 with --quick)")
    parser.add_argument("--size", type=parse_size, help="WxH of every mask (2048x1024)")
    parser.add_argument("--kills", type=int, help="kills per command (20; 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small masks, few kills, fork")
    parser.add_argument("--launch", choices=("exec", "fork"), help="how runs start")
    parser.add_argument("--only", choices=("remap", "to-tfrecord"), help="one command only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the data and logs here")
    opts = parser.parse_args(argv)
    count = opts.masks or (20 if opts.quick else 300)
    width, height = opts.size or ((256, 128) if opts.quick else (2048, 1024))
    kills = opts.kills or (5 if opts.quick else 20)
    launch = opts.launch or ("fork" if opts.quick else "exec")
    shards = 3 if count < 100 else 8
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="labelfix-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    rng = random.Random(opts.seed)
    if launch == "fork":
        for module in ("labelfix.cli", "labelfix.rewrite.run"):  # once, not in every run
            importlib.import_module(module)
    started = time.monotonic()
    make_dataset(work / "data", count=count, width=width, height=height, seed=opts.seed)
    print(
        f"{count} masks {width}x{height}, {kills} kills per command, runs started by {launch}; "
        f"work directory {work}",
        flush=True,
    )
    rows = []
    if opts.only in (None, "remap"):
        rows.append(remap_campaign(work, kills=kills, launch=launch, rng=rng))
    if opts.only in (None, "to-tfrecord"):
        rows.append(tfrecord_campaign(work, kills=kills, launch=launch, rng=rng, shards=shards))
    print(render(rows))
    print(f"({time.monotonic() - started:.0f} s)")
    failed = [p for r in rows for p in r.problems]
    for problem in failed[:20]:
        print(f"FAILED: {problem}", file=sys.stderr)
    if opts.workdir is None and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed or not all(r.ok for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
