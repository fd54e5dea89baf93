"""labelfix.io.pairing: one set of naming rules for validate, show, to-tfrecord, predict, doctor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from labelfix.cli import main
from labelfix.errors import UsageError
from labelfix.io.pairing import (
    AmbiguousImage,
    MasksAsImages,
    Naming,
    check_images_folder,
    find_image,
    find_pairs,
    settle_naming,
)
from labelfix.training.predict import find_images as predict_images

import dataset_fixtures as fixtures
from conftest import save_png


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _pairs(pairing) -> list[tuple[str, str]]:
    return [(Path(p.mask).name, Path(p.image).name) for p in pairing.pairs]


def test_same_stem_pairs_voc_names(tmp_path):
    root = fixtures.voc(tmp_path / "voc", n=2)
    pairing = find_pairs(images=root / "JPEGImages", masks=root / "SegmentationClass",
                         skip_unpaired=True)  # fmt: skip
    assert _pairs(pairing) == [
        ("2007_000000.png", "2007_000000.jpg"),
        ("2007_000001.png", "2007_000001.jpg"),
    ]
    assert [p.source_id for p in pairing.pairs] == ["2007_000000", "2007_000001"]
    assert pairing.unpaired == (
        f"{root / 'JPEGImages' / '2008_000000.jpg'}: no mask for this image under "
        f"{root / 'SegmentationClass'}",
    )


def test_cityscapes_suffixes_pair_without_options_and_settle_on_one_label_kind(tmp_path):
    root = fixtures.cityscapes(tmp_path / "cs")
    images, masks = root / "leftImg8bit" / "train", root / "gtFine" / "train"
    mask = "aachen/aachen_000000_000019_gtFine_labelTrainIds.png"
    expected = images / "aachen" / "aachen_000000_000019_leftImg8bit.png"
    assert find_image(images, mask) == str(expected)
    # labelIds and labelTrainIds are two readings of one scene: the user chooses
    with pytest.raises(UsageError, match=r"choose --mask-suffix _gtFine_labelIds \(2 file\(s\)\) "
                       r"or --mask-suffix _gtFine_labelTrainIds \(2 file\(s\)\)"):  # fmt: skip
        find_pairs(images=images, masks=masks)
    pairing = find_pairs(images=images, masks=masks, naming=Naming(mask_suffix="_gtFine_labelIds"))
    assert _pairs(pairing)[0] == (
        "aachen_000000_000019_gtFine_labelIds.png",
        "aachen_000000_000019_leftImg8bit.png",
    )
    assert pairing.pairs[0].source_id == "aachen/aachen_000000_000019"
    assert sorted(n.split(" mask(s)")[0] for n in pairing.notes) == [
        "left out 2 _gtFine_color",
        "left out 2 _gtFine_instanceIds",
    ]
    only_ids = settle_naming(["a_gtFine_labelIds", "a_gtFine_instanceIds", "a_gtFine_color"])
    assert only_ids[0] == Naming(mask_suffix="_gtFine_labelIds") and len(only_ids[1]) == 2


def test_mmseg_gt_suffix_and_labelme_npy_pair_by_stem(tmp_path):
    save_png(tmp_path / "img_dir" / "train" / "0001.jpg", np.zeros((4, 6, 3), np.uint8))
    save_png(tmp_path / "ann_dir" / "train" / "0001_gt.png", np.zeros((4, 6), np.uint8))
    pairing = find_pairs(images=tmp_path / "img_dir", masks=tmp_path / "ann_dir")
    assert _pairs(pairing) == [("0001_gt.png", "0001.jpg")]
    assert pairing.pairs[0].source_id == "train/0001"
    root = fixtures.labelme(tmp_path / "lm", n=2)
    pairing = find_pairs(images=root / "JPEGImages", masks=root / "SegmentationClassNpy")
    assert _pairs(pairing) == [("img_0.npy", "img_0.jpg"), ("img_1.npy", "img_1.jpg")]


def test_two_images_for_one_mask_are_a_problem_not_a_pick(tmp_path):
    save_png(tmp_path / "masks" / "p1.png", np.zeros((4, 6), np.uint8))
    for ext in ("jpg", "png"):
        save_png(tmp_path / "images" / f"p1.{ext}", np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(AmbiguousImage):
        find_image(tmp_path / "images", "p1.png")
    pairing = find_pairs(images=tmp_path / "images", masks=tmp_path / "masks", skip_unpaired=True)
    assert pairing.pairs == () and pairing.ambiguous == 1
    assert pairing.unpaired[0].startswith(f"{tmp_path / 'masks' / 'p1.png'}: 2 images match:")


def test_a_mask_is_never_paired_with_itself(tmp_path):
    """Found trying labelfix as a new user: `validate masks --images masks` paired each mask
    with itself and said OK."""
    masks = fixtures.voc_palette_masks(tmp_path / "masks")
    assert find_image(masks, "0000.png", mask=str(masks / "0000.png")) is None
    for args in (
        ["validate", masks, "-n", "21", "--images", masks],
        ["show", masks, "--images", masks, "-o", tmp_path / "sheet.png"],
        ["to-tfrecord", "--images", masks, "--masks", masks, "-o", tmp_path / "tfr", "-n", "21"],
    ):
        result = cli(*args)
        assert result.exit_code == 2, (args[0], result.output)
        assert (
            f"labelfix: error: {masks} is the masks folder {masks}, given as the images folder: "
            "it holds no image besides the masks"
        ) in result.stderr
        assert "OK" not in result.stdout
    assert not (tmp_path / "sheet.png").exists() and not (tmp_path / "tfr").exists()


def test_a_folder_of_masks_given_as_the_images_is_refused_everywhere(tmp_path):
    masks = fixtures.voc_palette_masks(tmp_path / "SegmentationClassAug")
    other = fixtures.voc_palette_masks(tmp_path / "SegmentationClass")
    message = (
        f"labelfix: error: {other} holds masks, not pictures (2 of 2 image file(s) looked at are "
        "masks: 0000.png is a palette PNG; 0001.png is a palette PNG)"
    )
    for args in (
        ["validate", masks, "-n", "21", "--images", other],
        ["show", masks, "--images", other, "-o", tmp_path / "sheet.png"],
        ["to-tfrecord", "--images", other, "--masks", masks, "-o", tmp_path / "tfr", "-n", "21"],
    ):
        result = cli(*args)
        assert result.exit_code == 2, (args[0], result.output)
        assert message in result.stderr
    with pytest.raises(MasksAsImages):
        predict_images(other)
    grey = tmp_path / "grey"
    save_png(grey / "a.png", np.array([[0, 1], [1, 2]], np.uint8))
    with pytest.raises(MasksAsImages, match=r"a\.png is a grey PNG of 3 value"):
        check_images_folder(grey, [masks])
    photos = tmp_path / "photos"
    save_png(photos / "a.png", np.arange(64, dtype=np.uint8).reshape(8, 8))  # grey, 64 values
    check_images_folder(photos, [masks])


def test_suffix_options_work_the_same_in_validate_show_and_to_tfrecord(tmp_path):
    """validate --help's Cityscapes example failed on real Cityscapes names: only to-tfrecord
    had --image-suffix/--mask-suffix."""
    root = fixtures.cityscapes(tmp_path / "cs")
    images, masks = root / "leftImg8bit" / "train", root / "gtFine" / "train"
    suffix = ["--mask-suffix", "_gtFine_labelTrainIds", "--image-suffix", "_leftImg8bit"]
    glob = ["--glob", "*_labelTrainIds.png"]
    result = cli("validate", masks, "-n", "19", "--ignore", "255", "--images", images, *glob)
    assert result.exit_code == 0, result.output  # the help's example, conventions alone
    assert result.stdout.splitlines()[-1] == "OK: 2 files, 0 with problems, 0 warning(s)"
    result = cli("validate", masks, "-n", "19", "--ignore", "255", "--images", images, *glob,
                 *suffix)  # fmt: skip
    assert result.exit_code == 0, result.output
    wrong = cli("validate", masks, "-n", "19", "--ignore", "255", "--images", images, *glob,
                "--image-suffix", "_rightImg8bit")  # fmt: skip
    assert wrong.exit_code == 1
    assert ", aachen/aachen_000000_000019_rightImg8bit.*)" in wrong.stdout
    sheet = tmp_path / "sheet.png"
    shown = cli("show", masks, "--images", images, *glob, *suffix, "-o", sheet)
    assert shown.exit_code == 0, shown.output
    assert "no image" not in shown.stderr and sheet.exists()
    records = cli("to-tfrecord", "--images", images, "--masks", masks, "-o", tmp_path / "tfr",
                  "-n", "19", "--ignore", "255", *suffix)  # fmt: skip
    assert records.exit_code == 0, records.output
    assert records.stdout.startswith("Wrote 2 records")


def test_to_tfrecord_leaves_instance_ids_out_with_a_note(tmp_path):
    root = fixtures.cityscapes(tmp_path / "cs")
    images, masks = root / "leftImg8bit" / "val", root / "gtFine" / "val"
    for path in masks.rglob("*_labelIds.png"):
        path.unlink()  # labelTrainIds, instanceIds and color are left
    result = cli("to-tfrecord", "--images", images, "--masks", masks, "-o", tmp_path / "tfr",
                 "-n", "19", "--ignore", "255")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Wrote 1 record" in result.stdout
    assert (
        f"labelfix: warning: left out 1 _gtFine_instanceIds mask(s) under {masks}: instance "
        "ids, not semantic labels"
    ) in result.stderr
