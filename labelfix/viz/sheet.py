"""Masks as pictures: class colours, void hatched, problem pixels in one highlight colour,
optionally over their images; contact sheets of such thumbnails with a legend.

Two steps, so that masks can be read in worker processes before the colours are known:
:func:`prepare_mask` reduces a mask (and its image) to thumbnail-sized arrays and
full-resolution pixel counts, :func:`colourise` paints it; :func:`render_mask` does both.
Thumbnails are resampled by nearest neighbour only (labels are never interpolated): made
smaller to fit ``max_size``, or larger by repeating pixels with ``zoom``. A thumbnail pixel is a
problem pixel when any mask pixel it covers is one, so a single bad pixel stays visible in a
small thumbnail.

>>> from labelfix.viz.colours import class_colours
>>> labels = np.array([[0, 0, 255], [1, 37, 255]], np.uint8)
>>> opts = ShowOptions(ignore=(255,), num_classes=21)
>>> shown = render_mask(labels, colours=class_colours(values=[0, 1]), options=opts)
>>> shown.pixels[1, 1].tolist(), shown.pixels[0, 0].tolist(), shown.problem_pixels
([255, 0, 255], [31, 119, 180], 1)
>>> legend = legend_entries([shown], colours=class_colours(values=[0, 1]), options=opts)
>>> [e.label for e in legend]
['class 0', 'class 1', 'void (255)', 'problem: not a class id']
>>> contact_sheet([shown], legend=legend, options=opts).mode       # a PIL image
'RGB'
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from labelfix.checks.artifacts import stray_mask
from labelfix.checks.rules import is_valid
from labelfix.io.masks import value_counts
from labelfix.viz.colours import HATCH, ClassColours, hatch_pattern

#: Void stays at least this opaque over an image, so that its hatch reads as void.
VOID_ALPHA = 0.8
#: Default bound of a thumbnail's longer side, in pixels.
MAX_SIZE = 256


@dataclass(frozen=True)
class ShowOptions:
    """What counts as void and as a problem, and how thumbnails are drawn.

    ``ignore``: void values (hatched). ``num_classes``: with it, values outside ``0..N-1`` (and
    not void) are problem pixels; negative values always are. ``artifacts`` (needs
    ``num_classes``): stray pixels of :func:`labelfix.checks.artifacts.stray_mask` are problem
    pixels too (JPEG and resize artifacts, specks). ``alpha``: opacity of the mask over its
    image (void's at least :data:`VOID_ALPHA`). ``max_size``: a thumbnail's longer side at
    most, in pixels. ``zoom``: enlarge small masks this many times first, by repeating pixels
    (then ``max_size`` still bounds).
    """

    ignore: tuple[int, ...] = ()
    num_classes: int | None = None
    artifacts: bool = False
    alpha: float = 0.5
    max_size: int = MAX_SIZE
    zoom: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignore", tuple(int(v) for v in self.ignore))
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be 0..1, got {self.alpha}")
        if self.max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {self.max_size}")
        if self.zoom < 1:
            raise ValueError(f"zoom must be at least 1, got {self.zoom}")
        if self.artifacts and self.num_classes is None:
            raise ValueError("artifacts needs num_classes")

    @property
    def problem_text(self) -> str:
        """What a problem pixel is, for legends."""
        if self.artifacts:
            return "not a class id, or stray"
        return "not a class id" if self.num_classes is not None else "negative value"


def classify(labels: np.ndarray, *, options: ShowOptions) -> tuple[np.ndarray, np.ndarray]:
    """``(void, problem)`` boolean arrays of a label array; a pixel is at most one of them.

    >>> v, p = classify(np.array([[0, 255, 9, -1]]), options=ShowOptions(ignore=(255,),
    ...                                                                 num_classes=5))
    >>> v.tolist(), p.tolist()
    ([[False, True, False, False]], [[False, False, True, True]])
    """
    void = np.isin(labels, options.ignore)
    if options.num_classes is not None:  # the one rule of every command
        problem = ~is_valid(labels, options.num_classes, options.ignore)
    else:
        problem = (labels < 0) & ~void
    if options.artifacts:
        problem |= stray_mask(labels, num_classes=options.num_classes, ignore=options.ignore)
    return void & ~problem, problem


def thumbnail_size(height: int, width: int, max_size: int, zoom: int = 1) -> tuple[int, int]:
    """``(h, w)`` of a thumbnail: the mask's size times ``zoom``, shrunk to fit ``max_size``.

    >>> thumbnail_size(120, 160, 256), thumbnail_size(1024, 2048, 256), thumbnail_size(9, 5, 99, 2)
    ((120, 160), (128, 256), (18, 10))
    """
    scale = min(float(zoom), max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _nearest_index(size: int, small: int) -> np.ndarray:
    """The source index sampled for each of ``small`` output pixels (pixel centres)."""
    return np.minimum(((np.arange(small) + 0.5) * size / small).astype(np.intp), size - 1)


def _any_reduce(flags: np.ndarray, small: tuple[int, int]) -> np.ndarray:
    """True where any source pixel of an output pixel's block is True."""
    h, w = small
    height, width = flags.shape
    rows = (np.arange(h) * height) // h
    cols = (np.arange(w) * width) // w
    reduced = np.maximum.reduceat(flags.view(np.uint8), rows, axis=0)
    return np.maximum.reduceat(reduced, cols, axis=1).astype(bool)


@dataclass(frozen=True)
class PreparedMask:
    """A mask reduced to what its thumbnail needs (arrays of the thumbnail's size) and to
    full-resolution pixel counts: per class drawn in its colour, void and problem pixels."""

    name: str
    shape: tuple[int, int]
    labels: np.ndarray
    void: np.ndarray
    problem: np.ndarray
    image: np.ndarray | None
    class_pixels: tuple[tuple[int, int], ...]
    void_pixels: int
    problem_pixels: int
    kind: str | None = None
    note: str | None = None


def prepare_mask(
    labels: np.ndarray,
    *,
    options: ShowOptions = ShowOptions(),
    image: np.ndarray | Image.Image | None = None,
    name: str = "",
    kind: str | None = None,
    note: str | None = None,
) -> PreparedMask:
    """Reduce ``labels`` ``[H, W]`` (and its ``image``, ``[H, W, 3]``, the same size) to a
    :class:`PreparedMask`. The image may be resampled smoothly; the labels never are."""
    if labels.ndim != 2:
        raise ValueError(f"expected [H, W] labels, got shape {labels.shape}")
    height, width = labels.shape
    void, problem = classify(labels, options=options)
    small = thumbnail_size(height, width, options.max_size, options.zoom)
    rows, cols = _nearest_index(height, small[0]), _nearest_index(width, small[1])
    kept = ~(void | problem)
    values, counts = value_counts(labels[kept].reshape(1, -1)) if kept.any() else ((), ())
    if image is not None:
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        if (pil.height, pil.width) != (height, width):
            raise ValueError(f"image is {pil.width}x{pil.height}, the mask {width}x{height}")
        pil = pil.convert("RGB")
        if (pil.height, pil.width) != small:
            pil = pil.resize((small[1], small[0]), Image.Resampling.BOX)
        image = np.asarray(pil)
    return PreparedMask(
        name=name,
        shape=(height, width),
        labels=labels[rows][:, cols],
        void=void[rows][:, cols],
        problem=_any_reduce(problem, small),
        image=image,
        class_pixels=tuple(
            (int(v), int(c)) for v, c in zip(np.asarray(values), np.asarray(counts), strict=True)
        ),
        void_pixels=int(void.sum()),
        problem_pixels=int(problem.sum()),
        kind=kind,
        note=note,
    )


@dataclass(frozen=True)
class RenderedMask:
    """A thumbnail (``pixels``, ``[h, w, 3]`` uint8) and what it shows."""

    prepared: PreparedMask
    pixels: np.ndarray
    highlight: tuple[int, int, int]

    @property
    def name(self) -> str:
        return self.prepared.name

    @property
    def problem_pixels(self) -> int:
        return self.prepared.problem_pixels

    @property
    def void_pixels(self) -> int:
        return self.prepared.void_pixels

    @property
    def class_pixels(self) -> dict[int, int]:
        return dict(self.prepared.class_pixels)

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels, "RGB")


def colourise(prepared: PreparedMask, *, colours: ClassColours, alpha: float = 0.5) -> RenderedMask:
    """Paint a prepared mask: class colours and hatched void, blended over its image (when it
    has one) at opacity ``alpha`` (void at least :data:`VOID_ALPHA`, so that it stays hatched
    over any image); problem pixels in ``colours.highlight``, always opaque."""
    h, w = prepared.labels.shape
    rgb = colours.lookup(prepared.labels)
    rgb[prepared.void] = hatch_pattern(h, w)[prepared.void]
    if prepared.image is not None:
        opacity = np.where(prepared.void, max(alpha, VOID_ALPHA), alpha)[..., None]
        blend = opacity * rgb + (1.0 - opacity) * prepared.image.astype(np.float32)
        rgb = np.rint(blend).astype(np.uint8)
    rgb[prepared.problem] = colours.highlight
    return RenderedMask(prepared=prepared, pixels=rgb, highlight=colours.highlight)


def render_mask(
    labels: np.ndarray,
    *,
    colours: ClassColours,
    options: ShowOptions = ShowOptions(),
    image: np.ndarray | Image.Image | None = None,
    name: str = "",
) -> RenderedMask:
    """One mask's thumbnail: :func:`prepare_mask` then :func:`colourise`."""
    prepared = prepare_mask(labels, options=options, image=image, name=name)
    return colourise(prepared, colours=colours, alpha=options.alpha)


# ----------------------------------------------------------------------------- legend


#: The most classes a legend lists (those with the most pixels), then one "and N more" line:
#: masks of thousands of values (16-bit ids, noise) made a legend 300,000 px tall.
MAX_LEGEND_CLASSES = 64


@dataclass(frozen=True)
class LegendEntry:
    """One line of a legend: ``kind`` is ``class``, ``more`` (the classes left out), ``void``
    or ``problem``."""

    kind: str
    label: str
    colour: tuple[int, int, int]
    value: int | None = None
    pixels: int = 0


def legend_entries(
    shown: Sequence[RenderedMask | PreparedMask],
    *,
    colours: ClassColours,
    options: ShowOptions = ShowOptions(),
) -> tuple[LegendEntry, ...]:
    """The classes drawn in ``shown`` (ascending id, with their pixel totals), then void (with
    ``--ignore``) and problem. Only classes with a pixel drawn in their colour are listed; of more
    than :data:`MAX_LEGEND_CLASSES`, those with the most pixels, then a ``more`` entry counting
    the others."""
    totals: dict[int, int] = {}
    void = problem = 0
    for item in shown:
        prepared = item.prepared if isinstance(item, RenderedMask) else item
        for v, c in prepared.class_pixels:
            totals[v] = totals.get(v, 0) + c
        void += prepared.void_pixels
        problem += prepared.problem_pixels
    listed = sorted(totals)
    if len(listed) > MAX_LEGEND_CLASSES:
        listed = sorted(sorted(totals, key=lambda v: (-totals[v], v))[:MAX_LEGEND_CLASSES])
    entries = []
    for v in listed:
        name = colours.name(v)
        label = name if name == f"class {v}" else f"{v} {name}"
        entries.append(LegendEntry("class", label, colours.colour(v), v, totals[v]))
    if len(listed) < len(totals):
        left, pixels = (
            len(totals) - len(listed),
            sum(totals.values()) - sum(e.pixels for e in entries),
        )
        label = f"and {left:,} more classes ({pixels:,} px)"
        entries.append(LegendEntry("more", label, BACKGROUND, None, pixels))
    if options.ignore:  # without --ignore no pixel is void: no void entry
        ignore = ", ".join(map(str, options.ignore))
        entries.append(LegendEntry("void", f"void ({ignore})", HATCH[0], None, void))
    problem_label = f"problem: {options.problem_text}"
    entries.append(LegendEntry("problem", problem_label, colours.highlight, None, problem))
    return tuple(entries)


# ----------------------------------------------------------------------------- sheets

PAD = 12
CAPTION_SIZE = 14
LEGEND_SIZE = 16
SWATCH = 16
BACKGROUND = (255, 255, 255)
TEXT = (25, 25, 25)
MUTED = (110, 110, 110)
ALERT = (190, 0, 60)
FRAME = (170, 170, 170)
#: Problem pixels are ringed (radius MARK_RADIUS) when they fall in at most MAX_MARKS cells of
#: MARK_CELL x MARK_CELL thumbnail pixels.
MARK_RADIUS, MARK_CELL, MAX_MARKS = 7, 12, 24
#: Captions need room even under tiny thumbnails.
MIN_CELL_WIDTH = 150


@functools.lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at ``size`` px (its fixed bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, width: float, typeface) -> str:
    """``text``, cut in the middle with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=typeface) <= width:
        return text
    keep = len(text)
    while keep > 4:
        keep -= 1
        head = (keep + 1) // 2
        short = text[:head] + "…" + text[len(text) - (keep - head) :]
        if draw.textlength(short, font=typeface) <= width:
            return short
    return text[:3] + "…"


def caption_lines(item: RenderedMask, *, options: ShowOptions) -> tuple[str, str]:
    """The name, and what is wrong or notable (problem pixels, void share, notes)."""
    prepared = item.prepared
    pixels = prepared.shape[0] * prepared.shape[1]
    parts = []
    if prepared.problem_pixels:
        parts.append(f"{prepared.problem_pixels:,} problem px")
    if options.ignore:
        parts.append(f"void {100 * prepared.void_pixels / pixels:.1f}%")
    if prepared.note:
        parts.append(prepared.note)
    return prepared.name, " · ".join(parts)


def contact_sheet(
    shown: Sequence[RenderedMask],
    *,
    legend: Sequence[LegendEntry] = (),
    options: ShowOptions = ShowOptions(),
    columns: int | None = None,
    title: str | None = None,
) -> Image.Image:
    """A grid of thumbnails with their captions, and the legend to the right.

    ``columns`` defaults to about the square root of the number of thumbnails (at most 8).
    """
    if not shown:
        raise ValueError("a contact sheet needs at least one mask")
    n = len(shown)
    columns = max(1, min(columns or min(8, math.ceil(math.sqrt(n))), n))
    rows = math.ceil(n / columns)
    caption_font, legend_font = font(CAPTION_SIZE), font(LEGEND_SIZE)
    line = CAPTION_SIZE + 4
    thumb_w = max(item.pixels.shape[1] for item in shown)
    thumb_h = max(item.pixels.shape[0] for item in shown)
    cell_w, cell_h = max(thumb_w, MIN_CELL_WIDTH) + 2, thumb_h + 2 + 4 + 2 * line
    top = PAD + (LEGEND_SIZE + 10 if title else 0)
    grid_w = PAD + columns * (cell_w + PAD)
    grid_h = top + rows * (cell_h + PAD)

    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    legend_w = 0
    if legend:
        label_w = max(scratch.textlength(entry.label, font=legend_font) for entry in legend)
        legend_w = int(SWATCH + 8 + label_w) + 2 * PAD
    legend_h = PAD + (LEGEND_SIZE + 8) * (len(legend) + 1) + PAD if legend else 0
    sheet = Image.new("RGB", (grid_w + legend_w, max(grid_h, top + legend_h)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text(
            (PAD, PAD), _fit(draw, title, sheet.width - 2 * PAD, legend_font), TEXT, legend_font
        )

    for i, item in enumerate(shown):
        x = PAD + (i % columns) * (cell_w + PAD)
        y = top + (i // columns) * (cell_h + PAD)
        h, w = item.pixels.shape[:2]
        draw.rectangle((x, y, x + w + 1, y + h + 1), outline=FRAME)
        sheet.paste(item.image, (x + 1, y + 1))
        name, detail = caption_lines(item, options=options)
        ty = y + thumb_h + 2 + 4
        draw.text((x, ty), _fit(draw, name, cell_w, caption_font), TEXT, caption_font)
        colour = ALERT if item.problem_pixels else MUTED
        draw.text((x, ty + line), _fit(draw, detail, cell_w, caption_font), colour, caption_font)
        for my, mx in problem_marks(item.prepared.problem):
            r = MARK_RADIUS
            draw.ellipse(
                (x + 1 + mx - r, y + 1 + my - r, x + 1 + mx + r, y + 1 + my + r),
                outline=item.highlight,
                width=2,
            )

    if legend:
        _draw_legend(draw, sheet, legend, x=grid_w + PAD, y=top, typeface=legend_font)
    return sheet


def problem_marks(problem: np.ndarray) -> list[tuple[int, int]]:
    """Where to ring a thumbnail's problem pixels so that a few stray pixels catch the eye:
    one ``(y, x)`` per MARK_CELL-pixel cell holding any, none when more than MAX_MARKS cells do
    (then the highlight shows by itself).

    >>> p = np.zeros((40, 40), bool); p[3, 4] = p[4, 4] = p[30, 31] = True
    >>> problem_marks(p)
    [(3, 4), (30, 31)]
    """
    ys, xs = np.nonzero(problem)
    cells: dict[tuple[int, int], tuple[int, int]] = {}
    for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
        cells.setdefault((y // MARK_CELL, x // MARK_CELL), (y, x))
        if len(cells) > MAX_MARKS:
            return []
    return list(cells.values())


def _draw_legend(draw, sheet: Image.Image, legend: Sequence[LegendEntry], *, x, y, typeface):
    step = LEGEND_SIZE + 8
    draw.text((x, y), "Legend", TEXT, typeface)
    for k, entry in enumerate(legend, start=1):
        ey = y + k * step
        box = (x, ey, x + SWATCH - 1, ey + SWATCH - 1)
        if entry.kind == "more":  # no colour of its own
            draw.text((x + SWATCH + 8, ey), entry.label, MUTED, typeface)
            continue
        if entry.kind == "void":
            sheet.paste(Image.fromarray(hatch_pattern(SWATCH, SWATCH), "RGB"), box[:2])
        else:
            draw.rectangle(box, fill=entry.colour)
        draw.rectangle(box, outline=FRAME)
        colour = ALERT if entry.kind == "problem" and entry.pixels else TEXT
        draw.text((x + SWATCH + 8, ey), entry.label, colour, typeface)


def png_bytes(picture: Image.Image) -> bytes:
    """A picture encoded as PNG (for :func:`labelfix.io.atomic.write_atomic`)."""
    buf = io.BytesIO()
    picture.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
