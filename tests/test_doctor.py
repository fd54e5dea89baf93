"""labelfix doctor: the conventions of small datasets, and the commands it prints run as printed.

Each printed command runs through the CLI runner on the fixture, from the directory doctor was
run in, except ``train`` (TensorFlow; tens of seconds on two cores): its arguments are parsed
by the real ``train`` command, which checks every option, without training.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from labelfix.checks.void import ValueTotals, guess_void, value_shapes
from labelfix.cli import main
from labelfix.doctor import diagnose

import dataset_fixtures as fixtures
from conftest import save_oriented, save_png

KEYS = {"convention", "ignore", "num_classes", "class_names", "pairs", "splits", "problems",
        "commands"}  # fmt: skip


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def doctor_json(root: Path, *args) -> dict:
    result = cli("doctor", root, "--json", "-j", "1", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run_commands(report: dict) -> None:
    """Run every printed command (train parsed only) and check it succeeds."""
    for argv in report["commands"]:
        assert argv[0] == "labelfix"
        if argv[1] == "train":
            command = main.get_command(None, "train")
            ctx = command.make_context("train", list(argv[2:]))  # every option checked
            assert ctx.params["num_classes"] == report["num_classes"] or report["ignore"] is None
            continue
        result = cli(*argv[1:], "-j", "1") if argv[1] != "verify" else cli(*argv[1:])
        assert result.exit_code == 0, (argv, result.output)


def conclusion(report: dict, topic: str) -> dict:
    return next(c for c in report["conclusions"] if c["topic"] == topic)


def test_voc_palette_with_boundary_void(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixtures.voc(Path("voc"))
    report = doctor_json(Path("voc"))
    assert set(report) >= KEYS
    assert (report["convention"], report["ignore"], report["num_classes"]) == ("voc", [255], 21)
    assert report["class_names"][15] == "person"
    assert [s["name"] for s in report["splits"]] == ["train", "val"]
    assert [s["list"] for s in report["splits"]] == [
        "voc/ImageSets/Segmentation/train.txt",
        "voc/ImageSets/Segmentation/val.txt",
    ]
    void = conclusion(report, "void")
    assert void["confidence"] == "high"
    assert any("100% of the pixels of 255 lie within 3 px" in e for e in void["evidence"])
    assert conclusion(report, "palette")["text"].startswith("palette PNGs with Pascal VOC's")
    assert report["commands"][0] == [
        "labelfix", "to-tfrecord", "--images", "voc/JPEGImages", "--masks",
        "voc/SegmentationClass", "--output", "records", "--split", "train", "--preset", "voc",
        "--unmapped", "error", "--list", "voc/ImageSets/Segmentation/train.txt",
    ]  # fmt: skip
    assert report["commands"][-1][:3] == ["labelfix", "train", "records"]
    assert "--val-split" in report["commands"][-1]
    run_commands(report)
    assert Path("records/train.labelfix.json").exists()


def test_cityscapes_trainids_chosen_and_instance_ids_left_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixtures.cityscapes(Path("cs"))
    report = doctor_json(Path("cs"))
    assert (report["convention"], report["ignore"], report["num_classes"]) == (
        "cityscapes", [255], 19
    )  # fmt: skip
    assert conclusion(report, "void")["text"].startswith("Cityscapes trainIds")
    instances = conclusion(report, "instances")
    assert instances["confidence"] == "high"
    assert any("_gtFine_instanceIds" in e for e in instances["evidence"])
    assert {s["mask_suffix"] for s in report["splits"]} == {"_gtFine_labelTrainIds"}
    assert "--mask-suffix" in report["commands"][0]
    run_commands(report)


def test_cityscapes_label_ids_suggest_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = fixtures.cityscapes(Path("cs"))
    for path in root.rglob("*_labelTrainIds.png"):
        path.unlink()
    report = doctor_json(root)
    void = conclusion(report, "void")
    assert (void["confidence"], report["num_classes"]) == ("high", 19)
    assert "--preset cityscapes" in void["text"]
    assert report["commands"][0][-4:] == ["--preset", "cityscapes", "--mask-suffix",
                                          "_gtFine_labelIds"]  # fmt: skip
    run_commands(report)


def test_ade20k_zero_is_void(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixtures.ade20k(Path("ade"))
    report = doctor_json(Path("ade"))
    assert (report["convention"], report["ignore"], report["num_classes"]) == ("ade20k", [0], 150)
    assert conclusion(report, "void")["confidence"] == "high"
    assert [s["name"] for s in report["splits"]] == ["train", "val"]
    assert report["commands"][0][10:12] == ["--preset", "ade20k"]
    run_commands(report)


def test_binary_0_255_masks_keep_255_as_the_foreground(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixtures.binary(Path("bin"))
    report = doctor_json(Path("bin"))
    assert (report["ignore"], report["num_classes"]) == ([], 2)
    void = conclusion(report, "void")
    assert void["text"] == "binary 0/255 masks: 255 is the foreground, a class, not void"
    assert "--map=255:1" in report["commands"][0] and "--ignore" not in report["commands"][0]
    assert report["commands"][-1][-1] == "--binary"
    run_commands(report)


def test_labelme_npy_minus_one_is_void_and_names_come_from_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixtures.labelme(Path("lm"))
    report = doctor_json(Path("lm"))
    assert (report["convention"], report["ignore"], report["num_classes"]) == ("labelme", [-1], 3)
    assert report["class_names"] == ["_background_", "cat", "dog"]
    assert not [p for p in report["problems"] if p["kind"] == "lossy"]  # a 1-px void line
    command = report["commands"][0]
    assert "--ignore=-1" in command and command[-2:] == ["--class-names", "lm/class_names.txt"]
    run_commands(report)


def test_jpeg_masks_are_repaired_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixtures.jpeg_masks(Path("jpg"))
    report = doctor_json(Path("jpg"))
    assert (report["ignore"], report["num_classes"]) == ([255], 6)
    assert conclusion(report, "lossy")["confidence"] == "high"
    repair, to_tfrecord = report["commands"][:2]
    assert repair == ["labelfix", "repair", "jpg/masks", "--num-classes", "6", "--ignore", "255",
                      "--output", "jpg/masks-repaired"]  # fmt: skip
    assert to_tfrecord[to_tfrecord.index("--masks") + 1] == "jpg/masks-repaired"
    run_commands(report)


def test_a_255_that_might_be_a_class_gives_both_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for k in range(2):
        mask = np.zeros((24, 32), np.uint8)
        mask[4 + 6 * k, 2:30] = 255  # thin lines: cracks? or void around something?
        mask[8:20, 20 + k] = 255
        save_png(Path("lines/images") / f"{k}.jpg", np.full((24, 32, 3), 90, np.uint8))
        save_png(Path("lines/masks") / f"{k}.png", mask)
    report = doctor_json(Path("lines"))
    assert report["ignore"] is None and report["decided"] is False
    assert conclusion(report, "void")["confidence"] == "low"
    assert [s["assumption"] for s in report["command_sets"]] == [
        "255 is the foreground (binary masks)",
        "255 is void",
    ]
    outputs = [c[c.index("--output") + 1] for c in report["commands"] if c[1] == "to-tfrecord"]
    assert outputs == ["records-255-class", "records-255-void"]
    run_commands(report)
    text = cli("doctor", "lines", "-j", "1").stdout
    assert "The data cannot decide; the commands of each reading:" in text
    assert "If 255 is void:" in text


def test_problems_unpaired_sizes_exif_and_mixed_conventions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = fixtures.binary(Path("data"), n=3)
    save_png(root / "masks" / "0001.png", np.ones((48, 64), np.uint8))  # 0/1 beside 0/255
    save_png(root / "masks" / "0009.png", np.zeros((48, 64), np.uint8))  # no image
    save_png(root / "images" / "0002.jpg", np.zeros((50, 64, 3), np.uint8))  # another size
    save_oriented(root / "images" / "0000.jpg", np.zeros((48, 64, 3), np.uint8), 6)
    report = doctor_json(root)
    kinds = {p["kind"]: p["message"] for p in report["problems"]}
    assert kinds["unpaired"].startswith("1 unpaired file(s), left out with --skip-unpaired:")
    assert "0009.png: no image for this mask" in kinds["unpaired"]
    assert kinds["size"].startswith("1 mask(s) differ in size from their image (0002.png")
    assert kinds["mixed"].startswith("mixed conventions in one set: 1 mask(s) are binary 0/1")
    assert "with an EXIF orientation: to-tfrecord needs --exif keep" in kinds["exif"]
    command = report["commands"][0]
    assert "--skip-unpaired" in command and command[-2:] == ["--exif", "keep"]


def test_text_output_quotes_paths_and_says_what_was_sampled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixtures.binary(Path("my data"), n=3)
    result = cli("doctor", "my data", "--sample", "2", "-j", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    printed = [line.split("$ ", 1)[1] for line in lines if line.startswith("  $ ")]
    assert printed[0].startswith("labelfix to-tfrecord --images 'my data/images' --masks ")
    for line in printed[:-1]:  # the text runs as printed, the shell's way
        argv = shlex.split(line)
        assert cli(*argv[1:]).exit_code == 0, line
    assert "Note: read 2 of 3 masks, spread over the dataset (--sample N reads more)" in lines[-1]
    assert "  void     [high]  binary 0/255 masks: 255 is the foreground" in result.stdout


def test_no_mask_set_is_an_error_naming_the_root(tmp_path):
    (tmp_path / "notes").mkdir()
    result = cli("doctor", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"labelfix: error: {tmp_path}: no folder of masks")


def test_doctor_does_not_import_tensorflow(tmp_path):
    fixtures.binary(tmp_path / "bin", n=2)
    code = (
        "import sys; from labelfix.cli import main\n"
        "try: main(['doctor', sys.argv[1], '-j', '1'], prog_name='labelfix')\n"
        "except SystemExit as e: assert not e.code, e.code\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bin")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_library_report_is_frozen_with_confidences(tmp_path):
    report = diagnose(fixtures.binary(tmp_path / "bin"), jobs=1)
    assert report.decided and report.num_classes == 2
    assert {c.confidence for c in report.conclusions} <= {"high", "medium", "low"}
    with pytest.raises(AttributeError):
        report.ignore = (1,)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({0, 255}, "high"),  # a thick foreground blob
        ({0, 3, 255}, None),  # 255 fills a region beside two values: undecided
    ],
)
def test_guess_void_on_regions(values, expected):
    mask = np.zeros((40, 40), np.uint8)
    mask[2:38, 2:22] = 255
    if 3 in values:
        mask[2:38, 24:38] = 3
    totals = ValueTotals()
    present = np.unique(mask, return_counts=True)
    totals.add(present[0].tolist(), present[1].tolist(), value_shapes(mask, (255,)))
    guess = guess_void(totals)
    if expected is None:
        assert not guess.decided and guess.confidence == "low"
    else:
        assert guess.decided and guess.confidence == expected and guess.readings[0].binary


def test_colour_masks_in_voc_colours_suggest_the_colormap(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixtures.colour_masks(Path("colour"))
    report = doctor_json(Path("colour"))
    colours = conclusion(report, "colours")
    assert colours["text"].startswith("colour masks: every colour is one of the voc colormap's")
    assert report["ignore"] == [255]
    assert report["commands"][0][-2:] == ["--colormap", "voc"]
    run_commands(report)


def test_mmseg_img_dir_ann_dir_and_gt_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fixtures.mmseg(Path("mm"))
    report = doctor_json(Path("mm"))
    assert (report["convention"], report["ignore"], report["num_classes"]) == ("mmseg", [], 4)
    assert [(s["name"], s["pairs"]) for s in report["splits"]] == [("train", 2), ("val", 1)]
    assert report["pairs"]["examples"][0]["mask"].endswith("0000_gt.png")
    run_commands(report)


def test_folders_of_any_names_are_found_by_what_they_hold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = fixtures.mmseg(Path("mm"))
    (root / "img_dir" / "train").rename(Path("photos"))
    (root / "ann_dir" / "train").rename(Path("segs"))
    shutil.rmtree(root)
    names = ["background", "fish", "boat", "buoy", "net"]  # "net": a class no mask holds
    Path("names.txt").write_text("\n".join(names) + "\n")
    report = doctor_json(Path("."))
    layout = conclusion(report, "layout")
    assert (report["convention"], layout["confidence"]) == ("content", "low")
    assert "told by what the folders hold" in layout["evidence"][0]
    assert report["num_classes"] == 5 and report["class_names"] == names
    assert report["commands"][0][-2:] == ["--class-names", "names.txt"]
    run_commands(report)
