"""Overhead of ``--runner beam`` (Apache Beam's DirectRunner) against the local runner.

Generates VOC-size data (500x375 JPEG images, VOC-palette PNG masks, as bench_tfrecord.py), then
times on the same files, in this one process (TensorFlow and Beam imported before any timing):

* ``stats``: :func:`labelfix.checks.stats.scan_dataset` (local, ``jobs`` processes) against
  :func:`labelfix.records.beam.scan_dataset_beam`;
* ``to-tfrecord``: :func:`labelfix.records.write.write_dataset` against
  :func:`labelfix.records.beam.write_dataset_beam` (``WriteToTFRecord``, then the shards are read
  back for their counts and checksums).

Beam runs twice: the DirectRunner's default (one worker, in this process) and its
multi-processing mode with ``--jobs`` workers. The DirectRunner is for tests and small data;
the numbers say what the pipeline plumbing costs, not what Dataflow, Flink or Spark would do.
Each row is the best of ``--repeat`` runs. Usage:

    python benchmarks/bench_beam.py                 # 200 pairs, about a minute on 2 cores
    python benchmarks/bench_beam.py --pairs 400 --repeat 3
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_tfrecord import IGNORE, NUM_CLASSES, make_voc_like

from labelfix.checks.stats import scan_dataset
from labelfix.labels.labelmap import LabelMap
from labelfix.parallel import default_jobs
from labelfix.records.write import write_dataset


def best_of(repeat: int, func) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import tensorflow as tf  # noqa: F401 - imported once, before any timing

    from labelfix.records.beam import scan_dataset_beam, write_dataset_beam

    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    root = tempfile.mkdtemp(prefix="labelfix-bench-beam-")
    try:
        make_voc_like(root, args.pairs)
        images = os.path.join(root, "JPEGImages")
        masks = os.path.join(root, "SegmentationClass")
        out = os.path.join(root, "out")
        label_map = LabelMap(ignore=(IGNORE,))
        stats_options = dict(ignore=(IGNORE,), num_classes=NUM_CLASSES)
        write_options = dict(
            images=images, masks=masks, output=out, num_classes=NUM_CLASSES, label_map=label_map
        )
        direct = ["--runner=DirectRunner", "--direct_num_workers=1"]
        multi = [
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            f"--direct_num_workers={args.jobs}",
        ]
        runs = {
            "stats": {
                "local, 1 process": lambda: scan_dataset([masks], jobs=1, **stats_options),
                f"local, {args.jobs} processes": lambda: scan_dataset(
                    [masks], jobs=args.jobs, **stats_options
                ),
                "beam DirectRunner, in process": lambda: scan_dataset_beam(
                    [masks], pipeline_args=direct, **stats_options
                ),
                f"beam DirectRunner, {args.jobs} processes": lambda: scan_dataset_beam(
                    [masks], pipeline_args=multi, **stats_options
                ),
            },
            "to-tfrecord": {
                "local, 1 process": lambda: write_dataset(jobs=1, **write_options),
                f"local, {args.jobs} processes": lambda: write_dataset(
                    jobs=args.jobs, **write_options
                ),
                "beam DirectRunner, in process": lambda: write_dataset_beam(
                    pipeline_args=direct, **write_options
                ),
                f"beam DirectRunner, {args.jobs} processes": lambda: write_dataset_beam(
                    pipeline_args=multi, **write_options
                ),
            },
        }
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"{args.pairs} VOC-size pairs, {args.jobs} jobs, best of {args.repeat}, "
            f"load average {load:.1f}"
        )
        print(f"{'job':<12} {'runner':<32} {'seconds':>8} {'pairs/s':>8} {'vs local -j':>12}")
        for job, variants in runs.items():
            baseline = None
            for name, func in variants.items():
                seconds = best_of(args.repeat, func)
                if name.startswith(f"local, {args.jobs}"):
                    baseline = seconds
                ratio = f"{seconds / baseline:.1f}x" if baseline else ""
                print(
                    f"{job:<12} {name:<32} {seconds:8.2f} {args.pairs / seconds:8.0f} {ratio:>12}"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
