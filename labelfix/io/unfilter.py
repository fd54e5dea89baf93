"""PNG scanlines back to pixels, fast: the rows :func:`labelfix.io.png.scan_png` inflated once
(for its integrity checks) are unfiltered here, most of them with NumPy; rows that only Pillow
unfilters fast (Paeth, Average) go to it as one uncompressed stream, without the columns that
repeat their left neighbour in every row.
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image

from labelfix.io.png import deflate


def decode_scanlines(
    scanlines: bytes, width: int, height: int, depth: int = 8
) -> np.ndarray | None:
    """The ``[height, width]`` pixels (uint8, or uint16 for ``depth`` 16) of a PNG's inflated
    rows (:attr:`PngScan.scanlines`), or None for a row of an unknown filter type.

    PNG filters work byte by byte, each byte predicted from the byte of the same place in the
    pixel on its left and above: the high and the low bytes of 16-bit rows are two 8-bit images
    with the same filter per row, decoded apart (:func:`_decode_rows`) and put together; with
    more than one Average/Paeth row in 8 (whose blocks :func:`_decode_rows` would give Pillow
    twice), Pillow's decoder gets the 16-bit rows themselves, from the rows inflated already.
    """
    if depth == 8:
        stride = width + 1
        rows = np.frombuffer(scanlines, np.uint8, count=height * stride)
        return _decode_rows(rows.reshape(height, stride))
    stride = 2 * width + 1
    rows = np.frombuffer(scanlines, np.uint8, count=height * stride).reshape(height, stride)
    filters = rows[:, 0]
    if int(filters.max()) > 4:
        return None
    if np.count_nonzero(filters >= 3) * 8 > height:  # Pillow's row decoder, once, not twice
        return np.asarray(Image.frombytes("I;16", (width, height), _stored(rows), "zip", "I;16B"))
    pixels = rows[:, 1:].view(">u2")  # each filtered byte pair as one big-endian number
    high = np.empty((height, width + 1), np.uint8)
    low = np.empty((height, width + 1), np.uint8)
    high[:, 0] = low[:, 0] = rows[:, 0]
    np.right_shift(pixels, 8, out=high[:, 1:], casting="unsafe")
    np.copyto(low[:, 1:], pixels, casting="unsafe")  # the low byte: modulo 256
    high, low = _decode_rows(high), _decode_rows(low)
    if high is None or low is None:
        return None
    out = np.left_shift(high, 8, dtype=np.uint16)
    out |= low
    return out


def _decode_rows(rows: np.ndarray) -> np.ndarray | None:
    """The ``[height, width]`` uint8 pixels of 8-bit PNG rows (``[height, 1 + width]``).

    PNG stores each row through one of five filters; Pillow undoes them byte by byte. A label
    mask is long runs of one value, so its filtered rows are almost all zero bytes: they are
    found eight at a time, and the rows rebuilt from them with NumPy. None rows are the pixels;
    a Sub row (each byte the difference to its left neighbour) is a run-length code of the row;
    an Up row without a non-zero byte repeats the row above, one with some adds it. Average and
    Paeth rows (Pillow's encoder picks Paeth for about a quarter of a mask's rows) predict each
    byte from the one decoded just before it: those rows, with the Up rows that follow them and
    the decoded row each run of them starts from, go through Pillow's decoder as one stored
    (not compressed) zlib stream.

    Rows that are not sparse (noise, photos) all go through Pillow's decoder, from the rows
    already inflated. None when a row has an unknown filter type.
    """
    height, stride = rows.shape
    width = stride - 1
    filters = rows[:, 0].astype(np.intp)
    if int(filters.max()) > 4:
        return None
    plain, sub, up = filters == 0, filters == 1, filters == 2
    if plain.all():
        return rows[:, 1:].copy()
    # rows decoded by Pillow: Average/Paeth, and Up rows after them up to the next None/Sub row
    index = np.arange(height)
    last = np.maximum.accumulate(np.where(up, -1, index))
    hard = (last >= 0) & (filters[np.maximum(last, 0)] >= 3)
    # None rows hold the pixels themselves: leave them out of the search for non-zero bytes
    found = _sparse_rows(rows, np.flatnonzero(~plain) if plain.any() else None)
    if found is None:  # Pillow undoes every filter (the rows are inflated already)
        return _pillow_unfilter(rows)
    row, col, deltas = found
    busy = np.zeros(height, bool)
    busy[row] = True  # rows with a non-zero byte
    # rows that repeat the row above: Up, and Paeth (predicting the left pixel where the row
    # above repeats its left pixel, and the upper one where it does not)
    copy = (up | (filters == 4)) & ~busy
    # the row each row's pixels are equal to: itself, or for a copy the last row before that
    # is not one (-1: none, the zero row PNG puts above the first)
    same = np.maximum.accumulate(np.where(copy, -1, index))
    on_sub = sub[row]
    out = _sub_runs(sub, row[on_sub], col[on_sub], deltas[on_sub], width)
    if plain.any():
        out[plain] = rows[plain, 1:]
    for r in np.flatnonzero(up & busy & ~hard).tolist():  # Up rows from rows decoded here
        above = same[r - 1] if r else -1
        if above >= 0:
            np.add(out[above], rows[r, 1:], out=out[r])
        else:
            out[r] = rows[r, 1:]
    pillow = np.flatnonzero(hard & ~copy)
    if len(pillow):
        on_hard = hard[row]
        _pillow_rows(rows, out, pillow, same, hard, row[on_hard], col[on_hard])
    if copy.any():
        repeat = np.flatnonzero(copy)
        source = same[repeat]
        out[repeat] = out[np.maximum(source, 0)]
        out[repeat[source < 0]] = 0
    return out


#: :func:`_sparse_rows` gives up when more than one 8-byte word in this many holds a non-zero.
SPARSE_WORDS = 8


def _sparse_rows(rows: np.ndarray, which: np.ndarray | None = None):
    """``(row, column, value)`` of the non-zero pixel bytes of rows ``which`` (default all),
    found eight at a time; None when more than one 8-byte word in 16 holds one (then Pillow is
    about as fast)."""
    stride = rows.shape[1]
    block = rows.reshape(-1) if which is None else rows[which].reshape(-1)
    whole = block.size // 8 * 8
    words = block[:whole].view(np.uint64)
    nonzero = np.flatnonzero(words != 0)
    if len(nonzero) > len(words) // SPARSE_WORDS + 64:
        return None
    inside = words[nonzero].view(np.uint8)
    hit = np.flatnonzero(inside != 0)
    at = nonzero[hit >> 3] * 8 + (hit & 7)
    values = inside[hit]
    if whole < block.size:
        tail = np.flatnonzero(block[whole:]) + whole
        at, values = np.concatenate((at, tail)), np.concatenate((values, block[tail]))
    local = at // stride
    col = at - local * stride - 1  # -1: the filter byte
    data = col >= 0
    local = local[data]
    return local if which is None else which[local], col[data], values[data]


def _sub_runs(sub: np.ndarray, row: np.ndarray, col: np.ndarray, deltas: np.ndarray, width: int):
    """A ``[height, width]`` array holding the Sub rows (mask ``sub``) rebuilt from their
    non-zero bytes (at ``row``, ``col``); other rows are left undefined. A Sub row is the running
    sum (modulo 256) of its bytes, so its value changes only where a byte is non-zero."""
    height = len(sub)
    running = np.cumsum(deltas, dtype=np.uint8)  # wraps modulo 256, as PNG does
    first = np.flatnonzero(np.diff(row, prepend=-1))  # each row's first non-zero byte
    before = np.where(first > 0, running[first - 1], 0).astype(np.uint8)
    values = running - np.repeat(before, np.diff(first, append=len(row)))
    at = row * width + col
    starts = np.flatnonzero(sub) * width  # every Sub row starts at 0
    where = np.searchsorted(at, starts)
    at = np.insert(at, where, starts)
    values = np.insert(values, where, 0)
    if len(at) == 0 or at[0]:
        at, values = np.concatenate(([0], at)), np.concatenate(([0], values)).astype(np.uint8)
    return np.repeat(values, np.diff(at, append=height * width)).reshape(height, width)


#: What one more call of Pillow's decoder costs, in bytes it could unfilter meanwhile: blocks of
#: rows are decoded together while that costs less than the extra columns they bring.
PILLOW_CALL_BYTES = 6000
#: Rows (times their width) below which Pillow gets them whole: finding the columns to leave
#: out would cost more than it saves.
PILLOW_SMALL_BYTES = 1 << 18


def _pillow_rows(rows, out, which, same, hard, row, col) -> None:
    """Decode rows ``which`` (Average, Paeth, and Up rows after them) into ``out`` with Pillow;
    ``row``, ``col``: where their filtered bytes are not zero.

    Each run of them that does not follow another (a block) goes to Pillow's PNG decoder after
    the (decoded) row it is filtered against, stored unfiltered; rows that repeat the row
    above are left out (that row is the same as the one before them). Within a block, most
    columns repeat the column on their left in every row: Pillow never sees those
    (:func:`_loud_columns`), and they are put back as copies of the column on their left. On
    label masks Pillow unfilters 2-15% of these rows' bytes; neighbouring blocks go to Pillow
    together (:func:`_groups`).
    """
    width = rows.shape[1] - 1
    above = np.where(which > 0, same[np.maximum(which - 1, 0)], -1)
    head = ~((above >= 0) & hard[np.maximum(above, 0)])  # not after a row Pillow decodes
    head[0] = True
    starts = np.flatnonzero(head)
    block = np.cumsum(head) - 1  # of each row of ``which``
    heads = np.zeros((len(starts), width), np.uint8)  # zeros: what PNG puts above the first row
    source = above[starts]
    heads[source >= 0] = out[source[source >= 0]]
    sizes = np.diff(starts, append=len(which))
    if len(which) * width < PILLOW_SMALL_BYTES:  # not worth leaving columns out
        groups = [(0, len(starts), None)]
    else:
        position = np.zeros(len(rows), np.intp)
        position[which] = np.arange(len(which))
        loud = _loud_columns(rows[which, 0], block, heads, block[position[row]], row, col, rows)
        groups = _groups(loud, sizes + 1, width)
    for first, stop, columns in groups:
        lo, hi = starts[first], starts[stop] if stop < len(starts) else len(which)
        mine = which[lo:hi]
        place = np.arange(lo, hi) - lo + block[lo:hi] - first + 1  # after each block's head
        tops = starts[first:stop] - lo + np.arange(stop - first)
        if columns is None:
            part = np.empty((hi - lo + stop - first, width + 1), np.uint8)
            part[tops, 0] = 0
            part[place, 0] = rows[mine, 0]
            part[tops, 1:] = heads[first:stop]
            part[place, 1:] = rows[mine, 1:]
            out[mine] = _pillow_unfilter(part)[place]
            continue
        kept = np.flatnonzero(np.unpackbits(np.frombuffer(columns, np.uint8))[:width])
        part = np.empty((hi - lo + stop - first, 1 + len(kept)), np.uint8)
        part[tops, 0] = 0
        part[place, 0] = rows[mine, 0]
        part[tops, 1:] = heads[first:stop][:, kept]
        part[place, 1:] = np.take(rows[mine], kept + 1, axis=1)
        decoded = _pillow_unfilter(part)[place]
        out[mine] = np.repeat(decoded, np.diff(kept, append=width), axis=1)


def _loud_columns(types, block, heads, at_block, row, col, rows) -> list[int]:
    """Per block of rows (``block``: each row's, ``heads``: the row above each block), the
    columns that do not equal the column on their left in every row, as an integer of bits
    (column 0 the highest); ``row``, ``col``: where the rows' filtered bytes are not zero
    (``at_block``: in which block).

    A column is quiet when it equals its left neighbour in the head row, and in every row
    below that neighbour's equality carries on: Paeth's filtered byte is 0 (the row above being
    equal to its left neighbour there, Paeth predicts the left neighbour), or an Up row's
    filtered byte equals its left neighbour's (both 0 here: a superset of the loud columns). In
    Average rows no column is. Column 0 never is. Quiet columns can be left out of a block: the
    columns right of them see the same left, upper and upper-left values either way.
    """
    width = heads.shape[1]
    loud = np.zeros((len(heads), -(-(width + 1) // 64) * 64), bool)
    loud[:, 1:width] = heads[:, 1:] != heads[:, :-1]
    loud[:, 0] = True
    loud[at_block, col] = True
    up = rows[row, 0] == 2
    loud[at_block[up], col[up] + 1] = True
    loud[block[types == 3], :width] = True
    loud[:, width:] = False
    blocks = np.packbits(loud, axis=1)
    return [int.from_bytes(bits.tobytes(), "big") for bits in blocks]


def _groups(loud: list[int], sizes: np.ndarray, width: int):
    """``(first block, stop block, columns as big-endian bytes)`` of blocks decoded together:
    a block joins the group before it while the group's bigger image costs Pillow less than a
    call of its own (:data:`PILLOW_CALL_BYTES`)."""
    nbytes = -(-(width + 1) // 64) * 8
    first, columns, size = 0, loud[0], int(sizes[0])
    for k in range(1, len(loud)):
        rows, joined = int(sizes[k]), columns | loud[k]
        apart = size * columns.bit_count() + rows * loud[k].bit_count() + PILLOW_CALL_BYTES
        if (size + rows) * joined.bit_count() <= apart:
            columns, size = joined, size + rows
            continue
        yield first, k, columns.to_bytes(nbytes, "big")
        first, columns, size = k, loud[k], rows
    yield first, len(loud), columns.to_bytes(nbytes, "big")


def _stored(rows: np.ndarray) -> bytearray:
    """``rows`` (scanlines) as a zlib stream of stored (not compressed) blocks."""
    flat = rows.reshape(-1)
    blocks = max(1, -(-len(flat) // 0xFFFF))
    stream = bytearray(2 + 5 * blocks + len(flat) + 4)
    stream[:2] = b"\x78\x01"
    view = memoryview(stream)
    at = 2
    for first in range(0, blocks * 0xFFFF, 0xFFFF):
        size = min(0xFFFF, len(flat) - first)
        view[at : at + 5] = struct.pack("<BHH", first + size == len(flat), size, size ^ 0xFFFF)
        view[at + 5 : at + 5 + size] = flat[first : first + size]
        at += 5 + size
    view[at:] = struct.pack(">I", deflate.adler32(flat))
    view.release()
    return stream


def _pillow_unfilter(rows: np.ndarray) -> np.ndarray:
    """Undo the filters of 8-bit ``rows`` (scanlines) with Pillow's PNG decoder, decoded into
    the returned array itself when Pillow maps it (no copy out of Pillow)."""
    height, stride = rows.shape
    stream = _stored(rows)
    out = np.empty((height, stride - 1), np.uint8)
    image = Image.frombuffer("L", (stride - 1, height), out, "raw", "L", 0, 1)
    if not image.readonly:  # Pillow copied the buffer: decode into its own image
        return np.asarray(Image.frombytes("L", (stride - 1, height), stream, "zip", "L"))
    decoder = Image._getdecoder("L", "zip", ("L",))
    decoder.setimage(image.im, (0, 0, stride - 1, height))
    try:
        status, error = decoder.decode(bytes(stream))
    finally:
        decoder.cleanup()
    if status >= 0 or error < 0:  # not every row (cannot happen: the rows are all there)
        raise ValueError(f"Pillow's PNG decoder stopped early ({status}, {error})")
    return out
