"""``fault_injection.py``'s races: two runners into one output, and readers during in-place
writers (see that script's doc for what is checked)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from fault_runs import (
    SPLIT,
    Row,
    Run,
    Timing,
    digest,
    exclusive_flocks,
    journals,
    leftovers,
    record_counter,
    records_of,
    remap_args,
    remap_references,
    remap_rerun_ok,
    reset_masks,
    run_to_end,
    temporaries,
)

from labelfix.io.atomic import TMP_PATTERN
from labelfix.io.marks import read_in_place
from labelfix.records.manifest import manifest_path
from labelfix.records.shards import shard_pattern

RUNNERS = ("local", "beam")
#: What a to-tfrecord run says when another run holds its output's lock.
BUSY = "another labelfix run is writing here"
#: What a reader says when the masks it reads are being, or were, rewritten in place.
HALF = "left half-rewritten"
REFUSALS = (
    "being rewritten in place now",
    "rewritten in place while this command read it",
    HALF,
    "another labelfix run is writing into it now",
)
READERS = ("to-tfrecord", "stats")
#: The same readers with ``--runner beam`` (``--beam-readers``).
BEAM_READERS = ("to-tfrecord-beam", "stats-beam")
MANIFEST = Path(manifest_path("", SPLIT)).name


def tfrecord_args(data: Path, masks: Path, out: Path, shards: int, runner: str) -> list[str]:
    """A to-tfrecord run. The Beam runner writes the local runner's shards byte for byte; its
    runs shuffle the records, so that which run's output a manifest lists can be told."""
    return [
        "to-tfrecord", "--images", str(data / "img"), "--masks", str(masks),
        "--output", str(out), "--preset", "cityscapes", "--num-shards", str(shards),
        "--runner", runner, *(["--shuffle"] if runner == "beam" else []),
    ]  # fmt: skip


def listing(out: Path) -> dict[str, tuple[int, str]] | None:
    """The shards a manifest lists, ``{file: (bytes, sha256)}``; None when there is none."""
    path = Path(manifest_path(str(out), SPLIT))
    if not path.exists():
        return None
    return {s["file"]: (s["bytes"], s["sha256"]) for s in json.loads(path.read_text())["shards"]}


def on_disk(out: Path, name: str) -> tuple[int, str] | None:
    path = out / name
    return (path.stat().st_size, digest(path)) if path.is_file() else None


# ----------------------------------------------------------------------------- two runners


class OneOutput:
    """The checks of the two-runner race on one output directory, counting into ``row``."""

    def __init__(self, row: Row, out: Path, expected: dict, records: Counter, verify):
        self.row, self.out, self.expected, self.records = row, out, expected, records
        self.verify = verify  # verify(tag) -> exit code of `labelfix verify OUT`
        #: shard name -> every (bytes, sha256) a manifest of some run gave it
        self.known: dict[str, set[tuple[int, str]]] = {n: {v} for n, v in expected.items()}
        self._seen_files: set[tuple] = set()

    def learn(self) -> None:
        """Note the shards of every manifest in the output now, the one in place and those
        being published (written under a temporary name before the shards are renamed, left
        there when the run is killed): each lists complete shards of one run."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.out):
                if entry.name != MANIFEST and not (
                    entry.name.startswith(f".{MANIFEST}.") and TMP_PATTERN.fullmatch(entry.name)
                ):
                    continue
                # (one still being written does not parse yet: it is read again next time)
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    stat = entry.stat()
                    key = (entry.name, stat.st_ino, stat.st_size, stat.st_mtime_ns)
                    if key in self._seen_files:
                        continue
                    for shard in json.loads(Path(entry.path).read_bytes())["shards"]:
                        listed = (shard["bytes"], shard["sha256"])
                        self.known.setdefault(shard["file"], set()).add(listed)
                    self._seen_files.add(key)

    def problem(self, counter: str | None, text: str) -> None:
        if counter is not None:
            setattr(self.row, counter, getattr(self.row, counter) + 1)
        self.row.problems.append(text)

    def shards(self, when: str) -> list[str]:
        """Check every shard-named file: complete, and only records of the reference runs."""
        pattern = shard_pattern(SPLIT)
        names = sorted(p.name for p in self.out.iterdir() if pattern.fullmatch(p.name))
        self.learn()
        for name in names:
            if on_disk(self.out, name) in self.known.get(name, ()):
                continue  # byte for byte a shard some run's manifest lists
            found = records_of(self.out / name)
            if found is None:
                self.problem("bad_shards", f"{when}: {name} is cut short or corrupt")
            elif any(self.records[r] == 0 for r in found) or len(set(found)) != len(found):
                self.problem("bad_shards", f"{when}: {name} holds records of no reference run")
            else:  # (its manifest was gone before it was seen: whole records, reference ones)
                self.row.seen["shard checked by its records only"] += 1
        return names

    def check(self, when: str, *, killed: bool, last: str | None, had_manifest: bool) -> None:
        """``last``: the runner of the run that ended last, when it ended with success."""
        names = self.shards(when)
        listed = listing(self.out)
        if listed is None:
            if had_manifest or last is not None:
                self.problem("lost", f"{when}: no manifest")
            return
        if any(on_disk(self.out, n) != listed[n] for n in listed):
            # a kill between a publish's renames: the next run replaces them (publish's doc)
            if not killed or last is not None:
                self.problem("mixed", f"{when}: the manifest lists shards that changed")
            elif not journals(self.out):
                self.problem("mixed", f"{when}: listed shards changed, and no publish journal")
            elif self.verify(when) == 0:
                self.problem("mixed", f"{when}: listed shards changed, and verify passes")
            else:
                self.row.seen["left mid-publish, verify fails"] += 1
            return
        found = record_counter(self.out, listed)
        if self.records - found:
            self.problem("lost", f"{when}: the manifest's shards lack {self.records - found}")
        if found - self.records:
            self.problem("mixed", f"{when}: the manifest's shards repeat {found - self.records}")
        local = [self.expected.get(n) == listed[n] for n in listed]
        if any(local) and not all(local):
            self.problem("mixed", f"{when}: the manifest lists local and beam shards")
        kind = "local" if listed == self.expected else "beam"
        if last is not None and kind != last:
            self.problem("mixed", f"{when}: the {last} run ended last, the manifest is {kind}'s")
        if set(names) - set(listed) and not killed:
            self.problem("mixed", f"{when}: shards no manifest lists: {set(names) - set(listed)}")

    def finished(self, when: str) -> bool:
        """After the local rerun: exactly the local reference, nothing else left."""
        names = self.shards(when)
        ok = listing(self.out) == self.expected and set(names) == set(self.expected)
        ok = ok and all(on_disk(self.out, n) == self.expected[n] for n in names)
        if not ok:
            self.problem("lost", f"{when}: the output is not the local reference")
        if self.verify(when) != 0:
            self.problem(None, f"{when}: verify fails")
            ok = False
        stale = journals(self.out)
        self.row.leftover_temporaries += len(stale)
        self.row.problems += [f"{when}: {p} left" for p in stale]
        leftovers(self.row, self.out, when)
        return ok and not stale


def mixed_runners_campaign(
    work: Path, *, rounds: int, launch: str, rng: random.Random, shards: int
) -> Row:
    """Beam and local to-tfrecord runs into one output: raced, killed, then the local rerun."""
    data, out, logs = work / "data", work / "mixed", work / "logs"

    def args(output: Path, runner: str) -> list[str]:
        return tfrecord_args(data, data / "gt", output, shards, runner)

    timing: dict[str, Timing] = {}
    for runner in RUNNERS:
        ref = work / f"mixed-{runner}-reference"
        log = logs / f"mixed-{runner}-reference.log"
        code, timing[runner], text = run_to_end(args(ref, runner), log, launch, watch=ref)
        if code != 0:
            raise RuntimeError(f"reference to-tfrecord --runner {runner} failed ({code}):\n{text}")
    local_ref, beam_ref = work / "mixed-local-reference", work / "mixed-beam-reference"
    expected = listing(local_ref)
    records = record_counter(local_ref, expected)
    if record_counter(beam_ref, listing(beam_ref)) != records:
        raise RuntimeError("the Beam reference holds other records than the local one")
    row = Row("to-tfrecord beam+local, one output")
    row.events.append(", ".join(f"{r} run {t.duration:.2f} s" for r, t in timing.items()))
    verifications = itertools.count()

    def verify(when: str) -> int:
        log = logs / f"mixed-verify-{next(verifications):03d}.log"
        code, _, text = run_to_end(["verify", str(out)], log, launch)
        if code not in (0, 1):
            row.problems.append(f"{when}: verify exited {code}:\n{text}")
        return code

    checks = OneOutput(row, out, expected, records, verify)
    for i in range(rounds):
        row.rounds += 1
        had_manifest = listing(out) is not None
        runs, killed = race(
            lambda r: args(out, r), out, i, logs, launch, rng, timing, row, watch=checks.learn
        )
        ends = {}
        for runner, run in runs.items():
            text = run.output()
            ends[runner] = "killed" if runner in killed else str(run.code)
            if runner in killed:
                continue
            if run.code == 1 and BUSY in text:
                row.refused += 1
                ends[runner] = "refused"
            elif run.code != 0:
                row.problems.append(f"round {i}: the {runner} run exited {run.code}:\n{text}")
            else:  # the first run paid for cold caches: kills aim at what a run takes now
                timing[runner] = timing[runner].merge(Timing(run.ended - run.started))
        row.seen[" ".join(f"{r} {ends[r]}" for r in RUNNERS)] += 1
        row.events.append(f"round {i}: " + ", ".join(f"{r} {e}" for r, e in ends.items()))
        last = max(runs, key=lambda r: runs[r].ended)
        last = last if last not in killed and runs[last].code == 0 else None
        checks.check(f"round {i}", killed=bool(killed), last=last, had_manifest=had_manifest)
        code, took, text = run_to_end(
            args(out, "local"), logs / f"mixed-{i:02d}-rerun.log", launch, watch=out
        )
        timing["local"] = timing["local"].merge(took)
        if code != 0:
            row.problems.append(f"round {i}: the local rerun exited {code}:\n{text}")
        row.reruns_ok += checks.finished(f"round {i} after the rerun") and code == 0
    return row


def race(
    args: Callable[[str], list[str]],
    out: Path,
    i: int,
    logs: Path,
    launch: str,
    rng: random.Random,
    timing: dict[str, Timing],
    row: Row,
    *,
    watch: Callable[[], None],
) -> tuple[dict[str, Run], set[str]]:
    """Start both runners into ``out`` at a random offset, kill none, one or both (at a random
    moment, or as soon as a publish journal appears in ``out``), and wait for both; ``(runs,
    runners killed while running)``. Checks that the two never hold an exclusive lock at once;
    calls ``watch()`` between checks."""
    first = rng.choice(RUNNERS)
    second = RUNNERS[1 - RUNNERS.index(first)]
    offset = rng.uniform(0.0, 1.6) * timing[first].duration
    victims = rng.choice(((), ("local",), ("beam",), ("local", "beam")))
    # None: killed when a publish begins (the moment a kill leaves the most to check)
    kill_at = {
        r: None if rng.random() < 0.3 else offset * (r == second) + timing[r].pick_delay(rng)
        for r in victims
    }
    if i == 0:  # one kill every campaign has: the local run, as its publish begins, alone
        first, second, offset = "local", "beam", 2.0 * timing["local"].duration
        kill_at = {"local": None}
    starts = {first: 0.0, second: offset}
    kills = (
        ", ".join(
            f"kill {r} " + ("at a publish" if at is None else f"at {at:.2f} s")
            for r, at in kill_at.items()
        )
        or "no kill"
    )
    row.events.append(f"round {i}: {first} at 0, {second} at {offset:.2f} s, {kills}")
    runs: dict[str, Run] = {}
    killed: set[str] = set()
    begin = time.monotonic()
    while len(runs) < 2 or any(run.poll() is None for run in runs.values()):
        now = time.monotonic() - begin
        for runner in RUNNERS:
            if runner not in runs and now >= starts[runner]:
                log = logs / f"mixed-{i:02d}-{runner}.log"
                runs[runner] = Run(args(runner), log, launch)
        watch()
        holders = exclusive_flocks()
        if len(holders & {run.pid for run in runs.values()}) > 1:
            row.problems.append(f"round {i}: both runs held an exclusive lock at once")
        publishing = None
        for runner, at in list(kill_at.items()):
            if runner not in runs:
                continue
            if at is None:
                publishing = bool(journals(out)) if publishing is None else publishing
                if not publishing:
                    continue
            elif now < at:
                continue
            del kill_at[runner]
            holding = runs[runner].pid in holders or bool(journals(out))
            if runs[runner].kill():
                killed.add(runner)
                row.kills += 1
                row.mid_write += holding
        time.sleep(0.002)
    return runs, killed


# ----------------------------------------------------------------------------- readers

#: A kill time: as soon as the remap's in-place mark says it is rewriting.
MARKED = object()


def _marked(target: Path) -> bool:
    mark = read_in_place(str(target))
    return mark is not None and mark.get("state") == "running"


class Reads:
    """Readers of the masks an in-place remap rewrites, and what they may report."""

    def __init__(self, work: Path, target: Path, launch: str, shards: int, row: Row, kinds: tuple):
        self.work, self.target, self.launch, self.shards, self.row = (
            work, target, launch, shards, row,
        )  # fmt: skip
        self.kinds = kinds
        self.reads = work / "reads"
        self.refs: dict[tuple[str, str], object] = {}
        self.took: dict[str, float] = {}
        self.count = 0

    def start(self, kind: str) -> tuple[Run, str, Path]:
        self.count += 1
        tag = f"{kind}-{self.count:03d}"
        out = self.reads / tag
        shutil.rmtree(out, ignore_errors=True)
        self.reads.mkdir(exist_ok=True)
        runner = "beam" if kind.endswith("-beam") else "local"
        if kind.startswith("stats"):
            args = ["stats", str(self.target), "--json", "--runner", runner]
        else:
            args = tfrecord_args(self.work / "data", self.target, out, self.shards, runner)
        logs = self.work / "logs"
        log, data = logs / f"read-{tag}.log", logs / f"read-{tag}.out"
        return Run(args, log, self.launch, stdout=data), kind, out

    def value(self, kind: str, run: Run, out: Path):
        """What the reader reported: stats' values; the manifest's class pixel counts and
        shards, and the shards on disk. None when it reported nothing readable."""
        try:
            if kind.startswith("stats"):
                return json.loads(run.log.with_suffix(".out").read_text())["values"]
            manifest = json.loads(Path(manifest_path(str(out), SPLIT)).read_text())
            names = sorted(p.name for p in out.iterdir() if shard_pattern(SPLIT).fullmatch(p.name))
            listed = listing(out)
            if kind.endswith("-beam"):  # (Beam's record order is its own: records, not bytes)
                whole = set(names) == set(listed)
                whole = whole and all(on_disk(out, n) == listed[n] for n in names)
                return manifest["class_pixel_counts"], record_counter(out, names), whole
            return manifest["class_pixel_counts"], listed, {n: on_disk(out, n) for n in names}
        except (OSError, ValueError, KeyError):
            return None

    def reference(self, when: str) -> None:
        """Read the masks as they are now, as the ``when`` ("old", "new") reference."""
        for kind in self.kinds:
            start = time.monotonic()
            run, _, out = self.start(kind)
            if run.wait() != 0:
                raise RuntimeError(f"the reference {kind} failed:\n{run.output()}")
            self.took[kind] = min(self.took.get(kind, 1e9), time.monotonic() - start)
            self.refs[kind, when] = self.value(kind, run, out)
            shutil.rmtree(out, ignore_errors=True)
        if self.refs.get(("stats", "old")) == self.refs.get(("stats", "new")):
            raise RuntimeError("the old and new masks have the same stats")

    def judge(self, started: tuple[Run, str, Path], when: str, allowed: tuple[str, ...]) -> str:
        """``refused``, ``half`` (refused: left half-rewritten), ``old``, ``new`` or ``mixed``;
        counted into the row, a problem when not ``allowed``."""
        run, kind, out = started
        code = run.wait()
        text = run.output()
        if code == 1 and any(m in text for m in REFUSALS):
            verdict = "half" if HALF in text else "refused"
            self.row.refused += 1
            if listing(out) is not None:
                self.row.mixed += 1
                self.row.problems.append(f"{when}: the {kind} refused, but published")
        elif code == 0:
            value = self.value(kind, run, out)
            verdict = next((w for w in ("old", "new") if value == self.refs[kind, w]), "mixed")
            if value is None:
                verdict = "nothing readable"
                self.row.lost += 1
            elif verdict == "mixed":
                self.row.mixed += 1
        else:
            verdict = f"exit {code}"
        self.row.seen[f"{when.partition(', ')[2]}: {verdict}"] += 1
        self.row.events.append(f"{when}: the {kind} read gave {verdict} (log {run.log.name})")
        if verdict not in allowed:
            self.row.problems.append(
                f"{when}: the {kind} read gave {verdict}, expected {' or '.join(allowed)}; "
                f"see {run.log}:\n{text[-3000:]}"
            )
        shutil.rmtree(out, ignore_errors=True)
        return verdict


def readers_campaign(
    work: Path, *, rounds: int, launch: str, rng: random.Random, shards: int, beam: bool = False
) -> Row:
    """An in-place remap, a reader at a random offset, sometimes a kill and a read after it;
    ``beam``: the readers take turns with their ``--runner beam`` forms too."""
    pristine, target, logs = work / "data" / "gt", work / "readers" / "gt", work / "logs"
    kinds = READERS + BEAM_READERS if beam else READERS
    row = Row("readers during remap --in-place" + (" (with beam)" if beam else ""))
    reads = Reads(work, target, launch, shards, row, kinds)
    reset_masks(pristine, target)
    reads.reference("old")
    timing, states = remap_references(work, target, launch, row, "readers-remap")
    reads.reference("new")
    row.events.append(
        f"remap {timing.duration:.3f} s, "
        + ", ".join(f"{kind} {took:.3f} s" for kind, took in reads.took.items())
    )
    for i in range(rounds):
        reset_masks(pristine, target)
        row.rounds += 1
        kind = kinds[i % len(kinds)]
        offset = rng.uniform(-1.2 * reads.took[kind], 1.1 * timing.duration)
        starts = {"remap": max(0.0, -offset), "read": max(0.0, offset)}
        kill_at = starts["remap"] + timing.pick_delay(rng) if rng.random() < 0.4 else None
        if i == 0:  # one kill every campaign has: as soon as the remap has marked its directory
            kill_at = MARKED
        when = (
            "kill once marked"
            if kill_at is MARKED
            else (f"kill at {kill_at:.3f} s" if kill_at is not None else "no kill")
        )
        row.events.append(
            f"round {i}: remap at {starts['remap']:.3f} s, {kind} at {starts['read']:.3f} s, {when}"
        )
        remap = read = None
        killed = False
        begin = time.monotonic()
        while remap is None or read is None or remap.poll() is None or kill_at is not None:
            now = time.monotonic() - begin
            if remap is None and now >= starts["remap"]:
                remap = Run(remap_args(target), logs / f"readers-{i:02d}-remap.log", launch)
            if read is None and now >= starts["read"]:
                read = reads.start(kind)
            if kill_at is MARKED and remap is not None:
                if _marked(target):
                    kill_at = now
                elif remap.poll() is not None:  # it finished before it was seen marking
                    kill_at = None
            if (
                kill_at is not MARKED
                and kill_at is not None
                and remap is not None
                and now >= kill_at
            ):
                kill_at = None
                killed = remap.kill()
            time.sleep(0.002)
        # (half-rewritten is the word for a remap that died, never for one still running)
        allowed = ("refused", "old", "new", *(("half",) if killed else ()))
        reads.judge(read, f"round {i}, during the remap", allowed)
        if killed:
            row.kills += 1
            row.mid_write += bool(temporaries(target)) or states.half_done(target)
            states.classify(target, f"round {i} after the kill", finished=False)
            mark = read_in_place(str(target))
            state = None if mark is None else mark.get("state")
            want = {None: "old", "finished": "new"}.get(state, "half")
            reads.judge(reads.start(kind), f"round {i}, after the kill (mark {state})", (want,))
        else:
            if remap.code != 0:
                row.problems.append(f"round {i}: the remap exited {remap.code}:{remap.output()}")
            states.classify(target, f"round {i} after the remap", finished=True)
        code, _, out = run_to_end(remap_args(target), logs / f"readers-{i:02d}-rerun.log", launch)
        rerun_ok = remap_rerun_ok(code, out, target)
        if not rerun_ok:
            row.problems.append(f"round {i}: the remap rerun exited {code}:\n{out}")
        states.classify(target, f"round {i} after the rerun", finished=True)
        leftovers(row, target, f"round {i} after the rerun", lock=code == 0)
        final = reads.judge(reads.start(kind), f"round {i}, after the rerun", ("new",))
        row.reruns_ok += rerun_ok and final == "new"
    return row
