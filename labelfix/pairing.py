"""Find the image that belongs to a mask: same relative directory, same stem.

>>> find_image("images", "train/0001.png")          # doctest: +SKIP
'images/train/0001.jpg'
>>> find_image("leftImg8bit", "aachen/aachen_000000_000019_gtFine_labelIds.png",
...            mask_suffix="_gtFine_labelIds", image_suffix="_leftImg8bit")  # doctest: +SKIP
'leftImg8bit/aachen/aachen_000000_000019_leftImg8bit.png'
"""

from __future__ import annotations

import os

from labelfix import fs

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def mask_stem(relpath: str, *, mask_suffix: str = "") -> str:
    """The pairing key of a mask: its relative path without extension and ``mask_suffix``."""
    stem, _ = os.path.splitext(relpath)
    if mask_suffix and stem.endswith(mask_suffix):
        stem = stem[: -len(mask_suffix)]
    return stem


def find_image(
    images_dir: str | os.PathLike,
    mask_relpath: str,
    *,
    mask_suffix: str = "",
    image_suffix: str = "",
) -> str | None:
    """Path of the image paired with the mask at ``mask_relpath``, or None when there is none."""
    stem = mask_stem(mask_relpath, mask_suffix=mask_suffix)
    base = fs.join(os.fspath(images_dir), stem) + image_suffix
    for ext in IMAGE_EXTENSIONS:
        for candidate in (base + ext, base + ext.upper()):
            if fs.isfile(candidate):
                return candidate
    return None


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` from the image header alone; OSError/ValueError when unreadable."""
    from PIL import Image

    with fs.open(path, "rb") as fh, Image.open(fh) as im:
        width, height = im.size
    return height, width
