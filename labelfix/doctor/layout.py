"""Where a dataset keeps its masks and images: folder names, split folders, id lists, names.

The folders are found by the names the conventions give them (VOC's ``JPEGImages`` and
``SegmentationClass``, Cityscapes' ``leftImg8bit`` and ``gtFine``, ADE20K's ``images`` and
``annotations``, mmsegmentation's ``img_dir`` and ``ann_dir``, labelme's
``SegmentationClassNpy``, and ``images`` beside ``masks``/``labels``/``gt``), a masks folder
always beside its images folder; failing that, by what sibling folders hold. Splits are
sub-folders (``train``/``val``, ADE20K's ``training``/``validation``), parent folders
(``train/images`` and ``train/masks``) or VOC's ``ImageSets/Segmentation/*.txt`` lists.

>>> split_name("validation"), split_name("train"), split_name("aachen")
('val', 'train', None)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from labelfix.io.masks import MASK_SUFFIXES, REPAIR_SUFFIXES
from labelfix.io.pairing import IMAGE_EXTENSIONS

#: Folder names of splits, and the split name labelfix gives them.
SPLITS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
#: Folder names of images.
IMAGE_DIRS = ("jpegimages", "leftimg8bit", "img_dir", "images", "imgs", "img", "image", "rgb")
#: Folder names of masks, most telling first, with the convention each one suggests.
MASK_DIRS = (
    ("gtfine", "cityscapes"),
    ("gtcoarse", "cityscapes"),
    ("segmentationclassnpy", "labelme"),
    ("segmentationclass", "voc"),
    ("segmentationclassaug", "voc"),
    ("ann_dir", "mmseg"),
    ("annotations", "folders"),
    ("masks", "folders"),
    ("mask", "folders"),
    ("labels", "folders"),
    ("label", "folders"),
    ("gt", "folders"),
    ("groundtruth", "folders"),
    ("ground_truth", "folders"),
    ("segmentations", "folders"),
    ("annotation", "folders"),
)
#: Folders of masks that are no semantic labels, and what they hold.
NOT_LABELS = {
    "segmentationobject": "instance masks (one id per object), not classes",
    "segmentationobjectnpy": "instance masks (one id per object), not classes",
    "segmentationobjectpng": "instance masks (one id per object), not classes",
    "segmentationclassvisualization": "pictures of the masks drawn over the images",
    "segmentationobjectvisualization": "pictures of the masks drawn over the images",
}
#: Files that name the classes, one per line (ADE20K's objectInfo150 has its own format).
NAMES_FILES = ("class_names.txt", "classes.txt", "names.txt", "labels.txt", "objectinfo150.txt")
#: How deep below the root folders are looked for.
MAX_DEPTH = 4


def _join(*parts: str) -> str:
    """``os.path.join``, normalised: ``photos``, not ``./photos``, under a root given as ``.``."""
    return os.path.normpath(os.path.join(*parts))


def split_name(folder: str) -> str | None:
    """The split a folder name stands for, or None."""
    return SPLITS.get(folder.lower())


@dataclass(frozen=True)
class SplitFolders:
    """One split: its images and masks folders, and the id list that picks its pairs."""

    name: str
    images: str
    masks: str
    list_file: str | None = None


@dataclass(frozen=True)
class Layout:
    """The mask set a dataset root holds, as found: ``convention`` is what the folder names
    suggest (``voc``, ``cityscapes``, ``ade20k``, ``mmseg``, ``labelme`` or ``folders``)."""

    convention: str
    images: str
    masks: str
    splits: tuple[SplitFolders, ...]
    evidence: tuple[str, ...] = ()
    others: tuple[str, ...] = ()
    names_file: str | None = None


class NoMaskSet(Exception):
    """No folder of masks with a folder of images beside it under the root."""


def _walk(root: str) -> dict[str, tuple[list[str], int, int]]:
    """Folder -> (its sub-folders, its pictures: image files that are no PNG, its mask files:
    PNG and .npy), to :data:`MAX_DEPTH`."""
    found: dict[str, tuple[list[str], int, int]] = {}
    base = root.rstrip(os.sep).count(os.sep)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if folder.count(os.sep) - base >= MAX_DEPTH:
            dirs[:] = []
        lowered = [f.lower() for f in files if not f.startswith(".")]
        masks = sum(f.endswith(MASK_SUFFIXES) for f in lowered)
        if not masks:  # a folder of JPEG masks, for repair
            masks = sum(f.endswith(REPAIR_SUFFIXES) for f in lowered)
        pictures = sum(f.endswith(IMAGE_EXTENSIONS) for f in lowered) - sum(
            f.endswith(".png") for f in lowered
        )
        found[os.path.normpath(folder)] = (list(dirs), pictures, masks)
    return found


def _files_below(tree: dict, folder: str, which: int) -> int:
    """Pictures (``which`` 1) or mask files (2) in ``folder`` and below it, as walked."""
    prefix = folder + os.sep
    return sum(v[which] for k, v in tree.items() if k == folder or k.startswith(prefix))


def _sibling(tree: dict, parent: str, names: tuple[str, ...]) -> str | None:
    subdirs = {d.lower(): d for d in tree.get(parent, ([], 0, 0))[0]}
    for name in names:
        if name in subdirs:
            return _join(parent, subdirs[name])
    return None


@dataclass(frozen=True)
class _Candidate:
    masks: str
    images: str
    convention: str
    rank: int
    files: int


def find_layout(root: str) -> Layout:
    """The mask set under ``root`` (see the module doc); :class:`NoMaskSet` when none."""
    root = os.path.normpath(root)
    tree = _walk(root)
    candidates, others = [], []
    for folder, (dirs, _, _) in tree.items():
        for d in dirs:
            path = _join(folder, d)
            if d.lower() in NOT_LABELS:
                others.append(f"{path}: {NOT_LABELS[d.lower()]}; not used")
                continue
            for rank, (name, convention) in enumerate(MASK_DIRS):
                if d.lower() != name:
                    continue
                images = _sibling(tree, folder, IMAGE_DIRS)
                files = _files_below(tree, path, 2)
                if images is not None and files:
                    candidates.append(_Candidate(path, images, convention, rank, files))
    if not candidates:
        candidates = _by_content(tree)
    if not candidates:
        raise NoMaskSet(
            f"{root}: no folder of masks (PNG or .npy) beside a folder of images was found "
            f"{MAX_DEPTH} levels deep (looked for SegmentationClass, gtFine, annotations, "
            "ann_dir, masks, labels, gt ... beside JPEGImages, leftImg8bit, images, img_dir); "
            "give the folder that holds both"
        )
    grouped = _split_above(candidates)
    best = min(grouped, key=lambda g: (g[0].rank, -sum(c.files for c in g)))
    for group in grouped:
        if group is not best:
            for c in group:
                others.append(f"{c.masks}: another folder of masks ({c.files} file(s)); not used")
    return _layout_of(root, tree, best, others)


def _split_above(candidates: list[_Candidate]) -> list[list[_Candidate]]:
    """Candidates grouped: ``train/masks`` and ``val/masks`` (same names, split-named parents
    under one folder) are one mask set."""
    groups: dict[tuple, list[_Candidate]] = {}
    for c in candidates:
        parent = os.path.dirname(c.masks)
        if split_name(os.path.basename(parent)):
            key = (
                os.path.dirname(parent),
                os.path.basename(c.masks),
                os.path.basename(c.images),
            )
        else:
            key = (c.masks,)
        groups.setdefault(key, []).append(c)
    return list(groups.values())


def _layout_of(root: str, tree: dict, group: list[_Candidate], others: list[str]) -> Layout:
    first = group[0]
    evidence = []
    convention = first.convention
    if len(group) > 1 or split_name(os.path.basename(os.path.dirname(first.masks))):
        splits = tuple(
            SplitFolders(split_name(os.path.basename(os.path.dirname(c.masks))), c.images, c.masks)
            for c in group
        )
        evidence.append(
            "split folders above the masks: "
            + ", ".join(os.path.basename(os.path.dirname(c.masks)) for c in group)
        )
    else:
        splits = _splits_below(tree, first)
        if splits:
            evidence.append(
                "split folders: " + ", ".join(os.path.basename(s.masks) for s in splits)
            )
        else:
            splits = _voc_lists(first)
            if splits:
                evidence.append("split lists: " + ", ".join(str(s.list_file) for s in splits))
    if not splits:
        splits = (SplitFolders("train", first.images, first.masks),)
        evidence.append("no split folders or lists: every pair goes into one split, train")
    parent = os.path.dirname(first.masks)
    if len(group) > 1:
        parent = os.path.dirname(parent)
    names = _names_file(root, parent, first.masks)
    annotations = os.path.basename(first.masks).lower() == "annotations"
    if first.convention == "folders" and annotations and _looks_ade20k(tree, parent, names):
        convention = "ade20k"
    how = (
        "told by what the folders hold: pictures beside PNG/.npy masks"
        if convention == "content"
        else f"folder names of the {_CONVENTION_NAMES[convention]} layout"
    )
    evidence.insert(0, f"masks in {first.masks}, images in {first.images} ({how})")
    norm = os.path.normpath  # "photos", not "./photos", for a root given as "."
    return Layout(
        convention=convention,
        images=norm(first.images),
        masks=norm(first.masks),
        splits=tuple(
            SplitFolders(
                s.name,
                norm(s.images),
                norm(s.masks),
                norm(s.list_file) if s.list_file else None,
            )
            for s in splits
        ),
        evidence=tuple(evidence),
        others=tuple(others),
        names_file=norm(names) if names else None,
    )


_CONVENTION_NAMES = {
    "voc": "Pascal VOC",
    "cityscapes": "Cityscapes",
    "ade20k": "ADE20K",
    "mmseg": "mmsegmentation",
    "labelme": "labelme (labelme2voc)",
    "folders": "images-and-masks",
    "content": "no known",
}


def convention_name(convention: str) -> str:
    return _CONVENTION_NAMES.get(convention, convention)


def _looks_ade20k(tree: dict, parent: str, names: str | None) -> bool:
    base = os.path.basename(parent).lower()
    if base.startswith("adechallenge") or "ade20k" in base:
        return True
    if names is not None and os.path.basename(names).lower().startswith("objectinfo150"):
        return True
    subdirs = {d.lower() for d in tree.get(_join(parent, "annotations"), ([], 0, 0))[0]}
    return {"training", "validation"} <= subdirs


def _splits_below(tree: dict, c: _Candidate) -> tuple[SplitFolders, ...]:
    """Split-named sub-folders of the masks folder that the images folder has too."""
    mask_dirs = tree.get(c.masks, ([], 0, 0))[0]
    image_dirs = {d.lower(): d for d in tree.get(c.images, ([], 0, 0))[0]}
    found = []
    for d in mask_dirs:
        name = split_name(d)
        if name and d.lower() in image_dirs and _files_below(tree, _join(c.masks, d), 2):
            found.append(
                SplitFolders(name, _join(c.images, image_dirs[d.lower()]), _join(c.masks, d))
            )
    return tuple(found)


def _voc_lists(c: _Candidate) -> tuple[SplitFolders, ...]:
    """VOC's ``ImageSets/Segmentation/{train,val}.txt`` beside the masks folder (``trainval``
    only when there is no train and val; lists of other names as they are)."""
    folder = _join(os.path.dirname(c.masks), "ImageSets", "Segmentation")
    if not os.path.isdir(folder):
        return ()
    lists = sorted(f for f in os.listdir(folder) if f.endswith(".txt") and not f.startswith("."))
    stems = {os.path.splitext(f)[0] for f in lists}
    found = []
    for f in lists:
        stem = os.path.splitext(f)[0]
        if stem == "trainval" and {"train", "val"} <= stems:
            continue
        name = split_name(stem) or stem
        found.append(SplitFolders(name, c.images, c.masks, _join(folder, f)))
    return tuple(found)


def _names_file(root: str, parent: str, masks: str) -> str | None:
    """A file naming the classes next to the data: in the masks' parent folder or the root."""
    for folder in dict.fromkeys((masks, parent, root)):
        try:
            present = {f.lower(): f for f in os.listdir(folder)}
        except OSError:
            continue
        for name in NAMES_FILES:
            if name in present:
                return _join(folder, present[name])
        for lowered, f in sorted(present.items()):
            if lowered.endswith(".names"):
                return _join(folder, f)
    return None


def _by_content(tree: dict) -> list[_Candidate]:
    """Sibling folders of any names, one of pictures (JPEG and the like) and no mask files,
    the other of mask files: a last resort when no folder has a known name."""
    found = []
    for folder, (dirs, _, _) in tree.items():
        paths = [_join(folder, d) for d in dirs[:12]]
        for masks in paths:
            files = _files_below(tree, masks, 2)
            if not files or _files_below(tree, masks, 1):
                continue
            for images in paths:
                if images != masks and _files_below(tree, images, 1):
                    found.append(_Candidate(masks, images, "content", len(MASK_DIRS), files))
    return found
