"""`labelfix show` and labelfix.viz: the pixels of the pictures, the legend, the choice of masks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from labelfix.cli import main
from labelfix.labels.colormap import Colormap
from labelfix.labels.presets import voc_palette
from labelfix.viz.colours import HATCH, class_colours, generated_colour, hatch_pattern
from labelfix.viz.selection import MaskSurvey, plan_show, worst_first
from labelfix.viz.sheet import (
    PAD,
    VOID_ALPHA,
    ShowOptions,
    contact_sheet,
    legend_entries,
    render_mask,
)

from conftest import save_oriented, save_palette_png, save_png, voc_mask

MAGENTA = (255, 0, 255)
VOC = voc_palette()


def voc_rgb(value: int) -> list[int]:
    return list(VOC[3 * value : 3 * value + 3])


def test_class_void_and_problem_pixels_have_their_colours():
    labels = voc_mask()  # 0 background, 15 person with a 255 border, 5 bottle
    labels[3, 7] = 37  # no class of 21
    colours = class_colours(values=[0, 5, 15], palette=VOC)
    shown = render_mask(labels, colours=colours, options=ShowOptions(ignore=(255,), num_classes=21))
    px = shown.pixels
    assert px.shape == (8, 10, 3)  # small masks are never enlarged
    assert px[0, 0].tolist() == voc_rgb(0) == [0, 0, 0]
    assert px[3, 3].tolist() == voc_rgb(15) == [192, 128, 128]
    assert px[7, 9].tolist() == voc_rgb(5) == [128, 0, 128]
    assert colours.highlight == MAGENTA
    assert px[3, 7].tolist() == list(MAGENTA)
    assert (px == MAGENTA).all(axis=2).sum() == 1
    hatch = hatch_pattern(8, 10)
    void = labels == 255
    assert (px[void] == hatch[void]).all()
    assert {tuple(c) for c in px[void].tolist()} == set(HATCH)  # both stripes show
    assert (shown.problem_pixels, shown.void_pixels) == (1, 14)
    assert shown.class_pixels == {0: 53, 5: 6, 15: 6}


def test_downscaled_thumbnail_keeps_a_single_problem_pixel_in_place():
    labels = np.zeros((40, 80), np.uint8)
    labels[:, 40:] = 2
    labels[13, 57] = 9  # one bad pixel of 3,200
    options = ShowOptions(num_classes=3, max_size=20)
    shown = render_mask(labels, colours=class_colours(values=[0, 2]), options=options)
    assert shown.pixels.shape == (10, 20, 3)  # aspect kept, 4x smaller
    highlighted = np.argwhere((shown.pixels == MAGENTA).all(axis=2))
    assert highlighted.tolist() == [[13 // 4, 57 // 4]]
    # everything else by nearest neighbour: exact class colours, no blend of 0 and 2
    assert shown.pixels[0, 0].tolist() == list(generated_colour(0))
    assert shown.pixels[9, 19].tolist() == list(generated_colour(2))
    assert {tuple(c) for c in shown.pixels.reshape(-1, 3).tolist()} == {
        generated_colour(0),
        generated_colour(2),
        MAGENTA,
    }


def test_overlay_blends_at_alpha_and_keeps_problems_opaque():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    labels = voc_mask()
    labels[0, 0] = 99
    colours = class_colours(values=[0, 5, 15], palette=VOC)
    options = ShowOptions(ignore=(255,), num_classes=21, alpha=0.3)
    px = render_mask(labels, colours=colours, options=options, image=image).pixels.astype(int)

    def blend(colour, y, x):
        return np.rint(0.3 * np.asarray(colour) + 0.7 * image[y, x]).astype(int)

    assert np.abs(px[3, 3] - blend(voc_rgb(15), 3, 3)).max() <= 1
    assert np.abs(px[7, 9] - blend(voc_rgb(5), 7, 9)).max() <= 1
    void = np.rint(VOID_ALPHA * hatch_pattern(8, 10)[1, 1] + (1 - VOID_ALPHA) * image[1, 1])
    assert np.abs(px[1, 1] - void).max() <= 1  # void stays hatched over any image
    assert px[0, 0].tolist() == list(MAGENTA)


def test_legend_lists_exactly_the_classes_drawn_then_void_and_problem():
    a = np.array([[0, 0, 3], [3, 255, 7]], np.uint8)  # 7 is no class of 5
    b = np.array([[1, 1, 255, 255]], np.uint8)
    colours = class_colours(values=[0, 1, 3], class_names=("sky", "road", "car", "tree"))
    options = ShowOptions(ignore=(255,), num_classes=5)
    shown = [render_mask(m, colours=colours, options=options, name="m") for m in (a, b)]
    entries = legend_entries(shown, colours=colours, options=options)
    assert [(e.kind, e.value, e.label, e.pixels) for e in entries] == [
        ("class", 0, "0 sky", 2),
        ("class", 1, "1 road", 2),
        ("class", 3, "3 tree", 2),
        ("void", None, "void (255)", 3),
        ("problem", None, "problem: not a class id", 1),
    ]
    assert entries[2].colour == generated_colour(3)
    assert entries[-1].colour == MAGENTA
    sheet = contact_sheet(shown, legend=entries, options=options)
    assert sheet.mode == "RGB" and sheet.width > 2 * 150


def test_legend_of_thousands_of_classes_lists_the_largest_then_how_many_more(tmp_path):
    """Regression (issue 21): ``show -n 65536`` on 16-bit masks of thousands of values drew a
    legend line per value: a sheet 347,270 px tall after 25 s. The legend lists the
    MAX_LEGEND_CLASSES (64) classes with the most pixels, by id, then one line for the rest."""
    from labelfix.viz.sheet import MAX_LEGEND_CLASSES

    assert MAX_LEGEND_CLASSES == 64
    labels = np.arange(1000, dtype=np.uint16).reshape(20, 50)  # 1000 classes, 1 px each
    labels[0, :10] = 999  # class 999: 11 px; 0..9 are gone
    labels[1, :10] = 500  # class 500: 11 px; 50..59 are gone: 980 classes
    colours = class_colours(values=np.unique(labels).tolist())
    options = ShowOptions(num_classes=65536)
    entries = legend_entries(
        [render_mask(labels, colours=colours, options=options, name="m")],
        colours=colours,
        options=options,
    )
    kinds = [e.kind for e in entries]
    assert kinds == ["class"] * 64 + ["more", "problem"]  # no --ignore: no void entry
    classes = [e.value for e in entries[:64]]
    # the two largest, then the smallest ids among the 1-px classes (ties by id)
    assert classes == [*range(10, 50), *range(60, 82), 500, 999]
    assert sum(e.pixels for e in entries[:64]) == 11 + 11 + 62
    assert entries[64].label == "and 916 more classes (916 px)"
    assert entries[64].pixels == 916
    sheet = contact_sheet(
        [render_mask(labels, colours=colours, options=options, name="m")],
        legend=entries,
        options=options,
    )
    assert sheet.height < 2000  # 67 lines of 24 px, not 1,000


def test_show_on_16_bit_noise_masks_finishes_with_a_bounded_legend(tmp_path):
    """Regression (issue 21): the command itself, on 16-bit masks of ~4,000 values each."""
    import time

    rng = np.random.default_rng(0)
    for i in range(4):
        save_png(tmp_path / "m" / f"{i}.png", rng.integers(0, 65535, (64, 64)).astype(np.uint16))
    started = time.monotonic()
    result = CliRunner().invoke(
        main, ["show", str(tmp_path / "m"), "-n", "65536", "-o", str(tmp_path / "s.png")]
    )
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 10  # 25 s before
    with Image.open(tmp_path / "s.png") as sheet:
        assert sheet.height < 2000


def test_highlight_is_never_a_class_colour():
    cmap = Colormap("pink", (0, 1), ((255, 0, 255), (10, 10, 10)), ("flamingo", "night"))
    colours = class_colours(values=[0, 1], colormap=cmap)
    assert colours.colour(0) == (255, 0, 255)
    assert colours.highlight not in {(255, 0, 255), (10, 10, 10)}
    assert colours.name(0) == "flamingo"
    first = [generated_colour(k) for k in range(64)]
    assert len(set(first)) == 64 and MAGENTA not in first
    assert first == [generated_colour(k) for k in range(64)]  # deterministic


def test_palette_collisions_fall_back_to_generated_colours():
    palette = bytes([0, 0, 0, 200, 10, 10]) + bytes(762)  # ids 2.. are all black
    colours = class_colours(values=[0, 1, 2, 3], palette=palette)
    assert colours.colour(1) == (200, 10, 10)
    assert colours.colour(0) == (0, 0, 0)
    assert colours.colour(2) == generated_colour(2)
    assert colours.colour(3) == generated_colour(3)


def test_artifacts_mark_stray_pixels():
    labels = np.zeros((12, 12), np.uint8)
    labels[:, 6:] = 15
    labels[:, 5] = 7  # a 1-px band of 7 between 0 and 15: a bilinear-resize fringe
    options = ShowOptions(ignore=(255,), num_classes=21, artifacts=True)
    shown = render_mask(labels, colours=class_colours(values=[0, 15]), options=options)
    assert (shown.pixels[:, 5] == MAGENTA).all()
    assert shown.problem_pixels == 12
    assert 7 not in shown.class_pixels
    with pytest.raises(ValueError, match="artifacts needs num_classes"):
        ShowOptions(artifacts=True)


def test_worst_first_orders_by_problems_then_void():
    surveys = [
        MaskSurvey("a", "a", void_pixels=5),
        MaskSurvey("b", "b", problem_pixels=3),
        MaskSurvey("x", "x", error="empty file"),
        MaskSurvey("c", "c", problem_pixels=3, void_pixels=2),
        MaskSurvey("d", "d", problem_pixels=1),
    ]
    assert [s.path for s in worst_first(surveys, 3)] == ["c", "b", "d"]
    assert [s.path for s in worst_first(surveys, 10)] == ["c", "b", "d", "a"]


@pytest.fixture
def worst_masks(tmp_path):
    """Four masks with known problem (value 9, num_classes 4) and void (255) pixels."""
    root = tmp_path / "masks"

    def mask(bad: int, void: int) -> np.ndarray:
        m = np.ones((6, 8), np.uint8)
        m.flat[:bad] = 9
        m.flat[48 - void :] = 255
        return m

    save_png(root / "a.png", mask(0, 5))
    save_png(root / "b.png", mask(3, 0))
    save_palette_png(root / "c.png", mask(3, 2))
    np.save(root / "d.npy", mask(1, 0).astype(np.int16))
    return root


def test_cli_worst_order_and_sheet(worst_masks, tmp_path):
    out = tmp_path / "sheet.png"
    args = ["show", str(worst_masks), "--worst", "3", "-n", "4", "--ignore", "255", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()[1:4]]
    assert rows == [
        ["c.png", "palette", "3", "2"],
        ["b.png", "8-bit", "3", "0"],
        ["d.npy", "npy", "1", "0"],
    ]
    assert f"Wrote {out}: 3 mask(s)" in result.stdout
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        sheet = np.asarray(im)
    assert (sheet == MAGENTA).all(axis=2).sum() >= 7  # the problem pixels, and the legend swatch
    plan = plan_show([worst_masks], options=ShowOptions(ignore=(255,), num_classes=4), worst=3)
    assert plan.colours.source == "palette"  # c.png's VOC palette colours the whole sheet
    assert [s.relpath for s in plan.surveys] == ["c.png", "b.png", "d.npy"]


def test_cli_each_files_and_images(worst_masks, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((6, 8, 3), 200, np.uint8)).save(images / "a.jpg", quality=95)
    each = tmp_path / "each"
    args = ["show", str(worst_masks), "--files", "a", "--files", "d.npy", "--each", str(each)]
    args += ["--images", str(images), "--alpha", "0.5", "--ignore", "255", "-n", "4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in each.glob("[!.]*")) == ["a.png", "d.npy.png"]
    assert f"labelfix: warning: d.npy: no image under {images} (looked for d.*;" in result.stderr
    with Image.open(each / "a.png") as im:
        first = np.asarray(im)[PAD + 1, PAD + 1]  # thumbnail pixel (0, 0), inside its frame
    expected = np.rint(0.5 * np.asarray(generated_colour(1)) + 0.5 * 200)
    assert np.abs(first.astype(int) - expected).max() <= 3  # JPEG image: 200 +- 2


def test_cli_sixteen_bit_and_colour_masks(tmp_path):
    root = tmp_path / "m"
    wide = np.full((4, 5), 300, np.uint16)
    wide[0, 0] = 70000 % 65536
    save_png(root / "wide.png", wide)
    colour = np.zeros((4, 5, 3), np.uint8)
    colour[:, 2:] = (192, 128, 128)  # VOC person
    save_png(root / "colour.png", colour)
    out = tmp_path / "s.png"
    result = CliRunner().invoke(main, ["show", str(root), "-o", str(out), "--colormap", "voc"])
    assert result.exit_code == 0, result.output
    assert "colour.png  colormap" in result.stdout and "wide.png    16-bit" in result.stdout
    plan = plan_show([root], options=ShowOptions(), read=None)
    assert [s.relpath for s in plan.surveys] == ["wide.png"]
    assert [e[0].endswith("colour.png") for e in plan.errors] == [True]

    result = CliRunner().invoke(main, ["show", str(root), "-o", str(out)])
    assert result.exit_code == 1
    assert "colour mask (3 channels): colours are not class ids, a colormap is needed" in (
        result.stderr
    )
    assert "wide.png" in result.stdout  # the readable one is still drawn


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "say where the pictures go: -o sheet.png and/or --each DIR"),
        (["-o", "s.png", "--artifacts"], "--artifacts needs --num-classes"),
        (["-o", "s.png", "--files", "nope"], "--files nope: no mask of that name among the 4"),
        (["-o", "s.png", "--alpha", "1.5"], "1.5 is not in the range 0.0<=x<=1.0"),
        (["-o", "s.jpg"], "-o s.jpg: the sheet is a PNG file, name it *.png"),
    ],
)
def test_cli_usage_errors(worst_masks, tmp_path, args, message):
    result = CliRunner().invoke(main, ["show", str(worst_masks), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_show_and_stats_do_not_import_matplotlib(tmp_path):
    save_png(tmp_path / "m" / "a.png", np.zeros((2, 2), np.uint8))
    code = (
        "import sys\n"
        "from labelfix.cli import main\n"
        "out = sys.argv[2]\n"
        "for args in (['--help'], ['stats', sys.argv[1]], ['show', sys.argv[1], '-o', out]):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "sys.exit(1 if 'matplotlib' in sys.modules else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m"), str(tmp_path / "s.png")],
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "s.png").exists()


def test_zoom_repeats_pixels_and_void_minus_one_is_hatched():
    labels = np.array([[0, -1], [7, 1]], np.int16)
    options = ShowOptions(ignore=(-1,), num_classes=2, zoom=3)
    shown = render_mask(labels, colours=class_colours(values=[0, 1]), options=options)
    assert shown.pixels.shape == (6, 6, 3)
    problem = (shown.pixels == MAGENTA).all(axis=2)
    assert np.argwhere(problem).tolist() == [[y, x] for y in (3, 4, 5) for x in (0, 1, 2)]
    hatch = hatch_pattern(6, 6)
    assert (shown.pixels[:3, 3:] == hatch[:3, 3:]).all()
    assert (shown.pixels[3:, 3:] == generated_colour(1)).all()


def test_cli_limit_note(tmp_path):
    for i in range(3):
        save_png(tmp_path / "m" / f"{i}.png", np.full((3, 3), i, np.uint8))
    out = tmp_path / "s.png"
    result = CliRunner().invoke(main, ["show", str(tmp_path / "m"), "-o", str(out), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "note: showing the first 2 of 3 masks" in result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:3]] == ["0.png", "1.png"]


def test_images_are_drawn_as_stored_and_an_exif_orientation_is_named(tmp_path):
    """Regression (issue 21): show --images drew photos with an EXIF orientation as stored
    (as TensorFlow reads them) without a word, so a mask drawn on the displayed photo seemed
    to fit or not for no visible reason. Now the image is still drawn as stored, and the
    orientation is named; a size mismatch that it explains says so."""
    masks, images = tmp_path / "m", tmp_path / "img"
    stored = np.zeros((4, 6, 3), np.uint8)
    stored[:, :3] = 255  # the left half white, as stored
    save_oriented(images / "a.png", stored, 3)  # viewers show it upside down
    save_png(masks / "a.png", np.zeros((4, 6), np.uint8))
    save_oriented(images / "b.jpg", stored, 6)
    save_png(masks / "b.png", np.zeros((6, 4), np.uint8))  # drawn on the displayed photo
    each = tmp_path / "each"
    args = ["show", str(masks), "--images", str(images), "--each", str(each), "--alpha", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (
        "labelfix: warning: a.png: image drawn as stored, as TensorFlow reads it; EXIF "
        "orientation 3 makes viewers show it rotated 180 degrees"
    ) in result.stderr
    assert (
        "labelfix: warning: b.png: image 6x4 != mask 4x6: EXIF orientation 6 displays it as "
        "4x6, the mask's size, but TensorFlow reads it as stored"
    ) in result.stderr
    with Image.open(each / "a.png") as im:
        drawn = np.asarray(im)
    assert drawn[PAD + 1, PAD + 1].tolist() == [255, 255, 255]  # the stored left half: white


def test_legend_has_no_void_entry_without_ignore():
    """Found trying labelfix as a new user: the legend said "void (no --ignore)" when no
    ignore was given (nothing is void then)."""
    from labelfix.viz.sheet import prepare_mask

    colours = class_colours(values=[0, 1])
    prepared = prepare_mask(np.array([[0, 1], [1, 255]], np.uint8), options=ShowOptions())
    kinds = [e.kind for e in legend_entries([prepared], colours=colours, options=ShowOptions())]
    assert kinds == ["class", "class", "class", "problem"]
    with_void = ShowOptions(ignore=(255,))
    prepared = prepare_mask(np.array([[0, 1], [1, 255]], np.uint8), options=with_void)
    labels = [e.label for e in legend_entries([prepared], colours=colours, options=with_void)]
    assert "void (255)" in labels


def test_masks_with_different_palettes_are_not_drawn_in_the_first_ones(tmp_path):
    """Found trying labelfix as a new user: show used the first file's palette for masks with
    different palettes."""
    from PIL import Image as PILImage

    from labelfix.viz.selection import DIFFERENT_PALETTES

    mask = np.array([[0, 1], [1, 1]], np.uint8)
    masks = tmp_path / "masks"
    save_palette_png(masks / "a.png", mask)
    other = PILImage.fromarray(mask)
    other.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    other.save(masks / "b.png")
    plan = plan_show([masks], options=ShowOptions(), jobs=1)
    assert plan.colours.source == DIFFERENT_PALETTES
    assert plan.colours.colour(1) == generated_colour(1)
    result = CliRunner().invoke(main, ["show", str(masks), "-o", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert "labelfix: note: the masks' palettes give a class different colours" in result.stderr
    (masks / "b.png").unlink()
    save_palette_png(masks / "b.png", mask)  # the same palette: it colours the sheet
    plan = plan_show([masks], options=ShowOptions(), jobs=1)
    assert plan.colours.source == "palette" and plan.colours.colour(1) == (128, 0, 0)


def test_the_highlight_is_far_from_every_voc_class_colour():
    """Found trying labelfix as a new user: the magenta highlight was close to VOC class 13's
    purple (192, 0, 128)."""
    colours = class_colours(values=range(21), palette=voc_palette())
    assert colours.highlight == (0, 255, 255)
    palette = np.frombuffer(voc_palette(), np.uint8).reshape(-1, 3)[:21].astype(float)
    assert np.sqrt(((palette - colours.highlight) ** 2).sum(axis=1)).min() > 150
