"""Read and write label masks without losing or inventing a single class id.

* PNG ``L`` -> uint8, ``P`` -> the palette *indices* (never the colours; the palette is kept),
  16-bit (``I;16``/``I``) -> uint16/int32, ``1`` -> 0/1; ``.npy`` integer arrays as they are.
* Colour (RGB, RGBA, LA, PA) and JPEG files are readable but are not label masks: ``Mask.kind``
  says so and ``Mask.labels`` refuses them.
* Nothing here ever resamples, and every write goes to a temporary name first.

>>> m = read_mask("masks/2007_000033.png")       # doctest: +SKIP
>>> m.kind, m.labels.dtype, m.palette is not None  # doctest: +SKIP
('palette', dtype('uint8'), True)
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from labelfix import fs
from labelfix.errors import NotALabelMask, UnreadableMask

if TYPE_CHECKING:
    from labelfix.colormap import Colormap

#: Refuse images with more pixels than this before decoding them (decompression bombs).
MAX_PIXELS = 1 << 28  # 268 M pixels, e.g. 16384 x 16384

#: File suffixes scanned by default.
MASK_SUFFIXES = (".png", ".npy")
#: ... and by ``repair``, whose inputs are often masks that were saved as JPEG.
REPAIR_SUFFIXES = (*MASK_SUFFIXES, ".jpg", ".jpeg")

#: Storage kinds, in report order, with the trap each one sets for TensorFlow users.
KINDS: dict[str, str | None] = {
    "palette": (
        "tf.io.decode_png would read colours/luminance, not class ids "
        "(labelfix reads the palette indices)"
    ),
    "8-bit": None,
    "16-bit": "tf.io.decode_png needs dtype=tf.uint16, and a uint8 cast wraps ids above 255",
    "1-bit": "tf.io.decode_png expands 1-bit PNGs to 0/255, not 0/1",
    "2/4-bit": "tf.io.decode_png scales 2- and 4-bit grey to 0..255 (ids x85 or x17)",
    "npy": "tf.io cannot decode .npy; write TFRecords with labelfix to-tfrecord",
    "colour": "colours are not class ids; tf.io.decode_png(channels=1) would give luminance",
    "colormap": "colours converted to class ids with --colormap; TensorFlow would read colours",
    "jpeg": "JPEG is lossy: region edges carry values that are no class",
}

LABEL_KINDS = frozenset({"palette", "8-bit", "16-bit", "1-bit", "2/4-bit", "npy", "colormap"})

#: Pillow unpacks 2- and 4-bit grey PNG rows scaled to 0..255; these undo it (exactly).
_LOW_BIT_SCALE = {"L;2": 85, "L;4": 17}


class Mask:
    """A decoded mask file.

    ``array`` holds the class ids (``[H, W]`` integers) for label kinds, and the decoded pixels
    (``[H, W, C]``) for ``colour`` and ``jpeg``. ``palette`` is the PNG palette (768 bytes) of a
    ``palette`` mask, else None. An 8-bit mask keeps its decoded Pillow image, so that
    :meth:`value_counts` runs Pillow's C histogram and the NumPy array is only made on demand
    (a fresh 2 MB array costs more in page faults than the histogram itself).
    """

    __slots__ = ("_array", "_image", "kind", "palette", "path")

    def __init__(
        self,
        path: str,
        kind: str,
        array: np.ndarray | None = None,
        palette: bytes | None = None,
        *,
        image: Image.Image | None = None,
    ):
        if array is None and image is None:
            raise ValueError("a Mask needs an array or an image")
        self.path = path
        self.kind = kind
        self.palette = palette
        self._array = array
        self._image = image

    def __repr__(self) -> str:
        return f"Mask(path={self.path!r}, kind={self.kind!r}, shape={self.shape})"

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.asarray(self._image)
        return self._array

    @property
    def is_label(self) -> bool:
        return self.kind in LABEL_KINDS

    @property
    def labels(self) -> np.ndarray:
        """The ``[H, W]`` class-id array; raises NotALabelMask for colour and JPEG files."""
        if not self.is_label:
            raise NotALabelMask(self.path, _not_label_reason(self.kind, self.array))
        return self.array

    @property
    def shape(self) -> tuple[int, int]:
        if self._array is None:
            width, height = self._image.size
            return height, width
        return int(self._array.shape[0]), int(self._array.shape[1])

    def value_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """``(values, counts)`` of the label values present, ascending."""
        if not self.is_label:
            raise NotALabelMask(self.path, _not_label_reason(self.kind, self.array))
        if self._array is None and self._image.mode in ("L", "P"):
            hist = np.asarray(self._image.histogram(), np.int64)
            values = np.flatnonzero(hist)
            return values, hist[values]
        return value_counts(self.array)

    @property
    def dtype(self) -> np.dtype:
        if self._array is None and self._image.mode in ("L", "P"):
            return np.dtype(np.uint8)
        return self.array.dtype


def value_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, counts)`` of the values present in a label array, fast for every dtype.

    uint8 goes through Pillow's C histogram (np.bincount first widens every pixel to int64);
    other integer arrays through an offset ``bincount`` when the value range is small.
    """
    if labels.dtype == np.uint8:
        hist = np.asarray(Image.fromarray(np.ascontiguousarray(labels)).histogram(), np.int64)
        values = np.flatnonzero(hist)
        return values, hist[values]
    lo, hi = int(labels.min()), int(labels.max())
    if hi - lo < (1 << 20):
        hist = np.bincount((labels.ravel() - lo).astype(np.intp, copy=False), minlength=1)
        values = np.flatnonzero(hist)
        return values + lo, hist[values]
    return np.unique(labels, return_counts=True)


def _not_label_reason(kind: str, array: np.ndarray) -> str:
    if kind == "jpeg":
        return "JPEG mask: lossy compression puts values that are no class on every edge"
    channels = array.shape[2] if array.ndim == 3 else 1
    return f"colour mask ({channels} channels): colours are not class ids, a colormap is needed"


def read_mask(
    path: str | os.PathLike,
    *,
    max_pixels: int = MAX_PIXELS,
    colormap: Colormap | None = None,
    unknown_colour: str = "error",
    ignore: int = 255,
    data: bytes | None = None,
) -> Mask:
    """Read a mask file (PNG, other Pillow formats, or ``.npy``) without changing a value.

    ``data``, when given, is the file's content already read (``path`` then only names it).
    With a ``colormap``, colour masks are converted to class ids (kind ``colormap``); an
    unknown colour raises UnknownColour, or becomes ``ignore`` with ``unknown_colour="ignore"``.
    Raises UnreadableMask with a one-line reason for anything that cannot be decoded.
    """
    path = os.fspath(path)
    if path.lower().endswith(".npy"):
        return _read_npy(path, max_pixels=max_pixels, data=data)
    mask = _read_image(path, max_pixels=max_pixels, data=data)
    if colormap is not None and mask.kind == "colour":
        ids = colormap.to_ids(mask.array, unknown=unknown_colour, ignore=ignore, path=path)
        return Mask(path=path, kind="colormap", array=ids)
    return mask


def _source(path: str, data: bytes | None):
    """What to hand Pillow or NumPy: the bytes given, a remote file's bytes, or the path."""
    if data is not None:
        return io.BytesIO(data)
    return io.BytesIO(fs.read_bytes(path)) if fs.is_url(path) else path


def _read_npy(path: str, *, max_pixels: int, data: bytes | None = None) -> Mask:
    try:
        source = _source(path, data)
        array = np.load(source, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UnreadableMask(path, f"not a readable .npy array ({_short(err)})") from None
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise UnreadableMask(path, f"expected a 2-D [H, W] array, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise UnreadableMask(path, f"expected integer class ids, got dtype {array.dtype}")
    if array.size == 0:
        raise UnreadableMask(path, "empty array")
    if array.size > max_pixels:
        raise UnreadableMask(path, f"{array.size} pixels is more than the limit {max_pixels}")
    return Mask(path=path, kind="npy", array=array)


def _read_image(path: str, *, max_pixels: int, data: bytes | None = None) -> Mask:
    im = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(_source(path, data))
            width, height = im.size
            if width * height > max_pixels:
                raise UnreadableMask(
                    path,
                    f"{width}x{height} is more than the limit of {max_pixels} pixels "
                    "(decompression bomb?)",
                )
            if width == 0 or height == 0:
                raise UnreadableMask(path, "image has no pixels")
            rawmode = im.tile[0][3] if im.tile and im.format == "PNG" else None
            im.load()  # single-frame files close their file here; the pixels stay
            if rawmode in _LOW_BIT_SCALE:
                scaled = np.asarray(im) // _LOW_BIT_SCALE[rawmode]
                im.close()
                return Mask(path=path, kind="2/4-bit", array=scaled.astype(np.uint8))
            mask = _from_pil(path, im, im.format)
            if mask._image is not im:
                im.close()
            return mask
    except UnreadableMask:
        if im is not None:
            im.close()
        raise
    except FileNotFoundError:
        raise UnreadableMask(path, "no such file") from None
    except IsADirectoryError:
        raise UnreadableMask(path, "is a directory") from None
    except PermissionError:
        raise UnreadableMask(path, "permission denied") from None
    except Image.UnidentifiedImageError:
        size = _size_or_none(path)
        reason = "empty file" if size == 0 else "not an image Pillow can identify"
        raise UnreadableMask(path, reason) from None
    except Image.DecompressionBombError as err:
        raise UnreadableMask(path, f"refused as a decompression bomb ({_short(err)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as err:
        if im is not None:
            im.close()
        raise UnreadableMask(path, f"corrupt or truncated image ({_short(err)})") from None


def _from_pil(path: str, im: Image.Image, fmt: str | None) -> Mask:
    mode = im.mode
    if fmt == "JPEG" or fmt == "MPO":
        return Mask(path=path, kind="jpeg", array=np.asarray(im))
    if mode == "P":
        palette = im.getpalette(rawmode="RGB") or []
        pal = bytes(palette) + bytes(768 - len(palette))
        return Mask(path=path, kind="palette", palette=pal, image=im)
    if mode == "L":
        return Mask(path=path, kind="8-bit", image=im)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return Mask(path=path, kind="16-bit", array=np.asarray(im).astype(np.uint16, copy=False))
    if mode == "I":
        array = np.asarray(im)
        if array.min() >= 0 and array.max() <= 0xFFFF:
            array = array.astype(np.uint16)
        return Mask(path=path, kind="16-bit", array=array)
    if mode == "1":
        return Mask(path=path, kind="1-bit", array=(np.asarray(im) != 0).astype(np.uint8))
    if mode in ("RGB", "RGBA", "LA", "PA", "RGBX", "CMYK", "YCbCr", "La", "RGBa"):
        return Mask(path=path, kind="colour", array=np.asarray(im.convert("RGB")))
    raise UnreadableMask(path, f"unsupported image mode {mode!r} for a label mask")


def _size_or_none(path: str) -> int | None:
    try:
        return fs.getsize(path)
    except OSError:
        return None


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:160]


def iter_mask_files(
    paths: list[str | os.PathLike] | tuple[str | os.PathLike, ...],
    *,
    glob: str | None = None,
    suffixes: tuple[str, ...] = MASK_SUFFIXES,
) -> Iterator[tuple[str, str]]:
    """Yield ``(path, relative path)`` of every mask under ``paths``, sorted, lazily.

    Directories are walked recursively; files named directly are always yielded. ``glob``
    (e.g. ``"*.png"``) replaces the default ``suffixes`` (``.png`` and ``.npy``). Remote
    directories (``gs://...``) are walked through :mod:`labelfix.fs`, in the same order.
    """
    from fnmatch import fnmatch

    def wanted(name: str) -> bool:
        if glob is not None:
            return fnmatch(name, glob)
        return name.lower().endswith(suffixes)

    for top in paths:
        top = os.fspath(top)
        if not fs.isdir(top):
            yield top, fs.basename(top)
            continue
        for root, dirs, files in fs.walk(top):
            dirs.sort()
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in sorted(files):
                if wanted(name) and not name.startswith("."):
                    full = fs.join(root, name)
                    yield full, fs.relpath(full, top)


# ----------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only on success.

    The temporary file lives in the same directory (so the rename is atomic) and is removed if
    the block raises or is interrupted.

    >>> with atomic_path("out/0001.png") as tmp:   # doctest: +SKIP
    ...     Image.fromarray(a).save(tmp, format="PNG")
    """
    final = os.fspath(final)
    directory = os.path.dirname(final) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(final)}.", suffix=".labelfix-tmp"
    )
    os.close(fd)
    try:
        yield tmp
        if os.path.exists(final):
            with contextlib.suppress(OSError):
                os.chmod(tmp, os.stat(final).st_mode & 0o7777)
        else:
            with contextlib.suppress(OSError):
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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

    >>> a = np.array([[0, 1], [255, 3]], np.uint8)
    >>> import io
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
    deflate = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 9, strategy)
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


def write_mask(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    palette: bytes | None = None,
    compress_level: int = PNG_COMPRESS_LEVEL,
) -> str:
    """Write ``array`` atomically as PNG (by suffix ``.png``) or ``.npy``; returns the path.

    PNG output is 8-bit when the values fit, else 16-bit; a palette is kept for 8-bit output.
    Negative values need ``.npy``: ValueError otherwise.
    """
    path = os.fspath(path)
    if path.lower().endswith(".npy"):
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        return path
    data = encode_png(array, palette=palette, compress_level=compress_level)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return path


def smallest_int_dtype(lo: int, hi: int, *, signed: bool | None = None) -> np.dtype:
    """The smallest integer dtype holding ``lo..hi`` (signed when ``lo < 0`` or asked)."""
    signed = lo < 0 if signed is None else signed
    candidates = (
        (np.int8, np.int16, np.int32, np.int64)
        if signed
        else (np.uint8, np.uint16, np.uint32, np.uint64)
    )
    for dt in candidates:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise ValueError(f"no integer dtype holds {lo}..{hi}")


def relative_to(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    return Path(os.path.relpath(os.fspath(path), os.fspath(root)))
