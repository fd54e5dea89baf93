"""Read a written dataset back and check every record against its manifest (``labelfix verify``).

On a dataset of your own::

    result = verify_dataset("tfrecords", split="val")
    result.ok, result.records
    # -> (True, 1449)
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from labelfix.checks.rules import bad_value_message, find_bad_values, is_valid
from labelfix.errors import LabelfixError
from labelfix.io import fs
from labelfix.io.images import decode_problem, image_header
from labelfix.io.masks import value_counts
from labelfix.io.png import png_header, png_problem, without_text_chunks
from labelfix.parallel import ordered_map
from labelfix.records.example import FEATURES, feature_key, parse_example
from labelfix.records.framing import CorruptRecord, read_records
from labelfix.records.manifest import read_manifest
from labelfix.records.shards import journal_pattern, shard_pattern


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify_dataset` found; ``problems`` has one line per problem. ``manifest``
    is None for shards read without one (:func:`~labelfix.records.foreign_checks.
    verify_records`)."""

    manifest: str | None
    shards: int
    records: int
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Checked:
    problems: tuple[str, ...]
    classes: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class _VerifyPlan:
    num_classes: int
    ignore: int | None
    encoding: str
    mask_dtype: str


def check_record(item: tuple[str, int, bytes], plan: _VerifyPlan) -> _Checked:
    """Parse one serialised record, read its image header, decode its mask, check every value."""
    shard, index, data = item
    where = f"{shard}: record {index}"
    empty = np.zeros(0, np.int64)
    try:
        features = parse_example(data)
    except ValueError as err:
        return _Checked((f"{where}: not a tf.train.Example ({err})",), empty, empty)
    source = features.get(feature_key("source_id"), [b""])
    if source and isinstance(source[0], bytes) and source[0]:
        where += f" ({source[0].decode('utf-8', 'replace')})"
    problems = []
    values = {}
    for name, (key, kind) in FEATURES.items():
        got = features.get(key)
        if not got or len(got) != 1 or not isinstance(got[0], bytes if kind == "bytes" else int):
            problems.append(f"{where}: feature {key} is missing or not a single {kind} value")
        else:
            values[name] = got[0]
    if problems:
        return _Checked(tuple(problems), empty, empty)
    height, width = values["height"], values["width"]
    try:
        _, ih, iw, _ = image_header(values["image"])
        if (ih, iw) != (height, width):
            problems.append(f"{where}: image is {iw}x{ih} but the record says {width}x{height}")
        problem = decode_problem(values["image"])
        if problem is not None:
            problems.append(f"{where}: image {problem}")
    except ValueError as err:
        problems.append(f"{where}: image: {err}")
    fmt = values["mask_format"].decode("utf-8", "replace")
    if fmt != plan.encoding:
        problems.append(f"{where}: mask format {fmt!r}, the manifest says {plan.encoding!r}")
        return _Checked(tuple(problems), empty, empty)
    try:
        labels = _decode_mask(values["mask"], plan, height, width)
    except ValueError as err:
        problems.append(f"{where}: mask: {err}")
        return _Checked(tuple(problems), empty, empty)
    found, counts = value_counts(labels)
    void = (plan.ignore,) if plan.ignore is not None else ()
    for bad in find_bad_values(found, counts, labels, num_classes=plan.num_classes, void=void):
        problems.append(bad_value_message(where, bad, num_classes=plan.num_classes, ignore=void))
    is_class = is_valid(found, plan.num_classes) & ~np.isin(found, void)
    return _Checked(tuple(problems), found[is_class].astype(np.int64), counts[is_class])


def _decode_mask(data: bytes, plan: _VerifyPlan, height: int, width: int) -> np.ndarray:
    if plan.encoding == "raw":
        dtype = np.dtype(plan.mask_dtype).newbyteorder("<")
        if len(data) != height * width * dtype.itemsize:
            raise ValueError(f"{len(data)} bytes, expected {height}x{width} {plan.mask_dtype}")
        return np.frombuffer(data, dtype).reshape(height, width)
    header = png_header(data)
    bits = 8 if plan.mask_dtype == "uint8" else 16
    if header is None:
        raise ValueError("not a PNG")
    if header[3] != 0 or header[2] != bits:
        raise ValueError(
            f"PNG is colour type {header[3]} with {header[2]} bits, expected {bits}-bit grey "
            "(tf.io.decode_png would not return the class ids)"
        )
    problem = png_problem(data)
    if problem is not None:
        raise ValueError(f"corrupt or truncated PNG ({problem})")
    try:  # text chunks are metadata, which Pillow may refuse (a zTXt over 1 MB)
        with Image.open(io.BytesIO(without_text_chunks(data))) as im:
            im.load()
            labels = np.asarray(im)
    except (OSError, SyntaxError, ValueError, zlib.error) as err:
        raise ValueError(f"corrupt PNG ({err})") from None
    if labels.shape != (height, width):
        raise ValueError(f"PNG is {labels.shape[1]}x{labels.shape[0]}, expected {width}x{height}")
    return labels


class _Hashing:
    """A read-only file wrapper that hashes (sha256) and counts what is read through it."""

    def __init__(self, fh):
        self.fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data

    def finish(self) -> tuple[int, str]:
        """Read the rest (after an error), then ``(bytes, sha256)`` of the whole file."""
        while self.read(1 << 22):
            pass
        return self.size, self.digest.hexdigest()


def _read_shards(
    directory: str, manifest: dict, problems: list[str], found: dict[str, tuple], listed: list
) -> Iterator[tuple[str, int, bytes]]:
    """Every record of the ``listed`` shards of the manifest, framing and CRCs checked as the
    shard is hashed (one read); ``found[name]`` becomes ``(records, bytes, sha256)``. Read
    errors become problem lines naming the shard and the record."""
    for shard in listed:
        name = shard["file"]
        path = os.path.join(directory, name)
        shown = _shown(manifest, name)
        if not os.path.exists(path):
            problems.append(f"{shown}: shard listed in the manifest is missing")
            continue
        count = 0
        try:
            raw = fs.open(path, "rb")  # a FIFO or device is refused, never opened
        except OSError as err:
            problems.append(f"{shown}: cannot read the shard ({err.strerror or err})")
            continue
        with raw:
            fh = _Hashing(raw)
            try:
                for count, record in enumerate(
                    read_records(fh, compression=manifest["compression"]), 1
                ):
                    yield shown, count - 1, record
            except (CorruptRecord, OSError, EOFError, zlib.error) as err:
                index = err.index if isinstance(err, CorruptRecord) else count
                reason = str(err).split(": ", 1)[-1] if isinstance(err, CorruptRecord) else err
                problems.append(f"{shown}: record {index}: unreadable ({reason})")
            found[name] = (count, *fh.finish())


def _shown(manifest: dict, name: str) -> str:
    """A file beside the manifest as messages name it: beside the manifest's path as the user
    gave it (relative stays relative), not the absolute directory the readers use."""
    return os.path.join(os.path.dirname(manifest["manifest_path"]), name)


def verify_dataset(
    path: str | os.PathLike,
    *,
    split: str = "train",
    jobs: int | None = None,
    on_record: Callable[[int], None] | None = None,
    shards: Sequence[str] | None = None,
) -> VerifyResult:
    """Read every record back and check it against the manifest; see ``labelfix verify``.

    Checks: each shard exists, has the manifest's record count, size and sha256; each record is
    an Example with every feature key; its image header is readable and matches height/width;
    its mask decodes to that size and holds only class ids or the stored ignore value; the
    per-class pixel counts add up to the manifest's.

    ``shards`` (file names the manifest lists) checks only those, against their entries: the
    split's totals and the shards it does not list are then not checked.
    """
    manifest = read_manifest(path, split)
    listed = manifest["shards"]
    if shards is not None:
        names = set(shards)
        unknown = sorted(names - {s["file"] for s in listed})
        if unknown:
            raise LabelfixError(
                f"{unknown[0]}: not a shard of {manifest['manifest_path']} (split {split!r})"
            )
        listed = [s for s in listed if s["file"] in names]
    directory = manifest["directory"]
    num_classes = int(manifest["num_classes"])
    plan = _VerifyPlan(
        num_classes=num_classes,
        ignore=manifest["ignore"],
        encoding=manifest["mask_encoding"],
        mask_dtype=manifest["mask_dtype"],
    )
    problems: list[str] = []
    read_problems: list[str] = []
    found: dict[str, tuple[int, int, str]] = {}
    class_pixels = np.zeros(num_classes, np.int64)
    records = 0
    items = _read_shards(directory, manifest, read_problems, found, listed)
    check = functools.partial(check_record, plan=plan)
    for result in ordered_map(
        check, items, jobs=jobs, chunksize=8, preload=("labelfix.records.verify",)
    ):
        records += 1
        if on_record is not None:
            on_record(1)
        problems.extend(result.problems)
        if len(result.classes):
            np.add.at(class_pixels, result.classes, result.counts)
    problems.extend(read_problems)
    problems.extend(_shard_problems(manifest, found, split, listed, whole=shards is None))
    if shards is None:
        if manifest.get("num_records") is not None and manifest["num_records"] != records:
            problems.append(
                f"{manifest['manifest_path']}: the manifest says "
                f"{manifest['num_records']} records, the shards hold {records}"
            )
        if not read_problems:
            problems.extend(_count_problems(manifest, class_pixels))
    return VerifyResult(
        manifest=manifest["manifest_path"],
        shards=len(listed),
        records=records,
        problems=tuple(problems),
    )


def _shard_problems(
    manifest: dict, found: dict[str, tuple], split: str, listed: list, *, whole: bool
) -> list[str]:
    """Each ``listed`` shard's record count, size and sha256 against the manifest; with
    ``whole``, also stray shards and interrupted runs."""
    problems = []
    for shard in listed:
        name = shard["file"]
        if name not in found:  # missing: already said
            continue
        records, size, digest = found[name]
        name = _shown(manifest, name)  # what the messages say
        if records != shard.get("records"):
            problems.append(
                f"{name}: the manifest says {shard.get('records')} records, the shard holds "
                f"{records}"
            )
        if size != shard.get("bytes"):
            problems.append(
                f"{name}: the manifest says {shard.get('bytes')} bytes, the file has {size}"
            )
        if digest != shard.get("sha256"):
            problems.append(
                f"{name}: sha256 {digest[:16]}... does not match the manifest's "
                f"{str(shard.get('sha256'))[:16]}..."
            )
    if not whole:
        return problems
    listed = {s["file"] for s in manifest["shards"]}
    pattern, journal = shard_pattern(split), journal_pattern(split)
    for name in sorted(_listdir(manifest["directory"])):
        if pattern.fullmatch(name) and name not in listed:
            name = _shown(manifest, name)
            problems.append(f"{name}: shard not in the manifest (a {split}-* glob would read it)")
        elif journal.fullmatch(name):
            problems.append(
                f"{_shown(manifest, name)}: a to-tfrecord run was stopped while it replaced the "
                f"{split} shards, which may be mixed: run it again"
            )
    return problems


def _count_problems(manifest: dict, class_pixels: np.ndarray) -> list[str]:
    """The manifest's class_pixel_counts against the counts of the records read."""
    expected, num_classes = manifest.get("class_pixel_counts"), len(class_pixels)
    if expected is None or list(expected) == class_pixels.tolist():
        return []
    if len(expected) != num_classes:
        return [
            f"{manifest['manifest_path']}: class_pixel_counts has {len(expected)} entries for "
            f"num_classes={num_classes}"
        ]
    diff = [c for c in range(num_classes) if c >= len(expected) or expected[c] != class_pixels[c]]
    c = diff[0] if diff else len(expected)
    return [
        f"{manifest['manifest_path']}: class_pixel_counts disagree with the records "
        f"(class {c}: manifest {expected[c] if c < len(expected) else 'none'}, "
        f"records {int(class_pixels[c]) if c < num_classes else 'none'})"
    ]


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []
