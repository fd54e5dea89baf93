"""Label mappings: a lookup table plus a policy for the values no rule names.

A :class:`LabelMap` is built once (from ``--ignore/--out``, ``--map A:B``, a map file or a
preset) and applied to whole arrays with one table lookup per pixel.

>>> lm = LabelMap(ignore=(255,), out=-1)
>>> lm.apply(np.array([[0, 5, 255]], np.uint8)).tolist()
[[0, 5, -1]]
>>> cs = preset("cityscapes")
>>> cs.apply(np.array([[7, 26, 0]], np.uint8)).tolist()   # road, car, unlabeled
[[0, 13, 255]]
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from labelfix.errors import MappingError
from labelfix.masks import smallest_int_dtype, value_counts

UNMAPPED_POLICIES = ("keep", "ignore", "error")


@dataclass(frozen=True)
class UnmappedValue:
    value: int
    pixels: int
    y: int
    x: int


@dataclass(frozen=True)
class LabelMap:
    """How every input value becomes an output value.

    ``rules`` map values explicitly; every value in ``ignore`` becomes ``out`` (the canonical
    void; it defaults to the first ignore value); values named by neither follow ``unmapped``:
    ``keep`` (unchanged), ``ignore`` (become ``out``) or ``error``.
    """

    rules: tuple[tuple[int, int], ...] = ()
    ignore: tuple[int, ...] = ()
    out: int | None = None
    unmapped: str = "keep"
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    name: str | None = None
    rules_dict: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.unmapped not in UNMAPPED_POLICIES:
            raise MappingError(f"unmapped must be one of {', '.join(UNMAPPED_POLICIES)}")
        rules: dict[int, int] = {}
        for a, b in self.rules:
            if a in rules and rules[a] != b:
                raise MappingError(f"value {a} is mapped twice: to {rules[a]} and to {b}")
            rules[a] = b
        for v in self.ignore:
            if v in rules and rules[v] != self.out_value:
                raise MappingError(
                    f"value {v} is both an ignore value and mapped to {rules[v]} by a rule"
                )
        if self.unmapped == "ignore" and self.out_value is None:
            raise MappingError(
                "unmapped values become ignore, but no ignore value is known:"
                " give --ignore or --out"
            )
        object.__setattr__(self, "rules_dict", rules)

    @property
    def out_value(self) -> int | None:
        """The canonical ignore value the output uses (None when there is no ignore at all)."""
        if self.out is not None:
            return self.out
        return self.ignore[0] if self.ignore else None

    @property
    def is_identity(self) -> bool:
        return (
            all(a == b for a, b in self.rules)
            and all(v == self.out_value for v in self.ignore)
            and self.unmapped == "keep"
        )

    def lookup(self, value: int) -> int | None:
        """The output for one input value; None when ``unmapped="error"`` and no rule names it."""
        if value in self.rules_dict:
            return self.rules_dict[value]
        if value in self.ignore:
            return self.out_value
        if self.unmapped == "keep":
            return value
        if self.unmapped == "ignore":
            return self.out_value
        return None

    @property
    def outputs(self) -> tuple[int, ...]:
        """The values the rules and the ignore policy produce (kept values not included).

        >>> LabelMap(rules=((7, 0),), ignore=(255,), out=-1).outputs
        (-1, 0)
        """
        values = set(self.rules_dict.values())
        if self.out_value is not None and (self.ignore or self.unmapped == "ignore"):
            values.add(self.out_value)
        return tuple(sorted(values))

    @property
    def idempotent(self) -> bool:
        """True when applying the map twice gives the same result as applying it once."""
        outputs = set(self.rules_dict.values()) | set(v for v in (self.out_value,) if v is not None)
        return all(self.lookup(b) == b for b in outputs)

    def with_out(self, out: int | None) -> LabelMap:
        return replace(self, out=out) if out is not None else self

    # ------------------------------------------------------------------------- applying

    def table(self, dtype: np.dtype | type) -> tuple[np.ndarray, np.ndarray]:
        """``(lut, known)`` for every value of an 8- or 16-bit unsigned ``dtype``.

        ``lut[v]`` is the output for ``v`` (smallest integer dtype holding every output);
        ``known[v]`` is False where ``unmapped="error"`` and no rule names ``v``.
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise ValueError(f"a lookup table needs uint8 or uint16 input, got {dtype}")
        size = 1 << (8 * dtype.itemsize)
        lut = np.arange(size, dtype=np.int64)
        known = np.ones(size, dtype=bool)
        if self.unmapped != "keep":
            fill = self.out_value if self.unmapped == "ignore" else 0
            lut[:] = fill
            known[:] = self.unmapped == "ignore"
        for v in self.ignore:
            if 0 <= v < size:
                lut[v] = self.out_value
                known[v] = True
        for a, b in self.rules_dict.items():
            if 0 <= a < size:
                lut[a] = b
                known[a] = True
        lut = lut.astype(smallest_int_dtype(int(lut.min()), int(lut.max())))
        return lut, known

    def apply(self, labels: np.ndarray, *, path: str | None = None) -> np.ndarray:
        """Map a whole label array; raise MappingError (naming ``path``) on unmapped values.

        The result has the smallest integer dtype that holds its values. uint8 and uint16
        arrays go through a cached lookup table; other integer arrays through a table over the
        values they hold.
        """
        if labels.dtype in (np.uint8, np.uint16):
            lut, known = self._cached_table(labels.dtype)
            if self.unmapped == "error" and not known.all():
                self._check_known(labels, known, path)
            return np.take(lut, labels)
        from labelfix.scan import value_counts

        if labels.size == 0:
            return labels.astype(np.int8)
        values, _ = value_counts(labels)
        outputs = [self.lookup(int(v)) for v in values]
        if any(o is None for o in outputs):
            known = np.array([o is not None for o in outputs])
            self._raise_unmapped(labels, values[~known], path)
        out = np.asarray(outputs, dtype=np.int64)
        lo, hi = (int(out.min()), int(out.max())) if out.size else (0, 0)
        out = out.astype(smallest_int_dtype(lo, hi))
        first, last = int(values[0]), int(values[-1])
        if last - first < (1 << 20):
            lut = np.zeros(last - first + 1, dtype=out.dtype)
            lut[values - first] = out
            return lut[labels.astype(np.int64) - first]
        return out[np.searchsorted(values, labels)]

    def _cached_table(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        key = f"_table_{np.dtype(dtype).name}"
        cached = self.__dict__.get(key)
        if cached is None:
            cached = self.table(dtype)
            object.__setattr__(self, key, cached)
        return cached

    def _check_known(self, labels: np.ndarray, known: np.ndarray, path: str | None) -> None:
        values, _ = value_counts(labels)
        missing = [int(v) for v in values if not known[int(v)]]
        if missing:
            self._raise_unmapped(labels, np.asarray(missing), path)

    def unmapped_values(self, labels: np.ndarray, values: Iterable[int]) -> list[UnmappedValue]:
        flat = labels.ravel()
        width = labels.shape[1] if labels.ndim == 2 else 1
        found = []
        for v in values:
            hits = flat == v
            y, x = divmod(int(np.argmax(hits)), width)
            found.append(UnmappedValue(int(v), int(hits.sum()), y, x))
        return found

    def _raise_unmapped(self, labels: np.ndarray, values: np.ndarray, path: str | None) -> None:
        found = self.unmapped_values(labels, values.tolist())
        first = found[0]
        where = f"{path}: " if path else ""
        more = f" (and {len(found) - 1} more unmapped values)" if len(found) > 1 else ""
        raise MappingError(
            f"{where}value {first.value} has no mapping rule (--unmapped error): "
            f"{first.pixels} px, first at y={first.y} x={first.x}{more}"
        )

    # ------------------------------------------------------------------------- records

    def to_dict(self) -> dict:
        """JSON-ready description (stored in manifests)."""
        return {
            "name": self.name,
            "rules": [[a, b] for a, b in sorted(self.rules_dict.items())],
            "ignore": list(self.ignore),
            "out": self.out_value,
            "unmapped": self.unmapped,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names else None,
            "idempotent": self.idempotent,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> LabelMap:
        return cls(
            rules=tuple((int(a), int(b)) for a, b in data.get("rules", ())),
            ignore=tuple(int(v) for v in data.get("ignore", ())),
            out=data.get("out"),
            unmapped=data.get("unmapped", "keep"),
            num_classes=data.get("num_classes"),
            class_names=tuple(data["class_names"]) if data.get("class_names") else None,
            name=data.get("name"),
        )

    def describe(self) -> str:
        """One line for summaries: ``cityscapes preset: 19 rules, unmapped -> 255``."""
        parts = []
        if self.name:
            parts.append(f"{self.name} preset")
        if self.rules_dict:
            parts.append(f"{len(self.rules_dict)} rule(s)")
        if self.ignore:
            parts.append(f"ignore {', '.join(map(str, self.ignore))} -> {self.out_value}")
        parts.append(
            f"unmapped values: {self.unmapped}"
            + (f" -> {self.out_value}" if self.unmapped == "ignore" else "")
        )
        return "; ".join(parts)


# ----------------------------------------------------------------------------- map files


def parse_map_rule(text: str) -> tuple[int, int]:
    """``"7:0"`` -> ``(7, 0)``; ValueError with a readable message otherwise."""
    a, sep, b = text.partition(":")
    if not sep:
        raise ValueError(f"expected A:B (e.g. 7:0), got {text!r}")
    try:
        return int(a.strip(), 0), int(b.strip(), 0)
    except ValueError:
        raise ValueError(f"expected integers in A:B, got {text!r}") from None


def read_map_file(path: str | os.PathLike) -> tuple[tuple[int, int], ...]:
    """Rules from a JSON object (``{"7": 0, ...}``) or a CSV of ``from,to`` rows."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        raise MappingError(f"{path}: cannot read map file ({err.strerror})") from None
    if path.lower().endswith(".json") or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise MappingError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(data, dict):
            raise MappingError(f'{path}: expected a JSON object like {{"7": 0}}')
        items = list(data.items())
    else:
        rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].startswith("#")]
        if rows and not rows[0][0].strip().lstrip("-").isdigit():
            rows = rows[1:]  # header
        items = []
        for i, row in enumerate(rows, 1):
            if len(row) < 2:
                raise MappingError(f"{path}: row {i}: expected from,to, got {','.join(row)!r}")
            items.append((row[0], row[1]))
    rules = []
    for a, b in items:
        try:
            rules.append((int(str(a).strip(), 0), int(str(b).strip(), 0)))
        except ValueError:
            raise MappingError(f"{path}: expected integer values, got {a!r}: {b!r}") from None
    if not rules:
        raise MappingError(f"{path}: no mapping rules in it (expected JSON or from,to rows)")
    return tuple(rules)


# ----------------------------------------------------------------------------- presets

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
) -> LabelMap:
    """Combine the mapping options every command shares into one LabelMap.

    A preset supplies rules, ignore value, num_classes and class names; explicit ``maps`` and
    ``map_file`` rules are added on top (explicit wins over the preset for the same value);
    ``ignore`` values are added to the preset's; ``out`` replaces its canonical ignore.
    """
    base = preset(preset_name) if preset_name else LabelMap()
    rules = dict(base.rules_dict)
    for v in ignore:  # an explicit --ignore wins over a preset's rule for that value
        rules.pop(v, None)
    # Explicit rules go on top; one that contradicts an explicit --ignore is a MappingError
    # from LabelMap (it used to be dropped silently).
    if map_file is not None:
        rules.update(read_map_file(map_file))
    rules.update(dict(maps))
    all_ignore = tuple(dict.fromkeys((*base.ignore, *ignore)))
    if num_classes is not None and base.num_classes is not None and num_classes != base.num_classes:
        class_names = None
    else:
        class_names = base.class_names
    return LabelMap(
        rules=tuple(sorted(rules.items())),
        ignore=all_ignore,
        out=out if out is not None else base.out,
        unmapped=unmapped or (base.unmapped if preset_name else "keep"),
        num_classes=num_classes if num_classes is not None else base.num_classes,
        class_names=class_names,
        name=base.name,
    )
