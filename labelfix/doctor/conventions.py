"""From sampled :class:`~labelfix.doctor.sample.MaskFacts` and the folder layout to conclusions:
the void value, the classes, the storage, the palette or colormap, lossy masks, names, and
the problems to fix, each with its evidence and how sure it is.

The values decide the void value (:func:`labelfix.checks.void.guess_void`); the layout's
conventions (Cityscapes' ``_labelTrainIds``, ADE20K's folders, VOC's ``SegmentationClass``)
confirm or settle what the values leave open.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from labelfix.checks.void import ADE20K_TOP, Reading, ValueTotals, VoidGuess, guess_void
from labelfix.doctor.layout import Layout, convention_name
from labelfix.doctor.report import Conclusion, Problem
from labelfix.doctor.sample import MaskFacts
from labelfix.labels.presets import voc_palette

#: Files named in a problem before the rest are counted.
SHOWN = 3


@dataclass(frozen=True)
class Findings:
    """What the facts say: one reading of the values (two when undecided), and the rest."""

    convention: str
    guess: VoidGuess
    conclusions: tuple[Conclusion, ...]
    problems: tuple[Problem, ...]
    names: tuple[str, ...] | None = None
    names_file: str | None = None
    colormap: str | None = None
    repair: bool = False
    exif: str | None = None
    crop: tuple[int, int] = (512, 512)


def _files(facts: Sequence[MaskFacts]) -> tuple[str, ...]:
    return tuple(f.path for f in facts[:SHOWN])


def _some(facts: Sequence[MaskFacts]) -> str:
    names = ", ".join(f.relpath for f in facts[:SHOWN])
    return names + (f" and {len(facts) - SHOWN} more" if len(facts) > SHOWN else "")


def _region_values(f: MaskFacts) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The values of a mask; of a lossy one, only those holding regions (1% of it or more, not
    specks): the rest is noise that ``repair`` mends."""
    if f.kind != "jpeg" and f.lossy is None:
        return f.values, f.counts
    kept = [(v, c) for v, c in zip(f.values, f.counts, strict=True) if v in f.regions]
    return tuple(v for v, _ in kept), tuple(c for _, c in kept)


def conclude(
    layout: Layout,
    facts: Sequence[MaskFacts],
    *,
    mask_suffix: str = "",
    left_out: Sequence[str] = (),
    names: tuple[str, ...] | None = None,
) -> Findings:
    """The :class:`Findings` of the sampled masks of ``layout`` paired by ``mask_suffix``;
    ``left_out`` are the pairing's notes (masks it left out), ``names`` the names file's."""
    readable = [f for f in facts if f.error is None]
    labels = [f for f in readable if f.is_label and not f.instance_ids]
    totals = ValueTotals()
    for f in labels:
        values, counts = _region_values(f)
        shapes = [s for s in f.shapes if s.value in values]
        totals.add(values, counts, shapes)
    guess = _with_layout(layout, guess_void(totals), totals, mask_suffix)
    if layout.convention == "voc" and _voc_values(guess, totals, readable):
        guess = VoidGuess(
            (
                Reading(
                    "Pascal VOC: 21 classes, 255 void", ignore=(255,), num_classes=21, preset="voc"
                ),
            ),
            "high",
            "Pascal VOC: classes 0..20 with VOC's names, 255 is void (the voc preset)",
            (*guess.evidence, "VOC's folders, palette and value range"),
        )
    conclusions = [_storage(readable)]
    problems: list[Problem] = []
    conclusions.append(_void_conclusion(guess))
    palette = _palette(readable)
    if palette is not None:
        conclusions.append(palette)
    colormap, colour = _colours(readable, problems)
    if colour is not None:
        conclusions.append(colour)
    instances = _instances(facts, left_out, problems)
    if instances is not None:
        conclusions.append(instances)
    repair = _lossy(readable, conclusions, problems)
    names, names_file = _names(layout, guess, names, conclusions, problems)
    guess = _with_names(guess, names)
    conclusions.append(_classes(guess, totals, names, len(labels), layout))
    exif = _images(readable, conclusions, problems)
    _unreadable(facts, problems)
    _mixed(labels, readable, problems)
    return Findings(
        convention=layout.convention,
        guess=guess,
        conclusions=tuple(conclusions),
        problems=tuple(problems),
        names=names,
        names_file=names_file,
        colormap=colormap,
        repair=repair,
        exif=exif,
        crop=_crop(readable),
    )


def _with_layout(layout: Layout, guess: VoidGuess, totals: ValueTotals, suffix: str) -> VoidGuess:
    """The values' guess, settled or confirmed by what the layout and names say."""
    values = {v for v, p in totals.pixels.items() if p}
    if layout.convention == "cityscapes" or "_gtFine_" in suffix or "_gtCoarse_" in suffix:
        if suffix.endswith("_labelIds") or (
            not suffix.endswith("TrainIds") and values and max(values - {255}, default=0) > 18
        ):
            reading = Reading(
                "Cityscapes labelIds: the cityscapes preset maps them to the 19 trainIds, every "
                "other id to void 255",
                ignore=(255,),
                num_classes=19,
                preset="cityscapes",
            )
            return VoidGuess(
                (reading,),
                "high" if suffix.endswith("_labelIds") else "medium",
                "Cityscapes labelIds (ids 0..33): map them with --preset cityscapes",
                (
                    f"masks named *{suffix}" if suffix else "Cityscapes folders",
                    f"values {_short(values)}",
                ),
            )
        if values <= set(range(19)) | {255}:
            return VoidGuess(
                (Reading("Cityscapes trainIds: 255 is void", ignore=(255,), num_classes=19),),
                "high",
                "Cityscapes trainIds: 19 classes (0..18), 255 is void",
                (
                    f"masks named *{suffix}" if suffix else "Cityscapes folders",
                    f"values {_short(values)}",
                ),
            )
    if layout.convention == "ade20k" and guess.readings[0].preset != "ade20k":
        top = max(values, default=0)
        if 0 in values and top <= ADE20K_TOP and 255 not in values:
            reading = Reading(
                "0 is void (ADE20K's reduce-zero-label: k becomes k-1)",
                ignore=(0,),
                num_classes=ADE20K_TOP,
                preset="ade20k",
            )
            return VoidGuess(
                (reading,),
                "high",
                "0 is ADE20K's void ('other'): the ade20k preset makes it void and k -> k-1",
                (*layout.evidence[:1], f"values {_short(values)}"),
            )
    if layout.convention == "ade20k" and guess.readings[0].preset == "ade20k":
        return VoidGuess(
            guess.readings, "high", guess.summary, (*guess.evidence, *layout.evidence[:1])
        )
    if layout.convention == "voc" and guess.decided and guess.ignore == (255,):
        confidence = "high" if guess.confidence != "low" else guess.confidence
        return VoidGuess(guess.readings, confidence, guess.summary, guess.evidence)
    if layout.convention == "voc" and not guess.decided and 255 in values:
        void = next(r for r in guess.readings if r.ignore == (255,))
        return VoidGuess(
            (void,),
            "medium",
            "255 is void: the Pascal VOC convention, though here it fills regions",
            (*guess.evidence, layout.evidence[0]),
        )
    return guess


def _voc_values(guess: VoidGuess, totals: ValueTotals, facts: Sequence[MaskFacts]) -> bool:
    """Pascal VOC's own masks: void 255, ids within 0..20, VOC's palette."""
    values = {v for v, p in totals.pixels.items() if p}
    voc = voc_palette()
    palettes = [f.palette for f in facts if f.palette is not None]
    return (
        guess.ignore == (255,)
        and values <= set(range(21)) | {255}
        and bool(palettes)
        and len(palettes) == len(facts)
        and all(p[: 3 * 21] == voc[: 3 * 21] for p in palettes)
    )


def _short(values) -> str:
    values = sorted(values)
    if len(values) > 6:
        return f"{values[0]}..{values[-1]} ({len(values)} distinct)"
    return ", ".join(map(str, values))


def _void_conclusion(guess: VoidGuess) -> Conclusion:
    if not guess.decided:
        text = (
            guess.summary
            + "; both readings follow: "
            + " / ".join(r.assumption for r in guess.readings)
        )
        return Conclusion("void", text, guess.confidence, guess.evidence)
    return Conclusion("void", guess.summary, guess.confidence, guess.evidence)


def _storage(facts: Sequence[MaskFacts]) -> Conclusion:
    kinds = Counter(f.kind for f in facts)
    text = ", ".join(f"{k} ({n})" for k, n in kinds.most_common())
    return Conclusion("storage", f"masks stored as {text or 'nothing readable'}", "high")


def _palette(facts: Sequence[MaskFacts]) -> Conclusion | None:
    palettes = [f for f in facts if f.palette is not None]
    if not palettes:
        return None
    voc = voc_palette()
    kinds = Counter()
    for f in palettes:
        used = max(f.values, default=0) + 1
        kinds["voc" if f.palette[: 3 * used] == voc[: 3 * used] else f.palette[:48]] += 1
    if set(kinds) == {"voc"}:
        return Conclusion(
            "palette",
            "palette PNGs with Pascal VOC's palette (read as class ids, the colours ignored)",
            "high",
            (f"{len(palettes)} palette mask(s), every used colour VOC's",),
        )
    other = [k for k in kinds if k != "voc"]
    colours = [tuple(other[0][i : i + 3]) for i in range(0, min(len(other[0]), 12), 3)]
    distinct = len(kinds)
    return Conclusion(
        "palette",
        "palette PNGs with "
        + ("another palette" if distinct == 1 else f"{distinct} different palettes")
        + f" (first colours {', '.join(map(str, colours))}): read as class ids"
        + ("" if distinct == 1 else "; show draws them in generated colours, one per class"),
        "high",
        (f"{len(palettes)} palette mask(s)",),
    )


def _colours(facts: Sequence[MaskFacts], problems: list[Problem]) -> tuple[str | None, Conclusion]:
    colour = [f for f in facts if f.kind == "colour"]
    if not colour:
        return None, None
    fitting = set.intersection(*(set(f.colormaps) for f in colour))
    if fitting:
        name = next(n for n in ("voc", "cityscapes", "camvid11", "camvid32") if n in fitting)
        return name, Conclusion(
            "colours",
            f"colour masks: every colour is one of the {name} colormap's (--colormap {name})",
            "high" if len(fitting) == 1 else "medium",
            (
                f"{len(colour)} colour mask(s), at most {max(f.colours for f in colour)} colours "
                "each",
                "colormaps naming them all: " + ", ".join(sorted(fitting)),
            ),
        )
    unknown = [f for f in colour if not f.colormaps]
    problems.append(
        Problem(
            "colours",
            f"{len(unknown)} colour mask(s) hold colours no built-in colormap names "
            f"({_some(unknown)}): write a colormap file (id,name,r,g,b rows) and give "
            "--colormap FILE",
            _files(unknown),
        )
    )
    return None, Conclusion("colours", "colour masks in colours no built-in colormap names", "high")


def _instances(
    facts: Sequence[MaskFacts], left_out: Sequence[str], problems: list[Problem]
) -> Conclusion | None:
    inside = [f for f in facts if f.error is None and f.instance_ids]
    if inside:
        problems.append(
            Problem(
                "instances",
                f"{len(inside)} mask(s) hold instance ids (values of 1000 and more, labelId * "
                f"1000 + instance: Cityscapes instanceIds), not classes ({_some(inside)}): "
                "leave them out",
                _files(inside),
            )
        )
    notes = [n for n in left_out if "instance" in n or "colour" in n]
    if not notes and not inside:
        return None
    return Conclusion(
        "instances",
        "instance masks (Cityscapes instanceIds) and colour pictures are not semantic labels: "
        "left out",
        "high",
        tuple(notes) + ((f"{len(inside)} sampled mask(s) with ids >= 1000",) if inside else ()),
    )


def _lossy(facts: Sequence[MaskFacts], conclusions: list, problems: list[Problem]) -> bool:
    jpeg = [f for f in facts if f.kind == "jpeg"]
    lossy = [f for f in facts if f.kind != "jpeg" and f.lossy is not None]
    if not jpeg and not lossy:
        return False
    evidence = []
    if jpeg:
        evidence.append(f"{len(jpeg)} mask(s) are JPEG files ({_some(jpeg)})")
    if lossy:
        evidence.append(f"{len(lossy)} mask(s) look resized or compressed: {lossy[0].lossy}")
    conclusions.append(
        Conclusion(
            "lossy",
            "lossy masks (JPEG or resized): values that are no class sit on every edge; "
            "labelfix repair mends them first",
            "high" if jpeg else "medium",
            tuple(evidence),
        )
    )
    bad = jpeg + lossy
    problems.append(
        Problem("lossy", f"{len(bad)} lossy mask(s): run repair first ({_some(bad)})", _files(bad))
    )
    return True


def read_names(path: str) -> tuple[str, ...] | None:
    """The class names of a names file (one per line; labelme's ``__ignore__`` line is void,
    not a class; ADE20K's objectInfo150 rows give their first name), or None if unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    if os.path.basename(path).lower().startswith("objectinfo150"):
        rows = [line.split("\t") if "\t" in line else line.split(",") for line in lines[1:]]
        return tuple(r[-1].split(";")[0].strip().strip('"') for r in rows if r)
    return tuple(line for line in lines if line != "__ignore__")


def _names(
    layout, guess, names, conclusions, problems
) -> tuple[tuple[str, ...] | None, str | None]:
    """The class names from the names file, and the file when ``--class-names`` can read it
    (one name per line, as many as classes)."""
    path = layout.names_file
    if path is None or names is None:
        return None, None
    reading = guess.readings[0]
    n = reading.num_classes
    if reading.preset is not None:
        conclusions.append(
            Conclusion(
                "names",
                f"class names: the {reading.preset} preset's ({path} not needed)",
                "high",
                (f"{path} lists {len(names)} names",),
            )
        )
        return None, None
    plain = read_names(path) == tuple(_lines(path))
    if n is not None and len(names) < n:
        problems.append(
            Problem(
                "names",
                f"{path} lists {len(names)} class names, but the masks hold class ids up to "
                f"{n - 1}: names are missing",
                (path,),
            )
        )
        return names, None
    evidence = (f"{path}: {len(names)} names, first {', '.join(names[:4])}",)
    conclusions.append(Conclusion("names", f"class names from {path}", "high", evidence))
    return names, path if plain else None


def _with_names(guess: VoidGuess, names: tuple[str, ...] | None) -> VoidGuess:
    """The readings with as many classes as the names file names, when it names more than the
    ids seen (a class no sampled mask holds)."""
    if names is None:
        return guess
    readings = tuple(
        dataclasses.replace(r, num_classes=len(names))
        if r.preset is None and not r.binary and r.num_classes and len(names) > r.num_classes
        else r
        for r in guess.readings
    )
    return dataclasses.replace(guess, readings=readings)


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def _classes(guess, totals, names, files, layout) -> Conclusion:
    reading = guess.readings[0]
    n = reading.num_classes
    if reading.preset is not None:
        return Conclusion("classes", f"{n} classes (the {reading.preset} preset)", guess.confidence)
    if names is not None and n is not None and len(names) >= n:
        return Conclusion(
            "classes",
            f"{len(names)} classes (the names file; the masks hold ids up to {n - 1})",
            "high",
        )
    if n is None:
        return Conclusion("classes", "no class ids found", "low")
    seen = [v for v in totals.pixels if v not in reading.ignore and v >= 0]
    return Conclusion(
        "classes",
        f"{n} classes (0..{n - 1}: the largest id seen is {n - 1})",
        "medium",
        (
            f"{len(seen)} distinct class ids in {files} sampled mask(s); a class that no sampled "
            "mask holds would be missed: give -n yourself if you know better",
        ),
    )


def _images(facts: Sequence[MaskFacts], conclusions: list, problems: list[Problem]) -> str | None:
    """Size mismatches and EXIF orientations: problems, and the ``--exif`` policy."""
    paired = [f for f in facts if f.image is not None]
    broken = [f for f in paired if f.image_error is not None]
    if broken:
        problems.append(
            Problem(
                "image",
                f"{len(broken)} image(s) cannot be read ({broken[0].image}: "
                f"{broken[0].image_error})",
                tuple(f.image for f in broken[:SHOWN]),
            )
        )
    other = [f for f in paired if f.size_matches == "other"]
    if other:
        f = other[0]
        problems.append(
            Problem(
                "size",
                f"{len(other)} mask(s) differ in size from their image ({f.relpath}: mask "
                f"{f.width}x{f.height}, image {f.image_size[1]}x{f.image_size[0]}): to-tfrecord "
                "refuses them; resized masks need their original size back",
                _files(other),
            )
        )
    turned = [f for f in paired if f.orientation != 1 and f.image_size is not None]
    if not turned:
        return None
    follows = Counter(f.size_matches for f in turned)
    displayed = [f for f in turned if f.size_matches == "displayed"]
    policy = "rotate" if displayed else "keep"
    if (
        displayed
        and follows["same"]
        and any(f.size_matches == "same" and f.image_size != f.image_size[::-1] for f in turned)
    ):
        problems.append(
            Problem(
                "exif",
                f"EXIF-rotated images: {len(displayed)} mask(s) follow the displayed picture, "
                f"{follows['same']} the stored pixels: one --exif policy cannot fit both "
                f"({_some(turned)})",
                _files(turned),
            )
        )
    conclusions.append(
        Conclusion(
            "exif",
            f"{len(turned)} image(s) carry an EXIF orientation, which TensorFlow ignores; the "
            + (
                "masks follow the displayed picture: --exif rotate"
                if policy == "rotate"
                else "masks match the stored pixels: --exif keep"
            ),
            "high" if policy == "rotate" else "medium",
            tuple(
                f"{f.image}: orientation {f.orientation}, mask {f.width}x{f.height}, stored "
                f"{f.image_size[1]}x{f.image_size[0]}"
                for f in turned[:SHOWN]
            ),
        )
    )
    problems.append(
        Problem(
            "exif",
            f"{len(turned)} image(s) with an EXIF orientation: to-tfrecord needs --exif {policy}",
            tuple(f.image for f in turned[:SHOWN]),
        )
    )
    return policy


def _unreadable(facts: Sequence[MaskFacts], problems: list[Problem]) -> None:
    bad = [f for f in facts if f.error is not None]
    if bad:
        problems.append(
            Problem(
                "unreadable",
                f"{len(bad)} mask(s) cannot be read ({bad[0].relpath}: {bad[0].error})",
                _files(bad),
            )
        )


def _family(f: MaskFacts) -> str:
    values = set(f.values)
    if f.kind == "colour":
        return "colour masks"
    if f.instance_ids:
        return "instance ids"
    if any(v < 0 for v in values):
        return "void -1"
    if values <= {0, 1} and 1 in values:
        return "binary 0/1"
    if values <= {0, 255} and 255 in values:
        return "binary 0/255"
    if 255 in values:
        return "classes with 255"
    return "classes"


def _mixed(labels: Sequence[MaskFacts], facts: Sequence[MaskFacts], problems: list) -> None:
    """Masks of one set that follow different conventions."""
    families: dict[str, list[MaskFacts]] = {}
    for f in facts:
        families.setdefault(_family(f), []).append(f)
    clashes = [
        ("binary 0/1", "binary 0/255"),
        ("binary 0/255", "classes with 255"),
        ("void -1", "classes with 255"),
        ("colour masks", "classes"),
        ("colour masks", "classes with 255"),
        ("instance ids", "classes"),
        ("instance ids", "classes with 255"),
    ]
    for a, b in clashes:
        if a in families and b in families:
            problems.append(
                Problem(
                    "mixed",
                    f"mixed conventions in one set: {len(families[a])} mask(s) are {a} "
                    f"({_some(families[a])}), {len(families[b])} are {b} "
                    f"({_some(families[b])})",
                    _files(families[a]) + _files(families[b]),
                )
            )


def _crop(facts: Sequence[MaskFacts]) -> tuple[int, int]:
    """A training crop: the median mask size, in multiples of 16, at most 512, at least 16."""
    sizes = sorted((f.height, f.width) for f in facts if f.height and f.width)
    if not sizes:
        return 512, 512
    heights = sorted(h for h, _ in sizes)
    widths = sorted(w for _, w in sizes)
    mid = len(sizes) // 2
    return tuple(max(16, min(512, s // 16 * 16)) for s in (heights[mid], widths[mid]))


def layout_conclusion(layout: Layout, pairs: int, unpaired: int, naming_text: str) -> Conclusion:
    confidence = {"content": "low", "folders": "medium"}.get(layout.convention, "high")
    if unpaired and confidence == "high":
        confidence = "medium"
    return Conclusion(
        "layout",
        f"{convention_name(layout.convention)} layout: {pairs} pair(s), {naming_text}",
        confidence,
        layout.evidence + layout.others,
    )
