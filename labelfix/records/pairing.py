"""Pairing masks with images, and the id lists (VOC ``ImageSets``) that pick and order them.

>>> pairs, unpaired = find_pairs(images="JPEGImages", masks="SegmentationClass")  # doctest: +SKIP
>>> pairs[0]                                                                     # doctest: +SKIP
Pair(mask='SegmentationClass/2007_000032.png', image='JPEGImages/2007_000032.jpg', ...)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from labelfix.errors import LabelfixError, UsageError
from labelfix.io import fs
from labelfix.io.images import IMAGE_EXTENSIONS, AmbiguousImage, mask_stem
from labelfix.io.masks import iter_mask_files


class DatasetProblems(LabelfixError):
    """Files that cannot go into the dataset: ``problems`` holds one line per problem.

    ``kind`` is ``"unpaired"`` (masks or images without a partner) or ``"invalid"`` (bad masks,
    unreadable files, size mismatches).
    """

    def __init__(
        self, message: str, problems: Sequence[str], *, kind: str, files: int, ambiguous: int = 0
    ):
        self.problems = tuple(problems)
        self.kind = kind
        self.files = files
        #: of the unpaired problems, masks whose stem several images share
        self.ambiguous = ambiguous
        super().__init__(message)


@dataclass(frozen=True)
class Pair:
    """A mask and its image. ``source_id`` is the pairing key (``aachen/aachen_000000_000019``)."""

    mask: str
    image: str
    source_id: str
    filename: str


def _posix(relpath: str) -> str:
    return relpath.replace(os.sep, "/")


def _image_files(images: str, exclude: set[str]) -> Iterator[tuple[str, str]]:
    for root, dirs, files in fs.walk(images, onerror=_raise):
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            full = fs.join(root, name)
            if fs.normpath(full) not in exclude:
                yield full, fs.relpath(full, images)


def _raise(err: OSError) -> None:
    raise LabelfixError(f"{err.filename}: cannot list this directory of images ({err.strerror})")


def find_pairs(
    *,
    images: str | os.PathLike,
    masks: str | os.PathLike,
    image_suffix: str = "",
    mask_suffix: str = "",
    ids: Iterable[str] | None = None,
    skip_unpaired: bool = False,
) -> tuple[list[Pair], list[str]]:
    """Pair masks with images by relative path and stem; ``(pairs, unpaired problem lines)``.

    ``mask_suffix``/``image_suffix`` are stripped from the stems (Cityscapes:
    ``_gtFine_labelIds`` / ``_leftImg8bit``); with a suffix, files without it are not considered.
    ``ids`` restricts the pairs to those ids, in that order (an id matches the whole key or its
    last component). A mask whose stem two images share (``p1.jpg`` and ``p1.png``) is a
    problem too, never a silent pick. Raises DatasetProblems listing every unpaired file unless
    ``skip_unpaired`` (which then leaves such masks out).
    """
    images, masks = os.fspath(images), os.fspath(masks)
    for what, top in (("images", images), ("masks", masks)):
        if not fs.isdir(top):
            raise LabelfixError(f"{top}: the {what} directory does not exist")
    problems: list[str] = []
    mask_by_key = _masks_by_key(masks, mask_suffix, problems)
    exclude = {fs.normpath(p) for p, _ in mask_by_key.values()}
    image_by_key = _images_by_key(images, image_suffix, exclude)
    if ids is None:
        keys = sorted(mask_by_key)
        for key in sorted(set(image_by_key) - set(mask_by_key)):
            for path, _ in image_by_key[key]:
                problems.append(f"{path}: no mask for this image under {masks}")
    else:
        keys = _keys_of_ids(ids, mask_by_key, image_by_key, problems, images, masks,
                            suffixes=(mask_suffix, image_suffix))  # fmt: skip
    pairs, ambiguous = [], 0
    for key in dict.fromkeys(keys):
        mask, found = mask_by_key.get(key), image_by_key.get(key, [])
        if mask is None:
            for path, _ in found:
                problems.append(f"{path}: no mask for this image under {masks}")
        elif not found:
            problems.append(
                f"{mask[0]}: no image for this mask under {images} "
                f"(looked for {key}{image_suffix}.*)"
            )
        elif len(found) > 1:  # never a silent pick: it could pair the mask with another picture
            problems.append(str(AmbiguousImage(mask[0], [path for path, _ in found])))
            ambiguous += 1
        else:
            (image,) = found
            pairs.append(
                Pair(mask=mask[0], image=image[0], source_id=key, filename=_posix(image[1]))
            )
    if problems and not skip_unpaired:
        raise DatasetProblems(
            f"{len(problems)} unpaired file(s): every mask needs one image and every image a mask",
            problems,
            kind="unpaired",
            files=len(problems),
            ambiguous=ambiguous,
        )
    return pairs, problems


def _masks_by_key(masks: str, mask_suffix: str, problems: list[str]) -> dict:
    found: dict[str, tuple[str, str]] = {}
    for path, rel in iter_mask_files([masks]):
        if fs.isdir(path):  # a directory that cannot be listed
            problems.append(f"{path}: cannot list this directory: the masks in it were not read")
            continue
        if mask_suffix and not os.path.splitext(rel)[0].endswith(mask_suffix):
            continue
        key = _posix(mask_stem(rel, mask_suffix=mask_suffix))
        if key in found:
            problems.append(f"{path}: a second mask for {key} (the first is {found[key][0]})")
        else:
            found[key] = (path, rel)
    return found


def _images_by_key(images: str, image_suffix: str, exclude: set[str]) -> dict:
    """Key -> every (path, relpath) of an image with that key, in extension order. Several
    images for one key (``p1.jpg`` and ``p1.png``) are a problem for the mask that needs one."""
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    found: dict[str, list[tuple[str, str]]] = {}
    for path, rel in _image_files(images, exclude):
        stem, _ = os.path.splitext(rel)
        if image_suffix and not stem.endswith(image_suffix):
            continue
        found.setdefault(_posix(mask_stem(rel, mask_suffix=image_suffix)), []).append((path, rel))
    for entries in found.values():
        entries.sort(key=lambda e: (rank[os.path.splitext(e[1])[1].lower()], e[1]))
    return found


def _keys_of_ids(
    ids: Iterable[str],
    mask_by_key: dict,
    image_by_key: dict,
    problems: list[str],
    images: str,
    masks: str,
    *,
    suffixes: tuple[str, str],
) -> list[str]:
    """The pairing keys the ``ids`` name, in their order; unknown or ambiguous ids are problems."""
    keys = []
    by_base: dict[str, list[str]] = {}
    for key in sorted(set(mask_by_key) | set(image_by_key)):
        by_base.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    for wanted in ids:
        wanted = wanted.strip("/")
        for suffix in suffixes:
            if suffix and wanted.endswith(suffix):
                wanted = wanted[: -len(suffix)]
        if wanted in mask_by_key or wanted in image_by_key:
            keys.append(wanted)
        elif len(by_base.get(wanted, ())) == 1:
            keys.append(by_base[wanted][0])
        elif by_base.get(wanted):
            problems.append(f"id {wanted} is ambiguous: {', '.join(by_base[wanted])}")
        else:
            problems.append(f"id {wanted}: no mask under {masks} and no image under {images}")
    return keys


#: The most an id list may hold: millions of ids, but not a whole dataset given by mistake.
ID_LIST_LIMIT = 256 << 20


def read_id_list(path: str | os.PathLike) -> list[str]:
    """The ids of a split file (VOC ``ImageSets/Segmentation/train.txt``): first word per line.

    Blank lines and ``#`` comments are skipped; a trailing image/mask extension is dropped. The
    file is read by :func:`labelfix.io.fs.read_text` (UTF-8, or UTF-16 with a byte-order mark;
    no FIFOs or devices); a file it refuses is a UsageError.
    """
    path = os.fspath(path)
    try:
        lines = fs.read_text(path, what="id list", limit=ID_LIST_LIMIT).splitlines()
    except fs.UnreadableText as err:
        raise UsageError(str(err)) from None
    ids = []
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        token = words[0].replace("\\", "/")
        stem, ext = os.path.splitext(token)
        if ext.lower() in (*IMAGE_EXTENSIONS, ".npy"):
            token = stem
        ids.append(token)
    return list(dict.fromkeys(ids))
