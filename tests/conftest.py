"""Fixtures: tiny mask datasets in every form real datasets use, generated per test."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelfix.labels.presets import voc_palette


def save_palette_png(path: Path, indices: np.ndarray) -> Path:
    """A VOC-style paletted PNG: the real 256-colour VOC palette over ``indices``."""
    im = Image.fromarray(indices.astype(np.uint8))
    im.putpalette(voc_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def voc_mask() -> np.ndarray:
    """8x10 VOC-style mask: background 0, a class-15 person with a 255 border, a class-5 bottle."""
    m = np.zeros((8, 10), np.uint8)
    m[1:6, 1:5] = 255
    m[2:5, 2:4] = 15
    m[6:8, 7:10] = 5
    return m


@pytest.fixture
def voc_palette_bytes() -> bytes:
    return voc_palette()


@pytest.fixture
def clean_masks(tmp_path: Path) -> Path:
    """Four valid masks for num_classes=21, ignore 255: palette, 8-bit, 16-bit, npy."""
    root = tmp_path / "masks"
    save_palette_png(root / "a" / "0001.png", voc_mask())
    save_png(root / "a" / "0002.png", np.full((8, 10), 3, np.uint8))
    sixteen = np.zeros((8, 10), np.uint16)
    sixteen[0, :] = 255
    sixteen[4:, 4:] = 20
    save_png(root / "b" / "0003.png", sixteen)
    npy = np.ones((8, 10), np.int16)
    npy[0, 0] = 255
    np.save(root / "b" / "0004.npy", npy)
    return root


@pytest.fixture
def messy_masks(tmp_path: Path) -> Path:
    """One good mask plus every kind of problem a scan must survive."""
    root = tmp_path / "messy"
    save_palette_png(root / "good.png", voc_mask())
    bad = voc_mask()
    bad[3, 7] = 37
    bad[3, 8] = 37
    save_png(root / "out_of_range.png", bad)
    wide = np.zeros((4, 4), np.uint16)
    wide[1, 2] = 300  # wraps to 44 under a uint8 cast
    save_png(root / "sixteen.png", wide)
    save_png(root / "void.png", np.full((4, 4), 255, np.uint8))
    save_png(root / "colour.png", np.zeros((4, 4, 3), np.uint8))
    buf = io.BytesIO()
    Image.fromarray(voc_mask()).save(buf, format="JPEG")
    (root / "jpeg_named_png.png").write_bytes(buf.getvalue())
    full = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8) + 1).save(full, format="PNG")
    (root / "truncated.png").write_bytes(full.getvalue()[:60])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.npy").write_bytes(b"not a numpy file")
    return root
