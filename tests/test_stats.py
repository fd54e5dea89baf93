"""`labelfix stats` and the scan library: golden counts on hand-made masks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from labelfix.checks.scan import FileReport
from labelfix.checks.stats import DatasetStats, scan_dataset
from labelfix.cli import main
from labelfix.io.masks import value_counts

from conftest import save_png


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32])
def test_value_counts_matches_unique(dtype):
    a = np.array([[0, 3, 3], [7, 0, 0]], dtype)
    if np.issubdtype(dtype, np.signedinteger):
        a[0, 0] = -1
    values, counts = value_counts(a)
    ref_v, ref_c = np.unique(a, return_counts=True)
    assert values.tolist() == ref_v.tolist()
    assert counts.tolist() == ref_c.tolist()


def test_value_counts_wide_range_falls_back():
    a = np.array([[-(2**30), 0, 2**30]], np.int64)
    values, counts = value_counts(a)
    assert values.tolist() == [-(2**30), 0, 2**30]
    assert counts.tolist() == [1, 1, 1]


def test_scan_dataset_golden_numbers(clean_masks):
    stats = scan_dataset([clean_masks], ignore=(255,), num_classes=21, jobs=1)
    assert stats.files == 4
    assert stats.label_files == 4
    assert stats.kinds == {"palette": 1, "8-bit": 1, "16-bit": 1, "npy": 1}
    assert stats.sizes == {(8, 10): 4}
    assert stats.total_pixels == 320
    # voc_mask: 0 -> 80-20-6 = 54, 255 -> 20-6 = 14, 15 -> 6, 5 -> 6
    # 0002: 3 x 80; 0003: 255 x 10, 20 x 24, 0 x 46; 0004: 1 x 79, 255 x 1
    got = {v: (s.pixels, s.images) for v, s in stats.values.items()}
    assert got == {
        0: (54 + 46, 2),
        1: (79, 1),
        3: (80, 1),
        5: (6, 1),
        15: (6, 1),
        20: (24, 1),
        255: (14 + 10 + 1, 3),
    }
    assert stats.void_pixels == 25
    assert stats.void_share == pytest.approx(25 / 320)
    assert stats.out_of_range == {}
    assert stats.all_void == []


def test_class_weights_median_frequency():
    stats = DatasetStats(ignore=(255,), num_classes=3)
    stats.add(FileReport("a", "a", "8-bit", 1, 10, "uint8", (0, 1, 255), (6, 2, 2)))
    stats.add(FileReport("b", "b", "8-bit", 1, 10, "uint8", (0,), (10,)))
    # freq(0) = 16/20 = 0.8, freq(1) = 2/10 = 0.2; median 0.5 -> 0.625, 2.5; class 2 absent
    # gets the neutral 1.0, as in `labelfix train --class-weights auto` (one rule for both)
    weights = stats.class_weights()
    assert weights == pytest.approx({0: 0.625, 1: 2.5, 2: 1.0})


def test_parallel_scan_equals_serial(clean_masks):
    for i in range(12):
        save_png(clean_masks / "c" / f"{i:03d}.png", np.full((5, 5), i % 4, np.uint8))
    serial = scan_dataset([clean_masks], ignore=(255,), jobs=1)
    parallel = scan_dataset([clean_masks], ignore=(255,), jobs=2)
    assert serial.to_dict() == parallel.to_dict()


def test_stats_cli_table(clean_masks):
    result = CliRunner().invoke(main, ["stats", str(clean_masks), "--ignore", "255", "-n", "21"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Scanned 4 files: 4 label masks" in out
    assert "palette      1  tf.io.decode_png would read colours/luminance" in out
    assert "    255      25   7.81%       3  ignore" in out
    assert "Void (ignore 255): 25 px, 7.81% of all pixels; 0 mask(s) entirely void" in out
    assert "Every value is a class id (0..20) or ignore." in out


def test_stats_cli_json_and_per_image(clean_masks, tmp_path):
    rows = tmp_path / "rows.csv"
    result = CliRunner().invoke(
        main, ["stats", str(clean_masks), "--ignore", "255", "--json", "--per-image", str(rows)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files"] == 4
    assert report["void"] == {"pixels": 25, "share": 25 / 320, "all_void_files": []}
    assert {v["value"]: v["pixels"] for v in report["values"]}[3] == 80
    with open(rows, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["path"].split("masks/")[1] for r in table] == [
        "a/0001.png",
        "a/0002.png",
        "b/0003.png",
        "b/0004.npy",
    ]
    assert table[1]["values"] == "3"
    assert table[1]["counts"] == "80"
    assert table[2]["kind"] == "16-bit"

    jsonl = tmp_path / "rows.jsonl"
    result = CliRunner().invoke(main, ["stats", str(clean_masks), "--per-image", str(jsonl)])
    assert result.exit_code == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert lines[3]["dtype"] == "int16"
    assert lines[3]["values"] == [1, 255]


def test_stats_cli_messy_reports_every_problem_and_exits_1(messy_masks):
    result = CliRunner().invoke(
        main, ["stats", str(messy_masks), "--ignore", "255", "-n", "21", "-j", "2"]
    )
    assert result.exit_code == 1
    out, err = result.stdout, result.stderr
    assert "Scanned 9 files: 4 label masks, 2 not label masks, 3 unreadable" in out
    assert "value 37 in 1 file(s):" in out and "out_of_range.png" in out
    assert "value 300 in 1 file(s):" in out
    assert "1 mask(s) entirely void" in out
    assert "colour.png: colour mask, not counted" in out
    assert "jpeg_named_png.png: jpeg mask, not counted" in out
    assert f"labelfix: error: {messy_masks / 'empty.png'}: empty file" in err
    assert f"{messy_masks / 'truncated.png'}: corrupt or truncated image" in err
    assert "Traceback" not in result.output


def test_stats_usage_errors_exit_2(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["stats"]).exit_code == 2
    result = runner.invoke(main, ["stats", str(tmp_path), "--ignore", "x"])
    assert result.exit_code == 2
    assert "expected an integer ignore value, got 'x'" in result.output
    assert runner.invoke(main, ["stats", str(tmp_path / "nope")]).exit_code == 2


def test_stats_empty_directory_is_a_data_problem(tmp_path):
    result = CliRunner().invoke(main, ["stats", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == f"labelfix: error: no mask files (*.png, *.npy) under {tmp_path}\n"
    assert result.stdout == ""


def test_cli_does_not_import_tensorflow(tmp_path):
    """`labelfix --help`, `stats` and `validate` start fast: no TensorFlow, Keras or Beam."""
    import subprocess
    import sys

    save_png(tmp_path / "m.png", np.zeros((2, 2), np.uint8))
    code = (
        "import sys\n"
        "from labelfix.cli import main\n"
        "for args in (['--help'], ['stats', sys.argv[1]], ['validate', sys.argv[1], '-n', '2']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('tensorflow', 'keras', 'jax', 'torch', 'apache_beam', 'fsspec')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()


def test_file_names_that_are_not_utf8_in_per_image_rows_and_html(tmp_path):
    """Regression (issue 21): a mask named ``b"\\xff.png"`` (valid on Linux; Python holds it as a
    surrogate escape) made ``stats --per-image`` and ``stats --html`` fail with a
    UnicodeEncodeError traceback. The CSV and the HTML show it with a backslash escape
    (``\\xff.png``, valid UTF-8); JSON Lines keep it JSON-escaped, so it reads back as the name."""
    import os

    root = tmp_path / "m"
    odd = os.path.join(root, os.fsdecode(b"\xff.png"))
    save_png(Path(odd), np.array([[0, 3]], np.uint8))
    save_png(root / "ok.png", np.array([[3, 3]], np.uint8))
    result = CliRunner().invoke(
        main,
        ["stats", str(root), "--per-image", str(tmp_path / "rows.csv"), "--html",
         str(tmp_path / "report.html")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(tmp_path / "rows.csv", encoding="utf-8", newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == [f"{root}/\\xff.png", f"{root}/ok.png"]
    assert rows[f"{root}/\\xff.png"]["values"] == "0 3"
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "\\xff.png" in html
    result = CliRunner().invoke(
        main, ["stats", str(root), "--per-image", str(tmp_path / "r.jsonl")]
    )
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "r.jsonl").read_text(encoding="ascii").splitlines()
    assert sorted(json.loads(line)["path"] for line in lines) == sorted([odd, str(root / "ok.png")])


def _voc_style(root, count: int = 3):
    """Masks of a few classes whose objects are outlined with 255, as VOC draws void."""
    from labelfix.synthetic import shapes_sample

    rng = np.random.default_rng(3)
    for k in range(count):
        _, mask = shapes_sample(rng, height=40, width=48, num_classes=6, border=2)
        save_png(root / f"{k}.png", mask)
    return root


def test_without_ignore_stats_says_255_is_probably_void_and_leaves_it_out_of_the_weights(
    tmp_path,
):
    """Found trying labelfix as a new user: `labelfix stats masks/` (the first example of
    --help) listed VOC's 255 as a class and suggested a class weight for it."""
    root = _voc_style(tmp_path / "masks")
    result = CliRunner().invoke(main, ["stats", str(root), "-j", "1"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    row = next(line for line in out.splitlines() if line.strip().startswith("255 "))
    assert row.endswith("void? (no --ignore)")
    assert (
        "Void: no --ignore given. 255 is void (VOC style): it lies on region boundaries [high]."
    ) in out
    assert "100% of the pixels of 255 lie within 3 px of another value" in out
    assert "  So: give --ignore 255." in out
    weights = out.split("Suggested class weights")[1]
    assert weights.startswith(
        " (median-frequency balancing; 255 left out as probable void, --ignore 255 makes it so):"
    )
    assert [line.split()[0] for line in weights.splitlines()[2:]] == ["0", "1", "2", "3", "5"]
    document = json.loads(CliRunner().invoke(main, ["stats", str(root), "--json"]).stdout)
    assert document["probable_void"]["ignore"] == [255]
    assert document["probable_void"]["confidence"] == "high"
    assert 255 not in [w["class"] for w in document["class_weights"]]
    given = CliRunner().invoke(main, ["stats", str(root), "--ignore", "255"]).stdout
    assert "void?" not in given and "no --ignore given" not in given


def test_without_ignore_binary_255_is_the_foreground_not_void(tmp_path):
    mask = np.zeros((40, 40), np.uint8)
    mask[5:35, 5:30] = 255
    save_png(tmp_path / "a.png", mask)
    out = CliRunner().invoke(main, ["stats", str(tmp_path)]).stdout
    assert "binary 0/255 masks: 255 is the foreground, a class, not void [high]" in out
    assert "So: no --ignore; --map 255:1 -n 2 for remap and to-tfrecord." in out
    assert "void?" not in out


def test_class_weights_of_absent_classes_are_marked(tmp_path):
    """Found trying labelfix as a new user: the class-weight tables showed 1.0000, unmarked,
    for classes absent from the data."""
    save_png(tmp_path / "a.png", np.array([[0, 0, 1], [1, 1, 1]], np.uint8))
    out = CliRunner().invoke(main, ["stats", str(tmp_path), "-n", "3"]).stdout
    rows = out.split("Suggested class weights")[1].splitlines()[2:]
    assert rows[2].split() == ["2", "1.0000", "no", "pixel:", "1.0,", "not", "measured"]
    assert rows[0].split() == ["0", "1.5000"]
    document = json.loads(
        CliRunner().invoke(main, ["stats", str(tmp_path), "-n", "3", "--json"]).stdout
    )
    assert document["class_weights"][2] == {"class": 2, "weight": 1.0, "absent": True}
    assert "absent" not in document["class_weights"][0]
    from labelfix.viz.report import _weights

    html = _weights(scan_dataset([tmp_path], num_classes=3, jobs=1))
    assert "<td>no pixel: 1.0, not measured</td>" in html


def test_median_frequency_weights_of_three_classes_and_more_take_the_median():
    """Issue 22 (mutation test): median changed to mean passed the suite. Frequencies 0.5,
    0.3, 0.2 (all pixels the denominator): median 0.3, weights 0.3/f; the mean (1/3) would give
    0.666667, 1.111111, 1.666667. An absent class gets the absent weight, not a division by 0."""
    from labelfix.labels.weights import ABSENT_CLASS_WEIGHT, median_frequency_weights

    assert median_frequency_weights([50, 30, 20]) == (0.6, 1.0, 1.5)
    # four classes, one absent: the median of 0.5, 0.3, 0.2 still; with image pixels
    assert median_frequency_weights([50, 30, 20, 0]) == (0.6, 1.0, 1.5, ABSENT_CLASS_WEIGHT)
    assert median_frequency_weights([10, 30, 20], [100, 60, 20]) == (5.0, 1.0, 0.5)
