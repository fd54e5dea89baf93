"""Regression tests for what a hostile-but-realistic user found (issue 11): inputs that passed
every check and failed in training, tracebacks, hangs, contradictions accepted, unhelpful words."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from labelfix.cli import main
from labelfix.errors import UnreadableMask
from labelfix.io.masks import iter_mask_files, read_mask
from labelfix.io.png import encode_png, png_problem

from conftest import handmade_png, save_png, voc_mask


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def chunks(data: bytes) -> list[tuple[int, bytes]]:
    """``(offset, tag)`` of every PNG chunk."""
    found, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        found.append((pos, data[pos + 4 : pos + 8]))
        pos += 12 + length
    return found


def bad_crc_png(array: np.ndarray) -> bytes:
    """A PNG whose IDAT CRC is wrong: Pillow decodes it, TensorFlow's decoder does not."""
    data = bytearray(encode_png(array))
    pos = next(p for p, tag in chunks(bytes(data)) if tag == b"IDAT")
    (length,) = struct.unpack_from(">I", data, pos)
    data[pos + 8 + length] ^= 0xFF  # first byte of the CRC
    return bytes(data)


def bad_adler_png(array: np.ndarray) -> bytes:
    """Correct CRCs, but the zlib stream's Adler-32 is wrong (a corrupt stream)."""
    data = bytearray(encode_png(array))
    pos = next(p for p, tag in chunks(bytes(data)) if tag == b"IDAT")
    (length,) = struct.unpack_from(">I", data, pos)
    body = bytearray(data[pos + 8 : pos + 8 + length])
    body[-1] ^= 0xFF
    crc = zlib.crc32(b"IDAT" + bytes(body))
    data[pos + 8 : pos + 8 + length] = body
    data[pos + 8 + length : pos + 12 + length] = struct.pack(">I", crc)
    return bytes(data)


# --------------------------------------------------------------------------- silently wrong


def test_png_with_bad_crc_decodes_in_pillow_but_is_refused(tmp_path: Path):
    data = bad_crc_png(voc_mask())
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), voc_mask())  # Pillow
    assert png_problem(data) == "bad CRC-32 in chunk IDAT"
    assert png_problem(bad_adler_png(voc_mask())).startswith("corrupt zlib stream")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "bad.png").write_bytes(data)
    save_png(tmp_path / "m" / "good.png", voc_mask())
    result = run("validate", str(tmp_path / "m"), "-n", "21", "--ignore", "255")
    assert result.exit_code == 1
    assert (
        f"{tmp_path / 'm' / 'bad.png'}: corrupt or truncated image (bad CRC-32 in chunk IDAT; "
        "TensorFlow's PNG decoder fails)"
    ) in result.stdout
    assert "1 with problems" in result.stdout  # the good file is still checked


def test_png_with_bad_crc_does_not_reach_the_records(tmp_path: Path):
    pytest.importorskip("tensorflow")
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "a.png").write_bytes(bad_adler_png(voc_mask()))
    save_png(tmp_path / "img" / "a.png", np.zeros((8, 10, 3), np.uint8))
    result = run(
        "to-tfrecord", "--images", str(tmp_path / "img"), "--masks", str(tmp_path / "gt"),
        "-o", str(tmp_path / "tfr"), "-n", "21", "--ignore", "255",
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"{tmp_path / 'gt' / 'a.png'}: corrupt or truncated image (corrupt zlib" in result.stderr
    assert not list((tmp_path / "tfr").glob("*.tfrecord"))


def test_truncated_jpeg_image_fails_validate_images_and_to_tfrecord(tmp_path: Path):
    pytest.importorskip("tensorflow")
    save_png(tmp_path / "gt" / "a.png", voc_mask())
    buf = io.BytesIO()  # the header survives the cut, only the end of the pixel data is lost
    noise = np.random.default_rng(0).integers(0, 255, (8, 10, 3), np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG")
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(buf.getvalue()[:-40])
    result = run(
        "validate", str(tmp_path / "gt"), "-n", "21", "--ignore", "255",
        "--images", str(tmp_path / "img"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"its image {tmp_path / 'img' / 'a.jpg'}: does not decode completely" in result.stdout
    result = run(
        "to-tfrecord", "--images", str(tmp_path / "img"), "--masks", str(tmp_path / "gt"),
        "-o", str(tmp_path / "tfr"), "-n", "21", "--ignore", "255",
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"{tmp_path / 'img' / 'a.jpg'}: does not decode completely" in result.stderr


def test_verify_decodes_images_and_checks_mask_crcs(tmp_path: Path):
    """A record whose image is truncated or whose mask PNG has a bad CRC fails verify."""
    pytest.importorskip("tensorflow")
    from labelfix.records.example import feature_key, parse_example, serialize_example
    from labelfix.records.verify import _VerifyPlan, check_record

    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (8, 10, 3), np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG")
    good = {
        feature_key("image"): buf.getvalue(),
        feature_key("image_format"): "jpeg",
        feature_key("filename"): "a.jpg",
        feature_key("source_id"): "a",
        feature_key("height"): 8,
        feature_key("width"): 10,
        feature_key("channels"): 3,
        feature_key("mask"): encode_png(voc_mask()),
        feature_key("mask_format"): "png",
    }
    plan = _VerifyPlan(num_classes=21, ignore=255, encoding="png", mask_dtype="uint8")
    assert check_record(("s", 0, serialize_example(good)), plan).problems == ()
    cut = {**good, feature_key("image"): buf.getvalue()[: len(buf.getvalue()) - 40]}
    [problem] = check_record(("s", 1, serialize_example(cut)), plan).problems
    assert problem.startswith("s: record 1 (a): image does not decode completely")
    crc = {**good, feature_key("mask"): bad_crc_png(voc_mask())}
    [problem] = check_record(("s", 2, serialize_example(crc)), plan).problems
    assert problem == "s: record 2 (a): mask: corrupt or truncated PNG (bad CRC-32 in chunk IDAT)"
    assert parse_example(serialize_example(crc))[feature_key("filename")] == [b"a.jpg"]


def lock_directories_named_locked(monkeypatch) -> None:
    """Directories named ``locked`` cannot be listed. (Root ignores permissions, so the refusal
    is simulated where os.walk and os.listdir list.)"""
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", lambda p=".": list(e.name for e in scandir(p)))


def test_unlistable_directory_is_an_error_not_skipped(tmp_path: Path, monkeypatch):
    save_png(tmp_path / "m" / "a.png", voc_mask())
    save_png(tmp_path / "m" / "locked" / "b.png", voc_mask())
    lock_directories_named_locked(monkeypatch)
    assert [rel for _, rel in iter_mask_files([tmp_path / "m"])] == ["a.png", "locked"]
    result = run("validate", str(tmp_path / "m"), "-n", "21", "--ignore", "255", "-j", "1")
    assert result.exit_code == 1
    assert (
        f"{tmp_path / 'm' / 'locked'}: cannot list this directory (Permission denied): "
        "the masks in it were not read"
    ) in result.stdout
    assert "OK" not in result.stdout


def test_fifo_named_like_a_mask_is_reported_and_never_opened(tmp_path: Path):
    (tmp_path / "m").mkdir()
    os.mkfifo(tmp_path / "m" / "x.png")
    save_png(tmp_path / "m" / "y.png", voc_mask())
    code = (
        "import sys; from labelfix.cli import main; "
        f"main(['validate', {str(tmp_path / 'm')!r}, '-n', '21', '--ignore', '255'])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )  # a hang fails here
    assert proc.returncode == 1
    assert f"{tmp_path / 'm' / 'x.png'}: not a regular file (a FIFO): not read" in proc.stdout
    with pytest.raises(UnreadableMask, match="a FIFO"):
        read_mask(tmp_path / "m" / "x.png")


# --------------------------------------------------------------------------- tracebacks


def test_uint64_npy_gives_values_or_a_clean_error(tmp_path: Path):
    np.save(tmp_path / "small.npy", np.array([[1, 7]], np.uint64))
    np.save(tmp_path / "huge.npy", np.array([[1, 2**63 + 5]], np.uint64))
    assert read_mask(tmp_path / "small.npy").labels.tolist() == [[1, 7]]
    for command in (
        ["stats"],
        ["validate", "-n", "5"],
        ["remap", "--map", "1:0", "-o", str(tmp_path / "o")],
    ):
        result = run(*command[:1], str(tmp_path / "huge.npy"), *command[1:])
        assert result.exit_code == 1, (command, result.output)
        assert (
            f"{tmp_path / 'huge.npy'}: value 9223372036854775813 does not fit a signed 64-bit "
            "integer (no class id is so large)"
        ) in result.output
        assert "Traceback" not in result.output


def test_num_classes_is_bounded_by_what_a_png_mask_holds(tmp_path: Path):
    save_png(tmp_path / "a.png", voc_mask())
    for n in ("1000000000", "65537"):
        result = run("validate", str(tmp_path), "-n", n)
        assert result.exit_code == 2
        assert f"must be 1..65536 (class ids are stored in 16-bit PNG masks), got {n}" in (
            result.output
        )
    assert run("validate", str(tmp_path), "-n", "65536", "--ignore", "255").exit_code == 0


# --------------------------------------------------------------------------- contradictions


def test_a_value_mapped_twice_is_a_usage_error(tmp_path: Path):
    save_png(tmp_path / "m" / "a.png", voc_mask())
    result = run("remap", "--map", "1:2", "--map", "1:3", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert "value 1 is mapped twice: to 2 (--map 1:2) and to 3 (--map 1:3)" in result.output
    (tmp_path / "map.json").write_text('{"5": 1, "5": 2}')
    result = run("remap", "--map-file", str(tmp_path / "map.json"), str(tmp_path / "m"))
    assert result.exit_code == 2
    assert f"value 5 is mapped twice: to 1 ({tmp_path / 'map.json'})" in result.output
    result = run("remap", "--map-file", str(tmp_path / "map.json"), "--map", "7:0", "-h")
    assert result.exit_code == 0  # help still works


def test_void_merged_into_a_class_needs_an_explicit_flag(tmp_path: Path):
    save_png(tmp_path / "m" / "a.png", voc_mask())
    result = run("remap", "--ignore", "255", "--out", "0", "-n", "21", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert "void pixels would become 0, which is a class id (num_classes 21: 0..20)" in (
        result.output
    )
    assert not (tmp_path / "m-remapped").exists()


def test_ignore_value_that_matches_no_pixel_is_a_warning(tmp_path: Path):
    save_png(tmp_path / "m" / "a.png", voc_mask())
    result = run("stats", str(tmp_path / "m"), "--ignore", "254")
    assert result.exit_code == 0
    assert (
        "labelfix: warning: ignore value 254 matches no pixel of the 1 mask(s) "
        "(values seen: 0, 5, 15, 255); is it this dataset's void value?"
    ) in result.stderr
    result = run("validate", str(tmp_path / "m"), "-n", "21", "--ignore", "254", "--json")
    report = json.loads(result.stdout)
    assert [p["code"] for p in report["problems"]].count("unused-ignore") == 1
    # remap words it the same (issue 22: the warning was worded three times)
    result = run("remap", str(tmp_path / "m"), "--ignore", "254", "--out", "0", "-o",
                 str(tmp_path / "o"))  # fmt: skip
    assert (
        "labelfix: warning: ignore value 254 matches no pixel of the 1 mask(s) "
        "(values seen: 0, 5, 15, 255); is it this dataset's void value?"
    ) in result.stderr


# --------------------------------------------------------------------------- words


def test_empty_directory_is_named_and_nothing_says_ok(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    result = run("validate", str(tmp_path / "empty"), "-n", "3")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"labelfix: error: no mask files (*.png, *.npy) under {tmp_path / 'empty'}\n"
    )


def test_ignore_suggestion_never_suggests_the_value_itself(tmp_path: Path):
    from labelfix.errors import UsageError
    from labelfix.labels.labelmap import LabelMap
    from labelfix.records.spec import WriteSpec

    with pytest.raises(UsageError) as info:
        WriteSpec(images="i", masks="m", output="o", num_classes=300, label_map=LabelMap(out=255))
    assert str(info.value).endswith("choose another --out (e.g. -1 or 65535)")


def test_remap_reports_an_unlistable_directory_and_keeps_going(tmp_path: Path, monkeypatch):
    save_png(tmp_path / "m" / "a.png", voc_mask())
    save_png(tmp_path / "m" / "locked" / "b.png", voc_mask())
    lock_directories_named_locked(monkeypatch)
    result = run("remap", "--ignore", "255", "--out", "0", str(tmp_path / "m"), "--in-place",
                 "-j", "1")  # fmt: skip
    assert result.exit_code == 1
    assert (
        f"labelfix: error: {tmp_path / 'm' / 'locked'}: cannot list this directory "
        "(Permission denied): the masks in it were not read"
    ) in result.stderr
    assert read_mask(tmp_path / "m" / "a.png").labels.max() == 15  # 255 became 0, 15 stayed


def test_void_is_class_merges_void_on_purpose(tmp_path: Path):
    save_png(tmp_path / "m" / "a.png", voc_mask())
    result = run("remap", "--ignore", "255", "--out", "0", "-n", "21", "--void-is-class",
                 str(tmp_path / "m"), "-o", str(tmp_path / "o"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert 255 not in read_mask(tmp_path / "o" / "a.png").labels


def test_an_output_that_is_an_input_mask_is_a_usage_error(tmp_path: Path):
    """Found by a hostile-user pass: `show -o` and `stats --per-image` overwrote the mask read."""
    mask = save_png(tmp_path / "m" / "a.png", voc_mask())
    before = mask.read_bytes()
    for command in (
        ["show", str(mask), "-o", str(mask)],
        ["stats", str(tmp_path / "m"), "--per-image", str(mask)],
    ):
        result = run(*command)
        assert result.exit_code == 2, result.output
        assert f"is the input {mask.parent if 'stats' in command else mask}, which" in result.output
    assert mask.read_bytes() == before


def test_an_output_symlink_is_followed_and_a_device_is_refused(tmp_path: Path):
    """Found by a hostile-user pass: `--per-image /dev/stdout` replaced the /dev/stdout link
    with a regular file."""
    save_png(tmp_path / "m" / "a.png", voc_mask())
    (tmp_path / "link.csv").symlink_to(tmp_path / "rows.csv")
    for _ in range(2):  # written, then replaced: labelfix wrote it
        result = run("stats", str(tmp_path / "m"), "--per-image", str(tmp_path / "link.csv"))
        assert result.exit_code == 0, result.output
        assert (tmp_path / "link.csv").is_symlink()
        assert (tmp_path / "rows.csv").read_text().startswith("path,kind,")
    (tmp_path / "mine.csv").write_text("old")  # a link to the user's own file: never replaced
    (tmp_path / "other.csv").symlink_to(tmp_path / "mine.csv")
    result = run("stats", str(tmp_path / "m"), "--per-image", str(tmp_path / "other.csv"))
    assert result.exit_code == 2
    assert "other.csv already exists and labelfix did not write it" in result.output
    assert (tmp_path / "mine.csv").read_text() == "old"
    os.mkfifo(tmp_path / "pipe.csv")
    result = run("stats", str(tmp_path / "m"), "--per-image", str(tmp_path / "pipe.csv"))
    assert result.exit_code == 2
    assert f"{tmp_path / 'pipe.csv'}: not a regular file" in result.output
    assert stat_is_fifo(tmp_path / "pipe.csv")


def stat_is_fifo(path: Path) -> bool:
    import stat

    return stat.S_ISFIFO(os.stat(path).st_mode)


def test_junk_npy_is_not_a_npy_file_and_no_unpickling_advice(tmp_path: Path):
    (tmp_path / "bad.npy").write_bytes(b"junk")
    with pytest.raises(UnreadableMask, match=r"bad\.npy: not a \.npy file \(no NumPy header\)$"):
        read_mask(tmp_path / "bad.npy")


def test_remap_into_an_earlier_output_says_what_it_replaced(tmp_path: Path):
    """Found by a hostile-user pass: a second remap into the same output replaced the first
    run's files without a word."""
    save_png(tmp_path / "g" / "a.png", voc_mask())
    save_png(tmp_path / "g" / "b.png", voc_mask())
    first = run("remap", "--ignore", "255", "--out", "0", str(tmp_path / "g"))
    assert first.exit_code == 0 and "replaced" not in first.stderr
    second = run("remap", "--ignore", "255", "--out", "3", str(tmp_path / "g"))
    assert second.exit_code == 0
    assert (
        f"labelfix: note: replaced 2 existing file(s) in {tmp_path / 'g-remapped'}/ "
        "(an earlier run's output)"
    ) in second.stderr


def test_remap_never_replaces_a_file_no_earlier_run_wrote(tmp_path: Path):
    """Regression (a hostile-user pass): ``remap ... -o ex/`` replaced a mask the user had
    copied into ``ex/`` and called it "an earlier run's output". Now a usage error, the file
    untouched; ``remap DIR DIR/a.png`` (one mask given twice) is refused too."""
    save_png(tmp_path / "g" / "a.png", voc_mask())
    (tmp_path / "ex").mkdir()
    own = tmp_path / "ex" / "a.png"
    own.write_bytes(b"the user's ground truth")
    result = run(
        "remap", "--ignore", "255", "--out", "0", str(tmp_path / "g"), "-o", str(tmp_path / "ex")
    )
    assert result.exit_code == 2
    assert f"{own} already exists and labelfix did not write it" in result.stderr
    assert own.read_bytes() == b"the user's ground truth"
    twice = run("remap", "--ignore", "255", "--out", "0", str(tmp_path / "g"),
                str(tmp_path / "g" / "a.png"), "-o", str(tmp_path / "o2"))  # fmt: skip
    assert twice.exit_code == 2
    assert "is given twice" in twice.stderr
    assert not (tmp_path / "o2").exists()


def test_an_ignore_value_that_is_also_a_class_id_is_warned_about(tmp_path: Path):
    """Regression (a hostile-user pass): ``validate -n 6 --ignore 0`` treated class 0 as void
    without a word. Now one warning line on stderr (the run itself is unchanged: legal for
    ADE20K-style ids), from validate, remap and to-tfrecord alike; none for 255."""
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 1:4] = 2
    save_png(tmp_path / "masks" / "a.png", mask)
    masks = str(tmp_path / "masks")
    warning = "labelfix: warning: --ignore 0 is also a class id (0..5): its pixels count as void"
    result = run("validate", masks, "-n", "6", "--ignore", "0")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(warning)
    assert run("validate", masks, "-n", "6", "--ignore", "255").stderr == ""
    remap = run("remap", masks, "-n", "6", "--ignore", "0", "--out", "-1", "--dry-run")
    assert remap.exit_code == 0, remap.output
    assert warning in remap.stderr


def test_validate_names_a_mask_with_two_images_and_checks_the_others(tmp_path: Path):
    """Regression (a hostile-user pass): two images of one stem were picked silently; then the
    first such mask stopped the whole run. Now a problem of that mask; the others are checked."""
    for name in ("a", "b"):
        save_png(tmp_path / "m" / f"{name}.png", np.zeros((4, 5), np.uint8))
    (tmp_path / "i").mkdir()
    for name in ("a.jpg", "a.png", "b.png"):
        Image.new("RGB", (5, 4)).save(tmp_path / "i" / name)
    result = run("validate", str(tmp_path / "m"), "-n", "2", "--images", str(tmp_path / "i"))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{tmp_path / 'm' / 'a.png'}: 2 images match it: {tmp_path / 'i' / 'a.jpg'}, "
        f"{tmp_path / 'i' / 'a.png'}",
        "FAILED: 2 files, 1 with problems, 0 warning(s)",
    ]


def test_a_png_with_fewer_rows_than_its_ihdr_is_refused_by_every_command(tmp_path: Path):
    """Regression (issue 21): a mask whose IHDR claims 12 rows over a valid zlib stream of 10
    passed stats, validate, remap (which wrote rows of 0), repair, show, to-tfrecord ("kept byte
    for byte") and verify; TensorFlow then failed in training naming no file. Each command now
    names the file and the two row counts, exit 1, no traceback."""
    from labelfix.records.example import feature_key, serialize_example
    from labelfix.records.verify import _VerifyPlan, check_record

    rows = np.zeros((10, 6), np.uint8)
    rows[4:, 2:] = 1
    liar = handmade_png(rows, 8, 0, ihdr_height=12)
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "a.png").write_bytes(liar)
    Image.new("RGB", (6, 12)).save(tmp_path / "a.png")  # the image is as tall as the IHDR says
    (tmp_path / "images").mkdir()
    Image.new("RGB", (6, 12)).save(tmp_path / "images" / "a.png")
    said = f"{masks / 'a.png'}: corrupt or truncated image (IHDR says 12 rows, the image data "
    said += "holds 10; TensorFlow's PNG decoder fails)"
    commands = {
        "stats": ["stats", str(masks)],
        "validate": ["validate", str(masks), "-n", "2"],
        "remap": ["remap", str(masks), "--map", "1:0", "-o", str(tmp_path / "r")],
        "repair": ["repair", str(masks), "-n", "2", "-o", str(tmp_path / "p")],
        "show": ["show", str(masks), "-o", str(tmp_path / "s.png")],
        "to-tfrecord": ["to-tfrecord", "--images", str(tmp_path / "images"), "--masks",
                        str(masks), "-o", str(tmp_path / "t"), "-n", "2"],
    }  # fmt: skip
    for name, args in commands.items():
        result = run(*args)
        assert result.exit_code == 1, (name, result.output)
        assert "Traceback" not in result.output
        assert said in result.output, (name, result.output)
    assert not (tmp_path / "r" / "a.png").exists() and not list(tmp_path.glob("t/*.tfrecord"))
    record = {
        feature_key("image"): (tmp_path / "a.png").read_bytes(),
        feature_key("image_format"): "png",
        feature_key("filename"): "a.png",
        feature_key("source_id"): "a",
        feature_key("height"): 12,
        feature_key("width"): 6,
        feature_key("channels"): 3,
        feature_key("mask"): liar,
        feature_key("mask_format"): "png",
    }
    plan = _VerifyPlan(num_classes=2, ignore=None, encoding="png", mask_dtype="uint8")
    [problem] = check_record(("s", 0, serialize_example(record)), plan).problems
    assert problem == (
        "s: record 0 (a): mask: corrupt or truncated PNG (IHDR says 12 rows, the image data "
        "holds 10)"
    )


# ----------------------------------------------------------------- option files (issue 21)


def test_special_files_given_as_option_files_are_refused_never_opened(tmp_path: Path):
    """Regression (issue 21): a FIFO or /dev/zero given as --map-file, --class-names,
    --colormap, --list or --class-weights hung the command (a FIFO waits for a writer,
    /dev/zero never ends). Each is refused as masks are: exit 2, one line naming the file."""
    save_png(tmp_path / "m" / "a.png", voc_mask())
    save_png(tmp_path / "img" / "a.png", voc_mask())
    os.mkfifo(tmp_path / "fifo")
    masks, images = str(tmp_path / "m"), str(tmp_path / "img")
    commands = {
        "--map-file": ["remap", masks, "-o", str(tmp_path / "out"), "--map-file"],
        "--class-names": ["stats", masks, "--class-names"],
        "--colormap": ["validate", masks, "-n", "21", "--colormap"],
        "--list": ["to-tfrecord", "--images", images, "--masks", masks, "-n", "21", "--output",
                   str(tmp_path / "tfr"), "--list"],
        "--class-weights": ["train", str(tmp_path), "-n", "2", "-e", "1", "-b", "1",
                            "--class-weights"],
    }  # fmt: skip
    script = textwrap.dedent(
        f"""
        import json
        from click.testing import CliRunner
        from labelfix.cli import main
        for special in ({str(tmp_path / "fifo")!r}, "/dev/zero"):
            for option, command in {commands!r}.items():
                result = CliRunner().invoke(main, [*command, special])
                print(json.dumps([option, result.exit_code, result.output.splitlines()[-1]]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )  # a hang fails here
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 10
    for option, code, line in rows:
        assert code == 2, (option, line)
        assert "not a regular file (a FIFO)" in line or "(a character device)" in line, line
    assert stat_is_fifo(tmp_path / "fifo")
    assert not (tmp_path / "out").exists() and not (tmp_path / "tfr").exists()


def test_option_files_are_capped_in_size(tmp_path: Path):
    """Regression (issue 21): an option file is read whole; a huge one given by mistake (a
    sparse 5 GB file, say) was read into memory. Over 16 MiB: refused, without reading it."""
    big = tmp_path / "names.txt"
    with open(big, "wb") as fh:
        fh.truncate(5 << 30)  # sparse: no disk used
    save_png(tmp_path / "m" / "a.png", voc_mask())
    result = run("stats", str(tmp_path / "m"), "--class-names", str(big))
    assert result.exit_code == 2
    assert f"{big}: the class names file is over 16 MiB; is it the file you meant?" in " ".join(
        result.output.split()
    )


def test_label_values_out_of_range_are_usage_errors_before_anything_is_written(tmp_path: Path):
    """Regression (issue 21): ``--map 7:<huge>`` exited 1 after creating the output directory
    and its run record (every file failed on a numpy overflow); a map file, --ignore and --out
    alike. Values must fit a signed 32-bit integer: exit 2, nothing written."""
    save_png(tmp_path / "m" / "a.png", voc_mask())
    (tmp_path / "rules.csv").write_text("7,99999999999\n")
    out = tmp_path / "out"
    huge = "9" * 5000
    cases = [
        (["--map", f"7:{huge}"], "value 999999999999... (5,000 digits) is out of range"),
        (["--map", "7:2147483648"], "value 2147483648 is out of range"),
        (["--map-file", str(tmp_path / "rules.csv")], "value 99999999999 is out of range"),
        (["--ignore", "-2147483649"], "value -2147483649 is out of range"),
        (["--ignore", "255", "--out", "0x100000000"], "value 4294967296 is out of range"),
    ]
    for args, message in cases:
        result = run("remap", str(tmp_path / "m"), "-o", str(out), *args)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
        assert "(label values are -2147483648..2147483647)" in " ".join(result.output.split())
        assert not out.exists()


def test_remap_note_names_the_unsigned_dtype_it_writes(tmp_path: Path):
    """Regression (issue 21): ``--map 7:70000`` wrote uint32 .npy masks while the note said
    "the smallest signed integer dtype"; -1 still gives signed masks, and says so."""
    save_png(tmp_path / "m" / "a.png", voc_mask())
    result = run("remap", str(tmp_path / "m"), "-o", str(tmp_path / "wide"), "--map", "15:70000")
    assert result.exit_code == 0, result.output
    assert ".npy of dtype uint32, unsigned as no value is negative" in result.output
    wide = np.load(tmp_path / "wide" / "a.npy")
    assert wide.dtype == np.uint32 and int(wide.max()) == 70000
    result = run("remap", str(tmp_path / "m"), "-o", str(tmp_path / "neg"), "--map", "15:-1")
    assert result.exit_code == 0, result.output
    assert ".npy with the smallest signed integer dtype" in result.output
    assert np.load(tmp_path / "neg" / "a.npy").dtype == np.int16
