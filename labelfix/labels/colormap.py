"""Colour-coded masks -> class ids, exactly: every colour must be known, or it is an error.

:func:`read_label_mask` is how every command reads a mask: :func:`labelfix.io.masks.read_mask`,
then, with a :class:`ColourPolicy`, colour masks converted to class ids. What an unknown colour
becomes (with ``--unknown-colour ignore``) is decided once, by :func:`unknown_colour_void`.

Each pixel's RGB is packed into one integer and looked up among the colormap's sorted packed
colours (``np.searchsorted``); no per-pixel Python.

>>> cm = builtin("voc")
>>> rgb = np.array([[[0, 0, 0], [192, 128, 128], [224, 224, 192]]], np.uint8)
>>> cm.to_ids(rgb).tolist()          # background, person, void border
[[0, 15, 255]]
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labelfix.errors import MappingError, UnreadableMask
from labelfix.io.masks import Mask, ValueAt, read_mask, smallest_int_dtype
from labelfix.labels.presets import CITYSCAPES_CLASSES, VOC_CLASSES, voc_palette

UNKNOWN_COLOUR_POLICIES = ("error", "ignore")
#: What a transparent pixel (alpha 0) of a colour mask becomes: an error, or the void value.
TRANSPARENT_POLICIES = ("error", "void")


class UnknownColour(UnreadableMask):
    """A colour mask holding a colour the colormap does not name."""


class TransparentPixels(UnreadableMask):
    """A colour mask with transparent pixels, read with a colormap that only sees colours."""


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


@dataclass(frozen=True)
class Colormap:
    """Class ids with their names and RGB colours. Several colours may share one id."""

    name: str
    ids: tuple[int, ...]
    colours: tuple[tuple[int, int, int], ...]
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.colours):
            raise MappingError(
                f"colormap {self.name}: {len(self.ids)} ids, {len(self.colours)} colours"
            )
        packed = _pack(np.asarray(self.colours, np.uint8).reshape(-1, 3))
        seen: dict[int, int] = {}
        for key, cid in zip(packed.tolist(), self.ids, strict=True):
            if key in seen and seen[key] != cid:
                rgb = ((key >> 16) & 255, (key >> 8) & 255, key & 255)
                raise MappingError(
                    f"colormap {self.name}: colour {rgb} is given to both id {seen[key]} and {cid}"
                )
            seen[key] = cid
        order = np.argsort(packed, kind="stable")
        object.__setattr__(self, "_keys", packed[order])
        object.__setattr__(self, "_values", np.asarray(self.ids, np.int64)[order])

    def to_ids(
        self,
        rgb: np.ndarray,
        *,
        unknown: str = "error",
        ignore: int = 255,
        path: str | None = None,
        void: np.ndarray | None = None,
    ) -> np.ndarray:
        """Convert ``[H, W, 3]`` colours to ``[H, W]`` class ids (uint8, or wider if needed).

        An unknown colour raises UnknownColour naming the colour, its pixel count and its first
        coordinate; with ``unknown="ignore"`` it becomes ``ignore`` instead. Never 0. Pixels
        where the boolean ``[H, W]`` array ``void`` is True become ``ignore`` whatever their
        colour (transparent pixels).
        """
        if rgb.ndim != 3 or rgb.shape[2] < 3:
            raise ValueError(f"expected [H, W, 3] colours, got shape {rgb.shape}")
        packed = _pack(rgb[..., :3])
        keys, values = self._keys, self._values
        idx = np.searchsorted(keys, packed)
        np.minimum(idx, len(keys) - 1, out=idx)
        found = keys[idx] == packed
        ids = values[idx]
        if void is not None:
            found |= void
            ids = np.where(void, ignore, ids)
        if not found.all():
            if unknown != "ignore":
                missing = np.unique(packed[~found])
                first = ValueAt.find(packed, int(missing[0]))
                key = first.value
                colour = ((key >> 16) & 255, (key >> 8) & 255, key & 255)
                more = f" ({len(missing) - 1} more unknown colours)" if len(missing) > 1 else ""
                raise UnknownColour(
                    path or "<array>",
                    f"colour {colour} is not in colormap {self.name}: {first.pixels} px, "
                    f"first at {first.where}{more}",
                )
            ids = np.where(found, ids, ignore)
        lo, hi = int(ids.min()), int(ids.max())
        return ids.astype(smallest_int_dtype(lo, hi))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "entries": [
                {"id": i, "name": (self.names[k] if self.names else None), "color": list(c)}
                for k, (i, c) in enumerate(zip(self.ids, self.colours, strict=True))
            ],
        }


# ----------------------------------------------------------------------------- built-ins


def _voc() -> Colormap:
    pal = voc_palette()
    colours = tuple(tuple(pal[3 * i : 3 * i + 3]) for i in range(256))
    names = tuple(VOC_CLASSES) + tuple(f"id{i}" for i in range(21, 255)) + ("void",)
    return Colormap("voc", tuple(range(256)), colours, names)


#: Cityscapes colours from cityscapesScripts' labels.py, as trainIds. Colours of labels with
#: trainId 255 map to 255; labels.py gives pole and polegroup, car and license plate, one colour
#: each -- those colours map to the trainId class (pole 5, car 13).
_CITYSCAPES_COLOURS = (
    ((128, 64, 128), 0), ((244, 35, 232), 1), ((70, 70, 70), 2), ((102, 102, 156), 3),
    ((190, 153, 153), 4), ((153, 153, 153), 5), ((250, 170, 30), 6), ((220, 220, 0), 7),
    ((107, 142, 35), 8), ((152, 251, 152), 9), ((70, 130, 180), 10), ((220, 20, 60), 11),
    ((255, 0, 0), 12), ((0, 0, 142), 13), ((0, 0, 70), 14), ((0, 60, 100), 15),
    ((0, 80, 100), 16), ((0, 0, 230), 17), ((119, 11, 32), 18),
    ((0, 0, 0), 255), ((111, 74, 0), 255), ((81, 0, 81), 255), ((250, 170, 160), 255),
    ((230, 150, 140), 255), ((180, 165, 180), 255), ((150, 100, 100), 255),
    ((150, 120, 90), 255), ((0, 0, 90), 255), ((0, 0, 110), 255),
)  # fmt: skip


def _cityscapes() -> Colormap:
    names = tuple(CITYSCAPES_CLASSES[i] if i < 19 else "void" for _, i in _CITYSCAPES_COLOURS)
    return Colormap(
        "cityscapes",
        tuple(i for _, i in _CITYSCAPES_COLOURS),
        tuple(c for c, _ in _CITYSCAPES_COLOURS),
        names,
    )


#: CamVid's 32-class label_colors.txt, in its order (ids 0..30); Void (0, 0, 0) -> 255.
_CAMVID32 = (
    ("Animal", (64, 128, 64)), ("Archway", (192, 0, 128)), ("Bicyclist", (0, 128, 192)),
    ("Bridge", (0, 128, 64)), ("Building", (128, 0, 0)), ("Car", (64, 0, 128)),
    ("CartLuggagePram", (64, 0, 192)), ("Child", (192, 128, 64)),
    ("Column_Pole", (192, 192, 128)), ("Fence", (64, 64, 128)),
    ("LaneMkgsDriv", (128, 0, 192)), ("LaneMkgsNonDriv", (192, 0, 64)),
    ("Misc_Text", (128, 128, 64)), ("MotorcycleScooter", (192, 0, 192)),
    ("OtherMoving", (128, 64, 64)), ("ParkingBlock", (64, 192, 128)),
    ("Pedestrian", (64, 64, 0)), ("Road", (128, 64, 128)), ("RoadShoulder", (128, 128, 192)),
    ("Sidewalk", (0, 0, 192)), ("SignSymbol", (192, 128, 128)), ("Sky", (128, 128, 128)),
    ("SUVPickupTruck", (64, 128, 192)), ("TrafficCone", (0, 0, 64)),
    ("TrafficLight", (0, 64, 64)), ("Train", (192, 64, 128)), ("Tree", (128, 128, 0)),
    ("Truck_Bus", (192, 128, 192)), ("Tunnel", (64, 0, 64)), ("VegetationMisc", (192, 192, 0)),
    ("Wall", (64, 192, 0)),
)  # fmt: skip

#: The 11-class CamVid of SegNet (ids 0..10); Unlabelled (0, 0, 0) -> 255.
_CAMVID11 = (
    ("Sky", (128, 128, 128)), ("Building", (128, 0, 0)), ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)), ("Pavement", (60, 40, 222)), ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)), ("Fence", (64, 64, 128)), ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)), ("Bicyclist", (0, 128, 192)),
)  # fmt: skip


def _camvid(table, name: str) -> Colormap:
    return Colormap(
        name,
        (*range(len(table)), 255),
        (*(c for _, c in table), (0, 0, 0)),
        (*(n for n, _ in table), "Void"),
    )


BUILTIN = ("voc", "cityscapes", "camvid11", "camvid32")


def builtin(name: str) -> Colormap:
    """A built-in colormap: ``voc``, ``cityscapes`` (trainIds), ``camvid11``, ``camvid32``."""
    if name == "voc":
        return _voc()
    if name == "cityscapes":
        return _cityscapes()
    if name == "camvid11":
        return _camvid(_CAMVID11, name)
    if name == "camvid32":
        return _camvid(_CAMVID32, name)
    raise MappingError(
        f"unknown colormap {name!r} (expected one of {', '.join(BUILTIN)} or a file)"
    )


def _colormap_entries(path: str, text: str) -> list[tuple[int, str, tuple[int, ...]]]:
    entries: list[tuple[int, str, tuple[int, ...]]] = []
    if path.lower().endswith(".json") or text.lstrip().startswith(("[", "{")):
        data = json.loads(text)
        if isinstance(data, dict):
            data = data.get("entries", data)
        for item in data:
            colour = tuple(int(c) for c in item["color"])
            entries.append((int(item["id"]), str(item.get("name") or item["id"]), colour))
        return entries
    rows = [r for r in csv.reader(text.splitlines()) if r and not r[0].startswith("#")]
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]
    for row in rows:
        if len(row) != 5:
            shown = ",".join(row)
            shown = shown if len(shown) <= 40 else f"{shown[:40]}... ({len(shown):,} characters)"
            raise ValueError(f"expected id,name,r,g,b, got {shown!r}")
        entries.append((int(row[0]), row[1].strip(), tuple(int(c) for c in row[2:5])))
    return entries


def read_colormap(path: str | os.PathLike) -> Colormap:
    """A colormap file: CSV rows ``id,name,r,g,b`` (header optional), or JSON.

    JSON is a list of ``{"id": 0, "name": "road", "color": [128, 64, 128]}`` objects. The file
    is read by :func:`labelfix.io.fs.read_text` (UTF-8, or UTF-16 with a byte-order mark; no
    FIFOs or devices); ids are label values (:data:`~labelfix.labels.labelmap.LABEL_MIN` ..
    :data:`~labelfix.labels.labelmap.LABEL_MAX`).
    """
    from labelfix.io import fs
    from labelfix.labels.labelmap import check_label_value

    path = os.fspath(path)
    try:
        text = fs.read_text(path, what="colormap")
    except fs.UnreadableText as err:
        raise MappingError(str(err)) from None
    try:
        entries = _colormap_entries(path, text)
        for cid, _, _ in entries:
            check_label_value(cid)
    except RecursionError:
        raise MappingError(f"{path}: not a colormap file (JSON nested too deeply)") from None
    except (ValueError, KeyError, TypeError, csv.Error) as err:  # JSONDecodeError included
        reason = str(err) if len(str(err)) <= 200 else f"{str(err)[:200]}..."
        raise MappingError(f"{path}: not a colormap file ({reason})") from None
    if not entries:
        raise MappingError(f"{path}: colormap file has no entries")
    for _, _, colour in entries:
        if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            raise MappingError(f"{path}: colour {colour} is not three values 0..255")
    name = os.path.splitext(os.path.basename(path))[0]
    return Colormap(
        name,
        tuple(e[0] for e in entries),
        tuple(e[2] for e in entries),
        tuple(e[1] for e in entries),
    )


def load_colormap(spec: str) -> Colormap:
    """A built-in name or a file path."""
    if spec in BUILTIN:
        return builtin(spec)
    if os.path.exists(spec):
        return read_colormap(spec)
    raise MappingError(f"unknown colormap {spec!r}: not one of {', '.join(BUILTIN)} nor a file")


# ----------------------------------------------------------------------------- reading masks


def unknown_colour_void(ignore: Sequence[int] = (), out: int | None = None) -> int:
    """The id an unknown colour becomes with ``--unknown-colour ignore``: a value the rest of the
    run treats as void. The first input ``ignore`` value; else ``out`` when it fits a mask
    (non-negative); else 255.

    >>> unknown_colour_void((0,), -1), unknown_colour_void((), 255), unknown_colour_void()
    (0, 255, 255)
    """
    if ignore:
        return int(ignore[0])
    if out is not None and out >= 0:
        return int(out)
    return 255


@dataclass(frozen=True)
class ColourPolicy:
    """How colour masks become class ids: the colormap, ``unknown`` colours (``"error"``, or
    ``"ignore"``: they become ``void``, see :func:`unknown_colour_void`), and ``transparent``
    pixels, alpha 0 (``"error"``, or ``"void"``: they become ``void`` whatever their colour).

    A colormap names colours, and a transparent pixel's colour is whatever the drawing tool
    left under it (often black, a class in most colormaps): read as a colour it would become a
    class. Partly transparent pixels (0 < alpha < 255, anti-aliased brush edges) are read by
    their colour, which a straight-alpha PNG stores unblended: a colour the colormap does not
    name follows ``unknown``.
    """

    colormap: Colormap
    unknown: str = "error"
    void: int = 255
    transparent: str = "error"

    def __post_init__(self) -> None:
        if self.unknown not in UNKNOWN_COLOUR_POLICIES:
            raise ValueError(f"unknown colour policy must be one of {UNKNOWN_COLOUR_POLICIES}")
        if self.transparent not in TRANSPARENT_POLICIES:
            raise ValueError(f"transparent policy must be one of {TRANSPARENT_POLICIES}")


def read_label_mask(
    path: str | os.PathLike, *, colours: ColourPolicy | None = None, data: bytes | None = None
) -> Mask:
    """:func:`~labelfix.io.masks.read_mask`, with colour masks turned into class ids (kind
    ``colormap``) when ``colours`` is given. Raises UnreadableMask (UnknownColour and
    TransparentPixels included)."""
    path = os.fspath(path)
    mask = read_mask(path, data=data)
    if colours is None or mask.kind != "colour":
        return mask
    transparent = None if mask.alpha is None else mask.alpha == 0
    if transparent is not None and not transparent.any():
        transparent = None
    if transparent is not None and colours.transparent != "void":
        raise TransparentPixels(path, _transparent_reason(mask.alpha, transparent))
    ids = colours.colormap.to_ids(
        mask.array, unknown=colours.unknown, ignore=colours.void, path=path, void=transparent
    )
    return Mask(path=path, kind="colormap", array=ids)


def _transparent_reason(alpha: np.ndarray, transparent: np.ndarray) -> str:
    """``1,200 transparent pixels (alpha 0), first at y=0 x=3: ...`` (see ColourPolicy)."""
    first = ValueAt.find(transparent, True)
    y, x, count = first.y, first.x, first.pixels
    partly = int(np.count_nonzero(alpha < 255)) - count
    also = ""
    if partly:
        also = (
            f"; {partly:,} partly transparent pixel is read by its colour"
            if partly == 1
            else f"; {partly:,} partly transparent pixels are read by their colour"
        )
    what = "1 transparent pixel" if count == 1 else f"{count:,} transparent pixels"
    return (
        f"{what} (alpha 0), first at y={y} x={x}: --colormap reads their colour, which no one "
        f"sees; give --transparent void to make them void{also}"
    )
