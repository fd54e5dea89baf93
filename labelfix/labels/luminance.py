"""Palette colours read as grey: the luminance each decoder gives a colour, and the way back.

A palette PNG decoded with ``tf.io.decode_png(channels=1)`` (DeepLab's and Model Garden's mask
decoders) or converted with Pillow's ``convert("L")`` holds the luminance of each pixel's
colour, not its index: VOC's person (15, colour (192, 128, 128)) becomes 147. Two formulas
matter, and they differ by one on some colours:

* ``tensorflow``: libpng's ``rgb_to_gray`` with TensorFlow's weights 0.299/0.587 in 15-bit fixed
  point, truncated: ``(9797 R + 19234 G + 3737 B) >> 15`` (equal to ``tf.io.decode_png`` for all
  256 VOC colours; tests/test_foreign_records.py pins it);
* ``pillow``: ITU-R 601-2, rounded: ``(19595 R + 38470 G + 7471 B + 32768) >> 16``.

:func:`detect_luminance` recognises a value histogram made of such luminances;
:func:`luminance_rules` maps them back to class ids (``--luminance voc``). The way back is not
always unique: VOC's bottle (5) and tvmonitor (20) both read as 52 in TensorFlow, bicycle (2) and
sheep (17) as 75; such values get no rule, and the user says which class they are with ``--map``.

>>> tf_luminance(np.array([[128, 0, 128], [192, 128, 128], [224, 224, 192]])).tolist()
[52, 147, 220]
>>> rules, ambiguous = luminance_rules("voc", num_classes=21, void=(255,))
>>> dict(rules)[147], dict(rules)[220], ambiguous[52]
(15, 255, (5, 20))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from labelfix.errors import MappingError

#: How a decoder turns a colour into grey: method name -> who does it.
METHODS = {
    "tensorflow": "tf.io.decode_png(channels=1), as DeepLab's and Model Garden's decoders read it",
    "pillow": "Pillow's convert('L')",
}
_PREFIXES = {"tf": "tensorflow", "tensorflow": "tensorflow", "pillow": "pillow"}
#: The colormaps :func:`detect_luminance` tries, in order.
DETECTED = ("voc", "cityscapes", "camvid11", "camvid32")


def tf_luminance(rgb: np.ndarray) -> np.ndarray:
    """The grey TensorFlow's PNG decoder gives each ``[..., 3]`` colour (``channels=1``)."""
    rgb = np.asarray(rgb, np.int64)
    return (9797 * rgb[..., 0] + 19234 * rgb[..., 1] + 3737 * rgb[..., 2]) >> 15


def pillow_luminance(rgb: np.ndarray) -> np.ndarray:
    """The grey Pillow's ``convert("L")`` gives each ``[..., 3]`` colour."""
    rgb = np.asarray(rgb, np.int64)
    return (19595 * rgb[..., 0] + 38470 * rgb[..., 1] + 7471 * rgb[..., 2] + 0x8000) >> 16


_FORMULAS = {"tensorflow": tf_luminance, "pillow": pillow_luminance}


def luminance(rgb: np.ndarray, method: str = "tensorflow") -> np.ndarray:
    """The grey ``method`` (:data:`METHODS`) gives each ``[..., 3]`` colour."""
    return _FORMULAS[method](rgb)


def parse_spec(spec: str) -> tuple[str, str]:
    """``"voc"`` -> ``("tensorflow", "voc")``; ``"pillow:voc"`` -> ``("pillow", "voc")``.

    The colormap part is a built-in colormap name or a colormap file (``id,name,r,g,b`` rows).
    """
    head, sep, rest = spec.partition(":")
    if sep and head.lower() in _PREFIXES and rest:
        return _PREFIXES[head.lower()], rest
    return "tensorflow", spec


def _colormap(name: str):
    from labelfix.labels.colormap import load_colormap

    return load_colormap(name)


def class_colours(
    colormap, *, num_classes: int | None = None, void: Sequence[int] = ()
) -> list[tuple[int, str, tuple[int, int, int]]]:
    """``(id, name, colour)`` of the colours masks of ``num_classes`` classes use: ids below
    ``num_classes``, the ``void`` ids and the entries named ``void``. Without ``num_classes``,
    every named entry (a built-in VOC colormap's 234 unnamed ``idN`` entries are no classes)."""
    names = colormap.names or tuple(str(i) for i in colormap.ids)
    found = []
    for cid, name, colour in zip(colormap.ids, names, colormap.colours, strict=True):
        if num_classes is not None:
            keep = 0 <= cid < num_classes or cid in void or name == "void"
        else:
            keep = name != f"id{cid}"
        if keep:
            found.append((int(cid), name, tuple(int(c) for c in colour)))
    return found


def luminance_table(
    colours: Sequence[tuple[int, str, tuple[int, int, int]]], method: str
) -> dict[int, tuple[int, ...]]:
    """Luminance -> the ids whose colour reads as it (several: ambiguous)."""
    table: dict[int, set[int]] = {}
    if not colours:
        return {}
    grey = luminance(np.array([c for _, _, c in colours]), method).tolist()
    for (cid, _, _), value in zip(colours, grey, strict=True):
        table.setdefault(int(value), set()).add(cid)
    return {v: tuple(sorted(ids)) for v, ids in sorted(table.items())}


def luminance_rules(
    spec: str, *, num_classes: int, void: Sequence[int] = ()
) -> tuple[tuple[tuple[int, int], ...], dict[int, tuple[int, ...]]]:
    """``(rules, ambiguous)``: ``luminance -> id`` for every class colour (ids below
    ``num_classes``, and the ``void`` ids) of the colormap ``spec`` names (see
    :func:`parse_spec`) whose luminance no other class shares; ``ambiguous`` maps each shared
    luminance to its ids. MappingError for an unknown colormap."""
    method, name = parse_spec(spec)
    colormap = _colormap(name)
    table = luminance_table(class_colours(colormap, num_classes=num_classes, void=void), method)
    if not table:
        raise MappingError(
            f"--luminance {spec}: colormap {colormap.name} has no colour for ids "
            f"0..{num_classes - 1}"
        )
    rules = tuple((v, ids[0]) for v, ids in table.items() if len(ids) == 1)
    ambiguous = {v: ids for v, ids in table.items() if len(ids) > 1}
    return rules, ambiguous


@dataclass(frozen=True)
class LuminanceMatch:
    """A value histogram that is a colormap's class colours read as grey (see
    :func:`detect_luminance`): ``values`` are ``(value, ids, pixels)``, ``names`` id -> name."""

    colormap: str
    method: str
    values: tuple[tuple[int, tuple[int, ...], int], ...]
    names: Mapping[int, str]

    @property
    def option(self) -> str:
        """The ``--luminance`` value that maps the values back."""
        return self.colormap if self.method == "tensorflow" else f"pillow:{self.colormap}"

    @property
    def ambiguous(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        return tuple((v, ids) for v, ids, _ in self.values if len(ids) > 1)

    def _id(self, cid: int) -> str:
        name = self.names.get(cid)
        return f"{cid} ({name})" if name else str(cid)

    def message(self) -> str:
        """``these look like VOC palette colours read as grey, not class ids (...): 52 = ...``"""
        shown = [f"{v} = {' or '.join(self._id(c) for c in ids)}" for v, ids, _ in self.values if v]
        return (
            f"these look like {self.colormap.upper()} palette colours read as grey, not class ids"
            f" ({METHODS[self.method]}): {', '.join(shown)}"
        )

    def advice(self) -> str:
        """What maps the values back: ``--luminance voc``, plus ``--map`` for shared values."""
        text = f"--luminance {self.option}"
        for value, ids in self.ambiguous:
            text += f" --map {value}:{ids[0]}" + "".join(f" (or {value}:{c})" for c in ids[1:])
        return text


def detect_luminance(
    pixels: Mapping[int, int],
    *,
    num_classes: int | None = None,
    ignore: Sequence[int] = (),
    colormaps: Sequence[str] = DETECTED,
) -> LuminanceMatch | None:
    """Whether the values of a dataset (value -> pixels) are class colours read as grey.

    They are when every value that is not an ``ignore`` value is the luminance (one method for
    all) of a class colour of one colormap, and at least two of them are no class id (not
    below ``num_classes``; without it, not an id of the colormap's classes). A dataset of real
    ids fails the first test (VOC's 1 is no luminance, nor is 255), and a set of luminances
    that happen to be ids fails the second.

    >>> detect_luminance({0: 900, 52: 40, 147: 60, 220: 30}, num_classes=21).option
    'voc'
    >>> detect_luminance({0: 900, 5: 40, 15: 60, 255: 30}, num_classes=21) is None
    True
    """
    values = sorted(v for v, n in pixels.items() if n and v not in ignore)
    if not values or values[-1] > 255 or values[0] < 0:
        return None
    for name in colormaps:
        colormap = _colormap(name)
        void = tuple(v for v in (255,) if num_classes is None or v >= num_classes)
        colours = class_colours(colormap, num_classes=num_classes, void=void)
        ids = {cid for cid, _, _ in colours}
        for method in METHODS:
            table = luminance_table(colours, method)
            if not all(v in table for v in values):
                continue
            if num_classes is not None:
                foreign = [v for v in values if v and not 0 <= v < num_classes]
            else:
                foreign = [v for v in values if v and v not in ids]
            if len(foreign) < 2:
                continue
            return LuminanceMatch(
                colormap=colormap.name,
                method=method,
                values=tuple((v, table[v], int(pixels[v])) for v in values),
                names={cid: n for cid, n, _ in colours},
            )
    return None
