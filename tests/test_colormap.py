"""Colour masks -> class ids: exact, strict, vectorised."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from labelfix.cli import main
from labelfix.errors import MappingError
from labelfix.io.masks import read_mask
from labelfix.labels.colormap import (
    ColourPolicy,
    TransparentPixels,
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


def _rgba_mask() -> np.ndarray:
    """4x5 RGBA: VOC person (192, 128, 128) opaque on the left, transparent black on the right
    (where the drawing tool left nothing), one partly transparent person pixel at its edge."""
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[:, :2] = (192, 128, 128, 255)
    rgba[1, 2] = (192, 128, 128, 128)
    return rgba


def test_transparent_pixels_of_a_colour_mask_are_refused_or_made_void(tmp_path):
    """Regression (issue 21): --colormap on an RGBA mask ignored alpha: its transparent pixels
    (RGB left at black, VOC's background) became class 0. Now they are refused, naming the
    file, their count and first pixel; with transparent="void" they become the void value.
    A partly transparent pixel is read by its colour."""
    path = save_png(tmp_path / "m" / "a.png", _rgba_mask())
    mask = read_mask(path)
    assert mask.kind == "colour" and mask.alpha[1, 2] == 128 and mask.alpha[0, 4] == 0
    with pytest.raises(TransparentPixels) as err:
        read_label_mask(path, colours=ColourPolicy(builtin("voc")))
    assert str(err.value) == (
        f"{path}: 11 transparent pixels (alpha 0), first at y=0 x=2: --colormap reads their "
        "colour, which no one sees; give --transparent void to make them void; 1 partly "
        "transparent pixel is read by its colour"
    )
    void = read_label_mask(path, colours=ColourPolicy(builtin("voc"), void=255, transparent="void"))
    assert (
        void.labels.tolist()
        == [[15, 15, 255, 255, 255], [15, 15, 15, 255, 255]] + [[15, 15, 255, 255, 255]] * 2
    )
    # transparent pixels of a colour the colormap does not know are void, not unknown colours
    odd = _rgba_mask()
    odd[3, 4] = (1, 2, 3, 0)
    save_png(tmp_path / "odd.png", odd)
    policy = ColourPolicy(builtin("voc"), void=255, transparent="void")
    assert read_label_mask(tmp_path / "odd.png", colours=policy).labels[3, 4] == 255
    # fully opaque RGBA, grey + alpha and an RGB tRNS colour key follow the same rule
    opaque = _rgba_mask()
    opaque[..., 3] = 255
    save_png(tmp_path / "opaque.png", opaque)
    assert read_mask(tmp_path / "opaque.png").alpha is None
    assert read_label_mask(tmp_path / "opaque.png", colours=ColourPolicy(builtin("voc"))).labels[
        0
    ].tolist() == [15, 15, 0, 0, 0]
    Image.fromarray(np.zeros((2, 2, 2), np.uint8), "LA").save(tmp_path / "la.png")
    with pytest.raises(TransparentPixels, match="4 transparent pixels"):
        read_label_mask(tmp_path / "la.png", colours=ColourPolicy(builtin("voc")))
    key = Image.fromarray(opaque[..., :3])
    key.info["transparency"] = (0, 0, 0)
    key.save(tmp_path / "key.png", transparency=(0, 0, 0))
    with pytest.raises(TransparentPixels, match="11 transparent pixels"):
        read_label_mask(tmp_path / "key.png", colours=ColourPolicy(builtin("voc")))


def test_transparent_option_on_the_command_line(tmp_path):
    """``--transparent void`` reaches every command that reads colour masks; the default
    refuses the file (exit 1, one line naming it)."""
    save_png(tmp_path / "m" / "a.png", _rgba_mask())
    runner = CliRunner()
    args = ["validate", str(tmp_path / "m"), "-n", "21", "--ignore", "255", "--colormap", "voc"]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 1
    assert f"{tmp_path / 'm' / 'a.png'}: 11 transparent pixels (alpha 0)" in refused.stdout
    assert runner.invoke(main, [*args, "--transparent", "void"]).exit_code == 0
    stats = runner.invoke(
        main, ["stats", str(tmp_path / "m"), "--colormap", "voc", "--transparent", "void",
               "--ignore", "255", "--json"],
    )  # fmt: skip
    assert stats.exit_code == 0, stats.output
    values = {v["value"]: v["pixels"] for v in json.loads(stats.stdout)["values"]}
    assert values == {15: 9, 255: 11}
    remapped = runner.invoke(
        main, ["remap", str(tmp_path / "m"), "--colormap", "voc", "--transparent", "void",
               "--ignore", "255", "--out", "-1", "-o", str(tmp_path / "ids")],
    )  # fmt: skip
    assert remapped.exit_code == 0, remapped.output
    assert (np.load(tmp_path / "ids" / "a.npy") == -1).sum() == 11
    bad = runner.invoke(main, [*args, "--transparent", "class"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
