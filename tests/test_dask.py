"""``stats`` and ``to-tfrecord`` on a real ``dask.distributed`` cluster: a scheduler and two worker
processes on 127.0.0.1, started by the tests, run by ``--runner dask`` and by Beam's DaskRunner.

Issue 26: the pipelines had only run on Beam's DirectRunner. On the DaskRunner they failed
("Discarding unparseable args: ['--dask_client_address=...']", then ``AttributeError:
'NoneType' object has no attribute 'map'`` inside Beam's Dask transform evaluator), every Beam
run left an empty ``beam-temp*`` directory in the system's temporary folder, and a failing
runner ended in a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import operator
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from labelfix.checks.stats import scan_dataset
from labelfix.cli import main
from labelfix.errors import LabelfixError
from labelfix.io.door import Door, Rules
from labelfix.io.pairing import DatasetProblems
from labelfix.labels.labelmap import LabelMap
from labelfix.records.example import feature_key, parse_example
from labelfix.records.framing import read_records
from labelfix.records.verify import verify_dataset
from labelfix.records.write import write_dataset

distributed = pytest.importorskip("distributed")

from labelfix.engines.dask import (  # noqa: E402
    DaskEngine,
    DaskOptions,
    scan_dataset_dask,
    write_dataset_dask,
)

from conftest import save_palette_png  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # a cluster of three processes, once per module


# ----------------------------------------------------------------------------- the cluster


def _stop(processes: list[subprocess.Popen]) -> None:
    """End the processes: the workers (``processes[1:]``) together, then the scheduler (the
    workers would wait for it to come back)."""
    for group in (processes[1:], processes[:1]):
        for process in group:
            if process.poll() is None:
                process.terminate()
        for process in group:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextlib.contextmanager
def dask_cluster(work: Path, *, workers: int = 2):
    """``dask scheduler`` and ``workers`` ``dask worker`` processes (one thread each) on
    127.0.0.1, on ports the system picks; yields the scheduler's address. Every process is
    stopped when the block ends, however it ends. The workers import this checkout's
    labelfix."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    scheduler_file = work / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    processes: list[subprocess.Popen] = []
    log = open(work / "cluster.log", "wb")  # noqa: SIM115 - closed below
    try:
        processes.append(
            subprocess.Popen(
                [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--dashboard-address", "127.0.0.1:0",
                 "--scheduler-file", str(scheduler_file), "--idle-timeout", "600"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work,
            )
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            assert processes[0].poll() is None, (work / "cluster.log").read_text()
            time.sleep(0.1)
        for i in range(workers):
            processes.append(
                subprocess.Popen(
                    [*dask, "worker", "--scheduler-file", str(scheduler_file), "--host",
                     "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard",
                     "--local-directory", str(work / f"worker-{i}"), "--death-timeout", "60"],
                    env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work,
                )
            )  # fmt: skip
        address = json.loads(scheduler_file.read_text())["address"]
        with distributed.Client(address, timeout=30, set_as_default=False) as client:
            if workers:
                client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        _stop(processes)
        log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> str:
    with dask_cluster(tmp_path_factory.mktemp("cluster")) as address:
        yield address


def beam_dask(address: str) -> list[str]:
    """Beam's options for its DaskRunner on the cluster."""
    return ["--runner=DaskRunner", f"--dask_client_address={address}"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fresh_tmp(tmp_path: Path, monkeypatch) -> Path:
    """The system's temporary directory, for this test: a fresh, empty one."""
    tmp = tmp_path / "system-tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_the_cluster_runs_tasks_in_two_worker_processes(cluster: str):
    with distributed.Client(cluster, set_as_default=False) as client:
        pids = {pid for pid in client.run(os.getpid).values()}
    assert len(pids) == 2 and os.getpid() not in pids


# ----------------------------------------------------------------------------- data


def jpeg(height: int, width: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def mask(cls: int, height: int = 6, width: int = 8) -> np.ndarray:
    m = np.zeros((height, width), np.uint8)
    m[1:5, 1:5] = 255
    m[2:4, 2:4] = cls
    return m


@pytest.fixture
def pairs(tmp_path: Path) -> tuple[Path, Path]:
    """12 VOC-style pairs, classes 1..12 with a 255 border, two image sizes."""
    images, masks = tmp_path / "data" / "images", tmp_path / "data" / "masks"
    images.mkdir(parents=True)
    for i in range(12):
        height, width = (6, 8) if i % 3 else (8, 6)
        save_palette_png(masks / f"2007_{i:06d}.png", mask(1 + i, height, width))
        (images / f"2007_{i:06d}.jpg").write_bytes(jpeg(height, width, i))
    return images, masks


def write_options(images: Path, masks: Path, **kwargs) -> dict:
    return dict(images=images, masks=masks, num_classes=21, label_map=LabelMap(ignore=(255,)),
                **kwargs)  # fmt: skip


def records_by_id(result) -> dict[str, tuple]:
    """source_id -> (decoded mask, image bytes, decoded image), over every record."""
    found = {}
    for path in result.paths:
        with open(path, "rb") as fh:
            for record in read_records(fh, compression=result.compression):
                features = parse_example(record)
                image = features[feature_key("image")][0]
                found[features[feature_key("source_id")][0].decode()] = (
                    np.asarray(Image.open(io.BytesIO(features[feature_key("mask")][0]))).tolist(),
                    image,
                    np.asarray(Image.open(io.BytesIO(image))).tolist(),
                )
    return found


# ----------------------------------------------------------------------------- stats


def test_stats_on_the_cluster_equal_local_stats(cluster: str, messy_masks: Path, clean_masks: Path):
    """13 masks, one batch each, folded in listing order whatever order they finish in (Beam's
    DaskRunner: through the command line, below)."""
    paths = [messy_masks, clean_masks]
    options = dict(ignore=(255,), num_classes=21, artifacts=True)
    local = scan_dataset(paths, jobs=1, **options)
    found = scan_dataset_dask(paths, scheduler=cluster, **options)
    assert found.to_dict() == local.to_dict()
    assert found.class_weights() == local.class_weights()
    assert found.unreadable and found.out_of_range  # the lists whose order had to be kept


@pytest.mark.parametrize("runner", ["dask", "beam"])
def test_cli_stats_on_the_cluster_same_report_and_failure(
    cluster: str, messy_masks: Path, fresh_tmp: Path, runner: str, monkeypatch
):
    """messy_masks holds unreadable files: the same report, the same error lines, exit 1, and
    nothing left in the system's temporary directory. The path is relative: the workers work
    in another directory, yet read the files and report them as named."""
    monkeypatch.chdir(messy_masks.parent)
    args = ["stats", messy_masks.name, "--ignore", "255", "-n", "21", "--json"]
    local = CliRunner().invoke(main, [*args, "-j", "1"])
    extra = ["--scheduler", cluster] if runner == "dask" else beam_dask(cluster)
    found = CliRunner().invoke(main, [*args, "--runner", runner, "--", *extra])
    assert found.exit_code == local.exit_code == 1, found.output
    assert json.loads(found.stdout) == json.loads(local.stdout)
    assert found.stderr == local.stderr
    assert f"labelfix: error: {messy_masks.name}/empty.png: " in found.stderr
    assert sorted(os.listdir(fresh_tmp)) == []


# ----------------------------------------------------------------------------- to-tfrecord


@pytest.mark.parametrize(
    ("engine", "compression", "sharding"),
    [
        ("dask", "none", {"num_shards": 3}),
        ("dask", "gzip", {"shard_size": 1500}),
        ("beam", "gzip", {"shard_size": 1500}),
    ],
)
def test_records_on_the_cluster_are_the_local_records(
    cluster: str, pairs, tmp_path: Path, engine: str, compression: str, sharding: dict
):
    """The same shards, byte for byte, as the local runner: same names, records, order and
    checksums; decoded masks and images equal; a manifest verify accepts."""
    options = write_options(*pairs, compression=compression, **sharding)
    local = write_dataset(output=tmp_path / "local", jobs=1, **options)
    out = tmp_path / engine
    if engine == "dask":
        found = write_dataset_dask(output=out, scheduler=cluster, **options)
    else:
        from labelfix.engines.beam import write_dataset_beam

        found = write_dataset_beam(output=out, pipeline_args=beam_dask(cluster), **options)
    assert len(local.shards) > 1  # the layout was cut, not trivially one shard
    assert found.shards == local.shards  # names, record counts, sizes, sha256
    assert records_by_id(found) == records_by_id(local)
    assert len(records_by_id(found)) == 12
    assert verify_dataset(out, jobs=1).problems == ()
    manifests = [
        json.loads((d / "train.labelfix.json").read_text()) for d in (out, tmp_path / "local")
    ]
    assert manifests[0] == manifests[1]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in (tmp_path / "local").iterdir()
    )
    assert found.to_dict() | {"output": "", "manifest": ""} == local.to_dict() | {
        "output": "",
        "manifest": "",
    }


@pytest.mark.parametrize("runner", ["dask", "beam"])
def test_cli_to_tfrecord_bad_mask_ends_with_the_local_message(
    cluster: str, pairs, tmp_path: Path, fresh_tmp: Path, runner: str, monkeypatch
):
    """Relative paths in, relative paths in the messages, as with the local runner."""
    masks = pairs[1]
    monkeypatch.chdir(tmp_path)
    args = ["to-tfrecord", "--images", "data/images", "--masks", "data/masks", "-n", "21"]
    args += ["--ignore", "255", "--num-shards", "2"]
    extra = [
        "--runner",
        runner,
        "--",
        *(["--scheduler", cluster] if runner == "dask" else beam_dask(cluster)),
    ]
    out = tmp_path / "tfr"
    ok = CliRunner().invoke(main, [*args, "-o", "tfr", *extra])
    assert ok.exit_code == 0, ok.output
    assert "Wrote 12 records" in ok.stdout and "in 2 shard(s)" in ok.stdout
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for name, value in (("2007_000003.png", 37), ("2007_000008.png", 40)):
        bad = mask(4)
        bad[0, 7] = value
        save_palette_png(masks / name, bad)
    local = CliRunner().invoke(main, [*args, "-o", "local", "-j", "1"])
    found = CliRunner().invoke(main, [*args, "-o", "tfr", *extra])
    assert found.exit_code == local.exit_code == 1
    assert found.stderr == local.stderr
    assert "data/masks/2007_000003.png: value 37 is not a class id" in found.stderr
    assert "value 40" in found.stderr
    assert "2 of 12 pair(s) cannot be written" in found.stderr
    # the earlier dataset is untouched, no staging directory is left, nor temporary files
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(fresh_tmp)) == []


def test_api_bad_pairs_raise_the_local_dataset_problems(cluster: str, pairs, tmp_path: Path):
    images, masks = pairs
    bad = mask(4)
    bad[2, 3] = 99
    save_palette_png(masks / "2007_000005.png", bad)
    with pytest.raises(DatasetProblems) as local:
        write_dataset(output=tmp_path / "local", jobs=1, **write_options(images, masks))
    with pytest.raises(DatasetProblems) as found:
        write_dataset_dask(output=tmp_path / "d", scheduler=cluster, **write_options(images, masks))
    assert str(found.value) == str(local.value)
    assert found.value.problems == local.value.problems
    assert not (tmp_path / "d").exists()  # a run that wrote nothing leaves no directory


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize("engine", ["dask", "beam"])
def test_a_task_that_fails_on_a_worker_is_one_line_naming_the_engine(cluster: str, engine: str):
    if engine == "dask":
        runner = DaskEngine(DaskOptions(scheduler=cluster))
        name = f"the dask cluster at {cluster}"
    else:
        from labelfix.engines.beam import BeamEngine

        runner = BeamEngine(beam_dask(cluster))
        name = f"Beam's DaskRunner at {cluster}"
    with Door(Rules.of("stats")) as door, runner.session(door):
        assert runner.map(functools.partial(operator.truediv, 12), [1, 2, 3], what="dividing") == [
            12.0,
            6.0,
            4.0,
        ]
        with pytest.raises(LabelfixError) as err:
            runner.map(functools.partial(operator.truediv, 12), [1, 0, 3], what="dividing")
    message = str(err.value)
    assert message.startswith(f"dividing failed on {name}: ZeroDivisionError: ")
    assert "\n" not in message


@pytest.mark.parametrize("runner", ["dask", "beam"])
def test_an_unreachable_scheduler_is_one_line_and_exit_1(clean_masks: Path, runner: str):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    if runner == "dask":
        extra = ["--scheduler", address, "--timeout", "1"]
        expected = f"labelfix: error: cannot start or reach the dask cluster at {address}: OSError:"
    else:
        extra = [*beam_dask(address), "--dask_connection_timeout=1"]
        expected = f"labelfix: error: scanning the masks failed on Beam's DaskRunner at {address}"
    result = CliRunner().invoke(main, ["stats", str(clean_masks), "--runner", runner, "--", *extra])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("labelfix: error")]
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr
    assert "Traceback" not in result.output


def test_a_scheduler_without_workers_is_one_line_not_a_wait_forever(
    tmp_path: Path, clean_masks: Path
):
    with dask_cluster(tmp_path, workers=0) as address:
        args = ["stats", str(clean_masks), "--runner", "dask", "--"]
        result = CliRunner().invoke(main, [*args, "--scheduler", address, "--timeout", "0.5"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"labelfix: error: the dask cluster at {address} has no workers (waited 0.5 s): start "
        f"some with `dask worker {address}`\n"
    )


def test_runner_options_are_checked_before_anything_runs(clean_masks: Path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    cases = {
        (): "--runner dask needs a cluster: -- --scheduler tcp://HOST:8786 (or "
        "DASK_SCHEDULER_ADDRESS), or -- --workers N",
        ("--bogus",): "--runner dask: unknown option --bogus",
        (
            "--scheduler",
            "tcp://x:1",
            "--workers",
            "2",
        ): "--runner dask: give --scheduler (a running cluster) or",
        ("--workers", "0"): "--runner dask: --workers must be at least 1, got 0",
        ("--workers", "two"): "--runner dask options: argument --workers: invalid int value",
    }
    for extra, message in cases.items():
        args = ["stats", str(clean_masks), "--runner", "dask", *(["--", *extra] if extra else [])]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (extra, result.output)
        assert f"labelfix: error: {message}" in result.stderr, (extra, result.stderr)


def test_the_scheduler_address_comes_from_dask_s_own_variable(
    cluster: str, clean_masks: Path, monkeypatch
):
    import dask

    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster)
    dask.config.refresh()  # dask reads its variables into its configuration on import
    try:
        assert DaskOptions().resolved().scheduler == cluster
        result = CliRunner().invoke(
            main, ["stats", str(clean_masks), "--ignore", "255", "-n", "21", "--runner", "dask"]
        )
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Scanned 4 files: 4 label masks")


def test_workers_start_a_local_cluster_for_the_run(clean_masks: Path, fresh_tmp: Path):
    """``-- --workers N`` starts N worker processes for the run and stops them after; their
    spill space is a scratch directory of the run, removed with it."""
    args = ["stats", str(clean_masks), "--ignore", "255", "-n", "21", "--json"]
    local = CliRunner().invoke(main, [*args, "-j", "1"])
    found = CliRunner().invoke(main, [*args, "--runner", "dask", "--", "--workers", "1"])
    assert found.exit_code == local.exit_code == 0, found.output
    assert json.loads(found.stdout) == json.loads(local.stdout)
    assert sorted(os.listdir(fresh_tmp)) == []
