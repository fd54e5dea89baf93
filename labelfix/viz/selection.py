"""Which masks a picture shows, and reading them, on every core.

Two passes over the chosen files, each in worker processes: :func:`plan_show` surveys them (the
classes each one shows, its problem and void pixels, its palette), picks the worst when asked
and fixes the colours of the whole picture; :func:`render_plan` then reads each mask again with
its image and yields its thumbnail, so a run of many masks never holds more than their counts.

On a dataset of your own::

    plan = plan_show(["masks/"], options=ShowOptions(ignore=(255,), num_classes=21), worst=8)
    [s.relpath for s in plan.surveys][:2], plan.colours.source
    # -> (['train/0007.png', 'train/0002.png'], 'palette')
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from labelfix.errors import UnreadableMask, UsageError
from labelfix.io import fs
from labelfix.io.images import ORIENTATIONS, displayed_size, exif_orientation
from labelfix.io.masks import Mask, iter_mask_files, value_counts
from labelfix.io.pairing import CONVENTIONS, AmbiguousImage, Naming, find_image, looked_for
from labelfix.io.png import PNG_SIGNATURE, scan_png, without_text_chunks
from labelfix.labels.colormap import ColourPolicy, read_label_mask
from labelfix.parallel import ordered_map
from labelfix.viz.colours import ClassColours, class_colours
from labelfix.viz.sheet import PreparedMask, RenderedMask, ShowOptions, classify, colourise
from labelfix.viz.sheet import prepare_mask as _prepare

_PRELOAD = ("labelfix.viz.selection",)


def read_labels(path: str, *, colours: ColourPolicy | None = None) -> tuple[np.ndarray, Mask]:
    """A mask's class ids and the decoded :class:`~labelfix.io.masks.Mask`.

    Like every command (:func:`~labelfix.labels.colormap.read_label_mask`), except that a grey
    JPEG mask is shown as it is: its artifacts are what one wants to see (as ``repair`` does).
    Raises UnreadableMask (NotALabelMask for colour masks without a colormap).
    """
    mask = read_label_mask(path, colours=colours)
    return mask.labels_or_grey_jpeg(), mask


@dataclass(frozen=True)
class MaskSurvey:
    """What the first pass learns of one mask; ``error`` is set when it cannot be shown."""

    path: str
    relpath: str
    kind: str | None = None
    problem_pixels: int = 0
    void_pixels: int = 0
    #: class ids drawn in their colour (neither void nor problem), ascending
    classes: tuple[int, ...] = ()
    palette: bytes | None = None
    error: str | None = None


def survey_file(
    item: tuple[str, str], *, options: ShowOptions, colours: ColourPolicy | None = None
) -> MaskSurvey:
    """Survey one mask file; never raises for a bad file (see ``MaskSurvey.error``)."""
    path, relpath = item
    try:
        labels, mask = read_labels(path, colours=colours)
    except UnreadableMask as err:
        return MaskSurvey(path, relpath, error=err.reason)
    except MemoryError:
        return MaskSurvey(path, relpath, error="out of memory while decoding")
    void, problem = classify(labels, options=options)
    kept = ~(void | problem)
    classes = value_counts(labels[kept].reshape(1, -1))[0] if kept.any() else ()
    return MaskSurvey(
        path=path,
        relpath=relpath,
        kind=mask.kind,
        problem_pixels=int(problem.sum()),
        void_pixels=int(void.sum()),
        classes=tuple(int(v) for v in classes),
        palette=mask.palette,
    )


def worst_first(surveys: Iterable[MaskSurvey], n: int) -> list[MaskSurvey]:
    """The ``n`` masks with the most problem pixels, then the most void pixels (ties: first
    found first). Unreadable masks are not ranked.

    >>> s = [MaskSurvey("a", "a", problem_pixels=1), MaskSurvey("b", "b", void_pixels=9),
    ...      MaskSurvey("c", "c", problem_pixels=1, void_pixels=2)]
    >>> [m.path for m in worst_first(s, 3)]
    ['c', 'a', 'b']
    """
    ranked = (
        ((-s.problem_pixels, -s.void_pixels, i), s)
        for i, s in enumerate(surveys)
        if s.error is None
    )
    return [s for _, s in heapq.nsmallest(n, ranked, key=lambda pair: pair[0])]


def match_files(items: Sequence[tuple[str, str]], names: Sequence[str]) -> list[tuple[str, str]]:
    """The masks named by ``names``, in the order named: a name matches a mask's relative path,
    its file name, or either without the extension. UsageError names a name matching nothing.

    >>> items = [("m/train/0001.png", "train/0001.png"), ("m/val/0009.png", "val/0009.png")]
    >>> match_files(items, ["0009", "train/0001.png"])
    [('m/val/0009.png', 'val/0009.png'), ('m/train/0001.png', 'train/0001.png')]
    """
    chosen: dict[str, tuple[str, str]] = {}
    for name in names:
        wanted = name.replace(os.sep, "/")
        found = False
        for path, relpath in items:
            rel = relpath.replace(os.sep, "/")
            base = rel.rsplit("/", 1)[-1]
            keys = (rel, base, os.path.splitext(rel)[0], os.path.splitext(base)[0])
            if wanted in keys or path == name:
                chosen.setdefault(path, (path, relpath))
                found = True
        if not found:
            raise UsageError(f"--files {name}: no mask of that name among the {len(items)} found")
    return list(chosen.values())


@dataclass(frozen=True)
class ShowPlan:
    """The masks to show, in order, the colours of the picture and what could not be read."""

    surveys: tuple[MaskSurvey, ...]
    colours: ClassColours
    options: ShowOptions
    read: ColourPolicy | None = None
    #: ``(path, reason)`` of masks that cannot be shown
    errors: tuple[tuple[str, str], ...] = ()
    #: how many mask files were found under the paths
    found: int = 0


#: The colours' source when the masks' palettes disagree.
DIFFERENT_PALETTES = "generated (the masks' palettes differ)"


def _colours_of(palette: bytes, values: Iterable[int]) -> tuple[bytes, ...]:
    """The palette's colours of the class ids shown (what the picture would use of it)."""
    padded = bytes(palette) + bytes(max(0, 768 - len(palette)))
    return tuple(padded[3 * v : 3 * v + 3] for v in sorted(values) if 0 <= v < 256)


def plan_for(
    surveys: Sequence[MaskSurvey],
    *,
    options: ShowOptions,
    read: ColourPolicy | None = None,
    class_names: Sequence[str] | None = None,
    errors: Sequence[tuple[str, str]] = (),
    found: int | None = None,
) -> ShowPlan:
    """The plan showing ``surveys``: colours from the colormap (``read``), else the masks'
    palette, else generated (:func:`~labelfix.viz.colours.class_colours`). Masks whose
    palettes give a class shown different colours are drawn in generated colours (one per
    class id on the whole picture), and the colours' ``source`` says why."""
    values = {v for s in surveys for v in s.classes}
    palettes = {s.palette for s in surveys if s.palette is not None}
    palette = next(iter(palettes), None)
    differ = len({_colours_of(p, values) for p in palettes}) > 1
    colours = class_colours(
        values=values,
        palette=None if differ else palette,
        colormap=read.colormap if read is not None else None,
        class_names=class_names,
    )
    if differ and read is None:
        colours = dataclasses.replace(colours, source=DIFFERENT_PALETTES)
    return ShowPlan(
        surveys=tuple(surveys),
        colours=colours,
        options=options,
        read=read,
        errors=tuple(errors),
        found=len(surveys) + len(errors) if found is None else found,
    )


def plan_show(
    paths: Iterable[str | os.PathLike],
    *,
    options: ShowOptions,
    glob: str | None = None,
    files: Sequence[str] = (),
    worst: int | None = None,
    limit: int | None = None,
    read: ColourPolicy | None = None,
    class_names: Sequence[str] | None = None,
    jobs: int | None = None,
) -> ShowPlan:
    """Choose the masks under ``paths`` to show and survey them.

    ``files`` keeps the masks named (:func:`match_files`); ``worst`` then keeps the ``worst``
    with the most problem pixels (:func:`worst_first`, which surveys every candidate); else the
    first ``limit`` in path order are shown. ``read`` turns colour masks into class ids.
    """
    items = list(iter_mask_files(list(paths), glob=glob))
    found = len(items)
    if files:
        items = match_files(items, files)
    if worst is None and limit is not None:
        items = items[:limit]
    survey = functools.partial(survey_file, options=options, colours=read)
    surveys = list(ordered_map(survey, items, jobs=jobs, preload=_PRELOAD))
    errors = [(s.path, s.error) for s in surveys if s.error is not None]
    chosen = [s for s in surveys if s.error is None]
    if worst is not None:
        chosen = worst_first(chosen, worst)
    return plan_for(
        chosen, options=options, read=read, class_names=class_names, errors=errors, found=found
    )


# ----------------------------------------------------------------------------- second pass


def load_image(
    images: str | os.PathLike,
    relpath: str,
    shape: tuple[int, int],
    *,
    naming: Naming = CONVENTIONS,
    mask: str | None = None,
) -> tuple[Image.Image | None, str | None]:
    """The image of a mask (found as ``validate --images`` finds it, by ``naming``; never the
    file ``mask`` itself) as RGB, as TensorFlow reads it: the stored pixels, whatever its EXIF
    orientation. ``(image, note)``: the note says why there is no image (none, several,
    unreadable, another size) or that EXIF turns it for viewers (then the image is drawn all
    the same)."""
    try:
        path = find_image(images, relpath, naming=naming, mask=mask)
    except AmbiguousImage as err:
        return None, f"{len(err.images)} images match it: {', '.join(err.images)}"
    if path is None:
        looked = looked_for(relpath, naming)
        return None, f"no image under {os.fspath(images)} (looked for {looked})"
    name = fs.basename(path)
    try:
        data = fs.read_bytes(path)
        if data[:8] == PNG_SIGNATURE:
            scan = scan_png(data)
            if scan.problem is not None:  # Pillow would read it, rows of zeros and all
                return None, f"image {name} unreadable ({scan.problem})"
            data = without_text_chunks(data)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            picture = im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None, f"image {name} unreadable"
    orientation = exif_orientation(data)
    stored = picture.height, picture.width
    if stored != shape:
        shown = displayed_size(*stored, orientation)
        why = ""
        if orientation != 1 and shown == shape:
            why = (
                f": EXIF orientation {orientation} displays it as {shown[1]}x{shown[0]}, the "
                "mask's size, but TensorFlow reads it as stored"
            )
        return None, f"image {picture.width}x{picture.height} != mask {shape[1]}x{shape[0]}{why}"
    if orientation != 1:
        shown = ORIENTATIONS[orientation]
        return picture, (
            f"image drawn as stored, as TensorFlow reads it; EXIF orientation {orientation} "
            f"makes viewers show it {shown}"
        )
    return picture, None


def prepare_file(
    item: tuple[str, str],
    *,
    options: ShowOptions,
    images: str | None = None,
    read: ColourPolicy | None = None,
    naming: Naming = CONVENTIONS,
) -> PreparedMask | tuple[str, str]:
    """Read one mask (and its image, found by ``naming``) and prepare its thumbnail;
    ``(path, reason)`` when the mask cannot be read."""
    path, relpath = item
    try:
        labels, mask = read_labels(path, colours=read)
    except UnreadableMask as err:
        return path, err.reason
    image, note = None, None
    if images is not None:
        image, note = load_image(images, relpath, labels.shape, naming=naming, mask=path)
    return _prepare(labels, options=options, image=image, name=relpath, kind=mask.kind, note=note)


def render_plan(
    plan: ShowPlan,
    *,
    images: str | os.PathLike | None = None,
    jobs: int | None = None,
    naming: Naming = CONVENTIONS,
) -> Iterator[RenderedMask | tuple[str, str]]:
    """Yield each planned mask's thumbnail in plan order (``(path, reason)`` for a mask that
    became unreadable since the survey). ``images``: overlay each mask on its image, found by
    ``naming``."""
    prepare = functools.partial(
        prepare_file,
        options=plan.options,
        images=os.fspath(images) if images is not None else None,
        read=plan.read,
        naming=naming,
    )
    items = [(s.path, s.relpath) for s in plan.surveys]
    for prepared in ordered_map(prepare, items, jobs=jobs, preload=_PRELOAD):
        if isinstance(prepared, tuple):
            yield prepared
        else:
            yield colourise(prepared, colours=plan.colours, alpha=plan.options.alpha)
