"""The one door (``labelfix.io.door``): every file a command writes goes through it, and it
refuses what must never be written. Issue 21: each command guarded its own writes, so a writer
without a guard (``show --each``, the Beam runner) reopened the hole.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from labelfix.cli import main
from labelfix.io.door import Door, Outlet, Refused, Rules, StagedFile, is_reserved
from labelfix.io.ledger import LEDGER_NAME, Ledger, LedgerDamaged
from labelfix.io.masks import read_mask

from conftest import save_png, voc_mask

PACKAGE = Path(__file__).resolve().parents[1] / "labelfix"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def user_files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` a user sees (labelfix's hidden bookkeeping aside)."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    }


# ----------------------------------------------------------------------------- no other writer


#: Calls outside labelfix/io/ that write, each with why it is allowed (none opens a file of its
#: own choosing: they write in memory, or into a path or directory the door gave).
ALLOWED_WRITES = {
    ("training/loop.py", "model.save(staged)"): "a path from Outlet.staged",
    ("training/loop.py", "outputs.checkpoints.save("): "Checkpoints.save, below",
    ("training/checkpoints.py", "self.manager.save(checkpoint_number=epoch)"): "Outlet.directory",
    ("records/shards.py", "gzip.GzipFile(fileobj=raw"): "compresses into an Outlet.create file",
    ("engines/common.py", "gzip.GzipFile(fileobj=sink"): "compresses into an open_private file",
    ("training/checkpoints.py", "tf.train.CheckpointManager"): "in an Outlet.directory",
    ("training/summaries.py", "tf.summary.create_file_writer"): "in an Outlet.directory",
    ("training/evaluate.py", 'fig.savefig(buffer, format="png")'): "into memory",
    ("viz/report.py", 'fig.savefig(buf, format="png")'): "into memory",
    ("viz/sheet.py", 'picture.save(buf, format="PNG", optimize=True)'): "into memory",
    ("cli/_common.py", 'open(os.devnull, "w")'): "TensorFlow's start-up noise to /dev/null",
}
#: Calls that write, create or remove files: any ``X.save(...)`` and the like, and the
#: functions of the modules that do it (``os.replace``, ``shutil.copy``, ``np.save``, ...).
WRITING_METHODS = {
    "save", "savez", "savez_compressed", "savefig", "write_text", "write_bytes", "mkdir",
    "touch", "unlink", "rmdir", "symlink_to", "hardlink_to", "write_file",
}  # fmt: skip
WRITING_MODULES = {"os", "shutil", "tempfile", "np", "numpy", "fs", "gzip", "zipfile", "tarfile"}
WRITING_FUNCTIONS = {
    "replace", "rename", "renames", "remove", "removedirs", "unlink", "rmdir", "rmtree",
    "mkdir", "makedirs", "copy", "copy2", "copyfile", "copytree", "move", "symlink", "link",
    "mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryDirectory", "save", "savez",
    "GzipFile", "ZipFile",
}  # fmt: skip
#: Writers that TensorFlow opens itself, whatever module they are reached through.
TENSORFLOW_WRITERS = {"CheckpointManager", "create_file_writer", "TFRecordWriter"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return getattr(node, "id", "?")


def _writes(tree: ast.AST, source: str):
    """``(line, call)`` of each call in ``tree`` that writes, creates or removes a file."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        base, _, last = _dotted(node.func).rpartition(".")
        if last in ("open", "GzipFile"):
            mode = node.args[1] if len(node.args) > 1 else None
            mode = next((k.value for k in node.keywords if k.arg in ("mode", "flags")), mode)
            text = ast.get_source_segment(source, mode) if mode is not None else ""
            if not any(flag in (text or "") for flag in ("w", "a", "x", "+", "O_WR", "O_CREAT")):
                continue
        elif not (
            (base and last in WRITING_METHODS)
            or (base.split(".")[0] in WRITING_MODULES and last in WRITING_FUNCTIONS)
            or last in TENSORFLOW_WRITERS
        ):
            continue
        yield node.lineno, ast.get_source_segment(source, node)


def test_no_module_outside_the_door_writes_a_file():
    """Issue 21: "No other module opens a file for writing; a test enforces that". Every call
    that writes, creates or removes a file outside ``labelfix/io/`` is one of the few listed
    above, each writing into memory or into what the door gave."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("io/"):
            continue
        source = path.read_text()
        for line, call in _writes(ast.parse(source), source):
            if not any(
                where == relative and call.startswith(start) for where, start in ALLOWED_WRITES
            ):
                found.append(f"labelfix/{relative}:{line}: {call.splitlines()[0]}")
    assert found == []


def test_the_scan_finds_a_write_that_bypasses_the_door():
    source = 'import numpy as np\nwith open(p, "wb") as fh:\n    np.save(fh, a)\nos.replace(a, b)\n'
    calls = [call for _, call in sorted(_writes(ast.parse(source), source))]
    assert calls == ['open(p, "wb")', "np.save(fh, a)", "os.replace(a, b)"]


# ----------------------------------------------------------------------------- rule 1: inputs


def test_an_input_its_directory_and_links_to_them_are_refused(tmp_path: Path):
    masks = tmp_path / "masks"
    mask = save_png(masks / "a.png", voc_mask())
    (tmp_path / "alias").symlink_to(masks)
    (tmp_path / "link.png").symlink_to(mask)
    rules = Rules.of("show", inputs=[masks])
    with Door(rules) as door:
        with pytest.raises(Refused, match=rf"^{masks} is the input {masks}, which this"):
            door.outlet(masks)
        with pytest.raises(Refused, match=r"inside the input .*masks"):
            door.outlet(masks / "pictures")
        with pytest.raises(Refused, match=r"alias is the input .*masks \(through a symbolic"):
            door.outlet(tmp_path / "alias")
        out = door.outlet(tmp_path)
        with pytest.raises(Refused, match=r"link.png is inside the input .*masks \(through a sym"):
            out.write(str(tmp_path / "link.png"), b"x")
    assert read_mask(mask).labels.tolist() == voc_mask().tolist()


def test_in_place_writes_only_over_its_inputs(tmp_path: Path):
    masks = tmp_path / "masks"
    save_png(masks / "a.png", voc_mask())
    with Door(Rules.of("remap", inputs=[masks], in_place=True)) as door:
        out = door.outlet(masks)
        out.write(str(masks / "a.png"), b"new")  # the explicit in-place rewrite
        with pytest.raises(Refused, match="an in-place run writes only over its inputs"):
            door.outlet(tmp_path).write(str(tmp_path / "b.png"), b"x")
    assert (masks / "a.png").read_bytes() == b"new"


# ----------------------------------------------------------------------------- rule 2: owner


def test_a_file_is_replaced_only_while_it_holds_what_labelfix_wrote(tmp_path: Path):
    out = tmp_path / "out"
    with Door(Rules.of("show")) as door:
        door.outlet(out).write(str(out / "a.png"), b"first")
    with Door(Rules.of("show")) as door:  # labelfix's, unchanged: replaced
        door.outlet(out).write(str(out / "a.png"), b"second")
    (out / "a.png").write_bytes(b"edited by hand")
    (out / "mine.png").write_bytes(b"the user's")
    with Door(Rules.of("show")) as door:
        outlet = door.outlet(out)
        with pytest.raises(Refused, match=r"a.png was changed since labelfix wrote it"):
            outlet.write(str(out / "a.png"), b"third")
        with pytest.raises(Refused, match=r"mine.png already exists and labelfix did not write"):
            outlet.write(str(out / "mine.png"), b"third")
        with pytest.raises(Refused, match="already exists and labelfix did not write"):
            outlet.remove(str(out / "mine.png"))
    assert user_files(out) == {"a.png": b"edited by hand", "mine.png": b"the user's"}


def test_a_file_rewritten_in_place_is_the_users_again(tmp_path: Path):
    """Issue 21: ``remap dA --in-place`` then ``remap dB -o dA`` replaced all of dA's masks with
    dB's, exit 0, with only a note: an in-place rewrite made them "an earlier run's output"."""
    save_png(tmp_path / "dA" / "a.png", np.full((4, 4), 255, np.uint8))
    save_png(tmp_path / "dB" / "a.png", np.full((4, 4), 255, np.uint8))
    first = cli("remap", "--ignore", "255", "--out", "0", tmp_path / "dB", "-o", tmp_path / "dA")
    assert first.exit_code == 2
    assert f"{tmp_path / 'dA' / 'a.png'} already exists and labelfix did not write it" in (
        first.stderr
    )
    # dA written by labelfix (-o), then rewritten in place: the user's data from then on
    save_png(tmp_path / "src" / "a.png", np.full((4, 4), 255, np.uint8))
    assert cli("remap", "--ignore", "255", "--out", "7", tmp_path / "src", "-o",
               tmp_path / "dC").exit_code == 0  # fmt: skip
    assert cli("remap", "--map", "7:3", "--in-place", tmp_path / "dC").exit_code == 0
    before = user_files(tmp_path / "dC")
    again = cli("remap", "--ignore", "255", "--out", "0", tmp_path / "dB", "-o", tmp_path / "dC")
    assert again.exit_code == 2
    assert "dC/a.png already exists and labelfix did not write it" in again.stderr
    assert user_files(tmp_path / "dC") == before
    assert read_mask(tmp_path / "dC" / "a.png").labels.max() == 3


def test_ledger_lines_cut_short_are_skipped_garbage_is_damage(tmp_path: Path):
    ledger = Ledger(str(tmp_path))
    ledger.record("a.png", "0" * 64)
    with open(tmp_path / LEDGER_NAME, "a") as fh:
        fh.write('{"file": "b.png", "sha2')  # a crash in the middle of a line
    assert Ledger(str(tmp_path)).digests("a.png") == ("0" * 64,)
    with open(tmp_path / LEDGER_NAME, "a") as fh:
        fh.write('\n{"file": "c.png", "sha256": "' + "1" * 64 + '"}\n')
    with pytest.raises(LedgerDamaged, match=rf"{tmp_path / LEDGER_NAME}: damaged at line 3"):
        Ledger(str(tmp_path)).digests("a.png")


def test_reserved_names_are_labelfix_s_own():
    assert [is_reserved(n) for n in (".labelfix-written", ".labelfix.lock", ".x.labelfix-tmp")]
    assert not any(is_reserved(n) for n in ("labelfix.png", "a.png", ".hidden.png"))


# ----------------------------------------------------------------------------- the commands


def test_show_each_into_its_own_input_directory_is_refused(tmp_path: Path):
    """Issue 21: ``show --each DIR`` over its own input directory turned every mask into an
    RGB picture, exit 0."""
    masks = tmp_path / "masks"
    save_png(masks / "a.png", voc_mask())
    save_png(masks / "b.png", voc_mask())
    before = user_files(masks)
    result = cli("show", masks, "--each", masks)
    assert result.exit_code == 2
    assert f"labelfix: error: {masks} is the input {masks}, which this `labelfix show`" in (
        result.stderr
    )
    assert cli("show", masks, "--each", masks / "pics").exit_code == 2  # inside it
    assert user_files(masks) == before
    ok = cli("show", masks, "--each", tmp_path / "pics")
    assert ok.exit_code == 0, ok.output
    assert sorted(user_files(tmp_path / "pics")) == ["a.png", "b.png"]


def test_a_beam_run_holds_the_lock_for_the_life_of_its_pipeline(tmp_path: Path, monkeypatch):
    """Issue 21: a Beam ``to-tfrecord`` and a local one into the same output both exited 0 and
    one silently replaced the other's shards. The launching process now holds the output's
    lock while the pipeline runs: a local run started meanwhile is refused."""
    pytest.importorskip("apache_beam")
    import subprocess
    import sys

    from labelfix.engines import beam
    from labelfix.labels.labelmap import LabelMap

    for i in range(3):
        save_png(tmp_path / "img" / f"{i}.png", np.full((8, 10, 3), i, np.uint8))
        save_png(tmp_path / "gt" / f"{i}.png", voc_mask())
    out = tmp_path / "tfr"
    local = [
        sys.executable,
        "-m",
        "labelfix",
        "to-tfrecord",
        "--images",
        str(tmp_path / "img"),
        "--masks",
        str(tmp_path / "gt"),
        "-o",
        str(out),
        "-n",
        "21",
        "--ignore",
        "255",
    ]
    refused = []
    real = beam.BeamEngine.map

    def local_run_meanwhile(self, *args, **kwargs):
        if not refused:  # while the first pipeline is about to run
            refused.append(subprocess.run(local, capture_output=True, text=True, timeout=120))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(beam.BeamEngine, "map", local_run_meanwhile)
    result = beam.write_dataset_beam(images=tmp_path / "img", masks=tmp_path / "gt", output=out,
                                     num_classes=21, label_map=LabelMap(ignore=(255,)),
                                     num_shards=1)  # fmt: skip
    (done,) = refused
    assert done.returncode == 1
    assert f"labelfix: error: {out}: another labelfix run is writing here (pid {os.getpid()}" in (
        done.stderr
    )
    assert result.num_records == 3
    assert sorted(user_files(out)) == ["train-00000-of-00001.tfrecord", "train.labelfix.json"]


def test_every_writer_names_the_final_path_when_the_disk_is_full(tmp_path: Path, monkeypatch):
    """Issue 21: "No space left on device" named no path."""
    import errno

    import labelfix.io.door as door_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "out"
    with Door(Rules.of("show")) as door:
        outlet = door.outlet(out)
        staged = outlet.create(str(out / "rows.csv"))
        monkeypatch.setattr(staged.fh, "write", full)
        with pytest.raises(OSError) as info:
            staged.write(b"row\n")
        staged.discard()
        assert info.value.filename == str(out / "rows.csv")
        monkeypatch.setattr(door_module.Ledger, "_append", lambda self, entry: full())
        with pytest.raises(OSError, match="No space left"):
            outlet.write(str(out / "a.png"), b"x")
    assert isinstance(staged, StagedFile) and not list(out.glob("*.labelfix-tmp"))


def test_an_empty_output_directory_is_not_left_by_a_refused_run(tmp_path: Path):
    with pytest.raises(Refused), Door(Rules.of("show")) as door:
        door.outlet(tmp_path / "new")
        raise Refused("stop")
    assert not (tmp_path / "new").exists()


def test_outlets_travel_to_worker_processes_without_their_caches(tmp_path: Path):
    import pickle

    rules = Rules.of("remap", inputs=[tmp_path])
    outlet = Outlet(str(tmp_path.parent / "o"), rules, run="r1")
    assert not outlet.owns(str(tmp_path.parent / "o" / "a.png"))  # fills a cache
    assert outlet._ledgers
    copy = pickle.loads(pickle.dumps(outlet))
    assert (copy.root, copy.rules, copy.run) == (outlet.root, rules, "r1")
    assert copy._ledgers == {}
