"""Dataset presets: the standard mappings, class names and palettes of Cityscapes, ADE20K and VOC.

:func:`build_label_map` turns the mapping options every command shares (``--preset``,
``--ignore``, ``--out``, ``--map``, ``--map-file``, ``--unmapped``) into one
:class:`~labelfix.labels.labelmap.LabelMap`.

>>> import numpy as np
>>> cs = preset("cityscapes")
>>> cs.apply(np.array([[7, 26, 0]], np.uint8)).tolist()   # road, car, unlabeled
[[0, 13, 255]]
>>> voc_palette()[3 * 15 : 3 * 16]                        # person
b'\xc0\x80\x80'
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from labelfix.errors import MappingError
from labelfix.labels.labelmap import LabelMap, read_map_file, void_class_problem

# ----------------------------------------------------------------------------- tables

#: Cityscapes labelId -> trainId, from cityscapesScripts' helpers/labels.py (all other ids,
#: including 0-6, 9, 10, 14-16, 18, 29, 30 and -1, have trainId 255 = ignore).
CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
ADE20K_CLASSES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)


def voc_palette() -> bytes:
    """The standard 256-entry Pascal VOC colour map (bit-interleaved), as 768 RGB bytes."""
    palette = bytearray(768)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[3 * i : 3 * i + 3] = bytes((r, g, b))
    return bytes(palette)


# ----------------------------------------------------------------------------- presets

PRESETS = ("cityscapes", "ade20k", "voc")


def preset(name: str) -> LabelMap:
    """A dataset's standard mapping, with its num_classes and class names.

    * ``cityscapes``: labelIds -> the 19 trainIds; every other id -> ignore 255.
    * ``ade20k``: reduce-zero-label: 0 -> ignore 255, k -> k-1 (150 classes).
    * ``voc``: 0..20 kept, 255 ignore, anything else -> ignore.
    """
    if name == "cityscapes":
        return LabelMap(
            rules=tuple(CITYSCAPES_TRAIN_IDS.items()),
            ignore=(),
            out=255,
            unmapped="ignore",
            num_classes=19,
            class_names=CITYSCAPES_CLASSES,
            name=name,
        )
    if name == "ade20k":
        return LabelMap(
            rules=tuple((k, k - 1) for k in range(1, 151)),
            ignore=(0,),
            out=255,
            unmapped="ignore",
            num_classes=150,
            class_names=ADE20K_CLASSES,
            name=name,
        )
    if name == "voc":
        return LabelMap(
            rules=tuple((k, k) for k in range(21)),
            ignore=(255,),
            out=255,
            unmapped="ignore",
            num_classes=21,
            class_names=VOC_CLASSES,
            name=name,
        )
    raise MappingError(f"unknown preset {name!r} (expected one of {', '.join(PRESETS)})")


def build_label_map(
    *,
    ignore: Sequence[int] = (),
    out: int | None = None,
    maps: Sequence[tuple[int, int]] = (),
    map_file: str | os.PathLike | None = None,
    preset_name: str | None = None,
    unmapped: str | None = None,
    num_classes: int | None = None,
    allow_void_class: bool = False,
    luminance: str | None = None,
) -> LabelMap:
    """Combine the mapping options every command shares into one LabelMap.

    A preset supplies rules, ignore value, num_classes and class names; explicit ``maps`` and
    ``map_file`` rules are added on top (explicit wins over the preset for the same value);
    ``ignore`` values are added to the preset's; ``out`` replaces its canonical ignore.

    ``luminance`` (``voc``, ``pillow:voc``, a colormap file: :mod:`labelfix.labels.luminance`)
    says the masks hold palette colours read as grey: the rules then map each class colour's
    luminance back to its id (the void colours' to the canonical ignore) in place of the
    preset's rules, and values no rule names are errors unless ``unmapped`` says otherwise.
    Luminances two classes share get no rule: ``maps`` says which class they are.

    Contradictions are MappingErrors: one value mapped to two outputs (within ``maps``, within
    the map file or between them), and, with ``num_classes``, a canonical ignore ``out`` that is
    a class id (void pixels would train as that class) unless ``allow_void_class``.

    >>> build_label_map(maps=[(1, 2), (1, 3)])
    Traceback (most recent call last):
    ...
    labelfix.errors.MappingError: value 1 is mapped twice: to 2 (--map 1:2) and to 3 (--map 1:3)
    """
    base = preset(preset_name) if preset_name else LabelMap()
    rules = dict(base.rules_dict)
    if luminance:
        rules = _luminance_rules(luminance, base, ignore, out, num_classes)
        unmapped = unmapped or "error"
    for v in ignore:  # an explicit --ignore wins over a preset's rule for that value
        rules.pop(v, None)
    # Explicit rules go on top; one that contradicts an explicit --ignore is a MappingError
    # from LabelMap, never dropped silently.
    rules.update(_explicit_rules(maps, map_file))
    all_ignore = tuple(dict.fromkeys((*base.ignore, *ignore)))
    if num_classes is not None and base.num_classes is not None and num_classes != base.num_classes:
        class_names = None
    else:
        class_names = base.class_names
    label_map = LabelMap(
        rules=tuple(sorted(rules.items())),
        ignore=all_ignore,
        out=out if out is not None else base.out,
        unmapped=unmapped or (base.unmapped if preset_name else "keep"),
        num_classes=num_classes if num_classes is not None else base.num_classes,
        class_names=class_names,
        name=base.name,
    )
    problem = void_class_problem(label_map.out_value, label_map.num_classes)
    if problem is not None and not allow_void_class:
        raise MappingError(f"{problem}, or pass --void-is-class to merge them on purpose")
    return label_map


def _luminance_rules(
    spec: str, base: LabelMap, ignore: Sequence[int], out: int | None, num_classes: int | None
) -> dict[int, int]:
    """The ``--luminance`` rules: class colours' luminances to their ids, void colours' to the
    canonical ignore (see :func:`build_label_map`)."""
    from labelfix.labels.luminance import luminance_rules

    n = num_classes if num_classes is not None else base.num_classes
    if n is None:
        raise MappingError(
            f"--luminance {spec} needs the number of classes (--num-classes or a --preset): "
            "only the colours of ids 0..N-1 and void are looked for"
        )
    void = tuple(dict.fromkeys(v for v in (*base.ignore, *ignore) if v >= n))
    canonical = out if out is not None else base.out
    if canonical is None and void:
        canonical = void[0]
    found, _ = luminance_rules(spec, num_classes=n, void=void)
    return {a: (canonical if b >= n and canonical is not None else b) for a, b in found}


def _explicit_rules(
    maps: Sequence[tuple[int, int]], map_file: str | os.PathLike | None
) -> dict[int, int]:
    """The rules of the map file and then of ``--map``; a value given two outputs is an error."""
    sources = [(f"{os.fspath(map_file)}", read_map_file(map_file))] if map_file else []
    sources.append(("--map", tuple(maps)))
    found: dict[int, tuple[int, str]] = {}
    for source, pairs in sources:
        for a, b in pairs:
            where = f"--map {a}:{b}" if source == "--map" else source
            if a in found and found[a][0] != b:
                raise MappingError(
                    f"value {a} is mapped twice: to {found[a][0]} ({found[a][1]}) and to {b} "
                    f"({where})"
                )
            found[a] = (b, where)
    return {a: b for a, (b, _) in found.items()}
