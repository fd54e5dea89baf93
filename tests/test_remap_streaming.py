"""`remap` at scale: the plan lists the files again instead of holding them, the record is
folded a line at a time, and the checks that used to compare every file with every other one
are made per input, per directory and per link.

Regressions of issue 15: on 10,000 masks the command's memory grew 1.24 KB per mask (the plan
held every file, and the record of the run was built in memory at the end), and its forked
workers inherited that listing.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from labelfix.cli import main
from labelfix.io.door import Outlet, Refused, Rules
from labelfix.io.masks import read_mask
from labelfix.labels.labelmap import LabelMap
from labelfix.labels.presets import preset
from labelfix.rewrite.plan import RemapUsageError, plan_remap
from labelfix.rewrite.record import JOURNAL_NAME, RECORD_NAME, finish_run, read_runs
from labelfix.rewrite.run import remap

from conftest import save_png

VOID_TO_ZERO = LabelMap(ignore=(255,), out=0)


def tree(root: Path, n: int, *, per_directory: int = 50) -> Path:
    """``n`` small masks (hard links of one file), ``per_directory`` to a directory."""
    first = save_png(root / "blob.png", np.array([[7, 255], [26, 7]], np.uint8))
    for i in range(n):
        path = root / "in" / f"d{i // per_directory:03d}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(first, path)
    return root / "in"


def peak_bytes(func, *args, **kwargs) -> int:
    tracemalloc.start()
    try:
        func(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_plan_does_not_grow_with_the_number_of_files(tmp_path: Path):
    small = tree(tmp_path / "s", 100)
    large = tree(tmp_path / "l", 800)
    cityscapes = preset("cityscapes")  # not idempotent: the records are checked too
    plan_remap([small], cityscapes, output=tmp_path / "o")  # warm caches and imports
    grew = peak_bytes(plan_remap, [large], cityscapes, output=tmp_path / "o") - peak_bytes(
        plan_remap, [small], cityscapes, output=tmp_path / "o"
    )
    assert grew < 20_000  # it held ~1 KB a file, 700 KB here
    plan = plan_remap([large], cityscapes, output=tmp_path / "o")
    assert plan.count == 800 and len(plan.directories) == 16
    jobs = list(plan.jobs())  # listed again, in order
    assert [j.relpath for j in jobs[:2]] == [os.path.join("d000", f"0000{i}.png") for i in (0, 1)]
    assert jobs[-1].destination == str(tmp_path / "o" / "d015" / "00799.png")


def test_the_record_is_folded_a_line_at_a_time(tmp_path: Path):
    """finish_run: an interrupted run's lines fold into it; this run's files stream into the
    record; an intent without its done line stays pending; the journal goes."""
    runs = [
        {"id": "A", "complete": False, "files": ["x.png"]},
        {"id": "B", "complete": False, "files": []},
    ]
    (tmp_path / RECORD_NAME).write_text(json.dumps({"labelfix_remap": 1, "runs": runs}))
    lines = [{"run": "A", "file": "y.png"}]
    for i in range(20_000):
        lines += [{"run": "B", "file": f"{i}.png", "intent": "d"}, {"run": "B", "file": f"{i}.png"}]
    lines.append({"run": "B", "file": "failed.png", "intent": "abc"})  # renamed? unknown
    (tmp_path / JOURNAL_NAME).write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"ru')
    outlet = Outlet(str(tmp_path), Rules.of("remap"), run="B")
    peak = peak_bytes(finish_run, outlet, "B", when="then", resumed={"A"})
    assert peak < 300_000  # the journal is 1.3 MB; its 20,000 names alone would take ~1.5 MB
    assert not (tmp_path / JOURNAL_NAME).exists()
    a, b = json.loads((tmp_path / RECORD_NAME).read_text())["runs"]
    assert a == {
        "id": "A",
        "complete": False,
        "files": {"x.png": None, "y.png": None},  # format 1 and done lines without digests
        "finished_by": "B",
    }
    assert (b["complete"], b["finished"]) == (True, "then")
    assert list(b["files"]) == [f"{i}.png" for i in range(20_000)]
    assert b["pending"] == {"failed.png": "abc"}
    assert [r["id"] for r in read_runs(tmp_path)] == ["A", "B"]


def test_a_run_records_every_file_and_maps_it_once(tmp_path: Path):
    root = tree(tmp_path, 120)
    result = remap([root], preset("cityscapes"), output=tmp_path / "o", jobs=2)
    assert (result.files, result.written) == (120, 120)
    (run,) = read_runs(tmp_path / "o")
    assert sorted(run["files"]) == sorted(
        os.path.relpath(p, root) for p in map(str, root.rglob("*.png"))
    )
    assert run["complete"] and "pending" not in run
    train_ids = read_mask(tmp_path / "o" / "d002" / "00119.png").array
    assert train_ids.tolist() == [[0, 255], [13, 0]]  # ground 7 -> 0, car 26 -> 13
    with pytest.raises(Exception, match="already remapped"):  # recorded: never twice
        plan_remap([tmp_path / "o"], preset("cityscapes"), in_place=True)


def test_an_input_inside_another_input_is_given_twice(tmp_path: Path):
    root = tree(tmp_path, 60)
    with pytest.raises(RemapUsageError, match=r"d001 is given twice \(also inside .*in\)"):
        plan_remap([root, root / "d001"], VOID_TO_ZERO, output=tmp_path / "o")
    with pytest.raises(RemapUsageError, match=r"00003.png is given twice \(also inside"):
        plan_remap([root / "d000" / "00003.png", root], VOID_TO_ZERO, output=tmp_path / "o")
    # a file the directory's listing leaves out (another suffix for --glob) is no duplicate
    plan = plan_remap(
        [root, root / "d000" / "00003.png"], VOID_TO_ZERO, output=tmp_path / "o", glob="*7.png"
    )
    assert plan.count == 6 + 1


def test_two_inputs_of_one_name_into_one_output_are_refused(tmp_path: Path):
    for side in ("a", "b"):
        save_png(tmp_path / side / "masks" / "1.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(RemapUsageError, match=r"a/masks and .*b/masks both go to"):
        plan_remap(
            [tmp_path / "a" / "masks", tmp_path / "b" / "masks"],
            VOID_TO_ZERO,
            output=tmp_path / "o",
        )
    with pytest.raises(RemapUsageError, match=r"1.png and .*1.png both go to"):
        plan_remap(
            [tmp_path / "a" / "masks" / "1.png", tmp_path / "b" / "masks" / "1.png"],
            VOID_TO_ZERO,
            output=tmp_path / "o",
        )
    np.save(tmp_path / "a" / "masks" / "1.npy", np.zeros((2, 2), np.uint8))
    with pytest.raises(RemapUsageError, match=r"1.npy and .*1.png both go to .*1.npy"):
        plan_remap([tmp_path / "a" / "masks"], LabelMap(ignore=(255,), out=-1))


def test_a_link_to_another_input_is_given_twice_in_place(tmp_path: Path):
    """In place, a link and the file it points to would be mapped twice: refused, whichever of
    the two is listed first."""
    real = save_png(tmp_path / "in" / "b.png", np.array([[7, 26]], np.uint8))
    (tmp_path / "in" / "a.png").symlink_to(real)
    (tmp_path / "in" / "c.png").symlink_to(real)
    with pytest.raises(RemapUsageError, match=r"c.png is given twice \(also as .*a.png\)"):
        plan_remap([tmp_path / "in"], preset("cityscapes"), in_place=True)
    (tmp_path / "in" / "c.png").unlink()
    with pytest.raises(RemapUsageError, match=r"a.png is given twice \(also as .*b.png\)"):
        plan_remap([tmp_path / "in"], preset("cityscapes"), in_place=True)
    result = CliRunner().invoke(
        main, ["remap", "--preset", "cityscapes", "--in-place", str(tmp_path / "in")]
    )
    assert result.exit_code == 2 and "is given twice" in result.stderr
    assert read_mask(real).array.tolist() == [[7, 26]]


def test_an_output_inside_another_input_is_refused_not_mapped_twice(tmp_path: Path, monkeypatch):
    """Regression (a hostile-user pass): once the run listed its inputs as it went,
    ``remap --preset cityscapes gt gt-remapped`` read the outputs it wrote into
    ``gt-remapped/`` (an input) as inputs and mapped 1,977 masks twice (ground 7 -> 0 -> 255
    wrapped to 4 for 26), exit 0; ``remap q/a -o q`` wrote ``q/a/z/...`` for ``q/a/a/z/...``."""
    car = np.full((2, 2), 26, np.uint8)
    for i in range(30):
        save_png(tmp_path / "gt" / f"{i}.png", car)
    save_png(tmp_path / "gt-remapped" / "extra.png", car)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["remap", "--preset", "cityscapes", "gt", "gt-remapped"])
    assert result.exit_code == 2
    assert (
        "gt-remapped is the input gt-remapped, which this `labelfix remap` reads" in result.stderr
    )
    assert sorted(os.listdir("gt-remapped")) == ["extra.png"]
    assert not os.path.exists("gt-remapped-remapped")

    save_png(tmp_path / "q" / "a" / "a" / "z" / "f.png", car)
    save_png(tmp_path / "q" / "a" / "z" / "g.png", car)
    with pytest.raises(Refused, match=r"q/a/z/f.png is inside the input .*q/a, "):
        plan_remap([tmp_path / "q" / "a"], preset("cityscapes"), output=tmp_path / "q")
    # beside the input, not inside it: `remap data/gtFine -o data`
    plan = plan_remap([tmp_path / "q" / "a"], preset("cityscapes"), output=tmp_path / "q" / "b")
    assert plan.count == 2
    assert read_mask(tmp_path / "q" / "a" / "z" / "g.png").array.tolist() == car.tolist()
