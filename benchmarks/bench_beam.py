"""``stats`` and ``to-tfrecord`` on a dask.distributed cluster of 1 and of 2 worker processes
(``--runner dask``, and Beam's DaskRunner), against the local runner, on VOC-size data.

Generates VOC-size data (500x375 JPEG images, VOC-palette PNG masks, as bench_tfrecord.py), starts
``distributed.LocalCluster``s of worker processes (one thread each) on 127.0.0.1, and times on the
same files, in this one process:

* ``local, J processes``: :func:`labelfix.checks.stats.scan_dataset` and
  :func:`labelfix.records.write.write_dataset` with ``jobs=J``;
* ``dask, N workers``: :func:`labelfix.engines.dask.scan_dataset_dask` and
  :func:`~labelfix.engines.dask.write_dataset_dask` against the cluster's scheduler (connecting
  to it included, starting it not: a cluster is already running when a user runs a command);
* ``beam DaskRunner, N workers``: :func:`labelfix.engines.beam.scan_dataset_beam` and
  :func:`~labelfix.engines.beam.write_dataset_beam` with ``--runner=DaskRunner`` on the same
  cluster;
* ``beam DirectRunner``: the same on Beam's in-process test runner (``--direct``).

Each cluster first runs a small job untimed (its workers import labelfix). Every cluster stays up
for the whole run and the rows are timed round robin, once per round, so that a busy moment of a
shared machine hits every row alike; each row shows the best of ``--repeat`` rounds and the
median. ``scaling`` is the 1-process time over the N-process time of the same runner; ``vs
local`` the row's time over the local runner's with as many processes. With 2 cores, the
launching process, the scheduler and the workers share them: 2 workers cannot reach 2x, and the
load average printed before and after says how much else ran. Usage:

    python benchmarks/bench_beam.py                      # 1,000 pairs, a few minutes on 2 cores
    python benchmarks/bench_beam.py --pairs 2000 --repeat 3 --direct
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_tfrecord import IGNORE, NUM_CLASSES, make_voc_like

from labelfix.checks.stats import scan_dataset
from labelfix.labels.labelmap import LabelMap
from labelfix.records.write import write_dataset


@contextlib.contextmanager
def cluster(workers: int, scratch: str):
    """A LocalCluster of ``workers`` processes, one thread each; yields its address."""
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            local_directory=scratch,
            silence_logs=logging.ERROR,
        ) as local,
        distributed.Client(local, set_as_default=False) as client,
    ):
        client.wait_for_workers(workers)
        yield local.scheduler_address


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--direct", action="store_true", help="also Beam's DirectRunner")
    args = parser.parse_args()

    from labelfix.engines.beam import scan_dataset_beam, write_dataset_beam
    from labelfix.engines.dask import scan_dataset_dask, write_dataset_dask

    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    root = tempfile.mkdtemp(prefix="labelfix-bench-beam-")
    try:
        make_voc_like(root, args.pairs)
        images = os.path.join(root, "JPEGImages")
        masks = os.path.join(root, "SegmentationClass")
        out = os.path.join(root, "out")
        stats_options = dict(ignore=(IGNORE,), num_classes=NUM_CLASSES)
        write_options = dict(
            images=images,
            masks=masks,
            output=out,
            num_classes=NUM_CLASSES,
            label_map=LabelMap(ignore=(IGNORE,)),
        )
        runs: dict[tuple[str, str], object] = {}
        for jobs in args.workers:
            runs["stats", f"local, {jobs}"] = lambda j=jobs: scan_dataset(
                [masks], jobs=j, **stats_options
            )
            runs["to-tfrecord", f"local, {jobs}"] = lambda j=jobs: write_dataset(
                jobs=j, **write_options
            )
        with contextlib.ExitStack() as stack:
            for n in args.workers:  # every cluster up for the whole run: rounds interleave
                scratch = os.path.join(root, f"cluster-{n}")
                os.makedirs(scratch)
                address = stack.enter_context(cluster(n, scratch))
                scan_dataset_dask([masks], scheduler=address, glob="2007_00000*.png")  # warm-up
                beam = ["--runner=DaskRunner", f"--dask_client_address={address}"]
                runs["stats", f"dask, {n}"] = lambda a=address: scan_dataset_dask(
                    [masks], scheduler=a, **stats_options
                )
                runs["to-tfrecord", f"dask, {n}"] = lambda a=address: write_dataset_dask(
                    scheduler=a, **write_options
                )
                runs["stats", f"beam DaskRunner, {n}"] = lambda b=beam: scan_dataset_beam(
                    [masks], pipeline_args=b, **stats_options
                )
                runs["to-tfrecord", f"beam DaskRunner, {n}"] = lambda b=beam: write_dataset_beam(
                    pipeline_args=b, **write_options
                )
            if args.direct:
                direct = ["--runner=DirectRunner", "--direct_num_workers=1"]
                runs["stats", "beam DirectRunner, 1"] = lambda: scan_dataset_beam(
                    [masks], pipeline_args=direct, **stats_options
                )
                runs["to-tfrecord", "beam DirectRunner, 1"] = lambda: write_dataset_beam(
                    pipeline_args=direct, **write_options
                )
            before = load()
            rounds: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
            for _ in range(args.repeat):  # round robin: a busy moment hits every row alike
                for key, func in runs.items():
                    start = time.perf_counter()
                    func()
                    rounds[key].append(time.perf_counter() - start)
            after = load()
        times = {key: min(found) for key, found in sorted(rounds.items())}
        medians = {key: statistics.median(found) for key, found in rounds.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"{args.pairs} VOC-size pairs, {os.cpu_count()} cores, best of {args.repeat} rounds "
        f"(median beside it); load average (1/5/15 min) {before} before, {after} after"
    )
    print(f"{'job':<12} {'runner':<18} {'procs':>5} {'seconds':>8} {'median':>7} {'pairs/s':>8} "
          f"{'vs local':>9} {'scaling':>8}")  # fmt: skip
    first = min(args.workers)
    order = ("local", "dask", "beam DaskRunner", "beam DirectRunner")
    for (job, label), seconds in sorted(
        times.items(),
        key=lambda kv: (kv[0][0] != "stats", order.index(kv[0][1].rpartition(", ")[0]), kv[0][1]),
    ):
        name, _, n = label.rpartition(", ")
        local = times.get((job, f"local, {n}"))
        versus = f"{seconds / local:.2f}x" if local and name != "local" else ""
        one = times.get((job, f"{name}, {first}"))
        scaling = f"{one / seconds:.2f}x" if one and n != str(first) else ""
        print(
            f"{job:<12} {name:<18} {n:>5} {seconds:8.2f} {medians[job, label]:7.2f} "
            f"{args.pairs / seconds:8.0f} {versus:>9} {scaling:>8}"
        )


if __name__ == "__main__":
    main()
