"""Memory stays flat and cost grows linearly in the number of masks, through the command line.

Generates its own data in a temporary directory (in memory, ``/dev/shm``, unless ``--dir``: see
:data:`RAM_DIR`): 512x256 Cityscapes-like labelId masks (8-bit,
irregular boundaries, saved as Pillow saves them), a few distinct files hard-linked (or copied)
under as many names as needed, 100 to a directory. Runs ``labelfix stats``, ``labelfix remap``
and ``labelfix validate`` on 1,000 and on 10,000 of them, one at a time, and polls the process
tree in ``/proc`` (every 10 ms) for the peak resident memory (``VmHWM``) of the command's own
process and of its worker processes (a forked worker's count includes the pages it shares with
the parent as it was then). Lines run in interleaved rounds; each reports its median time.

* memory: the peaks on 10,000 masks are at most 10% (and 4 MB) above those on 1,000;
* cost: the time per mask on 10,000 masks is within 10% of that on 1,000, start-up left out
  (that of the same command on 16 masks, which already starts the workers, is subtracted). The
  verdict is on CPU time (user + system, the command and its workers: ``wait4``), which other
  work on a shared machine disturbs far less than wall time; wall time is printed beside it.

    python benchmarks/bench_scale.py                  # a few minutes on 2 cores
    python benchmarks/bench_scale.py --sizes 500 5000 --repeat 1   # quicker
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np
from PIL import Image

from labelfix.parallel import default_jobs
from labelfix.synthetic import cityscapes_like_mask

COMMANDS = {
    "stats": ["stats", "{src}", "--ignore", "0", "-n", "34"],
    "remap": ["remap", "--preset", "cityscapes", "{src}", "-o", "{out}"],
    "validate": ["validate", "{src}", "-n", "34", "--ignore", "0"],
}
#: In-memory file system: a virtual disk's write cost varies 5x from run to run (74-393 us of
#: system time per 20 KB file on this project's CI machines), which would drown the cost of
#: labelfix's own work; ``--dir`` measures on a disk instead.
RAM_DIR = "/dev/shm"
#: tolerances: memory may grow by this share and this many MB; time per mask by this share
MEMORY_SHARE, MEMORY_MB, TIME_SHARE = 0.10, 4.0, 0.10


def make_masks(root: str, n: int, *, distinct: int = 16, height: int = 256, width: int = 512):
    """``n`` mask files under ``root``, ``distinct`` different ones, hard-linked where possible."""
    rng = np.random.default_rng(0)
    blobs = os.path.join(root, "..", f"blobs-{height}x{width}")
    os.makedirs(blobs, exist_ok=True)
    sources = []
    for k in range(distinct):
        path = os.path.join(blobs, f"{k:02d}.png")
        if not os.path.exists(path):
            buf = io.BytesIO()
            Image.fromarray(cityscapes_like_mask(rng, height=height, width=width)).save(buf, "PNG")
            with open(path, "wb") as fh:
                fh.write(buf.getvalue())
        sources.append(path)
    for i in range(n):
        path = os.path.join(root, f"city{i // 100:03d}", f"{i:06d}_gtFine_labelIds.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.link(sources[i % distinct], path)
        except OSError:
            shutil.copyfile(sources[i % distinct], path)


def _children(pid: int) -> list[int]:
    kids = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids.extend(int(k) for k in fh.read().split())
        except OSError:
            pass
    return kids


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Run(NamedTuple):
    seconds: float  # wall clock
    cpu: float  # user + system seconds of the command and its workers
    parent_mb: float  # peak resident memory of the command's own process
    worker_mb: float  # ... and of its largest worker


def run(args: list[str]) -> Run:
    """Run one command, following its process tree until it exits."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        parent = 0
        seen: dict[int, int] = {}
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # usage: it and its workers
            if pid:
                break
            parent = max(parent, _hwm_kb(proc.pid))
            todo = _children(proc.pid)
            while todo:
                child = todo.pop()
                seen[child] = max(seen.get(child, 0), _hwm_kb(child))
                todo.extend(_children(child))
            time.sleep(0.01)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            text = err.read().decode(errors="replace")
            raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{text}")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(seconds, cpu, parent / 1024, max(seen.values(), default=0) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(1000, 10000), metavar="N")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (median time per line)")
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--commands", nargs="+", default=list(COMMANDS), choices=list(COMMANDS))
    parser.add_argument(
        "--dir",
        default=RAM_DIR if os.access(RAM_DIR, os.W_OK) else None,
        help=f"where the masks and outputs go (default: {RAM_DIR}, in memory, when writable)",
    )
    args = parser.parse_args()
    if not os.path.isdir("/proc/self/task"):
        raise SystemExit("needs Linux /proc to follow the process tree")
    cli = [sys.executable, "-m", "labelfix"]
    small, large = args.sizes
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        roots = {}
        for n in (16, small, large):
            roots[n] = os.path.join(tmp, f"m{n}")
            make_masks(roots[n], n)
        samples: dict[tuple[str, int], list[Run]] = {}
        # rounds interleave the lines, so that a slow spell of a shared machine hits them alike;
        # the short runs go three times a round (their noise is a larger share of them)
        for _ in range(args.repeat):
            for name in args.commands:
                for n in (16, small, large):
                    for _ in range(3 if n < large else 1):
                        out = os.path.join(tmp, "out")
                        shutil.rmtree(out, ignore_errors=True)
                        command = [a.format(src=roots[n], out=out) for a in COMMANDS[name]]
                        samples.setdefault((name, n), []).append(
                            run([*cli, *command, "-j", str(args.jobs)])
                        )
        report({key: summary(runs) for key, runs in samples.items()}, args)


def summary(runs: list[Run]) -> Run:
    """The median times (a minimum would favour the line with more samples) and peak memory."""
    return Run(
        statistics.median(r.seconds for r in runs),
        statistics.median(r.cpu for r in runs),
        max(r.parent_mb for r in runs),
        max(r.worker_mb for r in runs),
    )


def report(rows, args) -> None:
    small, large = args.sizes
    where = args.dir or tempfile.gettempdir()
    print(
        f"{os.cpu_count()} cores, {args.jobs} jobs, median of {args.repeat} rounds; 512x256 masks "
        f"in {where}"
    )
    print(
        f"{'command':<9} {'masks':>6} {'wall s':>7} {'wall ms/mask':>13} {'cpu ms/mask':>12} "
        f"{'parent MB':>10} {'worker MB':>10}"
    )
    verdicts = []
    for name in args.commands:
        start = rows[name, 16]
        wall, cpu = {}, {}
        for n in (small, large):
            line = rows[name, n]
            wall[n] = (line.seconds - start.seconds) / (n - 16) * 1e3
            cpu[n] = (line.cpu - start.cpu) / (n - 16) * 1e3
            print(
                f"{name:<9} {n:>6} {line.seconds:7.2f} {wall[n]:13.3f} {cpu[n]:12.3f} "
                f"{line.parent_mb:10.1f} {line.worker_mb:10.1f}"
            )
        one, ten = rows[name, small], rows[name, large]
        flat = all(
            b <= a * (1 + MEMORY_SHARE) + MEMORY_MB
            for a, b in ((one.parent_mb, ten.parent_mb), (one.worker_mb, ten.worker_mb))
        )
        per_kb = (ten.parent_mb - one.parent_mb) * 1024 / (large - small)
        verdicts.append(
            f"{name:<9} memory {small} -> {large} masks: parent {one.parent_mb:.1f} -> "
            f"{ten.parent_mb:.1f} MB ({per_kb:+.2f} KB/mask), workers {one.worker_mb:.1f} -> "
            f"{ten.worker_mb:.1f} MB  {'PASS' if flat else 'FAIL'}"
        )
        growth, wall_growth = cpu[large] / cpu[small] - 1, wall[large] / wall[small] - 1
        verdicts.append(
            f"{name:<9} cost per mask {cpu[small]:.3f} -> {cpu[large]:.3f} cpu ms ({growth:+.1%}; "
            f"wall {wall_growth:+.1%})  {'PASS' if abs(growth) <= TIME_SHARE else 'FAIL'}"
        )
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
