"""Reading masks: every storage form gives the class ids, never colours or luminance."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from labelfix.errors import NotALabelMask, UnreadableMask
from labelfix.io.atomic import atomic_path
from labelfix.io.images import decode_problem, image_header
from labelfix.io.masks import iter_mask_files, read_mask, smallest_int_dtype, write_mask
from labelfix.io.png import image_data_size, png_problem, rows_problem, scan_png

from conftest import handmade_png, save_palette_png, save_png, voc_mask


def test_palette_png_reads_indices_and_keeps_palette(tmp_path, voc_palette_bytes):
    path = save_palette_png(tmp_path / "m.png", voc_mask())
    mask = read_mask(path)
    assert mask.kind == "palette"
    assert mask.labels.dtype == np.uint8
    np.testing.assert_array_equal(mask.labels, voc_mask())
    assert mask.palette == voc_palette_bytes
    # index 15 is VOC's person colour (192, 128, 128), not the value 15
    assert mask.palette[15 * 3 : 15 * 3 + 3] == bytes((192, 128, 128))


def test_eight_sixteen_and_one_bit(tmp_path):
    eight = np.array([[0, 7, 255]], np.uint8)
    assert read_mask(save_png(tmp_path / "l.png", eight)).kind == "8-bit"
    sixteen = np.array([[0, 300, 65535]], np.uint16)
    m16 = read_mask(save_png(tmp_path / "i16.png", sixteen))
    assert m16.kind == "16-bit"
    assert m16.labels.dtype == np.uint16
    np.testing.assert_array_equal(m16.labels, sixteen)
    Image.fromarray(np.array([[True, False, True]])).save(tmp_path / "b.png")
    m1 = read_mask(tmp_path / "b.png")
    assert m1.kind == "1-bit"
    assert m1.labels.tolist() == [[1, 0, 1]]


def test_npy_as_is_and_squeezed(tmp_path):
    a = np.array([[-1, 0], [3, 2]], np.int8)
    np.save(tmp_path / "a.npy", a)
    m = read_mask(tmp_path / "a.npy")
    assert m.kind == "npy"
    assert m.labels.dtype == np.int8
    np.testing.assert_array_equal(m.labels, a)
    np.save(tmp_path / "b.npy", a[:, :, None])
    assert read_mask(tmp_path / "b.npy").labels.shape == (2, 2)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.png", "corrupt or truncated"),
        ("empty.png", "empty file"),
        ("notes.npy", "not a .npy file (no NumPy header)"),
    ],
)
def test_unreadable_files_raise_one_line_reason(messy_masks, name, reason):
    with pytest.raises(UnreadableMask) as info:
        read_mask(messy_masks / name)
    message = str(info.value)
    assert message.startswith(str(messy_masks / name) + ": ")
    assert reason in message
    assert "\n" not in message


def test_float_npy_is_refused(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((2, 2), np.float32))
    with pytest.raises(UnreadableMask, match="expected integer class ids, got dtype float32"):
        read_mask(tmp_path / "f.npy")


def test_colour_and_jpeg_are_not_labels(messy_masks):
    colour = read_mask(messy_masks / "colour.png")
    assert colour.kind == "colour"
    with pytest.raises(NotALabelMask, match="colour mask"):
        _ = colour.labels
    jpeg = read_mask(messy_masks / "jpeg_named_png.png")  # JPEG bytes behind a .png name
    assert jpeg.kind == "jpeg"
    with pytest.raises(NotALabelMask, match="JPEG mask"):
        _ = jpeg.labels


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    save_png(tmp_path / "big.png", np.zeros((100, 100), np.uint8))
    with pytest.raises(UnreadableMask, match="more than the limit of 5000 pixels"):
        read_mask(tmp_path / "big.png", max_pixels=5000)


def test_iter_mask_files_walks_sorted_and_filters(clean_masks):
    (clean_masks / "a" / "readme.txt").write_text("x")
    rel = [r for _, r in iter_mask_files([clean_masks])]
    assert rel == ["a/0001.png", "a/0002.png", "b/0003.png", "b/0004.npy"]
    rel_png = [r for _, r in iter_mask_files([clean_masks], glob="*.png")]
    assert rel_png == ["a/0001.png", "a/0002.png", "b/0003.png"]


def test_write_read_round_trip_keeps_depth_and_palette(tmp_path, voc_palette_bytes):
    eight = voc_mask()
    write_mask(tmp_path / "p.png", eight, palette=voc_palette_bytes)
    back = read_mask(tmp_path / "p.png")
    assert back.kind == "palette"
    assert back.palette == voc_palette_bytes
    np.testing.assert_array_equal(back.labels, eight)
    sixteen = np.array([[0, 256, 1000]], np.int32)
    write_mask(tmp_path / "s.png", sixteen)
    assert read_mask(tmp_path / "s.png").labels.tolist() == [[0, 256, 1000]]
    neg = np.array([[-1, 3]], np.int8)
    write_mask(tmp_path / "n.npy", neg)
    assert read_mask(tmp_path / "n.npy").labels.dtype == np.int8
    with pytest.raises(ValueError, match="cannot hold negative values"):
        write_mask(tmp_path / "n.png", neg)
    assert not (tmp_path / "n.png").exists()


def test_atomic_path_leaves_old_file_when_interrupted(tmp_path):
    final = tmp_path / "m.png"
    final.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_path(final) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise KeyboardInterrupt
    assert final.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


def test_smallest_int_dtype():
    assert smallest_int_dtype(0, 255) == np.uint8
    assert smallest_int_dtype(0, 256) == np.uint16
    assert smallest_int_dtype(-1, 127) == np.int8
    assert smallest_int_dtype(-1, 255) == np.int16


def test_palette_trap_tensorflow_reads_luminance_labelfix_reads_indices(tmp_path):
    """The bug labelfix exists for: decode_png(channels=1) on a VOC palette mask."""
    tf = pytest.importorskip("tensorflow")
    indices = np.array([[0, 5, 15, 255]], np.uint8)
    path = save_palette_png(tmp_path / "voc.png", indices)
    assert read_mask(path).labels.tolist() == [[0, 5, 15, 255]]
    decoded = tf.io.decode_png(tf.io.read_file(str(path)), channels=1).numpy()[..., 0]
    assert decoded.tolist() != [[0, 5, 15, 255]]
    # luminance of VOC colours (0,0,0) (0,128,128) (192,128,128) (224,224,192)
    assert decoded.tolist() == [[0, 52, 147, 220]]


def test_jpeg_bytes_are_detected_by_content_not_name(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="JPEG")
    (tmp_path / "x.png").write_bytes(buf.getvalue())
    assert read_mask(tmp_path / "x.png").kind == "jpeg"


def grey_png(bits: int, row: bytes, width: int) -> bytes:
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(data, zlib.crc32(tag))
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, 1, bits, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" + row)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_two_and_four_bit_grey_pngs_give_ids_not_scaled_values(tmp_path):
    """Regression: Pillow unpacks 2/4-bit grey scaled to 0..255 (0,1,2,3 -> 0,85,170,255)."""
    (tmp_path / "g2.png").write_bytes(grey_png(2, bytes([0b00011011]), 4))
    (tmp_path / "g4.png").write_bytes(grey_png(4, bytes([0x0F, 0x37]), 4))
    two, four = read_mask(tmp_path / "g2.png"), read_mask(tmp_path / "g4.png")
    assert (two.kind, two.labels.tolist()) == ("2/4-bit", [[0, 1, 2, 3]])
    assert (four.kind, four.labels.tolist()) == ("2/4-bit", [[0, 15, 3, 7]])


#: (bit depth, colour type) of every PNG format: grey, palette, RGB, grey + alpha, RGBA
PNG_FORMATS = [(1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (1, 3), (2, 3), (4, 3), (8, 3)]
PNG_FORMATS += [(8, 2), (16, 2), (8, 4), (16, 4), (8, 6), (16, 6)]
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _samples(depth: int, colour: int, height: int = 10, width: int = 13) -> np.ndarray:
    rng = np.random.default_rng(depth * 10 + colour)
    top = (1 << depth) if colour != 3 else min(1 << depth, 6)
    return rng.integers(0, top, (height, width, _SAMPLES[colour]), dtype=np.uint16)


@pytest.mark.parametrize("interlace", [0, 1])
@pytest.mark.parametrize(("depth", "colour"), PNG_FORMATS)
def test_png_whose_ihdr_claims_more_rows_than_its_data_holds_is_refused(depth, colour, interlace):
    """Regression (issue 21): a PNG whose IHDR claims more rows than its (valid) zlib stream
    holds was read with the missing rows as zeros (Pillow pads them), by every command;
    TensorFlow then failed in training ("Invalid PNG data") naming no file. Every bit depth
    and colour type, interlaced too: one line naming the file and both row counts."""
    samples = _samples(depth, colour)
    palette = bytes(range(18)) if colour == 3 else None
    honest = handmade_png(samples, depth, colour, interlace=interlace, palette=palette)
    mask = read_mask("honest.png", data=honest)  # the hand-made file is a valid PNG
    assert mask.shape == (10, 13)
    if colour in (0, 3) and depth != 1:  # a label mask: the ids as written
        np.testing.assert_array_equal(mask.labels, samples[:, :, 0])
    liar = handmade_png(samples, depth, colour, interlace=interlace, palette=palette,
                        ihdr_height=12)  # fmt: skip
    with pytest.raises(UnreadableMask) as err:
        read_mask("masks/liar.png", data=liar)
    if interlace:
        assert "IHDR says 12 rows (Adam7-interlaced, " in err.value.reason
    else:
        assert "IHDR says 12 rows, the image data holds 10;" in err.value.reason
    assert str(err.value).startswith("masks/liar.png: corrupt or truncated image (IHDR says")
    assert "TensorFlow's PNG decoder fails" in str(err.value) and "\n" not in str(err.value)
    assert scan_png(liar).problem == err.value.reason.split("(", 1)[1].split(";")[0]


def test_png_holding_more_rows_than_its_ihdr_says_is_read_as_tensorflow_reads_it():
    """The opposite lie: more image data than the IHDR's rows. libpng (TensorFlow) only warns
    ("Too much image data") and decodes the IHDR's rows, as Pillow does: so does labelfix."""
    samples = _samples(16, 0)
    data = handmade_png(samples, 16, 0, ihdr_height=7)
    assert scan_png(data).problem is None
    np.testing.assert_array_equal(read_mask("x.png", data=data).labels, samples[:7, :, 0])
    assert png_problem(handmade_png(samples, 16, 0)) is None


def test_image_data_size_counts_packed_rows_and_adam7_passes():
    # 13 px of 2-bit grey: 26 bits, 4 bytes + a filter byte per row
    assert image_data_size((13, 10, 2, 0, 0)) == 10 * 5
    # RGBA 16-bit: 8 bytes a pixel
    assert image_data_size((3, 2, 16, 6, 0)) == 2 * (1 + 24)
    # 8x8 interlaced grey: passes of 1x1, 1x1, 2x1, 2x2, 4x2, 4x4, 8x4 pixels
    assert image_data_size((8, 8, 8, 0, 1)) == 2 + 2 + 3 + 2 * 3 + 2 * 5 + 4 * 5 + 4 * 9
    assert image_data_size((4, 4, 3, 0, 0)) is None  # no 3-bit grey
    assert rows_problem((13, 10, 8, 0, 0), 14 * 9 + 5) == (
        "IHDR says 10 rows, the image data holds 9 and 5 bytes of the next"
    )


def _ztxt(size: int) -> tuple[bytes, bytes]:
    return b"zTXt", b"Comment\0\0" + zlib.compress(b"x" * size)


@pytest.mark.parametrize(("depth", "colour"), [(8, 0), (8, 3), (16, 0), (8, 2)])
def test_large_text_chunks_are_metadata_not_corruption(depth, colour):
    """Regression (issue 21): a valid PNG with a zTXt (or iTXt) chunk inflating past Pillow's
    1 MB limit was "corrupt" (Pillow: "Decompressed data too large"), though TensorFlow
    decodes it (libpng skips the chunk with a warning). Text chunks are metadata now; their
    CRCs are still checked."""
    samples = _samples(depth, colour)
    palette = bytes(range(18)) if colour == 3 else None
    itxt = (b"iTXt", b"Comment\0\1\0\0\0" + zlib.compress(b"y" * (3 << 20)))
    extra = (_ztxt(3 << 20), itxt, (b"tEXt", b"Title\0a mask"))
    data = handmade_png(samples, depth, colour, palette=palette, extra=extra)
    with pytest.raises(ValueError, match="Decompressed"):  # what Pillow makes of it
        Image.open(io.BytesIO(data)).load()
    mask = read_mask("big-text.png", data=data)
    if colour in (0, 3):
        np.testing.assert_array_equal(mask.labels, samples[:, :, 0])
    else:
        np.testing.assert_array_equal(mask.array, samples.astype(np.uint8))
    assert decode_problem(data) is None and image_header(data)[1:3] == (10, 13)
    # a damaged text chunk is a damaged file: refused, saying TensorFlow only warns
    bad = bytearray(data)
    at = bytes(data).index(b"tEXt") + 4
    bad[at] ^= 1
    with pytest.raises(UnreadableMask, match=r"damaged image \(bad CRC-32 in metadata chunk tEXt"):
        read_mask("bad-text.png", data=bytes(bad))
    assert decode_problem(bytes(bad)).startswith("damaged PNG (bad CRC-32 in metadata chunk tEXt")
