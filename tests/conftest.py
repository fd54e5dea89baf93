"""Fixtures: tiny mask datasets in every form real datasets use, generated per test."""

from __future__ import annotations

import io
import struct
import zlib
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


# ----------------------------------------------------------------------------- hand-made PNGs

#: Adam7 passes: first column, first row, column step, row step.
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk with its length and a right CRC-32."""
    crc = zlib.crc32(data, zlib.crc32(tag))
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def _packed(row: np.ndarray, depth: int) -> bytes:
    """One row of samples (``[W, C]``) packed at ``depth`` bits, after a filter byte 0."""
    flat = row.reshape(-1)
    if depth == 16:
        return b"\0" + flat.astype(">u2").tobytes()
    if depth == 8:
        return b"\0" + flat.astype(np.uint8).tobytes()
    bits = np.unpackbits(flat.astype(np.uint8)[:, None], axis=1)[:, 8 - depth :]
    return b"\0" + np.packbits(bits.reshape(-1)).tobytes()


def handmade_png(
    samples: np.ndarray,
    depth: int,
    colour: int,
    *,
    ihdr_height: int | None = None,
    interlace: int = 0,
    palette: bytes | None = None,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """A PNG written chunk by chunk: the IHDR (saying ``ihdr_height`` rows, default the
    samples'), PLTE, the ``extra`` chunks, one IDAT holding a valid zlib stream of exactly the
    rows of ``samples`` (``[H, W]`` or ``[H, W, C]``; Adam7 passes when ``interlace``), IEND;
    every CRC right. A liar when ``ihdr_height`` differs from the rows it holds."""
    if samples.ndim == 2:
        samples = samples[:, :, None]
    height, width = samples.shape[:2]
    rows = []
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    for x0, y0, dx, dy in passes:
        part = samples[y0::dy, x0::dx]
        if part.shape[0] and part.shape[1]:
            rows += [_packed(line, depth) for line in part]
    header = struct.pack(">IIBBBBB", width, ihdr_height or height, depth, colour, 0, 0, interlace)
    parts = [b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", header)]
    if palette is not None:
        parts.append(png_chunk(b"PLTE", palette))
    parts += [png_chunk(tag, data) for tag, data in extra]
    parts += [png_chunk(b"IDAT", zlib.compress(b"".join(rows))), png_chunk(b"IEND", b"")]
    return b"".join(parts)


def save_oriented(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    """An image (JPEG by suffix ``.jpg``, else PNG with an eXIf chunk) of ``pixels`` as stored,
    with EXIF orientation ``orientation``: what cameras and phones write."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(pixels).save(path, format=fmt, exif=exif.tobytes(), quality=95)
    return path
