"""Read and write label masks without losing or inventing a single class id.

* PNG ``L`` -> uint8, ``P`` -> the palette *indices* (never the colours; the palette is kept),
  16-bit (``I;16``/``I``) -> uint16/int32, ``1`` -> 0/1; ``.npy`` integer arrays as they are.
* Colour (RGB, RGBA, LA, PA) and JPEG files are readable but are not label masks: ``Mask.kind``
  says so and ``Mask.labels`` refuses them.
* Nothing here ever resamples, and every write goes through :mod:`labelfix.io.atomic`.

On a dataset of your own::

    m = read_mask("masks/2007_000033.png")
    m.kind, m.labels.dtype, m.palette is not None
    # -> ('palette', dtype('uint8'), True)
"""

from __future__ import annotations

import io
import os
import stat
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from labelfix.errors import NotALabelMask, UnreadableMask
from labelfix.io import fs
from labelfix.io.png import (
    PNG_COMPRESS_LEVEL,
    PNG_SIGNATURE,
    PngScan,
    encode_png,
    scan_png,
    without_text_chunks,
)
from labelfix.io.unfilter import decode_scanlines

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
    "raw": "raw integers in a record: tf.io.decode_raw needs their dtype, height and width",
    "colour": "colours are not class ids; tf.io.decode_png(channels=1) would give luminance",
    "colormap": "colours converted to class ids with --colormap; TensorFlow would read colours",
    "jpeg": "JPEG is lossy: region edges carry values that are no class",
}

LABEL_KINDS = frozenset(
    {"palette", "8-bit", "16-bit", "1-bit", "2/4-bit", "npy", "raw", "colormap"}
)

#: Pillow unpacks 2- and 4-bit grey PNG rows scaled to 0..255; these undo it (exactly).
_LOW_BIT_SCALE = {"L;2": 85, "L;4": 17}


class Mask:
    """A decoded mask file.

    ``array`` holds the class ids (``[H, W]`` integers) for label kinds, and the decoded pixels
    (``[H, W, C]``) for ``colour`` and ``jpeg``. ``palette`` is the PNG palette (768 bytes) of a
    ``palette`` mask, else None. An 8-bit mask that Pillow decoded keeps its Pillow image, so
    that :meth:`value_counts` runs Pillow's C histogram and the NumPy array is only made on
    demand (a fresh 2 MB array costs more in page faults than the histogram itself); one that
    :func:`~labelfix.io.unfilter.decode_scanlines` decoded is an array already. ``alpha`` is the
    ``[H, W]`` alpha channel of a ``colour`` mask with a pixel that is not fully opaque (an alpha
    band, or a tRNS transparent colour), else None: ``array`` holds the colours without it.
    """

    __slots__ = ("_array", "_image", "alpha", "kind", "palette", "path")

    def __init__(
        self,
        path: str,
        kind: str,
        array: np.ndarray | None = None,
        palette: bytes | None = None,
        *,
        image: Image.Image | None = None,
        alpha: np.ndarray | None = None,
    ):
        if array is None and image is None:
            raise ValueError("a Mask needs an array or an image")
        self.path = path
        self.alpha = alpha
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

    def labels_or_grey_jpeg(self) -> np.ndarray:
        """:attr:`labels`, except that a grey JPEG mask's values are given as they are: its
        artifacts are what ``repair`` fixes and ``show`` draws (every other command refuses it)."""
        if self.kind == "jpeg" and self.array.ndim == 2:
            return self.array
        return self.labels

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

    uint8 and uint16 are counted run by run when they have long runs of one value (label
    masks), else uint8 through Pillow's C histogram (np.bincount first widens every pixel to
    int64); other integer arrays through an offset ``bincount`` when the value range is small.
    """
    if labels.dtype in (np.uint8, np.uint16):
        hist = _runs_histogram(labels)
        if hist is None and labels.dtype == np.uint8:
            hist = np.asarray(Image.fromarray(np.ascontiguousarray(labels)).histogram(), np.int64)
        if hist is not None:
            values = np.flatnonzero(hist)
            return values, hist[values]
    lo, hi = int(labels.min()), int(labels.max())
    if hi - lo < (1 << 20):
        hist = np.bincount((labels.ravel() - lo).astype(np.intp, copy=False), minlength=1)
        values = np.flatnonzero(hist)
        return values + lo, hist[values]
    return np.unique(labels, return_counts=True)


@dataclass(frozen=True)
class ValueAt:
    """A value of a label array, its pixel count and where it first occurs (row-major order):
    ``image`` is its index in a batch of label maps, else None."""

    value: int
    pixels: int
    y: int
    x: int
    image: int | None = None

    @property
    def where(self) -> str:
        """``y=3 x=118``, or ``image 2, y=3 x=118`` in a batch."""
        at = f"y={self.y} x={self.x}"
        return at if self.image is None else f"image {self.image}, {at}"

    @classmethod
    def find(cls, labels: np.ndarray, value: int, pixels: int | None = None) -> ValueAt:
        """``value``'s first pixel in ``labels`` (``pixels``: its count, counted when None)."""
        hits = labels == value
        image, y, x = first_pixel(hits)
        count = int(np.count_nonzero(hits)) if pixels is None else int(pixels)
        return cls(int(value), count, y, x, image)


def first_pixel(hits: np.ndarray) -> tuple[int | None, int, int]:
    """``(image, y, x)`` of the first True of ``hits``, in row-major order: ``[H, W]`` (image
    None), ``[B, H, W]`` or ``[B, H, W, 1]`` (a batch), ``[N]`` (y 0).

    >>> batch = np.zeros((2, 3, 4), bool)
    >>> batch[1, 2, 3] = True
    >>> first_pixel(np.array([[0, 0], [0, 1]], bool)), first_pixel(batch)
    ((None, 1, 1), (1, 2, 3))
    """
    if hits.ndim == 4 and hits.shape[-1] == 1:
        hits = hits[..., 0]
    shape = hits.shape if hits.ndim >= 2 else (1, *hits.shape)
    index = np.unravel_index(int(np.argmax(hits)), (int(np.prod(shape[:-2])), *shape[-2:]))
    image = int(index[0]) if hits.ndim >= 3 else None
    return image, int(index[1]), int(index[2])


def _runs_histogram(labels: np.ndarray) -> np.ndarray | None:
    """The histogram (256 or 65536 bins) of a uint8 or uint16 label array from its runs of equal
    values, or None when it has too many runs for that to pay (more than one 8-pixel word in 3
    holds a change: at one change in 30 pixels, irregular boundaries, runs still count 2.5x
    faster than Pillow).

    A label mask is long runs of one value: finding where the value changes (eight pixels at a
    time) and adding up run lengths per value is several times faster than counting pixel by
    pixel, which Pillow's histogram does at about half a nanosecond each.
    """
    flat = labels.reshape(-1)
    if flat.size < 4096:
        return None
    change = (flat[1:] != flat[:-1]).view(np.uint8)
    whole = change.size // 8 * 8
    words = change[:whole].view(np.uint64)
    nonzero = np.flatnonzero(words != 0)
    if len(nonzero) > len(words) // 3:
        return None
    inside = words[nonzero].view(np.uint8)
    hit = np.flatnonzero(inside != 0)
    starts = np.concatenate(
        ([0], nonzero[hit >> 3] * 8 + (hit & 7) + 1, np.flatnonzero(change[whole:]) + whole + 1)
    )
    lengths = np.diff(starts, append=flat.size)
    bins = 1 << (8 * labels.itemsize)
    return np.bincount(flat[starts], weights=lengths, minlength=bins).astype(np.int64)


def _not_label_reason(kind: str, array: np.ndarray) -> str:
    if kind == "jpeg":
        return "JPEG mask: lossy compression puts values that are no class on every edge"
    channels = array.shape[2] if array.ndim == 3 else 1
    return f"colour mask ({channels} channels): colours are not class ids, a colormap is needed"


def read_mask(
    path: str | os.PathLike,
    *,
    max_pixels: int = MAX_PIXELS,
    data: bytes | None = None,
) -> Mask:
    """Read a mask file (PNG, other Pillow formats, or ``.npy``) without changing a value.

    ``data``, when given, is the file's content already read (``path`` then only names it).
    Colour masks come back as kind ``colour``; :mod:`labelfix.labels.colormap` turns them into
    class ids. Raises UnreadableMask with a one-line reason for anything that cannot be decoded.
    """
    path = os.fspath(path)
    if path.lower().endswith(".npy"):
        return _read_npy(path, max_pixels=max_pixels, data=data)
    return _read_image(path, max_pixels=max_pixels, data=data)


def _file_bytes(path: str, data: bytes | None) -> bytes:
    """The file's content; UnreadableMask for what is no readable regular file.

    A local path is looked at with ``stat`` first, so a FIFO, socket or device named like a mask
    is reported and never opened (opening a FIFO blocks until someone writes to it).
    """
    if data is not None:
        return data
    if not fs.is_url(path):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise UnreadableMask(path, "no such file") from None
        except OSError as err:
            raise UnreadableMask(path, f"cannot read ({err.strerror})") from None
        if stat.S_ISDIR(info.st_mode):
            raise UnreadableMask(path, _directory_problem(path))
        what = fs.special_file(info.st_mode)
        if what is not None:
            raise UnreadableMask(path, f"not a regular file ({what}): not read")
    try:
        return fs.read_bytes(path)
    except FileNotFoundError:
        raise UnreadableMask(path, "no such file") from None
    except IsADirectoryError:
        raise UnreadableMask(path, "is a directory") from None
    except PermissionError:
        raise UnreadableMask(path, "permission denied") from None
    except OSError as err:
        raise UnreadableMask(path, f"cannot read ({err.strerror or _short(err)})") from None


def _directory_problem(path: str) -> str:
    try:
        os.listdir(path)
    except OSError as err:
        return f"cannot list this directory ({err.strerror}): the masks in it were not read"
    return "is a directory"


def _read_npy(path: str, *, max_pixels: int, data: bytes | None = None) -> Mask:
    data = _file_bytes(path, data)
    if data and not data.startswith(b"\x93NUMPY"):
        raise UnreadableMask(path, "not a .npy file (no NumPy header)")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        reason = "empty file" if not data else f"not a readable .npy array ({_short(err)})"
        raise UnreadableMask(path, reason) from None
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
    if array.dtype == np.uint64:  # every later step computes in int64: no silent wrap-around
        top = int(array.max())
        if top > np.iinfo(np.int64).max:
            raise UnreadableMask(
                path,
                f"value {top} does not fit a signed 64-bit integer (no class id is so large)",
            )
        array = array.astype(np.int64)
    return Mask(path=path, kind="npy", array=array)


def _read_image(path: str, *, max_pixels: int, data: bytes | None = None) -> Mask:
    data = _file_bytes(path, data)
    if data[:8] == PNG_SIGNATURE:
        # Pillow warns above MAX_IMAGE_PIXELS and refuses twice as many: those go its way
        bomb = Image.MAX_IMAGE_PIXELS
        scan = scan_png(data, keep_pixels=min(max_pixels, bomb) if bomb else max_pixels)
        if scan.problem is not None:
            raise UnreadableMask(path, png_reason(scan))
        if scan.scanlines is not None:
            mask = _read_plain_png(path, scan)
            if mask is not None:
                return mask
        data = without_text_chunks(data)  # metadata Pillow may refuse (a zTXt over 1 MB)
    im = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
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
    except Image.UnidentifiedImageError:
        reason = "empty file" if not data else "not an image Pillow can identify"
        raise UnreadableMask(path, reason) from None
    except Image.DecompressionBombError as err:
        raise UnreadableMask(path, f"refused as a decompression bomb ({_short(err)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as err:
        if im is not None:
            im.close()
        raise UnreadableMask(path, f"corrupt or truncated image ({_short(err)})") from None


def png_reason(scan: PngScan) -> str:
    """The one-line reason a PNG that :func:`~labelfix.io.png.scan_png` found a problem in is
    refused, saying whether TensorFlow's decoder fails on it or reads it with a warning."""
    if scan.fatal:
        return f"corrupt or truncated image ({scan.problem}; TensorFlow's PNG decoder fails)"
    return f"damaged image ({scan.problem}; TensorFlow's PNG decoder only warns)"


def _read_plain_png(path: str, scan: PngScan) -> Mask | None:
    """An 8-bit grey or palette, or 16-bit grey PNG decoded from the rows :func:`scan_png`
    inflated (the same pixels and palette Pillow gives), or None to leave it to Pillow."""
    width, height, depth, colour, _ = scan.header
    pixels = decode_scanlines(scan.scanlines, width, height, depth)
    if pixels is None:
        return None
    if depth == 16:
        return Mask(path=path, kind="16-bit", array=pixels)
    if colour == 3:
        return Mask(path=path, kind="palette", array=pixels, palette=scan.palette.ljust(768, b"\0"))
    return Mask(path=path, kind="8-bit", array=pixels)


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
        rgb = np.asarray(im.convert("RGB"))
        return Mask(path=path, kind="colour", array=rgb, alpha=_alpha(im))
    raise UnreadableMask(path, f"unsupported image mode {mode!r} for a label mask")


def _alpha(im: Image.Image) -> np.ndarray | None:
    """The alpha channel of a colour image when some pixel is not fully opaque, else None."""
    if "A" not in im.getbands() and "a" not in im.getbands() and "transparency" not in im.info:
        return None
    alpha = np.asarray(im.convert("RGBA"))[:, :, 3]
    return alpha if int(alpha.min()) < 255 else None


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

    Directories are walked recursively; files named directly are always yielded, and so are
    directories that cannot be listed (reading them raises UnreadableMask saying so). ``glob``
    (e.g. ``"*.png"``) replaces the default ``suffixes`` (``.png`` and ``.npy``). Remote
    directories (``gs://...``) are walked through :mod:`labelfix.io.fs`, in the same order.
    """
    unlistable: list[str] = []
    for top in paths:
        top = os.fspath(top)
        if not fs.isdir(top):
            yield top, fs.basename(top)
            continue
        for root, dirs, files in fs.walk(top, onerror=lambda err: unlistable.append(err.filename)):
            yield from ((path, fs.relpath(path, top)) for path in _drain(unlistable))
            dirs.sort()
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in sorted(files):
                if is_listed(name, glob=glob, suffixes=suffixes):
                    full = fs.join(root, name)
                    yield full, fs.relpath(full, top)
        # a directory that cannot be listed is yielded as a file: reading it says what is wrong
        yield from ((path, fs.relpath(path, top)) for path in _drain(unlistable))


def is_listed(name: str, *, glob: str | None = None, suffixes=MASK_SUFFIXES) -> bool:
    """Whether :func:`iter_mask_files` lists a file called ``name`` found in a directory.

    >>> is_listed("a.PNG"), is_listed(".a.png"), is_listed("a.npy", glob="*.png")
    (True, False, False)
    """
    if name.startswith("."):
        return False
    if glob is not None:
        from fnmatch import fnmatch

        return fnmatch(name, glob)
    return name.lower().endswith(suffixes)


def _drain(items: list[str]) -> list[str]:
    found = sorted(items)
    items.clear()
    return found


# ----------------------------------------------------------------------------- writing


def encode_npy(array: np.ndarray) -> bytes:
    """The bytes of ``array`` as a ``.npy`` file (no pickles)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_mask(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    palette: bytes | None = None,
    compress_level: int = PNG_COMPRESS_LEVEL,
) -> str:
    """Write ``array`` as PNG (by suffix ``.png``) or ``.npy``; returns the path.

    PNG output is 8-bit when the values fit, else 16-bit; a palette is kept for 8-bit output.
    Negative values need ``.npy``: ValueError otherwise. The file goes through the door
    (:mod:`labelfix.io.door`): it is written whole or not at all, and an existing file is
    replaced only when labelfix wrote it.
    """
    from labelfix.io.door import Door, Rules

    path = os.fspath(path)
    if path.lower().endswith(".npy"):
        data = encode_npy(array)
    else:
        data = encode_png(array, palette=palette, compress_level=compress_level)
    with Door(Rules.of("write_mask")) as door:
        door.write(path, data)
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
