"""The fast PNG path (inflate once, undo the row filters with NumPy) reads exactly what Pillow
reads: every filter type, mixed per row, grey and palette, odd sizes; and every file it does not
take (interlaced, 16-bit, odd chunks, corrupt data) is read, or refused, exactly as before."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelfix.checks.stats import scan_dataset
from labelfix.errors import UnreadableMask
from labelfix.io import masks as masks_module
from labelfix.io.masks import read_mask, value_counts
from labelfix.io.png import PNG_SIGNATURE, png_problem, scan_png
from labelfix.io.unfilter import decode_scanlines

ALL = 1 << 28


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(tag))
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filtered_rows(array: np.ndarray, types: list[int]) -> bytes:
    """The PNG scanlines of an 8-bit array, row r filtered with ``types[r]`` (0..4)."""
    x = array.astype(int)
    height, width = x.shape
    out = bytearray()
    for r in range(height):
        prev = x[r - 1] if r else np.zeros(width, int)
        out.append(types[r])
        for i in range(width):
            a = int(x[r, i - 1]) if i else 0
            b = int(prev[i])
            c = int(prev[i - 1]) if i else 0
            predict = (0, a, b, (a + b) // 2, _paeth(a, b, c))[types[r]]
            out.append((int(x[r, i]) - predict) % 256)
    return bytes(out)


def png_bytes(
    array: np.ndarray,
    types: list[int] | None = None,
    *,
    palette: bytes | None = None,
    extra: tuple[tuple[bytes, bytes], ...] = (),
    rows: bytes | None = None,
    idat_pieces: int = 1,
) -> bytes:
    """An 8-bit grey (or palette) PNG written by hand, with the given filter type per row."""
    height, width = array.shape
    if rows is None:
        rows = filtered_rows(array, types if types is not None else [0] * height)
    colour = 3 if palette is not None else 0
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    parts = [PNG_SIGNATURE, _chunk(b"IHDR", header)]
    if palette is not None:
        parts.append(_chunk(b"PLTE", palette))
    parts += [_chunk(tag, data) for tag, data in extra]
    stream = zlib.compress(rows, 6)
    step = -(-len(stream) // idat_pieces)
    parts += [_chunk(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step)]
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def label_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Regions with jittered boundaries, as in a segmentation mask."""
    mask = np.full((height, width), int(rng.integers(0, 40)), np.uint8)
    for _ in range(int(rng.integers(1, 6))):
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        ry, rx = rng.integers(1, max(2, height // 2)), rng.integers(1, max(2, width // 2))
        yy, xx = np.mgrid[0:height, 0:width]
        jitter = rng.uniform(0.8, 1.2, size=(height, 1))
        mask[((yy - cy) / ry) ** 2 + ((xx - cx) / (rx * jitter)) ** 2 <= 1] = rng.integers(0, 256)
    return mask


def pillow_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def fast(data: bytes) -> np.ndarray | None:
    """What the fast path decodes, or None when it leaves the file to Pillow."""
    scan = scan_png(data, keep_pixels=ALL)
    assert scan.problem is None
    if scan.scanlines is None:
        return None
    width, height, depth = scan.header[:3]
    return decode_scanlines(scan.scanlines, width, height, depth)


def read_the_old_way(data: bytes, monkeypatch) -> masks_module.Mask:
    """read_mask as it was before the fast path: Pillow decodes every PNG."""
    with monkeypatch.context() as m:
        m.setattr(masks_module, "decode_scanlines", lambda *args: None)
        return read_mask("x.png", data=data)


def assert_same_as_pillow(data: bytes, monkeypatch) -> None:
    new, old = read_mask("x.png", data=data), read_the_old_way(data, monkeypatch)
    assert np.array_equal(new.labels, pillow_pixels(data))
    assert (new.kind, new.dtype, new.shape) == (old.kind, old.dtype, old.shape)
    assert new.palette == old.palette
    assert np.array_equal(new.labels, old.labels)
    for a, b in zip(new.value_counts(), old.value_counts(), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("width", [1, 7, 8, 9, 33])
def test_each_filter_type_alone_decodes_as_pillow_does(kind, width, monkeypatch):
    rng = np.random.default_rng(width * 10 + kind)
    for array in (label_like(rng, 6, width), rng.integers(0, 256, (5, width), dtype=np.uint8)):
        data = png_bytes(array, [kind] * array.shape[0])
        got = fast(data)
        if kind in (0, 1, 2) and width > 1:
            assert got is not None  # None, Sub and Up rows are decoded without Pillow
        if got is not None:
            assert np.array_equal(got, array)
        assert_same_as_pillow(data, monkeypatch)


def test_mixed_filter_types_per_row_decode_as_pillow_does(monkeypatch):
    rng = np.random.default_rng(0)
    taken = 0
    for trial in range(120):
        height, width = int(rng.integers(1, 14)), int(rng.integers(1, 70))
        array = (
            label_like(rng, height, width) if trial % 3 else rng.integers(0, 256, (height, width))
        )
        array = array.astype(np.uint8)
        # at most half Average/Paeth rows, so that the fast path takes most of these
        types = [int(t) for t in rng.choice([0, 1, 2, 2, 3, 4, 1], size=height)]
        data = png_bytes(array, types, idat_pieces=int(rng.integers(1, 4)))
        got = fast(data)
        if got is not None:
            taken += 1
            assert np.array_equal(got, array), (trial, types)
        assert_same_as_pillow(data, monkeypatch)
    assert taken > 60


def test_runs_of_paeth_rows_after_repeated_and_sub_rows():
    """Paeth/Average rows after rows that repeat the row above (Up, all zero), at the top, after
    Sub rows, and Up rows with data after them: the rows Pillow gets and the rows around them."""
    rng = np.random.default_rng(3)
    array = label_like(rng, 12, 40)
    array[1] = array[0]
    array[2] = array[0]
    array[7] = array[6]
    for types in (
        [2, 2, 2, 4, 1, 1, 4, 2, 2, 1, 0, 3],  # an all-zero Up first row: the zero row above
        [4, 2, 2, 1, 1, 1, 4, 2, 1, 1, 0, 1],  # Paeth first: filtered against the zero row
        [1, 2, 2, 4, 4, 1, 1, 2, 3, 2, 1, 1],
        [0, 1, 2, 1, 4, 2, 1, 2, 2, 4, 2, 1],
    ):
        data = png_bytes(array, types)
        got = fast(data)
        assert got is not None
        assert np.array_equal(got, array), types
        assert np.array_equal(got, pillow_pixels(data))


@pytest.mark.parametrize("mode", ["L", "P"])
def test_masks_saved_by_pillow_take_the_fast_path(mode, monkeypatch):
    """Pillow's encoder picks a filter per row (Sub, Up and Paeth on label masks)."""
    rng = np.random.default_rng(7)
    taken = 0
    for _ in range(3):
        array = label_like(rng, 300, 700)
        im = Image.fromarray(array)
        if mode == "P":
            im.putpalette(bytes(range(256)) * 3)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        data = buf.getvalue()
        got = fast(data)
        if got is not None:
            taken += 1
            assert np.array_equal(got, array)
        assert_same_as_pillow(data, monkeypatch)
    assert taken >= 2


def test_palette_chunks_and_extra_chunks(monkeypatch):
    rng = np.random.default_rng(11)
    array = (label_like(rng, 9, 30) % 5).astype(np.uint8)
    short = bytes(range(15))  # five entries
    extra = ((b"tEXt", b"Software\0test"), (b"pHYs", struct.pack(">IIB", 2835, 2835, 1)))
    data = png_bytes(array, [1] * 9, palette=short, extra=extra)
    assert fast(data) is not None
    mask = read_mask("x.png", data=data)
    assert mask.kind == "palette" and mask.palette == short.ljust(768, b"\0")
    assert_same_as_pillow(data, monkeypatch)
    trns = png_bytes(array, [2] * 9, palette=short, extra=((b"tRNS", b"\0\xff"),))
    assert fast(trns) is not None
    assert_same_as_pillow(trns, monkeypatch)


def test_files_the_fast_path_leaves_to_pillow_read_as_before(tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(5)
    array = label_like(rng, 20, 30)
    cases = {}
    wide = array.astype(np.uint16) * 300
    cases["16-bit-tRNS"] = png_bytes16(wide, extra=((b"tRNS", b"\0\7"),))
    profile = b"x\0\0" + zlib.compress(b"profile")
    cases["iCCP"] = png_bytes(array, [1] * 20, extra=((b"iCCP", profile),))
    cases["grey-tRNS-short"] = png_bytes(array, [1] * 20, extra=((b"tRNS", b"\0"),))
    for name, data in cases.items():
        assert fast(data) is None, name
        if name != "grey-tRNS-short":
            assert_same_as_pillow(data, monkeypatch)
    # a tRNS chunk too short for a grey image: Pillow cannot identify the file, then and now
    with pytest.raises(UnreadableMask) as new:
        read_mask("x.png", data=cases["grey-tRNS-short"])
    with pytest.raises(UnreadableMask) as old:
        read_the_old_way(cases["grey-tRNS-short"], monkeypatch)
    assert new.value.reason == old.value.reason


def _must_not_open(*args, **kwargs):
    raise AssertionError("the file was decoded again")


def test_dense_and_paeth_rows_are_unfiltered_from_the_rows_inflated_once(monkeypatch):
    """Rows the NumPy path does not take (not sparse, Average/Paeth) are unfiltered by Pillow
    from the rows the integrity check inflated, not by Pillow decoding the file again (issue 25:
    masks with irregular boundaries were inflated twice)."""
    rng = np.random.default_rng(5)
    array = label_like(rng, 20, 30)
    for data in (
        png_bytes(rng.integers(0, 256, (20, 300), dtype=np.uint8), [1] * 20),
        png_bytes(array, [4] * 20),
        png_bytes(array, [3, 4] * 10),
    ):
        with monkeypatch.context() as m:
            m.setattr(masks_module.Image, "open", _must_not_open)
            mask = read_mask("x.png", data=data)
        assert np.array_equal(mask.labels, pillow_pixels(data))
        assert_same_as_pillow(data, monkeypatch)


def png_bytes16(array: np.ndarray, extra=(), types=None) -> bytes:
    """A 16-bit grey PNG written by hand: ``types[r]`` filters row r's high and low bytes."""
    height, width = array.shape
    types = types if types is not None else [1] * height
    high = filtered_rows((array >> 8).astype(np.uint8), types)
    low = filtered_rows((array & 255).astype(np.uint8), types)
    rows = bytearray()
    for r in range(height):  # interleave the two planes, byte by byte (bpp 2)
        h = high[r * (width + 1) : (r + 1) * (width + 1)]
        lo = low[r * (width + 1) : (r + 1) * (width + 1)]
        rows.append(types[r])
        for x in range(width):
            rows += bytes((h[1 + x], lo[1 + x]))
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    parts = [PNG_SIGNATURE, _chunk(b"IHDR", header)]
    parts += [_chunk(tag, data) for tag, data in extra]
    parts += [_chunk(b"IDAT", zlib.compress(bytes(rows))), _chunk(b"IEND", b"")]
    return b"".join(parts)


def test_16_bit_rows_of_every_filter_decode_as_pillow_does(monkeypatch):
    """Issue 25: 16-bit grey masks are decoded from the rows inflated once, their high and low
    bytes as two 8-bit images (PNG's filters predict each byte from the same byte of the pixel
    on the left and above), or with many Average/Paeth rows by Pillow's row decoder."""
    rng = np.random.default_rng(12)
    for trial in range(12):
        height, width = int(rng.integers(1, 12)), int(rng.integers(1, 50))
        array = label_like(rng, height, width).astype(np.uint16) * int(rng.integers(1, 257))
        if trial % 3 == 0:
            array = rng.integers(0, 1 << 16, (height, width)).astype(np.uint16)
        # None/Sub/Up only: the two 8-bit images; with Average/Paeth rows: Pillow's decoder
        types = [int(t) for t in rng.integers(0, 3 if trial % 2 else 5, height)]
        data = png_bytes16(array, types=types)
        got = fast(data)
        assert got is not None and got.dtype == np.uint16
        np.testing.assert_array_equal(got, array)
        assert_same_as_pillow(data, monkeypatch)


def test_interlaced_png_is_left_to_pillow(monkeypatch):
    rng = np.random.default_rng(9)
    array = label_like(rng, 10, 12)
    im = Image.fromarray(array)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    plain = buf.getvalue()
    # Adam7 by hand: seven passes of None-filtered rows
    passes = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2))
    passes += ((1, 0, 2, 1),)
    rows = bytearray()
    for y0, x0, dy, dx in passes:
        part = array[y0::dy, x0::dx]
        for line in part:
            if part.shape[1]:
                rows += b"\0" + line.tobytes()
    header = struct.pack(">IIBBBBB", 12, 10, 8, 0, 0, 0, 1)
    data = PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(bytes(rows)))
    data += _chunk(b"IEND", b"")
    assert np.array_equal(pillow_pixels(data), pillow_pixels(plain))
    assert scan_png(data, keep_pixels=ALL).scanlines is None
    assert_same_as_pillow(data, monkeypatch)


def _saved(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def _outcome(read, data: bytes):
    try:
        return "read", read(data).labels.tolist()
    except UnreadableMask as err:
        return "refused", err.reason


def test_corrupt_files_fail_with_the_same_one_line_reason(monkeypatch):
    rng = np.random.default_rng(1)
    array = label_like(rng, 16, 40)
    types = [1, 2, 4, 1] * 4
    good = png_bytes(array, types)
    # a bad CRC, a corrupt zlib stream, a truncated file: found while inflating, before decoding
    bad_crc = bytearray(good)
    bad_crc[-20] ^= 1
    stream = zlib.compress(filtered_rows(array, types))
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 40, 16, 8, 0, 0, 0, 0))
    cut = PNG_SIGNATURE + header + _chunk(b"IDAT", stream[: len(stream) // 2])
    cut += _chunk(b"IEND", b"")
    # a complete zlib stream holding too few rows (refused: Pillow would pad them with zeros),
    # and one with an unknown filter type
    short_rows = png_bytes(array, rows=filtered_rows(array, types)[: 41 * 10])
    bad_filter = bytearray(filtered_rows(array, types))
    bad_filter[41 * 5] = 7
    unknown = png_bytes(array, rows=bytes(bad_filter))
    for data in (bytes(bad_crc), cut, good[:-30], short_rows, unknown):
        new = _outcome(lambda d: read_mask("x.png", data=d), data)
        assert new == _outcome(lambda d: read_the_old_way(d, monkeypatch), data)
        assert new[0] == "read" or "\n" not in new[1]
    assert _outcome(lambda d: read_mask("x.png", data=d), unknown)[0] == "refused"
    assert png_problem(bytes(bad_crc)) == "bad CRC-32 in chunk IDAT"


def test_more_rows_than_the_image_holds_are_ignored_as_pillow_does(monkeypatch):
    rng = np.random.default_rng(2)
    array = label_like(rng, 8, 20)
    rows = filtered_rows(array, [1] * 8) + b"\1" + bytes(20)  # one row too many
    data = png_bytes(array, rows=rows)
    assert np.array_equal(fast(data), array)
    assert_same_as_pillow(data, monkeypatch)


def test_value_counts_from_runs_match_np_unique():
    rng = np.random.default_rng(4)
    for array in (
        label_like(rng, 200, 300),
        rng.integers(0, 256, (100, 100), dtype=np.uint8),  # too many runs: counted pixel by pixel
        np.full((64, 64), 9, np.uint8),
        np.zeros((3, 3), np.uint8),
    ):
        values, counts = value_counts(array)
        want_values, want_counts = np.unique(array, return_counts=True)
        assert np.array_equal(values, want_values) and np.array_equal(counts, want_counts)


def test_stats_of_fast_path_masks(tmp_path: Path):
    rng = np.random.default_rng(6)
    arrays = [label_like(rng, 120, 900) for _ in range(12)]
    for k, array in enumerate(arrays):
        (tmp_path / f"{k:02d}.png").write_bytes(_saved(array))
    result = scan_dataset([tmp_path], jobs=2)
    everything = np.concatenate([a.ravel() for a in arrays])
    values, counts = np.unique(everything, return_counts=True)
    assert result.files == 12 and not result.unreadable
    assert {v: s.pixels for v, s in result.values.items()} == dict(
        zip(values.tolist(), counts.tolist(), strict=True)
    )
