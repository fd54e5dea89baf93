"""Image files: EXIF orientation (which TensorFlow's decoders ignore), read from the bytes, and
the picture turned as viewers show it."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from labelfix.io.images import (
    apply_orientation,
    decode_problem,
    displayed_size,
    exif_orientation,
)
from labelfix.synthetic import shapes_sample

from conftest import handmade_png, png_chunk, save_oriented, save_png


def _pixels(height: int = 4, width: int = 6) -> np.ndarray:
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[0, 0] = (255, 0, 0)  # a red corner shows every turn and mirror
    pixels[0, 1] = (0, 255, 0)
    return pixels


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_read_and_applied_as_viewers_do(tmp_path, suffix, orientation):
    path = save_oriented(tmp_path / f"a{suffix}", _pixels(), orientation)
    data = path.read_bytes()
    assert exif_orientation(data) == orientation
    turned, header = apply_orientation(data, orientation)
    viewers = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    ours = np.asarray(Image.open(io.BytesIO(turned)))
    np.testing.assert_array_equal(ours, viewers)  # lossless: the decoded pixels, turned
    assert header == ("png", *displayed_size(4, 6, orientation), 3)
    assert exif_orientation(turned) == 1  # the PNG carries no orientation


def test_big_endian_exif_and_files_without_or_with_odd_orientations():
    def tiff(order: str, value: int, kind: int = 3) -> bytes:
        head = (b"MM" if order == ">" else b"II") + struct.pack(order + "HI", 42, 8)
        entry = struct.pack(order + "HHI", 0x0112, kind, 1)
        entry += struct.pack(
            order + ("HH" if kind == 3 else "I"), value, *([0] if kind == 3 else [])
        )
        return head + struct.pack(order + "H", 1) + entry + b"\0\0\0\0"

    png = io.BytesIO()
    Image.new("L", (2, 2)).save(png, format="PNG")
    plain = png.getvalue()
    for block, want in ((tiff(">", 8), 8), (tiff("<", 6, kind=4), 6), (tiff(">", 9), 1)):
        data = plain[:33] + png_chunk(b"eXIf", block) + plain[33:]
        assert exif_orientation(data) == want
    assert exif_orientation(plain) == 1
    assert exif_orientation(plain[:33] + png_chunk(b"eXIf", b"MM\0*\0\0\0\xff")) == 1
    assert exif_orientation(b"\xff\xd8\xff\xd9") == 1 and exif_orientation(b"") == 1


def test_a_png_image_with_a_large_text_chunk_is_an_image_not_a_corrupt_file(tmp_path):
    """Regression (issue 21): text chunks are metadata for images too. A PNG photo with a zTXt
    inflating past Pillow's 1 MB limit (TensorFlow decodes it) was "corrupt" to validate
    --images and to-tfrecord."""
    from click.testing import CliRunner

    from labelfix.cli import main

    pixels = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    comment = (b"zTXt", b"Comment\0\0" + zlib.compress(b"x" * (3 << 20)))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(handmade_png(pixels, 8, 2, extra=(comment,)))
    save_png(tmp_path / "masks" / "a.png", np.zeros((4, 6), np.uint8))
    runner = CliRunner()
    checked = runner.invoke(main, ["validate", str(tmp_path / "masks"), "-n", "2", "--images",
                                   str(tmp_path / "images")])  # fmt: skip
    assert checked.exit_code == 0, checked.output
    written = runner.invoke(main, ["to-tfrecord", "--images", str(tmp_path / "images"),
                                   "--masks", str(tmp_path / "masks"), "-o", str(tmp_path / "t"),
                                   "-n", "2"])  # fmt: skip
    assert written.exit_code == 0, written.output
    verified = runner.invoke(main, ["verify", str(tmp_path / "t")])
    assert verified.exit_code == 0, verified.output


def test_a_jpeg_checked_at_reduced_scale_fails_exactly_when_a_full_decode_fails():
    """Issue 25: decode_problem decodes JPEGs at 1/8 scale (libjpeg still reads and decodes
    every entropy-coded byte); truncated and bit-flipped files fail exactly as a full decode
    fails them."""
    rng = np.random.default_rng(1)
    image, _ = shapes_sample(rng, height=120, width=160, num_classes=5, void=255)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=90)
    good = buf.getvalue()

    def full_decode_fails(data: bytes) -> bool:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
        except (OSError, SyntaxError, ValueError):
            return True
        return False

    cases = [good] + [good[:n] for n in range(400, len(good) - 2, 97)]
    for _ in range(40):
        flipped = bytearray(good)
        flipped[int(rng.integers(400, len(good) - 2))] ^= 1 << int(rng.integers(0, 8))
        cases.append(bytes(flipped))
    failed = [decode_problem(d) is not None for d in cases]
    assert failed == [full_decode_fails(d) for d in cases]
    assert not failed[0] and sum(failed) >= 10
