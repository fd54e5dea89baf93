"""Colour masks -> class ids: exact, strict, vectorised."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from labelfix.cli import main
from labelfix.errors import MappingError
from labelfix.io.masks import read_mask
from labelfix.labels.colormap import (
    ColourPolicy,
    UnknownColour,
    builtin,
    load_colormap,
    read_colormap,
    read_label_mask,
)

from conftest import save_png


def test_voc_colormap_is_the_standard_palette():
    voc = builtin("voc")
    assert voc.colours[0] == (0, 0, 0)
    assert voc.colours[1] == (128, 0, 0)  # aeroplane
    assert voc.colours[15] == (192, 128, 128)  # person
    assert voc.colours[255] == (224, 224, 192)  # void border
    assert voc.names[15] == "person"


def test_cityscapes_colours_map_to_train_ids():
    cs = builtin("cityscapes")
    rgb = np.array(
        [[[128, 64, 128], [0, 0, 142], [119, 11, 32], [0, 0, 0], [111, 74, 0], [153, 153, 153]]],
        np.uint8,
    )
    # road 0, car 13, bicycle 18, unlabeled -> 255, dynamic -> 255, pole/polegroup -> pole 5
    assert cs.to_ids(rgb).tolist() == [[0, 13, 18, 255, 255, 5]]


def test_camvid_colormaps():
    c11, c32 = builtin("camvid11"), builtin("camvid32")
    rgb = np.array([[[128, 128, 128], [60, 40, 222], [0, 0, 0]]], np.uint8)
    assert c11.to_ids(rgb).tolist() == [[0, 4, 255]]  # sky, pavement, void
    assert len(c32.ids) == 32
    rgb32 = np.array([[[64, 128, 64], [64, 192, 0], [0, 0, 0]]], np.uint8)
    assert c32.to_ids(rgb32).tolist() == [[0, 30, 255]]  # animal, wall, void


def test_unknown_colour_is_an_error_naming_colour_count_and_place():
    voc = builtin("voc")
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[1, 2] = rgb[2, 3] = (1, 2, 3)
    with pytest.raises(UnknownColour) as info:
        voc.to_ids(rgb, path="m.png")
    assert str(info.value) == (
        "m.png: colour (1, 2, 3) is not in colormap voc: 2 px, first at y=1 x=2"
    )
    ids = voc.to_ids(rgb, unknown="ignore", ignore=255)
    assert ids[1, 2] == 255
    assert ids[0, 0] == 0


def test_colormap_files_csv_and_json(tmp_path):
    csv_path = tmp_path / "cm.csv"
    csv_path.write_text("id,name,r,g,b\n0,ground,0,0,0\n1,tree,0,255,0\n7,car,255,0,0\n")
    cm = read_colormap(csv_path)
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 0]]], np.uint8)
    assert cm.to_ids(rgb).tolist() == [[7, 1, 0]]
    json_path = tmp_path / "cm.json"
    json_path.write_text(json.dumps([{"id": 3, "name": "x", "color": [9, 9, 9]}]))
    assert load_colormap(str(json_path)).to_ids(np.full((1, 1, 3), 9, np.uint8)).tolist() == [[3]]
    bad = tmp_path / "bad.csv"
    bad.write_text("0,ground,0,0\n")
    with pytest.raises(MappingError, match="expected id,name,r,g,b"):
        read_colormap(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("0,a,1,1,1\n1,b,1,1,1\n")
    with pytest.raises(MappingError, match=r"colour \(1, 1, 1\) is given to both id 0 and 1"):
        read_colormap(dup)


def test_colormap_files_in_utf16_nested_or_out_of_range_never_a_traceback(tmp_path):
    """Regression (issue 21): a UTF-16 colormap (with its byte-order mark) was a
    UnicodeDecodeError traceback, JSON nested 100,000 deep a RecursionError one, and an id
    beyond int32 an OverflowError one; UTF-16 is read, the others are one line naming the file."""
    wide = tmp_path / "cm.csv"
    wide.write_text("id,name,r,g,b\n7,car,255,0,0\n", encoding="utf-16")
    assert read_colormap(wide).to_ids(np.array([[[255, 0, 0]]], np.uint8)).tolist() == [[7]]
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(MappingError, match=r"deep\.json: not a colormap file \(JSON nested"):
        read_colormap(deep)
    huge = tmp_path / "huge.csv"
    huge.write_text("99999999999999999999,car,255,0,0\n")
    with pytest.raises(MappingError, match=r"huge\.csv: not a colormap file \(value 9+ is out"):
        read_colormap(huge)


def test_read_mask_converts_colour_files(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 1] = (192, 128, 128)
    save_png(tmp_path / "c.png", rgb)
    assert read_mask(tmp_path / "c.png").kind == "colour"  # io reads what is stored ...
    mask = read_label_mask(tmp_path / "c.png", colours=ColourPolicy(builtin("voc")))  # ... ids
    assert mask.kind == "colormap"
    assert mask.labels.tolist() == [[0, 15, 0], [0, 0, 0]]


def test_stats_and_validate_with_colormap(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, :] = (224, 224, 192)
    rgb[2, 2] = (128, 0, 0)
    save_png(tmp_path / "m" / "a.png", rgb)
    runner = CliRunner()
    result = runner.invoke(main, ["stats", str(tmp_path / "m"), "--colormap", "voc", "--json"])
    assert result.exit_code == 0, result.output
    values = {v["value"]: v["pixels"] for v in json.loads(result.stdout)["values"]}
    assert values == {0: 11, 1: 1, 255: 4}
    result = runner.invoke(
        main, ["validate", str(tmp_path / "m"), "-n", "21", "--ignore", "255", "--colormap", "voc"]
    )
    assert result.exit_code == 0, result.output
    rgb[3, 3] = (5, 5, 5)
    save_png(tmp_path / "m" / "a.png", rgb)
    result = runner.invoke(main, ["validate", str(tmp_path / "m"), "-n", "21", "--colormap", "voc"])
    assert result.exit_code == 1
    assert "a.png: colour (5, 5, 5) is not in colormap voc: 1 px, first at y=3 x=3" in (
        result.stdout
    )
    result = runner.invoke(main, ["stats", str(tmp_path / "m"), "--colormap", "nope"])
    assert result.exit_code == 2
    assert "unknown colormap 'nope'" in result.output
