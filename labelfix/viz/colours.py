"""Colours for pictures of masks: one colour per class id, a hatch for void, a highlight for
problem pixels that is never a class colour.

Where class colours come from, first match wins: a colormap (``--colormap voc``, or a file), the
dataset's own palette (a palette PNG's), else a generated palette: matplotlib's tab20 colours
for ids 0..19, then golden-ratio hues. Every source is deterministic: the same masks give the
same picture.

>>> from labelfix.labels.presets import voc_palette
>>> c = class_colours(values=[0, 1, 15], palette=voc_palette(), class_names=("bg", "plane"))
>>> c.colour(15), c.name(1), c.name(15), c.highlight
((192, 128, 128), 'plane', 'class 15', (255, 0, 255))
>>> generated_colour(0), generated_colour(1)
((31, 119, 180), (255, 127, 14))
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from labelfix.labels.colormap import Colormap

RGB = tuple[int, int, int]

#: matplotlib's tab10 then its light tab20 partners: ids 0..19 of the generated palette.
TAB20: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)  # fmt: skip

#: Problem pixels get the first of these that is far from every class colour in the picture.
HIGHLIGHTS: tuple[RGB, ...] = ((255, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0))
#: How far (RGB distance) the highlight must be from every class colour shown: magenta is 142
#: from VOC's class 13 (horse, (192, 0, 128)), which reads as the same purple.
HIGHLIGHT_DISTANCE = 150.0

#: Void is hatched: diagonal stripes of these two colours (dark, light), HATCH_WIDTH px wide.
HATCH: tuple[RGB, RGB] = ((48, 48, 48), (216, 216, 216))
HATCH_WIDTH = 3


def generated_colour(value: int) -> RGB:
    """The generated palette's colour for a class id: tab20 for 0..19, then golden-ratio hues.

    >>> generated_colour(20) != generated_colour(21)
    True
    """
    value = int(value)
    if 0 <= value < len(TAB20):
        return TAB20[value]
    k = abs(value) + (7 if value < 0 else 0)
    hue = (k * 0.6180339887) % 1.0
    saturation = 0.85 if (k // 5) % 2 else 0.55
    brightness = 0.9 if (k // 3) % 2 else 0.7
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, brightness)
    return round(255 * r), round(255 * g), round(255 * b)


def hatch_pattern(height: int, width: int) -> np.ndarray:
    """``[height, width, 3]`` uint8 diagonal stripes of the two :data:`HATCH` colours.

    >>> hatch_pattern(1, 4)[0].tolist()
    [[48, 48, 48], [48, 48, 48], [48, 48, 48], [216, 216, 216]]
    """
    yy, xx = np.indices((height, width))
    stripe = ((xx + yy) // HATCH_WIDTH) % 2
    return np.asarray(HATCH, np.uint8)[stripe]


def pick_highlight(colours: Iterable[RGB]) -> RGB:
    """The first of :data:`HIGHLIGHTS` at least :data:`HIGHLIGHT_DISTANCE` from every colour
    (else the one farthest from its nearest colour).

    >>> pick_highlight([(0, 0, 0)]), pick_highlight([(250, 5, 250)])
    ((255, 0, 255), (0, 255, 255))
    """
    used = np.asarray(list(colours), np.float64).reshape(-1, 3)
    if not len(used):
        return HIGHLIGHTS[0]
    best, best_distance = HIGHLIGHTS[0], -1.0
    for candidate in HIGHLIGHTS:
        distance = float(np.sqrt(((used - candidate) ** 2).sum(axis=1)).min())
        if distance >= HIGHLIGHT_DISTANCE:
            return candidate
        if distance > best_distance:
            best, best_distance = candidate, distance
    return best


@dataclass(frozen=True)
class ClassColours:
    """Class id -> colour and name, and the highlight colour for problem pixels.

    ``table`` holds the colours a colormap or palette gives (``(id, (r, g, b))`` pairs); other
    ids get :func:`generated_colour`. ``names`` (``(id, name)`` pairs) default to ``class K``.
    ``source`` says where the colours came from (``colormap voc``, ``palette``, ``generated``).
    """

    table: tuple[tuple[int, RGB], ...] = ()
    names: tuple[tuple[int, str], ...] = ()
    source: str = "generated"
    highlight: RGB = HIGHLIGHTS[0]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_table", dict(self.table))
        object.__setattr__(self, "_names", dict(self.names))

    def colour(self, value: int) -> RGB:
        found = self._table.get(int(value))
        return found if found is not None else generated_colour(value)

    def name(self, value: int) -> str:
        return self._names.get(int(value)) or f"class {int(value)}"

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """``[..., 3]`` uint8 colours of an integer array (one lookup per distinct value)."""
        distinct, inverse = np.unique(values, return_inverse=True)
        lut = np.asarray([self.colour(v) for v in distinct.tolist()], np.uint8).reshape(-1, 3)
        return lut[inverse.reshape(values.shape)]


def class_colours(
    *,
    values: Iterable[int] = (),
    palette: bytes | None = None,
    colormap: Colormap | None = None,
    class_names: Sequence[str] | None = None,
) -> ClassColours:
    """The colours of a picture showing the class ids ``values``.

    ``colormap`` (its first colour per id) wins over ``palette`` (768 RGB bytes of a palette
    PNG); without either, colours are generated. Palettes of tools that fill unused entries with
    black would give two classes one colour: a class whose palette colour an earlier class shown
    already has gets its generated colour instead. Names come from ``class_names`` (index = id),
    else the colormap's, else ``class K``. The highlight is :func:`pick_highlight` of the
    classes' colours.
    """
    values = sorted({int(v) for v in values})
    table: dict[int, RGB] = {}
    source = "generated"
    names: dict[int, str] = {}
    if colormap is not None:
        source = f"colormap {colormap.name}"
        for i, cid in enumerate(colormap.ids):
            table.setdefault(int(cid), tuple(int(c) for c in colormap.colours[i]))
            if colormap.names:
                names.setdefault(int(cid), colormap.names[i])
    elif palette is not None:
        source = "palette"
        pal = bytes(palette) + bytes(max(0, 768 - len(palette)))
        taken: set[RGB] = set()
        for v in values:
            if 0 <= v < 256:
                colour = (pal[3 * v], pal[3 * v + 1], pal[3 * v + 2])
                table[v] = colour if colour not in taken else generated_colour(v)
                taken.add(table[v])
    if class_names is not None:
        names = dict(enumerate(class_names))
    provisional = ClassColours(table=tuple(sorted(table.items())))
    highlight = pick_highlight(provisional.colour(v) for v in values)
    return ClassColours(
        table=tuple(sorted(table.items())),
        names=tuple(sorted(names.items())),
        source=source,
        highlight=highlight,
    )
