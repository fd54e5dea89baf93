"""Kill labelfix runs at random moments, and race them; check that no file is lost, mixed,
half-written or mapped twice.

Generates Cityscapes-like labelId masks (``--masks`` of ``--size``, 2048x1024 by default) and
JPEG images of the same sizes, then runs four campaigns, one table row each:

``remap``
    ``labelfix remap --preset cityscapes --in-place DIR`` (a mapping that is not idempotent:
    applied twice, it changes a file again) on a fresh copy of the masks each round, SIGKILLed
    (its whole process group) after a random delay, then rerun to completion.
``to-tfrecord``
    ``labelfix to-tfrecord --images IMG --masks DIR --output OUT ...`` into the same output every
    round (as a user reruns it), killed, then rerun to completion.
``beam-and-local``
    the same to-tfrecord with ``--runner beam`` (the DirectRunner) and with the local runner,
    started into one output at random relative offsets, neither, either or both killed (at a
    random moment, or as soon as a publish begins); then the local command rerun to completion
    and ``labelfix verify`` (``fault_concurrency.py``).
``readers``
    an in-place remap as above, and at a random offset a reader of the masks it rewrites
    (``to-tfrecord`` into a fresh output, or ``stats --json``), the remap sometimes killed and
    the reader run again after the kill; then the remap rerun to completion and the reader
    once more (``fault_concurrency.py``).

What is checked, after each kill or race and after each rerun:

* every mask is its old or its new content: never mapped twice, never partial (sha256 against
  a reference run of the same command, and against the mapping applied twice with --force);
  no mask file lost;
* no temporary file (``.NAME.<hex>.labelfix-tmp``), staging directory or lock file is left
  after the rerun;
* no shard exists under a final name unless it is complete: byte for byte a shard that some
  run's manifest lists (the one in place, or one being published, seen while the runs ran or
  left by a killed one), else its records read back whole, each one a record of the reference
  runs; a manifest lists exactly the complete shards of one run: never a mix of two runs'
  shards (``mixed``), never a missing shard or record (``lost``);
  after a kill in the middle of a publish, the manifest may list shards the next run replaces
  (as :func:`labelfix.records.shards.publish` says), but then ``labelfix verify`` must fail;
* two runs into one output never hold its lock at once (``/proc/locks``); the one that comes
  second while the other writes exits 1 saying so (``refused``);
* a reader either refuses (exit 1: the directory is being rewritten, was rewritten while read,
  or was left half-rewritten; ``refused``) or reports exactly the old or exactly the new masks
  (``mixed`` otherwise); after a kill that left the masks half-rewritten it refuses, saying so,
  until the remap is rerun.

It prints one table row per campaign and exits 1 when any check failed. ``kills`` counts runs
killed while still running, ``killed mid-write`` those killed with their work half done
(temporary files there, masks half rewritten, or for the two-runner race: holding the output's
lock), ``reruns ok`` the rounds whose rerun to completion (and final read) succeeded.

    python benchmarks/fault_injection.py                 # 300 masks 2048x1024, 20 rounds each
    python benchmarks/fault_injection.py --masks 100     # the same, about 8 minutes on 2 cores
    python benchmarks/fault_injection.py --quick         # 20 masks 256x128, 5 rounds each
    python benchmarks/fault_injection.py --quick --only readers --only beam-and-local
    python benchmarks/fault_injection.py --quick --only readers --beam-readers  # --runner beam too

``--launch exec`` (the default) starts each run as a new ``python -m labelfix`` process;
``--launch fork`` (the default with --quick) forks it from this process, which has imported
labelfix (and Apache Beam) already, so a run starts in milliseconds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fault_concurrency import mixed_runners_campaign, readers_campaign
from fault_runs import (
    SPLIT,
    Row,
    Run,
    digest,
    leftovers,
    make_dataset,
    remap_args,
    remap_references,
    remap_rerun_ok,
    render,
    reset_masks,
    run_to_end,
    temporaries,
)

from labelfix.records.manifest import manifest_path
from labelfix.records.shards import shard_pattern

CAMPAIGNS = ("remap", "to-tfrecord", "beam-and-local", "readers")


def remap_campaign(work: Path, *, kills: int, launch: str, rng: random.Random) -> Row:
    pristine, target, logs = work / "data" / "gt", work / "remap" / "gt", work / "logs"
    row = Row("remap --preset cityscapes --in-place")
    timing, states = remap_references(work, target, launch, row, "remap")
    for i in range(kills):
        reset_masks(pristine, target)
        row.rounds += 1
        run = Run(remap_args(target), logs / f"remap-{i:02d}-killed.log", launch)
        time.sleep(timing.pick_delay(rng))
        row.kills += run.kill()
        row.mid_write += bool(temporaries(target)) or states.half_done(target)
        states.classify(target, f"round {i} after the kill", finished=False)
        code, _, out = run_to_end(remap_args(target), logs / f"remap-{i:02d}-rerun.log", launch)
        if remap_rerun_ok(code, out, target):
            row.reruns_ok += 1
        else:
            row.problems.append(f"round {i}: the rerun exited {code}:\n{out}")
        states.classify(target, f"round {i} after the rerun", finished=True)
        # (a rerun refused before it locks leaves the killed run's lock file, which is free)
        leftovers(row, target, f"round {i} after the rerun", lock=code == 0)
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
            row.lost += len(missing)
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
        leftovers(row, out, f"round {i} after the rerun")
    return row


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masks", type=int, help="number of masks (300; 20 with --quick)")
    parser.add_argument("--size", type=parse_size, help="WxH of every mask (2048x1024)")
    parser.add_argument("--kills", type=int, help="rounds per campaign (20; 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small masks, few kills, fork")
    parser.add_argument("--launch", choices=("exec", "fork"), help="how runs start")
    parser.add_argument(
        "--only", choices=CAMPAIGNS, action="append", help="these campaigns only (repeatable)"
    )
    parser.add_argument(
        "--beam-readers", action="store_true", help="readers: also with --runner beam"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the data and logs here")
    opts = parser.parse_args(argv)
    count = opts.masks or (20 if opts.quick else 300)
    width, height = opts.size or ((256, 128) if opts.quick else (2048, 1024))
    kills = opts.kills or (5 if opts.quick else 20)
    launch = opts.launch or ("fork" if opts.quick else "exec")
    only = opts.only or CAMPAIGNS
    shards = 3 if count < 100 else 8
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="labelfix-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    rng = random.Random(opts.seed)
    if launch == "fork":  # once, not in every run
        modules = ["labelfix.cli", "labelfix.rewrite.run", "labelfix.records.write"]
        if "beam-and-local" in only or opts.beam_readers:
            logging.getLogger().setLevel(logging.ERROR)  # Beam's import warnings
            modules.append("labelfix.engines.beam")
        for module in modules:
            importlib.import_module(module)
    started = time.monotonic()
    make_dataset(work / "data", count=count, width=width, height=height, seed=opts.seed)
    print(
        f"{count} masks {width}x{height}, {kills} rounds per campaign, runs started by "
        f"{launch}; work directory {work}",
        flush=True,
    )
    rows = []
    if "remap" in only:
        rows.append(remap_campaign(work, kills=kills, launch=launch, rng=rng))
    if "to-tfrecord" in only:
        rows.append(tfrecord_campaign(work, kills=kills, launch=launch, rng=rng, shards=shards))
    if "beam-and-local" in only:
        rows.append(
            mixed_runners_campaign(work, rounds=kills, launch=launch, rng=rng, shards=shards)
        )
    if "readers" in only:
        rows.append(
            readers_campaign(
                work, rounds=kills, launch=launch, rng=rng, shards=shards, beam=opts.beam_readers
            )
        )
    for row in rows:
        name = row.command.split()[0].replace("/", "-")
        with open(work / "logs" / f"{name}-rounds.txt", "a") as fh:
            fh.writelines(f"{line}\n" for line in row.events)
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
