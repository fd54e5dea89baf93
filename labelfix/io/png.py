"""PNG bytes <-> label arrays, and PNG structure: headers, chunks, the palette-free copy.

No policy lives here (what values mean, where files go): only the codec.

>>> a = np.array([[0, 1], [255, 3]], np.uint8)
>>> png_header(encode_png(a))
(2, 2, 8, 0, 0)
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import NamedTuple

import numpy as np
from PIL import Image

try:  # zlib-ng: the same deflate streams, 4-5x faster to make and 10-20x faster to check
    from zlib_ng import zlib_ng as deflate
except ImportError:  # pragma: no cover - a platform without its wheels
    deflate = zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


#: zlib level for PNG masks, chosen with benchmarks/bench_cli.py (the size column) and
#: benchmarks/bench_remap.py. Masks of at least :data:`RLE_MIN_PIXELS` pixels are deflated
#: with zlib's run-length strategy, whose output hardly changes from level 1 to 9 (rows filtered
#: as :func:`filter_rows` chooses: 0.79-0.93x the size of Pillow's default save of the same
#: arrays on every family of 2048x1024 masks, in about a fifth of its time). Smaller masks
#: (VOC's 500x375) are deflated with the default strategy at level :data:`SMALL_LEVEL`: the
#: run-length strategy gives 1.03x Pillow's size there, level 6 1.02x in 0.3 ms, level 8 0.85x
#: in 1.0 ms, level 9 0.81x in 1.5 ms.
PNG_COMPRESS_LEVEL = 1
#: Below this many pixels a mask is deflated with the default strategy at level 8 or more.
RLE_MIN_PIXELS = 1 << 18
SMALL_LEVEL = 8
#: 16-bit masks: Pillow's encoder at this level or more. Its adaptive filters (Paeth among
#: them) beat every cheap choice tried on 16-bit families (row filters Sub/Up or Up, the
#: run-length or default strategy at levels 1-6: 0.87-2.05x its size, family by family).
WIDE_LEVEL = 6
#: A row is stored as the difference to the row above (Up) when fewer of its pixels differ from
#: the row above than half of those that differ from their left neighbour, plus one.
UP_SHARE = 0.5


def png_mode_for(array: np.ndarray) -> str:
    """``"L"`` when every value fits 0..255, ``"I;16"`` when it fits 0..65535; else ValueError."""
    if array.size == 0:
        return "L"
    lo, hi = int(array.min()), int(array.max())
    if lo < 0:
        raise ValueError(f"a PNG cannot hold negative values (min {lo}); write .npy instead")
    if hi <= 0xFF:
        return "L"
    if hi <= 0xFFFF:
        return "I;16"
    raise ValueError(f"a PNG holds at most 16-bit values, got {hi}")


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(tag))
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def encode_png(
    array: np.ndarray,
    *,
    bits: int | None = None,
    palette: bytes | None = None,
    compress_level: int = PNG_COMPRESS_LEVEL,
) -> bytes:
    """PNG bytes of a 2-D label array: 8-bit grey, 8-bit palette indices, or 16-bit grey.

    ``bits`` defaults to 8 when every value fits 0..255, else 16. 8-bit rows are filtered as
    :func:`filter_rows` chooses, so that a label mask is runs of equal bytes, and deflated with
    zlib's run-length strategy (small masks: the default strategy, see
    :data:`PNG_COMPRESS_LEVEL`): about 5x faster than Pillow's adaptive filters, and smaller.
    16-bit masks are written by Pillow's encoder (see :data:`WIDE_LEVEL`).

    >>> import io
    >>> from PIL import Image
    >>> a = np.array([[0, 1], [255, 3]], np.uint8)
    >>> np.asarray(Image.open(io.BytesIO(encode_png(a)))).tolist()
    [[0, 1], [255, 3]]
    """
    if bits is None:
        bits = 8 if png_mode_for(array) == "L" else 16
    if array.ndim != 2 or bits not in (8, 16):
        raise ValueError(f"expected a 2-D array and 8 or 16 bits, got {array.shape}, {bits}")
    height, width = array.shape
    if array.size and (int(array.min()) < 0 or int(array.max()) >= 1 << bits):
        raise ValueError(f"values {array.min()}..{array.max()} do not fit a {bits}-bit PNG")
    if palette is not None and (bits != 8 or len(palette) % 3 or len(palette) > 768):
        raise ValueError("a palette needs 8-bit data and at most 256 RGB entries")
    if bits == 16:
        return _pillow_png16(array, max(compress_level, WIDE_LEVEL))
    raw = filter_rows(array)
    if height * width >= RLE_MIN_PIXELS:
        level, strategy = compress_level, zlib.Z_RLE
    else:
        level, strategy = max(compress_level, SMALL_LEVEL), zlib.Z_DEFAULT_STRATEGY
    compressor = deflate.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    idat = compressor.compress(raw) + compressor.flush()
    colour_type = 3 if palette is not None else 0
    parts = [
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0)),
    ]
    if palette is not None:
        parts.append(_chunk(b"PLTE", bytes(palette)))
    parts += [_chunk(b"IDAT", idat), _chunk(b"IEND", b"")]
    return b"".join(parts)


def filter_rows(array: np.ndarray) -> np.ndarray:
    """The PNG scanlines (``[height, 1 + width]`` bytes) of an 8-bit label array, each row
    filtered so that deflate's run-length matching finds long runs in it.

    A row that mostly repeats the row above is stored as Up (its difference to it: zeros
    where it repeats, see :data:`UP_SHARE`); other rows are stored as they are (None), their
    runs of one value being runs of one byte. Choosing costs two comparisons of the array with
    itself shifted, instead of Pillow's five trial filterings of every row.
    """
    height, width = array.shape
    raw = np.empty((height, 1 + width), np.uint8)
    raw[:, 1:] = array
    raw[:, 0] = 0
    if height < 2:
        return raw
    count = np.uint16 if width < 1 << 16 else np.int64  # a bool sum, wide enough for a row
    across = (array[1:, 1:] != array[1:, :-1]).view(np.uint8).sum(axis=1, dtype=count)
    down = (array[1:] != array[:-1]).view(np.uint8).sum(axis=1, dtype=count)
    up = np.flatnonzero(down < UP_SHARE * across + 1) + 1
    if len(up):
        raw[up, 1:] = array[up] - array[up - 1]
        raw[up, 0] = 2
    return raw


def _pillow_png16(array: np.ndarray, level: int) -> bytes:
    """A 16-bit grey PNG of ``array`` by Pillow's encoder (adaptive filters, zlib ``level``)."""
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint16, copy=False)).save(buffer, "PNG", compress_level=level)
    return buffer.getvalue()


def png_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """``(width, height, bit depth, colour type, interlace)`` from a PNG's IHDR, or None."""
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, colour, interlace


def grey_png(data: bytes) -> bytes | None:
    """The same PNG as 8/16-bit greyscale with only IHDR, IDAT and IEND (None if malformed).

    An 8-bit palette PNG's pixel data *are* its indices, filtered exactly like 8-bit grey, so
    changing the colour type and dropping PLTE/tRNS gives a grey PNG of the indices without
    recompressing anything.
    """
    out = [PNG_SIGNATURE]
    pos, end = 8, len(data)
    while pos + 12 <= end:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        stop = pos + 12 + length
        if stop > end:
            return None
        if ctype == b"IHDR":
            ihdr = bytearray(data[pos + 8 : pos + 8 + length])
            ihdr[9] = 0  # colour type: greyscale
            out.append(_chunk(b"IHDR", bytes(ihdr)))
        elif ctype in (b"IDAT", b"IEND"):
            out.append(data[pos:stop])
        if ctype == b"IEND":
            return b"".join(out)
        pos = stop
    return None


def passthrough_png(data: bytes, bits: int) -> bytes | None:
    """The mask file's own pixel data when it is a plain (or palette) PNG of ``bits`` bits."""
    header = png_header(data)
    if header is None or header[2] != bits or header[3] not in (0, 3):
        return None
    if header[3] == 3 and bits != 8:
        return None
    return grey_png(data)


def png_problem(data: bytes) -> str | None:
    """What TensorFlow's (libpng's) decoder would reject in a PNG that Pillow reads anyway, or None.

    Pillow does not check chunk CRCs, stops inflating once it has every row, before the zlib
    stream's Adler-32 checksum, and fills rows the stream does not hold with zeros. This checks
    every chunk's CRC-32, inflates the whole IDAT stream and counts its rows: a bad CRC, a
    corrupt or truncated stream, fewer rows than the IHDR says, or data after the stream's end
    are problems (the last, and a bad CRC in an ancillary chunk, only damaged files to
    TensorFlow: :attr:`PngScan.fatal` is False).

    >>> good = encode_png(np.zeros((2, 3), np.uint8))
    >>> png_problem(good) is None
    True
    >>> bad = bytearray(good); bad[-20] ^= 1                       # a bit flip in IDAT
    >>> png_problem(bytes(bad))
    'bad CRC-32 in chunk IDAT'
    """
    return scan_png(data).problem


class PngScan(NamedTuple):
    """What :func:`scan_png` found: the problem, or the inflated rows of a plain 8-bit PNG."""

    problem: str | None
    #: ``(width, height, bit depth, colour type, interlace)`` when the IHDR chunk was read
    header: tuple[int, int, int, int, int] | None = None
    #: the inflated IDAT stream (a filter byte, then the row, per row), exactly
    #: ``height * (width * depth / 8 + 1)`` bytes: only when asked for and the PNG is *plain*
    scanlines: bytes | None = None
    #: the PLTE chunk of a plain palette PNG
    palette: bytes | None = None
    #: False for a problem TensorFlow's decoder only warns about (a damaged ancillary chunk,
    #: bytes after the zlib stream): the file is damaged all the same
    fatal: bool = True


#: Chunks a plain PNG may hold besides IHDR, PLTE, tRNS, IDAT and IEND, with the least length at
#: which Pillow reads each without an error (those it has no reader for, it skips). A PNG with
#: any other chunk (iCCP, eXIf, APNG frames, ...) is decoded by Pillow itself, so that what
#: Pillow makes of them, errors included, stays exactly as it was. Text chunks are metadata:
#: Pillow never sees them (:func:`without_text_chunks`).
_PLAIN_EXTRA_CHUNKS = {
    b"gAMA": 4,
    b"sRGB": 1,
    b"pHYs": 9,
    b"cHRM": 0,  # and a multiple of 4
    b"tEXt": 0,
    b"zTXt": 0,
    b"iTXt": 0,
    b"bKGD": 0,
    b"tIME": 0,
    b"sBIT": 0,
}

#: Text chunks: metadata that says nothing about the pixels. Pillow inflates zTXt/iTXt and
#: refuses the whole file when one holds more than ``PngImagePlugin.MAX_TEXT_CHUNK`` (1 MB);
#: libpng (TensorFlow) skips such a chunk with a warning and decodes the image.
TEXT_CHUNKS = frozenset((b"tEXt", b"zTXt", b"iTXt"))

#: Samples per pixel, and the bit depths the PNG specification allows, per colour type.
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
#: The seven Adam7 passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
_ADAM7 += ((0, 1, 1, 2),)


def image_data_size(header: tuple[int, int, int, int, int]) -> int | None:
    """Bytes of filtered rows (filter byte + packed samples, per row; per pass when
    interlaced) that the IHDR's size, bit depth and colour type need; None for an IHDR no
    decoder accepts (an unknown colour type, depth or interlace method; no pixels).

    >>> image_data_size((3, 2, 8, 0, 0)), image_data_size((3, 2, 16, 2, 0))
    (8, 38)
    >>> image_data_size((10, 1, 1, 0, 0)), image_data_size((2, 2, 8, 0, 1))
    (3, 7)
    """
    width, height, depth, colour, interlace = header
    if depth not in _DEPTHS.get(colour, ()) or interlace not in (0, 1) or not width or not height:
        return None
    bits = depth * _SAMPLES[colour]
    if interlace == 0:
        return height * (1 + (width * bits + 7) // 8)
    size = 0
    for x0, y0, dx, dy in _ADAM7:
        columns, rows = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if columns and rows:
            size += rows * (1 + (columns * bits + 7) // 8)
    return size


def rows_problem(header: tuple[int, int, int, int, int], inflated: int) -> str | None:
    """What is wrong when the image data inflates to fewer bytes than the IHDR's rows need.

    Pillow fills the missing rows with zeros and reads on; libpng (TensorFlow) fails with
    "Not enough image data" (a generic "Invalid PNG data" that names no file). More data than
    the rows need is what both read without an error (libpng warns "Too much image data"), so
    it is no problem here either.

    >>> rows_problem((640, 480, 8, 0, 0), 470 * 641)
    'IHDR says 480 rows, the image data holds 470'
    >>> rows_problem((640, 480, 8, 0, 0), 481 * 641) is None
    True
    """
    need = image_data_size(header)
    if need is None or inflated >= need:
        return None
    height, interlace = header[1], header[4]
    if interlace:
        return (
            f"IHDR says {height} rows (Adam7-interlaced, {need} bytes of rows), "
            f"the image data holds {inflated} bytes"
        )
    rows, rest = divmod(inflated, need // height)
    part = f" and {rest} bytes of the next" if rest else ""
    return f"IHDR says {height} rows, the image data holds {rows}{part}"


def without_text_chunks(data: bytes) -> bytes:
    """``data`` without its text chunks (tEXt, zTXt, iTXt), or ``data`` itself when it has none.

    What Pillow decodes: a text chunk says nothing about the pixels, and Pillow refuses a PNG
    whose zTXt or iTXt inflates to more than 1 MB, which TensorFlow reads. :func:`scan_png`
    still checks every text chunk's CRC.
    """
    kept, pos, end = [], 8, len(data)
    start = 0  # the first byte not yet kept
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        tag = data[pos + 4 : pos + 8]
        stop = pos + 12 + length
        if tag in TEXT_CHUNKS:
            kept.append(data[start:pos])
            start = stop
        if tag == b"IEND":
            break
        pos = stop
    if not kept:
        return data
    kept.append(data[start:])
    return b"".join(kept)


def scan_png(data: bytes, *, keep_pixels: int = 0) -> PngScan:
    """Check a PNG as :func:`png_problem` does, inflating its IDAT stream once.

    Every chunk's CRC-32 is checked, the zlib stream inflated to its end, and the rows it holds
    counted: fewer than the IHDR says is a problem (:func:`rows_problem`), whatever the bit
    depth, colour type and interlacing.

    With ``keep_pixels``, the inflated rows of a *plain* PNG of at most that many pixels are
    kept (:attr:`PngScan.scanlines`), so that :func:`decode_scanlines` can decode them without
    inflating them again. Plain: 8-bit greyscale or palette or 16-bit greyscale, not interlaced,
    one run of IDAT chunks, a valid palette, and no chunk beyond those Pillow reads as plain
    data (no tRNS for 16 bits).
    """
    if data[:8] != PNG_SIGNATURE:
        return PngScan("not a PNG signature")
    pos, end = 8, len(data)
    inflate = deflate.decompressobj()
    seen_idat = False
    header = None
    plain = keep_pixels > 0
    need = 0  # bytes of inflated rows still to keep
    inflated = 0  # bytes of inflated rows in all
    pieces: list[bytes] = []
    palette = None
    idat_run = 0  # 0 before the IDAT chunks, 1 inside their run, 2 after it
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        tag = data[pos + 4 : pos + 8]
        stop = pos + 12 + length
        if stop > end:
            return PngScan(f"chunk {tag.decode('latin-1')} cut short", header)
        (crc,) = struct.unpack_from(">I", data, stop - 4)
        if zlib.crc32(data[pos + 4 : stop - 4]) != crc:
            name = tag.decode("latin-1")
            if tag[:1].islower():  # ancillary: libpng warns and skips the chunk
                return PngScan(f"bad CRC-32 in metadata chunk {name}", header, fatal=False)
            return PngScan(f"bad CRC-32 in chunk {name}", header)
        if pos == 8 and tag == b"IHDR" and length == 13:
            header = png_header(data)
            if plain:
                width, height, depth, colour, interlace = header
                plain = (
                    ((depth == 8 and colour in (0, 3)) or (depth == 16 and colour == 0))
                    and data[26:28] == b"\0\0"  # compression and filter method 0
                    and interlace == 0
                    and 0 < width * height <= keep_pixels
                )
                need = height * (width * depth // 8 + 1)
        elif plain:
            plain = _plain_chunk(tag, length, header, idat_run, palette)
            if tag == b"PLTE":
                palette = data[pos + 8 : stop - 4]
        if tag == b"IDAT":
            seen_idat = True
            idat_run = 1
            try:  # inflate in bounded pieces, keeping only the rows of a plain PNG
                chunk = data[pos + 8 : stop - 4]
                if plain and need > 0:
                    piece = inflate.decompress(chunk, need)
                    pieces.append(piece)
                    need -= len(piece)
                    inflated += len(piece)
                    chunk = inflate.unconsumed_tail
                if chunk:
                    inflated += len(inflate.decompress(chunk, 1 << 22))
                    while inflate.unconsumed_tail:
                        inflated += len(inflate.decompress(inflate.unconsumed_tail, 1 << 22))
            except (zlib.error, deflate.error) as err:
                return PngScan(f"corrupt zlib stream: {err}", header)
        elif idat_run == 1:
            idat_run = 2
        if tag == b"IEND":
            break
        pos = stop
    else:
        return PngScan("the file ends inside a chunk" if pos < end else "no IEND chunk", header)
    if not seen_idat:
        return PngScan("no IDAT chunk", header)
    if not inflate.eof:
        try:  # output held back when a bounded piece ended inside a match (a few bytes)
            inflated += len(inflate.flush())
        except (zlib.error, deflate.error) as err:
            return PngScan(f"corrupt zlib stream: {err}", header)
        if not inflate.eof:
            return PngScan("zlib stream ends early", header)
    if header is not None:
        short = rows_problem(header, inflated)
        if short is not None:
            return PngScan(short, header)
    if inflate.unused_data:
        return PngScan("bytes after the end of the zlib stream", header, fatal=False)
    if not plain or need or (header[3] == 3) != (palette is not None):
        return PngScan(None, header)
    return PngScan(None, header, b"".join(pieces), palette)


def _plain_chunk(tag: bytes, length: int, header, idat_run: int, palette) -> bool:
    """Whether a chunk after IHDR keeps a PNG plain (see :func:`scan_png`)."""
    if header is None:
        return False
    if tag == b"IDAT":
        return idat_run < 2
    if tag == b"IEND":
        return True
    if tag == b"PLTE":  # Pillow reads a palette only for a palette image
        return idat_run == 0 and palette is None and 0 < length <= 768 and length % 3 == 0
    if tag == b"tRNS":  # 16-bit grey with a transparent value: left to Pillow
        return idat_run == 0 and (header[3] == 3 or (length >= 2 and header[2] == 8))
    least = _PLAIN_EXTRA_CHUNKS.get(tag)
    if least is None or length < least:
        return False
    return tag != b"cHRM" or length % 4 == 0
