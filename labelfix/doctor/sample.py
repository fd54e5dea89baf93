"""What one mask (and its image) shows, reduced in a worker process to a small :class:`MaskFacts`.

Each mask is read once, as every command reads it (:func:`labelfix.io.masks.read_mask`): its
storage kind, palette, values and their pixels; where the void candidates lie
(:func:`labelfix.checks.void.value_shapes`); whether it looks lossy
(:func:`labelfix.checks.artifacts.lossy_signature`). A colour mask is read with each built-in
colormap that names all its colours. Of its image, only the header and the EXIF orientation are
read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelfix.checks.artifacts import MIN_SUPPORT, equal_neighbours, lossy_signature
from labelfix.checks.void import CANDIDATES, ValueShape, value_shapes
from labelfix.errors import UnreadableMask
from labelfix.io import fs
from labelfix.io.images import displayed_size, exif_orientation, image_header, quick_header
from labelfix.io.masks import read_mask
from labelfix.labels.colormap import BUILTIN, builtin
from labelfix.rewrite.repair import REGION_SHARE

#: A colour mask with more colours than this is a picture, not a colour-coded mask.
MAX_COLOURS = 256
#: Values from which a 16-bit mask looks like Cityscapes instance ids (labelId * 1000 + k).
INSTANCE_IDS = 1000


@dataclass(frozen=True)
class MaskFacts:
    """One sampled mask. ``error`` is set (and the rest empty) when it cannot be read.

    ``colormaps`` lists the built-in colormaps that name every colour of a colour mask; its
    ``values`` are then the ids the first of them gives. ``image_size`` is the stored
    ``(height, width)`` of its image, ``orientation`` the image's EXIF orientation.
    """

    path: str
    relpath: str
    split: str
    image: str | None = None
    error: str | None = None
    kind: str | None = None
    height: int = 0
    width: int = 0
    dtype: str | None = None
    palette: bytes | None = None
    values: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    shapes: tuple[ValueShape, ...] = ()
    lossy: str | None = None
    #: of a lossy mask, the values with regions of their own (1% of it, not specks): classes
    regions: tuple[int, ...] = ()
    colours: int = 0
    colormaps: tuple[str, ...] = ()
    image_size: tuple[int, int] | None = None
    image_error: str | None = None
    orientation: int = 1

    @property
    def is_label(self) -> bool:
        return self.error is None and bool(self.values)

    @property
    def instance_ids(self) -> bool:
        """Values like Cityscapes' instanceIds (labelId * 1000 + instance)."""
        return any(v >= INSTANCE_IDS for v in self.values)

    @property
    def size_matches(self) -> str | None:
        """How the mask's size relates to its image: ``same``, ``displayed`` (the EXIF-turned
        size), ``other``; None without an image size."""
        if self.image_size is None:
            return None
        if self.image_size == (self.height, self.width):
            return "same"
        if displayed_size(*self.image_size, self.orientation) == (self.height, self.width):
            return "displayed"
        return "other"


def inspect_pair(item: tuple[str, str, str | None, str]) -> MaskFacts:
    """The facts of one ``(mask path, relative path, image path or None, split)``; never
    raises for a bad file."""
    path, relpath, image, split = item
    base = {"path": path, "relpath": relpath, "split": split, "image": image}
    try:
        mask = read_mask(path)
        facts = _mask_facts(mask)
    except UnreadableMask as err:
        return MaskFacts(**base, error=err.reason)
    except MemoryError:
        return MaskFacts(**base, error="out of memory while decoding")
    return MaskFacts(**base, **facts, **(_image_facts(image) if image else {}))


def _mask_facts(mask) -> dict:
    height, width = mask.shape
    facts = {"kind": mask.kind, "height": height, "width": width, "dtype": str(mask.dtype)}
    if mask.kind == "colour":
        return facts | _colour_facts(mask.array)
    if mask.kind == "jpeg":
        if mask.array.ndim != 2:  # a colour JPEG: no colormap names its blurred colours
            return facts
        labels = mask.array
        values, counts = np.unique(labels, return_counts=True)
        return facts | _label_facts(labels, values, counts, jpeg=True)
    else:
        labels = mask.labels
        facts["palette"] = mask.palette
    values, counts = np.unique(labels, return_counts=True)
    return facts | _label_facts(labels, values, counts)


def _label_facts(
    labels: np.ndarray, values: np.ndarray, counts: np.ndarray, *, jpeg: bool = False
) -> dict:
    wanted = [int(v) for v in values if int(v) in CANDIDATES or v < 0]
    shapes = value_shapes(labels, wanted) if wanted else ()
    facts = {
        "values": tuple(int(v) for v in values),
        "counts": tuple(int(c) for c in counts),
        "shapes": shapes,
    }
    if not labels.size:
        return facts
    support = equal_neighbours(labels)
    void = np.isin(labels, [v for v in wanted if v != 0])
    # thin void (a 1-px __ignore__ line, VOC's borders) is drawn so, not specks of noise
    lossy = lossy_signature(labels, ignore=(255,), support=np.where(void, 8, support))
    facts["lossy"] = lossy
    if jpeg or lossy is not None:
        inside = support >= MIN_SUPPORT  # not specks: noise is specks
        found, found_counts = np.unique(labels[inside], return_counts=True)
        regions = found[found_counts >= REGION_SHARE * labels.size]
        facts["regions"] = tuple(int(v) for v in regions)
    return facts


def _colour_facts(rgb: np.ndarray) -> dict:
    """The colours of a colour mask, and the ids of the built-in colormaps naming them all."""
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
    packed |= rgb[..., 2]
    colours = np.unique(packed)
    if len(colours) > MAX_COLOURS:
        return {"colours": len(colours)}
    fits = []
    ids = None
    for name in BUILTIN:
        try:
            converted = builtin(name).to_ids(rgb[..., :3])
        except UnreadableMask:
            continue
        fits.append(name)
        ids = converted if ids is None else ids
    facts: dict = {"colours": len(colours), "colormaps": tuple(fits)}
    if ids is not None:
        values, counts = np.unique(ids, return_counts=True)
        facts |= _label_facts(ids, values, counts)
    return facts


def _image_facts(image: str) -> dict:
    try:
        with fs.open(image, "rb") as fh:
            head = fh.read(1 << 16)
        _, height, width, _ = quick_header(head) or image_header(fs.read_bytes(image))
    except (OSError, ValueError) as err:
        return {"image_error": str(err) or type(err).__name__}
    return {"image_size": (height, width), "orientation": exif_orientation(head)}
