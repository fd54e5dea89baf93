"""Which image belongs to which mask: the one set of naming rules every command pairs by.

A mask and its image share their relative directory and their stem, less the suffixes the
dataset conventions put on names (:class:`Naming`):

* same stem: ``SegmentationClass/2007_000032.png`` and ``JPEGImages/2007_000032.jpg`` (VOC,
  ADE20K's ``annotations/``/``images/``, mmsegmentation's ``ann_dir/``/``img_dir/``, labelme's
  ``SegmentationClassNpy/*.npy``);
* Cityscapes: ``aachen_000000_000019_gtFine_labelTrainIds.png`` and
  ``aachen_000000_000019_leftImg8bit.png``;
* a mask suffix (``_gt``, ``_mask``, ``_label``, ``_labels``, ``_seg``) or an image suffix
  (``_img``, ``_image``): ``0001_gt.png`` and ``0001.jpg``.

Without ``--image-suffix``/``--mask-suffix`` these conventions are tried in that order (the
whole stem first); with a suffix, exactly that one is used, as ``to-tfrecord`` always did.
A file is never paired with itself, and a folder of masks given as the images folder is
refused (:class:`MasksAsImages`): pairing each mask with itself would call every mask fine.

>>> Naming().mask_keys("aachen/a_000019_gtFine_labelTrainIds")
['aachen/a_000019_gtFine_labelTrainIds', 'aachen/a_000019']
>>> Naming(mask_suffix="_gtFine_labelIds").mask_keys("a_gtFine_labelIds")
['a']
>>> mask_stem("aachen/a_gtFine_labelIds.png", mask_suffix="_gtFine_labelIds")
'aachen/a'
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from labelfix.errors import LabelfixError, UsageError
from labelfix.io import fs
from labelfix.io.masks import MASK_SUFFIXES, iter_mask_files
from labelfix.io.png import PNG_SIGNATURE, png_header

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Stem suffixes that mark a mask: Cityscapes' ``_gtFine_*``/``_gtCoarse_*`` and a few words.
MASK_SUFFIX = re.compile(r"(_gt(?:Fine|Coarse)_[A-Za-z]+|_gt|_mask|_label|_labels|_seg)$")
#: Stem suffixes that mark an image, in the order they are tried.
IMAGE_SUFFIXES = ("_leftImg8bit", "_img", "_image")
#: Cityscapes masks that are no semantic labels: left out when a folder also holds label ids.
NOT_SEMANTIC = re.compile(r"_gt(?:Fine|Coarse)_(?:instanceIds|instanceTrainIds|color|colour)$")


@dataclass(frozen=True)
class Naming:
    """How mask names and image names correspond (the ``--image-suffix``/``--mask-suffix``
    options). An empty suffix means: the known conventions (see the module doc)."""

    image_suffix: str = ""
    mask_suffix: str = ""

    def mask_keys(self, stem: str) -> list[str]:
        """The keys a mask of this stem (relative path without extension) may pair by, in
        order; none when it lacks an explicit ``mask_suffix``."""
        if self.mask_suffix:
            return [stem[: -len(self.mask_suffix)]] if stem.endswith(self.mask_suffix) else []
        stripped = MASK_SUFFIX.sub("", stem)
        return [stem, stripped] if stripped != stem and stripped else [stem]

    def image_keys(self, stem: str) -> list[tuple[str, bool]]:
        """``(key, exact)`` of an image stem: its whole stem (exact), and without a known image
        suffix (not exact); with an explicit ``image_suffix``, only the stem without it."""
        if self.image_suffix:
            if stem.endswith(self.image_suffix):
                return [(stem[: -len(self.image_suffix)], True)]
            return []
        keys = [(stem, True)]
        for suffix in IMAGE_SUFFIXES:
            if stem.endswith(suffix) and len(stem) > len(suffix):
                keys.append((stem[: -len(suffix)], False))
                break
        return keys

    def image_bases(self, key: str) -> list[list[str]]:
        """Stems an image of ``key`` may have, grouped: the first group with a file wins."""
        if self.image_suffix:
            return [[key + self.image_suffix]]
        return [[key], [key + s for s in IMAGE_SUFFIXES]]

    def options(self) -> list[str]:
        """The command-line options that give this naming (none for the conventions)."""
        out = []
        if self.image_suffix:
            out += ["--image-suffix", self.image_suffix]
        if self.mask_suffix:
            out += ["--mask-suffix", self.mask_suffix]
        return out


#: The known conventions (no explicit suffix): what the commands pair by without options.
CONVENTIONS = Naming()


def mask_stem(relpath: str, *, mask_suffix: str = "") -> str:
    """The pairing key of a mask: its relative path without extension and ``mask_suffix``."""
    stem, _ = os.path.splitext(relpath)
    if mask_suffix and stem.endswith(mask_suffix):
        stem = stem[: -len(mask_suffix)]
    return stem


class AmbiguousImage(LabelfixError):
    """Several images share the stem of one mask (``img/p1.jpg`` and ``img/p1.png``): which one
    belongs to it is not for labelfix to guess. ``images`` lists them; ``mask`` names the mask
    (its path when known, else its path relative to the masks directory)."""

    def __init__(self, mask: str, images: Sequence[str]):
        self.mask, self.images = mask, tuple(images)
        super().__init__(f"{mask}: {len(self.images)} images match: {', '.join(self.images)}")

    def __reduce__(self):  # raised in worker processes: it must survive pickling
        return type(self), (self.mask, self.images)


class MasksAsImages(UsageError):
    """The folder given as the images folder holds masks (or is the masks folder itself)."""


# ----------------------------------------------------------------------------- one mask


def _existing(base: str) -> list[str]:
    """Every file ``base + ext`` (each file once: a name differing only by case on a
    case-insensitive disk is the same file), in extension order."""
    if fs.is_url(base):
        return _remote_images(base)
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    for ext in IMAGE_EXTENSIONS:
        for candidate in (base + ext, base + ext.upper()):
            try:
                info = os.stat(candidate)
            except (OSError, ValueError):
                continue
            if stat.S_ISDIR(info.st_mode) or (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            found.append(candidate)
    return found


def _remote_images(base: str) -> list[str]:
    """:func:`_existing` for a URL: one listing of the directory (fsspec caches listings)."""
    parent, name = fs.dirname(base), fs.basename(base)
    try:
        names = fs.listdir(parent)
    except (FileNotFoundError, NotADirectoryError):
        return []
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    rank.update({ext.upper(): i for i, ext in enumerate(IMAGE_EXTENSIONS)})
    matches = sorted(
        (n for n in names if os.path.splitext(n)[0] == name and os.path.splitext(n)[1] in rank),
        key=lambda n: (rank[os.path.splitext(n)[1]], n),
    )
    return [fs.join(parent, n) for n in matches if not fs.isdir(fs.join(parent, n))]


def _same_file(a: str, b: str | None) -> bool:
    if b is None or fs.is_url(a):
        return a == b
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def find_images(
    images_dir: str | os.PathLike,
    mask_relpath: str,
    *,
    naming: Naming = CONVENTIONS,
    mask: str | None = None,
) -> list[str]:
    """Every image that the mask at ``mask_relpath`` (relative to its masks folder) pairs
    with, by the first rule of ``naming`` that finds one; never ``mask`` (its path) itself.

    What exists and is not a directory counts (a FIFO too: reading it is refused later, by
    :func:`labelfix.io.fs.read_bytes`, with a message that says what it is).
    """
    top = os.fspath(images_dir)
    stem = os.path.splitext(mask_relpath)[0].replace("\\", "/")
    for key in naming.mask_keys(stem):
        for bases in naming.image_bases(key):
            found = [
                path
                for base in bases
                for path in _existing(fs.join(top, base))
                if not _same_file(path, mask)
            ]
            if found:
                return found
    return []


def find_image(
    images_dir: str | os.PathLike,
    mask_relpath: str,
    *,
    naming: Naming = CONVENTIONS,
    mask: str | None = None,
) -> str | None:
    """Path of the image paired with the mask at ``mask_relpath``, or None when there is none.

    :class:`AmbiguousImage` (a :class:`~labelfix.errors.LabelfixError`) when several images
    have its stem (``p1.jpg`` and ``p1.png``), naming ``mask`` (default: ``mask_relpath``) and
    every candidate: picking one silently could pair the mask with the wrong picture.
    """
    found = find_images(images_dir, mask_relpath, naming=naming, mask=mask)
    if len(found) > 1:
        raise AmbiguousImage(mask if mask is not None else mask_relpath, found)
    return found[0] if found else None


def looked_for(mask_relpath: str, naming: Naming = CONVENTIONS) -> str:
    """What :func:`find_images` looked for: ``0001.*``, or with the conventions
    ``a_gtFine_labelIds.*, a.*; also with _leftImg8bit, _img, _image``."""
    stem = os.path.splitext(mask_relpath)[0].replace("\\", "/")
    keys = naming.mask_keys(stem) or [stem]
    if naming.image_suffix:
        return ", ".join(f"{key}{naming.image_suffix}.*" for key in keys)
    also = ", ".join(IMAGE_SUFFIXES)
    return ", ".join(f"{key}.*" for key in keys) + f"; also with {also}"


# ----------------------------------------------------------------------------- folders


def list_images(
    top: str | os.PathLike,
    *,
    exclude: Iterable[str] = (),
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> Iterator[tuple[str, str]]:
    """``(path, relative path)`` of every image file under ``top`` (sorted, hidden names
    skipped), but the paths in ``exclude``; a directory that cannot be listed is an error."""
    top = os.fspath(top)
    skip = {fs.normpath(p) for p in exclude}

    def refuse(err: OSError) -> None:
        raise LabelfixError(
            f"{err.filename}: cannot list this directory of images ({err.strerror})"
        )

    for root, dirs, files in fs.walk(top, onerror=refuse):
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(extensions):
                continue
            full = fs.join(root, name)
            if fs.normpath(full) not in skip:
                yield full, fs.relpath(full, top)


#: Image files looked at to tell a folder of pictures from a folder of masks.
SAMPLE_IMAGES = 8
#: A grey PNG with at most this many distinct values is a mask, not a picture.
MASK_LIKE_VALUES = 32


def mask_like(path: str) -> str | None:
    """Why the image file at ``path`` looks like a label mask (a palette PNG, a grey PNG of a
    few values), or None: a picture, or unreadable (that is for the readers to say)."""
    try:
        with fs.open(path, "rb") as fh:
            head = fh.read(64)
        header = png_header(head) if head[:8] == PNG_SIGNATURE else None
        if header is None:
            return None
        if header[3] == 3:
            return "a palette PNG"
        if header[3] != 0:
            return None
        from PIL import Image

        with Image.open(io.BytesIO(fs.read_bytes(path))) as im:
            colours = im.getcolors(MASK_LIKE_VALUES)
    except (OSError, ValueError, SyntaxError):
        return None
    if colours is None:
        return None
    return f"a grey PNG of {len(colours)} value(s)"


def check_images_folder(
    images: str | os.PathLike, masks: Sequence[str | os.PathLike], *, naming: Naming = CONVENTIONS
) -> None:
    """Refuse (:class:`MasksAsImages`, a usage error) an images folder that is a masks folder.

    The images folder is refused when it is one of ``masks`` and holds no image file besides
    its masks, or when every image file sampled from it (up to :data:`SAMPLE_IMAGES`, the masks
    themselves left out) is a palette PNG or a grey PNG of a few values.
    """
    images = os.fspath(images)
    if fs.is_url(images) or not os.path.isdir(images):
        return
    mask_files = [m for m in (os.fspath(p) for p in masks) if not fs.is_url(m)]
    inside = os.path.realpath(images) + os.sep
    exclude = []  # the masks themselves, where they lie among the images
    for top in mask_files:
        if (os.path.realpath(top) + os.sep).startswith(inside):
            exclude += [path for path, _ in iter_mask_files([top])]
    sample = []
    for path, rel in list_images(images, exclude=exclude):
        stem = os.path.splitext(rel)[0]
        if naming.image_suffix and not stem.endswith(naming.image_suffix):
            continue
        sample.append(path)
        if len(sample) == SAMPLE_IMAGES:
            break
    same = [m for m in mask_files if os.path.realpath(m) == os.path.realpath(images)]
    if same and not sample:
        raise MasksAsImages(
            f"{images} is the masks folder {same[0]}, given as the images folder: it holds no "
            "image besides the "
            "masks, and a mask is never paired with itself; give the folder of the pictures "
            "(e.g. JPEGImages, leftImg8bit, images)"
        )
    if not sample:
        return
    reasons = [mask_like(path) for path in sample]
    if all(reasons):
        shown = "; ".join(
            f"{fs.basename(p)} is {r}" for p, r in zip(sample[:3], reasons[:3], strict=True)
        )
        raise MasksAsImages(
            f"{images} holds masks, not pictures ({len(sample)} of {len(sample)} image "
            f"file(s) looked at are masks: {shown}); give the folder of the pictures (e.g. "
            "JPEGImages, leftImg8bit, images)"
        )


# ----------------------------------------------------------------------------- whole folders


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


@dataclass(frozen=True)
class Pairing:
    """What :func:`find_pairs` found: the pairs (in key order, or the ids' order), one line
    per unpaired file, the masks left out (``notes``) and the naming the folder settled on."""

    pairs: tuple[Pair, ...]
    unpaired: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    naming: Naming = CONVENTIONS
    ambiguous: int = 0


def _posix(relpath: str) -> str:
    return relpath.replace(os.sep, "/")


def settle_naming(
    stems: Sequence[str], naming: Naming = CONVENTIONS, *, where: str = "the masks"
) -> tuple[Naming, tuple[str, ...]]:
    """The naming a folder of masks (their ``stems``) pairs by, and what is left out.

    Without a ``mask_suffix``: when the masks carry Cityscapes suffixes, those of instance ids
    and colour pictures are left out (a note says so) and, when one label suffix remains, it
    becomes the ``mask_suffix``; two label suffixes (``_gtFine_labelIds`` and
    ``_gtFine_labelTrainIds``) are a :class:`~labelfix.errors.UsageError`: which one to use is
    the user's choice.

    >>> settle_naming(["a_gtFine_labelIds", "a_gtFine_instanceIds"])[0]
    Naming(image_suffix='', mask_suffix='_gtFine_labelIds')
    """
    groups: dict[str, int] = {}
    for stem in stems:
        match = MASK_SUFFIX.search(stem)
        key = match.group(1) if match else ""
        groups[key] = groups.get(key, 0) + 1
    cityscapes = [s for s in groups if s.startswith(("_gtFine_", "_gtCoarse_"))]
    notes = tuple(
        f"left out {groups[s]} {s} mask(s) under {where}: "
        + ("instance ids, not semantic labels" if "instance" in s else "colour pictures")
        for s in cityscapes
        if NOT_SEMANTIC.search(s) and s != naming.mask_suffix
    )
    if naming.mask_suffix or not cityscapes:
        return naming, notes
    labels = [s for s in cityscapes if not NOT_SEMANTIC.search(s)]
    if len(labels) > 1:
        choices = " or ".join(f"--mask-suffix {s} ({groups[s]} file(s))" for s in labels)
        raise UsageError(f"{where} hold several kinds of Cityscapes label masks: choose {choices}")
    if labels:
        return Naming(image_suffix=naming.image_suffix, mask_suffix=labels[0]), notes
    return naming, notes


def find_pairs(
    *,
    images: str | os.PathLike,
    masks: str | os.PathLike,
    naming: Naming = CONVENTIONS,
    ids: Iterable[str] | None = None,
    skip_unpaired: bool = False,
    suffixes: tuple[str, ...] = MASK_SUFFIXES,
) -> Pairing:
    """Pair every mask under ``masks`` with its image under ``images`` (see the module doc).

    ``ids`` restricts the pairs to those ids, in that order (an id matches a whole key or its
    last component). A mask that two images match (``p1.jpg`` and ``p1.png``) is a problem
    too, never a silent pick. Raises DatasetProblems listing every unpaired file unless
    ``skip_unpaired`` (which then leaves such masks out), :class:`MasksAsImages` for an images
    folder of masks, UsageError for a folder of two kinds of Cityscapes label masks.
    ``suffixes`` are the mask files' (default ``.png`` and ``.npy``; JPEG masks for repair).
    """
    images, masks = os.fspath(images), os.fspath(masks)
    for what, top in (("images", images), ("masks", masks)):
        if not fs.isdir(top):
            raise LabelfixError(f"{top}: the {what} directory does not exist")
    check_images_folder(images, [masks], naming=naming)
    problems: list[str] = []
    listed = _list_masks(masks, problems, suffixes)
    naming, notes = settle_naming([stem for _, _, stem in listed], naming, where=masks)
    exclude = {fs.normpath(path) for path, _, _ in listed}
    exact, loose = _index_images(images, naming, exclude)
    by_key: dict[str, tuple[str, str, list[tuple[str, str]]]] = {}
    for path, rel, stem in listed:
        if NOT_SEMANTIC.search(stem) and notes:
            continue
        keys = naming.mask_keys(stem)
        if not keys:
            continue
        key, found = keys[-1], []
        for candidate in keys:
            found = exact.get(candidate) or loose.get(candidate) or []
            if found:
                key = candidate
                break
        if key in by_key:
            problems.append(f"{path}: a second mask for {key} (the first is {by_key[key][0]})")
            continue
        by_key[key] = (path, rel, found)
    if ids is None:
        keys = sorted(by_key)
    else:
        keys = _keys_of_ids(ids, by_key, exact, problems, images, masks, naming=naming)
    pairs, ambiguous = [], 0
    for key in dict.fromkeys(keys):
        entry = by_key.get(key)
        if entry is None:
            for image, _ in exact.get(key, []) + loose.get(key, []):
                problems.append(f"{image}: no mask for this image under {masks}")
            continue
        path, rel, found = entry
        if not found:
            problems.append(
                f"{path}: no image for this mask under {images} "
                f"(looked for {looked_for(rel, naming)})"
            )
        elif len(found) > 1:  # never a silent pick: it could pair the mask with another picture
            problems.append(str(AmbiguousImage(path, [image for image, _ in found])))
            ambiguous += 1
        else:
            ((image, image_rel),) = found
            pairs.append(Pair(mask=path, image=image, source_id=key, filename=_posix(image_rel)))
    if ids is None:
        matched = {image for _, _, found in by_key.values() for image, _ in found}
        for key in sorted(exact):
            for image, _ in exact[key]:
                if image not in matched:
                    problems.append(f"{image}: no mask for this image under {masks}")
    if problems and not skip_unpaired:
        raise DatasetProblems(
            f"{len(problems)} unpaired file(s): every mask needs one image and every image a mask",
            problems,
            kind="unpaired",
            files=len(problems),
            ambiguous=ambiguous,
        )
    return Pairing(tuple(pairs), tuple(problems), notes, naming, ambiguous)


def _list_masks(masks: str, problems: list[str], suffixes) -> list[tuple[str, str, str]]:
    """``(path, relative path, stem)`` of every mask; unlistable directories are problems."""
    listed = []
    for path, rel in iter_mask_files([masks], suffixes=suffixes):
        if fs.isdir(path):  # a directory that cannot be listed
            problems.append(f"{path}: cannot list this directory: the masks in it were not read")
            continue
        listed.append((path, rel, _posix(os.path.splitext(rel)[0])))
    return listed


def _index_images(images: str, naming: Naming, exclude: set[str]) -> tuple[dict, dict]:
    """Key -> every ``(path, relpath)`` of an image with that key, in extension order: by
    whole stem (exact) and by stem without a known image suffix (loose)."""
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    exact: dict[str, list[tuple[str, str]]] = {}
    loose: dict[str, list[tuple[str, str]]] = {}
    for path, rel in list_images(images, exclude=exclude):
        stem = _posix(os.path.splitext(rel)[0])
        for key, is_exact in naming.image_keys(stem):
            (exact if is_exact else loose).setdefault(key, []).append((path, rel))
    for index in (exact, loose):
        for entries in index.values():
            entries.sort(key=lambda e: (rank[os.path.splitext(e[1])[1].lower()], e[1]))
    return exact, loose


def _keys_of_ids(
    ids: Iterable[str],
    by_key: dict,
    exact: dict,
    problems: list[str],
    images: str,
    masks: str,
    *,
    naming: Naming,
) -> list[str]:
    """The pairing keys the ``ids`` name, in their order; unknown or ambiguous ids are problems."""
    keys = []
    by_base: dict[str, list[str]] = {}
    for key in sorted(set(by_key) | set(exact)):
        by_base.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    for wanted in ids:
        wanted = wanted.strip("/")
        for suffix in (naming.mask_suffix, naming.image_suffix):
            if suffix and wanted.endswith(suffix):
                wanted = wanted[: -len(suffix)]
        if wanted in by_key or wanted in exact:
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
