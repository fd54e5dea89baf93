"""What a ``to-tfrecord`` run is asked to do: one frozen :class:`WriteSpec`, checked once.

The command line builds a spec; the local writer (:func:`labelfix.records.write.write_dataset`)
and the engines' (:func:`labelfix.engines.common.write_dataset_on`: Beam, dask) take the same
spec, so no option list is repeated across layers.

Masks are stored with the canonical ignore value ``out`` of the label map, in one of two forms
(:meth:`WriteSpec.mask_storage`):

* ``png``: 8-bit grey PNG (16-bit when a class id or the ignore value exceeds 255), palettes
  stripped. A PNG cannot hold -1, so a negative ``out`` is stored as 255 (65535 for 16-bit).
* ``raw``: little-endian signed integers (as DeepLab2 stores panoptic labels), the smallest width
  holding every value (``int8`` for ids up to 127 and ``out=-1``), so -1 lives in the record.

>>> from labelfix.labels.labelmap import LabelMap, void_class_problem
>>> spec = WriteSpec(images="img", masks="gt", output="tfr", num_classes=21,
...                  label_map=LabelMap(ignore=(255,), out=-1))
>>> spec.mask_storage()
(255, 'uint8')
>>> parse_size("100MB"), parse_size("1GiB")
(100000000, 1073741824)
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from labelfix.errors import LabelfixError, UsageError
from labelfix.io.pairing import Naming
from labelfix.labels.colormap import ColourPolicy
from labelfix.labels.labelmap import LabelMap, void_class_problem
from labelfix.records.example import FILENAME_STYLES, RecordKeys

MASK_ENCODINGS = ("png", "raw")
COMPRESSIONS = ("none", "gzip")
#: Images with an EXIF orientation (which TensorFlow ignores): refused, stored as they are, or
#: turned as viewers show them (see :mod:`labelfix.records.prepare`).
EXIF_POLICIES = ("error", "keep", "rotate")

#: Default mask encoding, for training too. benchmarks/bench_reader.py on 2 cores: raw reads
#: only 5-15% faster than png (the image decode dominates) and only in its int8 form (``out=-1``),
#: at 3.2x the disk at VOC size (1.8x at Cityscapes size); with void kept as 255 (int16) it is
#: no faster at VOC size and 5.3x the disk. png is also what DeepLab / Model Garden decode.
DEFAULT_MASK_ENCODING = "png"

#: Default shard size (bytes of records before compression).
DEFAULT_SHARD_SIZE = 100_000_000

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_size(text: str | int) -> int:
    """``"100MB"`` -> 100_000_000, ``"1GiB"`` -> 2**30, ``"4096"`` -> 4096; ValueError otherwise."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"expected a size like 100MB, 1.5GB or 512MiB, got {text!r}")
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value < 1:
        raise ValueError(f"a shard size must be at least 1 byte, got {text!r}")
    return value


@dataclass(frozen=True)
class WriteSpec:
    """Every option of a ``to-tfrecord`` run; invalid combinations raise on construction.

    ``label_map`` (default: none, values kept) is applied to every mask, and every result must
    be a class id ``0..num_classes-1`` (default: the label map's ``num_classes``) or the label
    map's canonical ignore ``out``. ``num_shards`` or ``shard_size`` (bytes or ``"100MB"``,
    default 100 MB) set the sharding; records follow the sorted mask order (or ``ids`` order),
    permuted by ``seed`` when ``shuffle``. ``image_suffix``/``mask_suffix`` are stripped from
    stems when pairing (default: the conventions :mod:`labelfix.io.pairing` knows). With
    ``colours``, colour masks are converted to class ids.
    ``exif`` says what becomes of an image with an EXIF orientation (:data:`EXIF_POLICIES`).
    ``images``, ``masks`` and ``output`` may be remote (``gs://...``).
    ``filename`` is what ``image/filename`` holds (:data:`~labelfix.records.example.
    FILENAME_STYLES`: ``stem``, DeepLab's convention, or ``name`` with the extension).

    With ``records`` (shard files, globs or directories of another tool's TFRecords, read with
    ``keys``) in place of ``images`` and ``masks``, those records are rewritten
    (:mod:`labelfix.records.convert`): images byte for byte, masks read as ids and mapped.
    """

    images: str | None = None
    masks: str | None = None
    output: str = ""
    split: str = "train"
    label_map: LabelMap = field(default_factory=LabelMap)
    num_classes: int | None = None
    mask_encoding: str = DEFAULT_MASK_ENCODING
    compression: str = "none"
    num_shards: int | None = None
    shard_size: int | str | None = None
    shuffle: bool = False
    seed: int = 0
    image_suffix: str = ""
    mask_suffix: str = ""
    ids: tuple[str, ...] | None = None
    skip_unpaired: bool = False
    colours: ColourPolicy | None = None
    exif: str = "error"
    filename: str = "stem"
    records: tuple[str, ...] | None = None
    keys: RecordKeys = field(default_factory=RecordKeys)

    def __post_init__(self) -> None:
        for name in ("images", "masks", "output"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        if self.records is not None:
            records = self.records
            if isinstance(records, (str, os.PathLike)):
                records = (records,)
            object.__setattr__(self, "records", tuple(os.fspath(r) for r in records))
        if self.label_map is None:
            object.__setattr__(self, "label_map", LabelMap())
        if self.num_classes is None:
            object.__setattr__(self, "num_classes", self.label_map.num_classes)
        if self.ids is not None:
            object.__setattr__(self, "ids", tuple(self.ids))
        self._check()
        if self.shard_size is not None:
            try:
                object.__setattr__(self, "shard_size", parse_size(self.shard_size))
            except ValueError as err:
                raise UsageError(str(err)) from None

    def _check(self) -> None:
        if not self.output:
            raise UsageError("an output directory is needed")
        if self.records is not None:
            if self.images is not None or self.masks is not None:
                raise UsageError("give records, or images and masks, not both")
            if not self.records:
                raise UsageError("records: no shard given")
            if self.exif == "rotate":
                raise UsageError(
                    "exif='rotate' cannot rewrite records: their images are copied byte for byte"
                    " (exif='keep' stores them as they are)"
                )
            if self.ids is not None:
                raise UsageError("ids pick pairs of images and masks, not records")
            if self.shuffle:
                raise UsageError("records are rewritten in their order: shuffle needs image files")
        elif self.images is None or self.masks is None:
            raise UsageError("images and masks are needed (or records)")
        if self.filename not in FILENAME_STYLES:
            raise UsageError(
                f"filename must be one of {', '.join(FILENAME_STYLES)}, got {self.filename!r}"
            )
        n = self.num_classes
        if n is None or n < 1:
            raise UsageError(f"num_classes must be given and at least 1, got {n}")
        if self.mask_encoding not in MASK_ENCODINGS:
            raise UsageError(f"mask encoding must be one of {', '.join(MASK_ENCODINGS)}")
        if self.compression not in COMPRESSIONS:
            raise UsageError(f"compression must be one of {', '.join(COMPRESSIONS)}")
        if self.exif not in EXIF_POLICIES:
            raise UsageError(f"exif must be one of {', '.join(EXIF_POLICIES)}, got {self.exif!r}")
        if self.num_shards is not None and self.shard_size is not None:
            raise UsageError("give num_shards or shard_size, not both")
        if self.num_shards is not None and self.num_shards < 1:
            raise UsageError(f"num_shards must be at least 1, got {self.num_shards}")
        if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", self.split):
            raise UsageError(f"split must be a plain name like train or val, got {self.split!r}")
        problem = void_class_problem(self.label_map.out_value, n)
        if problem is not None:
            raise UsageError(problem)
        self.mask_storage()  # raises when the values cannot be stored

    @classmethod
    def from_options(cls, options: Mapping[str, object], **given) -> WriteSpec:
        """A spec from the options named like its fields (``labelfix to-tfrecord``'s
        parameters; the others are left out), and ``given`` fields on top."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in names and k not in given}, **given)

    @property
    def naming(self) -> Naming:
        """How mask and image names pair (:mod:`labelfix.io.pairing`)."""
        return Naming(image_suffix=self.image_suffix, mask_suffix=self.mask_suffix)

    @property
    def out(self) -> int | None:
        """The canonical ignore value every void pixel becomes (None: no void)."""
        return self.label_map.out_value

    @property
    def size_limit(self) -> int:
        """Bytes of records per shard (without ``num_shards``)."""
        return self.shard_size if self.shard_size is not None else DEFAULT_SHARD_SIZE

    def mask_storage(self) -> tuple[int | None, str]:
        """``(stored ignore value, mask dtype)`` of the masks in the records.

        PNG masks are 8-bit whenever the class ids and a void slot fit (up to 255 classes with
        void, 256 without), because DeepLab's and Model Garden's decoders read masks as uint8;
        void is then stored as ``out`` when it fits 0..255, else as 255 (``labelfix.data``
        presents it as ``ignore_as`` either way). More classes need 16-bit PNGs, void stored
        as ``out`` when it fits 0..65535, else 65535. Raw masks store ``out`` itself.
        """
        hi, out = self.num_classes - 1, self.out
        if self.mask_encoding == "png":
            bits = 8 if hi + (out is not None) <= 0xFF else 16
            top = (1 << bits) - 1
            if hi > 0xFFFF - (out is not None):
                raise LabelfixError(
                    f"a PNG mask holds at most 65535, but {self.num_classes} classes and void do "
                    "not fit; use mask_encoding='raw'"
                )
            stored = None if out is None else (out if 0 <= out <= top else top)
            return stored, f"uint{bits}"
        lo = min(0, out if out is not None else 0)
        top = max(hi, out if out is not None else 0)
        for name in ("int8", "int16", "int32"):
            info = np.iinfo(name)
            if info.min <= lo and top <= info.max:
                return out, name
        raise LabelfixError(f"class ids {lo}..{top} do not fit 32-bit signed integers")

    def readers(self) -> dict[str, str]:
        """Which decoders read these records right: ``"yes"``, or ``"no: why"``, per reader.

        DeepLab (``deeplab/datasets/data_generator.py``) and TF Model Garden
        (``official/vision/dataloaders/segmentation_input.py``) decode masks with
        ``decode_png``/``decode_image(channels=1)`` as uint8 from uncompressed records.
        """
        stored, dtype = self.mask_storage()
        if self.mask_encoding == "raw":
            deeplab = model_garden = "no: raw masks (only labelfix.data decodes them)"
        elif dtype != "uint8":
            deeplab = model_garden = (
                f"no: 16-bit PNG masks ({self.num_classes} classes); decoded as uint8, "
                "TensorFlow keeps each id's high byte (id 300 reads as 1)"
            )
        else:
            void = [] if stored in (None, 255) else [f"ignore_label={stored}"]
            deeplab = "yes" + "".join(f", with {v}" for v in void)
            gzip = ["file_type: tfrecord_compressed"] if self.compression == "gzip" else []
            model_garden = "yes" + (", with " + " and ".join(void + gzip) if void + gzip else "")
            if gzip:
                deeplab = "no: gzip-compressed shards"
        return {"labelfix.data": "yes", "deeplab": deeplab, "model_garden": model_garden}
