"""Never lose a file, never apply a mapping twice: locks, the journal, killed runs, full disks.

Each test pins a bug a hostile-but-realistic user found: two runs on one directory, a SIGKILL
between a rename and its journal line, temporaries left by killed runs, workers outliving their
parent, write errors naming hidden temporary files.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import labelfix.io.atomic as atomic
from labelfix.cli import main
from labelfix.io.atomic import TMP_SUFFIX, is_temporary, write_atomic
from labelfix.io.lock import LOCK_NAME, DirectoryLocked, directory_lock
from labelfix.io.marks import mark_in_place
from labelfix.io.masks import iter_mask_files, read_mask
from labelfix.rewrite.record import JOURNAL_NAME, RECORD_NAME

from conftest import save_png

ROOT = Path(__file__).resolve().parents[1]
#: Cityscapes labelIds -> trainIds for the values used here (7 road, 8 sidewalk, 23 sky, 0 void).
TRAIN = {7: 0, 8: 1, 23: 10, 0: 255, 26: 13, 24: 11, 255: 255}


def labelid_masks(root: Path, count: int = 4, size: tuple[int, int] = (2, 2)) -> Path:
    """``count`` labelId masks (7, 8, 23, 0) under ``root/a`` and ``root/b``."""
    rng = np.random.default_rng(count)
    for i in range(count):
        mask = rng.choice(np.array([7, 8, 23, 0], np.uint8), size=size)
        mask.flat[:4] = [7, 8, 23, 0]  # every file changes
        save_png(root / ("a" if i % 2 == 0 else "b") / f"{i:03d}.png", mask)
    return root


def snapshot(root: Path) -> dict[str, list]:
    return {
        str(p.relative_to(root)): read_mask(p).labels.tolist() for p in sorted(root.rglob("*.png"))
    }


def mapped(values: dict[str, list]) -> dict[str, list]:
    return {k: np.vectorize(TRAIN.get)(np.array(v)).tolist() for k, v in values.items()}


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def leftovers(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if TMP_SUFFIX in p.name)


def python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """A Python subprocess running ``code`` (the environment's labelfix, TF kept quiet)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        start_new_session=True,
        **kwargs,
    )


HOLD = """
    import contextlib, sys
    from labelfix.io.lock import directory_lock
    with contextlib.ExitStack() as stack:
        for d in sys.argv[1:]:
            stack.enter_context(directory_lock(d, command="remap"))
        print("held", flush=True)
        sys.stdin.read()
"""


class Holder:
    """Another process holding the locks of ``directories`` (like a run in progress)."""

    def __init__(self, *directories: Path):
        self.proc = python(
            HOLD, *map(str, directories), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdout.readline().strip() == b"held"

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.communicate(timeout=10)


# ----------------------------------------------------------------------------- 1. the lock


def test_two_concurrent_in_place_runs_do_not_apply_twice(tmp_path):
    root = labelid_masks(tmp_path / "gtFine", count=24, size=(64, 64))
    before = snapshot(root)
    command = [sys.executable, "-m", "labelfix", "remap", "--preset", "cityscapes", "--in-place"]
    runs = [
        subprocess.Popen([*command, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outcomes = sorted((run.communicate(timeout=60)[1].decode(), run.returncode) for run in runs)
    outcomes = sorted((code, err) for err, code in outcomes)
    assert [code for code, _ in outcomes] == [0, 1], outcomes
    refused = outcomes[1][1]
    # refused by the lock while the other runs, or by the record once it has finished
    assert (
        f"labelfix: error: {root}: another labelfix run is writing here (pid " in refused
        or "were already remapped by this mapping (cityscapes preset" in refused
    ), refused
    assert "Traceback" not in refused
    assert snapshot(root) == mapped(before)  # every file mapped exactly once
    assert not (root / LOCK_NAME).exists()


def test_second_run_into_a_locked_directory_fails_fast_naming_the_holder(tmp_path):
    root = labelid_masks(tmp_path / "gtFine")
    out = tmp_path / "out"
    before = snapshot(root)
    with Holder(root, out) as holder:
        pid = holder.proc.pid
        held = f"another labelfix run is writing here (pid {pid} on {socket.gethostname()}, "
        for args, where in [
            (("remap", "--preset", "cityscapes", "--in-place", str(root)), root),
            (("remap", "--preset", "cityscapes", str(root), "-o", str(out)), out),
            (("repair", "-n", "19", "--ignore", "255", "--in-place", str(root)), root),
        ]:
            started = time.monotonic()
            result = cli(*args)
            assert result.exit_code == 1, result.output
            assert result.stderr.startswith(f"labelfix: error: {where}: {held}`labelfix remap`")
            assert ", started 20" in result.stderr  # the holder's start time
            assert "wait for it to finish" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
            assert time.monotonic() - started < 5  # fails fast, does not wait
        assert snapshot(root) == before
        assert not any(out.rglob("*.png"))
    assert cli("remap", "--preset", "cityscapes", "--in-place", str(root)).exit_code == 0
    assert snapshot(root) == mapped(before)


def test_a_run_inside_or_around_a_locked_directory_is_refused(tmp_path):
    root = labelid_masks(tmp_path / "gtFine")
    before = snapshot(root)
    with Holder(root):
        inner = cli("remap", "--preset", "cityscapes", "--in-place", str(root / "a"))
        assert inner.exit_code == 1
        assert f"labelfix: error: {root / 'a'}: another labelfix run is writing into " in (
            inner.stderr
        )
        assert "which contains it (pid " in inner.stderr
    with Holder(root / "b"):
        outer = cli("remap", "--preset", "cityscapes", "--in-place", str(root))
        assert outer.exit_code == 1
        assert f"labelfix: error: {root / 'b'}: another labelfix run is writing here (pid " in (
            outer.stderr
        )
    assert snapshot(root) == before


def test_to_tfrecord_into_a_locked_output_fails_fast(tmp_path):
    images, masks = pairs(tmp_path)
    out = tmp_path / "tfr"
    with Holder(out) as holder:
        result = cli("to-tfrecord", "--images", str(images), "--masks", str(masks), "-o",
                     str(out), "-n", "21", "--ignore", "255")  # fmt: skip
        assert result.exit_code == 1
        assert f"labelfix: error: {out}: another labelfix run is writing here (pid " in (
            result.stderr
        )
        assert f"pid {holder.proc.pid} " in result.stderr
    assert not any(out.iterdir())  # nothing written, and the holder's lock file is gone


def test_lock_left_by_a_killed_run_is_taken_over_with_a_warning(tmp_path):
    root = labelid_masks(tmp_path / "gtFine")
    before = snapshot(root)
    dead = {"pid": 999999, "host": "elsewhere", "command": "remap", "started": "2024-01-02T03:04"}
    (root / LOCK_NAME).write_text(json.dumps(dead))  # no process holds its flock
    assert [p for p, _ in iter_mask_files([root], glob="*")] == [
        str(p) for p in sorted(root.rglob("*.png"))
    ]  # the lock file is no mask
    result = cli("remap", "--preset", "cityscapes", "--in-place", str(root))
    assert result.exit_code == 0, result.output
    assert (
        f"labelfix: warning: {root}: took over the lock of a run that ended without releasing "
        "it (pid 999999 on elsewhere, `labelfix remap`, started 2024-01-02T03:04)"
    ) in result.stderr
    assert snapshot(root) == mapped(before)
    assert not (root / LOCK_NAME).exists()  # removed on a clean exit


def test_lock_is_released_when_the_run_fails(tmp_path):
    d = tmp_path / "d"
    with pytest.raises(RuntimeError), directory_lock(d, command="remap"):
        raise RuntimeError
    assert not (d / LOCK_NAME).exists()
    with (
        directory_lock(d, command="remap"),
        pytest.raises(DirectoryLocked, match="already"),
        directory_lock(d, command="remap"),
    ):
        pass


# ----------------------------------------------------------------------------- 2. the journal

KILL_AFTER_SECOND_RENAME = """
    import os, signal, sys
    import labelfix.io.atomic as atomic
    real = atomic.move_into_place
    renamed = []

    def rename_then_die(tmp, final, *, durable=False):
        real(tmp, final, durable=durable)
        if final.endswith(".png"):
            renamed.append(final)
            if len(renamed) == 2:  # after the rename, before the journal's done line
                os.kill(os.getpid(), signal.SIGKILL)

    atomic.move_into_place = rename_then_die
    from labelfix.cli import main
    main(["remap", "--preset", "cityscapes", "--in-place", "-j", "1", sys.argv[1]],
         prog_name="labelfix")
"""


def test_kill_between_rename_and_journal_does_not_map_a_file_twice(tmp_path):
    root = labelid_masks(tmp_path / "gtFine")
    before = snapshot(root)
    killed = python(KILL_AFTER_SECOND_RENAME, str(root))
    assert killed.wait(60) == -signal.SIGKILL
    lines = [json.loads(line) for line in (root / JOURNAL_NAME).read_text().splitlines()]
    assert [(e["file"], "intent" in e) for e in lines] == [
        ("a/000.png", True),
        ("a/000.png", False),
        ("a/002.png", True),  # renamed into place, never marked done
    ]
    now = snapshot(root)
    assert now["a/002.png"] == mapped(before)["a/002.png"]
    assert now["b/001.png"] == before["b/001.png"]

    again = cli("remap", "--preset", "cityscapes", "--in-place", str(root))
    assert again.exit_code == 0, again.output
    assert "Read 2 of 4 files: 2 changed, 0 unchanged, 0 failed, 2 skipped." in again.stdout
    assert "2 file(s), e.g. " in again.stdout and "(a run that did not finish)" in again.stdout
    assert "took over the lock of a run that ended without releasing it" in again.stderr
    assert snapshot(root) == mapped(before)  # each file mapped exactly once
    record = json.loads((root / RECORD_NAME).read_text())
    first, second = record["runs"]
    assert list(first["files"]) == ["a/000.png"]
    assert first["pending"] == {"a/002.png": lines[2]["intent"]}
    assert first["finished_by"] == second["id"] and second["complete"]
    third = cli("remap", "--preset", "cityscapes", "--in-place", str(root))
    assert third.exit_code == 1  # now the job is done: a third run would map them twice
    assert "4 file(s), e.g. " in third.stderr and "Use --force" in third.stderr


def test_rerun_after_a_kill_once_every_file_was_written_finishes_with_nothing_to_do(tmp_path):
    root = labelid_masks(tmp_path / "gtFine", count=2)
    before = snapshot(root)
    killed = python(KILL_AFTER_SECOND_RENAME, str(root))  # the second file is the last
    assert killed.wait(60) == -signal.SIGKILL
    again = cli("remap", "--preset", "cityscapes", "--in-place", str(root))
    assert again.exit_code == 0, again.output
    assert "Read 0 of 2 files: 0 changed, 0 unchanged, 0 failed, 2 skipped." in again.stdout
    assert snapshot(root) == mapped(before)


# ----------------------------------------------------------------------------- 3. temporaries


def test_stale_temporaries_of_killed_runs_are_removed_and_counted(tmp_path):
    root = labelid_masks(tmp_path / "gtFine")
    stale = [
        root / "a" / ".000.png.0123456789ab.labelfix-tmp",
        root / f".{RECORD_NAME}.abcdef012345.labelfix-tmp",
    ]
    kept = [
        root / "a" / ".000.png.xyz.labelfix-tmp",
        root / "a" / "notes.labelfix-tmp",
        root / "a" / ".000.png.0123456789AB.labelfix-tmp",
    ]
    for path in stale + kept:
        path.write_bytes(b"half")
    assert [is_temporary(p.name) for p in stale + kept] == [True, True, False, False, False]
    result = cli("remap", "--preset", "cityscapes", "--in-place", str(root))
    assert result.exit_code == 0, result.output
    assert "Removed 2 temporary file(s) left by an interrupted run." in result.stdout
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)  # only the exact pattern is removed
    as_json = cli("remap", "--ignore", "255", "--out", "0", str(root), "-o",
                  str(tmp_path / "o"), "--json")  # fmt: skip
    assert json.loads(as_json.stdout)["stale_temporaries_removed"] == 0


def test_stale_shard_temporaries_are_removed_by_to_tfrecord(tmp_path):
    images, masks = pairs(tmp_path)
    out = tmp_path / "tfr"
    out.mkdir()
    stale = out / ".train-00000-of-00000.tfrecord.0123456789ab.labelfix-tmp"
    stale.write_bytes(b"x" * 1000)
    result = cli("to-tfrecord", "--images", str(images), "--masks", str(masks), "-o", str(out),
                 "-n", "21", "--ignore", "255", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stale_temporaries_removed"] == 1
    assert sorted(p.name for p in out.glob("[!.]*")) == [
        "train-00000-of-00001.tfrecord",
        "train.labelfix.json",
    ]


# ----------------------------------------------------------------------------- 4. workers

SLOW_REMAP = """
    import sys, threading, time
    import labelfix.rewrite.run as run_module

    real = run_module.remap_file

    def slow(job, rewrite):
        time.sleep(0.5)
        return real(job, rewrite)

    if __name__ == "__main__":
        run_module.remap_file = slow
        if sys.argv[2] == "forkserver":  # a second thread makes labelfix use the forkserver
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        from labelfix.cli import main
        main(["remap", "--preset", "cityscapes", "-j", "2", sys.argv[1]], prog_name="labelfix")
"""


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            found[int(entry)] = (int(fields[1]), fields[0])
    return found


def _descendants(pid: int) -> set[int]:
    table = _processes()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _processes()
    return {p for p in pids if p in table and table[p][1] != "Z"}


@pytest.mark.parametrize("start", ["fork", "forkserver"])
def test_workers_exit_when_their_parent_is_killed(tmp_path, start):
    root = labelid_masks(tmp_path / "gtFine", count=24)
    script = tmp_path / "slow_remap.py"
    script.write_text(textwrap.dedent(SLOW_REMAP))
    parent = subprocess.Popen(
        [sys.executable, str(script), str(root), start],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    journal = tmp_path / "gtFine-remapped" / JOURNAL_NAME
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (journal.exists() and journal.read_bytes()):
            time.sleep(0.05)  # a worker has started on the files
        everyone = _descendants(parent.pid)
        assert len(everyone) >= 2, "the pool did not start"
        os.kill(parent.pid, signal.SIGKILL)  # the parent only, not its process group
        parent.wait(10)
        deadline = time.monotonic() + 5
        while _alive(everyone) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(everyone), f"left running after their parent died: {_alive(everyone)}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


def _die(item: int) -> int:
    os._exit(3)  # a worker killed mid-run (the OOM killer, say)


def test_a_worker_that_dies_is_one_labelfix_error_not_a_broken_pool_traceback():
    from labelfix.errors import LabelfixError
    from labelfix.parallel import ordered_map

    with pytest.raises(LabelfixError) as info:
        list(ordered_map(_die, range(16), jobs=2, chunksize=2, preload=()))
    assert str(info.value).startswith("worker processes stopped unexpectedly (A process in the ")
    assert str(info.value).endswith("run the same command again to finish (or with --jobs 1)")


# ----------------------------------------------------------------------------- 5. write errors


class _FullDisk:
    """A file object whose writes fail like a full disk (no file name, as the kernel says it)."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_names_the_final_path_and_a_rerun_finishes_the_job(tmp_path, monkeypatch):
    root = labelid_masks(tmp_path / "gtFine")
    before = snapshot(root)
    real_open = open
    calls = []

    def second_png_fails(path, mode="r", *args, **kwargs):
        name = os.path.basename(path)
        if "w" in mode and is_temporary(name) and ".png." in name:
            calls.append(path)
            if len(calls) == 2:
                return _FullDisk()
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", second_png_fails, raising=False)
    result = cli("remap", "--preset", "cityscapes", "--in-place", "-j", "1", str(root))
    assert result.exit_code == 1
    assert (
        f"labelfix: error: {root / 'a' / '002.png'}: cannot write (No space left on device); "
        "it was left as it was"
    ) in result.stderr
    assert "labelfix: error: 1 of 4 file(s) could not be remapped and were not written" in (
        result.stderr
    )
    assert TMP_SUFFIX not in result.output
    assert not leftovers(root)
    now = snapshot(root)
    assert now["a/002.png"] == before["a/002.png"]  # as it was
    assert now["a/000.png"] == mapped(before)["a/000.png"]

    monkeypatch.undo()
    again = cli("remap", "--preset", "cityscapes", "--in-place", str(root))
    assert again.exit_code == 0, again.output
    assert "Read 1 of 4 files: 1 changed, 0 unchanged, 0 failed, 3 skipped." in again.stdout
    assert snapshot(root) == mapped(before)


def test_write_errors_on_the_temporary_file_name_the_final_path(tmp_path, monkeypatch):
    final = tmp_path / "out" / "a.json"
    monkeypatch.setattr(atomic, "open", _FullDisk, raising=False)
    with pytest.raises(OSError) as info:
        write_atomic(final, b"{}")
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(final))
    assert info.value.strerror == "No space left on device"
    real_replace = os.replace

    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", src, None, dst)

    monkeypatch.undo()
    monkeypatch.setattr(atomic.os, "replace", read_only)
    with pytest.raises(OSError) as info:
        write_atomic(final, b"{}")
    assert (info.value.errno, info.value.filename) == (errno.EROFS, str(final))
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert not leftovers(tmp_path)


def test_shard_write_error_names_the_final_shard_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import labelfix.records.shards as shards

    images, masks = pairs(tmp_path)
    out = tmp_path / "tfr"

    def full_disk(fh, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(fh))

    monkeypatch.setattr(shards, "write_record", full_disk)
    args = ("to-tfrecord", "--images", str(images), "--masks", str(masks), "-o", str(out),
            "-n", "21", "--ignore", "255", "--num-shards", "2")  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 1
    assert result.stderr == (
        f"labelfix: error: {out / 'train-00000-of-00002.tfrecord'}: cannot write the shard "
        "(No space left on device); nothing was published\n"
    )
    assert not out.exists()  # no temporary, no lock, no manifest: not even the directory

    def replace_fails(src, dst):
        if dst.endswith(".tfrecord"):
            raise OSError(errno.ENOSPC, "No space left on device", src, None, dst)
        real_replace(src, dst)

    monkeypatch.undo()
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", replace_fails)
    result = cli(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"labelfix: error: {out / 'train-00000-of-00002.tfrecord'}: cannot write (No space "
        "left on device); the output has no manifest until a run finishes"
    )
    assert TMP_SUFFIX not in result.stderr
    monkeypatch.undo()
    assert cli(*args).exit_code == 0
    assert sorted(p.name for p in out.glob("[!.]*")) == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
        "train.labelfix.json",
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory_is_named(tmp_path):
    root = labelid_masks(tmp_path / "gtFine")
    os.chmod(root / "a", 0o555)
    os.chmod(root, 0o555)
    try:
        result = cli("remap", "--preset", "cityscapes", "--in-place", str(root))
    finally:
        os.chmod(root, 0o755)
        os.chmod(root / "a", 0o755)
    assert result.exit_code == 1
    assert result.stderr == (
        f"labelfix: error: {root}: cannot write into this directory (Permission denied)\n"
    )


# ----------------------------------------------------------------------------- 6. messages


def test_size_mismatch_alone_does_not_claim_bad_values(tmp_path):
    images, masks = pairs(tmp_path)
    save_png(masks / "0001.png", np.zeros((3, 3), np.uint8))  # its image is 6x8
    result = cli("to-tfrecord", "--images", str(images), "--masks", str(masks), "-o",
                 str(tmp_path / "tfr"), "-n", "21", "--ignore", "255")  # fmt: skip
    assert result.exit_code == 1
    assert f"{masks / '0001.png'}: size 3x3 does not match its image" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "labelfix: error: 1 of 3 pair(s) cannot be written; no shard was written"
    )
    bad = np.zeros((6, 8), np.uint8)
    bad[0, 0] = 37
    save_png(masks / "0002.png", bad)
    result = cli("to-tfrecord", "--images", str(images), "--masks", str(masks), "-o",
                 str(tmp_path / "tfr"), "-n", "21", "--ignore", "255")  # fmt: skip
    assert result.stderr.splitlines()[-1] == (
        "labelfix: error: 2 of 3 pair(s) cannot be written (expected 0..20 or ignore 255); "
        "no shard was written"
    )


# ----------------------------------------------------------------------------- fault injection


#: A row of fault_injection.py's table: the campaign, then its counts.
FAULT_ROW = re.compile(r"(?P<command>.+?)\s+(?P<counts>\d+\s+\d+\s+\d+/\d+(\s+\d+){7})")
FAULT_COLUMNS = (
    "kills", "mid_write", "reruns", "double_mapped", "partial", "temporaries", "bad_shards",
    "refused", "mixed", "lost",
)  # fmt: skip


def fault_injection(tmp_path: Path, *only: str) -> dict[str, dict[str, str]]:
    """Run ``fault_injection.py --quick --kills 3`` on the campaigns ``only``; its table rows."""
    script = ROOT / "benchmarks" / "fault_injection.py"
    args = [sys.executable, str(script), "--quick", "--kills", "3", "--workdir", str(tmp_path)]
    result = subprocess.run(
        [*args, *(f"--only={name}" for name in only)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        found = FAULT_ROW.fullmatch(line)
        if found:
            counts = found["counts"].split()
            rows[found["command"]] = dict(zip(FAULT_COLUMNS, counts, strict=True))
    assert len(rows) == len(only), result.stdout
    for row in rows.values():
        done, rounds = row["reruns"].split("/")
        assert done == rounds == "3"
        assert int(row["kills"]) >= 1
        for column in ("double_mapped", "partial", "temporaries", "bad_shards", "mixed", "lost"):
            assert row[column] == "0", (column, result.stdout)
    return rows


@pytest.mark.slow
def test_fault_injection_quick_kills_leave_no_double_mapped_partial_or_stale_file(tmp_path):
    rows = fault_injection(tmp_path, "remap", "to-tfrecord")
    assert set(rows) == {"remap --preset cityscapes --in-place", "to-tfrecord --preset cityscapes"}


@pytest.mark.slow
def test_fault_injection_races_of_two_runners_and_of_readers_lose_and_mix_nothing(tmp_path):
    """Issue 21: Beam and local to-tfrecord runs raced (and killed) into one output, readers
    racing in-place remaps: 0 mixed, 0 lost, 0 double-mapped, every rerun clean."""
    rows = fault_injection(tmp_path, "beam-and-local", "readers")
    assert set(rows) == {"to-tfrecord beam+local, one output", "readers during remap --in-place"}


@pytest.mark.slow
def test_stats_with_the_beam_runner_refuses_masks_left_half_rewritten(tmp_path):
    """Found by fault_injection.py --only readers --beam-readers (issue 21): after a killed
    `remap --in-place`, `labelfix stats DIR` refuses ("left half-rewritten", exit 1) but
    `labelfix stats DIR --runner beam` exits 0 with the values of old and new masks side by
    side (labelId 26 and its trainId 13 here); during a rewrite it reads the masks too."""
    pytest.importorskip("apache_beam")
    gt = tmp_path / "gt"
    save_png(gt / "0.png", np.array([[7, 26]], np.uint8))  # labelIds, not rewritten yet
    save_png(gt / "1.png", np.array([[0, 13]], np.uint8))  # rewritten: 7 -> 0, 26 -> 13
    # what a killed in-place run leaves: its mark, "running", and nobody holding the lock
    mark_in_place(str(gt), run="killed-run", command="remap")
    local = CliRunner().invoke(main, ["stats", str(gt), "--json"])
    assert local.exit_code == 1
    assert f"{gt}: left half-rewritten by an in-place run that did not finish" in local.stderr
    beam_args = ["--runner", "beam", "--", "--runner=DirectRunner", "--direct_num_workers=1"]
    beam = CliRunner().invoke(main, ["stats", str(gt), "--json", *beam_args])
    assert beam.exit_code == 1, beam.stdout
    assert f"{gt}: left half-rewritten by an in-place run that did not finish" in beam.stderr


# ----------------------------------------------------------------------------- helpers


def pairs(tmp_path: Path) -> tuple[Path, Path]:
    """Three 6x8 (image, mask) pairs."""
    images, masks = tmp_path / "img", tmp_path / "gt"
    images.mkdir()
    for i in range(3):
        save_png(masks / f"{i:04d}.png", np.full((6, 8), i, np.uint8))
        buf = io.BytesIO()
        Image.fromarray(np.full((6, 8, 3), 40 * i, np.uint8)).save(buf, format="JPEG")
        (images / f"{i:04d}.jpg").write_bytes(buf.getvalue())
    return images, masks


# ----------------------------------------------------------------------------- stale plans


def test_plan_made_before_another_run_finished_is_checked_again_under_the_lock(tmp_path):
    from labelfix.labels.presets import preset
    from labelfix.rewrite.plan import plan_remap
    from labelfix.rewrite.record import AlreadyRemapped
    from labelfix.rewrite.run import remap, run_remap

    root = labelid_masks(tmp_path / "gtFine")
    before = snapshot(root)
    stale = plan_remap([root], preset("cityscapes"), in_place=True)  # planned ...
    remap([root], preset("cityscapes"), in_place=True, jobs=1)  # ... another run does it all
    with pytest.raises(AlreadyRemapped, match=r"4 file\(s\), e\.g\. .* Use --force"):
        run_remap(stale, jobs=1)  # ... then this one gets the lock
    assert snapshot(root) == mapped(before)

    record = root / RECORD_NAME
    finished = record.read_text()
    data = json.loads(finished)
    data["runs"][0].update(complete=False, finished=None)  # as if still running at plan time
    record.write_text(json.dumps(data))
    resume = plan_remap([root], preset("cityscapes"), in_place=True)
    assert (resume.count, len(resume.skipped)) == (0, 4)  # nothing left: a resume
    record.write_text(finished)  # ... and it finished before this run got the lock
    with pytest.raises(AlreadyRemapped, match=r"4 file\(s\), e\.g\. .* Use --force"):
        run_remap(resume, jobs=1)
    assert snapshot(root) == mapped(before)


def test_ctrl_c_ends_the_workers_instead_of_waiting_for_them():
    """Regression (a hostile-user pass): Ctrl-C during a parallel remap hung the command in 1
    try of 8, its workers waiting for work nobody would send and the command waiting for them
    at exit. The command's Ctrl-C now ends them (``stop_workers``); they are forked while the
    pool holds signals back, and must still die of SIGTERM. In a fresh process: no leftovers."""
    script = textwrap.dedent(
        """
        import multiprocessing, time
        from labelfix import parallel
        # the first chunk returns at once, then both workers are busy for 60 s
        results = parallel.ordered_map(time.sleep, [0] * 4 + [60] * 12, jobs=2, chunksize=4)
        print(next(results), len(multiprocessing.active_children()))
        workers = list(multiprocessing.active_children())
        parallel.stop_workers()  # the caller still holds the generator, as Ctrl-C leaves it
        print(len(multiprocessing.active_children()), sorted({w.exitcode for w in workers}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["None 2", f"0 [{-signal.SIGTERM}]"]


def test_sigterm_between_fork_and_worker_initializer_still_ends_the_worker():
    """Regression (flaky under load): a worker is forked while the pool holds signals back
    (``deferred_signals``); a SIGTERM reaching it before its initializer reset the handlers was
    only noted, so the worker lived on and ``stop_workers`` waited for it (1 run in 30 with
    CPU burners beside it). Here every forked worker gets SIGTERM right after the fork, the
    widest that window can be: it must die, and the pool say so, instead of computing on."""
    script = textwrap.dedent(
        """
        import os, signal
        from labelfix import parallel
        from labelfix.errors import LabelfixError
        os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
        try:
            print(sum(parallel.ordered_map(abs, range(64), jobs=2, chunksize=4)))
        except LabelfixError as err:
            print("stopped:", str(err).split(" (")[0])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stopped: worker processes stopped unexpectedly\n"
