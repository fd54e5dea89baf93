"""PNG bytes <-> label arrays, and PNG structure: headers, chunks, the palette-free copy.

No policy lives here (what values mean, where files go): only the codec.

>>> a = np.array([[0, 1], [255, 3]], np.uint8)
>>> png_header(encode_png(a))
(2, 2, 8, 0, 0)
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

try:  # zlib-ng: the same deflate streams, 4-5x faster to make and 10-20x faster to check
    from zlib_ng import zlib_ng as _deflate
except ImportError:  # pragma: no cover - a platform without its wheels
    _deflate = zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


#: zlib level for PNG masks, chosen with benchmarks/bench_remap.py (2048x1024 Cityscapes-like
#: mask, one core). remap's encoder (unfiltered rows, zlib's run-length strategy) gives the same
#: 24 KB in 3.3 ms at every level from 1 to 9, so 1. Pillow's encoder (encode_png, adaptive
#: filters) gives 40 KB in 9 ms at 1, 25 KB in 13 ms at 6, 20 KB in 56 ms at 9; 16-bit masks
#: 58 KB in 10 ms at 1, 33 KB in 16 ms at 6. Level 1 keeps writes fast; 6 would trade +40-60%
#: encode time for ~40% smaller files where the run-length strategy is not used.
PNG_COMPRESS_LEVEL = 1


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

    ``bits`` defaults to 8 when every value fits 0..255, else 16. Label masks are long
    horizontal runs, so rows are stored unfiltered and 8-bit data is deflated with zlib's
    run-length strategy: about 3x faster than Pillow's adaptive filters and smaller too (see
    benchmarks/bench_remap.py). 16-bit data uses the default strategy (a run of 2-byte values
    repeats at distance 2, which run-length matching cannot see).

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
    if bits == 8:
        raw = np.empty((height, width + 1), np.uint8)
        raw[:, 1:] = array
        strategy = zlib.Z_RLE
    else:
        raw = np.empty((height, 2 * width + 1), np.uint8)
        raw[:, 1:] = array.astype(">u2").view(np.uint8).reshape(height, 2 * width)
        strategy = zlib.Z_DEFAULT_STRATEGY
    raw[:, 0] = 0  # filter type None on every row
    deflate = _deflate.compressobj(compress_level, zlib.DEFLATED, 15, 9, strategy)
    idat = deflate.compress(raw) + deflate.flush()
    colour_type = 3 if palette is not None else 0
    if palette is not None and (bits != 8 or len(palette) % 3 or len(palette) > 768):
        raise ValueError("a palette needs 8-bit data and at most 256 RGB entries")
    parts = [
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0)),
    ]
    if palette is not None:
        parts.append(_chunk(b"PLTE", bytes(palette)))
    parts += [_chunk(b"IDAT", idat), _chunk(b"IEND", b"")]
    return b"".join(parts)


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

    Pillow does not check chunk CRCs, and stops inflating once it has every row, before the
    zlib stream's Adler-32 checksum. This checks every chunk's CRC-32 and inflates the whole
    IDAT stream: a bad CRC, a corrupt or truncated stream, or data after its end are problems.

    >>> good = encode_png(np.zeros((2, 3), np.uint8))
    >>> png_problem(good) is None
    True
    >>> bad = bytearray(good); bad[-20] ^= 1                       # a bit flip in IDAT
    >>> png_problem(bytes(bad))
    'bad CRC-32 in chunk IDAT'
    """
    if data[:8] != PNG_SIGNATURE:
        return "not a PNG signature"
    pos, end = 8, len(data)
    inflate = _deflate.decompressobj()
    seen_idat = False
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        tag = data[pos + 4 : pos + 8]
        stop = pos + 12 + length
        if stop > end:
            return f"chunk {tag.decode('latin-1')} cut short"
        (crc,) = struct.unpack_from(">I", data, stop - 4)
        if zlib.crc32(data[pos + 4 : stop - 4]) != crc:
            return f"bad CRC-32 in chunk {tag.decode('latin-1')}"
        if tag == b"IDAT":
            seen_idat = True
            try:  # inflate in bounded pieces, keeping nothing: only the integrity is wanted
                inflate.decompress(data[pos + 8 : stop - 4], 1 << 22)
                while inflate.unconsumed_tail:
                    inflate.decompress(inflate.unconsumed_tail, 1 << 22)
            except (zlib.error, _deflate.error) as err:
                return f"corrupt zlib stream: {err}"
        if tag == b"IEND":
            break
        pos = stop
    else:
        return "the file ends inside a chunk" if pos < end else "no IEND chunk"
    if not seen_idat:
        return "no IDAT chunk"
    if not inflate.eof:
        return "zlib stream ends early"
    if inflate.unused_data:
        return "bytes after the end of the zlib stream"
    return None
