"""Regression tests for what a hostile-user pass found in ``to-tfrecord`` and ``verify``: shards
of someone else deleted, an interrupted rerun that lost the old manifest, FIFOs that hang,
tracebacks from hand-edited manifests, silently wrong 0/255 binary records, an image silently
picked among two with one stem, and absolute paths in verify's messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from labelfix.cli import main
from labelfix.errors import LabelfixError
from labelfix.io import door as door_module
from labelfix.io import fs
from labelfix.io.atomic import deferred_signals
from labelfix.io.pairing import AmbiguousImage, DatasetProblems, find_image, find_images
from labelfix.labels.labelmap import LabelMap
from labelfix.records.manifest import read_manifest
from labelfix.records.verify import verify_dataset
from labelfix.records.write import split_warnings, write_dataset

# ----------------------------------------------------------------------------- data


def voc_mask(cls: int = 15) -> np.ndarray:
    """6x8: background 0 (28 px), a 255 ring (16 px), a class ``cls`` block (4 px)."""
    m = np.zeros((6, 8), np.uint8)
    m[1:5, 1:5] = 255
    m[2:4, 2:4] = cls
    return m


def make_pairs(root: Path, masks: dict[str, np.ndarray], ext: str = ".jpg") -> tuple[Path, Path]:
    """``root/img/ID.jpg`` + ``root/msk/ID.png`` for each ``id -> mask``: (images, masks)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "msk").mkdir(parents=True, exist_ok=True)
    for i, (sid, mask) in enumerate(masks.items()):
        Image.fromarray(mask).save(root / "msk" / f"{sid}.png")
        pixels = np.random.default_rng(i).integers(0, 255, (*mask.shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img" / f"{sid}{ext}")
    return root / "img", root / "msk"


@pytest.fixture
def pairs(tmp_path: Path) -> tuple[Path, Path]:
    return make_pairs(tmp_path, {f"{i:03d}": voc_mask(cls=1 + i) for i in range(6)})


def write(images: Path, masks: Path, output: Path, **kwargs):
    kwargs.setdefault("num_classes", 21)
    kwargs.setdefault("label_map", LabelMap(ignore=(255,)))
    return write_dataset(images=images, masks=masks, output=output, jobs=1, **kwargs)


def snapshot(directory: Path) -> dict[str, bytes]:
    """The files a user sees (labelfix's own hidden bookkeeping aside)."""
    return {p.name: p.read_bytes() for p in sorted(directory.glob("[!.]*"))}


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def run_process(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, so that a hang fails the test instead of stopping the suite."""
    return subprocess.run(
        [sys.executable, "-m", "labelfix", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------------------- 1. foreign shards


def test_shards_no_manifest_lists_are_never_deleted_found_by_hostile_pass(pairs, tmp_path):
    """Found by a hostile-user pass: a rerun deleted ``train-00000-of-00004.tfrecord`` that no
    labelfix run wrote (someone else's records, no manifest). Now the run refuses before
    writing anything, names the file, and leaves it alone."""
    images, masks = pairs
    out = tmp_path / "tw2"
    out.mkdir()
    (out / "train-00000-of-00004.tfrecord").write_bytes(b"precious")
    args = ("to-tfrecord", "--images", images, "--masks", masks, "-o", out, "-n", "21",
            "--ignore", "255", "--num-shards", "2", "-j", "1")  # fmt: skip
    result = run(*args)
    assert result.exit_code == 1
    assert result.stderr == (
        f"labelfix: error: {out / 'train-00000-of-00004.tfrecord'}: a train shard that labelfix "
        "did not write, or that changed since (another tool's records?); a train-* glob would "
        "read it with the new shards: move it away, or write to another directory; nothing was "
        "written\n"
    )
    assert snapshot(out) == {"train-00000-of-00004.tfrecord": b"precious"}
    # another split's files do not stop a run, and are left alone too
    (out / "train-00000-of-00004.tfrecord").rename(out / "val-00000-of-00001.tfrecord")
    assert run(*args).exit_code == 0
    assert (out / "val-00000-of-00001.tfrecord").read_bytes() == b"precious"
    # the shards the previous labelfix manifest lists are replaced as before
    write(images, masks, out, num_shards=3)
    assert sorted(p.name for p in out.glob("[!.]*")) == [
        "train-00000-of-00003.tfrecord",
        "train-00001-of-00003.tfrecord",
        "train-00002-of-00003.tfrecord",
        "train.labelfix.json",
        "val-00000-of-00001.tfrecord",
    ]


def test_foreign_shard_beside_a_labelfix_output_is_refused_found_by_hostile_pass(pairs, tmp_path):
    """Found by a hostile-user pass: a stray shard beside a labelfix output (not in its
    manifest) was deleted by the next run."""
    images, masks = pairs
    out = tmp_path / "tfr"
    write(images, masks, out, num_shards=2)
    (out / "train-00007-of-00009.tfrecord").write_bytes(b"mine")
    before = snapshot(out)
    with pytest.raises(LabelfixError, match=r"train-00007-of-00009.tfrecord: a train shard that"):
        write(images, masks, out, num_shards=3)
    assert snapshot(out) == before


# ----------------------------------------------------------------------------- 2. publishing


def test_ctrl_c_while_publishing_leaves_the_new_complete_output_found_by_hostile_pass(
    pairs, tmp_path, monkeypatch
):
    """Found by a hostile-user pass: Ctrl-C while a rerun renamed its shards left the old
    shards without their manifest. Now Ctrl-C waits until the renames are done."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be changed in the main thread")
    images, masks = pairs
    out = tmp_path / "tfr"
    write(images, masks, out, num_shards=3)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    real = door_module.move_into_place
    moved = []

    def ctrl_c_midway(tmp, final, **kwargs):
        if not moved:
            signal.raise_signal(signal.SIGINT)  # as a user's Ctrl-C, between two renames
        real(tmp, final, **kwargs)
        moved.append(os.path.basename(final))

    monkeypatch.setattr(door_module, "move_into_place", ctrl_c_midway)
    try:
        with pytest.raises(KeyboardInterrupt):
            write(images, masks, out, num_shards=2)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert moved == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
        "train.labelfix.json",
    ]
    assert sorted(p.name for p in out.glob("[!.]*")) == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
        "train.labelfix.json",
    ]
    result = verify_dataset(out)
    assert (result.ok, result.shards, result.records) == (True, 2, 6)


def test_deferred_signals_delivers_ctrl_c_after_the_block_found_by_hostile_pass():
    """Found by a hostile-user pass: a KeyboardInterrupt between two renames was half handled."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be changed in the main thread")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    steps = []
    try:
        with pytest.raises(KeyboardInterrupt), deferred_signals():
            signal.raise_signal(signal.SIGINT)
            steps.append("after the signal")
            with deferred_signals():  # nested: the outer block delivers
                steps.append("nested")
            steps.append("end of block")
        assert steps == ["after the signal", "nested", "end of block"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


KILL_SCRIPT = """
import os, sys
from labelfix.labels.labelmap import LabelMap
from labelfix.io import door
from labelfix.records.write import write_dataset

images, masks, out, die_after, num_shards, shuffle = sys.argv[1:]
real, calls = door.move_into_place, []

def dying(tmp, final, **kwargs):
    real(tmp, final, **kwargs)
    calls.append(final)
    if len(calls) == int(die_after):
        os._exit(9)  # a kill -9 or a power cut: nothing runs after this

door.move_into_place = dying
write_dataset(images=images, masks=masks, output=out, num_classes=21, jobs=1,
              label_map=LabelMap(ignore=(255,)), num_shards=int(num_shards),
              shuffle=shuffle == "1")
"""


@pytest.mark.parametrize(
    ("old_shards", "new_shards", "die_after", "shuffle", "expected"),
    [
        # new names beside the old complete output: the old manifest still holds
        (3, 2, 1, "0", "train-00000-of-00002.tfrecord: shard not in the manifest"),
        # a shard with an old name replaced: the old manifest's checksum no longer matches
        (2, 2, 1, "1", "train-00000-of-00002.tfrecord: sha256"),
        # killed after the commit, before the old shards were removed
        (3, 2, 3, "0", "train-00002-of-00003.tfrecord: shard not in the manifest"),
    ],
)
def test_killed_publish_is_reported_and_repaired_by_a_rerun_found_by_hostile_pass(
    pairs, tmp_path, old_shards, new_shards, die_after, shuffle, expected
):
    """Found by a hostile-user pass: an interrupted rerun left shards without a manifest. A kill
    (no Ctrl-C handling possible) can still stop a publish between renames: verify must say so
    clearly, and the next run must repair it rather than refuse the shards it wrote itself."""
    images, masks = pairs
    out = tmp_path / "tfr"
    write(images, masks, out, num_shards=old_shards)
    done = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, images, masks, out, str(die_after),
         str(new_shards), shuffle],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 9, done.stderr
    result = verify_dataset(out)
    assert any(p.startswith(f"{out / expected}") for p in result.problems), result.problems
    journals = [p for p in result.problems if ".train.labelfix-publish." in p]
    assert len(journals) == 1
    assert journals[0].endswith(
        "a to-tfrecord run was stopped while it replaced the train shards, which may be mixed: "
        "run it again"
    )
    write(images, masks, out, num_shards=new_shards, shuffle=shuffle == "1")
    assert sorted(p.name for p in out.glob("[!.]*")) == [
        *(f"train-{i:05d}-of-{new_shards:05d}.tfrecord" for i in range(new_shards)),
        "train.labelfix.json",
    ]
    result = verify_dataset(out)
    assert (result.ok, result.records) == (True, 6), result.problems


def test_failed_rename_restores_the_earlier_output_found_by_hostile_pass(
    pairs, tmp_path, monkeypatch
):
    """Found by a hostile-user pass: a publish that failed half-way left the old shards without
    their manifest. A failure before the commit now removes the new shards again."""
    import errno

    images, masks = pairs
    out = tmp_path / "tfr"
    write(images, masks, out, num_shards=3)
    before = snapshot(out)
    real = door_module.move_into_place

    def disk_full_at_second(tmp, final, **kwargs):
        if final.endswith("train-00001-of-00002.tfrecord"):
            raise OSError(errno.ENOSPC, "No space left on device", final)
        real(tmp, final, **kwargs)

    monkeypatch.setattr(door_module, "move_into_place", disk_full_at_second)
    with pytest.raises(LabelfixError) as info:
        write(images, masks, out, num_shards=2)
    assert str(info.value) == (
        f"{out / 'train-00001-of-00002.tfrecord'}: cannot write (No space left on device); "
        "the earlier train output is unchanged; nothing was published: run the same command again"
    )
    assert snapshot(out) == before


# ----------------------------------------------------------------------------- 3. FIFOs


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("which", ["mask", "image"])
def test_fifo_mask_or_image_is_refused_not_read_found_by_hostile_pass(pairs, tmp_path, which):
    """Found by a hostile-user pass: a FIFO named like a mask or image made to-tfrecord wait
    forever (opening a FIFO for reading blocks until someone writes)."""
    images, masks = pairs
    Image.fromarray(voc_mask()).save(masks / "f0.png")
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(images / "f0.jpg")
    fifo = (masks / "f0.png") if which == "mask" else (images / "f0.jpg")
    fifo.unlink()
    os.mkfifo(fifo)
    done = run_process("to-tfrecord", "--images", images, "--masks", masks, "-o",
                       tmp_path / "out", "-n", "21", "--ignore", "255", "-j", "1")  # fmt: skip
    assert done.returncode == 1
    reason = "not a regular file (a FIFO)" + (": not read" if which == "mask" else "")
    assert done.stderr.splitlines() == [
        f"{fifo}: {reason}",
        "labelfix: error: 1 of 7 pair(s) cannot be written; no shard was written",
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_reading_a_fifo_or_device_raises_without_opening_found_by_hostile_pass(tmp_path):
    """Found by a hostile-user pass: fs.read_bytes opened FIFOs (and waited forever)."""
    code = (
        "import os, sys\n"
        "from labelfix.io import fs\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        fs.read_bytes(path)\n"
        "    except fs.NotARegularFile as err:\n"
        "        print(err.filename, err.strerror)\n"
    )
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "pipe.png")
    done = subprocess.run(
        [sys.executable, "-c", code, tmp_path / "pipe.png", tmp_path / "link.png", "/dev/null"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.splitlines() == [
        f"{tmp_path / 'pipe.png'} not a regular file (a FIFO)",
        f"{tmp_path / 'link.png'} not a regular file (a FIFO)",
        "/dev/null not a regular file (a character device)",
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_manifest_is_refused_by_verify_found_by_hostile_pass(tmp_path):
    """Found by a hostile-user pass: a FIFO where the manifest goes made verify wait forever."""
    os.mkfifo(tmp_path / "train.labelfix.json")
    done = run_process("verify", tmp_path, timeout=60)
    assert done.returncode == 1
    assert done.stderr == (
        f"labelfix: error: {tmp_path / 'train.labelfix.json'}: cannot read the manifest "
        "(not a regular file (a FIFO))\n"
    )


# ----------------------------------------------------------------------------- 4. manifests


BAD_MANIFESTS = [
    ("num_classes", None, "num_classes: expected an integer 1..16777216, got null"),
    ("num_classes", -3, "num_classes: expected an integer 1..16777216, got -3"),
    ("num_classes", "21", "num_classes: expected an integer 1..16777216, got '21'"),
    ("num_classes", True, "num_classes: expected an integer 1..16777216, got true"),
    ("shards", None, "shards: expected a list of shards, got null"),
    ("shards", [7], "shards[0]: expected an object with file, records, bytes, sha256"),
    ("shards", [{"file": "../x.tfrecord", "records": 1, "bytes": 2, "sha256": "ab"}],
     "shards[0].file: '../x.tfrecord' is not a plain file name (no directory parts)"),
    ("shards", [{"file": "a.tfrecord", "records": "1", "bytes": 2, "sha256": "ab"}],
     "shards[0].records: expected an integer >= 0, got '1'"),
    ("shards", [{"file": "a.tfrecord", "records": 1, "bytes": 2}],
     "shards[0].sha256: expected a hex digest, got null"),
    ("ignore", "255", "ignore: expected an integer or null, got '255'"),
    ("mask_encoding", "jpeg", "mask_encoding: expected one of png, raw, got 'jpeg'"),
    ("mask_dtype", "int16", "mask_dtype: expected one of uint8, uint16 for png masks, got 'int16'"),
    ("compression", "zip", "compression: expected one of none, gzip, got 'zip'"),
    ("num_records", -1, "num_records: expected an integer >= 0, got -1"),
    ("class_pixel_counts", [None] * 21,
     "class_pixel_counts[0]: expected a count (an integer >= 0), got null"),
    ("class_names", [1, 2], "class_names: expected null or a list of names (strings), got [1, 2]"),
    ("palette", [[0, 0]], "palette: expected null or a list of [r, g, b] (0..255), got [[0, 0]]"),
    ("format_version", "1", "format_version: '1' is not an integer"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value", "problem"), BAD_MANIFESTS)
def test_damaged_manifest_is_one_line_not_a_traceback_found_by_hostile_pass(
    pairs, tmp_path, field, value, problem
):
    """Found by a hostile-user pass: ``num_classes: null`` gave a TypeError in verify, ``-3``
    "negative dimensions are not allowed", ``shards: null`` a TypeError in verify, train and
    evaluate (all read manifests through read_manifest)."""
    images, masks = pairs
    out = tmp_path / "tfr"
    write(images, masks, out, num_shards=2)
    path = out / "train.labelfix.json"
    manifest = json.loads(path.read_text())
    manifest[field] = value
    path.write_text(json.dumps(manifest))
    expected = f"{path}: not a valid labelfix manifest ({problem})"
    with pytest.raises(LabelfixError) as info:
        read_manifest(out)
    assert str(info.value) == expected
    result = run("verify", out)
    assert result.exit_code == 1
    assert result.stderr == f"labelfix: error: {expected}\n"
    assert result.stdout == ""


@pytest.mark.parametrize("content", ["{}", "[]", '"train"'])
def test_manifest_that_is_not_one_keeps_its_message_found_by_hostile_pass(tmp_path, content):
    """Found by a hostile-user pass (kept as it was): not a manifest at all."""
    (tmp_path / "train.labelfix.json").write_text(content)
    result = run("verify", tmp_path)
    assert result.exit_code == 1
    assert result.stderr == (
        f"labelfix: error: {tmp_path / 'train.labelfix.json'}: not a labelfix TFRecord manifest\n"
    )


# ----------------------------------------------------------------------------- 5. warnings


def test_binary_0_255_masks_with_ignore_255_warn_found_by_hostile_pass(tmp_path):
    """Found by a hostile-user pass: 0/255 binary masks written with --ignore 255 gave records
    whose class 1 had no pixel and 67% void, without a word."""
    m = np.zeros((6, 8), np.uint8)
    m[:4] = 255  # 32 of 48 pixels: the object, stored as 255
    images, masks = make_pairs(tmp_path, {"a": m, "b": m})
    args = ("to-tfrecord", "--images", images, "--masks", masks, "-o", tmp_path / "out",
            "-n", "2", "--ignore", "255", "-j", "1")  # fmt: skip
    warnings = [
        "class 1 has no pixel in any record in this split (train)",
        "67% of the pixels in this split (train) are void (ignore 255): is 255 a class? Binary "
        "masks stored as 0/255 need --map 255:1 instead of --ignore 255",
    ]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"labelfix: warning: {w}" for w in warnings]
    result = run(*args, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["warnings"] == warnings
    # mapped as the warning says: class 1 has its 64 pixels, no warning
    result = run("to-tfrecord", "--images", images, "--masks", masks, "-o", tmp_path / "ok",
                 "-n", "2", "--map", "255:1", "-j", "1", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["class_pixel_counts"], report["warnings"]) == ([32, 64], [])
    assert "warning" not in result.stderr


def test_absent_classes_are_named_at_most_ten_found_by_hostile_pass():
    """Found by a hostile-user pass: classes without a pixel went unmentioned."""
    names = [f"c{k}" for k in range(14)]
    counts = [5, 0, 3] + [0] * 11
    assert split_warnings("val", counts, 0, class_names=names) == (
        "12 of 14 classes have no pixel in any record in this split (val): 1 (c1), 3 (c3), "
        "4 (c4), 5 (c5), 6 (c6), 7 (c7), 8 (c8), 9 (c9), 10 (c10), 11 (c11) and 2 more",
    )
    assert split_warnings("val", [5, 5], 11) == (
        "52% of the pixels in this split (val) are void: is the void value a class? Map it to "
        "its class id with --map",
    )
    assert split_warnings("val", [5, 5], 10) == ()


# ----------------------------------------------------------------------------- 6. two images


def test_two_images_with_one_stem_are_an_error_found_by_hostile_pass(pairs, tmp_path):
    """Found by a hostile-user pass: with img/003.jpg and img/003.png, to-tfrecord and
    validate --images silently used one of them."""
    images, masks = pairs
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(images / "003.png")
    line = f"{masks / '003.png'}: 2 images match: {images / '003.jpg'}, {images / '003.png'}"
    with pytest.raises(DatasetProblems) as info:
        write(images, masks, tmp_path / "out")
    assert info.value.problems == (line,)
    result = run("to-tfrecord", "--images", images, "--masks", masks, "-o", tmp_path / "out",
                 "-n", "21", "--ignore", "255", "-j", "1")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        line,
        "labelfix: error: 1 file(s) without exactly one partner (1 mask(s) with several images: "
        "rename or move the extra images); nothing was written (--skip-unpaired leaves them "
        "out, --list picks ids)",
    ]
    assert not (tmp_path / "out").exists()
    # --skip-unpaired leaves that mask out, and says so
    result = run("to-tfrecord", "--images", images, "--masks", masks, "-o", tmp_path / "out",
                 "-n", "21", "--ignore", "255", "-j", "1", "--skip-unpaired", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_records"] == 5
    assert f"labelfix: skipped: {line}" in result.stderr
    # validate --images reaches the same verdict through labelfix.io.images
    result = run("validate", masks, "--images", images, "-n", "21", "--ignore", "255")
    assert result.exit_code == 1
    assert (
        f"{masks / '003.png'}: 2 images match it: {images / '003.jpg'}, {images / '003.png'}"
        in result.stdout.splitlines()
    )  # a problem of that mask: the others are checked too
    assert "Traceback" not in result.output


def test_find_image_raises_for_two_images_and_counts_a_file_once_found_by_hostile_pass(tmp_path):
    """Found by a hostile-user pass: find_image returned the first of two images silently. A
    name that only differs by case, on a case-insensitive disk, is one file (a hard link
    stands in for it here)."""
    (tmp_path / "p1.jpg").write_bytes(b"x")
    os.link(tmp_path / "p1.jpg", tmp_path / "p1.JPG")
    assert find_images(tmp_path, "p1.png") == [str(tmp_path / "p1.jpg")]
    assert find_image(tmp_path, "p1.png") == str(tmp_path / "p1.jpg")
    (tmp_path / "p1.tif").write_bytes(b"y")
    with pytest.raises(AmbiguousImage) as info:
        find_image(tmp_path, "p1.png", mask="msk/p1.png")
    both = f"{tmp_path / 'p1.jpg'}, {tmp_path / 'p1.tif'}"
    assert str(info.value) == f"msk/p1.png: 2 images match: {both}"
    assert find_image(tmp_path, "p2.png") is None


# ----------------------------------------------------------------------------- 7. verify paths


def test_verify_names_shards_as_the_user_gave_the_path_found_by_hostile_pass(
    pairs, tmp_path, monkeypatch
):
    """Found by a hostile-user pass: verify named shards by absolute paths and the manifest by
    the relative path it was given."""
    images, masks = pairs
    write(images, masks, tmp_path / "tfr", num_shards=2)
    listed = json.loads((tmp_path / "tfr" / "train.labelfix.json").read_text())["shards"][1]
    (tmp_path / "tfr" / "train-00001-of-00002.tfrecord").write_bytes(b"")
    (tmp_path / "tfr" / "train-00004-of-00005.tfrecord").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    result = run("verify", "tfr")
    assert result.exit_code == 1
    shard = "tfr/train-00001-of-00002.tfrecord"
    assert result.stdout.splitlines() == [
        f"{shard}: the manifest says 3 records, the shard holds 0",
        f"{shard}: the manifest says {listed['bytes']} bytes, the file has 0",
        f"{shard}: sha256 e3b0c44298fc1c14... does not match the manifest's "
        f"{listed['sha256'][:16]}...",
        "tfr/train-00004-of-00005.tfrecord: shard not in the manifest (a train-* glob would "
        "read it)",
        "tfr/train.labelfix.json: the manifest says 6 records, the shards hold 3",
        "tfr/train.labelfix.json: class_pixel_counts disagree with the records (class 0: "
        "manifest 192, records 96)",
        "FAILED: 2 shard(s), 3 record(s), 6 problem(s)",
    ]
    assert fs.exists("tfr/train.labelfix.json")


def test_count_list_of_another_length_is_named_by_verify_found_by_hostile_pass(pairs, tmp_path):
    """Found by a hostile-user pass: class_pixel_counts that do not fit num_classes (a hand-edited
    manifest) were reported as "class 2: manifest none, records none". The manifest still
    reads (train names the records that disagree with an edited num_classes)."""
    images, masks = pairs
    out = tmp_path / "tfr"
    write(images, masks, out, num_shards=2)
    path = out / "train.labelfix.json"
    manifest = json.loads(path.read_text())
    manifest["class_pixel_counts"] = [1, 2]
    path.write_text(json.dumps(manifest))
    assert read_manifest(out)["class_pixel_counts"] == [1, 2]
    assert verify_dataset(out).problems == (
        f"{path}: class_pixel_counts has 2 entries for num_classes=21",
    )
