"""One pair -> one record: read, map, check and encode the mask, read the image header.

:func:`prepare_pair` runs in worker processes (numpy and Pillow only, never TensorFlow) and never
raises for bad data: it returns :class:`Prepared` or :class:`Rejected` (one line per problem,
worded as ``validate`` words them). The label map is applied to the value histogram, not to the
pixels: each distinct value is looked up once, and the pixels are converted in one table pass
only when a value changes. A PNG mask that needs no change keeps its compressed pixel data byte
for byte. The image bytes are read by the parent (:func:`record_bytes`), which is cheaper than
sending them back through a pipe, except for an image turned as its EXIF orientation says
(``exif="rotate"``): those bytes are made here.

TensorFlow's decoders ignore EXIF orientation, so an image with one (``!= 1``) is refused unless
the plan says what to do: ``keep`` stores it as it is (the mask follows the stored pixels),
``rotate`` stores the displayed picture, losslessly as PNG (the mask follows what viewers show).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from labelfix.checks.rules import bad_value_message, find_bad_values
from labelfix.checks.scan import size_problem
from labelfix.errors import MappingError, UnreadableMask
from labelfix.io import fs
from labelfix.io.images import (
    apply_orientation,
    check_image,
    displayed_size,
    exif_orientation,
    orientation_text,
)
from labelfix.io.masks import Mask
from labelfix.io.pairing import Pair
from labelfix.io.png import encode_png, passthrough_png, png_header
from labelfix.labels.colormap import ColourPolicy, read_label_mask
from labelfix.labels.labelmap import LabelMap, replace_values
from labelfix.records.example import feature_key, serialize_example
from labelfix.records.spec import WriteSpec


@dataclass(frozen=True)
class RecordPlan:
    """What a worker needs to turn a pair into a record (picklable, no TensorFlow)."""

    label_map: LabelMap
    num_classes: int
    out: int | None
    stored_ignore: int | None
    encoding: str
    mask_dtype: str
    colours: ColourPolicy | None = None
    #: images with an EXIF orientation: ``error`` (refused), ``keep`` or ``rotate``
    exif: str = "error"

    @property
    def keeps_ids(self) -> bool:
        """Whether every class id is written as read (only void values change), so a palette
        mask's colours still belong to the ids the records hold."""
        void = set(self.label_map.ignore)
        return all(a == b or a in void for a, b in self.label_map.rules)

    @classmethod
    def from_spec(cls, spec: WriteSpec) -> RecordPlan:
        stored_ignore, mask_dtype = spec.mask_storage()
        return cls(
            label_map=spec.label_map,
            num_classes=spec.num_classes,
            out=spec.out,
            stored_ignore=stored_ignore,
            encoding=spec.mask_encoding,
            mask_dtype=mask_dtype,
            colours=spec.colours,
            exif=spec.exif,
        )


@dataclass(frozen=True)
class Prepared:
    """A checked pair: its encoded mask, image header facts and class statistics."""

    mask: bytes
    image_format: str
    height: int
    width: int
    channels: int
    classes: tuple[int, ...]
    counts: tuple[int, ...]
    ignore_pixels: int
    passthrough: bool
    #: ``[[r, g, b], ...]`` of classes ``0..num_classes-1`` from a palette mask whose ids the
    #: records keep (:attr:`RecordPlan.keeps_ids`); None otherwise.
    palette: tuple[tuple[int, int, int], ...] | None = None
    #: the image bytes to store instead of the file's: the picture turned as its EXIF
    #: orientation says, as PNG (``exif="rotate"``); None: the file's own bytes
    image: bytes | None = None
    #: the whole serialised Example, made where the mask was prepared (another tool's records
    #: rewritten, :mod:`labelfix.records.convert`); None: the parent makes it
    record: bytes | None = None


@dataclass(frozen=True)
class Rejected:
    """A pair that cannot be written, and why (one line per problem)."""

    problems: tuple[str, ...]


def _mapped_values(
    label_map: LabelMap, dtype: np.dtype, values: np.ndarray, path: str, labels: Callable
) -> np.ndarray:
    """The output of the label map for each distinct value (one lookup per value, not per pixel)."""
    if label_map.is_identity:
        return values.astype(np.int64)
    try:
        return label_map.apply(values.astype(dtype), path=path).astype(np.int64)
    except MappingError:
        label_map.apply(labels(), path=path)  # raises again, naming the first pixel
        raise


def prepare_pair(pair: Pair, plan: RecordPlan) -> Prepared | Rejected:
    """Read, map, check and encode one pair's mask, and read its image header (in a worker)."""
    path = pair.mask
    try:
        data = fs.read_bytes(path)  # a FIFO or device is refused, never opened
    except OSError:
        data = None  # read_label_mask says what is wrong with the path
    return prepare_mask(
        path,
        data,
        lambda: read_label_mask(path, colours=plan.colours, data=data),
        pair.image,
        lambda: check_image(pair.image),
        plan,
    )


def prepare_mask(
    path: str,
    data: bytes | None,
    read: Callable[[], Mask],
    image: str,
    read_image: Callable[[], tuple[bytes, tuple[str, int, int, int]]],
    plan: RecordPlan,
    *,
    image_at: str | None = None,
) -> Prepared | Rejected:
    """Map, check and encode a mask (``read()``; ``data``: its encoded bytes, kept byte for
    byte when no value changes), and check its image (``read_image()``: its bytes and header).
    ``path`` and ``image`` name them in problems (a file, or a record of a shard's feature);
    ``image_at`` starts the lines about an image that cannot be read (default: ``image``)."""
    try:
        mask = read()
        values, counts = mask.value_counts()
        mapped = _mapped_values(plan.label_map, mask.dtype, values, path, lambda: mask.labels)
    except (UnreadableMask, MappingError) as err:
        return Rejected((str(err),))
    except MemoryError:
        return Rejected((f"{path}: out of memory while decoding",))
    out, num_classes = plan.out, plan.num_classes
    void = (out,) if out is not None else ()
    bad = find_bad_values(
        values, counts, lambda: mask.labels, num_classes=num_classes, void=void, outputs=mapped
    )
    problems = [bad_value_message(path, b, num_classes=num_classes, ignore=void) for b in bad]
    try:
        image_data, header = read_image()
        rotated, header, problem = _oriented(image, image_data, header, mask, plan.exif)
    except fs.NotARegularFile as err:  # a FIFO: reading it would wait forever
        problems.append(f"{image_at or image}: {err.strerror}")
    except OSError as err:
        problems.append(f"{image_at or image}: cannot read the image ({err.strerror or err})")
    except ValueError as err:
        problems.append(f"{image_at or image}: {err}")
    else:
        if problem is not None:
            problems.append(problem)
    if problems:
        return Rejected(tuple(problems))
    image_format, height, width, channels = header
    is_void = mapped == out if out is not None else np.zeros(len(mapped), bool)
    stored = np.where(is_void, plan.stored_ignore, mapped) if out is not None else mapped
    png = data if data is not None and png_header(data) is not None else None
    mask_bytes, passthrough = _encode(lambda: mask.labels, values, stored, png, plan)
    return Prepared(
        mask=mask_bytes,
        image_format=image_format,
        height=height,
        width=width,
        channels=channels,
        classes=tuple(mapped[~is_void].tolist()),
        counts=tuple(counts[~is_void].tolist()),
        ignore_pixels=int(counts[is_void].sum()),
        passthrough=passthrough,
        palette=_class_colours(mask, plan),
        image=rotated,
    )


def _oriented(image: str, data: bytes, header: tuple, mask, exif: str):
    """``(rotated image bytes or None, image header, problem or None)`` for an image and its
    mask, under the plan's ``exif`` policy (see the module docstring)."""
    path, (height, width) = mask.path, mask.shape
    orientation = exif_orientation(data)
    stored = header[1], header[2]
    if orientation != 1 and exif == "rotate":
        shown = displayed_size(*stored, orientation)
        if (height, width) == stored != shown:
            problem = (
                f"{path}: size {width}x{height} is the stored size of its image {image}, not "
                f"the {shown[1]}x{shown[0]} that {orientation_text(orientation)} displays: "
                "the mask follows the stored pixels, give --exif keep"
            )
            return None, header, problem
        rotated, header = apply_orientation(data, orientation)
        problem, _ = size_problem(image, shown, (height, width), 1)
        return rotated, header, None if problem is None else f"{path}: {problem}"
    problem, note = size_problem(image, stored, (height, width), orientation, exif_option="--exif")
    if problem is not None:
        return None, header, f"{path}: {problem}"
    if orientation != 1 and exif != "keep":
        return None, header, f"{image}: refused: it has {note}"
    return None, header, None


def _class_colours(mask, plan: RecordPlan) -> tuple[tuple[int, int, int], ...] | None:
    if mask.kind != "palette" or mask.palette is None or not plan.keeps_ids:
        return None
    n = min(plan.num_classes, 256)
    data = mask.palette
    return tuple(tuple(data[3 * i : 3 * i + 3]) for i in range(n))


def _encode(
    labels: Callable[[], np.ndarray],
    values: np.ndarray,
    stored: np.ndarray,
    png: bytes | None,
    plan: RecordPlan,
) -> tuple[bytes, bool]:
    """``(mask bytes, kept byte for byte)``: the file's own PNG data when no value changes."""
    if plan.encoding == "png":
        bits = 8 if plan.mask_dtype == "uint8" else 16
        if png is not None and (stored == values).all():
            kept = passthrough_png(png, bits)
            if kept is not None:
                return kept, True
        converted = replace_values(labels(), values, stored, plan.mask_dtype)
        return encode_png(converted, bits=bits), False
    dtype = np.dtype(plan.mask_dtype).newbyteorder("<")
    return replace_values(labels(), values, stored, dtype).tobytes(), False


def record_bytes(pair: Pair, prepared: Prepared, encoding: str) -> bytes:
    """The serialised Example of a prepared pair, with the image's original bytes (or the
    turned picture, :attr:`Prepared.image`)."""
    image = prepared.image if prepared.image is not None else fs.read_bytes(pair.image)
    return serialize_example(
        {
            feature_key("image"): image,
            feature_key("image_format"): prepared.image_format,
            feature_key("filename"): pair.filename,
            feature_key("source_id"): pair.source_id,
            feature_key("height"): prepared.height,
            feature_key("width"): prepared.width,
            feature_key("channels"): prepared.channels,
            feature_key("mask"): prepared.mask,
            feature_key("mask_format"): encoding,
        }
    )
