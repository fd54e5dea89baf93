"""`labelfix validate`: exit codes, one line per problem, first coordinates."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from labelfix.checks.validate import validate
from labelfix.cli import main

from conftest import save_oriented, save_palette_png, save_png, voc_mask


def test_clean_dataset_passes_with_palette_warning(clean_masks):
    result = CliRunner().invoke(
        main, ["validate", str(clean_masks), "--num-classes", "21", "--ignore", "255"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"warning: {clean_masks / 'a' / '0001.png'}: palette PNG: tf.io.decode_png would read "
        "colours/luminance, not class ids (labelfix reads the palette indices)"
    )
    assert lines[-1] == "OK: 4 files, 0 with problems, 1 warning(s)"


def test_out_of_range_value_message_names_pixels_and_first_coordinate(tmp_path):
    m = voc_mask()
    m[3, 8] = 37
    m[3, 7] = 37
    m[7, 0] = 37
    save_png(tmp_path / "0007.png", m)
    result = CliRunner().invoke(main, ["validate", str(tmp_path), "-n", "21", "--ignore", "255"])
    assert result.exit_code == 1
    assert (
        f"{tmp_path / '0007.png'}: value 37 is not a class id (expected 0..20 or ignore 255): "
        "3 px, first at y=3 x=7"
    ) in result.stdout
    assert result.stdout.splitlines()[-1] == "FAILED: 1 file, 1 with problems, 0 warning(s)"


def test_without_ignore_255_is_not_a_class(tmp_path):
    save_palette_png(tmp_path / "a.png", voc_mask())
    result = validate([tmp_path], num_classes=21, jobs=1)
    assert not result.ok
    [problem] = result.errors
    assert problem.value == 255
    assert problem.pixels == 14
    assert (problem.y, problem.x) == (1, 1)
    assert problem.message.endswith(
        "value 255 is not a class id (expected 0..20): 14 px, first at y=1 x=1"
    )


def test_messy_dataset_lists_each_file_and_keeps_going(messy_masks):
    result = CliRunner().invoke(
        main, ["validate", str(messy_masks), "-n", "21", "--ignore", "255", "--json"]
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    by_code = {}
    for p in report["problems"]:
        by_code.setdefault(p["code"], []).append(p["path"].rsplit("/", 1)[1])
    assert by_code == {
        "colour": ["colour.png"],
        "unreadable": ["empty.png", "notes.npy", "truncated.png"],
        "jpeg": ["jpeg_named_png.png"],
        "value": ["out_of_range.png", "sixteen.png"],
        "palette": ["good.png"],
        "all-void": ["void.png"],
    }
    sixteen = next(p for p in report["problems"] if p.get("value") == 300)
    assert (sixteen["pixels"], sixteen["y"], sixteen["x"]) == (1, 1, 2)
    assert report["bad_files"] == 7


def test_images_dir_missing_and_size_mismatch(tmp_path):
    masks, images = tmp_path / "masks", tmp_path / "images"
    save_png(masks / "s" / "a.png", np.zeros((4, 6), np.uint8))
    save_png(masks / "s" / "b.png", np.zeros((4, 6), np.uint8))
    save_png(masks / "s" / "c.png", np.zeros((4, 6), np.uint8))
    save_png(images / "s" / "a.jpg", np.zeros((4, 6, 3), np.uint8))
    save_png(images / "s" / "b.png", np.zeros((6, 4, 3), np.uint8))
    result = CliRunner().invoke(main, ["validate", str(masks), "-n", "2", "--images", str(images)])
    assert result.exit_code == 1
    out = result.stdout
    assert "a.png" not in out
    assert f"{masks / 's' / 'b.png'}: size 6x4 does not match its image" in out
    assert f"{masks / 's' / 'c.png'}: no image for this mask under {images}" in out


def test_usage_errors_exit_2(clean_masks):
    runner = CliRunner()
    result = runner.invoke(main, ["validate", str(clean_masks)])
    assert result.exit_code == 2
    assert "Missing option '--num-classes'" in result.output
    result = runner.invoke(main, ["validate", str(clean_masks), "-n", "0"])
    assert result.exit_code == 2
    assert "must be 1..65536 (class ids are stored in 16-bit PNG masks), got 0" in result.output


def test_many_identical_warnings_are_counted_not_repeated(tmp_path):
    for i in range(5):
        save_palette_png(tmp_path / f"{i}.png", voc_mask())
    result = CliRunner().invoke(main, ["validate", str(tmp_path), "-n", "21", "--ignore", "255"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert sum(line.startswith("warning: ") and "palette PNG" in line for line in lines) == 3
    assert "warning: ... and 2 more file(s) with the same palette warning" in result.stdout
    assert lines[-1] == "OK: 5 files, 0 with problems, 5 warning(s)"


def test_images_with_an_exif_orientation_are_named_and_explain_a_size_mismatch(tmp_path):
    """Regression (issue 21): tf.io.decode_jpeg ignores EXIF orientation, so a mask drawn on
    the displayed (turned) photo does not align with the pixels in the record, and validate
    --images said nothing. Now each such image is a warning naming its orientation, and a size
    mismatch that the orientation explains says so."""
    masks, images = tmp_path / "masks", tmp_path / "images"
    stored = np.zeros((4, 6, 3), np.uint8)  # 6 wide, 4 high as stored
    save_oriented(images / "drawn-on-display.jpg", stored, 6)  # displayed 4 wide, 6 high
    save_png(masks / "drawn-on-display.png", np.zeros((6, 4), np.uint8))
    save_oriented(images / "drawn-on-pixels.jpg", stored, 8)
    save_png(masks / "drawn-on-pixels.png", np.zeros((4, 6), np.uint8))
    save_oriented(images / "upside-down.png", stored, 3)
    save_png(masks / "upside-down.png", np.zeros((4, 6), np.uint8))
    save_oriented(images / "upright.jpg", stored, 1)
    save_png(masks / "upright.png", np.zeros((4, 6), np.uint8))
    result = CliRunner().invoke(
        main, ["validate", str(masks), "-n", "2", "--images", str(images), "--json"]
    )
    assert result.exit_code == 1
    problems = {p["path"].rsplit("/", 1)[1]: p for p in json.loads(result.stdout)["problems"]}
    assert set(problems) == {"drawn-on-display.png", "drawn-on-pixels.png", "upside-down.png"}
    error = problems["drawn-on-display.png"]
    assert (error["level"], error["code"]) == ("error", "image")
    assert error["message"] == (
        f"{masks / 'drawn-on-display.png'}: size 4x6 does not match its image "
        f"{images / 'drawn-on-display.jpg'}: the image is stored 6x4 but EXIF orientation 6 "
        "displays it as 4x6, the mask's size; TensorFlow reads the stored pixels (labelfix "
        "to-tfrecord --exif rotate stores the image as displayed)"
    )
    kept = problems["drawn-on-pixels.png"]
    assert (kept["level"], kept["code"]) == ("warning", "exif")
    assert kept["message"] == (
        f"{masks / 'drawn-on-pixels.png'}: its image {images / 'drawn-on-pixels.jpg'} has EXIF "
        "orientation 8 (viewers show it rotated 90 degrees counter-clockwise); TensorFlow reads "
        "the stored pixels, 6x4 like the mask, which follows them and not the displayed 4x6 "
        "picture (labelfix to-tfrecord --exif keep stores it as it is)"
    )
    turned = problems["upside-down.png"]
    assert (
        turned["code"] == "exif"
        and "EXIF orientation 3 (viewers show it rotated 180" in (turned["message"])
    )
    assert "a mask drawn on the displayed picture does not align with them" in turned["message"]
    text = CliRunner().invoke(main, ["validate", str(masks), "-n", "2", "--images", str(images)])
    assert "warning: " + turned["message"] in text.stdout
    assert text.stdout.splitlines()[-1] == "FAILED: 4 files, 1 with problems, 2 warning(s)"


def test_one_file_is_one_file_not_1_files(tmp_path):
    """Found trying labelfix as a new user: "1 records", "1 images", "1 files"."""
    from labelfix.cli._common import plural

    save_png(tmp_path / "masks" / "a.png", np.zeros((4, 6), np.uint8))
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "masks"), "-n", "2"])
    assert result.stdout.splitlines()[-1] == "OK: 1 file, 0 with problems, 0 warning(s)"
    stats = CliRunner().invoke(main, ["stats", str(tmp_path / "masks")]).stdout
    assert stats.startswith("Scanned 1 file: 1 label mask\n")
    remap = CliRunner().invoke(main, ["remap", "--map", "0:1", str(tmp_path / "masks")]).stdout
    assert "Read 1 of 1 file: 1 changed, 0 unchanged, 0 failed." in remap
    assert (plural(1, "record"), plural(2, "image"), plural(1000, "file")) == (
        "1 record",
        "2 images",
        "1,000 files",
    )


def test_the_bad_value_rule_at_exactly_num_classes():
    """Issue 22 (mutation test): the rule's edge was protected only by repair-quality tests.
    With 21 classes, 20 is a class id and 21 is not; a void value is valid whatever it is."""
    import numpy as np

    from labelfix.checks.rules import find_bad_values, is_valid

    assert is_valid(np.array([0, 20, 21, -1, 255]), 21, (255,)).tolist() == [
        True, True, False, False, True,
    ]  # fmt: skip
    labels = np.array([[20, 21], [21, 255]], np.uint8)
    [bad] = find_bad_values([20, 21, 255], [1, 2, 1], labels, num_classes=21, void=(255,))
    assert (bad.value, bad.pixels, bad.y, bad.x) == (21, 2, 0, 1)
