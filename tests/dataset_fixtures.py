"""Tiny datasets in each convention ``labelfix doctor`` and the pairing module know.

Each builder writes a few small image/mask pairs under ``root`` laid out and named as the real
dataset is, and returns ``root``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from labelfix.labels.presets import CITYSCAPES_TRAIN_IDS
from labelfix.synthetic import cityscapes_like_mask, shapes_sample

from conftest import save_palette_png, save_png


def _jpeg(path: Path, pixels: np.ndarray, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=quality)
    return path


def _picture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def voc(root: Path, *, n: int = 4, seed: int = 0) -> Path:
    """Pascal VOC: JPEGImages/*.jpg, SegmentationClass/*.png (VOC palette, 255 borders around
    the objects), SegmentationObject/, ImageSets/Segmentation/{train,val,trainval,test}.txt."""
    rng = np.random.default_rng(seed)
    ids = [f"2007_{k:06d}" for k in range(n)]
    for sid in ids:
        image, mask = shapes_sample(rng, height=40, width=48, num_classes=21, border=2)
        _jpeg(root / "JPEGImages" / f"{sid}.jpg", image)
        save_palette_png(root / "SegmentationClass" / f"{sid}.png", mask)
        save_palette_png(root / "SegmentationObject" / f"{sid}.png", (mask > 0).astype(np.uint8))
    _jpeg(root / "JPEGImages" / "2008_000000.jpg", _picture(rng, 40, 48))  # a test image
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    half = n // 2
    (lists / "train.txt").write_text("\n".join(ids[:half]) + "\n")
    (lists / "val.txt").write_text("\n".join(ids[half:]) + "\n")
    (lists / "trainval.txt").write_text("\n".join(ids) + "\n")
    (lists / "test.txt").write_text("2008_000000\n")
    return root


def cityscapes(root: Path, *, seed: int = 0) -> Path:
    """Cityscapes: leftImg8bit/{train,val}/CITY/*_leftImg8bit.png and gtFine/{train,val}/CITY/
    with *_gtFine_labelIds.png, *_gtFine_labelTrainIds.png, *_gtFine_instanceIds.png (16-bit,
    labelId * 1000 + k) and *_gtFine_color.png."""
    rng = np.random.default_rng(seed)
    table = np.full(256, 255, np.uint8)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        table[label_id] = train_id
    for split, city, count in (("train", "aachen", 2), ("val", "frankfurt", 1)):
        for k in range(count):
            stem = f"{city}_{k:06d}_000019"
            label_ids = cityscapes_like_mask(rng, height=32, width=64)
            gt = root / "gtFine" / split / city
            save_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                     _picture(rng, 32, 64))  # fmt: skip
            save_png(gt / f"{stem}_gtFine_labelIds.png", label_ids)
            save_png(gt / f"{stem}_gtFine_labelTrainIds.png", table[label_ids])
            instances = label_ids.astype(np.uint16)
            instances[label_ids == 26] = 26001
            save_png(gt / f"{stem}_gtFine_instanceIds.png", instances)
            save_png(gt / f"{stem}_gtFine_color.png", _picture(rng, 32, 64))
    return root


def ade20k(root: Path, *, seed: int = 0) -> Path:
    """ADEChallengeData2016: images/{training,validation}/*.jpg and annotations/... with 0
    ("other", reduce-zero-label void) in every mask beside ids 1..150."""
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    for split, count in (("training", 3), ("validation", 1)):
        for k in range(count):
            stem = f"ADE_{split[:5]}_{k:08d}"
            mask = np.zeros((32, 40), np.uint8)
            for row, cls in enumerate(rng.choice(np.arange(1, 151), size=4, replace=False)):
                mask[row * 8 + 1 : row * 8 + 7, 1:39] = cls  # regions with 0 between them
            mask[4, 10] = 0
            _jpeg(base / "images" / split / f"{stem}.jpg", _picture(rng, 32, 40))
            save_png(base / "annotations" / split / f"{stem}.png", mask)
    return root


def binary(root: Path, *, n: int = 3, seed: int = 0) -> Path:
    """images/*.jpg beside masks/*.png of 0 and 255, 255 the foreground (solid blobs)."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        mask = np.zeros((48, 64), np.uint8)
        y, x = int(rng.integers(2, 20)), int(rng.integers(2, 30))
        mask[y : y + 24, x : x + 30] = 255
        _jpeg(root / "images" / f"{k:04d}.jpg", _picture(rng, 48, 64))
        save_png(root / "masks" / f"{k:04d}.png", mask)
    return root


def labelme(root: Path, *, n: int = 3, seed: int = 0) -> Path:
    """labelme2voc output: JPEGImages/, SegmentationClass/ (palette, -1 stored as 255),
    SegmentationClassNpy/*.npy (int32, -1 for __ignore__), SegmentationClassVisualization/,
    class_names.txt (_background_ first)."""
    rng = np.random.default_rng(seed)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "class_names.txt").write_text("_background_\ncat\ndog\n")
    for k in range(n):
        labels = np.zeros((20, 24), np.int32)
        labels[3:12, 4:14] = 1 + k % 2
        labels[14:18, 2:20] = 2
        labels[2, 3:15] = -1  # an __ignore__ polygon edge
        stem = f"img_{k}"
        _jpeg(root / "JPEGImages" / f"{stem}.jpg", _picture(rng, 20, 24))
        (root / "SegmentationClassNpy").mkdir(exist_ok=True)
        np.save(root / "SegmentationClassNpy" / f"{stem}.npy", labels)
        save_palette_png(root / "SegmentationClass" / f"{stem}.png", labels.astype(np.uint8))
        _jpeg(root / "SegmentationClassVisualization" / f"{stem}.jpg", _picture(rng, 20, 24))
    return root


def jpeg_masks(root: Path, *, n: int = 2, seed: int = 0) -> Path:
    """images/*.png beside masks/*.jpg: VOC-style masks (classes 0..5, 255 borders) saved as
    JPEG, the values smeared on every edge."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        image, mask = shapes_sample(rng, height=48, width=64, num_classes=6, border=2)
        save_png(root / "images" / f"{k:04d}.png", image)
        buffer = io.BytesIO()
        Image.fromarray(mask).save(buffer, "JPEG", quality=90)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        (root / "masks" / f"{k:04d}.jpg").write_bytes(buffer.getvalue())
    return root


def voc_palette_masks(folder: Path, *, n: int = 2) -> Path:
    """A bare folder of VOC palette masks (for the pairing tests)."""
    for k in range(n):
        mask = np.zeros((8, 10), np.uint8)
        mask[2:6, 2:6] = 15
        save_palette_png(folder / f"{k:04d}.png", mask)
    return folder


def colour_masks(root: Path, *, n: int = 2, seed: int = 0) -> Path:
    """images/*.jpg beside labels/*.png drawn in Pascal VOC's colours (RGB, not a palette):
    background, person, and the cream void border."""
    from labelfix.labels.presets import voc_palette

    rng = np.random.default_rng(seed)
    colours = np.frombuffer(voc_palette(), np.uint8).reshape(-1, 3)
    for k in range(n):
        _, mask = shapes_sample(rng, height=32, width=40, num_classes=21, border=2)
        _jpeg(root / "images" / f"{k:04d}.jpg", _picture(rng, 32, 40))
        save_png(root / "labels" / f"{k:04d}.png", colours[mask])
    return root


def mmseg(root: Path, *, seed: int = 0) -> Path:
    """mmsegmentation: img_dir/{train,val}/*.jpg and ann_dir/{train,val}/*_gt.png (0..3)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", 2), ("val", 1)):
        for k in range(count):
            mask = np.zeros((24, 32), np.uint8)
            mask[4:20, 3:15] = 1 + k
            mask[6:12, 18:30] = 3
            _jpeg(root / "img_dir" / split / f"{k:04d}.jpg", _picture(rng, 24, 32))
            save_png(root / "ann_dir" / split / f"{k:04d}_gt.png", mask)
    return root
