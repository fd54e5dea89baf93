"""`labelfix remap`: round trips, formats, in-place safety, records, and the CLI's words."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_mapping import cityscapes_train_id

from labelfix.cli import main
from labelfix.io.atomic import atomic_path
from labelfix.io.door import Outlet, Refused
from labelfix.io.masks import read_mask
from labelfix.io.png import encode_png
from labelfix.labels.labelmap import LabelMap
from labelfix.labels.presets import preset, voc_palette
from labelfix.rewrite.plan import RemapUsageError, plan_remap
from labelfix.rewrite.record import RECORD_NAME, AlreadyRemapped
from labelfix.rewrite.run import remap, run_remap
from labelfix.synthetic import cityscapes_like_mask

from conftest import save_palette_png, save_png, voc_mask

VOC = voc_mask()  # 0 background, 15 person with a 255 border (14 px), 5 bottle
SIXTEEN = np.array([[0, 255, 20], [300, 20, 255]], np.uint16)
NPY = np.array([[1, 255], [3, 1]], np.int16)


@pytest.fixture
def masks(tmp_path: Path) -> Path:
    """palette, 8-bit, 16-bit and npy masks in a two-level tree."""
    root = tmp_path / "masks"
    save_palette_png(root / "a" / "0001.png", VOC)
    save_png(root / "a" / "0002.png", np.full((8, 10), 3, np.uint8))
    save_png(root / "b" / "0003.png", SIXTEEN)
    np.save(root / "b" / "0004.npy", NPY)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def run(*args: str):
    return CliRunner().invoke(main, ["remap", *args])


def minus_one(a: np.ndarray) -> np.ndarray:
    return np.where(a == 255, -1, a.astype(np.int64))


# ----------------------------------------------------------------------------- the short form


def test_short_form_writes_signed_npy_to_a_sibling_and_says_so(masks):
    before = snapshot(masks)
    result = run("--ignore", "255", "--out", "-1", str(masks))
    assert result.exit_code == 0, result.output
    out = masks.parent / "masks-remapped"
    assert f"Wrote 4 file(s) to {out}/." in result.stdout
    assert "Read 4 of 4 files: 3 changed, 1 unchanged, 0 failed." in result.stdout
    assert "the mapping produces -1, which a PNG cannot store" in result.stdout
    assert "Stored as: npy int16 (1), npy int8 (2), png 8-bit (1)." in result.stdout
    assert snapshot(masks) == before  # never over the input
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.npy"))
    assert written == ["a/0001.npy", "b/0003.npy", "b/0004.npy"]
    # a/0002 holds no 255, so no -1: it stays a PNG (it is unchanged, a copy)
    assert [str(p.relative_to(out)) for p in out.rglob("*.png")] == ["a/0002.png"]
    assert read_mask(out / "a/0002.png").labels.tolist() == np.full((8, 10), 3).tolist()
    for name, src in [("a/0001", VOC), ("b/0004", NPY)]:
        got = np.load(out / f"{name}.npy")
        assert got.dtype == np.int8 and got.shape == src.shape
        np.testing.assert_array_equal(got, minus_one(src))
    sixteen = np.load(out / "b/0003.npy")
    assert sixteen.dtype == np.int16  # 300 does not fit int8
    np.testing.assert_array_equal(sixteen, minus_one(SIXTEEN))


def test_default_destination_of_a_single_file(masks):
    result = run("--ignore", "255", "--out", "0", str(masks / "a" / "0001.png"))
    assert result.exit_code == 0, result.output
    out = masks / "a-remapped" / "0001.png"
    np.testing.assert_array_equal(read_mask(out).labels, np.where(VOC == 255, 0, VOC))


# ----------------------------------------------------------------------------- round trips


def test_png_round_trip_keeps_palette_and_depth(masks, tmp_path):
    out = tmp_path / "out"
    result = run("--ignore", "0", "--ignore", "255", "--out", "255", str(masks), "-o", str(out))
    assert result.exit_code == 0, result.output
    pal = read_mask(out / "a/0001.png")
    assert pal.kind == "palette" and pal.palette == voc_palette()
    np.testing.assert_array_equal(pal.labels, np.where(VOC == 0, 255, VOC))
    eight = read_mask(out / "a/0002.png")  # unchanged (no 0, no 255): copied as it was
    assert eight.kind == "8-bit"
    assert (out / "a/0002.png").read_bytes() == (masks / "a/0002.png").read_bytes()
    wide = read_mask(out / "b/0003.png")
    assert wide.kind == "16-bit" and wide.labels.dtype == np.uint16
    np.testing.assert_array_equal(wide.labels, np.where(SIXTEEN == 0, 255, SIXTEEN))
    npy = np.load(out / "b/0004.npy")
    np.testing.assert_array_equal(npy, NPY)
    assert "Stored as: npy int16 (1), png 16-bit (1), png 8-bit (1), png 8-bit palette (1)." in (
        result.stdout
    )


def test_no_palette(masks, tmp_path):
    result = run(
        "--ignore", "255", "--out", "0", "--no-palette", str(masks), "-o", str(tmp_path / "o")
    )
    assert result.exit_code == 0, result.output
    assert read_mask(tmp_path / "o/a/0001.png").kind == "8-bit"


def test_16_bit_input_narrowed_when_the_mapping_is_closed(masks, tmp_path):
    result = remap([masks / "b"], preset("voc"), output=tmp_path / "o", jobs=1)
    assert result.ok
    m = read_mask(tmp_path / "o/0003.png")
    assert m.kind == "8-bit"  # every value voc can produce fits 8 bits
    np.testing.assert_array_equal(m.labels, [[0, 255, 20], [255, 20, 255]])


def test_16_bit_input_stays_16_bit_in_place(masks):
    result = remap([masks / "b"], preset("voc"), in_place=True, jobs=1)
    assert (result.changed, result.unchanged) == (1, 1)
    m = read_mask(masks / "b/0003.png")
    assert m.kind == "16-bit"  # like its neighbours, which are not rewritten
    np.testing.assert_array_equal(m.labels, [[0, 255, 20], [255, 20, 255]])


def test_a_rule_above_255_makes_every_png_16_bit(tmp_path):
    save_png(tmp_path / "in/x.png", np.array([[3, 4]], np.uint8))
    save_png(tmp_path / "in/y.png", np.array([[4, 4]], np.uint8))  # holds no 3
    result = remap([tmp_path / "in"], LabelMap(rules=((3, 300),)), output=tmp_path / "o", jobs=1)
    assert result.stored == (("png 16-bit", 2),)
    assert read_mask(tmp_path / "o/x.png").labels.tolist() == [[300, 4]]
    assert read_mask(tmp_path / "o/y.png").kind == "16-bit"


def test_cityscapes_preset_round_trip_on_generated_masks(tmp_path):
    rng = np.random.default_rng(3)
    ids = [cityscapes_like_mask(rng, height=96, width=160) for _ in range(3)]
    for i, m in enumerate(ids):
        save_png(tmp_path / "gtFine" / f"{i}_labelIds.png", m)
    lut = np.array([cityscapes_train_id(v) for v in range(256)], np.uint8)
    result = remap([tmp_path / "gtFine"], preset("cityscapes"), jobs=1)
    assert (result.read, result.changed, result.written) == (3, 3, 3)
    for i, m in enumerate(ids):
        got = read_mask(tmp_path / "gtFine-remapped" / f"{i}_labelIds.png")
        assert got.kind == "8-bit" and got.shape == (96, 160)
        np.testing.assert_array_equal(got.labels, lut[m])


def test_parallel_run_equals_serial_run(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(10):
        save_png(tmp_path / "in" / f"{i:02d}.png", cityscapes_like_mask(rng, height=32, width=64))
    cs = preset("cityscapes")
    serial = remap([tmp_path / "in"], cs, output=tmp_path / "one", jobs=1)
    parallel = remap([tmp_path / "in"], cs, output=tmp_path / "two", jobs=2)
    assert parallel.values == serial.values and parallel.written == 10
    [record] = json.loads((tmp_path / "two" / RECORD_NAME).read_text())["runs"]
    assert sorted(record["files"]) == sorted(os.listdir(tmp_path / "in"))  # from both workers
    assert snapshot(tmp_path / "one").keys() == snapshot(tmp_path / "two").keys()
    for name in sorted(os.listdir(tmp_path / "in")):
        a = read_mask(tmp_path / "one" / name).labels
        np.testing.assert_array_equal(a, read_mask(tmp_path / "two" / name).labels)


def test_several_sources_go_to_their_own_subdirectories(masks, tmp_path):
    result = run(
        "--ignore",
        "255",
        "--out",
        "0",
        str(masks / "a"),
        str(masks / "b"),
        "-o",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o/a/0001.png").exists() and (tmp_path / "o/b/0003.png").exists()


def test_encode_png_round_trips():
    a = (np.arange(600).reshape(20, 30) % 256).astype(np.uint8)
    for data, kind in [
        (encode_png(a), "8-bit"),
        (encode_png(a, palette=voc_palette()), "palette"),
        (encode_png(a.astype(np.uint16) * 200, bits=16), "16-bit"),
    ]:
        im = Image.open(io.BytesIO(data))
        expected = a.astype(np.uint16) * 200 if kind == "16-bit" else a
        np.testing.assert_array_equal(np.asarray(im), expected)
    with pytest.raises(ValueError, match="do not fit a 8-bit PNG"):
        encode_png(np.array([[256]], np.uint16), bits=8)


# ----------------------------------------------------------------------------- formats


def test_png_with_a_negative_value_is_a_usage_error(masks):
    result = run("--ignore", "255", "--out", "-1", "--format", "png", str(masks))
    assert result.exit_code == 2
    assert "--format png cannot store -1, which the mapping produces" in result.stderr
    assert "keep a non-negative ignore on disk (e.g. --out 255)" in result.stderr
    assert not (masks.parent / "masks-remapped").exists()


def test_format_npy_without_negative_values(masks, tmp_path):
    result = run(
        "--ignore",
        "255",
        "--out",
        "0",
        "--format",
        "npy",
        str(masks / "a"),
        "-o",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 0, result.output
    got = np.load(tmp_path / "o/0001.npy")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.where(VOC == 255, 0, VOC))


def test_npy_with_negative_values_forced_to_png_fails_per_file(tmp_path):
    np.save(tmp_path / "in.npy", np.array([[-1, 2]], np.int8))
    save_png(tmp_path / "ok.png", np.array([[2, 2]], np.uint8))
    args = ["--map", "2:3", "--format", "png", "-o", str(tmp_path / "o")]
    result = run(*args, str(tmp_path / "in.npy"), str(tmp_path / "ok.png"))
    assert result.exit_code == 1
    assert f"{tmp_path / 'in.npy'}: value -1 cannot be stored in a PNG (0..65535)" in result.stderr
    assert (tmp_path / "o/ok.png").exists() and not (tmp_path / "o/in.png").exists()


# ----------------------------------------------------------------------------- checks and errors


def test_num_classes_violation_is_reported_like_validate_and_not_written(masks, tmp_path):
    result = run(
        "--map", "3:40", "--ignore", "255", "-n", "21", str(masks / "a"), "-o", str(tmp_path / "o")
    )
    assert result.exit_code == 1
    assert (
        f"labelfix: error: {masks / 'a/0002.png'}: value 40 is not a class id "
        "(expected 0..20 or ignore 255): 80 px, first at y=0 x=0 (mapped from 3)"
    ) in result.stderr
    assert "1 of 2 file(s) could not be remapped and were not written" in result.stderr
    assert not (tmp_path / "o/0002.png").exists()
    assert (tmp_path / "o/0001.png").exists()


def test_preset_brings_num_classes(tmp_path):
    save_png(tmp_path / "in/x.png", np.array([[7, 40]], np.uint8))
    result = run("--preset", "cityscapes", "--unmapped", "keep", str(tmp_path / "in"))
    assert result.exit_code == 1
    assert "value 40 is not a class id (expected 0..18 or ignore 255): 1 px" in result.stderr


def test_unmapped_error_names_the_file(tmp_path):
    save_png(tmp_path / "in/x.png", np.array([[1, 9]], np.uint8))
    result = run("--map", "1:0", "--unmapped", "error", str(tmp_path / "in"))
    assert result.exit_code == 1
    assert f"{tmp_path / 'in/x.png'}: value 9 has no mapping rule (--unmapped error)" in (
        result.stderr
    )


def test_bad_files_one_line_each_others_keep_going(messy_masks, tmp_path):
    result = run("--ignore", "255", "--out", "0", str(messy_masks), "-o", str(tmp_path / "o"))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("labelfix: error:")]
    for name in ("colour.png", "jpeg_named_png.png", "truncated.png", "empty.png", "notes.npy"):
        assert sum(str(messy_masks / name) + ":" in line for line in errors) == 1, name
    assert "Traceback" not in result.output
    assert (
        errors[-1] == "labelfix: error: 5 of 9 file(s) could not be remapped and were not written"
    )
    for name in ("good.png", "out_of_range.png", "sixteen.png", "void.png"):
        assert (tmp_path / "o" / name).exists()


def test_usage_errors(masks, tmp_path):
    both = run("--ignore", "255", "--out", "0", "--in-place", "-o", str(tmp_path), str(masks))
    assert both.exit_code == 2 and "--in-place and --output exclude each other" in both.stderr
    nothing = run(str(masks))
    assert nothing.exit_code == 2 and "the mapping changes no value" in nothing.stderr
    inside = run("--ignore", "255", "--out", "0", str(masks), "-o", str(masks / "fixed"))
    assert inside.exit_code == 2 and "is inside the input" in inside.stderr
    bad_map = run("--map", "7-0", str(masks))
    assert bad_map.exit_code == 2 and "expected A:B (e.g. 7:0), got '7-0'" in bad_map.stderr
    conflict = run("--map", "255:0", "--ignore", "255", str(masks))
    assert conflict.exit_code == 2 and "both an ignore value and mapped to 0" in conflict.stderr


def test_no_mask_files(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("--ignore", "255", "--out", "0", str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert f"no mask files (*.png, *.npy) under {tmp_path / 'empty'}" in result.stderr


# ----------------------------------------------------------------------------- dry run, json


def test_dry_run_prints_per_value_changes_and_writes_nothing(masks):
    before = snapshot(masks)
    result = run("--ignore", "255", "--out", "-1", "--dry-run", str(masks))
    assert result.exit_code == 0, result.output
    assert not (masks.parent / "masks-remapped").exists()
    assert snapshot(masks) == before
    lines = result.stdout.splitlines()
    assert "  value  becomes      pixels  files" in lines
    # 255: 14 px in the VOC mask, 2 in the 16-bit one, 1 in the npy one
    assert "    255  -1               17      3" in lines
    assert "      3  (unchanged)      81      2" in lines
    assert "17 of 170 pixels would change (10.00%)." in lines
    assert f"Would write 4 file(s) to {masks.parent / 'masks-remapped'}/." in lines


def test_json_summary(masks, tmp_path):
    result = run("--preset", "voc", str(masks), "-o", str(tmp_path / "o"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("files", "read", "changed", "unchanged", "written")} == {
        "files": 4,
        "read": 4,
        "changed": 1,
        "unchanged": 3,
        "written": 4,
    }
    assert summary["mapping"]["name"] == "voc"
    assert summary["manifests"] == [str(tmp_path / "o" / RECORD_NAME)]
    assert {"value": 300, "becomes": 255, "pixels": 1, "files": 1} in summary["values"]


# ----------------------------------------------------------------------------- in place


def labelids(tmp_path: Path) -> Path:
    """Three Cityscapes labelId masks (road 7, sidewalk 8, sky 23, a 0) and one without 7/8."""
    root = tmp_path / "gtFine"
    save_png(root / "x/0.png", np.array([[7, 8], [23, 0]], np.uint8))
    save_png(root / "x/1.png", np.array([[7, 7], [8, 8]], np.uint8))
    save_png(root / "y/2.png", np.array([[26, 24], [0, 7]], np.uint8))
    save_png(root / "y/3.png", np.array([[255, 255], [255, 255]], np.uint8))  # a fixed point
    return root


TRAIN_IDS = {
    "x/0.png": [[0, 1], [10, 255]],
    "x/1.png": [[0, 0], [1, 1]],
    "y/2.png": [[13, 11], [255, 0]],
    "y/3.png": [[255, 255], [255, 255]],
}


def values(root: Path) -> dict[str, list]:
    return {
        str(p.relative_to(root)): read_mask(p).labels.tolist() for p in sorted(root.rglob("*.png"))
    }


def test_in_place_replaces_changed_files_and_refuses_a_second_pass(tmp_path):
    root = labelids(tmp_path)
    untouched = (root / "y/3.png").stat().st_mtime_ns
    first = run("--preset", "cityscapes", "--in-place", str(root))
    assert first.exit_code == 0, first.output
    assert f"Replaced 3 file(s) in place in {root}/; 1 unchanged file(s) left as they are." in (
        first.stdout
    )
    assert values(root) == TRAIN_IDS
    assert (root / "y/3.png").stat().st_mtime_ns == untouched
    record = json.loads((root / RECORD_NAME).read_text())
    [entry] = record["runs"]
    assert entry["complete"] and entry["mode"] == "in-place"
    assert entry["mapping"]["name"] == "cityscapes"
    assert sorted(entry["files"]) == ["x/0.png", "x/1.png", "y/2.png", "y/3.png"]

    again = run("--preset", "cityscapes", "--in-place", str(root))
    assert again.exit_code == 1
    assert "4 file(s), e.g. " in again.stderr
    assert "were already remapped by this mapping (cityscapes preset" in again.stderr
    assert "Use --force to apply it anyway." in again.stderr
    assert values(root) == TRAIN_IDS  # not applied twice
    also_a_subdir = run("--preset", "cityscapes", "--in-place", str(root / "x"))
    assert also_a_subdir.exit_code == 1 and "--force" in also_a_subdir.stderr

    forced = run("--preset", "cityscapes", "--in-place", "--force", str(root))
    assert forced.exit_code == 0, forced.output
    assert values(root)["x/1.png"] == [[255, 255], [255, 255]]  # trainIds 0, 1 are no labelIds


def test_another_non_idempotent_mapping_on_remapped_files_is_flagged(tmp_path):
    root = labelids(tmp_path)
    assert run("--preset", "cityscapes", "--in-place", str(root)).exit_code == 0
    result = run("--preset", "ade20k", "--in-place", "--dry-run", str(root))
    assert result.exit_code == 0, result.output
    assert "labelfix: warning: 4 file(s), e.g. " in result.stderr
    assert "were remapped before with another mapping (cityscapes preset" in result.stderr


def test_idempotent_mapping_may_run_twice_in_place(masks):
    for _ in range(2):
        result = run("--ignore", "0", "--out", "255", "--in-place", str(masks / "a"))
        assert result.exit_code == 0, result.output
    assert read_mask(masks / "a/0001.png").labels.tolist() == np.where(VOC == 0, 255, VOC).tolist()
    assert len(json.loads((masks / "a" / RECORD_NAME).read_text())["runs"]) == 2


def test_in_place_never_changes_a_file_name(masks):
    before = snapshot(masks)
    result = run("--ignore", "255", "--out", "-1", "--in-place", str(masks))
    assert result.exit_code == 2
    assert "--in-place would have to replace" in result.stderr
    assert "with a .npy file of another name" in result.stderr
    assert snapshot(masks) == before


def test_output_of_a_remap_is_guarded_too(tmp_path):
    root = labelids(tmp_path)
    assert run("--preset", "cityscapes", str(root)).exit_code == 0
    out = tmp_path / "gtFine-remapped"
    again = run("--preset", "cityscapes", str(out), "-o", str(tmp_path / "twice"))
    assert again.exit_code == 1
    assert f"as recorded in {out / RECORD_NAME}" in again.stderr
    assert not (tmp_path / "twice").exists()


def test_interrupted_in_place_run_leaves_old_or_new_files_and_resumes(tmp_path, monkeypatch):
    root = labelids(tmp_path)
    old = values(root)
    real_write = Outlet.write
    calls: list[str] = []

    def write_then_ctrl_c(outlet, destination, data, *, durable=False):
        if destination.endswith(".png"):  # the masks, not the run record
            calls.append(destination)
        if len(calls) == 2:  # Ctrl-C half-way through writing the second file
            with atomic_path(destination) as tmp, open(tmp, "wb") as fh:
                fh.write(data[: len(data) // 2])
                raise KeyboardInterrupt
        return real_write(outlet, destination, data, durable=durable)

    monkeypatch.setattr(Outlet, "write", write_then_ctrl_c)
    plan = plan_remap([root], preset("cityscapes"), in_place=True)
    with pytest.raises(KeyboardInterrupt):
        run_remap(plan, jobs=1)
    now = values(root)  # every file still reads
    assert now["x/0.png"] == TRAIN_IDS["x/0.png"]  # new
    assert {k: now[k] for k in ("x/1.png", "y/2.png")} == {
        k: old[k] for k in ("x/1.png", "y/2.png")
    }
    assert not [p for p in root.rglob("*") if "labelfix-tmp" in p.name]

    monkeypatch.setattr(Outlet, "write", real_write)
    resumed = remap([root], preset("cityscapes"), in_place=True, jobs=1)
    assert resumed.skipped == (str(root / "x/0.png"),)  # done before the interruption
    assert "a run that did not finish" in resumed.skipped_reason
    assert values(root) == TRAIN_IDS  # each file mapped exactly once
    with pytest.raises(AlreadyRemapped):
        plan_remap([root], preset("cityscapes"), in_place=True)


def test_ctrl_c_in_the_command_exits_130_without_a_traceback(tmp_path, monkeypatch):
    root = labelids(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Outlet, "write", interrupted)
    result = run("--preset", "cityscapes", "--in-place", "-j", "1", str(root))
    assert result.exit_code == 130
    assert "run the same command again to finish" in result.stderr
    assert "Traceback" not in result.output


def test_plan_errors_are_usage_errors(masks, tmp_path):
    lm = LabelMap(ignore=(255,), out=0)
    with pytest.raises(Refused, match=r"is the input .*outside the inputs, or use --in-place"):
        plan_remap([masks / "a" / "0001.png"], lm, output=masks / "a")
    with pytest.raises(RemapUsageError, match="is given twice"):
        plan_remap([masks / "a", masks / "a"], lm, output=tmp_path / "o")


# ----------------------------------------------------------------------------- other decoders


def test_remapped_pngs_read_the_same_in_pillow_opencv_and_tensorflow(tmp_path: Path):
    """Issue 15: remap writes its own PNGs (filters chosen per row, zlib-ng); Pillow, OpenCV
    and ``tf.io.decode_png`` must read the same values from them: 8-bit grey, 16-bit grey
    and palette (whose colours the other two decoders give)."""
    cv2 = pytest.importorskip("cv2")
    tf = pytest.importorskip("tensorflow")
    labels = cityscapes_like_mask(np.random.default_rng(3), height=256, width=512)
    save_png(tmp_path / "grey" / "a.png", labels)
    remap([tmp_path / "grey"], preset("cityscapes"), output=tmp_path / "grey-out", jobs=1)
    train_ids = np.vectorize(cityscapes_train_id)(labels).astype(np.uint8)

    wide = np.array([[0, 255, 20], [300, 20, 255]], np.uint16)
    save_png(tmp_path / "wide" / "b.png", wide)
    remap([tmp_path / "wide"], LabelMap(ignore=(255,), out=1000), output=tmp_path / "wide-out")
    save_palette_png(tmp_path / "pal" / "c.png", VOC)
    remap([tmp_path / "pal"], LabelMap(ignore=(255,), out=0), output=tmp_path / "pal-out")
    voc_out = np.where(VOC == 255, 0, VOC).astype(np.uint8)
    colours = np.frombuffer(voc_palette(), np.uint8).reshape(-1, 3)[voc_out]

    for path, expected, dtype in (
        (tmp_path / "grey-out" / "a.png", train_ids, tf.uint8),
        (tmp_path / "wide-out" / "b.png", np.where(wide == 255, 1000, wide), tf.uint16),
    ):
        data = path.read_bytes()
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), expected)
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), expected)
        decoded = tf.io.decode_png(data, channels=1, dtype=dtype)[..., 0].numpy()
        np.testing.assert_array_equal(decoded, expected)
    data = (tmp_path / "pal-out" / "c.png").read_bytes()
    image = Image.open(io.BytesIO(data))
    assert image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image), voc_out)
    bgr = cv2.imread(str(tmp_path / "pal-out" / "c.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgr[..., ::-1], colours)
    np.testing.assert_array_equal(tf.io.decode_png(data, channels=3).numpy(), colours)


# ----------------------------------------------------------------------------- the record


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (lambda text: text[: len(text) // 2], "Expecting"),  # cut in half
        (lambda text: "garbage\x00\x01", "Expecting value"),
        (lambda text: text.replace('"files": {', '"files": 5, "x": {'), "its files are not names"),
    ],
)
def test_a_damaged_run_record_is_an_error_never_silently_discarded(tmp_path, damage, what):
    """Issue 21: a damaged record let a non-idempotent in-place mapping run a second time, and
    a record with wrong types was a traceback."""
    root = labelids(tmp_path)
    assert run("--preset", "cityscapes", "--in-place", str(root)).exit_code == 0
    record = root / RECORD_NAME
    record.write_text(damage(record.read_text()))
    before = values(root)
    again = run("--preset", "cityscapes", "--in-place", str(root))
    assert again.exit_code == 1
    assert f"labelfix: error: {record}: damaged run record (" in again.stderr
    assert what in again.stderr and "--discard-record" in again.stderr
    assert "Traceback" not in again.output
    assert values(root) == before  # not mapped twice
    anyway = run("--preset", "cityscapes", "--in-place", "--discard-record", str(root))
    assert anyway.exit_code == 0, anyway.output
    assert f"{record}: damaged; moved to {record}.damaged-" in anyway.stderr
    assert len(list(root.glob(f"{RECORD_NAME}.damaged-*"))) == 1


def test_a_journal_with_garbage_inside_is_damaged_a_torn_last_line_is_not(tmp_path):
    root = labelids(tmp_path)
    journal = root / ".labelfix-remap.journal"
    journal.write_text('{"run": "r", "file": "x/0.png"}\n{"run": "r", "fi')
    assert run("--preset", "cityscapes", "--in-place", str(root)).exit_code == 0
    journal.write_text('{"run": "r", "file": "x/0.png"}\nnot json\n{"run": "r", "file": "y"}\n')
    result = run("--preset", "cityscapes", "--in-place", "--force", str(root))
    assert result.exit_code == 1
    assert f"{journal}: damaged run record (line 2 is not a journal entry)" in result.stderr


def test_a_file_restored_after_an_interrupted_run_is_remapped_again(tmp_path, monkeypatch):
    """Issue 21: deciding "already done" by path skipped a file the user restored after an
    interrupted run as "already remapped". Now decided from content."""
    root = labelids(tmp_path)
    old = values(root)
    original = (root / "x/0.png").read_bytes()
    real_write = Outlet.write
    calls: list[str] = []

    def ctrl_c_at_the_second_mask(outlet, destination, data, *, durable=False):
        if destination.endswith(".png"):
            calls.append(destination)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real_write(outlet, destination, data, durable=durable)

    monkeypatch.setattr(Outlet, "write", ctrl_c_at_the_second_mask)
    with pytest.raises(KeyboardInterrupt):
        run_remap(plan_remap([root], preset("cityscapes"), in_place=True), jobs=1)
    monkeypatch.undo()
    assert values(root)["x/0.png"] == TRAIN_IDS["x/0.png"]
    (root / "x/0.png").write_bytes(original)  # the user restores it from a backup
    resumed = remap([root], preset("cityscapes"), in_place=True, jobs=1)
    assert resumed.skipped == ()  # its content is not what the run wrote: mapped again
    assert values(root) == TRAIN_IDS and old["x/0.png"] != TRAIN_IDS["x/0.png"]


def test_ctrl_c_after_the_commit_point_says_there_is_nothing_to_redo(tmp_path, monkeypatch):
    """Issue 21: Ctrl-C right after the commit point told the user to rerun; the rerun said
    "already remapped, use --force", and --force applied the mapping twice."""
    import signal

    import labelfix.rewrite.run as run_module

    root = labelids(tmp_path)
    real = run_module._finish

    def finish_then_ctrl_c(*args, **kwargs):
        done = real(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # held until the commit is whole, then delivered
        return done

    monkeypatch.setattr(run_module, "_finish", finish_then_ctrl_c)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run("--preset", "cityscapes", "--in-place", "-j", "1", str(root))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 130
    assert "the run had finished before the interrupt: every file was remapped" in result.stderr
    assert "there is nothing to redo" in result.stderr
    assert "run the same command again" not in result.stderr
    assert values(root) == TRAIN_IDS


def test_names_of_250_characters_are_written(tmp_path):
    """Issue 21: names of 244+ characters failed: the temporary name was too long."""
    name = "n" * 246 + ".png"
    save_png(tmp_path / "in" / name, np.full((2, 2), 255, np.uint8))
    result = run("--ignore", "255", "--out", "0", str(tmp_path / "in"), "-o", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert read_mask(tmp_path / "o" / name).labels.tolist() == [[0, 0], [0, 0]]


def test_out_minus_one_turns_only_masks_holding_the_ignore_value_into_npy(tmp_path):
    """Found trying labelfix as a new user: `remap --ignore 255 --out -1` converted PNGs that
    hold no 255 to .npy too (their output holds no -1, which is all a PNG cannot store)."""
    masks = tmp_path / "masks"
    masks.mkdir()
    with_void = np.zeros((4, 5), np.uint8)
    with_void[1, 1] = 255
    Image.fromarray(with_void).save(masks / "a.png")
    Image.fromarray(np.ones((4, 5), np.uint8)).save(masks / "b.png")
    args = ["remap", "--ignore", "255", "--out", "-1", str(masks)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "masks-remapped"
    assert sorted(p.name for p in out.glob("[!.]*")) == ["a.npy", "b.png"]
    assert np.load(out / "a.npy").tolist()[1][:2] == [0, -1]
    assert (out / "b.png").read_bytes() == (masks / "b.png").read_bytes()  # unchanged: a copy
    assert "Stored as: npy int8 (1), png 8-bit (1)." in result.stdout
    assert "Masks holding no such value stay PNG." in result.stdout
    again = CliRunner().invoke(main, args)  # a rerun replaces both of its outputs
    assert again.exit_code == 0, again.output
    assert "replaced 2 existing file(s)" in again.stderr


def test_cityscapes_preset_on_instance_ids_warns_that_instances_become_void(tmp_path):
    """Found trying labelfix as a new user: `remap --preset cityscapes` on instanceIds mapped
    every instance to 255 without a warning."""
    masks = tmp_path / "gtFine"
    masks.mkdir()
    instances = np.full((4, 6), 7, np.uint16)  # road (stuff keeps its labelId)
    instances[1:3, 1:3] = 26001  # car, instance 1
    instances[1:3, 4:6] = 26002
    Image.fromarray(instances).save(masks / "a_gtFine_instanceIds.png")
    result = CliRunner().invoke(main, ["remap", "--preset", "cityscapes", str(masks)])
    assert result.exit_code == 0, result.output
    assert (
        "labelfix: warning: 2 value(s) of 1000 and more (26001, 26002; 8 px in up to 1 file(s)) "
        "look like Cityscapes instanceIds (labelId * 1000 + instance), which the cityscapes "
        "preset does not know: they became void 255. Remap the *_gtFine_labelIds.png masks, not "
        "*_gtFine_instanceIds.png (--glob '*_labelIds.png')"
    ) in result.stderr
    label_ids = tmp_path / "labels"
    label_ids.mkdir()
    Image.fromarray(np.full((4, 6), 26, np.uint8)).save(label_ids / "a_gtFine_labelIds.png")
    quiet = CliRunner().invoke(main, ["remap", "--preset", "cityscapes", str(label_ids)])
    assert quiet.exit_code == 0 and "instanceIds" not in quiet.stderr
