"""Lossy-artifact detection and repair on masks that were resized bilinearly and saved as JPEG."""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from labelfix.checks.artifacts import equal_neighbours, fringe_mask, stray_mask, suspect_values
from labelfix.cli import main
from labelfix.io.masks import read_mask
from labelfix.rewrite.repair import repair
from labelfix.synthetic import shapes_sample

from conftest import save_png


def damaged(seed: int, *, quality: int | None):
    """(reference, damaged): a clean mask upscaled 2x with nearest vs bilinear (+ JPEG)."""
    rng = np.random.default_rng(seed)
    _, clean = shapes_sample(rng, height=64, width=80, num_classes=21, void=255, shapes=6)
    reference = np.asarray(Image.fromarray(clean).resize((160, 128), Image.NEAREST))
    bilinear = Image.fromarray(clean).resize((160, 128), Image.BILINEAR)
    if quality is None:
        return reference, np.asarray(bilinear)
    buf = io.BytesIO()
    bilinear.save(buf, format="JPEG", quality=quality)
    return reference, np.asarray(Image.open(buf))


def test_fringe_and_suspects_golden():
    a = np.array([[0, 0, 7, 15, 15]] * 3, np.uint8)
    assert fringe_mask(a).tolist() == [[False, False, True, False, False]] * 3
    [s] = suspect_values(a, ignore=(255,))
    assert (s.value, s.pixels, s.fringe, s.share) == (7, 3, 3, 1.0)
    # a thin void border is never a suspect
    b = np.array([[0, 0, 255, 15, 15]] * 3, np.uint8)
    assert suspect_values(b, ignore=(255,)) == []
    assert [s.value for s in suspect_values(b)] == [255]


def test_equal_neighbours_and_specks():
    a = np.zeros((5, 5), np.uint8)
    a[2, 2] = 9
    counts = equal_neighbours(a)
    assert counts[2, 2] == 0
    assert counts[0, 0] == 8  # edges are replicated
    assert counts[1, 1] == 7
    stray = stray_mask(a, num_classes=21, ignore=(255,))
    assert stray.sum() == 1 and stray[2, 2]
    assert stray_mask(a, num_classes=21, min_support=0).sum() == 0


def test_repair_nearest_and_ignore_golden():
    a = np.array([[0, 0, 0, 0], [0, 99, 99, 0], [0, 0, 0, 0]], np.uint8)
    fixed = repair(a, num_classes=3, ignore=(255,), strategy="nearest")
    assert fixed.labels.tolist() == [[0] * 4] * 3
    assert (fixed.stray, fixed.changed, fixed.to_ignore) == (2, 2, 0)
    voided = repair(a, num_classes=3, ignore=(255,), out=-1, strategy="ignore")
    assert voided.labels.dtype == np.int8
    assert voided.labels[1].tolist() == [0, -1, -1, 0]
    with pytest.raises(ValueError, match="needs an ignore value"):
        repair(a, num_classes=3, strategy="ignore")


def test_repair_of_a_clean_mask_without_a_lossy_signature_changes_nothing():
    """Regression (issue 21): on lossless masks with no lossy signature, repair changed
    hand-drawn detail (161 px of labelme's clean masks). Now such a mask keeps its specks and
    fringe values unless asked (``all_masks``), and the result says how many it left."""
    rng = np.random.default_rng(0)
    _, clean = shapes_sample(rng, height=64, width=80, num_classes=5, void=255)
    result = repair(clean, num_classes=5, ignore=(255,))
    # the 1-px tips where a disc's void ring pinches off are specks: 6 of 5,120 pixels
    assert (result.changed, result.held, result.signature) == (0, 6, None)
    np.testing.assert_array_equal(result.labels, clean)
    asked = repair(clean, num_classes=5, ignore=(255,), all_masks=True)
    assert (asked.changed, asked.held) == (6, 0)
    without_specks = repair(clean, num_classes=5, ignore=(255,), min_support=0, all_masks=True)
    assert without_specks.changed == 0
    np.testing.assert_array_equal(without_specks.labels, clean)
    # read from a JPEG file, the same mask has a signature: its specks are repaired
    assert repair(clean, num_classes=5, ignore=(255,), jpeg=True).changed == 6


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_bilinear_resize_is_detected_and_repaired_to_99_percent(seed):
    reference, bilinear = damaged(seed, quality=None)
    before = (bilinear == reference).mean()
    assert before < 0.9
    assert suspect_values(bilinear, ignore=(255,))  # interpolated values are found
    fixed = repair(bilinear, num_classes=21, ignore=(255,)).labels
    assert (fixed == reference).mean() >= 0.99


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_bilinear_plus_jpeg_is_repaired_to_88_percent(seed):
    reference, jpeg = damaged(seed, quality=90)
    before = (jpeg == reference).mean()
    fixed = repair(jpeg, num_classes=21, ignore=(255,)).labels
    after = (fixed == reference).mean()
    assert before < 0.78
    assert after >= 0.88
    assert after - before >= 0.12
    valid = (fixed < 21) | (fixed == 255)
    assert valid.all()


def test_stats_and_validate_report_artifacts(tmp_path):
    reference, bilinear = damaged(3, quality=None)
    save_png(tmp_path / "m" / "resized.png", bilinear)
    save_png(tmp_path / "m" / "clean.png", reference)
    runner = CliRunner()
    result = runner.invoke(
        main, ["stats", str(tmp_path / "m"), "--ignore", "255", "--artifacts", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["suspected_artifacts"]
    assert all(s["files"] == 1 for s in report["suspected_artifacts"])
    result = runner.invoke(
        main, ["validate", str(tmp_path / "m"), "-n", "256", "--ignore", "255", "--artifacts"]
    )
    assert result.exit_code == 0  # artifacts are warnings; the values are all in range
    lines = [line for line in result.stdout.splitlines() if "looks interpolated" in line]
    assert len(lines) == 1
    assert "resized.png: looks interpolated: values " in lines[0]
    # per value, the share of its pixels on fringes; the resized file is listed
    assert report["interpolated_files"] == [str(tmp_path / "m" / "resized.png")]
    shares = {v["value"]: v["fringe_share"] for v in report["values"]}
    suspects = {s["value"] for s in report["suspected_artifacts"]}
    assert all(shares[v] >= 0.9 for v in suspects)
    assert shares[0] < 0.1  # the background is a real region


def test_repair_cli_jpeg_masks_to_output_dir_reports_per_file(tmp_path):
    reference, jpeg = damaged(4, quality=90)
    src = tmp_path / "masks"
    src.mkdir()
    Image.fromarray(np.asarray(Image.fromarray(jpeg))).save(src / "a.jpg", quality=90)
    save_png(src / "clean.png", reference)
    out = tmp_path / "fixed"
    result = CliRunner().invoke(
        main, ["repair", str(src), "-n", "21", "--ignore", "255", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"{src / 'a.jpg'}: repaired " in result.stdout
    assert "clean.png: repaired" not in result.stdout
    assert "Read 2 of 2 files: 1 changed, 1 unchanged, 0 failed." in result.stdout
    fixed = np.asarray(Image.open(out / "a.png"))  # a JPEG input becomes a lossless PNG
    assert (fixed == reference).mean() >= 0.88
    valid = (fixed < 21) | (fixed == 255)
    assert valid.all()
    np.testing.assert_array_equal(np.asarray(Image.open(out / "clean.png")), reference)
    # the repaired output validates
    check = CliRunner().invoke(main, ["validate", str(out), "-n", "21", "--ignore", "255"])
    assert check.exit_code == 0, check.output


def test_repair_cli_in_place_ignore_strategy_and_dry_run(tmp_path):
    a = np.zeros((12, 12), np.uint8)
    a[2:4, 2:4] = 99
    path = save_png(tmp_path / "m" / "a.png", a)
    runner = CliRunner()
    dry = runner.invoke(main, ["repair", str(tmp_path / "m"), "-n", "3", "--ignore", "255",
                               "--strategy", "ignore", "--in-place", "--dry-run"])  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert f"{path}: would repair 4 px, 4 of them to ignore" in dry.stdout
    np.testing.assert_array_equal(np.asarray(Image.open(path)), a)
    done = runner.invoke(main, ["repair", str(tmp_path / "m"), "-n", "3", "--ignore", "255",
                                "--strategy", "ignore", "--in-place"])  # fmt: skip
    assert done.exit_code == 0, done.output
    fixed = np.asarray(Image.open(path))
    assert fixed[2:4, 2:4].tolist() == [[255, 255], [255, 255]]
    assert fixed.sum() == 4 * 255
    assert sorted(p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith(".")) == [
        "a.png"
    ]


def test_repair_usage_errors(tmp_path):
    save_png(tmp_path / "a.png", np.zeros((3, 3), np.uint8))
    runner = CliRunner()
    result = runner.invoke(main, ["repair", str(tmp_path), "--strategy", "ignore", "-n", "2"])
    assert result.exit_code == 2
    assert "needs an ignore value" in result.output
    result = runner.invoke(main, ["repair", str(tmp_path), "--ignore", "255"])
    assert result.exit_code == 2
    assert "Missing option '--num-classes'" in result.output


def test_remap_converts_colour_masks_with_colormap(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (224, 224, 192)
    rgb[1, 2] = (192, 128, 128)
    save_png(tmp_path / "c" / "x.png", rgb)
    result = CliRunner().invoke(
        main,
        ["remap", str(tmp_path / "c"), "--colormap", "voc", "--ignore", "255", "--out", "-1",
         "-o", str(tmp_path / "ids")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "ids" / "x.npy").tolist() == [[-1, 0, 0], [0, 0, 15]]


def test_repair_of_a_mask_with_nowhere_to_send_its_strays_fails_that_file_not_the_run(tmp_path):
    """Regression (a hostile-user pass): ``repair -n 3`` on a mask of one stray value with no
    ``--ignore`` raised ValueError in the worker: a traceback, the run's record left
    incomplete. Now that file fails with one line naming it; the others are written."""
    save_png(tmp_path / "z" / "a.png", np.full((8, 8), 50, np.uint8))
    halves = np.repeat(np.array([[1] * 4 + [2] * 4], np.uint8), 8, axis=0)
    stray = halves.copy()
    stray[7, 7] = 50
    save_png(tmp_path / "z" / "b.png", stray)
    # --max-absorbed 1: a.png is one region of a value that is no class, which is refused too
    result = CliRunner().invoke(
        main, ["repair", "-n", "3", str(tmp_path / "z"), "-j", "1", "--max-absorbed", "1"]
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert (
        f"{tmp_path / 'z' / 'a.png'}: 64 stray pixels have no class next to them and no ignore "
        "value is given (give one with --ignore)"
    ) in result.stderr
    out = tmp_path / "z-repaired"
    assert sorted(os.listdir(out)) == [".labelfix-remap.json", ".labelfix-written", "b.png"]
    assert np.asarray(Image.open(out / "b.png")).tolist() == halves.tolist()
    (run,) = json.loads((out / ".labelfix-remap.json").read_text())["runs"]
    assert run["complete"] and list(run["files"]) == ["b.png"]


def _pairs(before: np.ndarray, after: np.ndarray) -> dict[tuple[int, int], int]:
    """Pixels per (value before, value after): what a file's change is, counted by hand."""
    found: dict[tuple[int, int], int] = {}
    for v, o in zip(before.ravel().tolist(), after.ravel().tolist(), strict=True):
        found[(v, o)] = found.get((v, o), 0) + 1
    return found


def test_repair_dry_run_reports_exactly_what_the_run_changes(tmp_path):
    """Regression (issue 21): repair's dry run said "0 pixels would change" with every value
    "(unchanged)", next to "would repair 2 px": the table came from the label map (identity
    for a repair), not from the repair. Now dry-run figures == real-run figures == a diff of
    the files before and after, per value and what it becomes."""
    reference, jpeg = damaged(4, quality=90)
    _, bilinear = damaged(5, quality=None)
    src = tmp_path / "masks"
    src.mkdir()
    Image.fromarray(jpeg).save(src / "a.jpg", quality=90)
    save_png(src / "b.png", bilinear)
    save_png(src / "c.png", reference)
    before = {name: read_mask(src / name).array for name in ("a.jpg", "b.png", "c.png")}
    args = ["repair", str(src), "-n", "21", "--ignore", "255", "-o", str(tmp_path / "out")]
    dry = CliRunner().invoke(main, [*args, "--dry-run", "--json"])
    real = CliRunner().invoke(main, [*args, "--json"])
    assert dry.exit_code == 0 == real.exit_code, dry.output + real.output
    dry_run, done = json.loads(dry.stdout), json.loads(real.stdout)
    diff: dict[tuple[int, int], list[int]] = {}
    for name, array in before.items():
        after = np.asarray(Image.open(tmp_path / "out" / name.replace(".jpg", ".png")))
        for pair, n in _pairs(array, after).items():
            diff.setdefault(pair, [0, 0])
            diff[pair][0] += n
            diff[pair][1] += 1
    expected = [
        {"value": v, "becomes": o, "pixels": p, "files": f}
        for (v, o), (p, f) in sorted(diff.items())
    ]
    assert dry_run["values"] == done["values"] == expected
    changed = sum(p for (v, o), (p, _) in diff.items() if v != o)
    assert dry_run["changed_pixels"] == done["changed_pixels"] == changed > 1000
    assert dry_run["repaired_pixels"] == done["repaired_pixels"] == changed
    text = CliRunner().invoke(main, [*args, "--dry-run"]).stdout
    total = sum(a.size for a in before.values())
    assert f"{changed:,} of {total:,} pixels would change" in text
    (v, o), (p, f) = max(((k, n) for k, n in diff.items() if k[0] != k[1]), key=lambda i: i[1])
    row = re.compile(rf"^\s*{v}\s+{o}\s+{p:,}\s+{f}$")  # the biggest change, in the table
    assert any(row.match(line) for line in text.splitlines()), text


def test_repair_leaves_lossless_masks_with_no_lossy_signature_as_drawn(tmp_path):
    """Regression (issue 21): on lossless masks with no lossy signature (most of a clean VOC
    set), repair changed hand-drawn detail (161 px of labelme's clean masks) without a word.
    Now it names each such mask and what it left, and --all repairs them too. A value that is
    no class is still repaired: it cannot be trained on."""
    rng = np.random.default_rng(0)
    _, clean = shapes_sample(rng, height=64, width=80, num_classes=5, void=255)
    wrong = clean.copy()
    wrong[20, 20] = 9  # no class of 5
    src = tmp_path / "m"
    save_png(src / "clean.png", clean)
    save_png(src / "wrong.png", wrong)
    args = [
        "repair",
        str(src),
        "-n",
        "5",
        "--ignore",
        "255",
        "-o",
        str(tmp_path / "out"),
        "-j",
        "1",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (
        f"{src / 'clean.png'}: left 6 stray px as drawn: no lossy signature (no JPEG, fringe "
        "values or specks), they may be hand-drawn detail (--all repairs them)"
    ) in result.stdout
    assert f"{src / 'wrong.png'}: repaired 1 px" in result.stdout
    assert (
        "Left as drawn: 12 stray px in 2 file(s) with no lossy signature (no JPEG, fringe values "
        "or specks): specks and thin regions of a lossless mask may be drawn so; give --all to "
        "repair them too."
    ) in result.stdout
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "clean.png")), clean)
    fixed = np.asarray(Image.open(tmp_path / "out" / "wrong.png"))
    assert (fixed != wrong).sum() == 1 and 0 <= fixed[20, 20] < 5
    everything = CliRunner().invoke(main, [*args, "--all", "--json"])
    assert everything.exit_code == 0, everything.output
    report = json.loads(everything.stdout)
    assert (report["repaired_pixels"], report["held_back_pixels"]) == (13, 0)
    assert (np.asarray(Image.open(tmp_path / "out" / "clean.png")) != clean).sum() == 6


def test_grey_jpeg_mask_with_too_small_num_classes_is_refused_not_absorbed(tmp_path):
    """Regression (issue 21): a grey JPEG mask repaired with too small -n had most of its
    pixels (83%) turned into class 0 without a word: every class above -n was "stray". Now the
    file fails with one line naming it, the share, and the -n the values seen suggest."""
    rng = np.random.default_rng(4)
    _, clean = shapes_sample(rng, height=120, width=160, num_classes=21, void=255, shapes=6)
    assert sorted(np.unique(clean).tolist()) == [0, 11, 12, 15, 20, 255]
    src = tmp_path / "g"
    src.mkdir()
    Image.fromarray(clean).save(src / "grey.jpg", quality=90)
    result = CliRunner().invoke(
        main, ["repair", str(src), "-n", "2", "--ignore", "255", "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert (
        f"labelfix: error: {src / 'grey.jpg'}: values 11, 12, 15, 20 are no class id (expected "
        "0..1 or ignore 255) yet fill 29% of the pixels, in regions: repair would absorb them "
        "into their neighbours (more than --max-absorbed 5%); the values seen suggest -n 21, or "
        "--ignore for a void value"
    ) in result.stderr
    assert not (tmp_path / "out" / "grey.png").exists()
    assert "matches no pixel" not in result.stderr  # the failed file was read: 255 was seen
    right = CliRunner().invoke(
        main, ["repair", str(src), "-n", "21", "--ignore", "255", "-o", str(tmp_path / "out")]
    )
    assert right.exit_code == 0, right.output
    fixed = np.asarray(Image.open(tmp_path / "out" / "grey.png"))
    assert (fixed == clean).mean() > 0.9
