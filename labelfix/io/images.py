"""Image files: headers, complete decodes, EXIF orientation.

Which image belongs to which mask is :mod:`labelfix.io.pairing`'s business.
"""

from __future__ import annotations

import io
import os
import struct

from PIL import Image

from labelfix.io import fs
from labelfix.io.png import PNG_SIGNATURE, png_header, scan_png, without_text_chunks

#: Image formats TensorFlow's ``tf.io.decode_image`` reads, by Pillow format name.
_TF_IMAGE_FORMATS = {
    "JPEG": "jpeg",
    "MPO": "jpeg",
    "PNG": "png",
    "GIF": "gif",
    "BMP": "bmp",
    "WEBP": "webp",
}

_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "LA": 2, "RGB": 3, "YCbCr": 3, "CMYK": 3, "RGBA": 4}


def image_header(source: bytes | str) -> tuple[str, int, int, int]:
    """``(format, height, width, channels)`` from an image header (file path or bytes).

    ValueError with a reason for what TensorFlow could not decode; OSError when unreadable.
    """
    if isinstance(source, bytes) and source[:8] == PNG_SIGNATURE:
        source = without_text_chunks(source)  # metadata Pillow may refuse (a zTXt over 1 MB)
    try:
        with (
            io.BytesIO(source) if isinstance(source, bytes) else fs.open(source, "rb") as fh,
            Image.open(fh) as im,
        ):
            fmt, (width, height), mode = im.format, im.size, im.mode
            transparent = "transparency" in im.info
    except (FileNotFoundError, PermissionError, IsADirectoryError, fs.NotARegularFile):
        raise
    except Image.UnidentifiedImageError:
        empty = not source if isinstance(source, bytes) else os.path.getsize(source) == 0
        raise ValueError("empty file" if empty else "not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"corrupt image header ({err})") from None
    if fmt not in _TF_IMAGE_FORMATS:
        raise ValueError(
            f"{fmt} images cannot be decoded by tf.io.decode_image (JPEG, PNG, GIF, BMP, WebP)"
        )
    channels = 4 if mode == "P" and transparent else _CHANNELS.get(mode, 3)
    return _TF_IMAGE_FORMATS[fmt], height, width, channels


_JPEG_SOF = frozenset(
    (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def quick_header(data: bytes) -> tuple[str, int, int, int] | None:
    """:func:`_image_header` for plain JPEG and PNG files without Pillow (None: ask Pillow).

    Reads the JPEG SOF marker or the PNG IHDR chunk: 5x faster than ``Image.open``, which
    matters when each mask takes a fraction of a millisecond.
    """
    if data[:3] == b"\xff\xd8\xff":
        pos, end = 2, len(data)
        while pos + 4 <= end:
            if data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker == 0xFF:
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:
                pos += 2
                continue
            if marker in (0xD9, 0xDA):
                return None
            if marker in _JPEG_SOF:
                if pos + 10 > end:
                    return None
                height, width = struct.unpack_from(">HH", data, pos + 5)
                channels = 1 if data[pos + 9] == 1 else 3
                return ("jpeg", height, width, channels) if height and width else None
            (length,) = struct.unpack_from(">H", data, pos + 2)
            pos += 2 + length
        return None
    header = png_header(data)
    if header is None or header[3] not in _PNG_CHANNELS or not header[0] or not header[1]:
        return None
    width, height, _, colour, _ = header
    channels = _PNG_CHANNELS[colour]
    if colour == 3:
        pos = 8
        while pos + 8 <= len(data):
            (length,) = struct.unpack_from(">I", data, pos)
            ctype = data[pos + 4 : pos + 8]
            if ctype == b"tRNS":
                channels = 4
            if ctype in (b"IDAT", b"IEND"):
                break
            pos += 12 + length
        else:
            return None
    return "png", height, width, channels


def read_image_header(path: str) -> tuple[str, int, int, int]:
    """``(format, height, width, channels)`` of an image file, from its first bytes if possible."""
    with fs.open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if fs.is_url(path):
        return quick_header(head) or image_header(fs.read_bytes(path))
    return quick_header(head) or image_header(path)


def decode_problem(data: bytes) -> str | None:
    """Why an image file would not decode completely (as TensorFlow's decoders need), or None.

    Headers alone pass truncated and garbage files: this decodes the whole file with Pillow (a
    JPEG at 1/8 scale: every entropy-coded byte is still read and decoded) and,
    for PNGs, also checks what Pillow does not (chunk CRCs, the zlib stream; see
    :func:`~labelfix.io.png.png_problem`: CRCs, the zlib stream, as many rows as the IHDR
    says).

    >>> import numpy as np
    >>> from labelfix.io.png import encode_png
    >>> data = encode_png(np.zeros((4, 4), np.uint8))
    >>> decode_problem(data) is None, decode_problem(data[:40])
    (True, 'corrupt or truncated PNG (the file ends inside a chunk)')
    """
    if data[:8] == PNG_SIGNATURE:
        scan = scan_png(data)
        if scan.problem is not None:
            what = "corrupt or truncated PNG" if scan.fatal else "damaged PNG"
            return f"{what} ({scan.problem})"
        data = without_text_chunks(data)  # metadata Pillow may refuse (a zTXt over 1 MB)
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG":
                # libjpeg still reads and Huffman-decodes every entropy-coded byte at 1/8 scale
                # (only the inverse DCT is smaller): the same files fail as at full size (320
                # truncated and bit-flipped VOC-size JPEGs: identical outcomes), 0.74 instead of
                # 0.96 ms per 500x375 image
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Image.UnidentifiedImageError:
        return "empty file" if not data else "not an image Pillow can identify"
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"does not decode completely ({text[:160]})"
    return None


def check_image(path: str) -> tuple[bytes, tuple[str, int, int, int]]:
    """``(file bytes, (format, height, width, channels))`` of an image that TensorFlow's
    ``decode_image`` reads completely; OSError when unreadable (:class:`~labelfix.io.fs.
    NotARegularFile` for a FIFO, socket or device, never opened), ValueError with the reason
    when it is not such an image."""
    data = fs.read_bytes(path)
    return data, check_image_bytes(data)


def check_image_bytes(data: bytes) -> tuple[str, int, int, int]:
    """``(format, height, width, channels)`` of an image's bytes that TensorFlow's
    ``decode_image`` reads completely; ValueError with the reason otherwise."""
    header = quick_header(data) or image_header(data)
    problem = decode_problem(data)
    if problem is not None:
        raise ValueError(problem)
    return header


def image_size(source: str | bytes) -> tuple[int, int]:
    """``(height, width)`` from the image header alone (a file path, or its bytes);
    OSError/ValueError when unreadable."""
    if isinstance(source, bytes):
        data = without_text_chunks(source) if source[:8] == PNG_SIGNATURE else source
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        return height, width
    with fs.open(source, "rb") as fh, Image.open(fh) as im:
        width, height = im.size
    return height, width


# ----------------------------------------------------------------------------- EXIF orientation

#: What a viewer does to the stored pixels to display an image, per EXIF orientation (tag
#: 0x0112). TensorFlow's decoders (``decode_jpeg``, ``decode_png``, ``decode_image``) ignore the
#: tag: they give the stored pixels.
ORIENTATIONS = {
    1: "as stored",
    2: "mirrored left to right",
    3: "rotated 180 degrees",
    4: "mirrored top to bottom",
    5: "mirrored along its main diagonal",
    6: "rotated 90 degrees clockwise",
    7: "mirrored along its other diagonal",
    8: "rotated 90 degrees counter-clockwise",
}

#: The Pillow transpose that displays the stored pixels, per orientation (as
#: ``PIL.ImageOps.exif_transpose``).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1..8) of a JPEG (APP1 ``Exif``) or PNG (``eXIf`` chunk) image;
    1 when it has none, or one no viewer would apply (a value outside 1..8). Read from the
    bytes (no decoding): the APP1 segment before the first scan, or the eXIf chunk.
    """
    tiff = _exif_block(data)
    return _tiff_orientation(tiff) if tiff else 1


def displayed_size(height: int, width: int, orientation: int) -> tuple[int, int]:
    """``(height, width)`` of an image as viewers display it (orientations 5..8 swap them).

    >>> displayed_size(640, 480, 6), displayed_size(640, 480, 3)
    ((480, 640), (640, 480))
    """
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def orientation_text(orientation: int) -> str:
    """``EXIF orientation 6 (viewers show it rotated 90 degrees clockwise)``."""
    shown = ORIENTATIONS.get(orientation, "as stored")
    return f"EXIF orientation {orientation} (viewers show it {shown})"


#: Pillow modes a PNG stores as they are.
_PNG_MODES = ("1", "L", "LA", "RGB", "RGBA", "I;16")


def apply_orientation(data: bytes, orientation: int) -> tuple[bytes, tuple[str, int, int, int]]:
    """The image as viewers display it: its pixels transposed as ``orientation`` says, stored
    losslessly as PNG without EXIF, and its ``(format, height, width, channels)``.

    A JPEG cannot be rotated without decoding it (Pillow has no DCT-domain transform), and
    encoding it again as JPEG would lose detail: the decoded pixels go into a PNG instead.
    ValueError when the image cannot be decoded.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode not in _PNG_MODES:  # CMYK, YCbCr, palette: as decode_image gives them
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            picture = im.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else im
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ValueError(f"cannot decode it to rotate it ({err})") from None
    out = io.BytesIO()
    picture.save(out, format="PNG")
    encoded = out.getvalue()
    return encoded, quick_header(encoded) or image_header(encoded)


def _exif_block(data: bytes) -> bytes | None:
    """The TIFF-structured EXIF data of a JPEG or PNG file, or None."""
    if data[:3] == b"\xff\xd8\xff":
        pos, end = 2, len(data)
        while pos + 4 <= end and data[pos] == 0xFF:
            marker = data[pos + 1]
            if marker == 0xFF:
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:
                pos += 2
                continue
            if marker in (0xD9, 0xDA):  # end of image, start of scan: no EXIF before it
                return None
            (length,) = struct.unpack_from(">H", data, pos + 2)
            if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\0\0":
                return data[pos + 10 : pos + 2 + length]
            pos += 2 + length
        return None
    if data[:8] == PNG_SIGNATURE:
        pos, end = 8, len(data)
        while pos + 12 <= end:
            (length,) = struct.unpack_from(">I", data, pos)
            tag = data[pos + 4 : pos + 8]
            if tag == b"eXIf":
                return data[pos + 8 : pos + 8 + length]
            if tag == b"IEND":
                return None
            pos += 12 + length
    return None


def _tiff_orientation(tiff: bytes) -> int:
    """The orientation tag of IFD0 of TIFF-structured EXIF data; 1 when absent or odd."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for k in range(count):
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(tiff):
            return 1
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if tag == 0x0112:
            if kind == 3:  # SHORT
                (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
            elif kind == 4:  # LONG, which some writers use
                (value,) = struct.unpack_from(order + "I", tiff, entry + 8)
            else:
                return 1
            return value if value in ORIENTATIONS else 1
    return 1
