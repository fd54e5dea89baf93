"""Readers notice inputs in an unsafe state (``labelfix.io.inputs``). Issue 21: ``to-tfrecord``
run during a ``remap --in-place`` wrote records mixing old and new masks, exit 0; after a
killed in-place run ``validate`` said OK and ``to-tfrecord`` packed old and new masks.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from labelfix.cli import main
from labelfix.io.inputs import InputsBusy, watch_inputs
from labelfix.io.marks import IN_PLACE_NAME

from conftest import save_png

LABEL_IDS = np.array([[7, 8], [26, 0]], np.uint8)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def dataset(root: Path, count: int = 6) -> tuple[Path, Path]:
    for i in range(count):
        save_png(root / "gt" / "a" / f"{i}.png", LABEL_IDS)
        save_png(root / "img" / "a" / f"{i}.png", np.full((2, 2, 3), i, np.uint8))
    return root / "img", root / "gt"


READERS = [
    ("stats", ["stats", "{gt}"]),
    ("validate", ["validate", "{gt}", "-n", "34"]),
    ("show", ["show", "{gt}", "-o", "{tmp}/sheet.png"]),
    ("to-tfrecord", ["to-tfrecord", "--images", "{img}", "--masks", "{gt}", "-o", "{tmp}/tfr",
                     "--preset", "cityscapes"]),
    ("doctor", ["doctor", "{tmp}"]),
]  # fmt: skip


def reader_args(args: list[str], tmp: Path, img: Path, gt: Path) -> list[str]:
    return [a.format(tmp=tmp, img=img, gt=gt) for a in args]


KILLED_IN_PLACE = textwrap.dedent(
    """
    import os, signal, sys
    import labelfix.io.atomic as atomic
    real, renamed = atomic.move_into_place, []

    def rename_then_die(tmp, final, *, durable=False):
        real(tmp, final, durable=durable)
        if final.endswith(".png"):
            renamed.append(final)
            if len(renamed) == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    atomic.move_into_place = rename_then_die
    from labelfix.cli import main
    main(["remap", "--preset", "cityscapes", "--in-place", "-j", "1", sys.argv[1]],
         prog_name="labelfix")
    """
)


HOLD_DOOR = textwrap.dedent(
    """
    import sys
    from labelfix.io.door import Door, Rules
    directory, in_place = sys.argv[1], sys.argv[2] == "1"
    with Door(Rules.of("remap", inputs=[directory] if in_place else [], in_place=in_place)) as door:
        door.outlet(directory)
        door.start()
        print("holding", flush=True)
        sys.stdin.read()  # until the test closes it
    """
)


class OtherRun:
    """Another process writing into (or, ``in_place``, rewriting) ``directory`` until closed."""

    def __init__(self, directory: Path, *, in_place: bool):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_DOOR, str(directory), "1" if in_place else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout.readline().strip() == "holding"

    def __enter__(self) -> OtherRun:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)
        self.proc.stdout.close()


@pytest.fixture
def half_rewritten(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset whose masks an in-place remap (killed) left half rewritten."""
    img, gt = dataset(tmp_path)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_IN_PLACE, str(gt)], capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    return img, gt


@pytest.mark.parametrize(("name", "args"), READERS)
def test_a_half_rewritten_directory_is_refused_by_every_reader(
    half_rewritten, tmp_path, name, args
):
    img, gt = half_rewritten
    result = cli(*reader_args(args, tmp_path, img, gt))
    assert result.exit_code == 1, result.output
    assert f"labelfix: error: {gt}: left half-rewritten by an in-place run that did not finish" in (
        result.stderr
    )
    assert "labelfix remap --preset cityscapes --in-place -j 1" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "tfr").exists() and not (tmp_path / "sheet.png").exists()


def test_finishing_the_interrupted_run_lets_the_readers_in(half_rewritten, tmp_path):
    _img, gt = half_rewritten
    again = cli("remap", "--preset", "cityscapes", "--in-place", gt)
    assert again.exit_code == 0, again.output
    assert json.loads((gt / IN_PLACE_NAME).read_text())["state"] == "finished"
    result = cli("validate", gt, "-n", "19", "--ignore", "255")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("name", "args"), READERS)
def test_a_directory_being_rewritten_now_is_refused(tmp_path, name, args):
    img, gt = dataset(tmp_path)
    with OtherRun(gt, in_place=True) as other:  # between its first and last rename
        result = cli(*reader_args(args, tmp_path, img, gt))
    assert result.exit_code == 1, result.output
    assert f"{gt}: being rewritten in place now (pid {other.proc.pid}" in result.stderr
    assert "wait for it to finish, then run this command again" in result.stderr


def test_a_subdirectory_or_a_parent_being_rewritten_counts_too(tmp_path):
    img, gt = dataset(tmp_path)
    with OtherRun(gt, in_place=True):
        with pytest.raises(InputsBusy, match="being rewritten in place now"):
            watch_inputs([gt / "a"])  # inside the directory being rewritten
        with pytest.raises(InputsBusy, match="being rewritten in place now"):
            watch_inputs([tmp_path])  # around it
        watch_inputs([img])  # beside it: fine


def test_an_in_place_run_during_the_read_stops_the_publish(tmp_path, monkeypatch):
    """The start check cannot see a rewrite that starts after it: the second look, before
    anything is published, does."""
    img, gt = dataset(tmp_path)
    from labelfix.records import write as write_module

    real = write_module.prepare_pair
    remapped = []

    def remap_meanwhile(pair, plan):
        if not remapped:
            remapped.append(cli("remap", "--preset", "cityscapes", "--in-place", "-j", "1", gt))
        return real(pair, plan)

    monkeypatch.setattr(write_module, "prepare_pair", remap_meanwhile)
    result = cli("to-tfrecord", "--images", img, "--masks", gt, "-o", tmp_path / "tfr",
                 "-n", "34", "--ignore", "255", "-j", "1")  # fmt: skip
    assert remapped[0].exit_code == 0, remapped[0].output
    assert result.exit_code == 1
    assert f"{gt}: rewritten in place while this command read it" in result.stderr
    assert "run this command again" in result.stderr
    assert not (tmp_path / "tfr").exists()


def test_a_run_writing_into_a_directory_read_is_refused(tmp_path):
    _img, gt = dataset(tmp_path)
    with OtherRun(gt / "a", in_place=False):  # another run writes its outputs among these masks
        result = cli("stats", gt)
    assert result.exit_code == 1
    assert f"{gt / 'a'}: another labelfix run is writing into it now" in result.stderr


def test_a_damaged_in_place_mark_is_named(tmp_path):
    _img, gt = dataset(tmp_path)
    (gt / IN_PLACE_NAME).write_text('{"state": "runn')
    result = cli("validate", gt, "-n", "34")
    assert result.exit_code == 1
    assert f"{gt}: its in-place mark {gt / IN_PLACE_NAME} is damaged" in result.stderr
