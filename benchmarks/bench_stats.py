"""Benchmark `labelfix stats` against the loop users write today, on Cityscapes-sized masks.

Generates its own data in a temporary directory and prints one table; every ratio compares
timings from this same run. Usage:

    python benchmarks/bench_stats.py [--files 64] [--jobs N]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from labelfix.checks.stats import scan_dataset
from labelfix.parallel import default_jobs, ordered_map
from labelfix.synthetic import cityscapes_like_mask


def make_masks(root: str, n: int, *, distinct: int = 16, height=1024, width=2048) -> list[str]:
    """``n`` PNG masks (``distinct`` different ones, copied) under ``root``."""
    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    blobs = []
    for _ in range(min(n, distinct)):
        buf = io.BytesIO()
        Image.fromarray(cityscapes_like_mask(rng, height=height, width=width)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    paths = []
    for i in range(n):
        path = os.path.join(root, f"{i // 500:03d}", f"{i:06d}_gtFine_labelIds.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(blobs[i % len(blobs)])
        paths.append(path)
    return paths


def naive(paths: list[str]) -> dict[int, int]:
    """What users write today: decode, np.unique, one process."""
    totals: dict[int, int] = {}
    for f in paths:
        values, counts = np.unique(np.array(Image.open(f)), return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            totals[v] = totals.get(v, 0) + c
    return totals


def _decode(path: str) -> int:
    with Image.open(path) as im:
        im.load()
    return 0


def decode_only(paths: list[str], jobs: int) -> None:
    for _ in ordered_map(_decode, paths, jobs=jobs, preload=("benchmarks.bench_stats",)):
        pass


def best_of(func, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)


def _tree_rss_kb(root_pid: int) -> int:
    """Sum of VmRSS over ``root_pid`` and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{entry}/status") as fh:
                status = fh.read()
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[pid] = int(line.split()[1])
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(rss.get(pid, 0) for pid in tree)


def peak_rss_mb(root: str, jobs: int) -> tuple[float, float]:
    """Peak RSS (MB) of a `stats` run on ``root``: the parent alone, and all its processes."""
    code = (
        "import resource\n"
        "from labelfix.checks.stats import scan_dataset\n"
        f"scan_dataset([{root!r}], ignore=(255,), num_classes=34, jobs={jobs})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    peak_tree = 0
    while proc.poll() is None:
        peak_tree = max(peak_tree, _tree_rss_kb(proc.pid))
        time.sleep(0.05)
    parent = int(proc.stdout.read().split()[-1])
    proc.stdout.close()
    return parent / 1024, peak_tree / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tmp = tempfile.mkdtemp(prefix="labelfix-bench-stats-")
    try:
        root = os.path.join(tmp, "masks")
        paths = make_masks(root, args.files)
        size = np.mean([os.path.getsize(p) for p in paths]) / 1024
        reference = naive(paths)
        t_naive = best_of(lambda: naive(paths))
        t_dec1 = best_of(lambda: decode_only(paths, 1))
        t_decj = best_of(lambda: decode_only(paths, args.jobs))
        t_lf1 = best_of(lambda: scan_dataset([root], ignore=(255,), num_classes=34, jobs=1))
        holder = {}

        def run_parallel():
            holder["s"] = scan_dataset([root], ignore=(255,), num_classes=34, jobs=args.jobs)

        t_lfj = best_of(run_parallel)
        got = {v: s.pixels for v, s in holder["s"].values.items()}
        assert got == reference, "labelfix stats disagrees with np.unique"

        n = len(paths)
        print(
            f"stats on {n} masks of 2048x1024 (mean PNG {size:.0f} KB), {args.jobs} jobs,"
            f" {os.cpu_count()} CPUs"
        )
        rows = [
            ("naive loop (np.unique, 1 process)", t_naive),
            ("decode only, Pillow, 1 process", t_dec1),
            (f"decode only, Pillow, {args.jobs} processes", t_decj),
            ("labelfix stats, 1 process", t_lf1),
            (f"labelfix stats, {args.jobs} processes", t_lfj),
        ]
        print(f"{'method':45s} {'ms/mask':>9s} {'speed-up vs naive':>18s}")
        for name, t in rows:
            print(f"{name:45s} {1000 * t / n:9.2f} {t_naive / t:17.2f}x")
        print(
            f"labelfix stats ({args.jobs} jobs) / decode only ({args.jobs} jobs):"
            f" {t_lfj / t_decj:.2f}x the decode-only time"
        )

        small = os.path.join(tmp, "rss")
        for count in (100, 5000):
            shutil.rmtree(small, ignore_errors=True)
            make_masks(small, count, distinct=8, height=256, width=512)
            parent, child = peak_rss_mb(small, args.jobs)
            print(
                f"peak RSS with {count:5d} masks: parent {parent:6.1f} MB,"
                f" all processes together {child:6.1f} MB"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
