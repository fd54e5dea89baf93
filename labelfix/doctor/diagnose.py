"""``diagnose(root)``: find, pair, sample, conclude, and put the commands together.

Reads only: every mask and image is read as the other commands read it, and directories being
rewritten in place are refused (:func:`labelfix.io.inputs.watch_inputs`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from labelfix.doctor import commands as command_sets
from labelfix.doctor.conventions import Findings, conclude, layout_conclusion, read_names
from labelfix.doctor.layout import Layout, NoMaskSet, SplitFolders, find_layout
from labelfix.doctor.report import DoctorReport, Problem, SplitReport
from labelfix.doctor.sample import MaskFacts, inspect_pair
from labelfix.errors import LabelfixError
from labelfix.io.inputs import watch_inputs
from labelfix.io.masks import MASK_SUFFIXES, REPAIR_SUFFIXES, iter_mask_files
from labelfix.io.pairing import (
    MASK_SUFFIX,
    NOT_SEMANTIC,
    Naming,
    Pairing,
    find_pairs,
    read_id_list,
)
from labelfix.parallel import ordered_map

#: Masks read by default; the rest are paired (names only), not read.
DEFAULT_SAMPLE = 200
#: Cityscapes label suffixes, the most direct first (trainIds need no mapping).
_LABEL_SUFFIXES = (
    "_gtFine_labelTrainIds",
    "_gtCoarse_labelTrainIds",
    "_gtFine_labelIds",
    "_gtCoarse_labelIds",
)


def choose_naming(masks: str) -> tuple[Naming, tuple[str, ...]]:
    """The naming to pair a masks folder by, and why: Cityscapes' trainIds when the folder
    holds them (its labelIds are the same labels, before the mapping), else its labelIds."""
    found: dict[str, int] = {}
    for _, rel in iter_mask_files([masks]):
        match = MASK_SUFFIX.search(os.path.splitext(rel)[0])
        if match:
            found[match.group(1)] = found.get(match.group(1), 0) + 1
    labels = [s for s in found if s.startswith(("_gtFine_", "_gtCoarse_"))]
    labels = [s for s in labels if not NOT_SEMANTIC.search(s)]
    if len(labels) < 2:
        return Naming(), ()
    chosen = next(s for s in _LABEL_SUFFIXES if s in labels)
    others = ", ".join(f"*{s} ({found[s]})" for s in labels if s != chosen)
    return Naming(mask_suffix=chosen), (f"paired *{chosen}; also there: {others}",)


def _pair_split(split: SplitFolders, naming: Naming) -> Pairing:
    """The split's pairs; a folder of JPEG masks only is listed as repair lists it."""
    ids = read_id_list(split.list_file) if split.list_file is not None else None
    lossless = next(iter_mask_files([split.masks]), None) is not None
    return find_pairs(
        images=split.images,
        masks=split.masks,
        naming=naming,
        ids=ids,
        skip_unpaired=True,
        suffixes=MASK_SUFFIXES if lossless else REPAIR_SUFFIXES,
    )


def _sample(items: list, size: int) -> list:
    """``size`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= size:
        return items
    step = len(items) / size
    return [items[int(k * step)] for k in range(size)]


def diagnose(
    root: str | os.PathLike,
    *,
    sample: int = DEFAULT_SAMPLE,
    output: str = "records",
    model: str = "model",
    jobs: int | None = None,
    on_mask: Callable[[MaskFacts], None] | None = None,
) -> DoctorReport:
    """Look at the dataset under ``root`` and say what convention it follows (see the package
    doc). ``sample`` masks at most are read; ``output`` and ``model`` are the folders the
    printed commands write. Raises LabelfixError when no mask set is found."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise LabelfixError(f"{root}: not a directory")
    watch = watch_inputs([root])
    try:
        layout = find_layout(root)
    except NoMaskSet as err:
        raise LabelfixError(str(err)) from None
    problems: list[Problem] = []
    notes: list[str] = []
    splits, pairings, plans = _pair_splits(layout, problems, notes)
    items = [
        (p.mask, os.path.relpath(p.mask, s.masks), p.image, s.name)
        for s, pairing in zip(splits, pairings, strict=True)
        for p in pairing.pairs
    ]
    chosen = _sample(items, sample)
    facts = []
    for f in ordered_map(inspect_pair, chosen, jobs=jobs, preload=("labelfix.doctor.sample",)):
        facts.append(f)
        if on_mask is not None:
            on_mask(f)
    suffix = next((p.naming.mask_suffix for p in pairings if p.naming.mask_suffix), "")
    left_out = tuple(n for p in pairings for n in p.notes)
    names = read_names(layout.names_file) if layout.names_file else None
    findings = conclude(layout, facts, mask_suffix=suffix, left_out=left_out, names=names)
    total_pairs = sum(len(p.pairs) for p in pairings)
    unpaired = sum(len(p.unpaired) for p in pairings)
    naming_text = _naming_text(pairings)
    conclusions = (layout_conclusion(layout, total_pairs, unpaired, naming_text),)
    conclusions += findings.conclusions
    problems += _unpaired_problems(pairings)
    problems += findings.problems
    sets = ()
    if total_pairs and findings.guess.readings[0].num_classes:
        sets = command_sets.build(
            findings, plans, masks_root=layout.masks, output=output, model=model
        )
    if len(chosen) < len(items):
        notes.append(
            f"read {len(chosen)} of {len(items)} masks, spread over the dataset (--sample N "
            "reads more); the pairs were all checked by name"
        )
    watch.confirm()
    reading = findings.guess.readings[0]
    return DoctorReport(
        root=root,
        convention=layout.convention,
        ignore=findings.guess.ignore,
        num_classes=reading.num_classes if findings.guess.decided else None,
        class_names=_class_names(findings, reading),
        splits=tuple(
            SplitReport(
                s.name,
                s.images,
                s.masks,
                len(p.pairs),
                len(p.unpaired),
                s.list_file,
                p.naming.image_suffix,
                p.naming.mask_suffix,
            )
            for s, p in zip(splits, pairings, strict=True)
        ),
        conclusions=conclusions,
        problems=tuple(problems),
        command_sets=sets,
        masks=len(items),
        sampled=len(chosen),
        examples=tuple((p.mask, p.image) for pairing in pairings for p in pairing.pairs[:1])[:3],
        notes=tuple(notes),
    )


def _class_names(findings: Findings, reading) -> tuple[str, ...] | None:
    """The preset's class names, or the names file's."""
    if reading.preset is not None:
        from labelfix.labels.presets import preset

        return preset(reading.preset).class_names
    return findings.names


def _pair_splits(layout: Layout, problems: list[Problem], notes: list[str]):
    """Pair every split; splits without a pair (VOC's test list) are left out with a note."""
    splits, pairings, plans = [], [], []
    for split in layout.splits:
        naming, why = choose_naming(split.masks)
        notes.extend(n for n in why if n not in notes)
        try:
            pairing = _pair_split(split, naming)
        except LabelfixError as err:
            problems.append(Problem("pairing", f"split {split.name}: {err}", (split.masks,)))
            continue
        if not pairing.pairs:
            notes.append(f"split {split.name}: no (image, mask) pair; left out")
            continue
        splits.append(split)
        pairings.append(pairing)
        plans.append(
            command_sets.SplitPlan(
                split.name,
                split.images,
                split.masks,
                split.list_file,
                tuple(pairing.naming.options()),
                len(pairing.unpaired),
                len(pairing.pairs),
            )
        )
    return splits, pairings, plans


def _naming_text(pairings: Sequence[Pairing]) -> str:
    suffixes = {(p.naming.image_suffix, p.naming.mask_suffix) for p in pairings}
    pairs = [pair for p in pairings for pair in p.pairs[:1]]
    if not pairs:
        return "none paired"
    image, mask = os.path.basename(pairs[0].image), os.path.basename(pairs[0].mask)
    how = "same stem" if os.path.splitext(image)[0] == os.path.splitext(mask)[0] else "by suffix"
    if any(m for _, m in suffixes):
        how = "by suffix " + ", ".join(sorted({m for _, m in suffixes if m}))
    return f"paired {how} (e.g. {mask} with {image})"


def _unpaired_problems(pairings: Sequence[Pairing]) -> list[Problem]:
    lines = [line for p in pairings for line in p.unpaired]
    if not lines:
        return []
    shown = "; ".join(lines[:3]) + (f"; and {len(lines) - 3} more" if len(lines) > 3 else "")
    return [
        Problem(
            "unpaired",
            f"{len(lines)} unpaired file(s), left out with --skip-unpaired: {shown}",
            tuple(line.split(": ", 1)[0] for line in lines[:3]),
        )
    ]
